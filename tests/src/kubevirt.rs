//! KubeVirt-shaped runs: libvirtd from the guest root (tests/guest/libvirtd.sh), the hook sidecar
//! binary, and virt-launcher's side of the hook gRPC API (design kubernetes.md §5).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::{guest_dir, workspace_root, GuestEnv};
use crate::proc::{spawn_guarded, stop_child, tail};

/// Builds (`cargo build -p emu-sriov-kubevirt-hook`) and returns the hook binary, or
/// `EMU_SRIOV_HOOK_BIN` if set.
pub fn hook_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("EMU_SRIOV_HOOK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let st = Command::new(&cargo)
        .args(["build", "-p", "emu-sriov-kubevirt-hook"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {cargo:?} build -p emu-sriov-kubevirt-hook: {e}"))?;
    if !st.success() {
        return Err(format!(
            "`cargo build -p emu-sriov-kubevirt-hook` failed ({st})"
        ));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { root.join(p) } else { p })
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug/emu-sriov-kubevirt-hook"))
}

/// A running hook sidecar (`emu-sriov-kubevirt-hook serve`), stopped on drop.
pub struct HookProc {
    /// Its socket.
    pub socket: PathBuf,
    child: Child,
}

impl HookProc {
    /// Starts the hook with `env` (the compute container's Allocate env) listening in `dir`,
    /// logging to `log`; waits for its socket.
    pub fn start(
        bin: &Path,
        dir: &Path,
        name: &str,
        env: &[(String, String)],
        extra: &[&str],
        log: &Path,
    ) -> Result<HookProc, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let f = File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--socket-dir")
            .arg(dir)
            .args(["--name", name])
            .args(extra)
            .env_remove("NETWORK_BINDING_PLUGIN_NAME")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(f));
        let child = spawn_guarded(&mut cmd).map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut h = HookProc {
            socket: dir.join(format!("{name}.sock")),
            child,
        };
        let end = Instant::now() + Duration::from_secs(20);
        while !h.socket.exists() {
            if let Ok(Some(st)) = h.child.try_wait() {
                return Err(format!("hook exited ({st}): {}", tail(log, 10)));
            }
            if Instant::now() >= end {
                return Err(format!(
                    "hook socket {} not there after 20 s",
                    h.socket.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(h)
    }

    /// Whether it has exited (e.g. after `Shutdown`).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for HookProc {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(3));
    }
}

/// libvirtd from the guest root in its own private mount namespace (`tests/guest/libvirtd.sh`),
/// serving `qemu:///system` on `<run>/run/libvirt/libvirt-sock`. On drop: the domains' QEMUs
/// (by the PIDs in libvirt's pid files) and libvirtd are stopped, by PID only.
pub struct Libvirtd {
    root: PathBuf,
    run: PathBuf,
    /// Its log (stderr).
    pub log: PathBuf,
    child: Child,
}

impl Libvirtd {
    /// Starts libvirtd for run directory `run` (under /tmp), with `mounts` (`host dir`,
    /// `container dir`) bind-mounted like Allocate's; waits for its socket.
    pub fn start(
        env: &GuestEnv,
        run: &Path,
        mounts: &[(String, String)],
    ) -> Result<Libvirtd, String> {
        let log = run.join("libvirtd.log");
        let f = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let f2 = f.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--"])
            .arg(guest_dir().join("libvirtd.sh"))
            .arg(&env.root)
            .arg(run)
            .args(mounts.iter().map(|(h, c)| format!("{h}={c}")))
            .stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2));
        let child =
            spawn_guarded(&mut cmd).map_err(|e| format!("spawn unshare libvirtd.sh: {e}"))?;
        let mut l = Libvirtd {
            root: env.root.clone(),
            run: run.to_owned(),
            log,
            child,
        };
        let sock = run.join("run/libvirt/libvirt-sock");
        let end = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            if let Ok(Some(st)) = l.child.try_wait() {
                return Err(format!(
                    "libvirtd exited during start-up ({st}):\n{}",
                    tail(&l.log, 20)
                ));
            }
            if Instant::now() >= end {
                return Err(format!(
                    "libvirtd socket {} not there after 30 s",
                    sock.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(l)
    }

    /// `virsh -c qemu:///system ARGS` inside libvirtd's mount namespace and root; stdout, or
    /// an error with stderr.
    pub fn virsh(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("nsenter")
            .arg("--mount")
            .arg(format!("--target={}", self.child.id()))
            .arg("chroot")
            .arg(&self.root)
            .args(["virsh", "-c", "qemu:///system"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run nsenter … virsh: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "virsh {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn qemu_pids(&self) -> Vec<i32> {
        let dir = self.run.join("run/libvirt/qemu");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|s| s.trim().parse().ok())
            .filter(|&p: &i32| p > 1)
            .collect()
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        for pid in self.qemu_pids() {
            // Only our domains' QEMUs write pid files under our run directory.
            if Path::new(&format!("/proc/{pid}")).exists() {
                signal_pid(pid, "TERM");
                std::thread::sleep(Duration::from_millis(300));
                signal_pid(pid, "KILL");
            }
        }
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

fn signal_pid(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}
