//! The plugin's only `unsafe`: joining a network namespace on a helper thread.

use std::os::fd::AsRawFd as _;

/// Moves the calling thread into the network namespace `ns` (an open nsfs file).
pub fn setns_net(ns: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: setns(2) reads nothing of ours; `ns` is an open fd for the whole call. It changes
    // the calling thread's network namespace only (CLONE_NEWNET is per thread).
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
