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
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
    /// The ListAndWatch feed of every resource served now. Lock order: `state`, then `views`.
    views: Mutex<BTreeMap<String, watch::Sender<Vec<Device>>>>,
    /// The resources to serve, as last set ([`PluginHandle::set_resources`]); the run loop
    /// starts and stops servers to match.
    wanted: Mutex<BTreeSet<String>>,
    /// The ids pods hold or that are being scrubbed ([`PluginHandle::held`]).
    held: watch::Sender<BTreeSet<String>>,
    poke: Notify,
    pod_resources_missing_logged: std::sync::atomic::AtomicBool,
    /// A pod-resources `List` has been answered at least once.
    allocations_known: std::sync::atomic::AtomicBool,
}

impl Core {
    fn new(config: DevicePluginConfig, inventory: Arc<dyn VfInventory>) -> Core {
        let wanted = config.resources.iter().cloned().collect();
        Core {
            config,
            inventory,
            state: Mutex::new(CoreState {
                table: Table::default(),
                devices: BTreeMap::new(),
                cdi_written: HashMap::new(),
            }),
            views: Mutex::new(BTreeMap::new()),
            wanted: Mutex::new(wanted),
            held: watch::channel(BTreeSet::new()).0,
            poke: Notify::new(),
            pod_resources_missing_logged: Default::default(),
            allocations_known: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CoreState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn views(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, watch::Sender<Vec<Device>>>> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wanted(&self) -> BTreeSet<String> {
        self.wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn subscribe(&self, resource: &str) -> Option<watch::Receiver<Vec<Device>>> {
        self.views().get(resource).map(|v| v.subscribe())
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, VfDevice> {
        self.lock().devices.clone()
    }

    /// Publishes the held ids if they changed (call with the state locked).
    fn publish_held(&self, st: &CoreState) {
        let held = st.table.held();
        self.held.send_if_modified(|cur| {
            if *cur == held {
                false
            } else {
                *cur = held;
                true
            }
        });
    }

    /// Reads the inventory; pushes changed lists to ListAndWatch; rewrites changed CDI specs.
    fn refresh(&self) {
        let devices = self.inventory.devices();
        let mut st = self.lock();
        st.table.observe_devices(&devices);
        let resources: Vec<String> = {
            let views = self.views();
            for (r, tx) in views.iter() {
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
            views.keys().cloned().collect()
        };
        if let Some(dir) = &self.config.cdi_dir {
            for r in &resources {
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
        self.publish_held(&st);
    }

    /// Starts feeding ListAndWatch of `resource` (no-op if it is fed already).
    fn add_view(&self, resource: &str) {
        let mut views = self.views();
        if !views.contains_key(resource) {
            views.insert(resource.to_owned(), watch::channel(Vec::new()).0);
        }
    }

    /// Stops feeding `resource`: its ListAndWatch streams end; its CDI spec file goes.
    fn remove_view(&self, resource: &str) {
        let mut st = self.lock();
        self.views().remove(resource);
        if let (Some(dir), Some(_)) = (&self.config.cdi_dir, st.cdi_written.remove(resource)) {
            let path = dir.join(crate::config::cdi_file_name(resource));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(resource, path = %path.display(), error = %e, "CDI spec not removed");
            }
        }
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
        let response = container_response(resource, &devs, self.config.cdi_dir.is_some());
        self.publish_held(&st);
        Ok(response)
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
        let ours: HashSet<String> = self.views().keys().cloned().collect();
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
        let first = !self
            .allocations_known
            .swap(true, std::sync::atomic::Ordering::AcqRel);
        let released = {
            let mut st = self.lock();
            let released =
                st.table
                    .observe_in_use(&in_use, Instant::now(), self.config.release_grace);
            self.publish_held(&st);
            if first {
                // Watchers wait for this even when nothing is held.
                self.held.send_modify(|_| {});
            }
            released
        };
        if released.is_empty() {
            return;
        }
        // Held (not reused by the agent) while scrubbing; Allocate waits for the scrub.
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
            let mut st = self.lock();
            st.table.scrubbed(&id, r.is_ok());
            self.publish_held(&st);
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

/// Runs the plugins for `config.resources` until `shutdown` completes; removes our sockets
/// on the way out. For resources that change at run time, use [`DevicePluginRunner`].
pub async fn run(
    config: DevicePluginConfig,
    inventory: Arc<dyn VfInventory>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PluginError> {
    if config.resources.is_empty() {
        return Err(PluginError::NoResources);
    }
    DevicePluginRunner::new(config, inventory)
        .run(shutdown)
        .await
}

/// What the agent can ask of running plugins. Cheap to clone; every method is quick and never
/// calls back into the inventory except [`PluginHandle::refresh`].
#[derive(Clone)]
pub struct PluginHandle {
    core: Arc<Core>,
}

impl PluginHandle {
    /// The VF ids that are not free: allocated to a pod (from Allocate until pod-resources
    /// stops listing them) or being scrubbed after release. The agent must not take these
    /// away.
    pub fn held(&self) -> BTreeSet<String> {
        self.core.held.borrow().clone()
    }

    /// Whether the kubelet's pod-resources API has answered at least once: before that,
    /// [`PluginHandle::held`] only knows this run's Allocate calls, not the VFs pods got
    /// before the agent (re)started.
    pub fn allocations_known(&self) -> bool {
        self.core
            .allocations_known
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// A receiver that sees every change of [`PluginHandle::held`] (and the moment
    /// [`PluginHandle::allocations_known`] turns true).
    pub fn watch_held(&self) -> watch::Receiver<BTreeSet<String>> {
        self.core.held.subscribe()
    }

    /// Reads the inventory now and streams what changed. Once this returns, a VF the
    /// inventory no longer lists cannot be allocated: withdraw a VF, `refresh`, then check
    /// [`PluginHandle::held`] before tearing it down. Must not be called while holding a lock
    /// that [`VfInventory::devices`] takes.
    pub fn refresh(&self) {
        self.core.refresh();
    }

    /// The resource names to serve from now on: servers for new names are started and
    /// registered, servers for names no longer listed are stopped and their sockets removed
    /// (their ListAndWatch streams end, so the kubelet takes their devices away). Applied by
    /// the run loop within [`DevicePluginConfig::kubelet_watch`].
    pub fn set_resources(&self, resources: BTreeSet<String>) {
        let mut w = self.core.wanted.lock().unwrap_or_else(|p| p.into_inner());
        if *w != resources {
            *w = resources;
            drop(w);
            self.core.poke.notify_waiters();
        }
    }
}

/// The plugins, set up but not yet running: take a [`PluginHandle`], then [`run`](Self::run).
pub struct DevicePluginRunner {
    core: Arc<Core>,
}

impl DevicePluginRunner {
    /// Plugins for `config.resources` (may be empty: see [`PluginHandle::set_resources`]).
    pub fn new(config: DevicePluginConfig, inventory: Arc<dyn VfInventory>) -> Self {
        DevicePluginRunner {
            core: Arc::new(Core::new(config, inventory)),
        }
    }

    pub fn handle(&self) -> PluginHandle {
        PluginHandle {
            core: self.core.clone(),
        }
    }

    /// Runs until `shutdown` completes; removes our sockets on the way out.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), PluginError> {
        let core = self.core;
        std::fs::create_dir_all(&core.config.device_plugin_dir).map_err(|source| {
            PluginError::Dir {
                path: core.config.device_plugin_dir.clone(),
                source,
            }
        })?;
        let mut slots: Vec<Slot> = Vec::new();
        let result = serve(&core, &mut slots, shutdown).await;
        for slot in slots {
            slot.server.abort();
            let _ = slot.server.await;
            let _ = std::fs::remove_file(&slot.path);
        }
        tracing::info!("device plugins stopped");
        result
    }
}

/// Starts the servers of the wanted resources that have none, stops those no longer wanted.
fn match_resources(core: &Arc<Core>, slots: &mut Vec<Slot>) -> Result<(), PluginError> {
    let wanted = core.wanted();
    let mut changed = false;
    slots.retain(|slot| {
        if wanted.contains(&slot.resource) {
            return true;
        }
        slot.server.abort();
        let _ = std::fs::remove_file(&slot.path);
        core.remove_view(&slot.resource);
        tracing::info!(resource = %slot.resource, "resource withdrawn: server stopped, socket removed");
        changed = true;
        false
    });
    for r in &wanted {
        if slots.iter().any(|s| &s.resource == r) {
            continue;
        }
        core.add_view(r);
        slots.push(start_server(core, r)?);
        changed = true;
    }
    if changed {
        core.refresh();
    }
    Ok(())
}

async fn serve(
    core: &Arc<Core>,
    slots: &mut Vec<Slot>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PluginError> {
    core.refresh();
    match_resources(core, slots)?;

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
    // Abort the helper tasks however this function ends.
    struct AbortOnDrop(Vec<JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }
    let _tasks = AbortOnDrop(vec![refresher, pod_poll]);

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
            _ = core.poke.notified() => {}
        }
        match_resources(core, slots)?;
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
                let fresh = start_server(core, &slot.resource)?;
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
    Ok(())
}

/// The plugins running on a tokio runtime: the caller's (standalone `run`: the agent's one
/// control-plane runtime, [`DevicePlugins::start_on`]) or a dedicated runtime thread
/// ([`DevicePlugins::start`]). Dropping it stops them (sockets removed).
pub struct DevicePlugins {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), PluginError>>>,
    task: Option<(
        tokio::runtime::Handle,
        tokio::task::JoinHandle<Result<(), PluginError>>,
    )>,
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
            task: None,
        })
    }

    /// Starts the plugins as a task on `runtime` (call from outside it: shutting down waits
    /// for the task with [`Handle::block_on`](tokio::runtime::Handle::block_on)).
    pub fn start_on(
        runtime: &tokio::runtime::Handle,
        config: DevicePluginConfig,
        inventory: Arc<dyn VfInventory>,
    ) -> DevicePlugins {
        let (tx, rx) = oneshot::channel::<()>();
        let task = runtime.spawn(run(config, inventory, async {
            let _ = rx.await;
        }));
        DevicePlugins {
            stop: Some(tx),
            thread: None,
            task: Some((runtime.clone(), task)),
        }
    }

    /// Whether the plugins are still running (false after a fatal error).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
            || self.task.as_ref().is_some_and(|(_, t)| !t.is_finished())
    }

    /// Stops the plugins and waits; returns how they ended.
    pub fn shutdown(mut self) -> Result<(), PluginError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), PluginError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some((runtime, task)) = self.task.take() {
            // A task the runtime cancelled (it shut down first) has nothing left to report.
            return runtime.block_on(task).unwrap_or(Ok(()));
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
