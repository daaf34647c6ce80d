//! The backend trait: what the dataplane engine asks of a VF model, whatever the model.
//!
//! The engine schedules (which VF, how many packets, when), switches (VMDq decisions) and
//! counts; everything that knows a register, a ring or an interrupt scheme is behind
//! [`VfBackend`], implemented in each model's folder (`igbvf::backend`, `avf::backend`).
//! A pass over one VF, with the VF's lock held:
//!
//! 1. [`VfBackend::poll_irqs`]: interrupt work the guest requested without trapping;
//! 2. [`VfBackend::tx_ready`], then (guest memory locked) [`VfBackend::poll_tx`]: frames into
//!    the caller's [`TxFrames`] arena;
//! 3. for each destination VF, [`VfBackend::rx_ready`], then [`VfBackend::deliver`]: a batch of
//!    [`RxRun`]s into its RX ring(s), tallied in an [`RxTally`];
//! 4. the vectors returned in [`IrqOut`] fire at the end of the pass, each no sooner than its
//!    [`VfBackend::moderation_gap`].
//!
//! Memory and time come from the caller; effects are returned. Nothing here allocates.

use super::frames::{TxFrames, TxScratch, TxStats};
use crate::mem::GuestMemory;
use crate::shared::SharedWords;
use std::time::Duration;

/// MSI-X vectors a backend asks to fire (bit n = vector n).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct IrqOut {
    pub fire: u32,
}

impl IrqOut {
    pub fn vectors(fire: u32) -> Self {
        IrqOut { fire }
    }
}

/// What one [`VfBackend::poll_tx`] did: counters for the VF, interrupts to raise.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxPoll {
    pub stats: TxStats,
    pub irq: IrqOut,
}

/// Frames for one RX delivery: one frame with the VLAN tag the switch stripped from it (to be
/// reported in the RX descriptor), or a run of consecutive arena frames that go unchanged.
pub enum RxRun<'a> {
    One(&'a [u8], Option<u16>),
    Plain(PlainRun<'a>),
}

impl<'a> RxRun<'a> {
    /// Each frame with the VLAN tag to report, in order (for backends without a block path).
    #[inline]
    pub fn frames(self) -> RxRunFrames<'a> {
        match self {
            RxRun::One(f, vlan) => RxRunFrames {
                one: Some((f, vlan)),
                run: PlainRun::empty(),
            },
            RxRun::Plain(run) => RxRunFrames { one: None, run },
        }
    }
}

/// A run of untagged frames back to back in an arena (as [`TxFrames`] holds them): frame `i`
/// ends at `ends[i]`, the first starts at `start`.
pub struct PlainRun<'a> {
    bytes: &'a [u8],
    ends: std::slice::Iter<'a, usize>,
    start: usize,
}

impl<'a> PlainRun<'a> {
    /// Frames `first..first + n` of `frames` (clipped to what it holds).
    #[inline]
    pub fn of(frames: &'a TxFrames, first: usize, n: usize, start: usize) -> Self {
        PlainRun {
            bytes: frames.bytes(),
            ends: frames.ends().get(first..first + n).unwrap_or(&[]).iter(),
            start,
        }
    }

    fn empty() -> Self {
        PlainRun {
            bytes: &[],
            ends: [].iter(),
            start: 0,
        }
    }
}

/// Frames handed to an RX block path, each looked at before it is taken (see
/// `igbvf::rings::RxBurst::push_plain`).
pub trait FrameSource<'f> {
    /// The next frame, not taken.
    fn peek_frame(&mut self) -> Option<&'f [u8]>;
    /// Takes the frame [`peek_frame`](Self::peek_frame) returned.
    fn advance(&mut self);
}

impl<'f, I: Iterator<Item = &'f [u8]>> FrameSource<'f> for std::iter::Peekable<I> {
    #[inline]
    fn peek_frame(&mut self) -> Option<&'f [u8]> {
        self.peek().copied()
    }
    #[inline]
    fn advance(&mut self) {
        self.next();
    }
}

impl<'f> FrameSource<'f> for PlainRun<'f> {
    #[inline]
    fn peek_frame(&mut self) -> Option<&'f [u8]> {
        let end = *self.ends.as_slice().first()?;
        Some(self.bytes.get(self.start..end).unwrap_or(&[]))
    }
    #[inline]
    fn advance(&mut self) {
        if let Some(&end) = self.ends.next() {
            self.start = end;
        }
    }
}

impl<'a> Iterator for PlainRun<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let end = *self.ends.next()?;
        let f = self.bytes.get(self.start..end).unwrap_or(&[]);
        self.start = end;
        Some(f)
    }
}

/// The frames of an [`RxRun`] with their VLAN tags (see [`RxRun::frames`]).
pub struct RxRunFrames<'a> {
    one: Option<(&'a [u8], Option<u16>)>,
    run: PlainRun<'a>,
}

impl<'a> Iterator for RxRunFrames<'a> {
    type Item = (&'a [u8], Option<u16>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(f) = self.one.take() {
            return Some(f);
        }
        self.run.next().map(|f| (f, None))
    }
}

/// How the RX counters classify a frame by its destination address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Unicast,
    Broadcast,
    Multicast,
}

impl FrameKind {
    #[inline]
    pub fn of(frame: &[u8]) -> Self {
        match frame.get(..6) {
            Some(d) if d == [0xFF; 6] => FrameKind::Broadcast,
            Some(d) if d[0] & 1 != 0 => FrameKind::Multicast,
            _ => FrameKind::Unicast,
        }
    }
}

/// Per-burst RX tallies of one destination VF, filled by [`VfBackend::deliver`] and added to
/// the VF's counters once by the caller.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxTally {
    pub ok: u64,
    pub bytes: u64,
    pub bcast: u64,
    pub mcast: u64,
    /// Frames dropped because the ring had no free descriptor (or the queue was off).
    pub no_buf: u64,
    /// Frames dropped because the ring or a buffer was unusable.
    pub bad: u64,
}

impl RxTally {
    #[inline]
    pub fn delivered(&mut self, frame: &[u8]) {
        self.delivered_many(FrameKind::of(frame), 1, frame.len() as u64);
    }

    /// `n` frames of `bytes` bytes in all, all of one kind (a run shares its header).
    #[inline]
    pub fn delivered_many(&mut self, kind: FrameKind, n: u64, bytes: u64) {
        self.ok += n;
        self.bytes += bytes;
        match kind {
            FrameKind::Unicast => {}
            FrameKind::Broadcast => self.bcast += n,
            FrameKind::Multicast => self.mcast += n,
        }
    }

    /// `frames` frames of `bytes` bytes counted as delivered whose completion could not be
    /// written after all.
    pub fn lost(&mut self, frames: u64, bytes: u64) {
        self.ok -= frames.min(self.ok);
        self.bytes -= bytes.min(self.bytes);
        self.bad += frames;
    }
}

/// Where the poll loop may look, without the VF's lock, whether a VF has anything to do: the
/// shared register words a guest stores its doorbells and interrupt requests to, and how to
/// read them. Built by the model (it knows the offsets); read by the engine every pass, for
/// every VF: both looks read one window of words, so an idle VF costs one access to it.
#[derive(Debug, Clone, Default)]
pub struct IdleProbe {
    /// The window the indices below point into.
    words: SharedWords,
    tx: Option<TxDoorbell>,
    irq: IrqWords,
}

/// A TX queue's doorbell: enabled when word `ctl & enable != 0`, idle when the head and tail
/// words are equal under `index_mask`.
#[derive(Debug, Clone)]
struct TxDoorbell {
    ctl: usize,
    enable: u32,
    head: usize,
    tail: usize,
    index_mask: u32,
}

/// Where the guest stores interrupt requests without trapping.
#[derive(Debug, Clone, Default)]
enum IrqWords {
    /// It cannot: nothing to look at.
    #[default]
    None,
    /// Words `at` of the window (all zero: no request).
    At([usize; 4]),
    /// It can, but not in this window: the locked path must always look.
    Elsewhere,
}

impl IdleProbe {
    /// No lock-free look: the poll loop always takes the locked path.
    pub fn none() -> Self {
        IdleProbe::default()
    }

    /// A probe reading `words` (the indices given later point into it).
    pub fn over(words: SharedWords) -> Self {
        IdleProbe {
            words,
            ..IdleProbe::default()
        }
    }

    /// A TX queue whose control, head and tail registers are words `ctl`, `head`, `tail`.
    pub fn with_tx(
        mut self,
        (ctl, enable): (usize, u32),
        (head, tail): (usize, usize),
        index_mask: u32,
    ) -> Self {
        self.tx = Some(TxDoorbell {
            ctl,
            enable,
            head,
            tail,
            index_mask,
        });
        self
    }

    /// Interrupt requests the guest stores to words `at` (all zero: none).
    pub fn with_irq(mut self, at: [usize; 4]) -> Self {
        self.irq = IrqWords::At(at);
        self
    }

    /// The guest stores interrupt requests where this probe cannot read them: never quiet.
    pub fn with_irq_elsewhere(mut self) -> Self {
        self.irq = IrqWords::Elsewhere;
        self
    }

    /// Whether a pass can skip the VF without its lock: the TX queue is enabled and empty
    /// (or the rate limiter did not `admit` it this pass) and the guest stored no interrupt
    /// request since the last locked pass.
    #[inline]
    pub fn nothing_to_do(&self, admitted: bool) -> bool {
        let words = self.words.words();
        (!admitted || self.tx_idle_in(words)) && self.irq_quiet_in(words)
    }

    /// Whether the TX queue is enabled and empty (head == tail): a pass has nothing to take.
    /// False without a TX doorbell (the locked path decides).
    pub fn tx_idle(&self) -> bool {
        self.tx_idle_in(self.words.words())
    }

    /// Whether the guest stored no interrupt request since the last locked pass (true without
    /// such words).
    pub fn irq_quiet(&self) -> bool {
        self.irq_quiet_in(self.words.words())
    }

    #[inline]
    fn tx_idle_in(&self, words: &[std::sync::atomic::AtomicU32]) -> bool {
        self.tx.as_ref().is_some_and(|d| {
            let at = |i: usize| {
                words
                    .get(i)
                    .map_or(0, |w| w.load(std::sync::atomic::Ordering::Acquire))
            };
            at(d.ctl) & d.enable != 0 && at(d.head) & d.index_mask == at(d.tail) & d.index_mask
        })
    }

    #[inline]
    fn irq_quiet_in(&self, words: &[std::sync::atomic::AtomicU32]) -> bool {
        match &self.irq {
            IrqWords::None => true,
            IrqWords::Elsewhere => false,
            IrqWords::At(at) => at.iter().all(|&i| {
                words
                    .get(i)
                    .is_none_or(|w| w.load(std::sync::atomic::Ordering::Relaxed) == 0)
            }),
        }
    }
}

/// One VF model as the dataplane drives it. Called with the VF's lock held; guest memory is
/// locked by the caller only around [`poll_tx`](Self::poll_tx) and [`deliver`](Self::deliver).
pub trait VfBackend {
    /// PCI COMMAND.BME: the device may touch guest memory.
    fn bus_master(&self) -> bool;

    /// The lock-free look at the VF's doorbells (taken once, when the port is built).
    fn idle_probe(&self) -> IdleProbe;

    /// Interrupt requests the guest stored without trapping (every pass, rate limit or not).
    fn poll_irqs(&mut self) -> IrqOut {
        IrqOut::default()
    }

    /// Whether [`poll_tx`](Self::poll_tx) may find work (cheap; no guest memory). May update
    /// queue state (a re-enabled queue starts afresh).
    fn tx_ready(&mut self) -> bool;

    /// Takes up to `budget` packets from the TX ring(s) into `frames`, completes their
    /// descriptors and advances the heads.
    fn poll_tx<M: GuestMemory>(
        &mut self,
        mem: &M,
        scratch: &mut TxScratch,
        budget: usize,
        frames: &mut TxFrames,
    ) -> TxPoll;

    /// Whether the VF's RX side takes frames at all (false: the caller drops the whole batch
    /// as RX-disabled).
    fn rx_ready(&self) -> bool;

    /// Writes `batch` (`expected` frames in all) into the RX ring(s), tallying each frame.
    fn deliver<'a, M: GuestMemory, I: Iterator<Item = RxRun<'a>>>(
        &mut self,
        mem: &M,
        expected: usize,
        batch: I,
        tally: &mut RxTally,
    ) -> IrqOut;

    /// The minimum gap between two interrupts on `vector`, as the guest programmed it.
    fn moderation_gap(&self, vector: usize) -> Duration;

    /// Forgets the per-queue TX state kept between polls (queue disable, VF or device reset).
    fn reset_tx(&mut self);
}
