//! Who may reach what in the run dir. Least privilege, set explicitly (whatever the umask):
//!
//! | path | no `socketOwner` | `socketOwner: {uid, gid}` |
//! |---|---|---|
//! | `RUN_DIR/`, `RUN_DIR/vfs/` | 0700 | 0711: others may pass through, not list |
//! | `RUN_DIR/control.sock`, `state.json` | 0600 | 0600 |
//! | `RUN_DIR/vfs/<id>/` | 0700 | 0750, the agent's user, group `gid` |
//! | `RUN_DIR/vfs/<id>/vf.sock` | 0600 | 0660, `uid:gid` |
//!
//! A VF's directory stays the agent's: a tenant that could write there could replace its
//! socket with a file and stop the next agent start for every tenant. In a cluster the device
//! plugin bind-mounts `vfs/<id>/` into the pod, so the pod's QEMU (KubeVirt: 107:107) reaches
//! its own socket and no other; on the host, 0711 on the run dir lets a QEMU running as `uid`
//! open `RUN_DIR/vfs/<id>/vf.sock` by path while the directories of other owners' VFs stay
//! closed to it.
//!
//! Order matters: a VF's directory is closed (0700) before its socket is bound and opened to
//! the owner only after the socket's owner and mode are set, so that nobody can connect in
//! between; the binary also runs with umask 077.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::SocketOwner;
use crate::sys;

/// Mode of the run dir and `vfs/` when no VF socket is handed to another user.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the run dir and `vfs/` when some are: pass through, do not list.
pub const TRAVERSE_DIR_MODE: u32 = 0o711;
/// Mode of a VF's directory handed to a group.
pub const SHARED_VF_DIR_MODE: u32 = 0o750;
/// Mode of a socket (or file) only the agent's user may use.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of a VF socket handed to `uid:gid`.
pub const SHARED_SOCKET_MODE: u32 = 0o660;

/// A path whose ownership or mode could not be set.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot create directory {} (choose another run dir with --run-dir)", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "run dir {} belongs to uid {uid}{sticky}: the agent keeps its run dir to itself; choose a dedicated directory (--run-dir)",
        path.display(),
        sticky = if *sticky { " and is shared (sticky bit)" } else { "" }
    )]
    ForeignRunDir {
        path: PathBuf,
        uid: u32,
        sticky: bool,
    },
    #[error("cannot set mode {mode:04o} on {}", path.display())]
    Mode {
        path: PathBuf,
        mode: u32,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot give {} to {owner} (socketOwner){hint}",
        path.display(),
        hint = if source.kind() == io::ErrorKind::PermissionDenied {
            ": handing a socket to another user needs root (or CAP_CHOWN); run the agent as root or drop socketOwner"
        } else {
            ""
        }
    )]
    Owner {
        path: PathBuf,
        owner: String,
        #[source]
        source: io::Error,
    },
}

fn set_mode(path: &Path, mode: u32) -> Result<(), AccessError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        AccessError::Mode {
            path: path.to_owned(),
            mode,
            source,
        }
    })
}

fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<(), AccessError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| AccessError::Owner {
        path: path.to_owned(),
        owner: format!("{uid}:{gid}"),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), AccessError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(|source| AccessError::Create {
            path: dir.to_owned(),
            source,
        })
}

/// Creates `dir` (and its parents) if missing, then makes it the agent's with `mode`. Only
/// for directories inside the run dir: one left by an earlier run is taken back first.
fn own_dir(dir: &Path, mode: u32) -> Result<(), AccessError> {
    create_dir(dir)?;
    set_owner(dir, sys::effective_uid(), sys::effective_gid())?;
    set_mode(dir, mode)
}

/// Creates the run dir and `RUN_DIR/vfs/` with the modes of the table above. `shared`: some
/// PF hands its sockets to a `socketOwner`.
pub fn prepare_run_dir(run_dir: &Path, shared: bool) -> Result<(), AccessError> {
    let mode = if shared {
        TRAVERSE_DIR_MODE
    } else {
        PRIVATE_DIR_MODE
    };
    create_dir(run_dir)?;
    // The run dir may be a path the user gave: never take over, or lock up, a directory that
    // is not the agent's own (such as /tmp).
    let meta = fs::metadata(run_dir).map_err(|source| AccessError::Create {
        path: run_dir.to_owned(),
        source,
    })?;
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.uid() != sys::effective_uid() || sticky {
        return Err(AccessError::ForeignRunDir {
            path: run_dir.to_owned(),
            uid: meta.uid(),
            sticky,
        });
    }
    set_mode(run_dir, mode)?;
    own_dir(&run_dir.join("vfs"), mode)
}

/// Closes VF directory `dir` (created if missing) before its socket is bound: 0700, the
/// agent's.
pub fn close_vf_dir(dir: &Path) -> Result<(), AccessError> {
    own_dir(dir, PRIVATE_DIR_MODE)
}

/// After the socket in `dir` is bound: hands it to `owner` (0660 `uid:gid`) and opens the
/// directory to its group (0750), or keeps both the agent's (0600, 0700) without an owner.
pub fn open_vf_socket(
    dir: &Path,
    socket: &Path,
    owner: Option<SocketOwner>,
) -> Result<(), AccessError> {
    let Some(owner) = owner else {
        return set_mode(socket, PRIVATE_FILE_MODE);
    };
    set_owner(socket, owner.uid, owner.gid)?;
    set_mode(socket, SHARED_SOCKET_MODE)?;
    set_owner(dir, sys::effective_uid(), owner.gid)?;
    set_mode(dir, SHARED_VF_DIR_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn stat(path: &Path) -> (u32, u32, u32) {
        let m = fs::symlink_metadata(path).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    }

    fn temp_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("emu-access-{}-{name}", std::process::id()))
    }

    #[test]
    fn private_by_default_whatever_the_umask_left() {
        let run = temp_dir("private");
        let _ = fs::remove_dir_all(&run);
        fs::create_dir_all(run.join("vfs")).unwrap();
        // Wide open, as a permissive umask or an earlier run could leave them.
        for d in [&run, &run.join("vfs")] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
        }
        prepare_run_dir(&run, false).unwrap();
        let me = (sys::effective_uid(), sys::effective_gid());
        assert_eq!(stat(&run), (0o700, me.0, me.1));
        assert_eq!(stat(&run.join("vfs")), (0o700, me.0, me.1));
        let vf = run.join("vfs/igb0-vf0");
        close_vf_dir(&vf).unwrap();
        let sock = vf.join("vf.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o777)).unwrap();
        open_vf_socket(&vf, &sock, None).unwrap();
        assert_eq!(stat(&vf), (0o700, me.0, me.1));
        assert_eq!(stat(&sock), (0o600, me.0, me.1));
        let _ = fs::remove_dir_all(&run);
    }

    #[test]
    fn handed_to_an_owner() {
        // Giving a file away needs root; as another user, only the own ids are allowed.
        let owner = if sys::effective_uid() == 0 {
            SocketOwner { uid: 107, gid: 107 }
        } else {
            SocketOwner {
                uid: sys::effective_uid(),
                gid: sys::effective_gid(),
            }
        };
        let run = temp_dir("shared");
        let _ = fs::remove_dir_all(&run);
        prepare_run_dir(&run, true).unwrap();
        let me = sys::effective_uid();
        assert_eq!(stat(&run).0, 0o711);
        assert_eq!(stat(&run.join("vfs")).0, 0o711);
        let vf = run.join("vfs/avf0-vf1");
        close_vf_dir(&vf).unwrap();
        assert_eq!(stat(&vf).0, 0o700);
        let sock = vf.join("vf.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        open_vf_socket(&vf, &sock, Some(owner)).unwrap();
        assert_eq!(stat(&vf), (0o750, me, owner.gid));
        assert_eq!(stat(&sock), (0o660, owner.uid, owner.gid));
        // A restart closes it again before re-binding.
        close_vf_dir(&vf).unwrap();
        assert_eq!(stat(&vf), (0o700, me, sys::effective_gid()));
        let _ = fs::remove_dir_all(&run);
    }

    #[test]
    fn a_shared_or_foreign_directory_is_not_taken_over() {
        let dir = temp_dir("sticky");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // Like /tmp.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        let e = prepare_run_dir(&dir, false).unwrap_err();
        assert!(
            matches!(e, AccessError::ForeignRunDir { sticky: true, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("--run-dir"), "{e}");
        assert_eq!(stat(&dir).0, 0o1777, "mode changed");
        if sys::effective_uid() == 0 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(&dir, Some(107), Some(107)).unwrap();
            let e = prepare_run_dir(&dir, false).unwrap_err();
            assert!(
                matches!(
                    e,
                    AccessError::ForeignRunDir {
                        uid: 107,
                        sticky: false,
                        ..
                    }
                ),
                "{e}"
            );
            assert_eq!(stat(&dir), (0o755, 107, 107), "taken over");
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
