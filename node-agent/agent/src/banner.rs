//! What `run` prints on stdout once the VFs are up: for people, not for scripts (scripts use
//! `list --output json` or `qemu-args`).

use std::fmt::Write as _;
use std::path::Path;

use crate::config::AgentConfig;
use crate::status::VfStatus;

/// The QEMU `-device` argument (JSON syntax) that attaches the VF served at `socket`:
/// `{"driver":"vfio-user-pci","socket":{"type":"unix","path":"<socket>"},"rombar":0}`.
pub fn qemu_device_arg(socket: &Path) -> String {
    let path = socket.to_string_lossy();
    let path =
        serde_json::to_string(&*path).unwrap_or_else(|_| unreachable!("a str always encodes"));
    format!(r#"{{"driver":"vfio-user-pci","socket":{{"type":"unix","path":{path}}},"rombar":0}}"#)
}

/// `arg` quoted for a POSIX shell.
fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// The ready banner: every VF with its MAC and socket, and how to attach one to QEMU.
pub fn render_ready(config: &AgentConfig, vfs: &[VfStatus]) -> String {
    let mut out = String::new();
    let plural = if vfs.len() == 1 { "" } else { "s" };
    let _ = writeln!(
        out,
        "emu-sriov-agent: {} VF{plural} ready (run dir {})",
        vfs.len(),
        config.run_dir.display()
    );
    let id_width = vfs.iter().map(|vf| vf.id.len()).max().unwrap_or(0);
    for vf in vfs {
        let _ = writeln!(
            out,
            "  {:<id_width$}  {} {}  mac {}  {}",
            vf.id,
            vf.model,
            vf.pci_id(),
            vf.mac,
            match &vf.netdev {
                Some(tap) => format!("netdev {tap} (for emu-sriov-cni)"),
                None => format!("socket {}", vf.socket.display()),
            }
        );
    }
    if let Some(first) = vfs.iter().find(|vf| vf.netdev.is_none()) {
        let _ = writeln!(
            out,
            "Attach a VF to a QEMU (>= 10.1) VM; guest RAM must be a shared memfd of the VM's size:\n  \
             qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on -machine q35,memory-backend=mem \\\n    \
             -device {}",
            shell_quote(&qemu_device_arg(&first.socket))
        );
        let _ = writeln!(
            out,
            "List VFs and their counters: emu-sriov-agent list --run-dir {}",
            shell_quote(&config.run_dir.display().to_string())
        );
    }
    out
}

/// Prints [`render_ready`] to stdout.
pub fn print_ready(config: &AgentConfig, vfs: &[VfStatus]) {
    print!("{}", render_ready(config, vfs));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, HostDefaults};
    use crate::status::AgentStatus;

    #[test]
    fn device_arg_is_exact_json() {
        assert_eq!(
            qemu_device_arg(Path::new("/run/emu-sriov/vfs/igb0-vf0/vf.sock")),
            r#"{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/run/emu-sriov/vfs/igb0-vf0/vf.sock"},"rombar":0}"#
        );
        let odd = qemu_device_arg(Path::new("/tmp/a \"b\"\\c.sock"));
        let v: serde_json::Value = serde_json::from_str(&odd).unwrap();
        assert_eq!(v["socket"]["path"], "/tmp/a \"b\"\\c.sock");
    }

    #[test]
    fn banner_lists_every_vf_and_the_qemu_line() {
        let config = ConfigFile::builtin()
            .validate_with(&HostDefaults {
                node_name: Some("n".into()),
                run_dir: "/run/emu-sriov".into(),
            })
            .unwrap();
        let status = AgentStatus::configured(&config);
        let text = render_ready(&config, &status.vfs);
        assert!(
            text.starts_with("emu-sriov-agent: 4 VFs ready (run dir /run/emu-sriov)\n"),
            "{text}"
        );
        for vf in &status.vfs {
            assert!(
                text.contains(&format!(
                    "  {}  igbvf 8086:10ca  mac {}  socket {}",
                    vf.id,
                    vf.mac,
                    vf.socket.display()
                )),
                "{text}"
            );
        }
        assert!(text.contains(
            r#"-device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/run/emu-sriov/vfs/igb0-vf0/vf.sock"},"rombar":0}'"#
        ), "{text}");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
