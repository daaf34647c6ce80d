//! Leader election on a `coordination.k8s.io/v1` Lease, with kube-lease-manager (server-side
//! apply on the Lease, so two replicas can never both hold it). Only the leader runs the
//! controllers; a replica that loses the lease stops them and stands by again.

use crate::controllers;
use crate::metrics::Metrics;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    pub lease_name: String,
    /// This replica's name in the Lease's `holderIdentity` (the pod name).
    pub identity: String,
    /// What rendered NADs carry (see [`crate::network::NadOptions`]).
    pub nad: crate::network::NadOptions,
    /// How long a lease is valid after its last renewal: a standby takes over at most this
    /// long after the leader dies.
    pub duration: Duration,
    /// The leader renews this long before the lease would expire.
    pub grace: Duration,
}

/// Runs the controllers whenever this replica leads, until `shutdown`; releases the lease on
/// the way out so that a standby takes over at once.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    cfg: LeaderConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
            .with_namespace(&cfg.namespace)
            .with_identity(&cfg.identity)
            .with_duration(cfg.duration.as_secs().max(2))
            .with_grace(cfg.grace.as_secs().max(1))
            .with_field_manager(format!("{}-lease", emu_sriov_crds::OPERATOR_MANAGER))
            .build()
            .await;
        match built {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(error = %e, lease = %format!("{}/{}", cfg.namespace, cfg.lease_name), "cannot reach the leader Lease; retrying in 2 s");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    metrics.set_ready(true);
    let (mut leading, lease_task) = manager.watch().await;
    tracing::info!(identity = %cfg.identity, lease = %format!("{}/{}", cfg.namespace, cfg.lease_name), "standing by for the leader lease");
    'outer: loop {
        // Standby.
        while !*leading.borrow_and_update() {
            tokio::select! {
                _ = &mut shutdown => break 'outer,
                changed = leading.changed() => if changed.is_err() { break 'outer },
            }
        }
        tracing::info!(identity = %cfg.identity, "became the leader: starting controllers");
        metrics.leader.set(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let ctl = tokio::spawn(controllers::run(
            client.clone(),
            metrics.clone(),
            cfg.identity.clone(),
            cfg.nad.clone(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let mut ending = false;
        loop {
            tokio::select! {
                _ = &mut shutdown => { ending = true; break }
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() { break }
                }
            }
        }
        let _ = stop_tx.send(());
        let _ = ctl.await;
        metrics.leader.set(0);
        if ending {
            break;
        }
        tracing::warn!(identity = %cfg.identity, "lost the leader lease: controllers stopped, standing by");
    }
    // Closing the channel makes the lease task release the lease.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("leader lease released"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the leader lease failed"),
        _ => tracing::warn!("releasing the leader lease timed out"),
    }
}
