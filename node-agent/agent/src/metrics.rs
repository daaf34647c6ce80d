//! Prometheus metrics over HTTP: `run --metrics-addr ADDR` serves `GET /metrics` (the
//! [text exposition format] 0.0.4) and `GET /healthz` (`ok`).
//!
//! The server is deliberately tiny: one std thread, a nonblocking listener polled for a stop
//! flag, one request per connection (`Connection: close`). Each connection gets
//! [`IO_TIMEOUT`] in total to send its request head (at most [`MAX_REQUEST`] bytes) and to
//! read the answer, so a slow or hostile client costs at most that long and nothing else.
//! Malformed input is answered with a 4xx status and never panics the thread; a panic in the
//! render function becomes a 500.
//!
//! Rendering runs on the control path (one [`Node::status`] and one
//! [`Node::counter_snapshots`] per scrape); the dataplane is not touched.
//!
//! [text exposition format]: https://prometheus.io/docs/instrumenting/exposition_formats/

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use emu_dataplane::CounterSnapshot;
use emu_nic_model::vmdq::DropReason;

use crate::node::Node;
use crate::status::VfState;

/// Largest request head (request line and headers) the server reads.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a connection has to send its request head, and again to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop checks for shutdown.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Produces the exposition text; called once per `GET /metrics`, on the metrics thread.
pub type RenderFn = Arc<dyn Fn() -> String + Send + Sync>;

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
                    attached: vf.state == VfState::Attached,
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

/// Kind of a metric family.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// How a per-VF family reads its value.
type VfValue = fn(&VfSample) -> u64;

/// A family with one series per VF.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: VfValue,
}

const fn family(name: &'static str, kind: Kind, help: &'static str, value: VfValue) -> Family {
    Family {
        name,
        kind,
        help,
        value,
    }
}

const VF_FAMILIES: &[Family] = &[
    family(
        "emu_sriov_vf_tx_packets_total",
        Kind::Counter,
        "Frames the VF transmitted onto the switch.",
        |v| v.counters.tx_packets,
    ),
    family(
        "emu_sriov_vf_tx_bytes_total",
        Kind::Counter,
        "Bytes the VF transmitted onto the switch.",
        |v| v.counters.tx_bytes,
    ),
    family(
        "emu_sriov_vf_rx_packets_total",
        Kind::Counter,
        "Frames delivered into the VF's receive ring.",
        |v| v.counters.rx_packets,
    ),
    family(
        "emu_sriov_vf_rx_bytes_total",
        Kind::Counter,
        "Bytes delivered into the VF's receive ring.",
        |v| v.counters.rx_bytes,
    ),
    family(
        "emu_sriov_vf_rx_multicast_total",
        Kind::Counter,
        "Multicast frames delivered to the VF.",
        |v| v.counters.rx_multicast,
    ),
    family(
        "emu_sriov_vf_rx_broadcast_total",
        Kind::Counter,
        "Broadcast frames delivered to the VF.",
        |v| v.counters.rx_broadcast,
    ),
    family(
        "emu_sriov_vf_tx_drops_total",
        Kind::Counter,
        "Frames the VF sent that were dropped.",
        |v| v.counters.tx_drops,
    ),
    family(
        "emu_sriov_vf_rx_drops_total",
        Kind::Counter,
        "Frames for the VF that were dropped.",
        |v| v.counters.rx_drops,
    ),
];

const VF_FAMILIES_AFTER_DROPS: &[Family] = &[
    family(
        "emu_sriov_vf_traps_total",
        Kind::Counter,
        "Register accesses by the guest that trapped to the agent.",
        |v| v.traps,
    ),
    family(
        "emu_sriov_vf_interrupts_total",
        Kind::Counter,
        "MSI-X interrupts signalled to the guest.",
        |v| v.counters.interrupts,
    ),
    family(
        "emu_sriov_vf_attached",
        Kind::Gauge,
        "1 when a vfio-user client (a VM) is connected to the VF, else 0.",
        |v| u64::from(v.attached),
    ),
    family(
        "emu_sriov_vf_healthy",
        Kind::Gauge,
        "1 when the VF's server thread and the dataplane are running, else 0.",
        |v| u64::from(v.healthy),
    ),
];

const DROPS_FAMILY: &str = "emu_sriov_vf_drops_total";

/// How an extra drop reason reads its value.
type DropValue = fn(&CounterSnapshot) -> u64;

/// The `reason` label values of [`DROPS_FAMILY`] beyond the switch's [`DropReason`]s.
const EXTRA_DROP_REASONS: [(&str, DropValue); 4] = [
    ("no_buffers", |c| c.rx_no_buffers),
    ("bad_ring", |c| c.rx_bad_ring),
    ("bad_descriptor", |c| c.tx_bad_descriptors),
    ("tx_bad_ring", |c| c.tx_bad_ring),
];

/// Renders `sample` in the Prometheus text format 0.0.4: each family once, `# HELP` and
/// `# TYPE` first, then its series (one per VF, labelled `vf`, `pf`, `model`).
pub fn render(sample: &Sample) -> String {
    let mut out = String::with_capacity(256 + sample.vfs.len() * 3072);
    let labels: Vec<String> = sample.vfs.iter().map(vf_labels).collect();
    let per_vf = |out: &mut String, f: &Family| {
        header(out, f.name, f.kind, f.help);
        for (vf, labels) in sample.vfs.iter().zip(&labels) {
            series(out, f.name, labels, (f.value)(vf));
        }
    };
    for family in VF_FAMILIES {
        per_vf(&mut out, family);
    }
    header(
        &mut out,
        DROPS_FAMILY,
        Kind::Counter,
        "Frames dropped, by reason: the switch's checks (tx_disabled, mac_spoof, ...), and \
         no_buffers (receive ring full), bad_ring (receive ring unusable), bad_descriptor \
         (malformed transmit descriptor or offload request, e.g. TSO with an MSS below 64), \
         tx_bad_ring (transmit ring unusable: bad registers or unmapped memory; once per \
         pass).",
    );
    for (vf, labels) in sample.vfs.iter().zip(&labels) {
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
            let labels = format!("{labels},reason=\"{}\"", escape_label(reason));
            series(&mut out, DROPS_FAMILY, &labels, value);
        }
    }
    for family in VF_FAMILIES_AFTER_DROPS {
        per_vf(&mut out, family);
    }
    let name = "emu_sriov_dataplane_busy_ratio";
    header(
        &mut out,
        name,
        Kind::Gauge,
        "Share of wall time the dataplane threads spent moving packets since start (0..1).",
    );
    let _ = writeln!(out, "{name} {}", format_float(sample.dataplane_busy_ratio));
    out
}

fn vf_labels(vf: &VfSample) -> String {
    format!(
        "vf=\"{}\",pf=\"{}\",model=\"{}\"",
        escape_label(&vf.id),
        escape_label(&vf.pf),
        escape_label(&vf.model)
    )
}

fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
}

fn series(out: &mut String, name: &str, labels: &str, value: u64) {
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

/// A label value: `\`, `"` and newline escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: `\` and newline escaped.
pub fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float sample value as Prometheus spells it (`NaN`, `+Inf`, `-Inf`).
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
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
    #[error("could not start the metrics thread")]
    Spawn(#[source] io::Error),
}

/// The metrics HTTP server: a thread answering requests until [`MetricsServer::shutdown`] or
/// drop.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` and serves on a new thread, answering `/metrics` with `render()`.
    pub fn start(addr: SocketAddr, render: RenderFn) -> Result<MetricsServer, MetricsError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
        let prepare = |source| MetricsError::Prepare { addr, source };
        listener.set_nonblocking(true).map_err(prepare)?;
        let addr = listener.local_addr().map_err(prepare)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("metrics".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || serve(listener, &stop, &render)
            })
            .map_err(MetricsError::Spawn)?;
        tracing::info!(%addr, "metrics listening on http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// A server whose `/metrics` renders [`Sample::collect`] of `node`.
    pub fn for_node(addr: SocketAddr, node: Arc<Node>) -> Result<MetricsServer, MetricsError> {
        Self::start(addr, Arc::new(move || render(&Sample::collect(&node))))
    }

    /// The address actually bound (the port is filled in when `addr` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Relaxed);
        if thread.join().is_err() {
            tracing::error!(addr = %self.addr, "metrics thread panicked");
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn serve(listener: TcpListener, stop: &AtomicBool, render: &RenderFn) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(error) = handle(stream, render) {
                    tracing::debug!(%peer, %error, "metrics connection failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL_INTERVAL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                // E.g. EMFILE: back off instead of spinning, keep serving.
                tracing::warn!(%error, "metrics accept failed");
                thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// An HTTP answer.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    /// Extra header lines, each ending in `\r\n`.
    extra: &'static str,
    /// A HEAD request: the same headers, Content-Length included, and no body.
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
            extra: "",
            head_only: false,
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// What reading a request head produced.
enum Head {
    /// The bytes up to and including the blank line.
    Complete(Vec<u8>),
    TooLarge,
    TimedOut,
    /// The client closed before the blank line.
    Truncated(Vec<u8>),
}

/// Serves one connection: one request, one answer, close.
fn handle(stream: TcpStream, render: &RenderFn) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let _ = stream.set_nodelay(true);
    let response = match read_head(&stream, Instant::now() + IO_TIMEOUT)? {
        Head::Complete(head) => respond(&head, render),
        Head::TooLarge => Response::text(
            431,
            &format!("request head longer than {MAX_REQUEST} bytes"),
        ),
        Head::TimedOut => Response::text(408, "request not received in time"),
        // Nobody is left to read an answer to a request that never finished.
        Head::Truncated(bytes) if bytes.is_empty() => return Ok(()),
        Head::Truncated(_) => Response::text(400, "malformed request: incomplete request head"),
    };
    write_response(&stream, &response)?;
    if response.status >= 400 {
        linger(&stream);
    }
    Ok(())
}

/// After an error answer the client may still be sending: closing with unread input makes
/// the kernel reset the connection, which can destroy the answer before the client reads
/// it. Half-close, then drain briefly.
fn linger(mut stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_millis(250);
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Reads until the blank line that ends the head, at most [`MAX_REQUEST`] bytes, before
/// `deadline`.
fn read_head(mut stream: &TcpStream, deadline: Instant) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        let room = (MAX_REQUEST + 1 - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return Ok(Head::Truncated(buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Head::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Index just past the blank line ending the head (`\r\n\r\n`, or bare `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The answer to a complete request head.
fn respond(head: &[u8], render: &RenderFn) -> Response {
    let request = match parse_head(head) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let mut response = match request.path {
        "/metrics" | "/healthz" if !matches!(request.method, "GET" | "HEAD") => Response {
            extra: "Allow: GET, HEAD\r\n",
            ..Response::text(405, "method not allowed: use GET")
        },
        "/metrics" => match panic::catch_unwind(AssertUnwindSafe(|| render())) {
            Ok(body) => Response {
                status: 200,
                content_type: CONTENT_TYPE,
                body,
                extra: "",
                head_only: false,
            },
            Err(_) => {
                tracing::error!("rendering the metrics panicked");
                Response::text(
                    500,
                    "internal error while rendering the metrics; see the agent's log",
                )
            }
        },
        "/healthz" => Response::text(200, "ok"),
        _ => Response::text(404, "not found: try /metrics or /healthz"),
    };
    response.head_only = request.method == "HEAD";
    response
}

/// The parts of a request line the server looks at.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The target without its query string.
    path: &'a str,
}

/// Parses and checks the request line and header lines; the error is the answer to send.
fn parse_head(head: &[u8]) -> Result<Request<'_>, Response> {
    let bad = |why: &str| Response::text(400, &format!("malformed request: {why}"));
    let text = std::str::from_utf8(head).map_err(|_| bad("request head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected `METHOD TARGET HTTP/1.1`"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("invalid method"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("the target must be an absolute path such as /metrics"));
    }
    match version {
        "HTTP/1.0" | "HTTP/1.1" => {}
        v if v.starts_with("HTTP/") => {
            return Err(Response::text(505, "only HTTP/1.0 and HTTP/1.1 are served"))
        }
        _ => return Err(bad("expected `METHOD TARGET HTTP/1.1`")),
    }
    for header in lines.take_while(|l| !l.is_empty()) {
        let valid = header
            .split_once(':')
            .is_some_and(|(name, _)| !name.is_empty() && !name.contains([' ', '\t']));
        if !valid {
            return Err(bad("invalid header line"));
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request { method, path })
}

fn write_response(mut stream: &TcpStream, r: &Response) -> io::Result<()> {
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        r.status,
        reason_phrase(r.status),
        r.content_type,
        r.body.len(),
        r.extra,
    );
    stream.write_all(head.as_bytes())?;
    if !r.head_only {
        stream.write_all(r.body.as_bytes())?;
    }
    stream.flush()
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
            empty.ends_with("emu_sriov_dataplane_busy_ratio 0\n"),
            "{empty}"
        );
    }

    #[test]
    fn labels_and_help_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), r"x\ny");
        assert_eq!(escape_label("plain-vf0"), "plain-vf0");
        assert_eq!(escape_help("a\\b\nc\"d"), "a\\\\b\\nc\"d");
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

    #[test]
    fn float_values_use_prometheus_spellings() {
        assert_eq!(format_float(0.0), "0");
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn request_heads_are_parsed_strictly() {
        fn ok(h: &[u8]) -> Request<'_> {
            parse_head(h).unwrap()
        }
        assert_eq!(
            ok(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request {
                method: "GET",
                path: "/metrics"
            }
        );
        assert_eq!(ok(b"HEAD /healthz?x=1 HTTP/1.0\n\n").path, "/healthz");
        for bad in [
            &b"\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics FTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
            b"GET /m\xff HTTP/1.1\r\n\r\n",
        ] {
            let r = parse_head(bad).unwrap_err();
            assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            parse_head(b"GET / HTTP/2.0\r\n\r\n").unwrap_err().status,
            505
        );
    }

    /// Sends `bytes`, half-closes, returns (status, headers, body).
    fn exchange(addr: SocketAddr, bytes: &[u8]) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{answer:?}"));
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    #[test]
    fn server_answers_and_survives_bad_clients() {
        let server = MetricsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| render(&sample())),
        )
        .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let (status, head, body) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(status, 200);
        assert!(
            head.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{head}"
        );
        assert_eq!(body, render(&sample()));

        let (status, head, body) = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200);
        assert!(body.is_empty());
        assert!(head.contains(&format!("Content-Length: {}\r\n", render(&sample()).len())));

        assert_eq!(exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n").2, "ok\n");
        assert_eq!(exchange(addr, b"GET /metricsx HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(exchange(addr, b"GET / HTTP/1.1\r\n\r\n").0, 404);
        let (status, head, _) = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status, 405);
        assert!(head.contains("Allow: GET, HEAD"), "{head}");
        assert_eq!(exchange(addr, b"hello\r\n\r\n").0, 400);
        assert_eq!(exchange(addr, b"GET /metrics HTTP/1.1\r\nHost").0, 400);
        assert_eq!(exchange(addr, &[0xff; 64]).0, 400);
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_REQUEST * 2, b'a');
        assert_eq!(exchange(addr, &long).0, 431);

        // A client that connects and says nothing gets a 408 after IO_TIMEOUT.
        let t = Instant::now();
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        let _ = idle.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
        assert!(t.elapsed() >= IO_TIMEOUT - Duration::from_millis(100));
        // One that connects and leaves silently costs nothing.
        drop(TcpStream::connect(addr).unwrap());

        // Still serving after all that.
        assert_eq!(exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").0, 200);
        server.shutdown();
        assert!(
            TcpStream::connect(addr).is_err(),
            "still listening after shutdown"
        );
    }

    #[test]
    fn a_panicking_renderer_gets_a_500() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(|| panic!("boom")))
                .unwrap();
        let (status, _, body) = exchange(server.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status, 500);
        assert!(body.contains("internal error"), "{body}");
        assert_eq!(
            exchange(server.local_addr(), b"GET /healthz HTTP/1.1\r\n\r\n").0,
            200
        );
    }

    #[test]
    fn bind_failure_names_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = MetricsServer::start(addr, Arc::new(String::new))
            .err()
            .unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains(&addr.to_string()) && msg.contains("--metrics-addr"),
            "{msg}"
        );
    }
}
