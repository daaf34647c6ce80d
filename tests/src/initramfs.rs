//! The guest initramfs: static busybox, `/dev/console`, the needed modules, `/init`
//! (guest-tests.md §3). About 1.4 MB; cheap enough to rebuild per run.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::env::{guest_dir, GuestEnv};

/// Builds `out_dir/initrd.gz` holding busybox, `/init` (`tests/guest/init.sh`), the given modules
/// (cache names such as `"igbvf"`, loaded by `/init` in the cache's verified order) and `extra`
/// files as `(host source, path inside the image)`. Returns the image path.
pub fn build_initramfs(
    env: &GuestEnv,
    out_dir: &Path,
    modules: &[&str],
    extra: &[(PathBuf, &str)],
) -> Result<PathBuf, String> {
    let stage = out_dir.join("initramfs.d");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| format!("clean {}: {e}", stage.display()))?;
    }
    for d in ["bin", "dev", "lib/modules", "proc", "sys", "tmp"] {
        mkdir(&stage.join(d))?;
    }
    copy(Path::new("/bin/busybox"), &stage.join("bin/busybox"), 0o755)?;
    copy(&guest_dir().join("init.sh"), &stage.join("init"), 0o755)?;

    // Keep the cache's verified order, restricted to what this image carries.
    let order = env.module_order()?;
    for m in modules {
        if !order.iter().any(|o| o == m) {
            return Err(format!(
                "module {m} is not in {}/modules/ORDER; add it to tests/guest/prepare.sh",
                env.kernel_dir.display()
            ));
        }
        copy(
            &env.module(m),
            &stage.join(format!("lib/modules/{m}.ko")),
            0o644,
        )?;
    }
    let listed: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|o| modules.contains(o))
        .collect();
    write(
        &stage.join("lib/modules/ORDER"),
        &format!("{}\n", listed.join("\n")),
    )?;

    for (src, dst) in extra {
        let to = stage.join(dst.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            mkdir(parent)?;
        }
        let mode = std::fs::metadata(src)
            .map_err(|e| format!("extra file {}: {e}", src.display()))?
            .permissions()
            .mode();
        copy(src, &to, mode & 0o7777)?;
    }

    mknod_console(&stage.join("dev/console"))?;

    let image = out_dir.join("initrd.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 > \"$0\"")
        .arg(&image)
        .current_dir(&stage)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cpio/gzip: {e}"))?;
    if !status.success() {
        return Err(format!("packing the initramfs failed ({status})"));
    }
    std::fs::remove_dir_all(&stage).map_err(|e| format!("clean {}: {e}", stage.display()))?;
    Ok(image)
}

/// `mknod -m 600 dev/console c 5 1`. Needs root (the guest tests run as root, as prepare.sh does).
fn mknod_console(path: &Path) -> Result<(), String> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call; mknod has no other
    // memory effects.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(5, 1)) };
    if rc != 0 {
        return Err(format!(
            "mknod {} c 5 1 failed: {} (the guest tests must run as root)",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn mkdir(p: &Path) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

fn write(p: &Path, s: &str) -> Result<(), String> {
    std::fs::write(p, s).map_err(|e| format!("write {}: {e}", p.display()))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    std::fs::copy(from, to)
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", to.display()))
}
