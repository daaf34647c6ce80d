//! The cached guest environment: a trixie root holding QEMU with `vfio-user-pci`, the guest kernel
//! and its decompressed modules (built by `tests/guest/prepare.sh`; guest-tests.md §1, §2, §9).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Workspace root (the parent of this package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// Builds (if needed) binary `bin` of workspace package `package` and returns its path:
/// `$CARGO build -q -p PACKAGE --bin BIN [--release]`, then
/// `$CARGO_TARGET_DIR|<workspace>/target` + `/<profile>/BIN`. `<BIN>_BIN` (upper-case, `-` →
/// `_`, e.g. `EMU_SRIOV_AGENT_BIN`) names a prebuilt one instead.
pub fn cargo_bin(package: &str, bin: &str, release: bool) -> Result<PathBuf, String> {
    let var = format!("{}_BIN", bin.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{var}={} is not a file", p.display()))
        };
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-q", "-p", package, "--bin", bin])
        .current_dir(&root)
        .stdin(Stdio::null());
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cargo:?} build -p {package}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo build -p {package} --bin {bin}` failed ({status}); see the compiler output above"
        ));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { root.join(p) } else { p })
        .unwrap_or_else(|| root.join("target"));
    let path = target
        .join(if release { "release" } else { "debug" })
        .join(bin);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("built {bin} but {} does not exist", path.display()))
    }
}

/// `tests/guest/` (prepare.sh, init.sh).
pub fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest")
}

/// Result of `prepare.sh`: where QEMU and the kernel live.
#[derive(Debug, Clone)]
pub struct GuestEnv {
    /// The trixie root holding QEMU.
    pub root: PathBuf,
    /// Holds `vmlinuz` and `modules/{*.ko,ORDER}`.
    pub kernel_dir: PathBuf,
}

impl GuestEnv {
    /// Runs `tests/guest/prepare.sh` (idempotent; ~0.1 s when cached, ~1 min cold) and verifies
    /// everything the tests need. Returns a loud, actionable error when something is missing.
    pub fn prepare() -> Result<GuestEnv, String> {
        let script = guest_dir().join("prepare.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}); it needs root and network on a cold cache \
                 (see shared/design/guest-tests.md §1). Its log is above.",
                script.display(),
                out.status
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let env_file = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .ok_or_else(|| format!("{} printed no env file path", script.display()))?
            .trim()
            .to_string();
        let text = std::fs::read_to_string(&env_file)
            .map_err(|e| format!("cannot read env file {env_file} from prepare.sh: {e}"))?;
        let mut root = None;
        let mut kernel_dir = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("ROOT=") {
                root = Some(PathBuf::from(v));
            } else if let Some(v) = line.strip_prefix("KERNEL_DIR=") {
                kernel_dir = Some(PathBuf::from(v));
            }
        }
        let env = GuestEnv {
            root: root.ok_or_else(|| format!("{env_file} lacks ROOT="))?,
            kernel_dir: kernel_dir.ok_or_else(|| format!("{env_file} lacks KERNEL_DIR="))?,
        };
        env.verify()?;
        Ok(env)
    }

    fn verify(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        for p in [
            self.loader(),
            self.root.join("usr/bin/qemu-system-x86_64"),
            self.kernel(),
            self.kernel_dir.join("modules/ORDER"),
            PathBuf::from("/bin/busybox"),
        ] {
            if !p.exists() {
                missing.push(p.display().to_string());
            }
        }
        for tool in ["cpio", "gzip"] {
            if !on_path(tool) {
                missing.push(format!("{tool} (host package)"));
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "guest environment incomplete, missing: {}. Re-run tests/guest/prepare.sh as root \
                 (host needs busybox-static cpio gzip xz-utils debootstrap).",
                missing.join(", ")
            ));
        }
        let help = self
            .qemu_command()
            .args(["-device", "help"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run QEMU from {}: {e}", self.root.display()))?;
        let text = String::from_utf8_lossy(&help.stdout);
        if !text.contains("\"vfio-user-pci\"") {
            return Err(format!(
                "QEMU in {} does not list \"vfio-user-pci\" in `-device help` (needs QEMU >= 10.1 \
                 from trixie-backports); delete that root and re-run tests/guest/prepare.sh. \
                 stderr: {}",
                self.root.display(),
                String::from_utf8_lossy(&help.stderr)
            ));
        }
        Ok(())
    }

    /// The root's dynamic loader, through which QEMU runs without chroot.
    pub fn loader(&self) -> PathBuf {
        self.root.join("usr/lib64/ld-linux-x86-64.so.2")
    }

    /// The guest kernel (bzImage).
    pub fn kernel(&self) -> PathBuf {
        self.kernel_dir.join("vmlinuz")
    }

    /// A decompressed module, e.g. `module("igbvf")`.
    pub fn module(&self, name: &str) -> PathBuf {
        self.kernel_dir.join("modules").join(format!("{name}.ko"))
    }

    /// The verified insmod order of every module in the cache.
    pub fn module_order(&self) -> Result<Vec<String>, String> {
        let p = self.kernel_dir.join("modules/ORDER");
        let text =
            std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// `ld.so --library-path … qemu-system-x86_64 -L … -L …`, ready for more arguments.
    pub fn qemu_command(&self) -> Command {
        let mut c = Command::new(self.loader());
        c.arg("--library-path")
            .arg(self.root.join("usr/lib/x86_64-linux-gnu"))
            .arg(self.root.join("usr/bin/qemu-system-x86_64"))
            .arg("-L")
            .arg(self.root.join("usr/share/qemu"))
            .arg("-L")
            .arg(self.root.join("usr/share/seabios"));
        c
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}
