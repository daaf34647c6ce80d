//! The TAP uplink.

use super::Uplink;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// A TAP device owned by this process (`IFF_TAP | IFF_NO_PI`, nonblocking, not persistent).
#[derive(Debug)]
pub struct TapUplink {
    fd: OwnedFd,
    name: String,
}

impl TapUplink {
    /// Creates TAP `name` (or attaches to an existing, unattached one of that name).
    ///
    /// # Errors
    /// An invalid name, or `/dev/net/tun` / TUNSETIFF failing; the message says what to check
    /// (CAP_NET_ADMIN, the tun module, a name in use).
    pub fn open(name: &str) -> io::Result<TapUplink> {
        let (fd, name) = crate::sys::tap_open(name).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    "creating a TAP needs CAP_NET_ADMIN (run as root)"
                }
                Some(libc::ENOENT) | Some(libc::ENODEV) => {
                    "/dev/net/tun is missing: load the tun module (modprobe tun)"
                }
                Some(libc::EBUSY) => "a TAP of that name is already attached to another process",
                Some(libc::EINVAL) => "the name is in use by a non-TAP interface, or invalid",
                _ => "cannot open /dev/net/tun or create the TAP",
            };
            io::Error::new(e.kind(), format!("TAP `{name}`: {hint}: {e}"))
        })?;
        Ok(TapUplink { fd, name })
    }
}

impl Uplink for TapUplink {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        crate::sys::read_frame(self.fd.as_fd(), buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        crate::sys::write_frame(self.fd.as_fd(), frame)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "tap"
    }
}
