//! A fake kubelet for device-plugin tests: real gRPC over unix sockets, playing the kubelet's
//! three roles — the `Registration` server on `<dir>/kubelet.sock` (records every request), a
//! `DevicePlugin` client for the registered endpoint, and a `PodResourcesLister` server whose
//! `List` answer the test sets. [`FakeKubelet::restart`] does what a starting kubelet does:
//! wipes the device-plugin dir and re-creates `kubelet.sock`.
//!
//! Also [`FakeInventory`], a scripted [`VfInventory`] that records scrubs.

use emu_device_plugin::api::podresources::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use emu_device_plugin::api::podresources::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices,
    ContainerResources, GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest,
    ListPodResourcesResponse, PodResources,
};
use emu_device_plugin::api::v1beta1::device_plugin_client::DevicePluginClient;
use emu_device_plugin::api::v1beta1::registration_server::{Registration, RegistrationServer};
use emu_device_plugin::api::v1beta1::{Empty, RegisterRequest};
use emu_device_plugin::api::KUBELET_SOCKET;
use emu_device_plugin::{uds, VfDevice, VfInventory};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A `Register` call as the fake kubelet saw it.
#[derive(Debug, Clone)]
pub struct Registered {
    pub at: Instant,
    pub request: RegisterRequest,
}

#[derive(Default)]
struct RegistrationLog(Mutex<Vec<Registered>>);

struct RegistrationSvc(Arc<RegistrationLog>);

#[tonic::async_trait]
impl Registration for RegistrationSvc {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let request = req.into_inner();
        if request.version != "v1beta1" {
            return Err(Status::invalid_argument("unsupported version"));
        }
        self.0
             .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Registered {
                at: Instant::now(),
                request,
            });
        Ok(Response::new(Empty {}))
    }
}

/// What pod-resources `List` answers: (pod name, resource name, device ids).
type PodList = Arc<Mutex<Vec<(String, String, Vec<String>)>>>;

struct PodResourcesSvc(PodList);

#[tonic::async_trait]
impl PodResourcesLister for PodResourcesSvc {
    async fn list(
        &self,
        _: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        let pods = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(Response::new(ListPodResourcesResponse {
            pod_resources: pods
                .into_iter()
                .map(|(name, resource, ids)| PodResources {
                    name,
                    namespace: "default".into(),
                    containers: vec![ContainerResources {
                        name: "c".into(),
                        devices: vec![ContainerDevices {
                            resource_name: resource,
                            device_ids: ids,
                            topology: None,
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get(
        &self,
        _: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

/// The fake kubelet. Needs a tokio runtime; its servers stop when it is dropped.
pub struct FakeKubelet {
    /// The device-plugin dir (`kubelet.sock`, plugin sockets).
    pub dir: PathBuf,
    /// The pod-resources socket.
    pub pod_resources_socket: PathBuf,
    log: Arc<RegistrationLog>,
    pods: PodList,
    registration: JoinHandle<()>,
    pod_resources: JoinHandle<()>,
}

fn serve_registration(dir: &Path, log: Arc<RegistrationLog>) -> std::io::Result<JoinHandle<()>> {
    let path = dir.join(KUBELET_SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    Ok(tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(RegistrationSvc(log)))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await;
    }))
}

impl FakeKubelet {
    /// Serves `Registration` on `<dir>/kubelet.sock` and pod-resources on
    /// `pod_resources_socket` (both created).
    pub fn start(dir: &Path, pod_resources_socket: &Path) -> std::io::Result<FakeKubelet> {
        std::fs::create_dir_all(dir)?;
        if let Some(p) = pod_resources_socket.parent() {
            std::fs::create_dir_all(p)?;
        }
        let log = Arc::new(RegistrationLog::default());
        let registration = serve_registration(dir, log.clone())?;
        let pods: PodList = Arc::default();
        let _ = std::fs::remove_file(pod_resources_socket);
        let listener = UnixListener::bind(pod_resources_socket)?;
        let svc = PodResourcesSvc(pods.clone());
        let pod_resources = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(PodResourcesListerServer::new(svc))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        Ok(FakeKubelet {
            dir: dir.to_owned(),
            pod_resources_socket: pod_resources_socket.to_owned(),
            log,
            pods,
            registration,
            pod_resources,
        })
    }

    /// A kubelet restart: stop serving, delete every file in the dir (a real kubelet keeps its
    /// checkpoint; the fake has none), serve `kubelet.sock` anew. Returns when it is back.
    pub fn restart(&mut self) -> std::io::Result<Instant> {
        self.registration.abort();
        for e in std::fs::read_dir(&self.dir)? {
            let p = e?.path();
            if !p.is_dir() {
                std::fs::remove_file(&p)?;
            }
        }
        self.registration = serve_registration(&self.dir, self.log.clone())?;
        Ok(Instant::now())
    }

    /// Every `Register` so far.
    pub fn registrations(&self) -> Vec<Registered> {
        self.log.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until at least `n` registrations were recorded.
    pub async fn wait_registrations(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Registered>, String> {
        let end = Instant::now() + timeout;
        loop {
            let r = self.registrations();
            if r.len() >= n {
                return Ok(r);
            }
            if Instant::now() >= end {
                return Err(format!(
                    "{} registrations after {timeout:?}, wanted {n}",
                    r.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What pod-resources `List` answers from now on: (pod, resource, ids).
    pub fn set_pods(&self, pods: &[(&str, &str, &[&str])]) {
        *self.pods.lock().unwrap_or_else(|p| p.into_inner()) = pods
            .iter()
            .map(|(pod, res, ids)| {
                (
                    pod.to_string(),
                    res.to_string(),
                    ids.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect();
    }

    /// A `DevicePlugin` client for a registered endpoint (socket file name in the dir).
    pub async fn plugin_client(
        &self,
        endpoint: &str,
    ) -> Result<DevicePluginClient<Channel>, tonic::transport::Error> {
        Ok(DevicePluginClient::new(
            uds::connect(&self.dir.join(endpoint)).await?,
        ))
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.registration.abort();
        self.pod_resources.abort();
    }
}

/// A scripted inventory: VFs `<pf>-vf<i>` with sockets under `<run_dir>/vfs/<id>/vf.sock`.
pub struct FakeInventory {
    devices: Mutex<Vec<VfDevice>>,
    scrubbed: Mutex<Vec<String>>,
}

impl FakeInventory {
    /// `pfs`: (pf name, VF count, resource); every VF healthy, socket dirs created.
    pub fn new(run_dir: &Path, pfs: &[(&str, usize, &str)]) -> Arc<FakeInventory> {
        let mut devices = Vec::new();
        let mut n = 0u8;
        for (pf, count, resource) in pfs {
            for i in 0..*count {
                let id = format!("{pf}-vf{i}");
                let dir = run_dir.join("vfs").join(&id);
                let _ = std::fs::create_dir_all(&dir);
                n = n.wrapping_add(1);
                devices.push(VfDevice {
                    id,
                    resource: resource.to_string(),
                    pf: pf.to_string(),
                    model: "igbvf".into(),
                    vendor_id: "0x8086".into(),
                    device_id: "0x10ca".into(),
                    mac: format!("02:00:00:00:00:{n:02x}"),
                    socket: dir.join("vf.sock"),
                    healthy: true,
                    core: Some(u32::try_from(i % 2).unwrap_or(0)),
                });
            }
        }
        Arc::new(FakeInventory {
            devices: Mutex::new(devices),
            scrubbed: Mutex::default(),
        })
    }

    /// Sets VF `id`'s health.
    pub fn set_healthy(&self, id: &str, healthy: bool) {
        for d in self
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            if d.id == id {
                d.healthy = healthy;
            }
        }
    }

    /// Stops listing VF `id` (as the agent does when it removes a VF).
    pub fn remove(&self, id: &str) {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| d.id != id);
    }

    /// The ids scrubbed so far, in order.
    pub fn scrubbed(&self) -> Vec<String> {
        self.scrubbed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl VfInventory for FakeInventory {
    fn devices(&self) -> Vec<VfDevice> {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn scrub(&self, id: &str) -> Result<(), String> {
        self.scrubbed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.to_owned());
        Ok(())
    }
}

/// A ListAndWatch list as the kubelet reads it: device id → health.
pub fn health(
    r: &emu_device_plugin::api::v1beta1::ListAndWatchResponse,
) -> std::collections::BTreeMap<String, String> {
    r.devices
        .iter()
        .map(|d| (d.id.clone(), d.health.clone()))
        .collect()
}

/// The Allocate request the kubelet sends for one container given `ids`.
pub fn alloc(ids: &[&str]) -> emu_device_plugin::api::v1beta1::AllocateRequest {
    use emu_device_plugin::api::v1beta1::{AllocateRequest, ContainerAllocateRequest};
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: ids.iter().map(|s| s.to_string()).collect(),
        }],
    }
}
