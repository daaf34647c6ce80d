//! The pieces of a TX descriptor walk that do not depend on the descriptor format: how a
//! walk over one packet ended, 16-byte descriptors as two little-endian qwords, and copying
//! a data buffer into the packet being assembled.

use super::frames::{TxStats, MAX_TX_PACKET};
use super::offload::HEADROOM;
use crate::mem::GuestMemory;

/// How walking one packet ended.
pub(crate) enum Walk {
    /// A packet (good or dropped) was consumed.
    Consumed,
    /// EOP is not before tail yet; nothing was consumed.
    Incomplete,
    /// A descriptor of the ring itself could not be read or written.
    RingFault,
}

/// A 16-byte descriptor in little-endian bytes as (low qword, high qword); `None` for any
/// other length.
#[inline]
pub(crate) fn desc16(b: &[u8]) -> Option<(u64, u64)> {
    let (lo, hi) = b.split_first_chunk::<8>()?;
    let hi: &[u8; 8] = hi.try_into().ok()?;
    Some((u64::from_le_bytes(*lo), u64::from_le_bytes(*hi)))
}

/// Reads the 16-byte descriptor at `addr` (see [`desc16`]).
pub(crate) fn read_desc16(mem: &impl GuestMemory, addr: u64) -> Option<(u64, u64)> {
    let mut b = [0u8; 16];
    mem.read(addr, &mut b).ok()?;
    desc16(&b)
}

/// Appends the `len` bytes of guest memory at `addr` (one data descriptor's buffer) to the
/// packet assembled in `frame` at `*pos` (after [`HEADROOM`]). False for a zero length, a
/// packet over [`MAX_TX_PACKET`] or an unreadable buffer.
pub(crate) fn append_buffer(
    mem: &impl GuestMemory,
    addr: u64,
    len: usize,
    frame: &mut [u8],
    pos: &mut usize,
) -> bool {
    let end = *pos + len;
    if len == 0 || end > MAX_TX_PACKET {
        return false;
    }
    let Some(dst) = frame.get_mut(HEADROOM + *pos..HEADROOM + end) else {
        return false;
    };
    if mem.read(addr, dst).is_err() {
        return false;
    }
    *pos = end;
    true
}

/// Accounts a packet whose descriptors were walked: `used` of them, `eop` whether its EOP
/// descriptor was found before tail, `ring_full` whether the device owns every descriptor
/// but one (so a missing EOP can never come), `assembled` whether a first data descriptor
/// was seen and `bad_descs` the faults met. `None`: wait for a later tail (nothing counted).
/// `Some(true)`: send it; `Some(false)`: it is dropped (counted here). Either way the
/// caller completes its descriptors.
pub(crate) fn account_packet(
    stats: &mut TxStats,
    (eop, ring_full): (bool, bool),
    used: u32,
    assembled: bool,
    mut bad_descs: u64,
) -> Option<bool> {
    if !eop {
        if !ring_full {
            // The guest may still be filling the packet in.
            return None;
        }
        // The ring is full and holds no EOP: it can never complete. Drop it all.
        bad_descs += 1;
    }
    stats.descriptors += u64::from(used);
    if assembled && bad_descs == 0 {
        return Some(true);
    }
    stats.bad_descriptors += bad_descs.max(1);
    stats.dropped_packets += 1;
    Some(false)
}

/// Counts a packet dropped because its offload request did not fit it.
pub(crate) fn count_bad_offload(stats: &mut TxStats) {
    stats.bad_descriptors += 1;
    stats.dropped_packets += 1;
}
