//! `emu-sriov-cni install DIR`: copies this binary into a node's CNI plugin directory, as the
//! agent DaemonSet's init container does (the image has no shell or `cp`). The copy is written
//! next to the target and renamed over it, so a runtime running the plugin at that moment runs
//! either the old binary or the new one, never half a file.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The file name runtimes look up from a NAD's `"type"`.
pub const PLUGIN_NAME: &str = "emu-sriov-cni";

/// Copies `src` to `dir/emu-sriov-cni` (mode 0755) atomically; returns the installed path.
pub fn install(src: &Path, dir: &Path) -> io::Result<PathBuf> {
    let meta = fs::metadata(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "the CNI plugin directory {} is not there ({e}): mount the node's CNI bin dir (agent.netdev.cniBinDir in the chart)",
                dir.display()
            ),
        )
    })?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let target = dir.join(PLUGIN_NAME);
    let tmp = dir.join(format!(".{PLUGIN_NAME}.{}.tmp", std::process::id()));
    let copy = || -> io::Result<()> {
        fs::copy(src, &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &target)
    };
    copy().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("emu-cni-install-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn installs_executable_and_replaces_an_older_copy() {
        let d = scratch("ok");
        let src = d.join("src");
        fs::write(&src, b"new plugin").unwrap();
        let bin = d.join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join(PLUGIN_NAME), b"old").unwrap();
        let got = install(&src, &bin).unwrap();
        assert_eq!(got, bin.join(PLUGIN_NAME));
        assert_eq!(fs::read(&got).unwrap(), b"new plugin");
        assert_eq!(
            fs::metadata(&got).unwrap().permissions().mode() & 0o777,
            0o755
        );
        // Nothing else is left in the directory.
        assert_eq!(fs::read_dir(&bin).unwrap().count(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_directory_says_what_to_mount() {
        let d = scratch("missing");
        let e = install(&d.join("src"), &d.join("nope")).unwrap_err();
        assert!(e.to_string().contains("cniBinDir"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }
}
