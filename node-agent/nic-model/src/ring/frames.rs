//! What every model's TX walk fills and reports: the frame arena the dataplane switches from
//! ([`TxFrames`]), the sink trait behind it ([`TxSink`]), the reusable assembly buffers
//! ([`TxScratch`]) and the per-call counters ([`TxStats`], [`TxOutcome`]).

use super::offload::HEADROOM;
use crate::mem::GuestMemory;

/// Largest packet assembled from data descriptors: a 64 KiB GSO packet plus room for headers
/// (Linux caps GSO at 64 KiB including headers; the extra covers GSO_PARTIAL outer headers).
pub const MAX_TX_PACKET: usize = 64 * 1024 + 1024;
/// Largest frame emitted, with or without TSO (before VLAN insertion): 16 KiB, beyond any MTU
/// the driver accepts (9216).
pub const MAX_TX_FRAME: usize = 16 * 1024;

/// Where a TX walk puts the frames it emits: any `FnMut(&[u8])`, or a
/// [`TxFrames`] arena, which takes simple packets straight from guest memory (one copy).
pub trait TxSink {
    /// Takes one finished wire frame.
    fn emit(&mut self, frame: &[u8]);
    /// Takes the `len` bytes of guest memory at `addr` as one frame (`scratch` is a buffer
    /// of at least `len` bytes it may use). False, with nothing taken, when they cannot be
    /// read.
    fn emit_guest(
        &mut self,
        mem: &impl GuestMemory,
        addr: u64,
        len: usize,
        scratch: &mut [u8],
    ) -> bool;
}

impl<F: FnMut(&[u8])> TxSink for F {
    fn emit(&mut self, frame: &[u8]) {
        self(frame)
    }
    fn emit_guest(
        &mut self,
        mem: &impl GuestMemory,
        addr: u64,
        len: usize,
        scratch: &mut [u8],
    ) -> bool {
        let Some(buf) = scratch.get_mut(..len) else {
            return false;
        };
        if mem.read(addr, buf).is_err() {
            return false;
        }
        self(buf);
        true
    }
}

/// Frames back to back in one buffer: frame `i` is `bytes()[ends()[i - 1]..ends()[i]]` (from
/// 0 for the first). Reused across calls: the buffer grows to the largest burst and is never
/// shrunk or re-zeroed, so appending a frame costs one copy.
#[derive(Debug, Default)]
pub struct TxFrames {
    /// Initialized storage; `buf[..len]` holds the frames.
    buf: Vec<u8>,
    len: usize,
    ends: Vec<usize>,
}

impl TxFrames {
    /// Room for `frames` frames of `bytes` bytes in all before it grows.
    pub fn with_capacity(frames: usize, bytes: usize) -> Self {
        TxFrames {
            buf: vec![0; bytes],
            len: 0,
            ends: Vec::with_capacity(frames),
        }
    }

    /// Forgets every frame (keeps the storage).
    pub fn clear(&mut self) {
        self.len = 0;
        self.ends.clear();
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// All frames, back to back.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// End offset of each frame in [`bytes`](Self::bytes).
    #[inline]
    pub fn ends(&self) -> &[usize] {
        &self.ends
    }

    /// Room for `n` more bytes at the end: the slice to fill.
    #[inline]
    fn tail(&mut self, n: usize) -> &mut [u8] {
        let end = self.len + n;
        if end > self.buf.len() {
            self.buf.resize(end.next_power_of_two(), 0);
        }
        &mut self.buf[self.len..end]
    }

    /// Appends one frame.
    pub fn push(&mut self, frame: &[u8]) {
        self.tail(frame.len()).copy_from_slice(frame);
        self.len += frame.len();
        self.ends.push(self.len);
    }
}

impl TxSink for TxFrames {
    #[inline]
    fn emit(&mut self, frame: &[u8]) {
        self.push(frame);
    }
    #[inline]
    fn emit_guest(&mut self, mem: &impl GuestMemory, addr: u64, len: usize, _: &mut [u8]) -> bool {
        if mem.read(addr, self.tail(len)).is_err() {
            return false;
        }
        self.len += len;
        self.ends.push(self.len);
        true
    }
}

/// Reusable buffers for TX processing (every model's TX walk);
/// allocated once, never per packet.
pub struct TxScratch {
    pub(crate) frame: Vec<u8>,
    pub(crate) seg: Vec<u8>,
}

impl TxScratch {
    /// A packet assembly buffer of [`MAX_TX_PACKET`] and a segment buffer of
    /// [`MAX_TX_FRAME`], each with headroom for a VLAN tag.
    pub fn new() -> Self {
        TxScratch {
            frame: vec![0; HEADROOM + MAX_TX_PACKET],
            seg: vec![0; HEADROOM + MAX_TX_FRAME],
        }
    }
}

impl Default for TxScratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters of one a TX walk call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxStats {
    /// Frames emitted, after TSO segmentation.
    pub packets: u64,
    /// Bytes emitted (wire frames, VLAN tag included, no FCS).
    pub bytes: u64,
    /// Descriptors consumed (data and context).
    pub descriptors: u64,
    /// Faulty descriptors: buffer unmapped, zero length, packet too long, unknown type;
    /// also one per packet whose context/offload request is malformed.
    pub bad_descriptors: u64,
    /// Packets dropped; every drop also adds at least one to `bad_descriptors` (a runt, a
    /// ring full of descriptors without EOP and a malformed offload request count one).
    pub dropped_packets: u64,
    /// Segments produced by TSO (included in `packets`).
    pub tso_segments: u64,
    /// The ring registers were invalid or the ring itself was unreadable.
    pub bad_ring: u64,
}

impl TxStats {
    /// Adds `o` to these totals.
    pub(crate) fn add(&mut self, o: &TxStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.descriptors += o.descriptors;
        self.bad_descriptors += o.bad_descriptors;
        self.dropped_packets += o.dropped_packets;
        self.tso_segments += o.tso_segments;
        self.bad_ring += o.bad_ring;
    }
}

/// Result of one a TX walk call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxOutcome {
    /// Counters.
    pub stats: TxStats,
    /// Descriptors whose DD was written back (RS set): raise the TX interrupt if non-zero.
    pub write_backs: u32,
}
