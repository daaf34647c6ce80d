//! How VFs and their sockets are named on disk. One place, so that the agent, `list`, the
//! banner and the device plugin all agree.

use std::path::{Path, PathBuf};

/// File name of the agent's control socket inside the run dir.
pub const CONTROL_SOCKET_NAME: &str = "control.sock";

/// The id of VF `index` of PF `pf`, e.g. `igb0-vf0`. Also the stem of its socket file.
pub fn vf_id(pf: &str, index: u8) -> String {
    format!("{pf}-vf{index}")
}

/// The vfio-user socket of the VF with id `id`: `RUN_DIR/<id>.sock`.
pub fn vf_socket_path(run_dir: &Path, id: &str) -> PathBuf {
    run_dir.join(format!("{id}.sock"))
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
            PathBuf::from("/run/emu-sriov/igb0-vf3.sock")
        );
        assert_eq!(
            control_socket_path(Path::new("/run/emu-sriov")),
            PathBuf::from("/run/emu-sriov/control.sock")
        );
    }
}
