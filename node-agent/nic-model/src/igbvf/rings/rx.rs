//! RX ring: write one received frame into the buffers of the descriptors at head, then the
//! write-backs (DD last), then advance head.
//!
//! Layouts (SRRCTL.DESCTYPE):
//! - **one buffer**: the frame fills packet buffers of BSIZEPKT bytes, one descriptor each;
//!   every descriptor's `length` is the bytes in its buffer; EOP on the last.
//! - **header split**: the first descriptor's header buffer receives the L2–L4 headers
//!   (at most BSIZEHDR bytes; `hdr_info` = HDRBUFLEN | SPH), the rest fills packet buffers of
//!   that and the following descriptors. The following descriptors' header buffers are not
//!   touched and report HDRBUFLEN 0: Linux `igbvf_clean_rx_irq` reads the header buffer only
//!   while the skb has no fragments yet, i.e. only for the first descriptor, and hands that
//!   descriptor's header skb on to the next slot. In HDR_SPLIT_ALWAYS, a frame whose headers
//!   are not recognised puts its first BSIZEHDR bytes in the header buffer (no SPH); in
//!   HDR_SPLIT it goes to the packet buffers whole.
//!
//! Metadata (VLAN with VP, RSS hash) and EOP go to the last descriptor, as QEMU does; all
//! descriptors carry DD. Checksums are reported as "not checked": IXSM is set on the EOP
//! descriptor, which makes `igbvf_rx_checksum_adv` leave CHECKSUM_NONE so the guest stack
//! verifies the checksums itself.
//!
//! A frame is written only if every descriptor it needs is already owned by the device; the
//! buffers are written before any descriptor, so a failed buffer write leaves the ring
//! untouched (head not advanced, nothing completed).

use emu_nic_defs::igb_desc::rx as d;

use super::{next_idx, RingRegs};
use crate::mem::GuestMemory;
use crate::ring::FrameSource;
pub use crate::ring::{RxDrop, RxWritten};

/// Largest frame [`rx_write`] accepts (no FCS): 16 KiB, beyond any MTU the driver accepts.
pub const MAX_RX_FRAME: usize = 16 * 1024;

/// SRRCTL.DESCTYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxDescType {
    /// Legacy descriptors: not supported (Linux igbvf never uses them).
    Legacy,
    /// Advanced, one buffer.
    OneBuffer,
    /// Advanced, header split when the header is recognised.
    HeaderSplit,
    /// Advanced, header split always (Linux igbvf for max frames above 2 KiB).
    HeaderSplitAlways,
    /// A reserved DESCTYPE value (the raw 3-bit field).
    Reserved(u8),
}

/// RX buffer layout the guest programmed (from SRRCTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxLayout {
    /// Descriptor type.
    pub desc_type: RxDescType,
    /// Packet buffer size in bytes (BSIZEPKT KiB; 0 means the 2 KiB default).
    pub pkt_buf_len: u32,
    /// Header buffer size in bytes (BSIZEHDR × 64).
    pub hdr_buf_len: u32,
    /// DROP_EN: drop rather than wait when no descriptor is free (policy for the caller).
    pub drop_en: bool,
}

impl RxLayout {
    /// Decodes SRRCTL. Every value decodes; unsupported types are refused by [`rx_write`].
    pub fn from_srrctl(srrctl: u32) -> Self {
        let kib = srrctl & d::SRRCTL_BSIZEPKT_MASK;
        let pkt_buf_len = if kib == 0 {
            d::DEFAULT_PKT_BUF_LEN
        } else {
            kib << d::SRRCTL_BSIZEPKT_SHIFT
        };
        let hdr_buf_len = ((srrctl & d::SRRCTL_BSIZEHDR_MASK) >> d::SRRCTL_BSIZEHDR_SHIFT)
            * d::SRRCTL_BSIZEHDR_UNIT;
        let desc_type = match srrctl & d::SRRCTL_DESCTYPE_MASK {
            d::SRRCTL_DESCTYPE_LEGACY => RxDescType::Legacy,
            d::SRRCTL_DESCTYPE_ADV_ONEBUF => RxDescType::OneBuffer,
            d::SRRCTL_DESCTYPE_HDR_SPLIT => RxDescType::HeaderSplit,
            d::SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS => RxDescType::HeaderSplitAlways,
            // A 3-bit field after the shift.
            other => RxDescType::Reserved((other >> 25) as u8),
        };
        RxLayout {
            desc_type,
            pkt_buf_len,
            hdr_buf_len,
            drop_en: srrctl & d::SRRCTL_DROP_EN != 0,
        }
    }
}

/// Per-frame metadata for the write-back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// Stripped VLAN tag (TCI) to report with VP.
    pub vlan: Option<u16>,
    /// RSS hash to report in the high dword.
    pub rss_hash: Option<u32>,
}

/// Where the frame goes: bytes `[0, hdr)` to the first header buffer, the rest to packet
/// buffers.
#[derive(Debug, Clone, Copy)]
struct Split {
    hdr: usize,
    sph: bool,
}

fn plan_split(layout: &RxLayout, frame: &[u8]) -> Split {
    let hdr_cap = layout.hdr_buf_len as usize;
    let parsed = match layout.desc_type {
        RxDescType::HeaderSplit | RxDescType::HeaderSplitAlways => header_len(frame),
        _ => return Split { hdr: 0, sph: false },
    };
    match (parsed, layout.desc_type) {
        (Some(h), _) => {
            let hdr = h.min(hdr_cap);
            Split { hdr, sph: hdr > 0 }
        }
        (None, RxDescType::HeaderSplitAlways) => Split {
            hdr: frame.len().min(hdr_cap),
            sph: false,
        },
        (None, _) => Split { hdr: 0, sph: false },
    }
}

fn be16(f: &[u8], at: usize) -> Option<u16> {
    let b = f.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Length of the L2 (up to two VLAN tags), L3 (IPv4, IPv6) and L4 (TCP, UDP) headers the
/// 82576 would split off; `None` when not even an IP header is recognised.
fn header_len(f: &[u8]) -> Option<usize> {
    let mut off = 12;
    let mut ethertype = be16(f, off)?;
    off += 2;
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        ethertype = be16(f, off + 2)?;
        off += 4;
    }
    let proto = match ethertype {
        0x0800 => {
            let ihl = usize::from(*f.get(off)? & 0xf) * 4;
            if ihl < 20 || off + ihl > f.len() {
                return None;
            }
            let frag_off = be16(f, off + 6)? & 0x1fff;
            let proto = f[off + 9];
            off += ihl;
            if frag_off != 0 {
                return Some(off);
            }
            proto
        }
        0x86dd => {
            if off + 40 > f.len() {
                return None;
            }
            let proto = f[off + 6];
            off += 40;
            proto
        }
        _ => return None,
    };
    match proto {
        6 => {
            let doff = usize::from(*f.get(off + 12)? >> 4) * 4;
            if doff >= 20 && off + doff <= f.len() {
                Some(off + doff)
            } else {
                Some(off)
            }
        }
        17 if off + 8 <= f.len() => Some(off + 8),
        _ => Some(off),
    }
}

/// Writes one received frame into the ring at `ring.head` (one or more descriptors, EOP on
/// the last): buffers first, then each descriptor's write-back with its DD-carrying qword
/// last; advances head. Never uses a descriptor at or past tail.
pub fn rx_write(
    ring: &mut RingRegs,
    layout: RxLayout,
    mem: &impl GuestMemory,
    frame: &[u8],
    meta: RxMeta,
) -> Result<RxWritten, RxDrop> {
    let count = ring.valid_count().ok_or(RxDrop::BadRing)?;
    if !matches!(
        layout.desc_type,
        RxDescType::OneBuffer | RxDescType::HeaderSplit | RxDescType::HeaderSplitAlways
    ) {
        return Err(RxDrop::UnsupportedLayout);
    }
    if frame.is_empty() {
        return Err(RxDrop::Empty);
    }
    if frame.len() > MAX_RX_FRAME {
        return Err(RxDrop::TooBig);
    }
    let split = plan_split(&layout, frame);
    let (head_part, body) = frame.split_at(split.hdr);
    // pkt_buf_len >= 1 KiB, so at most 16 descriptors for a 16 KiB frame.
    let buf = layout.pkt_buf_len as usize;
    let needed = body.len().div_ceil(buf).max(1);
    if needed > (count - 1) as usize {
        return Err(RxDrop::TooBig);
    }
    if needed > ring.pending(count) as usize {
        return Err(RxDrop::NoBuffers);
    }
    // Bounded by the check above.
    let needed = needed as u32;

    // Pass 1: buffers.
    let mut idx = ring.head;
    let mut chunks = body.chunks(buf);
    for n in 0..needed {
        let addr = ring.desc_addr(idx).ok_or(RxDrop::BadRing)?;
        let mut raw = [0u8; 16];
        mem.read(addr, &mut raw).map_err(|_| RxDrop::BadRing)?;
        let (pkt, hdr) = raw.split_at(8);
        let pkt_addr = u64::from_le_bytes(pkt.try_into().map_err(|_| RxDrop::BadRing)?);
        let hdr_addr = u64::from_le_bytes(hdr.try_into().map_err(|_| RxDrop::BadRing)?);
        if n == 0 && !head_part.is_empty() {
            mem.write(hdr_addr, head_part)
                .map_err(|_| RxDrop::BadAddress)?;
        }
        if let Some(c) = chunks.next() {
            mem.write(pkt_addr, c).map_err(|_| RxDrop::BadAddress)?;
        }
        idx = next_idx(idx, count);
    }

    // The guest may poll the ring from another CPU: keep the compiler from moving the
    // write-back stores ahead of the buffer stores (x86 keeps store order in hardware).
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);

    // Pass 2: the lower qwords (no DD) of every descriptor, so that a ring that reads but
    // does not write fails before any descriptor shows DD.
    let mut idx = ring.head;
    for n in 0..needed {
        let addr = ring.desc_addr(idx).ok_or(RxDrop::BadRing)?;
        let hdr_info: u16 = if n == 0 && split.hdr > 0 {
            // hdr <= hdr_buf_len <= 15 * 64, so it fits HDRBUFLEN's 10 bits.
            let mut h = ((split.hdr as u16) << d::HDRBUFLEN_SHIFT) & d::HDRBUFLEN_MASK;
            if split.sph {
                h |= d::HDR_INFO_SPH;
            }
            h
        } else {
            0
        };
        let hi_dword = if n + 1 == needed {
            meta.rss_hash.unwrap_or(0)
        } else {
            0
        };
        let lower = u64::from(hdr_info) << 16 | u64::from(hi_dword) << 32;
        mem.write_u64(addr + d::WB_LOWER_OFFSET, lower)
            .map_err(|_| RxDrop::BadRing)?;
        idx = next_idx(idx, count);
    }

    // DD last: a guest that sees it may re-post the descriptor and reuse the buffer at once,
    // so every other store must be visible first (free on x86; needed on weaker CPUs).
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);

    // Pass 3: the qwords carrying DD, in ring order, EOP and metadata on the last.
    let mut idx = ring.head;
    let mut chunks = body.chunks(buf);
    for n in 0..needed {
        let addr = ring.desc_addr(idx).ok_or(RxDrop::BadRing)?;
        // Chunks are at most pkt_buf_len bytes of a frame of at most 16 KiB: they fit a u16.
        let length = chunks.next().map_or(0, <[u8]>::len) as u16;
        let upper = upper_write_back(length, (n + 1 == needed).then_some(&meta));
        mem.write_u64(addr + d::WB_UPPER_OFFSET, upper)
            .map_err(|_| RxDrop::BadRing)?;
        idx = next_idx(idx, count);
    }
    ring.head = idx;
    Ok(RxWritten {
        descriptors: needed,
        bytes: frame.len(),
    })
}

/// The write-back qword that carries DD: `length` bytes in the descriptor's buffer; `eop` is
/// the frame's metadata on its last descriptor (EOP, IXSM, and VP with the stripped tag).
fn upper_write_back(length: u16, eop: Option<&RxMeta>) -> u64 {
    let mut status = d::STAT_DD;
    let mut vlan = 0u16;
    if let Some(meta) = eop {
        status |= d::STAT_EOP | d::STAT_IXSM;
        if let Some(v) = meta.vlan {
            status |= d::STAT_VP;
            vlan = v;
        }
    }
    u64::from(status) | u64::from(length) << 32 | u64::from(vlan) << 48
}

/// The little-endian u64 in the first 8 bytes of `b` (a shorter slice reads zero-extended).
#[inline(always)]
fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

/// Descriptors an [`RxBurst`] reads, and writes back, as one block.
pub const RX_BURST: usize = 64;

/// Writes a burst of frames into an RX ring with the descriptor traffic in blocks: the
/// descriptors the burst may use are read with one access, each frame's buffer is written,
/// and the write-backs go out with one access when the burst is [finished](Self::finish)
/// (or its block is full), after every buffer. A guest polling DD on another CPU then
/// loses each descriptor cache line once per block instead of three times per frame.
///
/// Frames are accepted under the same rules and with the same results as [`rx_write`]:
/// frames that fit one packet buffer in the one-buffer layout take the block path; any other
/// frame flushes the block and goes through [`rx_write`]. Head advances only at a flush.
/// Results are final at [`finish`](Self::finish), which reports frames whose write-back
/// failed (a ring the guest made unwritable) so the caller can recount them.
pub struct RxBurst<'a, M: GuestMemory> {
    ring: &'a mut RingRegs,
    layout: RxLayout,
    mem: &'a M,
    /// Descriptor count of a valid ring, 0 otherwise (every frame takes [`rx_write`]).
    count: u32,
    /// Descriptors `head..head + fetched` as read (16 bytes each, packet buffer address
    /// first); the first `used` of them already overwritten with their write-backs, which
    /// go out from here as one block.
    block: [u8; 16 * RX_BURST],
    fetched: u32,
    used: u32,
    /// Frames accepted whose write-back failed, and their bytes.
    failed: (u64, u64),
}

/// Frames of a burst that were reported written but whose write-back failed: nothing was
/// completed for them and head did not move past them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxBurstLoss {
    pub frames: u64,
    pub bytes: u64,
}

impl<'a, M: GuestMemory> RxBurst<'a, M> {
    /// Starts a burst at `ring.head`; `expected` frames will probably follow (it sizes the
    /// first descriptor read, nothing else).
    pub fn new(ring: &'a mut RingRegs, layout: RxLayout, mem: &'a M, expected: usize) -> Self {
        let count = match (ring.valid_count(), layout.desc_type) {
            (Some(c), RxDescType::OneBuffer) => c,
            _ => 0,
        };
        let mut b = RxBurst {
            ring,
            layout,
            mem,
            count,
            block: [0; 16 * RX_BURST],
            fetched: 0,
            used: 0,
            failed: (0, 0),
        };
        b.fetch(expected);
        b
    }

    /// Reads up to `want` more descriptors past the fetched ones (two blocks at the ring's
    /// end). A block that cannot be read is left to [`rx_write`], which reports it.
    fn fetch(&mut self, want: usize) {
        if self.count == 0 {
            return;
        }
        let pending = self.ring.pending(self.count);
        let room = (RX_BURST as u32).min(pending) - self.fetched.min(pending);
        let mut left = room.min(u32::try_from(want).unwrap_or(u32::MAX));
        while left > 0 {
            let idx = (self.ring.head + self.fetched) % self.count;
            let n = left.min(self.count - idx);
            let Some(addr) = self.ring.desc_addr(idx) else {
                return;
            };
            // fetched + n <= RX_BURST (room above).
            let at = 16 * self.fetched as usize;
            let Some(bytes) = self.block.get_mut(at..at + 16 * n as usize) else {
                return;
            };
            if self.mem.read(addr, bytes).is_err() {
                return;
            }
            self.fetched += n;
            left -= n;
        }
    }

    /// Writes one frame; see [`rx_write`] for the rules and errors.
    #[inline]
    pub fn push(&mut self, frame: &[u8], meta: RxMeta) -> Result<RxWritten, RxDrop> {
        let fits = !frame.is_empty()
            && frame.len() <= MAX_RX_FRAME
            && frame.len() <= self.layout.pkt_buf_len as usize;
        if self.count == 0 || !fits || self.used == self.fetched {
            return self.push_slow(frame, meta);
        }
        self.push_block(frame, meta)
    }

    /// The frame goes into the block at descriptor `head + used` (`used < fetched`).
    #[inline]
    fn push_block(&mut self, frame: &[u8], meta: RxMeta) -> Result<RxWritten, RxDrop> {
        let k = self.used as usize;
        let Some(desc) = self.block.get_mut(16 * k..16 * k + 16) else {
            return Err(RxDrop::BadRing);
        };
        let buf = le_u64(&desc[..8]);
        self.mem.write(buf, frame).map_err(|_| RxDrop::BadAddress)?;
        // At most MAX_RX_FRAME (16 KiB) bytes, checked by the caller.
        let length = frame.len() as u16;
        let lower = u64::from(meta.rss_hash.unwrap_or(0)) << 32;
        desc[..8].copy_from_slice(&lower.to_le_bytes());
        desc[8..].copy_from_slice(&upper_write_back(length, Some(&meta)).to_le_bytes());
        self.used += 1;
        Ok(RxWritten {
            descriptors: 1,
            bytes: frame.len(),
        })
    }

    /// Writes frames without metadata (no tag to report, no RSS hash) from `frames` for as
    /// long as they take the block path, and returns how many it wrote and their bytes. It
    /// stops, leaving that frame in `frames`, at the first one that does not (longer than a
    /// buffer or empty, the block used up, an unwritable buffer): hand it and the rest to
    /// [`push`](Self::push), which gives it the result and error `push` always gives. Each
    /// frame written is exactly what `push` with [`RxMeta::default`] writes (tests compare).
    #[inline]
    pub fn push_plain<'f, S: FrameSource<'f>>(&mut self, frames: &mut S) -> (u64, u64) {
        let (mut n, mut bytes) = (0u64, 0u64);
        let max = (self.layout.pkt_buf_len as usize).min(MAX_RX_FRAME);
        if self.count == 0 {
            return (0, 0);
        }
        while let Some(frame) = frames.peek_frame() {
            let k = self.used as usize;
            if frame.is_empty() || frame.len() > max || k >= self.fetched as usize {
                break;
            }
            let Some(desc) = self.block.get_mut(16 * k..16 * k + 16) else {
                break;
            };
            if self.mem.write(le_u64(&desc[..8]), frame).is_err() {
                break;
            }
            // At most MAX_RX_FRAME (16 KiB) bytes, checked above.
            let upper = upper_write_back(frame.len() as u16, Some(&RxMeta::default()));
            desc[..8].fill(0);
            desc[8..].copy_from_slice(&upper.to_le_bytes());
            self.used += 1;
            n += 1;
            bytes += frame.len() as u64;
            frames.advance();
        }
        (n, bytes)
    }

    /// [`push`](Self::push) when the block cannot take the frame as it is: the frame does not
    /// fit one buffer (or the ring is not a one-buffer ring), or the block is used up.
    #[cold]
    #[inline(never)]
    fn push_slow(&mut self, frame: &[u8], meta: RxMeta) -> Result<RxWritten, RxDrop> {
        let fits = !frame.is_empty()
            && frame.len() <= MAX_RX_FRAME
            && frame.len() <= self.layout.pkt_buf_len as usize;
        if self.count == 0 || !fits {
            self.flush();
            return rx_write(self.ring, self.layout, self.mem, frame, meta);
        }
        if self.used == self.fetched {
            if self.used as usize == RX_BURST {
                self.flush();
            }
            self.fetch(RX_BURST);
            if self.used == self.fetched {
                // No descriptor owned by the device, or the ring is unreadable: the slow
                // path tells which.
                self.flush();
                return rx_write(self.ring, self.layout, self.mem, frame, meta);
            }
        }
        self.push_block(frame, meta)
    }

    /// Writes the pending write-backs (after every buffer) and advances head past them.
    fn flush(&mut self) {
        if self.used == 0 {
            self.fetched = 0;
            return;
        }
        // Buffers before descriptors (x86 keeps store order; this keeps the compiler's).
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        let raw = &self.block;
        let mut done = 0u32;
        while done < self.used {
            let idx = (self.ring.head + done) % self.count;
            let n = (self.used - done).min(self.count - idx);
            let bytes = &raw[16 * done as usize..16 * (done + n) as usize];
            // One block, word by word in ring order: each descriptor's lower qword before
            // its DD qword, and no word stored twice.
            let block_ok = self
                .ring
                .desc_addr(idx)
                .is_some_and(|a| self.mem.write_ordered(a, bytes).is_ok());
            if block_ok {
                done += n;
                continue;
            }
            // Descriptor by descriptor, stopping at the first that cannot be written.
            let mut ok = 0;
            for (j, d) in bytes.chunks_exact(16).enumerate() {
                let i = (idx + j as u32) % self.count;
                let written = self
                    .ring
                    .desc_addr(i)
                    .is_some_and(|a| self.mem.write_ordered(a, d).is_ok());
                if !written {
                    break;
                }
                ok += 1;
            }
            done += ok;
            break;
        }
        for d in raw[16 * done as usize..16 * self.used as usize].chunks_exact(16) {
            self.failed.0 += 1;
            self.failed.1 += (le_u64(&d[8..]) >> 32) & 0xFFFF;
        }
        self.ring.head = (self.ring.head + done) % self.count;
        self.used = 0;
        self.fetched = 0;
    }

    /// Completes the burst: write-backs out, head advanced. Returns the frames that
    /// [`push`](Self::push) accepted but whose completion could not be written.
    pub fn finish(mut self) -> RxBurstLoss {
        self.flush();
        RxBurstLoss {
            frames: self.failed.0,
            bytes: self.failed.1,
        }
    }
}

#[cfg(test)]
mod tests;
