//! Uplinks: where frames leave the node's switch and where outside frames come in.
//!
//! An uplink is the switch's **default port** (`SwitchTable::default_port`): unknown unicast and
//! broadcast/multicast sent by a VF go out through it, and frames read from it are switched to
//! the VFs with the VMDq RX rules. Two backends:
//! - [`TapUplink`]: a TAP device the agent creates (`IFF_TAP | IFF_NO_PI`, not persistent: it
//!   disappears with the agent); its host end is an ordinary netdev (tests move it into a
//!   network namespace).
//! - [`PacketUplink`]: an AF_PACKET raw socket bound to an existing interface (promiscuous for
//!   the socket's lifetime, own sends ignored).
//!
//! Both are nonblocking: [`Uplink::recv`] returns `Ok(None)` when nothing is queued, and a send
//! that would block drops the frame (counted as a TX error by the dataplane).

mod packet;
mod tap;

pub use packet::PacketUplink;
pub use tap::TapUplink;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Longest interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = crate::sys::IFNAME_MAX;

/// Largest frame read from an uplink (a 9000-byte MTU plus Ethernet and VLAN headers, rounded).
pub const UPLINK_MAX_FRAME: usize = 9216;

/// A nonblocking L2 port to the outside.
pub trait Uplink: Send {
    /// Reads one frame into `buf`: its length, or `None` when nothing is queued. A frame longer
    /// than `buf` is truncated.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// Sends one frame; `Err` when it was not sent (queue full, link down, …).
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// The interface name (`emu0`, `eth1`).
    fn name(&self) -> &str;
    /// The backend, for status output (`tap`, `packet`).
    fn kind(&self) -> &'static str {
        "uplink"
    }
}

/// Live counters of the uplink port (written by the dataplane, read by anyone; relaxed).
#[derive(Debug, Default)]
pub struct UplinkCounters {
    /// Frames read from the uplink.
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Frames read from the uplink that no VF took (no pool addressed, or unparsable).
    pub rx_unmatched: AtomicU64,
    /// Read errors (other than "nothing queued").
    pub rx_errors: AtomicU64,
    /// Frames sent to the uplink.
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames the uplink refused (full queue, link down); they are dropped.
    pub tx_errors: AtomicU64,
}

/// A plain copy of [`UplinkCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UplinkSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_unmatched: u64,
    pub rx_errors: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

impl UplinkCounters {
    pub fn snapshot(&self) -> UplinkSnapshot {
        UplinkSnapshot {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            rx_unmatched: self.rx_unmatched.load(Relaxed),
            rx_errors: self.rx_errors.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_errors: self.tx_errors.load(Relaxed),
        }
    }
}
