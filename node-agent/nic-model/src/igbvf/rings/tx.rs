//! TX ring: walk descriptors from head, assemble one packet up to EOP, apply offloads, emit,
//! write DD back where RS is set, advance head.
//!
//! A packet is consumed only once its EOP descriptor lies before tail: until then nothing is
//! written and head stays, so the walk is simply repeated on the next call (context
//! descriptors met on the way are re-applied, which is idempotent). The only per-queue state
//! kept between calls is therefore the two context slots.

use emu_nic_defs::igb_desc::tx as d;

use super::{next_idx, RingRegs};
use crate::mem::GuestMemory;
use crate::ring::offload::{self, L4Type, Offloads, TxContext, ETH_HLEN, HEADROOM};
use crate::ring::walk::{
    account_packet, append_buffer, count_bad_offload, desc16, read_desc16, Walk,
};
use crate::ring::{TxOutcome, TxScratch, TxSink, TxStats, MAX_TX_FRAME};

impl TxContext {
    /// Decodes the three meaningful dwords of a context descriptor. Every field is masked to
    /// its width, so any guest value decodes; consistency is checked where it is used.
    pub(crate) fn decode(vlan_macip_lens: u32, type_tucmd_mlhl: u32, mss_l4len_idx: u32) -> Self {
        let l4 = match type_tucmd_mlhl & d::TUCMD_L4T_MASK {
            0 => L4Type::Udp,
            d::TUCMD_L4T_TCP => L4Type::Tcp,
            d::TUCMD_L4T_SCTP => L4Type::Sctp,
            _ => L4Type::Reserved,
        };
        TxContext {
            // Truncation intended: the VLAN field is the upper half of the dword.
            vlan: (vlan_macip_lens >> d::VLAN_SHIFT) as u16,
            maclen: ((vlan_macip_lens >> d::MACLEN_SHIFT) & d::MACLEN_MASK) as usize,
            iplen: (vlan_macip_lens & d::IPLEN_MASK) as usize,
            ipv4: type_tucmd_mlhl & d::TUCMD_IPV4 != 0,
            l4,
            l4len: ((mss_l4len_idx >> d::L4LEN_SHIFT) & d::L4LEN_MASK) as usize,
            mss: (mss_l4len_idx >> d::MSS_SHIFT) as usize,
        }
    }
}

/// Per-TX-queue state that persists between polls: the context descriptor slots.
#[derive(Debug, Default, Clone)]
pub struct TxQueue {
    ctx: [TxContext; d::CONTEXT_SLOTS],
}

/// One 16-byte descriptor as two little-endian qwords.
#[derive(Clone, Copy)]
struct RawDesc {
    lo: u64,
    hi: u64,
}

impl RawDesc {
    fn read(mem: &impl GuestMemory, addr: u64) -> Option<Self> {
        read_desc16(mem, addr).map(|(lo, hi)| RawDesc { lo, hi })
    }
    /// The descriptor in 16 little-endian bytes; `None` for any other length.
    #[inline]
    fn from_bytes(b: &[u8]) -> Option<Self> {
        desc16(b).map(|(lo, hi)| RawDesc { lo, hi })
    }
    /// `cmd_type_len` / `type_tucmd_mlhl`: the dword at offset 8.
    fn cmd(&self) -> u32 {
        self.hi as u32
    }
    /// `olinfo_status` / `mss_l4len_idx`: the dword at offset 12.
    fn olinfo(&self) -> u32 {
        (self.hi >> 32) as u32
    }
    fn is_context(&self) -> bool {
        let c = self.cmd();
        c & d::DCMD_DEXT != 0 && c & d::DTYP_MASK == d::DTYP_CTXT
    }
    fn is_data(&self) -> bool {
        let c = self.cmd();
        c & d::DCMD_DEXT != 0 && c & d::DTYP_MASK == d::DTYP_DATA
    }
}

/// Descriptors [`TxQueue::process`] reads ahead with one access.
const TX_PREFETCH: usize = 64;

/// Descriptors `start..start + n` (ring order) of a ring of `count` descriptors, as read in
/// one block (raw bytes, decoded when used).
struct DescCache {
    count: u32,
    start: u32,
    n: u32,
    raw: [u8; 16 * TX_PREFETCH],
}

impl DescCache {
    fn new(count: u32) -> Self {
        DescCache {
            count,
            start: 0,
            n: 0,
            raw: [0; 16 * TX_PREFETCH],
        }
    }

    /// Descriptor `idx`, from the block or else read alone (refilling the block from `idx`
    /// when it can). `None`: the ring itself is unreadable there.
    #[inline(always)]
    fn get(&mut self, ring: &RingRegs, idx: u32, mem: &impl GuestMemory) -> Option<RawDesc> {
        // Both indices are below count: one conditional add instead of a division.
        let off = if idx >= self.start {
            idx - self.start
        } else {
            idx + self.count - self.start
        };
        let at = 16 * off as usize;
        match self.raw.get(at..at + 16) {
            Some(d) if off < self.n => RawDesc::from_bytes(d),
            _ => self.refill(ring, idx, mem),
        }
    }

    /// [`get`](Self::get) for a descriptor outside the block.
    #[cold]
    #[inline(never)]
    fn refill(&mut self, ring: &RingRegs, idx: u32, mem: &impl GuestMemory) -> Option<RawDesc> {
        self.fill(ring, idx, mem);
        if self.n > 0 && self.start == idx {
            return RawDesc::from_bytes(&self.raw[..16]);
        }
        ring.desc_addr(idx).and_then(|a| RawDesc::read(mem, a))
    }

    /// Reads the descriptors from `idx` up to tail (at most [`TX_PREFETCH`], stopping at the
    /// ring's end) in one access; leaves the block empty when that fails.
    fn fill(&mut self, ring: &RingRegs, idx: u32, mem: &impl GuestMemory) {
        let count = self.count;
        self.start = idx;
        self.n = 0;
        let pending = RingRegs { head: idx, ..*ring }.pending(count);
        let n = pending.min(TX_PREFETCH as u32).min(count - idx);
        let Some(addr) = ring.desc_addr(idx) else {
            return;
        };
        let bytes = &mut self.raw[..16 * n as usize];
        if n == 0 || mem.read(addr, bytes).is_err() {
            return;
        }
        self.n = n;
    }
}

impl TxQueue {
    /// Fresh state: both context slots zeroed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the context slots (queue disable or VF reset).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Processes descriptors from `ring.head` up to `ring.tail`, at most `budget` packets
    /// (dropped ones included), hands every resulting wire frame to `sink`, writes DD back
    /// into the descriptors with RS and advances `ring.head`.
    ///
    /// Offloads: IXSM (IPv4 header checksum), TXSM (TCP/UDP checksum from the seeded field,
    /// SCTP CRC32c), TSE (TCP segmentation), VLE (802.1Q insertion of the context VLAN).
    /// A packet whose descriptors or offload request are faulty is dropped, counted, and
    /// still completed so that the guest does not hang. A ring whose registers are invalid
    /// is left alone and counted in `bad_ring`.
    pub fn process(
        &mut self,
        ring: &mut RingRegs,
        mem: &impl GuestMemory,
        scratch: &mut TxScratch,
        budget: usize,
        sink: &mut impl TxSink,
    ) -> TxOutcome {
        self.process_with::<true>(ring, mem, scratch, budget, sink)
    }

    /// [`process`](Self::process) with (`FAST`) or without the one-step path for simple
    /// packets; the results must not differ (tests compare the two).
    fn process_with<const FAST: bool>(
        &mut self,
        ring: &mut RingRegs,
        mem: &impl GuestMemory,
        scratch: &mut TxScratch,
        budget: usize,
        sink: &mut impl TxSink,
    ) -> TxOutcome {
        let mut out = TxOutcome::default();
        let Some(count) = ring.valid_count() else {
            out.stats.bad_ring += 1;
            return out;
        };
        let mut done = 0;
        let mut cache = DescCache::new(count);
        // `budget` bounds packets and, for TSO, frames: a packet that segments into many
        // frames ends the pass for this ring (at most MAX_TX_PACKET / MIN_TSO_MSS more).
        while done < budget && (out.stats.packets as usize) < budget && ring.head != ring.tail {
            let simple = if FAST {
                self.simple_packet(ring, mem, &mut cache, scratch, &mut out, sink)
            } else {
                None
            };
            let walked = match simple {
                Some(w) => w,
                None => self.walk_packet(ring, mem, &mut cache, scratch, &mut out, sink),
            };
            match walked {
                Walk::Consumed => done += 1,
                Walk::Incomplete => break,
                Walk::RingFault => {
                    out.stats.bad_ring += 1;
                    break;
                }
            }
        }
        out
    }

    fn walk_packet(
        &mut self,
        ring: &mut RingRegs,
        mem: &impl GuestMemory,
        cache: &mut DescCache,
        scratch: &mut TxScratch,
        out: &mut TxOutcome,
        sink: &mut impl TxSink,
    ) -> Walk {
        let count = cache.count;
        let pending = ring.pending(count);
        let mut idx = ring.head;
        let mut used = 0u32;
        let mut pos = 0usize;
        let mut bad_descs = 0u64;
        let mut first: Option<RawDesc> = None;
        let mut eop = false;
        // RS of the packet's first 64 descriptors, as read during the walk (the completion
        // below re-reads only beyond them).
        let mut rs_seen = 0u64;

        while used < pending {
            let Some(desc) = cache.get(ring, idx, mem) else {
                return Walk::RingFault;
            };
            if used < 64 && desc.cmd() & d::DCMD_RS != 0 {
                rs_seen |= 1 << used;
            }
            used += 1;
            idx = next_idx(idx, count);
            if desc.is_context() {
                let slot =
                    ((desc.olinfo() >> d::CTX_IDX_SHIFT) & d::IDX_MASK) as usize % d::CONTEXT_SLOTS;
                self.ctx[slot] = TxContext::decode(desc.lo as u32, desc.cmd(), desc.olinfo());
                continue;
            }
            if !desc.is_data() {
                // Legacy or reserved descriptor type: Linux never sends one.
                bad_descs += 1;
            } else {
                first.get_or_insert(desc);
                if bad_descs == 0 && !copy_buffer(mem, &desc, &mut scratch.frame, &mut pos) {
                    bad_descs += 1;
                }
            }
            if desc.cmd() & d::DCMD_EOP != 0 {
                eop = true;
                break;
            }
        }

        let stats = &mut out.stats;
        let ring_full = pending >= count - 1;
        let Some(send) = account_packet(stats, (eop, ring_full), used, first.is_some(), bad_descs)
        else {
            return Walk::Incomplete;
        };
        if let (true, Some(desc)) = (send, first) {
            if !self.send(&desc, pos, scratch, stats, sink) {
                count_bad_offload(stats);
            }
        }

        // Complete every descriptor of the packet, good or dropped.
        let mut i = ring.head;
        for k in 0..used {
            let rs = if k < 64 {
                rs_seen & (1 << k) != 0
            } else {
                let Some(Ok(cmd)) = ring
                    .desc_addr(i)
                    .map(|a| mem.read_u32(a + d::CMD_TYPE_LEN_OFFSET))
                else {
                    return Walk::RingFault;
                };
                cmd & d::DCMD_RS != 0
            };
            if rs {
                let Some(addr) = ring.desc_addr(i) else {
                    return Walk::RingFault;
                };
                if mem
                    .write_u32(addr + d::WB_STATUS_OFFSET, d::STAT_DD)
                    .is_err()
                {
                    return Walk::RingFault;
                }
                out.write_backs += 1;
            }
            i = next_idx(i, count);
        }
        ring.head = idx;
        Walk::Consumed
    }

    /// The common packet in one step: a single data descriptor with EOP, no offload, a
    /// readable buffer of a valid frame length. `None` for anything else (nothing consumed
    /// or written); the general walk then handles it, with the same results it gives this
    /// packet (the differential test in `tests.rs` checks that).
    #[inline]
    fn simple_packet(
        &mut self,
        ring: &mut RingRegs,
        mem: &impl GuestMemory,
        cache: &mut DescCache,
        scratch: &mut TxScratch,
        out: &mut TxOutcome,
        sink: &mut impl TxSink,
    ) -> Option<Walk> {
        let desc = cache.get(ring, ring.head, mem)?;
        let cmd = desc.cmd();
        let simple = d::DCMD_DEXT | d::DTYP_MASK | d::DCMD_EOP | d::DCMD_TSE | d::DCMD_VLE;
        if cmd & simple != d::DCMD_DEXT | d::DTYP_DATA | d::DCMD_EOP
            || desc.olinfo() & (d::POPTS_IXSM | d::POPTS_TXSM) != 0
        {
            return None;
        }
        let len = (cmd & d::LEN_MASK) as usize;
        if !(ETH_HLEN..=MAX_TX_FRAME).contains(&len) {
            return None;
        }
        // Emitted before its completion is written, as in the general walk.
        if !sink.emit_guest(mem, desc.lo, len, &mut scratch.frame) {
            return None;
        }
        out.stats.packets += 1;
        out.stats.bytes += len as u64;
        out.stats.descriptors += 1;
        if cmd & d::DCMD_RS != 0 {
            let done = ring
                .desc_addr(ring.head)
                .is_some_and(|a| mem.write_u32(a + d::WB_STATUS_OFFSET, d::STAT_DD).is_ok());
            if !done {
                return Some(Walk::RingFault);
            }
            out.write_backs += 1;
        }
        ring.head = next_idx(ring.head, cache.count);
        Some(Walk::Consumed)
    }

    /// Applies the offloads of the packet assembled in `scratch.frame` and emits it.
    /// Returns false when the offload request does not fit the packet.
    fn send(
        &self,
        first: &RawDesc,
        len: usize,
        scratch: &mut TxScratch,
        stats: &mut TxStats,
        sink: &mut impl TxSink,
    ) -> bool {
        let cmd = first.cmd();
        let olinfo = first.olinfo();
        if olinfo & (d::POPTS_IXSM | d::POPTS_TXSM) == 0 && cmd & (d::DCMD_TSE | d::DCMD_VLE) == 0 {
            // No offload asked: the frame leaves as assembled (the common case).
            let Some(wire) = scratch
                .frame
                .get(HEADROOM..HEADROOM + len)
                .filter(|_| (ETH_HLEN..=MAX_TX_FRAME).contains(&len))
            else {
                return false;
            };
            stats.packets += 1;
            stats.bytes += len as u64;
            sink.emit(wire);
            return true;
        }
        let off = Offloads {
            ixsm: olinfo & d::POPTS_IXSM != 0,
            txsm: olinfo & d::POPTS_TXSM != 0,
            tse: cmd & d::DCMD_TSE != 0,
            vle: cmd & d::DCMD_VLE != 0,
        };
        let slot = ((olinfo >> d::OLINFO_IDX_SHIFT) & d::IDX_MASK) as usize % d::CONTEXT_SLOTS;
        offload::send(&self.ctx[slot], off, len, scratch, stats, sink)
    }
}

/// Appends the buffer of data descriptor `desc` to the packet at `*pos`.
fn copy_buffer(mem: &impl GuestMemory, desc: &RawDesc, frame: &mut [u8], pos: &mut usize) -> bool {
    append_buffer(
        mem,
        desc.lo,
        (desc.cmd() & d::LEN_MASK) as usize,
        frame,
        pos,
    )
}

#[cfg(test)]
mod tests;
