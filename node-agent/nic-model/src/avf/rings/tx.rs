//! TX ring: walk descriptors from head, assemble one packet up to EOP (an optional context
//! descriptor first), apply offloads, emit, complete the RS descriptors, advance head.
//!
//! Offloads (`iavf_txrx.c` `iavf_tx_enable_csum`, `iavf_tso`, `iavf_tx_map`), all requested in
//! the first data descriptor: IIPT = IPv4 with checksum (IPv4 header checksum), L4T with
//! MACLEN/IPLEN/L4LEN (TCP/UDP checksum from the seeded field, SCTP CRC32c), IL2TAG1 (802.1Q
//! insertion of L2TAG1), and a context descriptor with CMD TSO (segmentation by MSS). The
//! checksum and segmentation code is the models' shared one (`ring::offload`): the fields
//! mean the same as igbvf's, only the units differ.
//!
//! Completion: qword1 of every descriptor of the packet whose CMD has RS is overwritten with
//! DTYPE = DESC_DONE (iavf sets RS on the EOP descriptor and checks it there). Head
//! write-back is not used ("deprecated with AVF 1.0").
//!
//! A packet is consumed only once its EOP descriptor lies before tail: until then nothing is
//! written and head stays. Context descriptors apply only to the packet that follows them,
//! so no per-queue state is needed between calls.

use emu_nic_defs::avf::tx as d;

use super::Ring;
use crate::avf::state::TxQueueCfg;
use crate::mem::GuestMemory;
use crate::ring::offload::{self, L4Type, Offloads, TxContext};
use crate::ring::walk::{account_packet, append_buffer, count_bad_offload, read_desc16, Walk};
pub use crate::ring::{TxOutcome, TxScratch, TxStats, MAX_TX_FRAME, MAX_TX_PACKET, MIN_TSO_MSS};

/// Per-TX-queue state kept by the dataplane: running totals.
#[derive(Debug, Default, Clone)]
pub struct AvfTxQueue {
    totals: TxStats,
}

/// One 16-byte descriptor as two little-endian qwords.
#[derive(Clone, Copy)]
struct RawDesc {
    qw0: u64,
    qw1: u64,
}

impl RawDesc {
    fn read(mem: &impl GuestMemory, addr: u64) -> Option<Self> {
        read_desc16(mem, addr).map(|(qw0, qw1)| RawDesc { qw0, qw1 })
    }
    fn dtype(&self) -> u64 {
        self.qw1 & d::DTYPE_MASK
    }
    fn cmd(&self) -> u64 {
        (self.qw1 >> d::CMD_SHIFT) & d::CMD_MASK
    }
    fn buf_size(&self) -> usize {
        ((self.qw1 >> d::BUF_SZ_SHIFT) & d::BUF_SZ_MASK) as usize
    }
}

/// A decoded context descriptor (only what a VF without tunnels uses).
#[derive(Clone, Copy, Default)]
struct CtxDesc {
    tso: bool,
    mss: usize,
}

impl CtxDesc {
    fn decode(desc: &RawDesc) -> Self {
        let cmd = (desc.qw1 >> d::CTX_CMD_SHIFT) & d::CTX_CMD_MASK;
        CtxDesc {
            tso: cmd & d::CTX_CMD_TSO != 0,
            mss: ((desc.qw1 >> d::CTX_MSS_SHIFT) & d::CTX_MSS_MASK) as usize,
        }
    }
}

/// The offload request of a packet, from its first data descriptor and its context.
fn offloads(first: &RawDesc, ctx: CtxDesc) -> (TxContext, Offloads) {
    let cmd = first.cmd();
    let offset = first.qw1 >> d::OFFSET_SHIFT;
    let field = |shift: u32, mask: u64, unit: usize| ((offset >> shift) & mask) as usize * unit;
    let iipt = cmd & d::CMD_IIPT_MASK;
    let l4t = cmd & d::CMD_L4T_MASK;
    let l4 = match l4t {
        d::CMD_L4T_TCP => L4Type::Tcp,
        d::CMD_L4T_SCTP => L4Type::Sctp,
        d::CMD_L4T_UDP => L4Type::Udp,
        _ => L4Type::Reserved,
    };
    let tx_ctx = TxContext {
        // Truncation intended: L2TAG1 is the top 16 bits.
        vlan: (first.qw1 >> d::L2TAG1_SHIFT) as u16,
        maclen: field(d::OFFSET_MACLEN_SHIFT, d::OFFSET_MACLEN_MASK, 2),
        iplen: field(d::OFFSET_IPLEN_SHIFT, d::OFFSET_IPLEN_MASK, 4),
        ipv4: iipt == d::CMD_IIPT_IPV4 || iipt == d::CMD_IIPT_IPV4_CSUM,
        l4,
        l4len: field(d::OFFSET_L4LEN_SHIFT, d::OFFSET_L4LEN_MASK, 4),
        mss: ctx.mss,
    };
    let off = Offloads {
        ixsm: iipt == d::CMD_IIPT_IPV4_CSUM,
        txsm: l4t != d::CMD_L4T_UNK,
        tse: ctx.tso,
        vle: cmd & d::CMD_IL2TAG1 != 0,
    };
    (tx_ctx, off)
}

impl AvfTxQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the totals (VF reset).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Totals of every [`AvfTxQueue::process`] call since creation or reset.
    pub fn totals(&self) -> &TxStats {
        &self.totals
    }

    /// Processes descriptors from `q.head` up to `q.tail`, at most `budget` packets (dropped
    /// ones included), hands every resulting wire frame to `emit`, completes the RS
    /// descriptors and advances `q.head`. A disabled queue is left alone; an invalid ring is
    /// counted in `bad_ring` and left alone. A packet whose descriptors or offload request
    /// are faulty is dropped, counted, and still completed so that the guest does not hang.
    pub fn process(
        &mut self,
        q: &mut TxQueueCfg,
        mem: &impl GuestMemory,
        scratch: &mut TxScratch,
        budget: usize,
        emit: &mut dyn FnMut(&[u8]),
    ) -> TxOutcome {
        let mut out = TxOutcome::default();
        if !q.enabled {
            return out;
        }
        let Some(ring) = Ring::tx(q) else {
            out.stats.bad_ring += 1;
            self.totals.add(&out.stats);
            return out;
        };
        let mut done = 0;
        // `budget` bounds packets and, for TSO, frames: a packet that segments into many
        // frames ends the pass for this queue (at most MAX_TX_PACKET / MIN_TSO_MSS more).
        while done < budget && (out.stats.packets as usize) < budget && q.head != q.tail {
            match walk_packet(q, &ring, mem, scratch, &mut out, emit) {
                Walk::Consumed => done += 1,
                Walk::Incomplete => break,
                Walk::RingFault => {
                    out.stats.bad_ring += 1;
                    break;
                }
            }
        }
        self.totals.add(&out.stats);
        out
    }
}

fn walk_packet(
    q: &mut TxQueueCfg,
    ring: &Ring,
    mem: &impl GuestMemory,
    scratch: &mut TxScratch,
    out: &mut TxOutcome,
    emit: &mut dyn FnMut(&[u8]),
) -> Walk {
    let pending = ring.pending(q.head, q.tail);
    let mut idx = q.head;
    let mut used = 0u32;
    let mut pos = 0usize;
    let mut bad_descs = 0u64;
    let mut first: Option<RawDesc> = None;
    let mut ctx = CtxDesc::default();
    let mut eop = false;

    while used < pending {
        let Some(desc) = ring.desc_addr(idx).and_then(|a| RawDesc::read(mem, a)) else {
            return Walk::RingFault;
        };
        used += 1;
        idx = ring.next(idx);
        match desc.dtype() {
            d::DTYPE_CONTEXT if first.is_none() => ctx = CtxDesc::decode(&desc),
            d::DTYPE_DATA => {
                first.get_or_insert(desc);
                if bad_descs == 0 && !copy_buffer(mem, &desc, &mut scratch.frame, &mut pos) {
                    bad_descs += 1;
                }
                if desc.cmd() & d::CMD_EOP != 0 {
                    eop = true;
                    break;
                }
            }
            // A context descriptor inside a packet, or a reserved/DESC_DONE DTYPE: Linux
            // never sends one.
            _ => bad_descs += 1,
        }
    }

    let stats = &mut out.stats;
    let ring_full = pending >= ring.count - 1;
    let Some(send) = account_packet(stats, (eop, ring_full), used, first.is_some(), bad_descs)
    else {
        return Walk::Incomplete;
    };
    if let (true, Some(desc)) = (send, first) {
        let (tx_ctx, off) = offloads(&desc, ctx);
        if !offload::send(&tx_ctx, off, pos, scratch, stats, &mut |f: &[u8]| emit(f)) {
            count_bad_offload(stats);
        }
    }

    // Complete every RS descriptor of the packet, good or dropped.
    let mut i = q.head;
    for _ in 0..used {
        let Some(addr) = ring.desc_addr(i).map(|a| a + d::QW1_OFFSET) else {
            return Walk::RingFault;
        };
        let Ok(qw1) = mem.read_u64(addr) else {
            return Walk::RingFault;
        };
        let rs = qw1 & d::DTYPE_MASK == d::DTYPE_DATA && (qw1 >> d::CMD_SHIFT) & d::CMD_RS != 0;
        if rs {
            if mem.write_u64(addr, d::DTYPE_DESC_DONE).is_err() {
                return Walk::RingFault;
            }
            out.write_backs += 1;
        }
        i = ring.next(i);
    }
    q.head = idx;
    Walk::Consumed
}

/// Appends the buffer of data descriptor `desc` to the packet at `*pos`.
fn copy_buffer(mem: &impl GuestMemory, desc: &RawDesc, frame: &mut [u8], pos: &mut usize) -> bool {
    append_buffer(mem, desc.qw0, desc.buf_size(), frame, pos)
}
