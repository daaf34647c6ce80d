//! The control plane of cluster mode, on one tokio runtime: the NodeState watch, the reconcile
//! loop (apply, then report status), the device plugin. The dataplane and the vfio-user
//! servers stay on their own std threads; the metrics endpoint (axum) runs on this runtime
//! too, the control socket keeps its small std thread as in standalone mode.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use emu_device_plugin::{DevicePluginConfig, DevicePluginRunner, PluginHandle};
use emu_sriov_crds::{NodeState, NodeStateSpec, NodeStateStatus, AGENT_MANAGER};
use futures::StreamExt as _;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Client, Config};
use tokio::sync::watch;

use super::desired::{desired, detect_host, Desired, Host};
use super::macs::MacBook;
use super::pools::{PoolInventory, Pools};
use super::status::{self, Inputs};
use crate::metrics::MetricsServer;
use crate::plugin::PluginPaths;
use crate::{access, control, naming, sys};

/// How often the agent re-applies the spec and re-checks its status without being asked
/// (health changes, retries). A resync that changes nothing writes nothing.
pub const RESYNC: Duration = Duration::from_secs(5);
/// How soon an apply that left work (a removal that met a fresh allocation, a VF that could
/// not be served) is retried.
pub const RETRY: Duration = Duration::from_millis(500);

/// `run --cluster`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The Kubernetes node name: the NodeState to follow has this name.
    pub node_name: String,
    /// Kubeconfig to use; `None`: in-cluster config, else `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub run_dir: PathBuf,
    /// With `--device-plugin`.
    pub plugin: Option<PluginPaths>,
    pub metrics_addr: Option<SocketAddr>,
    pub allow_unsealed_memory: bool,
}

/// The latest NodeState seen.
#[derive(Clone)]
enum Observed {
    /// The first list has not answered yet.
    Unknown,
    Missing,
    Present(Arc<DynamicObject>),
}

/// Runs the agent in cluster mode until SIGINT/SIGTERM.
pub fn run(opts: ClusterOptions) -> anyhow::Result<()> {
    sys::block_termination_signals().context("cannot set up signal handling")?;
    sys::set_umask(0o077);
    let control_path = naming::control_socket_path(&opts.run_dir);
    control::refuse_if_running(&control_path)?;
    access::prepare_run_dir(&opts.run_dir, false)?;
    let macs = MacBook::load(&opts.node_name, &opts.run_dir);
    let pools = Arc::new(Pools::new(
        &opts.node_name,
        opts.run_dir.clone(),
        opts.allow_unsealed_memory,
        macs,
    ));
    let p = pools.clone();
    let q = pools.clone();
    let netdev: control::NetdevFn = Arc::new(move |req| {
        q.netdev_request(req).map_err(|e| {
            let code = e.cni_code();
            (format!("{:#}", anyhow::Error::new(e)), code)
        })
    });
    let control_server = control::ControlServer::start_with(
        &control_path,
        Arc::new(move || p.agent_status()),
        Some(netdev),
    )
    .with_context(|| format!("cannot open the control socket {}", control_path.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("control")
        .enable_all()
        .build()
        .context("cannot start the control-plane runtime")?;
    let metrics = match opts.metrics_addr {
        Some(addr) => {
            let p = pools.clone();
            let sample = Arc::new(move || p.metrics_sample());
            match MetricsServer::start_on(rt.handle(), addr, sample) {
                Ok(m) => Some(m),
                Err(e) => {
                    control_server.shutdown();
                    return Err(e.into());
                }
            }
        }
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = sys::wait_termination_signal();
            tracing::info!(signal = sig, "shutting down");
            let _ = stop_tx.send(true);
        })
        .context("cannot start the signal thread")?;
    tracing::info!(node = %opts.node_name, run_dir = %opts.run_dir.display(), "agent running in cluster mode");
    let result = rt.block_on(control_loop(&opts, pools.clone(), stop_rx));
    if let Some(m) = metrics {
        m.shutdown();
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    pools.shutdown();
    control_server.shutdown();
    result
}

async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("the kubeconfig {} is not usable", path.display()))?
        }
        None => Config::infer().await.context(
            "cannot find the cluster: not in a pod with a service account, and no usable \
             $KUBECONFIG or ~/.kube/config; pass --kubeconfig PATH",
        )?,
    };
    Client::try_from(config).context("cannot create the Kubernetes client")
}

async fn control_loop(
    opts: &ClusterOptions,
    pools: Arc<Pools>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = kube_client(opts.kubeconfig.as_deref()).await?;
    let ar = ApiResource::erase::<NodeState>(&());
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let host = detect_host(&opts.run_dir);

    let (plugin, plugin_task) = match &opts.plugin {
        Some(paths) => {
            let config = DevicePluginConfig {
                device_plugin_dir: paths.device_plugin_dir.clone(),
                pod_resources_socket: paths.pod_resources_socket.clone(),
                cdi_dir: paths.cdi_dir.clone(),
                resources: Vec::new(),
                ..DevicePluginConfig::default()
            };
            let runner = DevicePluginRunner::new(config, Arc::new(PoolInventory(pools.clone())));
            let handle = runner.handle();
            let mut s = stop.clone();
            let task = tokio::spawn(runner.run(async move {
                let _ = s.wait_for(|v| *v).await;
            }));
            (Some(handle), Some(task))
        }
        None => (None, None),
    };

    let (obj_tx, mut obj_rx) = watch::channel(Observed::Unknown);
    let watch_task = tokio::spawn(watch_node_state(
        api.clone(),
        opts.node_name.clone(),
        obj_tx,
    ));
    let mut held_rx = plugin.as_ref().map(PluginHandle::watch_held);
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut writer = StatusWriter::default();
    let mut missing_logged = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => break,
            r = obj_rx.changed() => if r.is_err() { break },
            _ = held_changed(&mut held_rx) => {}
            _ = tick.tick() => {}
        }
        let observed = obj_rx.borrow_and_update().clone();
        let (want, object) = match observed {
            Observed::Unknown => continue,
            Observed::Missing => {
                if !missing_logged {
                    tracing::info!(
                        node = %opts.node_name,
                        "no NodeState named after this node: running nothing until the operator (or you) creates it"
                    );
                    missing_logged = true;
                }
                (Desired::nothing(), None)
            }
            Observed::Present(obj) => {
                missing_logged = false;
                (desired_of(&obj, &host), Some(obj))
            }
        };
        let p = pools.clone();
        let d = want.clone();
        let h = plugin.clone();
        let applied = tokio::task::spawn_blocking(move || p.apply(&d, h.as_ref()))
            .await
            .context("the apply task failed")?;
        if let Some(h) = &plugin {
            h.set_resources(pools.resources(&want));
        }
        if applied.again {
            tick.reset_after(RETRY);
        }
        if let Some(obj) = object {
            let held = plugin.as_ref().map(PluginHandle::held).unwrap_or_default();
            writer.write(&api, &obj, &want, &pools, &held).await;
        }
    }
    watch_task.abort();
    if let Some(t) = plugin_task {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "device plugin ended with an error"),
            Err(e) => tracing::warn!(error = %e, "device plugin task failed"),
        }
    }
    Ok(())
}

async fn held_changed(rx: &mut Option<watch::Receiver<BTreeSet<String>>>) {
    if let Some(r) = rx {
        if r.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

/// The spec of `obj` as the agent will apply it.
fn desired_of(obj: &DynamicObject, host: &Host) -> Desired {
    let generation = obj.metadata.generation;
    let spec = match obj.data.get("spec") {
        None => Ok(NodeStateSpec::default()),
        Some(v) => serde_json::from_value::<NodeStateSpec>(v.clone()),
    };
    match spec {
        Ok(spec) => desired(&spec, generation, host),
        Err(e) => Desired::unreadable(generation, e.to_string()),
    }
}

/// Follows the NodeState named `name` into `tx`. Never ends on its own: errors are logged
/// (once per distinct message) and the watch retried with backoff.
async fn watch_node_state(api: Api<DynamicObject>, name: String, tx: watch::Sender<Observed>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut listing: Option<Option<DynamicObject>> = None;
    let mut last_error: Option<String> = None;
    let ours = |o: &DynamicObject| o.metadata.name.as_deref() == Some(name.as_str());
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(&msg) {
                    tracing::warn!(nodestate = %name, error = %msg, "cannot watch the NodeState; retrying (check the agent's RBAC: get/list/watch nodestates)");
                    last_error = Some(msg);
                }
                continue;
            }
        };
        if last_error.take().is_some() {
            tracing::info!(nodestate = %name, "watching the NodeState again");
        }
        match event {
            Event::Init => listing = Some(None),
            Event::InitApply(o) if ours(&o) => listing = Some(Some(o)),
            Event::InitApply(_) => {}
            Event::InitDone => {
                let seen = listing.take().flatten();
                tx.send_replace(seen.map_or(Observed::Missing, |o| Observed::Present(Arc::new(o))));
            }
            Event::Apply(o) if ours(&o) => {
                tx.send_replace(Observed::Present(Arc::new(o)));
            }
            Event::Delete(o) if ours(&o) => {
                tracing::info!(nodestate = %name, "NodeState deleted: removing the VFs pods do not hold");
                tx.send_replace(Observed::Missing);
            }
            Event::Apply(_) | Event::Delete(_) => {}
        }
    }
}

/// Writes the status when it changed, and only then.
#[derive(Default)]
struct StatusWriter {
    /// What was last written, and the object's resourceVersion before that write: until the
    /// watch brings our write back, the object still carries the old status.
    last: Option<(NodeStateStatus, Option<String>)>,
    last_error: Option<String>,
}

impl StatusWriter {
    async fn write(
        &mut self,
        api: &Api<DynamicObject>,
        obj: &DynamicObject,
        want: &Desired,
        pools: &Pools,
        held: &BTreeSet<String>,
    ) {
        let Some(name) = obj.metadata.name.as_deref() else {
            return;
        };
        let previous: Option<NodeStateStatus> = obj
            .data
            .get("status")
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let snapshot = pools.snapshot();
        let st = status::status(&Inputs {
            desired: want,
            running: &snapshot,
            held,
            previous: previous.as_ref(),
            now: status::now(),
        });
        if previous.as_ref() == Some(&st) {
            return;
        }
        let rv = obj.metadata.resource_version.clone();
        if self
            .last
            .as_ref()
            .is_some_and(|(w, wrv)| *w == st && *wrv == rv)
        {
            return;
        }
        let patch = serde_json::json!({
            "apiVersion": format!("{}/{}", emu_sriov_crds::GROUP, emu_sriov_crds::VERSION),
            "kind": "NodeState",
            "status": st,
        });
        let params = PatchParams::apply(AGENT_MANAGER).force();
        match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => {
                tracing::info!(
                    nodestate = %name,
                    sync = ?st.sync_status,
                    vfs = st.vfs_total,
                    allocated = st.vfs_allocated,
                    "status written"
                );
                self.last = Some((st, rv));
                self.last_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(&msg) {
                    tracing::warn!(nodestate = %name, error = %msg, "cannot write the NodeState status; retrying (check the agent's RBAC: patch nodestates/status)");
                    self.last_error = Some(msg);
                }
            }
        }
    }
}
