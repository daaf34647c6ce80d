//! KubeVirt's hook gRPC services over [`crate::hook`]: `Info`, and `Callbacks` in v1alpha3 and
//! v1alpha2 (virt-launcher uses the newest both sides list, `pkg/hooks/manager.go`).

use crate::api::{info, v1alpha2, v1alpha3, ON_DEFINE_DOMAIN, SHUTDOWN, VERSIONS};
use crate::hook::{error_chain, on_define_domain, HookConfig};
use std::sync::Arc;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

/// Shared by the three services.
#[derive(Clone)]
pub struct Hook {
    cfg: Arc<HookConfig>,
    /// Notified on `Shutdown` (v1alpha3): the server stops, the sidecar container exits.
    pub shutdown: Arc<Notify>,
}

impl Hook {
    pub fn new(cfg: HookConfig) -> Hook {
        Hook {
            cfg: Arc::new(cfg),
            shutdown: Arc::new(Notify::new()),
        }
    }

    /// Runs the edit off the async runtime (it is CPU work on untrusted input) and maps its
    /// error to `FAILED_PRECONDITION` with the whole cause chain: virt-launcher logs the
    /// message and fails the VMI, so it must say what to fix.
    async fn define(&self, domain: Vec<u8>, vmi: Vec<u8>) -> Result<Vec<u8>, Status> {
        let cfg = self.cfg.clone();
        let r = tokio::task::spawn_blocking(move || on_define_domain(&cfg, &domain, &vmi))
            .await
            .map_err(|e| Status::internal(format!("emu-sriov hook: edit task failed: {e}")))?;
        match r {
            Ok((xml, att)) => {
                tracing::info!(
                    vfs = att.len(),
                    sockets = ?att.iter().map(|a| a.socket.as_str()).collect::<Vec<_>>(),
                    "OnDefineDomain: VFs attached"
                );
                Ok(xml)
            }
            Err(e) => {
                let msg = format!("emu-sriov hook: {}", error_chain(&e));
                tracing::warn!(error = %msg, "OnDefineDomain refused");
                Err(Status::failed_precondition(msg))
            }
        }
    }
}

#[tonic::async_trait]
impl info::info_server::Info for Hook {
    async fn info(
        &self,
        _: Request<info::InfoParams>,
    ) -> Result<Response<info::InfoResult>, Status> {
        Ok(Response::new(info::InfoResult {
            name: self.cfg.name.clone(),
            hook_points: vec![
                info::HookPoint {
                    name: ON_DEFINE_DOMAIN.into(),
                    priority: 0,
                },
                info::HookPoint {
                    name: SHUTDOWN.into(),
                    priority: 0,
                },
            ],
            versions: VERSIONS.iter().map(|v| v.to_string()).collect(),
        }))
    }
}

#[tonic::async_trait]
impl v1alpha3::callbacks_server::Callbacks for Hook {
    async fn on_define_domain(
        &self,
        req: Request<v1alpha3::OnDefineDomainParams>,
    ) -> Result<Response<v1alpha3::OnDefineDomainResult>, Status> {
        let p = req.into_inner();
        let xml = self.define(p.domain_xml, p.vmi).await?;
        Ok(Response::new(v1alpha3::OnDefineDomainResult {
            domain_xml: xml,
        }))
    }

    async fn pre_cloud_init_iso(
        &self,
        req: Request<v1alpha3::PreCloudInitIsoParams>,
    ) -> Result<Response<v1alpha3::PreCloudInitIsoResult>, Status> {
        // Not subscribed; answer with the input unchanged should virt-launcher ask anyway.
        let p = req.into_inner();
        Ok(Response::new(v1alpha3::PreCloudInitIsoResult {
            cloud_init_no_cloud_source: p.cloud_init_no_cloud_source,
            cloud_init_data: p.cloud_init_data,
        }))
    }

    async fn shutdown(
        &self,
        _: Request<v1alpha3::ShutdownParams>,
    ) -> Result<Response<v1alpha3::ShutdownResult>, Status> {
        tracing::info!("Shutdown from virt-launcher: stopping");
        self.shutdown.notify_one();
        Ok(Response::new(v1alpha3::ShutdownResult {}))
    }
}

#[tonic::async_trait]
impl v1alpha2::callbacks_server::Callbacks for Hook {
    async fn on_define_domain(
        &self,
        req: Request<v1alpha2::OnDefineDomainParams>,
    ) -> Result<Response<v1alpha2::OnDefineDomainResult>, Status> {
        let p = req.into_inner();
        let xml = self.define(p.domain_xml, p.vmi).await?;
        Ok(Response::new(v1alpha2::OnDefineDomainResult {
            domain_xml: xml,
        }))
    }

    async fn pre_cloud_init_iso(
        &self,
        req: Request<v1alpha2::PreCloudInitIsoParams>,
    ) -> Result<Response<v1alpha2::PreCloudInitIsoResult>, Status> {
        let p = req.into_inner();
        Ok(Response::new(v1alpha2::PreCloudInitIsoResult {
            cloud_init_no_cloud_source: p.cloud_init_no_cloud_source,
            cloud_init_data: p.cloud_init_data,
        }))
    }
}
