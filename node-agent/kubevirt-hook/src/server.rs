//! Serving the hook on a unix socket. KubeVirt mounts the pod's `hook-sidecar-sockets` volume
//! at `/var/run/kubevirt-hooks` in each sidecar, with the sidecar's container name as subPath;
//! virt-launcher scans `/var/run/kubevirt-hooks/*/` for sockets (`pkg/hooks/manager.go`,
//! `pkg/virt-controller/services/template.go` `sidecarVolumeMount`). So the sidecar listens
//! on `/var/run/kubevirt-hooks/<name>.sock` in its own view.

use crate::api::{info, v1alpha2, v1alpha3};
use crate::service::Hook;
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// KubeVirt's `HookSocketsSharedDirectory` (`pkg/hooks/hooks.go`).
pub const HOOK_SOCKET_DIR: &str = "/var/run/kubevirt-hooks";

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {}; KubeVirt mounts {HOOK_SOCKET_DIR} into hook sidecars, is this running as one?", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server on {} failed", path.display())]
    Serve {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Binds `path` (replacing a stale socket) and serves `hook` until `stop` resolves or
/// virt-launcher calls `Shutdown`. Removes the socket on the way out.
pub async fn serve(
    hook: Hook,
    path: &Path,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| ServeError::Bind {
        path: path.to_owned(),
        source,
    })?;
    tracing::info!(socket = %path.display(), "KubeVirt hook listening");
    let shutdown = hook.shutdown.clone();
    let r = tonic::transport::Server::builder()
        .add_service(info::info_server::InfoServer::new(hook.clone()))
        .add_service(v1alpha3::callbacks_server::CallbacksServer::new(
            hook.clone(),
        ))
        .add_service(v1alpha2::callbacks_server::CallbacksServer::new(hook))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            tokio::select! {
                _ = stop => {},
                _ = shutdown.notified() => {},
            }
        })
        .await;
    let _ = std::fs::remove_file(path);
    r.map_err(|source| ServeError::Serve {
        path: path.to_owned(),
        source,
    })
}
