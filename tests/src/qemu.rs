//! A QEMU process guard: serial console on stdin (piped, for barriers) and stdout (a log file,
//! never a pipe: guest-tests.md §3 pitfalls), stderr to its own file; killed and reaped on Drop.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc::{spawn_guarded, stop_child};

/// A running QEMU. Dropping it stops it (SIGTERM, wait, SIGKILL, reap), by PID only.
pub struct Qemu {
    /// Short name used in logs (e.g. `a`).
    pub name: String,
    /// Serial console output (QEMU's stdout).
    pub console_log: PathBuf,
    /// QEMU's own stderr.
    pub stderr_log: PathBuf,
    /// When the process was started.
    pub started: Instant,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl Qemu {
    /// Spawns `cmd` (from [`crate::GuestEnv::qemu_command`] plus arguments) with its logs under
    /// `dir` as `<name>.console.log` and `<name>.qemu.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Qemu, String> {
        let console_log = dir.join(format!("{name}.console.log"));
        let stderr_log = dir.join(format!("{name}.qemu.log"));
        let out = File::create(&console_log)
            .map_err(|e| format!("create {}: {e}", console_log.display()))?;
        let err = File::create(&stderr_log)
            .map_err(|e| format!("create {}: {e}", stderr_log.display()))?;
        writeln!(&err, "# {cmd:?}").map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let mut child = spawn_guarded(&mut cmd).map_err(|e| format!("spawn QEMU {name}: {e}"))?;
        let stdin = child.stdin.take();
        Ok(Qemu {
            name: name.to_string(),
            console_log,
            stderr_log,
            started: Instant::now(),
            child: Some(child),
            stdin,
        })
    }

    /// The process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Writes one line to the guest's serial console (the barrier "go").
    pub fn send_line(&mut self, line: &str) -> Result<(), String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("QEMU {}: stdin already closed", self.name))?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("QEMU {}: write to console: {e}", self.name))
    }

    /// `Some(exit description)` once the process has exited (reaped), `None` while it runs.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    /// Waits up to `timeout` for the process to exit by itself (after the guest's `poweroff -f`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the process now (idempotent).
    pub fn stop(&mut self) {
        self.stdin.take();
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(3));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.stop();
    }
}
