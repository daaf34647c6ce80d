//! Prometheus metrics over HTTP: `run --metrics-addr ADDR` serves `GET /metrics` (the
//! [text exposition format] 0.0.4, encoded by `prometheus-client`) and `GET /healthz` (`ok`),
//! with axum on a tokio runtime: the control-plane runtime where the caller has one (cluster
//! mode, [`MetricsServer::start_on`]), else a current-thread runtime on a `metrics` thread of
//! its own (standalone `run`, [`MetricsServer::start`]).
//!
//! The metrics are one `prometheus-client` collector that reads the node once per scrape (one
//! [`Node::status`] and one [`Node::counter_snapshots`]) on a blocking-pool thread; the
//! dataplane is not touched. A panic while collecting becomes a 500, nothing else.
//!
//! [text exposition format]: https://prometheus.io/docs/instrumenting/exposition_formats/

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use emu_dataplane::CounterSnapshot;
use emu_nic_model::vmdq::DropReason;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

use crate::node::Node;
use crate::status::ClientState;

/// `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
/// Every metric name starts with this (and `_`).
const PREFIX: &str = "emu_sriov";

/// Produces the numbers of one scrape; called once per `GET /metrics`, on a blocking thread.
pub type SampleFn = Arc<dyn Fn() -> Sample + Send + Sync>;

/// One VF as the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfSample {
    pub id: String,
    pub pf: String,
    pub model: String,
    pub attached: bool,
    pub healthy: bool,
    /// Register accesses that trapped to the agent.
    pub traps: u64,
    pub counters: CounterSnapshot,
}

/// Everything one scrape reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub vfs: Vec<VfSample>,
    pub dataplane_busy_ratio: f64,
}

impl Sample {
    /// Reads the node: identity, state and traps from [`Node::status`], the full dataplane
    /// counters from [`Node::counter_snapshots`] (VFs are joined by id, in status order).
    pub fn collect(node: &Node) -> Sample {
        let mut counters: HashMap<String, CounterSnapshot> =
            node.counter_snapshots().into_iter().collect();
        let vfs = node
            .status()
            .vfs
            .into_iter()
            .filter_map(|vf| {
                let c = counters.remove(&vf.id)?;
                Some(VfSample {
                    healthy: node.healthy(&vf.id),
                    attached: vf.state == ClientState::Attached,
                    traps: vf.counters.traps,
                    counters: c,
                    id: vf.id,
                    pf: vf.pf,
                    model: vf.model,
                })
            })
            .collect();
        Sample {
            vfs,
            dataplane_busy_ratio: node.dataplane_busy_ratio(),
        }
    }
}

/// How a per-VF family reads its value.
type VfValue = fn(&VfSample) -> u64;

/// A family with one series per VF (its name without the `emu_sriov_` prefix and, for
/// counters, without the `_total` suffix: the encoder adds both).
struct Family {
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    value: VfValue,
}

const fn family(
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    value: VfValue,
) -> Family {
    Family {
        name,
        kind,
        help,
        value,
    }
}

const VF_FAMILIES: &[Family] = &[
    family(
        "vf_tx_packets",
        MetricType::Counter,
        "Frames the VF transmitted onto the switch.",
        |v| v.counters.tx_packets,
    ),
    family(
        "vf_tx_bytes",
        MetricType::Counter,
        "Bytes the VF transmitted onto the switch.",
        |v| v.counters.tx_bytes,
    ),
    family(
        "vf_rx_packets",
        MetricType::Counter,
        "Frames delivered into the VF's receive ring.",
        |v| v.counters.rx_packets,
    ),
    family(
        "vf_rx_bytes",
        MetricType::Counter,
        "Bytes delivered into the VF's receive ring.",
        |v| v.counters.rx_bytes,
    ),
    family(
        "vf_rx_multicast",
        MetricType::Counter,
        "Multicast frames delivered to the VF.",
        |v| v.counters.rx_multicast,
    ),
    family(
        "vf_rx_broadcast",
        MetricType::Counter,
        "Broadcast frames delivered to the VF.",
        |v| v.counters.rx_broadcast,
    ),
    family(
        "vf_tx_drops",
        MetricType::Counter,
        "Frames the VF sent that were dropped.",
        |v| v.counters.tx_drops,
    ),
    family(
        "vf_rx_drops",
        MetricType::Counter,
        "Frames for the VF that were dropped.",
        |v| v.counters.rx_drops,
    ),
];

const VF_FAMILIES_AFTER_DROPS: &[Family] = &[
    family(
        "vf_traps",
        MetricType::Counter,
        "Register accesses by the guest that trapped to the agent.",
        |v| v.traps,
    ),
    family(
        "vf_interrupts",
        MetricType::Counter,
        "MSI-X interrupts signalled to the guest.",
        |v| v.counters.interrupts,
    ),
    family(
        "vf_attached",
        MetricType::Gauge,
        "1 when a vfio-user client (a VM) is connected to the VF, else 0.",
        |v| u64::from(v.attached),
    ),
    family(
        "vf_healthy",
        MetricType::Gauge,
        "1 when the VF's server thread and the dataplane are running, else 0.",
        |v| u64::from(v.healthy),
    ),
];

const DROPS_FAMILY: &str = "vf_drops";

/// How an extra drop reason reads its value.
type DropValue = fn(&CounterSnapshot) -> u64;

/// The `reason` label values of [`DROPS_FAMILY`] beyond the switch's [`DropReason`]s.
const EXTRA_DROP_REASONS: [(&str, DropValue); 4] = [
    ("no_buffers", |c| c.rx_no_buffers),
    ("bad_ring", |c| c.rx_bad_ring),
    ("bad_descriptor", |c| c.tx_bad_descriptors),
    ("tx_bad_ring", |c| c.tx_bad_ring),
];

/// The metrics of the node: a registry (prefix `emu_sriov`) holding one collector that reads
/// a fresh [`Sample`] per scrape.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(sample: SampleFn) -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(SampleCollector(sample)));
        Metrics { registry }
    }

    /// The text exposition of one scrape.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Renders `sample` in the Prometheus text format 0.0.4: each family once, `# HELP` and
/// `# TYPE` first, then its series (one per VF, labelled `vf`, `pf`, `model`).
pub fn render(sample: &Sample) -> String {
    let sample = sample.clone();
    Metrics::new(Arc::new(move || sample.clone()))
        .encode()
        .unwrap_or_default()
}

struct SampleCollector(SampleFn);

impl fmt::Debug for SampleCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SampleCollector")
    }
}

impl Collector for SampleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        encode_sample(&(self.0)(), &mut encoder)
    }
}

/// One value of a family of `kind`, in `metric`.
fn encode_value(
    kind: MetricType,
    value: u64,
    metric: prometheus_client::encoding::MetricEncoder<'_>,
) -> fmt::Result {
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(metric),
        _ => ConstGauge::new(value).encode(metric),
    }
}

fn encode_sample(sample: &Sample, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let labels: Vec<[(&str, &str); 3]> = sample
        .vfs
        .iter()
        .map(|vf| {
            [
                ("vf", vf.id.as_str()),
                ("pf", vf.pf.as_str()),
                ("model", vf.model.as_str()),
            ]
        })
        .collect();
    let per_vf = |encoder: &mut DescriptorEncoder, f: &Family| -> fmt::Result {
        let mut family = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
        for (vf, labels) in sample.vfs.iter().zip(&labels) {
            encode_value(f.kind, (f.value)(vf), family.encode_family(labels)?)?;
        }
        Ok(())
    };
    for family in VF_FAMILIES {
        per_vf(encoder, family)?;
    }
    let mut drops = encoder.encode_descriptor(
        DROPS_FAMILY,
        "Frames dropped, by reason: the switch's checks (tx_disabled, mac_spoof, ...), and \
         no_buffers (receive ring full), bad_ring (receive ring unusable), bad_descriptor \
         (malformed transmit descriptor or offload request, e.g. TSO with an MSS below 64), \
         tx_bad_ring (transmit ring unusable: bad registers or unmapped memory; once per \
         pass).",
        None,
        MetricType::Counter,
    )?;
    for (vf, [l0, l1, l2]) in sample.vfs.iter().zip(&labels) {
        let c = &vf.counters;
        let reasons = DropReason::ALL
            .iter()
            .map(|r| {
                (
                    r.name(),
                    c.drop_reasons.get(r.index()).copied().unwrap_or(0),
                )
            })
            .chain(EXTRA_DROP_REASONS.iter().map(|(n, f)| (*n, f(c))));
        for (reason, value) in reasons {
            let labels = [*l0, *l1, *l2, ("reason", reason)];
            ConstCounter::new(value).encode(drops.encode_family(&labels)?)?;
        }
    }
    for family in VF_FAMILIES_AFTER_DROPS {
        per_vf(encoder, family)?;
    }
    let busy = encoder.encode_descriptor(
        "dataplane_busy_ratio",
        "Share of wall time the dataplane threads spent moving packets since start (0..1).",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(sample.dataplane_busy_ratio).encode(busy)
}

/// Errors of the metrics server.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "cannot listen for metrics on {addr} (is the port in use? choose another --metrics-addr)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot prepare the metrics listener on {addr}")]
    Prepare {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("could not start the metrics runtime")]
    Runtime(#[source] io::Error),
    #[error("could not start the metrics thread")]
    Spawn(#[source] io::Error),
}

/// The metrics HTTP server; serves until [`MetricsServer::shutdown`] or drop.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    /// The runtime thread, when the server brought its own.
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` and serves on a current-thread runtime on a new `metrics` thread
    /// (for callers without a tokio runtime).
    pub fn start(addr: SocketAddr, sample: SampleFn) -> Result<MetricsServer, MetricsError> {
        let (listener, addr) = bind(addr)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(MetricsError::Runtime)?;
        let (stop, stopped) = oneshot::channel();
        let thread = thread::Builder::new()
            .name("metrics".into())
            .spawn(move || rt.block_on(serve(listener, Metrics::new(sample), stopped)))
            .map_err(MetricsError::Spawn)?;
        tracing::info!(%addr, "metrics listening on http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Listens on `addr` and serves on `runtime` (the control plane's).
    pub fn start_on(
        runtime: &tokio::runtime::Handle,
        addr: SocketAddr,
        sample: SampleFn,
    ) -> Result<MetricsServer, MetricsError> {
        let (listener, addr) = bind(addr)?;
        let (stop, stopped) = oneshot::channel();
        runtime.spawn(serve(listener, Metrics::new(sample), stopped));
        tracing::info!(%addr, "metrics listening on http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop: Some(stop),
            thread: None,
        })
    }

    /// A server whose `/metrics` reports [`Sample::collect`] of `node`.
    pub fn for_node(addr: SocketAddr, node: Arc<Node>) -> Result<MetricsServer, MetricsError> {
        Self::start(addr, Arc::new(move || Sample::collect(&node)))
    }

    /// [`for_node`](Self::for_node) on `runtime` (the control plane's).
    pub fn for_node_on(
        runtime: &tokio::runtime::Handle,
        addr: SocketAddr,
        node: Arc<Node>,
    ) -> Result<MetricsServer, MetricsError> {
        Self::start_on(runtime, addr, Arc::new(move || Sample::collect(&node)))
    }

    /// The address actually bound (the port is filled in when `addr` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (the listener closes) and waits for the thread, if any.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(addr = %self.addr, "metrics thread panicked");
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Binds before any runtime runs, so that a taken port fails `start` (and the agent) at once.
fn bind(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), MetricsError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
    let prepare = |source| MetricsError::Prepare { addr, source };
    listener.set_nonblocking(true).map_err(prepare)?;
    let addr = listener.local_addr().map_err(prepare)?;
    Ok((listener, addr))
}

/// Serves until `stopped` fires (or its sender is dropped); then the listener closes.
async fn serve(listener: std::net::TcpListener, metrics: Metrics, stopped: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%error, "cannot serve metrics");
            return;
        }
    };
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: try /metrics or /healthz\n",
            )
        })
        .with_state(Arc::new(metrics));
    tokio::select! {
        result = axum::serve(listener, app) => {
            if let Err(error) = result {
                tracing::error!(%error, "the metrics endpoint stopped");
            }
        }
        _ = stopped => {}
    }
}

/// `GET /metrics`: collects on a blocking thread (the node's locks are std mutexes).
async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Ok(Err(fmt::Error)) | Err(_) => {
            tracing::error!("rendering the metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while rendering the metrics; see the agent's log\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn counters(base: u64) -> CounterSnapshot {
        let mut drop_reasons = [0; emu_nic_model::vmdq::DROP_REASONS];
        for (i, d) in drop_reasons.iter_mut().enumerate() {
            *d = base + i as u64;
        }
        CounterSnapshot {
            tx_packets: base + 100,
            tx_bytes: base + 101,
            rx_packets: base + 102,
            rx_bytes: base + 103,
            rx_multicast: base + 104,
            rx_broadcast: base + 105,
            tx_drops: base + 106,
            rx_drops: base + 107,
            drop_reasons,
            rx_no_buffers: base + 108,
            rx_bad_ring: base + 109,
            tx_bad_descriptors: base + 110,
            tx_bad_ring: base + 112,
            interrupts: base + 111,
        }
    }

    fn sample() -> Sample {
        Sample {
            vfs: vec![
                VfSample {
                    id: "igb0-vf0".into(),
                    pf: "igb0".into(),
                    model: "igbvf".into(),
                    attached: true,
                    healthy: true,
                    traps: 7,
                    counters: counters(0),
                },
                VfSample {
                    id: "igb0-vf1".into(),
                    pf: "igb0".into(),
                    model: "igbvf".into(),
                    attached: false,
                    healthy: false,
                    traps: 0,
                    counters: counters(1000),
                },
            ],
            dataplane_busy_ratio: 0.25,
        }
    }

    /// `name{labels} value` lines of `text`, keyed by `name{labels}`; asserts the syntax of
    /// every line on the way.
    fn series_of(text: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            assert!(out.insert(key.to_owned(), value).is_none(), "dup: {line}");
        }
        out
    }

    #[test]
    fn known_snapshot_renders_every_series() {
        let text = render(&sample());
        assert!(text.ends_with('\n'));
        let s = series_of(&text);
        let l0 = r#"vf="igb0-vf0",pf="igb0",model="igbvf""#;
        let l1 = r#"vf="igb0-vf1",pf="igb0",model="igbvf""#;
        let get = |name: &str, labels: &str| s[&format!("{name}{{{labels}}}")];
        assert_eq!(get("emu_sriov_vf_tx_packets_total", l0), 100.0);
        assert_eq!(get("emu_sriov_vf_tx_bytes_total", l0), 101.0);
        assert_eq!(get("emu_sriov_vf_rx_packets_total", l1), 1102.0);
        assert_eq!(get("emu_sriov_vf_rx_bytes_total", l1), 1103.0);
        assert_eq!(get("emu_sriov_vf_rx_multicast_total", l0), 104.0);
        assert_eq!(get("emu_sriov_vf_rx_broadcast_total", l0), 105.0);
        assert_eq!(get("emu_sriov_vf_tx_drops_total", l1), 1106.0);
        assert_eq!(get("emu_sriov_vf_rx_drops_total", l1), 1107.0);
        assert_eq!(get("emu_sriov_vf_traps_total", l0), 7.0);
        assert_eq!(get("emu_sriov_vf_interrupts_total", l1), 1111.0);
        assert_eq!(get("emu_sriov_vf_attached", l0), 1.0);
        assert_eq!(get("emu_sriov_vf_attached", l1), 0.0);
        assert_eq!(get("emu_sriov_vf_healthy", l0), 1.0);
        assert_eq!(get("emu_sriov_vf_healthy", l1), 0.0);
        for r in DropReason::ALL {
            let key = format!("{l1},reason=\"{}\"", r.name());
            assert_eq!(
                get("emu_sriov_vf_drops_total", &key),
                1000.0 + r.index() as f64
            );
        }
        assert_eq!(
            get(
                "emu_sriov_vf_drops_total",
                &format!("{l0},reason=\"mac_spoof\"")
            ),
            1.0
        );
        for (reason, value) in [
            ("no_buffers", 108.0),
            ("bad_ring", 109.0),
            ("bad_descriptor", 110.0),
            ("tx_bad_ring", 112.0),
        ] {
            let key = format!("{l0},reason=\"{reason}\"");
            assert_eq!(get("emu_sriov_vf_drops_total", &key), value);
        }
        assert_eq!(s["emu_sriov_dataplane_busy_ratio"], 0.25);
        // 12 single-series families and 13 drop reasons per VF, plus the busy ratio.
        assert_eq!(s.len(), 2 * (12 + DropReason::ALL.len() + 4) + 1);
        assert!(text.contains(
            "# TYPE emu_sriov_vf_drops_total counter\n\
             emu_sriov_vf_drops_total{vf=\"igb0-vf0\",pf=\"igb0\",model=\"igbvf\",reason=\"tx_disabled\"} 0\n"
        ), "{text}");
        assert!(
            text.contains(
                "# HELP emu_sriov_dataplane_busy_ratio Share of wall time the dataplane threads \
             spent moving packets since start (0..1).\n\
             # TYPE emu_sriov_dataplane_busy_ratio gauge\n\
             emu_sriov_dataplane_busy_ratio 0.25\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn help_and_type_once_per_family_before_its_series() {
        let text = render(&sample());
        let mut seen: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_owned();
                assert!(!seen.contains(&name), "HELP twice for {name}");
                seen.push(name.clone());
                current = Some(name);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(Some(name), current.as_deref(), "TYPE without HELP");
                let want = if name.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                };
                assert_eq!(kind, want, "{line}");
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(
                    Some(name),
                    current.as_deref(),
                    "series outside its family: {line}"
                );
            }
        }
        assert_eq!(seen.len(), 14, "{seen:?}");
        // A node without VFs still has every family and the busy ratio.
        let empty = render(&Sample::default());
        assert_eq!(empty.matches("# TYPE ").count(), 14);
        assert!(
            empty.ends_with("emu_sriov_dataplane_busy_ratio 0.0\n"),
            "{empty}"
        );
    }

    #[test]
    fn labels_are_escaped() {
        let mut s = sample();
        s.vfs.truncate(1);
        s.vfs[0].id = "we\"ird\\vf\n".into();
        let text = render(&s);
        assert!(
            text.contains(
                r#"emu_sriov_vf_traps_total{vf="we\"ird\\vf\n",pf="igb0",model="igbvf"} 7"#
            ),
            "{text}"
        );
        assert!(
            text.lines().all(|l| !l.is_empty()),
            "raw newline leaked: {text}"
        );
    }

    /// One request with `Connection: close`; returns (status, head, body).
    fn exchange(addr: SocketAddr, request: &str) -> (u16, String, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{answer:?}"));
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    fn request(method: &str, path: &str) -> String {
        format!("{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    }

    #[test]
    fn server_answers_and_survives_bad_clients() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(sample)).unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let (status, head, body) = exchange(addr, &request("GET", "/metrics"));
        assert_eq!(status, 200);
        assert!(
            head.contains(&format!("content-type: {CONTENT_TYPE}\r\n")),
            "{head}"
        );
        assert_eq!(body, render(&sample()));

        let (status, _, body) = exchange(addr, &request("HEAD", "/metrics"));
        assert_eq!(status, 200);
        assert!(body.is_empty());

        assert_eq!(exchange(addr, &request("GET", "/healthz")).2, "ok\n");
        assert_eq!(exchange(addr, &request("GET", "/metricsx")).0, 404);
        assert_eq!(exchange(addr, &request("GET", "/")).0, 404);
        let (status, head, _) = exchange(addr, &request("POST", "/metrics"));
        assert_eq!(status, 405);
        assert!(head.contains("allow: get,head"), "{head}");
        assert_eq!(exchange(addr, "hello\r\n\r\n").0, 400);
        // One that connects and leaves silently costs nothing.
        drop(std::net::TcpStream::connect(addr).unwrap());

        // Still serving after all that.
        assert_eq!(exchange(addr, &request("GET", "/metrics")).0, 200);
        server.shutdown();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "still listening after shutdown"
        );
    }

    #[test]
    fn a_panicking_collector_gets_a_500() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(|| panic!("boom")))
                .unwrap();
        let (status, _, body) = exchange(server.local_addr(), &request("GET", "/metrics"));
        assert_eq!(status, 500);
        assert!(body.contains("internal error"), "{body}");
        assert_eq!(
            exchange(server.local_addr(), &request("GET", "/healthz")).0,
            200
        );
    }

    #[test]
    fn serves_on_a_callers_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = MetricsServer::start_on(
            rt.handle(),
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(sample),
        )
        .unwrap();
        let addr = server.local_addr();
        assert_eq!(exchange(addr, &request("GET", "/metrics")).0, 200);
        server.shutdown();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_ok() {
            assert!(std::time::Instant::now() < deadline, "still listening");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn bind_failure_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = MetricsServer::start(addr, Arc::new(Sample::default))
            .err()
            .unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains(&addr.to_string()) && msg.contains("--metrics-addr"),
            "{msg}"
        );
    }
}
