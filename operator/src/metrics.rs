//! `/healthz`, `/readyz` and Prometheus `/metrics` (prometheus-client's text encoder, served by
//! axum on the operator's runtime).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    pub kind: &'static str,
    pub verb: &'static str,
}

/// Everything the operator counts.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabel, Counter>,
    pub reconcile_errors: Family<ControllerLabel, Counter>,
    /// Reconciles running now, per controller.
    pub in_flight: Family<ControllerLabel, Gauge>,
    /// Objects whose reconcile failed and waits for its retry, per controller: the part of
    /// the work queue that is not draining on its own.
    pub retry_queue: Family<ControllerLabel, Gauge>,
    /// Writes to the API server (apply, delete), by kind: a converged cluster makes none.
    pub api_writes: Family<WriteLabel, Counter>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    ready: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("emu_sriov_operator");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let reconcile_errors = Family::<ControllerLabel, Counter>::default();
        let in_flight = Family::<ControllerLabel, Gauge>::default();
        let retry_queue = Family::<ControllerLabel, Gauge>::default();
        let api_writes = Family::<WriteLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed (retried with backoff)",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now",
            in_flight.clone(),
        );
        registry.register(
            "retry_queue_depth",
            "Objects waiting for a retry after a failed reconcile",
            retry_queue.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the API server (server-side applies, deletes)",
            api_writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Arc::new(Metrics {
            registry,
            reconciles,
            reconcile_errors,
            in_flight,
            retry_queue,
            api_writes,
            leader,
            ready: AtomicBool::new(false),
        })
    }

    /// Counts one write.
    pub fn wrote(&self, kind: &'static str, verb: &'static str) {
        self.api_writes
            .get_or_create(&WriteLabel { kind, verb })
            .inc();
    }

    /// Total writes so far (all kinds), for tests and the scale run.
    pub fn writes_total(&self) -> u64 {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text.lines()
            .filter(|l| l.starts_with("emu_sriov_operator_api_writes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Ready: caches synced and (if leading) controllers started, or standing by.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Serves the endpoints until the runtime ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(encode))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n")
    }
}

async fn encode(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}
