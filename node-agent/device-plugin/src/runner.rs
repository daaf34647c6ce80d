//! Running the plugins: the shared [`Core`], one gRPC server per resource, registration and
//! kubelet-restart detection, the inventory and pod-resources polls.

use crate::api::podresources::pod_resources_lister_client::PodResourcesListerClient;
use crate::api::podresources::ListPodResourcesRequest;
use crate::api::v1beta1::device_plugin_server::DevicePluginServer;
use crate::api::v1beta1::registration_client::RegistrationClient;
use crate::api::v1beta1::{ContainerAllocateResponse, Device, RegisterRequest};
use crate::api::{KUBELET_SOCKET, VERSION};
use crate::config::{socket_name, socket_path, DevicePluginConfig};
use crate::inventory::{VfDevice, VfInventory};
use crate::response::container_response;
use crate::service::{PluginService, OPTIONS};
use crate::table::{AllocateError, Table};
use crate::{cdi, uds};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixListener;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

/// Why the plugins could not run.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("no resource names to serve")]
    NoResources,
    #[error("cannot create the device-plugin dir {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the device-plugin runtime thread")]
    Runtime(#[source] std::io::Error),
}

struct CoreState {
    table: Table,
    devices: BTreeMap<String, VfDevice>,
    cdi_written: HashMap<String, cdi::Spec>,
}

/// State shared by the servers and the polls.
pub(crate) struct Core {
    config: DevicePluginConfig,
    inventory: Arc<dyn VfInventory>,
    state: Mutex<CoreState>,
    views: HashMap<String, watch::Sender<Vec<Device>>>,
    poke: Notify,
    pod_resources_missing_logged: std::sync::atomic::AtomicBool,
}

impl Core {
    fn new(config: DevicePluginConfig, inventory: Arc<dyn VfInventory>) -> Core {
        let views = config
            .resources
            .iter()
            .map(|r| (r.clone(), watch::channel(Vec::new()).0))
            .collect();
        Core {
            config,
            inventory,
            state: Mutex::new(CoreState {
                table: Table::default(),
                devices: BTreeMap::new(),
                cdi_written: HashMap::new(),
            }),
            views,
            poke: Notify::new(),
            pod_resources_missing_logged: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CoreState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn subscribe(&self, resource: &str) -> Option<watch::Receiver<Vec<Device>>> {
        self.views.get(resource).map(|v| v.subscribe())
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, VfDevice> {
        self.lock().devices.clone()
    }

    /// Reads the inventory; pushes changed lists to ListAndWatch; rewrites changed CDI specs.
    fn refresh(&self) {
        let devices = self.inventory.devices();
        let mut st = self.lock();
        st.table.observe_devices(&devices);
        for (r, tx) in &self.views {
            let list = st.table.advertised(r, &devices);
            tx.send_if_modified(|cur| {
                if *cur == list {
                    false
                } else {
                    tracing::debug!(resource = %r, devices = list.len(), "device list changed");
                    *cur = list;
                    true
                }
            });
        }
        if let Some(dir) = &self.config.cdi_dir {
            for r in &self.config.resources {
                let spec = cdi::spec(r, &devices);
                if st.cdi_written.get(r) != Some(&spec) {
                    match cdi::write(dir, r, &spec) {
                        Ok(path) => {
                            tracing::info!(resource = %r, path = %path.display(), "CDI spec written");
                            st.cdi_written.insert(r.clone(), spec);
                        }
                        Err(e) => tracing::warn!(resource = %r, error = %e, "CDI spec not written"),
                    }
                }
            }
        }
        st.devices = devices.into_iter().map(|d| (d.id.clone(), d)).collect();
    }

    /// Allocate for one container (no I/O).
    pub(crate) fn allocate(
        &self,
        resource: &str,
        ids: &[String],
    ) -> Result<ContainerAllocateResponse, AllocateError> {
        let mut st = self.lock();
        let CoreState { table, devices, .. } = &mut *st;
        table.allocate(resource, ids, devices, Instant::now())?;
        let devs: Vec<&VfDevice> = ids.iter().filter_map(|id| devices.get(id)).collect();
        tracing::info!(resource, ids = ?ids, "allocated");
        Ok(container_response(
            resource,
            &devs,
            self.config.cdi_dir.is_some(),
        ))
    }

    pub(crate) fn pod_resources_present(&self) -> bool {
        self.config.pod_resources_socket.exists()
    }

    /// The ids of our resources that pods hold, or `None` when pod-resources cannot be asked.
    async fn in_use(&self) -> Option<HashSet<String>> {
        let path = &self.config.pod_resources_socket;
        if !path.exists() {
            if !self
                .pod_resources_missing_logged
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(socket = %path.display(), "no pod-resources socket: allocations are kept until it appears");
            }
            return None;
        }
        let ask = async {
            let ch = uds::connect(path).await.map_err(|e| e.to_string())?;
            PodResourcesListerClient::new(ch)
                .list(ListPodResourcesRequest {})
                .await
                .map_err(|e| e.to_string())
        };
        let resp = match tokio::time::timeout(Duration::from_secs(2), ask).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(e)) => {
                tracing::warn!(socket = %path.display(), error = %e, "pod-resources List failed");
                return None;
            }
            Err(_) => {
                tracing::warn!(socket = %path.display(), "pod-resources List timed out");
                return None;
            }
        };
        let ours: HashSet<&str> = self.config.resources.iter().map(String::as_str).collect();
        Some(
            resp.pod_resources
                .iter()
                .flat_map(|p| &p.containers)
                .flat_map(|c| &c.devices)
                .filter(|d| ours.contains(d.resource_name.as_str()))
                .flat_map(|d| d.device_ids.iter().cloned())
                .collect(),
        )
    }

    /// One pod-resources round: adopt in-use VFs, scrub released ones, re-advertise them.
    pub(crate) async fn sync_pod_resources(self: &Arc<Self>) {
        let Some(in_use) = self.in_use().await else {
            return;
        };
        let released =
            self.lock()
                .table
                .observe_in_use(&in_use, Instant::now(), self.config.release_grace);
        if released.is_empty() {
            return;
        }
        // Unhealthy while scrubbing.
        self.refresh();
        for id in released {
            let inv = self.inventory.clone();
            let id2 = id.clone();
            let r = tokio::task::spawn_blocking(move || inv.scrub(&id2))
                .await
                .unwrap_or_else(|e| Err(format!("scrub task failed: {e}")));
            match &r {
                Ok(()) => tracing::info!(vf = %id, "released VF scrubbed; advertised again"),
                Err(e) => tracing::warn!(vf = %id, error = %e, "scrub failed; VF held back"),
            }
            self.lock().table.scrubbed(&id, r.is_ok());
        }
        self.refresh();
    }
}

/// One resource's server.
struct Slot {
    resource: String,
    path: PathBuf,
    server: JoinHandle<()>,
    registered: bool,
}

fn start_server(core: &Arc<Core>, resource: &str) -> Result<Slot, PluginError> {
    let path = socket_path(&core.config.device_plugin_dir, resource);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|source| PluginError::Bind {
        path: path.clone(),
        source,
    })?;
    let svc = PluginService {
        resource: resource.to_owned(),
        core: core.clone(),
    };
    let r = resource.to_owned();
    let server = tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(svc))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await;
        if let Err(e) = res {
            tracing::warn!(resource = %r, error = %e, "device-plugin server ended");
        }
    });
    tracing::info!(resource, socket = %path.display(), "device-plugin server listening");
    Ok(Slot {
        resource: resource.to_owned(),
        path,
        server,
        registered: false,
    })
}

async fn register(dir: &Path, resource: &str) -> Result<(), String> {
    let req = RegisterRequest {
        version: VERSION.to_owned(),
        endpoint: socket_name(resource),
        resource_name: resource.to_owned(),
        options: Some(OPTIONS),
    };
    let call = async {
        let ch = uds::connect(&dir.join(KUBELET_SOCKET))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        RegistrationClient::new(ch)
            .register(req)
            .await
            .map_err(|s| format!("kubelet refused: {}", s.message()))
    };
    match tokio::time::timeout(Duration::from_secs(1), call).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err("timed out".into()),
    }
}

/// Identity of `kubelet.sock`: (inode, ctime) — a recreated socket differs even if its inode
/// number is reused.
fn identity(path: &Path) -> Option<(u64, i64, i64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
}

/// Runs the plugins until `shutdown` completes; removes our sockets on the way out.
pub async fn run(
    config: DevicePluginConfig,
    inventory: Arc<dyn VfInventory>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PluginError> {
    if config.resources.is_empty() {
        return Err(PluginError::NoResources);
    }
    std::fs::create_dir_all(&config.device_plugin_dir).map_err(|source| PluginError::Dir {
        path: config.device_plugin_dir.clone(),
        source,
    })?;
    let core = Arc::new(Core::new(config, inventory));
    core.refresh();
    let mut slots = Vec::new();
    for r in &core.config.resources {
        slots.push(start_server(&core, r)?);
    }

    let refresher = {
        let core = core.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(core.config.inventory_poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = core.poke.notified() => {}
                }
                core.refresh();
            }
        })
    };
    let pod_poll = {
        let core = core.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(core.config.pod_resources_poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                core.sync_pod_resources().await;
            }
        })
    };

    let dir = core.config.device_plugin_dir.clone();
    let kubelet = dir.join(KUBELET_SOCKET);
    let mut last_kubelet = None;
    let mut last_error: Option<String> = None;
    let mut tick = tokio::time::interval(core.config.kubelet_watch);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        let now = identity(&kubelet);
        let kubelet_changed = now != last_kubelet;
        if kubelet_changed && now.is_some() && last_kubelet.is_some() {
            tracing::info!("kubelet.sock re-created: kubelet restarted, registering again");
        }
        last_kubelet = now;
        for slot in slots.iter_mut() {
            // A starting kubelet wipes the dir: our socket gone means serve afresh.
            if std::fs::symlink_metadata(&slot.path).is_err() {
                tracing::info!(resource = %slot.resource, "our socket was removed (kubelet restart?); serving again");
                slot.server.abort();
                let fresh = start_server(&core, &slot.resource)?;
                let old = std::mem::replace(slot, fresh);
                drop(old);
            }
            if kubelet_changed {
                slot.registered = false;
            }
            if now.is_none() || slot.registered {
                continue;
            }
            match register(&dir, &slot.resource).await {
                Ok(()) => {
                    tracing::info!(resource = %slot.resource, endpoint = %socket_name(&slot.resource), "registered with the kubelet");
                    slot.registered = true;
                    last_error = None;
                }
                Err(e) => {
                    if last_error.as_deref() != Some(&e) {
                        tracing::warn!(resource = %slot.resource, error = %e, "registration failed; retrying");
                        last_error = Some(e);
                    }
                }
            }
        }
    }
    refresher.abort();
    pod_poll.abort();
    for slot in slots {
        slot.server.abort();
        let _ = slot.server.await;
        let _ = std::fs::remove_file(&slot.path);
    }
    tracing::info!("device plugins stopped");
    Ok(())
}

/// The plugins on a dedicated runtime thread, for the plain-threads agent. Dropping it stops
/// them (sockets removed).
pub struct DevicePlugins {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), PluginError>>>,
}

impl DevicePlugins {
    /// Starts the runtime thread and the plugins on it.
    pub fn start(
        config: DevicePluginConfig,
        inventory: Arc<dyn VfInventory>,
    ) -> Result<DevicePlugins, PluginError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("device-plugin")
            .enable_all()
            .build()
            .map_err(PluginError::Runtime)?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("device-plugins".into())
            .spawn(move || {
                rt.block_on(run(config, inventory, async {
                    let _ = rx.await;
                }))
            })
            .map_err(PluginError::Runtime)?;
        Ok(DevicePlugins {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Whether the plugins are still running (false after a fatal error).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the plugins and waits; returns how they ended.
    pub fn shutdown(mut self) -> Result<(), PluginError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), PluginError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for DevicePlugins {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
