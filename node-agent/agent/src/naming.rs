//! How VFs and their sockets are named on disk. One place, so that the agent, `list`, the
//! banner and the device plugin all agree.

use std::path::{Path, PathBuf};

/// File name of the agent's control socket inside the run dir.
pub const CONTROL_SOCKET_NAME: &str = "control.sock";

/// The id of VF `index` of PF `pf`, e.g. `igb0-vf0`. Also the name of its socket directory.
pub fn vf_id(pf: &str, index: u8) -> String {
    format!("{pf}-vf{index}")
}

/// File name of every VF's vfio-user socket inside its own directory.
pub const VF_SOCKET_NAME: &str = "vf.sock";

/// The directory holding VF `id`'s socket and nothing else: `RUN_DIR/vfs/<id>`. The device
/// plugin bind-mounts this directory (not the run dir, which would expose other tenants'
/// sockets) into the container; a directory mount also survives the socket being re-created.
pub fn vf_dir(run_dir: &Path, id: &str) -> PathBuf {
    run_dir.join("vfs").join(id)
}

/// The vfio-user socket of the VF with id `id`: `RUN_DIR/vfs/<id>/vf.sock`.
pub fn vf_socket_path(run_dir: &Path, id: &str) -> PathBuf {
    vf_dir(run_dir, id).join(VF_SOCKET_NAME)
}

/// The agent's control socket: `RUN_DIR/control.sock`.
pub fn control_socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(CONTROL_SOCKET_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(vf_id("igb0", 3), "igb0-vf3");
        assert_eq!(
            vf_socket_path(Path::new("/run/emu-sriov"), "igb0-vf3"),
            PathBuf::from("/run/emu-sriov/vfs/igb0-vf3/vf.sock")
        );
        assert_eq!(
            control_socket_path(Path::new("/run/emu-sriov")),
            PathBuf::from("/run/emu-sriov/control.sock")
        );
    }
}
