//! The `emu-sriov-agent` process guard and its `list --output json` query.
//!
//! Contract (agent side): `emu-sriov-agent run --run-dir DIR --pf igb:2 [--pf avf:2 ...]` runs in
//! the foreground (`avf:N`: N iavf VFs, model `iavf`, device_id `0x1889`, 4 queue pairs each),
//! logs to stderr, stops cleanly on SIGTERM and creates `DIR/control.sock` plus one vfio-user
//! socket per VF; `emu-sriov-agent list --run-dir DIR --output json` prints
//! `{"vfs":[{"id","pf","index","model","vendor_id","device_id","mac","socket","state",
//! "counters":{"tx_packets",...}}]}` and fails until the agent is up.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::proc::{spawn_guarded, stop_child};

/// Path of the agent binary: `EMU_SRIOV_AGENT_BIN` if set, otherwise builds it with
/// `$CARGO build -p emu-sriov-agent` (`--release` when `EMU_SRIOV_RELEASE=1`) and returns
/// `$CARGO_TARGET_DIR|<workspace>/target` + `/<profile>/emu-sriov-agent`.
pub fn agent_bin() -> Result<PathBuf, String> {
    agent_bin_for(std::env::var("EMU_SRIOV_RELEASE").is_ok_and(|v| v == "1"))
}

/// [`agent_bin`] with the profile chosen by the caller (`EMU_SRIOV_AGENT_BIN` still wins).
pub fn agent_bin_for(release: bool) -> Result<PathBuf, String> {
    crate::env::cargo_bin("emu-sriov-agent", "emu-sriov-agent", release)
}

/// One VF as reported by `list`.
#[derive(Debug, Clone)]
pub struct VfInfo {
    /// e.g. `igb0-vf0`.
    pub id: String,
    /// VF index within its PF.
    pub index: u64,
    /// `02:..` MAC the PF assigned.
    pub mac: String,
    /// Absolute vfio-user socket path.
    pub socket: PathBuf,
    /// `free` or `attached`.
    pub state: String,
    /// `device_id`, e.g. `0x10ca`.
    pub device_id: String,
    /// `model`, e.g. `igbvf` or `iavf` (empty when the agent does not report it).
    pub model: String,
    /// The counters object (`tx_packets`, `rx_packets`, ...).
    pub counters: Value,
}

impl VfInfo {
    /// A counter by name (error if absent or not a number).
    /// The MAC as bytes (`mac` is `aa:bb:…`); all zeros if it does not parse.
    pub fn mac_bytes(&self) -> [u8; 6] {
        let mut m = [0u8; 6];
        for (b, part) in m.iter_mut().zip(self.mac.split(':')) {
            *b = u8::from_str_radix(part, 16).unwrap_or(0);
        }
        m
    }

    pub fn counter(&self, name: &str) -> Result<u64, String> {
        self.counters
            .get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                format!(
                    "VF {}: counter {name} missing in {}",
                    self.id, self.counters
                )
            })
    }
}

/// Parses `list --output json`.
pub fn parse_vfs(v: &Value) -> Result<Vec<VfInfo>, String> {
    let vfs = v
        .get("vfs")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("agent list: no \"vfs\" array in {v}"))?;
    let s = |vf: &Value, k: &str| -> Result<String, String> {
        vf.get(k)
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| format!("agent list: VF without string \"{k}\": {vf}"))
    };
    vfs.iter()
        .map(|vf| {
            Ok(VfInfo {
                id: s(vf, "id")?,
                index: vf
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| format!("agent list: VF without \"index\": {vf}"))?,
                mac: s(vf, "mac")?.to_ascii_lowercase(),
                socket: PathBuf::from(s(vf, "socket")?),
                state: s(vf, "state")?,
                device_id: s(vf, "device_id")?.to_ascii_lowercase(),
                model: vf
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                counters: vf.get("counters").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// A running agent; Drop sends SIGTERM (clean stop), then SIGKILL after a grace period.
/// [`Agent::stop_with`] and [`Agent::restart`] stop it and start it again on the same run dir.
pub struct Agent {
    bin: PathBuf,
    /// `--run-dir`.
    pub run_dir: PathBuf,
    /// Its stderr/stdout (every start of this agent appends to it).
    pub log: PathBuf,
    /// The `run` arguments after `--run-dir`.
    args: Vec<String>,
    child: Option<Child>,
    /// Start-up waits for at least one VF (standalone) or only for `list` (cluster mode,
    /// where the VFs come from a NodeState that may ask for none).
    wait_for_vfs: bool,
}

impl Agent {
    /// Starts `bin run --run-dir <dir>/agent --pf <pf>` and waits (≤ `ready_timeout`) until
    /// `list` succeeds and every VF socket exists.
    pub fn start(
        bin: &Path,
        dir: &Path,
        pf: &str,
        ready_timeout: Duration,
    ) -> Result<Agent, String> {
        Agent::start_pfs(bin, dir, &[pf], ready_timeout)
    }

    /// [`Agent::start`] with one `--pf` per entry (e.g. `["avf:1", "igb:1"]`). An agent that
    /// exits during start-up (e.g. rejects an argument) gives an error starting with
    /// `agent exited during start-up`, followed by the tail of its log.
    pub fn start_pfs(
        bin: &Path,
        dir: &Path,
        pfs: &[&str],
        ready_timeout: Duration,
    ) -> Result<Agent, String> {
        let args: Vec<&str> = pfs.iter().flat_map(|pf| ["--pf", pf]).collect();
        Agent::start_with(bin, dir, &args, ready_timeout)
    }

    /// `run --run-dir <dir>/agent` plus `args` (e.g. `["--config", path]`), as [`Agent::start`].
    pub fn start_with(
        bin: &Path,
        dir: &Path,
        args: &[&str],
        ready_timeout: Duration,
    ) -> Result<Agent, String> {
        Agent::start_inner(bin, dir, args, ready_timeout, true)
    }

    /// [`Agent::start_with`] for cluster mode (`args` has `--cluster` or `--kubeconfig`): ready
    /// once `list` answers, whatever VFs it shows (the NodeState decides those).
    pub fn start_cluster(
        bin: &Path,
        dir: &Path,
        args: &[&str],
        ready_timeout: Duration,
    ) -> Result<Agent, String> {
        Agent::start_inner(bin, dir, args, ready_timeout, false)
    }

    fn start_inner(
        bin: &Path,
        dir: &Path,
        args: &[&str],
        ready_timeout: Duration,
        wait_for_vfs: bool,
    ) -> Result<Agent, String> {
        let run_dir = dir.join("agent");
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| format!("mkdir {}: {e}", run_dir.display()))?;
        let log = dir.join("agent.log");
        File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let mut agent = Agent {
            bin: bin.to_path_buf(),
            run_dir,
            log,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            wait_for_vfs,
        };
        agent.spawn_and_wait(ready_timeout)?;
        Ok(agent)
    }

    /// Starts the agent process (appending to the log) and waits until it is ready.
    fn spawn_and_wait(&mut self, ready_timeout: Duration) -> Result<(), String> {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let f2 = f.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child =
            spawn_guarded(&mut cmd).map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let end = Instant::now() + ready_timeout;
        let mut last_err;
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "agent exited during start-up ({st}); agent.log: {}",
                    crate::proc::tail(&self.log, 8).trim()
                ));
            }
            match self.vfs() {
                Ok(vfs)
                    if (!vfs.is_empty() || !self.wait_for_vfs)
                        && vfs.iter().all(|v| v.socket.exists()) =>
                {
                    return Ok(())
                }
                Ok(vfs) => last_err = format!("{} VFs, sockets not all present yet", vfs.len()),
                Err(e) => last_err = e,
            }
            if Instant::now() >= end {
                return Err(format!(
                    "agent not ready within {ready_timeout:?}; last `list` result: {last_err}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`, or `libc::SIGKILL`, which no process can handle)
    /// to the agent and waits up to `timeout` for it to exit; returns how it exited. Signals
    /// only the agent's own PID.
    pub fn stop_with(
        &mut self,
        signal: i32,
        timeout: Duration,
    ) -> Result<std::process::ExitStatus, String> {
        let child = self.child.as_mut().ok_or("agent already stopped")?;
        if signal == libc::SIGKILL {
            child.kill().map_err(|e| format!("SIGKILL: {e}"))?;
        } else {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("agent had already exited ({st})"));
            }
            let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
            // SAFETY: kill(2) with a PID we spawned and have not reaped (try_wait said it is
            // running), so it cannot have been recycled for another process.
            if unsafe { libc::kill(pid, signal) } != 0 {
                return Err(format!("kill: {}", std::io::Error::last_os_error()));
            }
        }
        let end = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    self.child = None;
                    return Ok(st);
                }
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    return Err(format!(
                        "agent did not exit within {timeout:?} after signal {signal}"
                    ))
                }
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
    }

    /// Starts the stopped agent again on the same run dir with the same arguments and waits
    /// (≤ `ready_timeout`) until it is ready, as [`Agent::start`].
    pub fn restart(&mut self, ready_timeout: Duration) -> Result<(), String> {
        if self.child.is_some() {
            return Err("agent still running: stop it first (stop_with)".into());
        }
        self.spawn_and_wait(ready_timeout)
    }

    /// [`Agent::restart`] with other `run` arguments (after `--run-dir`), kept for later restarts.
    pub fn restart_with(&mut self, args: &[&str], ready_timeout: Duration) -> Result<(), String> {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self.restart(ready_timeout)
    }

    /// The agent's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `list --run-dir … --output json`, parsed.
    pub fn list(&self) -> Result<Value, String> {
        let out = Command::new(&self.bin)
            .arg("list")
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(["--output", "json"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {} list: {e}", self.bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "agent list failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "agent list: bad JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `Err` once the agent process has exited (a crash mid-run).
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(st))) => Err(format!("agent exited ({st}); see agent.log")),
            Some(Err(e)) => Err(format!("agent wait failed: {e}")),
            None => Err("agent already stopped".into()),
        }
    }

    /// The `uplink` object of `list` (`name`, `kind`, `rx_packets`, `tx_packets`, …), or `None`
    /// when the agent has no uplink.
    pub fn uplink(&self) -> Result<Option<Value>, String> {
        Ok(self.list()?.get("uplink").cloned())
    }

    /// The VF called `id` (e.g. `igb0-vf1`) as `list` shows it now.
    pub fn vf(&self, id: &str) -> Result<VfInfo, String> {
        self.vfs()?
            .into_iter()
            .find(|v| v.id == id)
            .ok_or_else(|| format!("no VF {id} in `list`"))
    }

    /// `list()` parsed into VFs, ordered by index.
    pub fn vfs(&self) -> Result<Vec<VfInfo>, String> {
        let mut v = parse_vfs(&self.list()?)?;
        v.sort_by_key(|vf| vf.index);
        Ok(v)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
    }
}
