//! Allocate latency benchmark (not a test): the plugin with a synthetic inventory of 64 VFs in a
//! temp dir, a minimal kubelet (Registration + pod-resources servers that list no pods, so
//! every allocation is released and scrubbed right away), and N Allocate calls cycling over the
//! VFs over the real unix socket. Prints p50/p90/p99/max in µs and throughput.
//!
//!     cargo run --release -p emu-device-plugin --example allocate_bench [-- N]

use emu_device_plugin::api::podresources::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use emu_device_plugin::api::podresources::*;
use emu_device_plugin::api::v1beta1::device_plugin_client::DevicePluginClient;
use emu_device_plugin::api::v1beta1::registration_server::{Registration, RegistrationServer};
use emu_device_plugin::api::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, Empty, RegisterRequest,
};
use emu_device_plugin::{run, uds, DevicePluginConfig, VfDevice, VfInventory};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

const VFS: usize = 64;

struct Inventory(Vec<VfDevice>);

impl VfInventory for Inventory {
    fn devices(&self) -> Vec<VfDevice> {
        self.0.clone()
    }
    fn scrub(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

struct Kubelet;

#[tonic::async_trait]
impl Registration for Kubelet {
    async fn register(&self, _: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }
}

#[tonic::async_trait]
impl PodResourcesLister for Kubelet {
    async fn list(
        &self,
        _: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        Ok(Response::new(ListPodResourcesResponse::default()))
    }
    async fn get_allocatable_resources(
        &self,
        _: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get(
        &self,
        _: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        Err(Status::unimplemented(""))
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = std::env::temp_dir().join(format!("emu-dp-bench-{}", std::process::id()));
    let dp = dir.join("dp");
    std::fs::create_dir_all(&dp).expect("mkdir");
    let devices: Vec<VfDevice> = (0..VFS)
        .map(|i| {
            let id = format!("igb{}-vf{}", i / 8, i % 8);
            VfDevice {
                socket: dir.join("run/vfs").join(&id).join("vf.sock"),
                id,
                resource: "emu.sriov/vf".into(),
                pf: format!("igb{}", i / 8),
                model: "igbvf".into(),
                vendor_id: "0x8086".into(),
                device_id: "0x10ca".into(),
                mac: format!("02:00:00:00:00:{i:02x}"),
                healthy: true,
                core: None,
            }
        })
        .collect();
    let kubelet = UnixListener::bind(dp.join("kubelet.sock")).expect("bind kubelet.sock");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(Kubelet))
            .serve_with_incoming(UnixListenerStream::new(kubelet)),
    );
    let pr = UnixListener::bind(dir.join("pod-resources.sock")).expect("bind pod-resources");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PodResourcesListerServer::new(Kubelet))
            .serve_with_incoming(UnixListenerStream::new(pr)),
    );
    let config = DevicePluginConfig {
        device_plugin_dir: dp.clone(),
        pod_resources_socket: dir.join("pod-resources.sock"),
        cdi_dir: Some(dir.join("cdi")),
        pod_resources_poll: Duration::from_millis(10),
        release_grace: Duration::ZERO,
        ..DevicePluginConfig::default()
    };
    tokio::spawn(run(
        config,
        Arc::new(Inventory(devices.clone())),
        std::future::pending(),
    ));
    let sock = dp.join("emu-sriov-vf.sock");
    let mut client = loop {
        if let Ok(ch) = uds::connect(&sock).await {
            break DevicePluginClient::new(ch);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Warm-up: one round over every VF (each is released by the pod-resources poll).
    let mut lat = Vec::with_capacity(n);
    let mut refused = 0usize;
    let start = Instant::now();
    for i in 0..n + VFS {
        let id = devices[i % VFS].id.clone();
        let req = AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![id],
            }],
        };
        let t = Instant::now();
        let r = client.allocate(req).await;
        let dt = t.elapsed();
        if r.is_err() {
            refused += 1;
        }
        if i >= VFS {
            lat.push(dt);
        }
    }
    let total = start.elapsed();
    lat.sort();
    println!("Allocate latency, {n} calls over {VFS} VFs (1 VF each, release+scrub via pod-resources between uses)");
    println!("| p50 µs | p90 µs | p99 µs | max µs | calls/s | refused |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {refused} |",
        pct(&lat, 0.50),
        pct(&lat, 0.90),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        (n + VFS) as f64 / total.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
