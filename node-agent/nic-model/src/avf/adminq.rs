//! AVF AdminQ ring mechanics (devices.md §3.3): the ATQ (VF→PF send queue) and the ARQ (PF→VF
//! receive queue), 32-byte descriptors in guest memory, indirect buffers for the virtchnl payload.
//!
//! Pure: registers ([`AqRegs`]) and guest memory are passed in; the only effects are descriptor
//! and buffer write-backs in guest memory and head-register updates. What virtchnl means is the
//! caller's business (`handler`, usually [`super::pf::AvfPf::handle`]); raising ICR01.ADMINQ and
//! vector 0 after [`AqOutcome::posted`] > 0 is the register model's.
//!
//! Decisions:
//! - **ATQ** ([`process_atq`]): nothing happens unless ATQLEN.ENABLE is set and LEN is 1..=1023.
//!   A head or tail outside the ring sets ATQLEN.CRIT (iavf logs "ASQ Critical Error") and
//!   consumes nothing. Otherwise every descriptor from ATQH up to ATQT is consumed (at most LEN
//!   per call, so the loop always ends), ATQH advances past it (iavf's `iavf_asq_done` compares
//!   the head) and it is written back DD|CMP with retval 0. A descriptor that is not
//!   SEND_MSG_TO_PF, has a buffer over [`AQ_MAX_BUF_SIZE`] or a buffer outside guest memory is
//!   completed DD|CMP|ERR with an AQ error code and never reaches the handler.
//! - **ARQ** ([`post_arq`]): a message goes into ARQ[ARQH] while ARQH ≠ ARQT (iavf posts all
//!   LEN buffers and writes ARQT = LEN−1, then ARQT = the index it just refilled, so ARQT is
//!   exclusive). ARQH = ARQT means no buffer: the message is dropped and ARQLEN.OVFL is set, as
//!   the hardware does ("ARQ Overflow Error detected"). At most the posted `datalen` bytes are
//!   written; a longer payload is truncated (iavf copies `min(datalen, buf_len)`).
//! - ENABLE bits are never cleared here (§3.3 "Keep ENABLE set").

use emu_nic_defs::avf_virtchnl::*;

use super::state::AqRegs;
use crate::mem::{GuestMemory, MemError};

/// Why a PF→VF message could not be posted on the ARQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AqError {
    /// ARQLEN.ENABLE is clear, or LEN is 0 (the VF has not initialised its AdminQ, or is in reset).
    #[error("the ARQ is not enabled")]
    Disabled,
    /// ARQH or ARQT lies outside the ring LEN.
    #[error("ARQ head {head} or tail {tail} is outside a ring of {len}")]
    BadIndex { head: u32, tail: u32, len: u32 },
    /// No posted buffer is left (ARQH = ARQT); the message was dropped and OVFL set.
    #[error("the ARQ is full")]
    Full,
    /// The descriptor at ARQH carries no buffer for a non-empty payload.
    #[error("ARQ descriptor {index} has no buffer")]
    NoBuffer { index: u32 },
    /// Reading the descriptor or writing it or its buffer failed.
    #[error("ARQ DMA failed")]
    Dma(#[source] MemError),
}

/// One VF→PF request as read from the ATQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AqRequest<'a> {
    /// virtchnl opcode (descriptor cookie_high).
    pub v_opcode: u32,
    /// The indirect buffer, `datalen` bytes (empty without AQ_FLAG_BUF).
    pub msg: &'a [u8],
}

/// What one [`process_atq`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AqOutcome {
    /// ATQ descriptors consumed (ATQH advanced past them).
    pub processed: u32,
    /// Messages posted on the ARQ: raise ICR01.ADMINQ / vector 0 when non-zero.
    pub posted: u32,
    /// Malformed ATQ descriptors, unreadable rings and replies that could not be posted.
    pub errors: u32,
    /// Requests the handler answered with no reply (RESET_VF).
    pub no_reply: u32,
}

/// Reusable buffers for [`process_atq`], so that the control path does not allocate per message.
#[derive(Debug, Default)]
pub struct AqScratch {
    req: Vec<u8>,
    reply: Vec<u8>,
}

impl AqScratch {
    pub fn new() -> Self {
        AqScratch {
            req: Vec::with_capacity(AQ_MAX_BUF_SIZE),
            reply: Vec::with_capacity(AQ_MAX_BUF_SIZE),
        }
    }
}

/// Answers one request: `(v_opcode, msg, reply) -> Some(virtchnl status)` to post `reply` on
/// the ARQ, `None` for no reply.
pub type AqHandler<'a> = dyn FnMut(u32, &[u8], &mut Vec<u8>) -> Option<i32> + 'a;

/// A 32-byte AdminQ descriptor, decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AqDesc {
    pub flags: u16,
    pub opcode: u16,
    pub datalen: u16,
    pub retval: u16,
    pub cookie_high: u32,
    pub cookie_low: u32,
    pub param0: u32,
    pub param1: u32,
    pub addr_high: u32,
    pub addr_low: u32,
}

fn le16(b: &[u8; AQ_DESC_SIZE], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8; AQ_DESC_SIZE], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl AqDesc {
    pub fn from_bytes(b: &[u8; AQ_DESC_SIZE]) -> Self {
        AqDesc {
            flags: le16(b, AQ_DESC_FLAGS),
            opcode: le16(b, AQ_DESC_OPCODE),
            datalen: le16(b, AQ_DESC_DATALEN),
            retval: le16(b, AQ_DESC_RETVAL),
            cookie_high: le32(b, AQ_DESC_COOKIE_HIGH),
            cookie_low: le32(b, AQ_DESC_COOKIE_LOW),
            param0: le32(b, AQ_DESC_PARAM0),
            param1: le32(b, AQ_DESC_PARAM1),
            addr_high: le32(b, AQ_DESC_ADDR_HIGH),
            addr_low: le32(b, AQ_DESC_ADDR_LOW),
        }
    }

    pub fn to_bytes(&self) -> [u8; AQ_DESC_SIZE] {
        let mut b = [0u8; AQ_DESC_SIZE];
        b[AQ_DESC_FLAGS..][..2].copy_from_slice(&self.flags.to_le_bytes());
        b[AQ_DESC_OPCODE..][..2].copy_from_slice(&self.opcode.to_le_bytes());
        b[AQ_DESC_DATALEN..][..2].copy_from_slice(&self.datalen.to_le_bytes());
        b[AQ_DESC_RETVAL..][..2].copy_from_slice(&self.retval.to_le_bytes());
        b[AQ_DESC_COOKIE_HIGH..][..4].copy_from_slice(&self.cookie_high.to_le_bytes());
        b[AQ_DESC_COOKIE_LOW..][..4].copy_from_slice(&self.cookie_low.to_le_bytes());
        b[AQ_DESC_PARAM0..][..4].copy_from_slice(&self.param0.to_le_bytes());
        b[AQ_DESC_PARAM1..][..4].copy_from_slice(&self.param1.to_le_bytes());
        b[AQ_DESC_ADDR_HIGH..][..4].copy_from_slice(&self.addr_high.to_le_bytes());
        b[AQ_DESC_ADDR_LOW..][..4].copy_from_slice(&self.addr_low.to_le_bytes());
        b
    }

    /// The indirect buffer's guest address.
    pub fn addr(&self) -> u64 {
        (u64::from(self.addr_high) << 32) | u64::from(self.addr_low)
    }
}

/// A validated ring: base, length, and in-range head and tail.
struct Ring {
    base: u64,
    len: u32,
    head: u32,
    tail: u32,
}

enum RingState {
    Disabled,
    BadIndex,
    Ok(Ring),
}

fn ring(bal: u32, bah: u32, len_reg: u32, head: u32, tail: u32) -> RingState {
    let len = len_reg & AQ_LEN_MASK;
    if len_reg & AQ_LEN_ENABLE == 0 || len == 0 {
        return RingState::Disabled;
    }
    if head >= len || tail >= len {
        return RingState::BadIndex;
    }
    RingState::Ok(Ring {
        base: (u64::from(bah) << 32) | u64::from(bal),
        len,
        head,
        tail,
    })
}

/// Guest address of descriptor `index`; `None` if it would wrap the address space.
fn desc_addr(base: u64, index: u32) -> Option<u64> {
    base.checked_add(u64::from(index) * AQ_DESC_SIZE as u64)
}

fn read_desc(mem: &impl GuestMemory, addr: u64) -> Result<AqDesc, MemError> {
    let mut b = [0u8; AQ_DESC_SIZE];
    mem.read(addr, &mut b)?;
    Ok(AqDesc::from_bytes(&b))
}

/// Reads the request payload of `d` into `buf`, or returns the AQ error code to complete with.
fn read_request(mem: &impl GuestMemory, d: &AqDesc, buf: &mut Vec<u8>) -> Result<(), u16> {
    buf.clear();
    if d.opcode != AQ_OPC_SEND_MSG_TO_PF {
        return Err(AQ_RC_ENOSYS);
    }
    if d.flags & AQ_FLAG_BUF == 0 || d.datalen == 0 {
        return Ok(());
    }
    let len = usize::from(d.datalen);
    if len > AQ_MAX_BUF_SIZE {
        return Err(AQ_RC_E2BIG);
    }
    buf.resize(len, 0);
    mem.read(d.addr(), buf).map_err(|_| {
        buf.clear();
        AQ_RC_EFAULT
    })
}

/// Consumes ATQ descriptors from `aq.atq_head` up to `aq.atq_tail` (see the module docs).
///
/// `handler(v_opcode, msg, reply)` answers one request: it fills `reply` (cleared before the
/// call) and returns `Some(virtchnl status)` to post a reply on the ARQ, or `None` for no reply
/// (RESET_VF). Never panics, whatever the registers and memory hold.
pub fn process_atq(
    aq: &mut AqRegs,
    mem: &impl GuestMemory,
    scratch: &mut AqScratch,
    handler: &mut AqHandler<'_>,
) -> AqOutcome {
    let mut out = AqOutcome::default();
    let r = match ring(aq.atq_bal, aq.atq_bah, aq.atq_len, aq.atq_head, aq.atq_tail) {
        RingState::Disabled => return out,
        RingState::BadIndex => {
            aq.atq_len |= AQ_LEN_CRIT;
            out.errors += 1;
            return out;
        }
        RingState::Ok(r) => r,
    };
    let AqScratch { req, reply } = scratch;
    let mut head = r.head;
    // At most `len` descriptors lie between head and tail; the bound makes termination obvious.
    for _ in 0..r.len {
        if head == r.tail {
            break;
        }
        let index = head;
        head = (head + 1) % r.len;
        out.processed += 1;
        let Some(addr) = desc_addr(r.base, index) else {
            out.errors += 1;
            continue;
        };
        let Ok(mut d) = read_desc(mem, addr) else {
            // Nothing to write back into; the VF will time out on this command.
            out.errors += 1;
            continue;
        };
        let retval = match read_request(mem, &d, req) {
            Ok(()) => {
                reply.clear();
                match handler(d.cookie_high, req, reply) {
                    Some(status) => match post_arq(aq, mem, d.cookie_high, status, reply) {
                        Ok(()) => out.posted += 1,
                        Err(_) => out.errors += 1,
                    },
                    None => out.no_reply += 1,
                }
                AQ_RC_OK
            }
            Err(rc) => {
                out.errors += 1;
                rc
            }
        };
        d.flags = (d.flags & !(AQ_FLAG_DD | AQ_FLAG_CMP | AQ_FLAG_ERR)) | AQ_FLAG_DD | AQ_FLAG_CMP;
        if retval != AQ_RC_OK {
            d.flags |= AQ_FLAG_ERR;
        }
        d.retval = retval;
        // Only the first 8 bytes (flags, opcode, datalen, retval) change.
        let b = d.to_bytes();
        if mem.write(addr, &b[..8]).is_err() {
            out.errors += 1;
        }
    }
    aq.atq_head = head;
    out
}

/// Posts one PF→VF message (a reply or an event) on the ARQ: descriptor ARQ[ARQH] gets
/// DD|CMP (|BUF|LB as posted), opcode SEND_MSG_TO_VF, datalen, cookie_high = `v_opcode`,
/// cookie_low = `status`; its buffer gets the payload (truncated to the posted datalen); ARQH
/// advances with wrap. On error nothing is consumed.
pub fn post_arq(
    aq: &mut AqRegs,
    mem: &impl GuestMemory,
    v_opcode: u32,
    status: i32,
    payload: &[u8],
) -> Result<(), AqError> {
    let r = match ring(aq.arq_bal, aq.arq_bah, aq.arq_len, aq.arq_head, aq.arq_tail) {
        RingState::Disabled => return Err(AqError::Disabled),
        RingState::BadIndex => {
            return Err(AqError::BadIndex {
                head: aq.arq_head,
                tail: aq.arq_tail,
                len: aq.arq_len & AQ_LEN_MASK,
            })
        }
        RingState::Ok(r) => r,
    };
    if r.head == r.tail {
        aq.arq_len |= AQ_LEN_OVFL;
        return Err(AqError::Full);
    }
    let unmapped = |len| AqError::Dma(MemError::Unmapped { addr: r.base, len });
    let addr = desc_addr(r.base, r.head).ok_or(unmapped(AQ_DESC_SIZE))?;
    let posted = read_desc(mem, addr).map_err(AqError::Dma)?;
    let mut len = 0usize;
    if !payload.is_empty() {
        if posted.flags & AQ_FLAG_BUF == 0 {
            return Err(AqError::NoBuffer { index: r.head });
        }
        len = payload.len().min(usize::from(posted.datalen));
        let data = payload.get(..len).unwrap_or_default();
        mem.write(posted.addr(), data).map_err(AqError::Dma)?;
    }
    let d = AqDesc {
        flags: AQ_FLAG_DD | AQ_FLAG_CMP | (posted.flags & (AQ_FLAG_BUF | AQ_FLAG_LB)),
        opcode: AQ_OPC_SEND_MSG_TO_VF,
        // len ≤ posted.datalen, a u16.
        datalen: u16::try_from(len).unwrap_or(posted.datalen),
        retval: 0,
        cookie_high: v_opcode,
        cookie_low: status as u32,
        param0: 0,
        param1: 0,
        addr_high: posted.addr_high,
        addr_low: posted.addr_low,
    };
    mem.write(addr, &d.to_bytes()).map_err(AqError::Dma)?;
    aq.arq_head = (r.head + 1) % r.len;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::VecMemory;

    const MEM_BASE: u64 = 0x10_0000;
    const MEM_SIZE: usize = 0x8_0000;
    const ATQ: u64 = MEM_BASE;
    const ARQ: u64 = MEM_BASE + 0x1000;
    const ATQ_BUFS: u64 = MEM_BASE + 0x2000;
    const ARQ_BUFS: u64 = MEM_BASE + 0x4_0000;
    const N: u32 = 32;
    const BUF: u64 = 4096;

    fn regs() -> AqRegs {
        AqRegs {
            atq_bal: ATQ as u32,
            atq_bah: (ATQ >> 32) as u32,
            atq_len: N | AQ_LEN_ENABLE,
            arq_bal: ARQ as u32,
            arq_bah: (ARQ >> 32) as u32,
            arq_len: N | AQ_LEN_ENABLE,
            arq_tail: N - 1,
            ..AqRegs::default()
        }
    }

    /// Memory with all ARQ buffers posted as iavf does (BUF, here 256 bytes each), ARQT = 31.
    fn setup() -> (AqRegs, VecMemory) {
        let mem = VecMemory::new(MEM_BASE, MEM_SIZE);
        for i in 0..N {
            let d = AqDesc {
                flags: AQ_FLAG_BUF,
                datalen: 256,
                addr_low: (ARQ_BUFS + u64::from(i) * 256) as u32,
                addr_high: ((ARQ_BUFS + u64::from(i) * 256) >> 32) as u32,
                ..AqDesc::default()
            };
            mem.write(ARQ + u64::from(i) * 32, &d.to_bytes()).unwrap();
        }
        (regs(), mem)
    }

    fn send(mem: &VecMemory, aq: &mut AqRegs, v_opcode: u32, msg: &[u8]) -> u32 {
        let i = aq.atq_tail;
        let buf = ATQ_BUFS + u64::from(i) * BUF;
        mem.write(buf, msg).unwrap();
        let mut flags = AQ_FLAG_SI;
        if !msg.is_empty() {
            flags |= AQ_FLAG_BUF | AQ_FLAG_RD;
        }
        let d = AqDesc {
            flags,
            opcode: AQ_OPC_SEND_MSG_TO_PF,
            datalen: msg.len() as u16,
            cookie_high: v_opcode,
            addr_high: (buf >> 32) as u32,
            addr_low: buf as u32,
            ..AqDesc::default()
        };
        mem.write(ATQ + u64::from(i) * 32, &d.to_bytes()).unwrap();
        aq.atq_tail = (i + 1) % (aq.atq_len & AQ_LEN_MASK);
        i
    }

    fn desc(mem: &VecMemory, addr: u64) -> AqDesc {
        read_desc(mem, addr).unwrap()
    }

    fn echo(op: u32, msg: &[u8], reply: &mut Vec<u8>) -> Option<i32> {
        if op == VIRTCHNL_OP_RESET_VF {
            return None;
        }
        reply.extend_from_slice(msg);
        Some(-(op as i32))
    }

    #[test]
    fn consumes_advances_head_completes_and_replies() {
        let (mut aq, mem) = setup();
        let i0 = send(
            &mem,
            &mut aq,
            VIRTCHNL_OP_VERSION,
            &[1, 0, 0, 0, 1, 0, 0, 0],
        );
        let i1 = send(&mem, &mut aq, VIRTCHNL_OP_GET_STATS, &[7; 12]);
        let mut seen = Vec::new();
        let mut h = |op: u32, msg: &[u8], reply: &mut Vec<u8>| {
            seen.push((op, msg.to_vec()));
            echo(op, msg, reply)
        };
        let out = process_atq(&mut aq, &mem, &mut AqScratch::new(), &mut h);
        assert_eq!(
            out,
            AqOutcome {
                processed: 2,
                posted: 2,
                errors: 0,
                no_reply: 0
            }
        );
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], (VIRTCHNL_OP_VERSION, vec![1, 0, 0, 0, 1, 0, 0, 0]));
        assert_eq!(aq.atq_head, 2);
        for i in [i0, i1] {
            let d = desc(&mem, ATQ + u64::from(i) * 32);
            assert_eq!(d.flags & (AQ_FLAG_DD | AQ_FLAG_CMP | AQ_FLAG_ERR), 3);
            assert_eq!(d.retval, 0);
            assert_eq!(d.opcode, AQ_OPC_SEND_MSG_TO_PF);
        }
        // ARQ: two messages with the reply, opcode and status in the cookies.
        assert_eq!(aq.arq_head, 2);
        let d = desc(&mem, ARQ + 32);
        assert_eq!(d.flags, AQ_FLAG_DD | AQ_FLAG_CMP | AQ_FLAG_BUF);
        assert_eq!(d.opcode, AQ_OPC_SEND_MSG_TO_VF);
        assert_eq!(d.datalen, 12);
        assert_eq!(d.cookie_high, VIRTCHNL_OP_GET_STATS);
        assert_eq!(d.cookie_low as i32, -(VIRTCHNL_OP_GET_STATS as i32));
        assert_eq!(d.addr(), ARQ_BUFS + 256);
        let mut b = [0u8; 12];
        mem.read(ARQ_BUFS + 256, &mut b).unwrap();
        assert_eq!(b, [7; 12]);
        // Nothing more to do.
        let out = process_atq(&mut aq, &mem, &mut AqScratch::new(), &mut echo);
        assert_eq!(out, AqOutcome::default());
    }

    #[test]
    fn reset_gets_no_reply_but_is_completed() {
        let (mut aq, mem) = setup();
        send(&mem, &mut aq, VIRTCHNL_OP_RESET_VF, &[]);
        let out = process_atq(&mut aq, &mem, &mut AqScratch::new(), &mut echo);
        assert_eq!((out.processed, out.posted, out.no_reply), (1, 0, 1));
        assert_eq!(aq.atq_head, 1);
        assert_eq!(aq.arq_head, 0);
        assert_eq!(desc(&mem, ATQ).flags & 3, 3);
    }

    #[test]
    fn head_wraps_around_the_ring() {
        let (mut aq, mem) = setup();
        aq.atq_head = N - 1;
        aq.atq_tail = N - 1;
        send(&mem, &mut aq, 99, &[1]);
        send(&mem, &mut aq, 99, &[2]);
        assert_eq!(aq.atq_tail, 1);
        let out = process_atq(&mut aq, &mem, &mut AqScratch::new(), &mut echo);
        assert_eq!(out.processed, 2);
        assert_eq!(aq.atq_head, 1);
    }

    #[test]
    fn disabled_or_zero_length_atq_does_nothing() {
        for len in [N, AQ_LEN_ENABLE] {
            let (mut aq, mem) = setup();
            send(&mem, &mut aq, 1, &[1]);
            aq.atq_len = len;
            let before = aq;
            let out = process_atq(&mut aq, &mem, &mut AqScratch::new(), &mut |_, _, _| {
                panic!("handler called")
            });
            assert_eq!(out, AqOutcome::default());
            assert_eq!(aq, before);
            assert_eq!(desc(&mem, ATQ).flags & AQ_FLAG_DD, 0);
        }
    }

    #[test]
    fn tail_beyond_ring_sets_crit_and_consumes_nothing() {
        let (mut aq, mem) = setup();
        aq.atq_tail = N + 5;
        let out = process_atq(&mut aq, &mem, &mut AqScratch::new(), &mut |_, _, _| {
            panic!("handler called")
        });
        assert_eq!((out.processed, out.errors), (0, 1));
        assert_eq!(aq.atq_head, 0);
        assert_ne!(aq.atq_len & AQ_LEN_CRIT, 0);
        assert_ne!(aq.atq_len & AQ_LEN_ENABLE, 0);
    }

    #[test]
    fn malformed_descriptors_complete_with_err() {
        let (mut aq, mem) = setup();
        // Huge datalen.
        let i = send(&mem, &mut aq, 1, &[0; 8]);
        let mut d = desc(&mem, ATQ + u64::from(i) * 32);
        d.datalen = 0xFFFF;
        mem.write(ATQ + u64::from(i) * 32, &d.to_bytes()).unwrap();
        // Buffer outside memory.
        let j = send(&mem, &mut aq, 1, &[0; 8]);
        let mut d = desc(&mem, ATQ + u64::from(j) * 32);
        d.addr_high = 0xdead;
        mem.write(ATQ + u64::from(j) * 32, &d.to_bytes()).unwrap();
        // Wrong AQ opcode.
        let k = send(&mem, &mut aq, 1, &[0; 8]);
        let mut d = desc(&mem, ATQ + u64::from(k) * 32);
        d.opcode = 0x0110;
        mem.write(ATQ + u64::from(k) * 32, &d.to_bytes()).unwrap();
        let out = process_atq(&mut aq, &mem, &mut AqScratch::new(), &mut |_, _, _| {
            panic!("handler called")
        });
        assert_eq!((out.processed, out.posted, out.errors), (3, 0, 3));
        assert_eq!(aq.atq_head, 3);
        for (idx, rc) in [(i, AQ_RC_E2BIG), (j, AQ_RC_EFAULT), (k, AQ_RC_ENOSYS)] {
            let d = desc(&mem, ATQ + u64::from(idx) * 32);
            assert_eq!(d.flags & 7, AQ_FLAG_DD | AQ_FLAG_CMP | AQ_FLAG_ERR);
            assert_eq!(d.retval, rc);
        }
    }

    #[test]
    fn ring_outside_memory_advances_and_counts() {
        let (mut aq, mem) = setup();
        aq.atq_bah = 0x7777;
        aq.atq_tail = 3;
        let out = process_atq(&mut aq, &mem, &mut AqScratch::new(), &mut |_, _, _| {
            panic!("handler called")
        });
        assert_eq!((out.processed, out.errors), (3, 3));
        assert_eq!(aq.atq_head, 3);
        // A base near u64::MAX must not overflow.
        aq.atq_bal = u32::MAX;
        aq.atq_bah = u32::MAX;
        aq.atq_tail = 10;
        let out = process_atq(&mut aq, &mem, &mut AqScratch::new(), &mut echo);
        assert_eq!(out.errors, 7);
    }

    #[test]
    fn arq_post_layout_truncation_and_full() {
        let (mut aq, mem) = setup();
        let big = [0xAB; 300];
        post_arq(&mut aq, &mem, VIRTCHNL_OP_EVENT, 0, &big).unwrap();
        let d = desc(&mem, ARQ);
        assert_eq!(d.datalen, 256, "at most the posted datalen");
        assert_eq!(d.cookie_high, VIRTCHNL_OP_EVENT);
        let mut next = [0u8; 1];
        mem.read(ARQ_BUFS + 256, &mut next).unwrap();
        assert_eq!(next, [0], "nothing written past the buffer");
        // Fill the ring: tail = 31 leaves 31 buffers, of which one is used.
        for _ in 0..N - 2 {
            post_arq(&mut aq, &mem, 3, -5, &[1, 2, 3]).unwrap();
        }
        assert_eq!(aq.arq_head, N - 1);
        let before = aq;
        assert_eq!(post_arq(&mut aq, &mem, 3, 0, &[1]), Err(AqError::Full));
        assert_eq!(aq.arq_head, before.arq_head);
        assert_ne!(aq.arq_len & AQ_LEN_OVFL, 0);
        assert_ne!(aq.arq_len & AQ_LEN_ENABLE, 0);
        // The VF returns buffer 0 (ARQT = 0): descriptor 31 becomes usable, and the head wraps.
        aq.arq_tail = 0;
        post_arq(&mut aq, &mem, 3, 0, &[]).unwrap();
        assert_eq!(aq.arq_head, 0);
        let d = desc(&mem, ARQ + 31 * 32);
        assert_eq!((d.datalen, d.cookie_low), (0, 0));
    }

    #[test]
    fn arq_errors_consume_nothing() {
        let (mut aq, mem) = setup();
        aq.arq_len = N;
        assert_eq!(post_arq(&mut aq, &mem, 1, 0, &[1]), Err(AqError::Disabled));
        let (mut aq, mem) = setup();
        aq.arq_tail = 40;
        assert!(matches!(
            post_arq(&mut aq, &mem, 1, 0, &[1]),
            Err(AqError::BadIndex { .. })
        ));
        // Buffer outside memory.
        let (mut aq, mem) = setup();
        let mut d = desc(&mem, ARQ);
        d.addr_high = 0x1234;
        mem.write(ARQ, &d.to_bytes()).unwrap();
        assert!(matches!(
            post_arq(&mut aq, &mem, 1, 0, &[1]),
            Err(AqError::Dma(_))
        ));
        assert_eq!(aq.arq_head, 0);
        // Descriptor without BUF.
        d.flags = 0;
        mem.write(ARQ, &d.to_bytes()).unwrap();
        assert_eq!(
            post_arq(&mut aq, &mem, 1, 0, &[1]),
            Err(AqError::NoBuffer { index: 0 })
        );
        // Ring outside memory.
        let (mut aq, mem) = setup();
        aq.arq_bah = 0x55;
        assert!(matches!(
            post_arq(&mut aq, &mem, 1, 0, &[]),
            Err(AqError::Dma(_))
        ));
        assert_eq!(aq.arq_head, 0);
    }

    #[test]
    fn reply_to_full_arq_counts_an_error_but_completes_the_atq() {
        let (mut aq, mem) = setup();
        aq.arq_tail = 0;
        send(&mem, &mut aq, 1, &[1]);
        let out = process_atq(&mut aq, &mem, &mut AqScratch::new(), &mut echo);
        assert_eq!((out.processed, out.posted, out.errors), (1, 0, 1));
        assert_eq!(aq.atq_head, 1);
        assert_eq!(desc(&mem, ATQ).flags & 7, 3);
    }

    #[test]
    fn random_descriptors_and_registers_never_panic() {
        let (_, mem) = setup();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut scratch = AqScratch::new();
        for _ in 0..3000 {
            // Scribble on a few descriptors of both rings.
            for _ in 0..4 {
                let ring = if rnd() & 1 == 0 { ATQ } else { ARQ };
                let i = rnd() % u64::from(N);
                let mut b = [0u8; 32];
                for c in b.chunks_mut(8) {
                    c.copy_from_slice(&rnd().to_le_bytes());
                }
                if rnd() & 1 == 0 {
                    // Keep some descriptors plausible: a buffer inside memory.
                    let a = MEM_BASE + rnd() % MEM_SIZE as u64;
                    b[24..28].copy_from_slice(&((a >> 32) as u32).to_le_bytes());
                    b[28..32].copy_from_slice(&(a as u32).to_le_bytes());
                    b[2..4].copy_from_slice(&AQ_OPC_SEND_MSG_TO_PF.to_le_bytes());
                    b[4..6].copy_from_slice(&((rnd() % 5000) as u16).to_le_bytes());
                }
                mem.write(ring + i * 32, &b).unwrap();
            }
            let mut aq = regs();
            let r = rnd();
            aq.atq_head = (r % 40) as u32;
            aq.atq_tail = ((r >> 8) % 40) as u32;
            aq.arq_head = ((r >> 16) % 40) as u32;
            aq.arq_tail = ((r >> 24) % 40) as u32;
            if r & (1 << 40) != 0 {
                aq.atq_len = (r >> 41) as u32;
            }
            if r & (1 << 50) != 0 {
                aq.arq_len = (r >> 51) as u32 | AQ_LEN_ENABLE;
            }
            let out = process_atq(&mut aq, &mem, &mut scratch, &mut |op, msg, reply| {
                reply.extend_from_slice(&msg[..msg.len().min(64)]);
                (op % 3 != 0).then_some(0)
            });
            assert!(out.processed <= N.max(aq.atq_len & AQ_LEN_MASK));
            if out.processed > 0 {
                assert!(aq.atq_head < (aq.atq_len & AQ_LEN_MASK));
                assert_eq!(aq.atq_head, aq.atq_tail);
            }
        }
    }
}
