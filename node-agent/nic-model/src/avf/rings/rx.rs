//! RX ring: write one received frame into the packet buffers of the 32-byte legacy
//! descriptors at head, then the write-backs, then advance head.
//!
//! A frame larger than the queue's `buf_size` spans several descriptors, each reporting the
//! bytes in its buffer in LENGTH_PBUF; only the last has EOF (`iavf_is_non_eop` chains the
//! buffers until EOF). The metadata the driver reads from the EOF descriptor
//! (`iavf_process_skb_fields`) goes there: L2TAG1 + L2TAG1P for a stripped VLAN, the RSS hash
//! with FLTSTAT = 3, the PTYPE. L3L4P stays 0, so `iavf_rx_checksum` leaves CHECKSUM_NONE
//! and the guest stack verifies checksums itself.
//!
//! Write order: every buffer first; then the qwords without DD; then the qwords carrying DD,
//! last descriptor first, so that when the driver sees DD on the first descriptor the whole
//! chain is already complete. A frame is written only if every descriptor it needs is owned
//! by the device (never at or past tail); a failed buffer write leaves every descriptor
//! untouched and head where it was.

use emu_nic_defs::avf::rx as d;

use super::Ring;
use crate::avf::state::RxQueueCfg;
use crate::mem::GuestMemory;
use crate::ring::FrameKind;
pub use crate::ring::{RxDrop, RxWritten};

/// Largest frame [`rx_write`] accepts (no FCS): beyond the 9000-byte max MTU.
pub const MAX_RX_FRAME: usize = 16 * 1024;
/// Largest `buf_size` usable: LENGTH_PBUF is 14 bits (i40e allows up to 16 KiB − 128).
pub const MAX_RX_BUF: u32 = d::LENGTH_PBUF_MASK as u32;

/// Per-frame metadata for the write-back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// Stripped VLAN TCI, reported in L2TAG1 with L2TAG1P.
    pub vlan: Option<u16>,
    /// RSS hash, reported with FLTSTAT = 3.
    pub rss_hash: Option<u32>,
    /// PTYPE (see `emu_nic_defs::avf::ptype`; from `rss::classify`).
    pub ptype: u8,
}

/// UMBCAST: 0 unicast, 1 multicast, 2 broadcast (from the destination MAC).
fn umbcast(frame: &[u8]) -> u64 {
    match FrameKind::of(frame) {
        FrameKind::Unicast => 0,
        FrameKind::Multicast => 1,
        FrameKind::Broadcast => 2,
    }
}

/// Writes one received frame into the queue at `q.head` (EOF on the last descriptor):
/// buffers first, then write-backs with DD last; advances `q.head`.
///
/// `q.max_pkt_size == 0` means "not configured" and only [`MAX_RX_FRAME`] applies.
pub fn rx_write(
    q: &mut RxQueueCfg,
    mem: &impl GuestMemory,
    frame: &[u8],
    meta: RxMeta,
) -> Result<RxWritten, RxDrop> {
    if !q.enabled {
        return Err(RxDrop::Disabled);
    }
    let ring = Ring::rx(q).ok_or(RxDrop::BadRing)?;
    if q.buf_size == 0 || q.buf_size > MAX_RX_BUF {
        return Err(RxDrop::BadRing);
    }
    if frame.is_empty() {
        return Err(RxDrop::Empty);
    }
    let max_pkt = match q.max_pkt_size {
        0 => MAX_RX_FRAME,
        m => (m as usize).min(MAX_RX_FRAME),
    };
    if frame.len() > max_pkt {
        return Err(RxDrop::TooBig);
    }
    let buf = q.buf_size as usize;
    // buf >= 1 and frame <= 16 KiB: at most 16 Ki descriptors, checked against the ring.
    let needed = frame.len().div_ceil(buf);
    if needed > (ring.count - 1) as usize {
        return Err(RxDrop::TooBig);
    }
    if needed > ring.pending(q.head, q.tail) as usize {
        return Err(RxDrop::NoBuffers);
    }
    let needed = needed as u32;

    // Pass 1: buffers, from each descriptor's pkt_addr.
    let mut idx = q.head;
    for chunk in frame.chunks(buf) {
        let addr = ring.desc_addr(idx).ok_or(RxDrop::BadRing)?;
        let pkt_addr = mem
            .read_u64(addr + d::PKT_ADDR_OFFSET)
            .map_err(|_| RxDrop::BadRing)?;
        mem.write(pkt_addr, chunk).map_err(|_| RxDrop::BadAddress)?;
        idx = ring.next(idx);
    }

    // Pass 2: qwords 0, 2 and 3 (no DD), so that a ring that reads but does not write fails
    // before any descriptor shows DD.
    let mut idx = q.head;
    for n in 0..needed {
        let addr = ring.desc_addr(idx).ok_or(RxDrop::BadRing)?;
        let qw0 = if n + 1 == needed {
            u64::from(meta.vlan.unwrap_or(0)) << d::WB_QW0_L2TAG1_SHIFT
                | u64::from(meta.rss_hash.unwrap_or(0)) << d::WB_QW0_RSS_SHIFT
        } else {
            0
        };
        let mut wb = [0u8; 32];
        wb[..8].copy_from_slice(&qw0.to_le_bytes());
        // qword1 is written in pass 3; write 0..8 and 16..32 only.
        mem.write(addr + d::WB_QW0_OFFSET, &wb[..8])
            .and_then(|()| mem.write(addr + d::WB_QW2_OFFSET, &wb[16..]))
            .map_err(|_| RxDrop::BadRing)?;
        idx = ring.next(idx);
    }

    // Pass 3: the qwords carrying DD, last descriptor first.
    let last = needed - 1;
    for n in (0..needed).rev() {
        let idx = (q.head + n) % ring.count;
        let addr = ring.desc_addr(idx).ok_or(RxDrop::BadRing)?;
        let start = n as usize * buf;
        let length = (frame.len() - start).min(buf) as u64;
        let mut qw1 = d::STATUS_DD
            | (u64::from(meta.ptype) & d::PTYPE_MASK) << d::PTYPE_SHIFT
            | (length & d::LENGTH_PBUF_MASK) << d::LENGTH_PBUF_SHIFT;
        if n == last {
            qw1 |= d::STATUS_EOF | umbcast(frame) << d::STATUS_UMBCAST_SHIFT;
            if meta.vlan.is_some() {
                qw1 |= d::STATUS_L2TAG1P;
            }
            if meta.rss_hash.is_some() {
                qw1 |= d::FLTSTAT_RSS_HASH << d::STATUS_FLTSTAT_SHIFT;
            }
        }
        mem.write_u64(addr + d::WB_QW1_OFFSET, qw1)
            .map_err(|_| RxDrop::BadRing)?;
    }
    q.head = (q.head + needed) % ring.count;
    Ok(RxWritten {
        descriptors: needed,
        bytes: frame.len(),
    })
}
