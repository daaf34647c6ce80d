//! The `emu-sriov-operator` process guard: a real operator process against the tests' real
//! API server, with its log in a file and its `/metrics` readable.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc::{spawn_guarded, stop_child, tail};

/// Builds (if needed) a binary of this workspace and returns its path:
/// `cargo build -p PACKAGE --bin BIN`, then `<target>/debug/BIN`. `EMU_SRIOV_<BIN>_BIN`
/// (upper-case, `-` → `_`) names a prebuilt one instead.
pub fn workspace_bin(package: &str, bin: &str) -> Result<PathBuf, String> {
    crate::env::cargo_bin(package, bin, false)
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 for a free port")
}

/// A running operator. Killed (SIGTERM, then SIGKILL) on drop; its log is printed then if
/// the test is panicking.
pub struct Operator {
    child: Option<Child>,
    pub identity: String,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Operator {
    /// Starts `emu-sriov-operator --kubeconfig KUBECONFIG` with its metrics on a free port and
    /// the extra `args`; its log goes to `log_dir/operator-<identity>.log`.
    pub fn start(
        kubeconfig: &Path,
        identity: &str,
        log_dir: &Path,
        args: &[&str],
    ) -> Result<Operator, String> {
        let bin = workspace_bin("emu-sriov-operator", "emu-sriov-operator")?;
        let port = free_port();
        let log = log_dir.join(format!("operator-{identity}.log"));
        let file =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = file
            .try_clone()
            .map_err(|e| format!("cloning the log file handle: {e}"))?;
        let mut cmd = Command::new(&bin);
        if !args.contains(&"--log-level") {
            cmd.args(["--log-level", "info,emu_sriov_operator=debug"]);
        }
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--identity", identity])
            .args(args)
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        let child =
            spawn_guarded(&mut cmd).map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let op = Operator {
            child: Some(child),
            identity: identity.to_owned(),
            metrics_port: port,
            log,
        };
        op.wait_http("/healthz", Duration::from_secs(20))?;
        Ok(op)
    }

    /// Waits until `path` answers 200.
    pub fn wait_http(&self, path: &str, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.get(path) {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!(
                    "operator {} did not answer 200 on {path} within {timeout:?}; log:\n{}",
                    self.identity,
                    tail(&self.log, 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET path` on the metrics port: (status code, body).
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| format!("send: {e}"))?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)
            .map_err(|e| format!("read: {e}"))?;
        let code = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no HTTP status in {buf:?}"))?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// The value of metric `name` (summed over its label sets) from `/metrics`.
    pub fn metric(&self, name: &str) -> Result<f64, String> {
        let (_, body) = self.get("/metrics")?;
        Ok(body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next().is_some_and(|n| n == name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// API writes the operator made so far.
    pub fn writes(&self) -> u64 {
        self.metric("emu_sriov_operator_api_writes_total")
            .unwrap_or(0.0) as u64
    }

    /// Whether it holds the leader lease (its `leader` gauge).
    pub fn is_leader(&self) -> bool {
        self.metric("emu_sriov_operator_leader").unwrap_or(0.0) >= 1.0
    }

    /// SIGKILL: no lease release, as a crashed or partitioned leader.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (the lease is released).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
    }

    /// The log so far (last `n` lines).
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- operator {} log ({}):\n{}",
                self.identity,
                self.log.display(),
                tail(&self.log, 60)
            );
        }
        self.stop();
    }
}
