//! The AF_PACKET uplink.

use super::Uplink;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// An AF_PACKET raw socket bound to an existing interface (all protocols, promiscuous, own
/// sends ignored, nonblocking). Frames are read with their VLAN tag in place.
#[derive(Debug)]
pub struct PacketUplink {
    fd: OwnedFd,
    name: String,
}

impl PacketUplink {
    /// Binds to interface `ifname` of this network namespace.
    ///
    /// # Errors
    /// No such interface, or no CAP_NET_RAW; the message says which.
    pub fn open(ifname: &str) -> io::Result<PacketUplink> {
        let fd = crate::sys::packet_open(ifname).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) => {
                    "no such interface in this network namespace (see `ip link`)"
                }
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    "an AF_PACKET socket needs CAP_NET_RAW (run as root)"
                }
                _ => "cannot open an AF_PACKET socket on it",
            };
            io::Error::new(e.kind(), format!("interface `{ifname}`: {hint}: {e}"))
        })?;
        Ok(PacketUplink {
            fd,
            name: ifname.to_owned(),
        })
    }
}

impl Uplink for PacketUplink {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        crate::sys::packet_read_frame(self.fd.as_fd(), buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        crate::sys::write_frame(self.fd.as_fd(), frame)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "packet"
    }
}
