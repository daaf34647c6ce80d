//! The guest initramfs: static busybox, `/dev/console`, the needed modules, `/init`
//! (guest-tests.md §3), and optionally dynamically linked tools from the cached trixie root
//! (`ethtool`, `iperf3`) with their shared libraries and the root's loader. About 1.4 MB, 3.5 MB
//! with the tools; cheap enough to rebuild per run.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::env::{guest_dir, GuestEnv};

/// Where the root's multiarch libraries live, in the root and in the image.
const LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";
/// The x86-64 program interpreter every root binary names (`PT_INTERP`).
const LOADER: &str = "lib64/ld-linux-x86-64.so.2";

/// Builds `out_dir/initrd.gz` holding busybox, `/init` (`tests/guest/init.sh`), the given modules
/// (cache names such as `"igbvf"`, loaded by `/init` in the cache's verified order) and `extra`
/// files as `(host source, path inside the image)`. Returns the image path.
pub fn build_initramfs(
    env: &GuestEnv,
    out_dir: &Path,
    modules: &[&str],
    extra: &[(PathBuf, &str)],
) -> Result<PathBuf, String> {
    build_initramfs_with_tools(env, out_dir, modules, extra, &[])
}

/// [`build_initramfs`] plus `root_bins`: binaries of the cached trixie root given by name
/// (`"ethtool"`, looked up in `usr/bin`, `usr/sbin`) or root-relative path. Each goes to
/// `/usr/bin/<name>`, every library it needs (`DT_NEEDED`, recursively, resolved inside the root,
/// never on the host) to `/usr/lib/x86_64-linux-gnu/`, and the root's loader to
/// `/lib64/ld-linux-x86-64.so.2`.
pub fn build_initramfs_with_tools(
    env: &GuestEnv,
    out_dir: &Path,
    modules: &[&str],
    extra: &[(PathBuf, &str)],
    root_bins: &[&str],
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

    if !root_bins.is_empty() {
        let mut bins = Vec::new();
        for b in root_bins {
            bins.push(find_root_bin(&env.root, b)?);
        }
        let libs = needed_closure(&env.root, &bins)?;
        mkdir(&stage.join("usr/bin"))?;
        mkdir(&stage.join(LIB_DIR))?;
        mkdir(&stage.join("lib64"))?;
        for b in &bins {
            let name = b.file_name().expect("binary path has a file name");
            copy(b, &stage.join("usr/bin").join(name), 0o755)?;
        }
        for (name, path) in &libs {
            copy(path, &stage.join(LIB_DIR).join(name), 0o755)?;
        }
        copy(
            &env.root.join("usr").join(LOADER),
            &stage.join(LOADER),
            0o755,
        )?;
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

/// A root binary by name (`usr/bin`, `usr/sbin`) or by root-relative path.
fn find_root_bin(root: &Path, bin: &str) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = if bin.contains('/') {
        vec![root.join(bin.trim_start_matches('/'))]
    } else {
        ["usr/bin", "usr/sbin"]
            .iter()
            .map(|d| root.join(d).join(bin))
            .collect()
    };
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "{bin} is not in the guest root {} (usr/bin, usr/sbin); add its package to \
             GUEST_TOOLS in tests/guest/prepare.sh",
            root.display()
        )
    })
}

/// Every shared library `bins` need, transitively: `(soname, path inside the root)`, sorted;
/// plus `libgcc_s.so.1`, which glibc loads at run time.
/// Resolved in the root's `usr/lib/x86_64-linux-gnu` and `usr/lib` only; the loader itself is
/// skipped (it goes to `/lib64`).
pub fn needed_closure(root: &Path, bins: &[PathBuf]) -> Result<Vec<(String, PathBuf)>, String> {
    let mut found: std::collections::BTreeMap<String, PathBuf> = Default::default();
    let mut todo: Vec<PathBuf> = bins.to_vec();
    while let Some(f) = todo.pop() {
        let bytes = std::fs::read(&f).map_err(|e| format!("read {}: {e}", f.display()))?;
        let mut needed = elf_needed(&bytes).map_err(|e| format!("{}: {e}", f.display()))?;
        // glibc dlopen()s libgcc_s for pthread_cancel/pthread_exit unwinding (iperf3 aborts at
        // the end of a test without it: "libgcc_s.so.1 must be installed for pthread_cancel").
        if needed.iter().any(|n| n == "libc.so.6") {
            needed.push("libgcc_s.so.1".into());
        }
        for name in needed {
            if name.starts_with("ld-linux") || found.contains_key(&name) {
                continue;
            }
            let path = [LIB_DIR, "usr/lib"]
                .iter()
                .map(|d| root.join(d).join(&name))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    format!(
                        "{} needs {name}, which is not in {}/{LIB_DIR}",
                        f.display(),
                        root.display()
                    )
                })?;
            found.insert(name, path.clone());
            todo.push(path);
        }
    }
    Ok(found.into_iter().collect())
}

/// The `DT_NEEDED` entries of a little-endian ELF64 file (x86-64), from its `PT_DYNAMIC`
/// segment; the string table address is mapped to a file offset through the `PT_LOAD` segments.
/// A static binary has none.
pub fn elf_needed(b: &[u8]) -> Result<Vec<String>, String> {
    let u16_at = |o: usize| -> Result<u64, String> {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]) as u64)
            .ok_or_else(|| "truncated ELF".to_string())
    };
    let u64_at = |o: usize| -> Result<u64, String> {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
            .ok_or_else(|| "truncated ELF".to_string())
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return Err("not a little-endian ELF64 file".into());
    }
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    // (type, offset, vaddr, filesz)
    let mut phdrs = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let p_type = b
            .get(o..o + 4)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
            .ok_or("truncated program header")?;
        phdrs.push((p_type, u64_at(o + 8)?, u64_at(o + 16)?, u64_at(o + 32)?));
    }
    const PT_LOAD: u32 = 1;
    const PT_DYNAMIC: u32 = 2;
    let Some(&(_, dyn_off, _, dyn_size)) = phdrs.iter().find(|p| p.0 == PT_DYNAMIC) else {
        return Ok(Vec::new());
    };
    let vaddr_to_off = |va: u64| -> Result<usize, String> {
        phdrs
            .iter()
            .find(|p| p.0 == PT_LOAD && va >= p.2 && va < p.2 + p.3)
            .map(|p| (va - p.2 + p.1) as usize)
            .ok_or_else(|| format!("address {va:#x} is in no PT_LOAD segment"))
    };
    let (mut strtab, mut needed) = (None, Vec::new());
    let mut o = dyn_off as usize;
    while o + 16 <= (dyn_off + dyn_size) as usize {
        let (tag, val) = (u64_at(o)?, u64_at(o + 8)?);
        match tag {
            0 => break,              // DT_NULL
            1 => needed.push(val),   // DT_NEEDED
            5 => strtab = Some(val), // DT_STRTAB
            _ => {}
        }
        o += 16;
    }
    if needed.is_empty() {
        return Ok(Vec::new());
    }
    let base = vaddr_to_off(strtab.ok_or("DT_NEEDED without DT_STRTAB")?)?;
    needed
        .into_iter()
        .map(|n| {
            let start = base + n as usize;
            let s = b.get(start..).ok_or("string table offset out of range")?;
            let end = s
                .iter()
                .position(|&c| c == 0)
                .ok_or("unterminated string")?;
            Ok(String::from_utf8_lossy(&s[..end]).into_owned())
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dt_needed_of_a_host_binary() {
        // /bin/ls is dynamically linked on every Debian host.
        let b = std::fs::read("/bin/ls").expect("read /bin/ls");
        let n = elf_needed(&b).expect("parse /bin/ls");
        assert!(n.iter().any(|x| x == "libc.so.6"), "{n:?}");
        assert!(elf_needed(b"not an elf").is_err());
    }

    #[test]
    fn static_busybox_needs_nothing() {
        if let Ok(b) = std::fs::read("/bin/busybox") {
            assert_eq!(elf_needed(&b).expect("parse busybox"), Vec::<String>::new());
        }
    }
}
