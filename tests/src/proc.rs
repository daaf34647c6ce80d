//! Child processes and per-run directories (guest-tests.md §9): every child is tracked by PID and
//! only that PID is ever signalled; each run has its own directory, kept when the run fails.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Spawns `cmd` so that it gets SIGKILL if the spawning thread dies (a killed test runner leaves
/// no guests behind). Spawn from the test's own thread: the signal follows that thread.
pub fn spawn_guarded(cmd: &mut Command) -> std::io::Result<Child> {
    // Compared with getppid() in the child rather than 1: the test process may itself be PID 1 (a
    // container), and an orphan may be reparented to a subreaper instead of init.
    let parent = libc::pid_t::try_from(std::process::id())
        .map_err(|_| std::io::Error::other("own PID does not fit pid_t"))?;
    // SAFETY: the closure runs between fork and exec and only calls prctl(2) and getppid(2), both
    // async-signal-safe; it reads only the copied `parent` value.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may already have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent died before exec"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// SIGTERM, wait up to `grace`, then SIGKILL; always reaps. Signals only `child`'s own PID.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a PID we spawned and have not reaped yet (try_wait said running), so
        // it cannot have been recycled for another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill(); // SIGKILL to this PID only
    let _ = child.wait();
}

/// A unique directory under the system temp dir for one run. Removed on drop if the run was
/// marked successful, otherwise kept and its path printed.
pub struct RunDir {
    path: PathBuf,
    success: bool,
}

impl RunDir {
    /// Creates `$TMPDIR/emu-sriov-<tag>-<pid>-<nanos>` (short: it holds UNIX socket paths).
    pub fn new(tag: &str) -> Result<RunDir, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("emu-sriov-{tag}-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        Ok(RunDir {
            path,
            success: false,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks the run successful: the directory is removed on drop.
    pub fn succeed(&mut self) {
        self.success = true;
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.success {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            eprintln!("run directory kept for inspection: {}", self.path.display());
        }
    }
}

/// The last `n` lines of a text file (for failure reports).
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes).replace('\r', "");
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
