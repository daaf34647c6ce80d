//! Netdev-mode VF ports: a kernel TAP stands where a VF's rings would be.
//!
//! Frames the netdev transmits (its owner writes to it: a pod's stack) are read from the TAP's
//! fd as the VF's TX ring would be walked, switched with the same VMDq rules (MAC filter, VLAN,
//! anti-spoofing, rate limit, counters) and delivered to the receivers; frames the switch delivers
//! to the port are written to the fd, which the kernel hands to the netdev as received. The fd
//! stays valid when the netdev moves to another network namespace (a pod's), so the dataplane
//! never notices the move. If the netdev is destroyed (its namespace went away, or someone
//! deleted it) the fd reads `EBADFD`: the port marks itself lost and stops, and the control path
//! attaches a fresh TAP ([`TapState::attach`]).
//!
//! Nothing here allocates per frame: re-tagging uses a scratch buffer grown once.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// A TAP port's device state (behind the port's lock, like a VF's registers).
#[derive(Debug, Default)]
pub struct TapState {
    fd: Option<OwnedFd>,
    /// Put a VLAN tag the switch took off on delivery (a frame of a VLAN the pool joined) back
    /// into the frame: a netdev has no descriptor to report it in. Off for a port VLAN, which the
    /// netdev never sees (VMVIR semantics).
    pub keep_tags: bool,
    /// Set when the fd failed for good (the netdev is gone); cleared by [`TapState::attach`].
    lost: bool,
    /// One re-tagged frame (grown to the largest frame once).
    scratch: Vec<u8>,
}

impl TapState {
    /// Serves the TAP behind `fd` (nonblocking, `IFF_TAP | IFF_NO_PI`) from now on; returns
    /// the fd it replaces.
    pub fn attach(&mut self, fd: OwnedFd) -> Option<OwnedFd> {
        self.lost = false;
        self.fd.replace(fd)
    }

    /// Stops serving the TAP; returns its fd.
    pub fn detach(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }

    /// The TAP's fd, if one is attached.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// Whether the attached TAP failed for good (its netdev was destroyed).
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Reads one frame the netdev transmitted: `Ok(None)` when none is queued (or no TAP is
    /// attached). An error other than "nothing queued" marks the port lost.
    #[inline]
    pub(crate) fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(fd) = &self.fd else { return Ok(None) };
        match crate::sys::read_frame(fd.as_fd(), buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.lost = true;
                Err(e)
            }
        }
    }

    /// Hands one frame to the netdev as received; `vlan` is the tag the switch stripped.
    #[inline]
    pub(crate) fn send(&mut self, frame: &[u8], vlan: Option<u16>) -> io::Result<()> {
        let Some(fd) = &self.fd else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let out = match vlan {
            Some(tci) if self.keep_tags => {
                if self.scratch.len() < crate::uplink::UPLINK_MAX_FRAME + 4 {
                    self.scratch.resize(crate::uplink::UPLINK_MAX_FRAME + 4, 0);
                }
                match emu_nic_model::vmdq::write_vlan_tagged(frame, tci, &mut self.scratch) {
                    Some(n) => &self.scratch[..n],
                    None => frame,
                }
            }
            _ => frame,
        };
        match crate::sys::write_frame(fd.as_fd(), out) {
            // EBADFD: the netdev is gone; the TX side notices too and marks the port lost.
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
                self.lost = true;
                Err(e)
            }
            r => r,
        }
    }
}

/// Opens (creating it if needed) TAP `name` in the calling thread's network namespace,
/// nonblocking, `IFF_TAP | IFF_NO_PI`, and makes it persistent when `persist`: a persistent TAP
/// outlives its fds, so that a restarted agent attaches to the same netdev again.
///
/// # Errors
/// As [`crate::TapUplink::open`]: CAP_NET_ADMIN, `/dev/net/tun`, a name taken by a non-TAP.
pub fn open_tap(name: &str, persist: bool) -> io::Result<(OwnedFd, String)> {
    let (fd, got) = crate::sys::tap_open(name).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                "creating a TAP needs CAP_NET_ADMIN (run as root)"
            }
            Some(libc::ENOENT) | Some(libc::ENODEV) => "/dev/net/tun is missing (modprobe tun)",
            Some(libc::EBUSY) => "a TAP of that name is already attached to another process",
            Some(libc::EINVAL) => "the name is in use by a non-TAP interface, or invalid",
            _ => "cannot open /dev/net/tun or attach the TAP",
        };
        io::Error::new(e.kind(), format!("TAP `{name}`: {hint}: {e}"))
    })?;
    if persist {
        crate::sys::tap_set_persist(fd.as_fd(), true)?;
    }
    Ok((fd, got))
}

/// Makes the TAP behind `fd` non-persistent, so that it goes away with its last fd (a netdev VF
/// being removed for good).
pub fn release_tap(fd: OwnedFd) -> io::Result<()> {
    crate::sys::tap_set_persist(fd.as_fd(), false)
}

/// The TAP's current name (in whatever namespace its netdev is); `EBADFD` when the netdev is
/// gone.
pub fn tap_name(fd: BorrowedFd<'_>) -> io::Result<String> {
    crate::sys::tap_name(fd)
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    crate::sys::if_index(name)
}
