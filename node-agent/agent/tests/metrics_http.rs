//! `emu-sriov-agent run --metrics-addr` as an operator runs it: the real binary, a real node
//! (two igb VFs), scraped over plain TCP, stopped with SIGTERM.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("emu-sriov-metrics-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A port nobody listens on right now (the kernel's pick for port 0, released again).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the agent if the test fails before stopping it.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Agent {
    fn terminate(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.0.id()).unwrap();
        // SAFETY: kill(2) takes no pointers; `pid` is our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "agent did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One request, the whole answer: (status code, head, body). The server keeps HTTP/1.1
/// connections alive, so a request that wants the connection closed says so.
fn get(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {answer:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// Parses `name{labels} value` lines; panics on any line that is not a comment or a series.
fn parse_exposition(text: &str) -> BTreeMap<(String, String), f64> {
    let mut series = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "bad line {line:?}"
        );
        let (key, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value not numeric: {line}"));
        let (name, labels) = match key.split_once('{') {
            Some((name, labels)) => (
                name,
                labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}")),
            ),
            None => (key, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name in {line}"
        );
        let dup = series.insert((name.to_owned(), labels.to_owned()), value);
        assert!(dup.is_none(), "duplicate series {line}");
    }
    series
}

#[test]
fn run_serves_metrics_and_stops_on_sigterm() {
    let dir = run_dir("e2e");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_emu-sriov-agent"))
            .args(["run", "--run-dir", dir.to_str().unwrap(), "--pf", "igb:2"])
            .args(["--metrics-addr", &addr.to_string()])
            .args(["--node-name", "metrics-test"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start emu-sriov-agent"),
    );

    // Wait until the endpoint answers (the agent is starting its node meanwhile).
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = agent.0.try_wait().unwrap() {
            let mut stderr = String::new();
            let _ = agent.0.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("agent exited early ({status}): {stderr}");
        }
        assert!(Instant::now() < deadline, "metrics endpoint never came up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (status, head, body) = get(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let series = parse_exposition(&body);
    let value = |name: &str, labels: &str| {
        *series
            .get(&(name.to_owned(), labels.to_owned()))
            .unwrap_or_else(|| panic!("missing {name}{{{labels}}} in:\n{body}"))
    };
    for vf in ["igb0-vf0", "igb0-vf1"] {
        let labels = format!("vf=\"{vf}\",pf=\"igb0\",model=\"igbvf\"");
        for name in [
            "emu_sriov_vf_tx_packets_total",
            "emu_sriov_vf_tx_bytes_total",
            "emu_sriov_vf_rx_packets_total",
            "emu_sriov_vf_rx_bytes_total",
            "emu_sriov_vf_rx_multicast_total",
            "emu_sriov_vf_rx_broadcast_total",
            "emu_sriov_vf_tx_drops_total",
            "emu_sriov_vf_rx_drops_total",
            "emu_sriov_vf_traps_total",
            "emu_sriov_vf_interrupts_total",
        ] {
            assert_eq!(value(name, &labels), 0.0, "{name} of an idle VF");
        }
        assert_eq!(value("emu_sriov_vf_attached", &labels), 0.0);
        assert_eq!(value("emu_sriov_vf_healthy", &labels), 1.0);
        for reason in [
            "mac_spoof",
            "vlan_spoof",
            "no_match",
            "no_buffers",
            "bad_ring",
            "bad_descriptor",
            "tx_bad_ring",
        ] {
            let l = format!("{labels},reason=\"{reason}\"");
            assert_eq!(value("emu_sriov_vf_drops_total", &l), 0.0);
        }
        let reasons = series
            .keys()
            .filter(|(n, l)| n == "emu_sriov_vf_drops_total" && l.starts_with(&labels))
            .count();
        assert_eq!(reasons, 13, "{body}");
    }
    let busy = value("emu_sriov_dataplane_busy_ratio", "");
    assert!((0.0..=1.0).contains(&busy), "busy ratio {busy}");
    for family in ["emu_sriov_vf_rx_packets_total", "emu_sriov_vf_healthy"] {
        assert_eq!(body.matches(&format!("# TYPE {family} ")).count(), 1);
        assert_eq!(body.matches(&format!("# HELP {family} ")).count(), 1);
    }

    let (status, _, body) = get(addr, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(
        get(addr, "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n").0,
        404
    );
    assert_eq!(get(addr, "NONSENSE\r\n\r\n").0, 400);
    // Still serving after a bad request.
    assert_eq!(get(addr, "GET /metrics HTTP/1.0\r\n\r\n").0, 200);

    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "metrics port still open after exit"
    );
    let mut stderr = String::new();
    let _ = agent.0.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(stderr.contains("metrics listening"), "{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_rejects_a_bad_metrics_addr() {
    let out = Command::new(env!("CARGO_BIN_EXE_emu-sriov-agent"))
        .args(["run", "--metrics-addr", "localhost"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid address `localhost`") && stderr.contains("127.0.0.1:9477"),
        "{stderr}"
    );
}

#[test]
fn run_fails_cleanly_when_the_metrics_port_is_taken() {
    let dir = run_dir("taken");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_emu-sriov-agent"))
        .args(["run", "--run-dir", dir.to_str().unwrap(), "--pf", "igb:1"])
        .args(["--metrics-addr", &addr.to_string()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen for metrics on {addr}")),
        "{stderr}"
    );
    assert!(
        !dir.join("control.sock").exists(),
        "control socket left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
