//! The tonic `DevicePlugin` service for one resource: a thin shell over [`Core`], which holds
//! the inventory snapshot and the allocation table.

use crate::api::v1beta1::device_plugin_server::DevicePlugin;
use crate::api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, DevicePluginOptions,
    Empty, ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse,
};
use crate::prefer::preferred;
use crate::runner::Core;
use crate::table::AllocateError;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{wrappers::WatchStream, Stream, StreamExt as _};
use tonic::{Request, Response, Status};

/// Options we register with and answer `GetDevicePluginOptions` with.
pub(crate) const OPTIONS: DevicePluginOptions = DevicePluginOptions {
    pre_start_required: false,
    get_preferred_allocation_available: true,
};

/// Serves one resource.
pub(crate) struct PluginService {
    pub(crate) resource: String,
    pub(crate) core: Arc<Core>,
}

impl From<AllocateError> for Status {
    fn from(e: AllocateError) -> Status {
        match e {
            AllocateError::Unknown { .. } | AllocateError::Duplicate { .. } => {
                Status::invalid_argument(e.to_string())
            }
            AllocateError::Taken { .. }
            | AllocateError::Unhealthy { .. }
            | AllocateError::Scrubbing { .. } => Status::failed_precondition(e.to_string()),
        }
    }
}

/// How long Allocate waits for a scrub in progress.
const SCRUB_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for PluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(OPTIONS))
    }

    type ListAndWatchStream = DeviceStream;

    /// The full list now and after every change; never ends while the plugin runs.
    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let rx = self
            .core
            .subscribe(&self.resource)
            .ok_or_else(|| Status::internal(format!("no view of {}", self.resource)))?;
        let stream = WatchStream::new(rx).map(|devices| Ok(ListAndWatchResponse { devices }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let devices = self.core.snapshot();
        let container_responses = request
            .into_inner()
            .container_requests
            .iter()
            .map(|c| ContainerPreferredAllocationResponse {
                device_i_ds: preferred(
                    &c.available_device_i_ds,
                    &c.must_include_device_i_ds,
                    usize::try_from(c.allocation_size).unwrap_or(0),
                    &devices,
                ),
            })
            .collect();
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let mut container_responses = Vec::new();
        for c in request.into_inner().container_requests {
            let mut r = self.core.allocate(&self.resource, &c.devices_ids);
            // Kubelet may re-use a VF whose pod we have not seen go yet: ask pod-resources
            // now (and scrub what it released) before refusing.
            if matches!(r, Err(AllocateError::Taken { .. })) && self.core.pod_resources_present() {
                self.core.sync_pod_resources().await;
                r = self.core.allocate(&self.resource, &c.devices_ids);
            }
            // Kubelet may not have seen the Unhealthy mark of a VF being scrubbed yet: a
            // scrub is short, wait for it (bounded) rather than fail the pod.
            let deadline = tokio::time::Instant::now() + SCRUB_WAIT;
            while matches!(r, Err(AllocateError::Scrubbing { .. }))
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                r = self.core.allocate(&self.resource, &c.devices_ids);
            }
            match r {
                Ok(resp) => container_responses.push(resp),
                Err(e) => {
                    tracing::warn!(resource = %self.resource, ids = ?c.devices_ids, error = %e, "Allocate refused");
                    return Err(e.into());
                }
            }
        }
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
