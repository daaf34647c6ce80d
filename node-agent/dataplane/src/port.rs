//! One VF as the dataplane sees it: its device model (shared with the vfio-user server thread
//! that handles trapped register accesses), its guest memory, its interrupt sink, its counters.

use crate::counters::VfCounters;
use crate::tap_port::TapState;
use emu_guest_mem::DmaTable;
use emu_nic_model::avf::rings::AvfTxQueue;
use emu_nic_model::avf::state::MAX_QUEUE_PAIRS;
use emu_nic_model::avf::vf::AvfVf;
use emu_nic_model::igbvf::rings::TxQueue;
use emu_nic_model::igbvf::vf::{HwCounters, IgbVf};
use emu_nic_model::shared::SharedWords;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Interrupt delivery of one VF (MSI-X eventfds).
pub trait IrqSink: Send + Sync {
    /// Signals vector `vector`; false if it is not bound.
    fn fire(&self, vector: u32) -> bool;
}

/// The mutable device state of an igbvf VF: the register model and the TX queue's
/// assembly state.
#[derive(Debug, Default)]
pub struct IgbState {
    pub vf: IgbVf,
    pub txq: TxQueue,
    /// TXDCTL.EN as last seen: a re-enabled queue starts with fresh context slots.
    pub tx_was_enabled: bool,
}

/// The mutable device state of an AVF VF: the register model (with the virtchnl-configured
/// VSI), per-queue TX state and the tail pages the client writes without trapping.
#[derive(Debug)]
pub struct AvfState {
    pub vf: AvfVf,
    pub txqs: Vec<AvfTxQueue>,
    /// BAR0 as shared words (at least the QTX_TAIL1 and QRX_TAIL1 pages); `None`: tails
    /// trap and live in the model only.
    pub bar0_words: Option<SharedWords>,
}

impl AvfState {
    /// Refreshes the model's tails from the mapped pages (the guest's plain stores).
    pub fn sync_tails(&mut self) {
        if let Some(w) = &self.bar0_words {
            let pairs = usize::from(self.vf.vsi.num_pairs).min(MAX_QUEUE_PAIRS);
            for q in 0..pairs {
                self.vf.vsi.tx[q].tail = w.load(TX_TAIL_WORD + q);
                self.vf.vsi.rx[q].tail = w.load(RX_TAIL_WORD + q);
            }
        }
    }
}

impl AvfState {
    /// The minimum interrupt gap of MSI-X vector `v` (≥ 1, a queue vector) as the guest
    /// programmed VFINT_ITRN1 for the vector's RX ITR index: the interval field (bits 0–11)
    /// counts 2 µs. The register sits on the mapped 0x2000 page, so it is read from there.
    pub fn itr_gap(&self, v: usize) -> std::time::Duration {
        let (Some(w), Some(idx)) = (&self.bar0_words, self.vf.vsi.irq.rx_itr_idx.get(v)) else {
            return std::time::Duration::ZERO;
        };
        if v == 0 || *idx > 2 {
            return std::time::Duration::ZERO;
        }
        let word = (ITRN1_OFFSET + 64 * usize::from(*idx) + 4 * (v - 1)) / 4;
        let interval = w.load(word) & 0xFFF;
        std::time::Duration::from_micros(2 * u64::from(interval))
    }
}

/// BAR0 offset of VFINT_ITRN1(0, 0).
const ITRN1_OFFSET: usize = 0x2800;

/// Word index of QTX_TAIL1(0) and QRX_TAIL1(0) in BAR0.
pub const TX_TAIL_WORD: usize = 0;
pub const RX_TAIL_WORD: usize = 0x2000 / 4;

/// The device state behind one VF port.
// One value per VF, behind its mutex for the VF's lifetime: the size gap between models
// costs a few KiB per VF and no copies, so boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum VfState {
    Igbvf(IgbState),
    Avf(AvfState),
    /// A netdev-mode VF: a kernel TAP instead of rings ([`crate::tap_port`]).
    Tap(TapState),
}

impl VfState {
    pub fn igb(&mut self) -> Option<&mut IgbState> {
        match self {
            VfState::Igbvf(s) => Some(s),
            _ => None,
        }
    }
    pub fn avf(&mut self) -> Option<&mut AvfState> {
        match self {
            VfState::Avf(s) => Some(s),
            _ => None,
        }
    }
    pub fn tap(&mut self) -> Option<&mut TapState> {
        match self {
            VfState::Tap(s) => Some(s),
            _ => None,
        }
    }
    pub fn bus_master(&self) -> bool {
        match self {
            VfState::Igbvf(s) => s.vf.bus_master(),
            VfState::Avf(s) => s.vf.bus_master(),
            // A TAP has no bus to master: its fd is its memory.
            VfState::Tap(_) => true,
        }
    }
}

/// A VF attached to the dataplane. The switch port number is its index in the dataplane's
/// port list.
pub struct VfPort {
    pub id: String,
    state: Mutex<VfState>,
    /// The client's DMA regions (empty when no client is attached: every access fails).
    /// The dataplane read-locks it once per ring pass.
    pub mem: Arc<DmaTable>,
    pub irqs: Box<dyn IrqSink>,
    pub counters: VfCounters,
    /// An igbvf VF's queue pages and interrupt page (the same words its model reads), for
    /// the lock-free idle check of the poll loop.
    queue_pages: Option<SharedWords>,
    irq_page: Option<SharedWords>,
    /// Vectors to fire at the end of the current pass (coalescing).
    pending_fire: AtomicU32,
    /// A client is attached: its memory and interrupts are live.
    active: AtomicBool,
    /// Transmit rate limit in bits per second (0: unlimited), set by the control path.
    rate_bps: std::sync::atomic::AtomicU64,
    /// Interrupt moderation: minimum gap per vector in ns (0: none), as the guest programmed
    /// it (igbvf EITR), and when each vector last fired (ns since `epoch`).
    itr_ns: [AtomicU32; MAX_MODERATED_VECTORS],
    last_fire_ns: [std::sync::atomic::AtomicU64; MAX_MODERATED_VECTORS],
    epoch: std::time::Instant,
}

/// Vectors whose interrupt rate can be moderated.
pub const MAX_MODERATED_VECTORS: usize = 32;

impl std::fmt::Debug for VfPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfPort").field("id", &self.id).finish()
    }
}

impl VfPort {
    /// An igbvf VF port.
    pub fn new(id: String, vf: IgbVf, mem: Arc<DmaTable>, irqs: Box<dyn IrqSink>) -> Self {
        let pages = vf.queue_pages().clone();
        let irq_page = vf.irq_page().clone();
        let mut port = Self::with_state(
            id,
            VfState::Igbvf(IgbState {
                vf,
                txq: TxQueue::new(),
                tx_was_enabled: false,
            }),
            mem,
            irqs,
        );
        port.queue_pages = Some(pages);
        port.irq_page = Some(irq_page);
        port
    }

    /// Whether the poll loop may skip reading this VF's interrupt page: an igbvf VF on whose
    /// page the guest stored no mask, unmask or cause since the last read (AVF VFs have no
    /// such page).
    #[inline]
    pub fn irq_page_quiet(&self) -> bool {
        self.irq_page.as_ref().is_none_or(IgbVf::irq_page_quiet_in)
    }

    /// Whether the VF is an igbvf VF whose TX queue is enabled and empty (TDH == TDT): then a
    /// poll pass has nothing to do there and skips it without taking the state lock.
    #[inline]
    pub fn tx_idle(&self) -> bool {
        self.queue_pages.as_ref().is_some_and(|w| {
            let (enabled, head, tail) = IgbVf::tx_doorbell_in(w, 0);
            enabled && head == tail
        })
    }

    /// An AVF VF port; `bar0_words` are the mapped tail pages, if any.
    pub fn new_avf(
        id: String,
        vf: AvfVf,
        bar0_words: Option<SharedWords>,
        mem: Arc<DmaTable>,
        irqs: Box<dyn IrqSink>,
    ) -> Self {
        Self::with_state(
            id,
            VfState::Avf(AvfState {
                vf,
                txqs: (0..MAX_QUEUE_PAIRS).map(|_| AvfTxQueue::new()).collect(),
                bar0_words,
            }),
            mem,
            irqs,
        )
    }

    /// A netdev-mode VF port: frames come from and go to a TAP attached later
    /// ([`TapState::attach`] under [`VfPort::lock`]). It has no guest memory and no interrupts.
    pub fn new_tap(id: String) -> Self {
        struct NoIrqs;
        impl IrqSink for NoIrqs {
            fn fire(&self, _: u32) -> bool {
                false
            }
        }
        Self::with_state(
            id,
            VfState::Tap(TapState::default()),
            Arc::new(DmaTable::new()),
            Box::new(NoIrqs),
        )
    }

    fn with_state(id: String, state: VfState, mem: Arc<DmaTable>, irqs: Box<dyn IrqSink>) -> Self {
        VfPort {
            id,
            state: Mutex::new(state),
            mem,
            irqs,
            counters: VfCounters::default(),
            queue_pages: None,
            irq_page: None,
            pending_fire: AtomicU32::new(0),
            active: AtomicBool::new(false),
            rate_bps: std::sync::atomic::AtomicU64::new(0),
            itr_ns: std::array::from_fn(|_| AtomicU32::new(0)),
            last_fire_ns: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
            epoch: std::time::Instant::now(),
        }
    }

    /// Marks the VF attached (a client with memory) or detached; the dataplane skips detached
    /// VFs and drops frames addressed to them.
    pub fn set_active(&self, on: bool) {
        self.active.store(on, Ordering::Release);
    }

    /// Limits what the VF may transmit to `bits_per_second` (0: no limit). Frames over the
    /// budget wait in the VF's TX ring, as on hardware with a per-VF rate limiter.
    pub fn set_rate_limit(&self, bits_per_second: u64) {
        self.rate_bps.store(bits_per_second, Ordering::Relaxed);
    }

    pub fn rate_limit(&self) -> u64 {
        self.rate_bps.load(Ordering::Relaxed)
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Locks the device state. A poisoned lock (a panic elsewhere while holding it) is
    /// recovered: the state is plain data and every method keeps it consistent.
    pub fn lock(&self) -> MutexGuard<'_, VfState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fires `vectors` (bit n = vector n) now, counting each eventfd write.
    pub fn fire_now(&self, vectors: u32) {
        let mut v = vectors;
        while v != 0 {
            let n = v.trailing_zeros();
            v &= v - 1;
            if self.irqs.fire(n) {
                crate::counters::bump(&self.counters.interrupts, 1);
            }
        }
    }

    /// Queues `vectors` to fire at the end of the dataplane pass.
    pub(crate) fn defer_fire(&self, vectors: u32) {
        if vectors != 0 {
            self.pending_fire.fetch_or(vectors, Ordering::Relaxed);
        }
    }

    /// Queues igbvf `vectors` to fire at the end of the pass, each moderated as its EITR
    /// (read from the interrupt page, which the guest may write without trapping) asks.
    pub(crate) fn defer_fire_igb(&self, vf: &IgbVf, vectors: u32) {
        let mut v = vectors;
        while v != 0 {
            let n = v.trailing_zeros() as usize;
            v &= v - 1;
            self.set_moderation(n, vf.moderation_gap(n));
        }
        self.defer_fire(vectors);
    }

    /// Sets vector `v`'s minimum interrupt gap (the guest wrote its throttle register).
    pub fn set_moderation(&self, v: usize, gap: std::time::Duration) {
        if let Some(slot) = self.itr_ns.get(v) {
            slot.store(
                u32::try_from(gap.as_nanos()).unwrap_or(u32::MAX),
                Ordering::Relaxed,
            );
        }
    }

    /// Fires the pending vectors whose moderation gap has passed; the others stay pending for
    /// a later pass. Returns how long until the first held-back interrupt may fire, if any.
    pub(crate) fn flush_fire(&self) -> Option<std::time::Duration> {
        // A plain load first: most ports have nothing pending, and a swap is a locked
        // read-modify-write even then.
        if self.pending_fire.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let v = self.pending_fire.swap(0, Ordering::Relaxed);
        if v == 0 {
            return None;
        }
        let now = self.epoch.elapsed().as_nanos() as u64;
        let (mut fire, mut hold) = (0u32, 0u32);
        let mut due_in = u64::MAX;
        let mut bits = v;
        while bits != 0 {
            let n = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let gap = self
                .itr_ns
                .get(n)
                .map_or(0, |g| u64::from(g.load(Ordering::Relaxed)));
            // 0: never fired. Stored times are offset by one to keep 0 free.
            let last = self
                .last_fire_ns
                .get(n)
                .map_or(0, |l| l.load(Ordering::Relaxed));
            let since = (now + 1).saturating_sub(last);
            if gap == 0 || last == 0 || since >= gap {
                fire |= 1 << n;
                if let Some(l) = self.last_fire_ns.get(n) {
                    l.store(now + 1, Ordering::Relaxed);
                }
            } else {
                hold |= 1 << n;
                due_in = due_in.min(gap - since);
            }
        }
        self.fire_now(fire);
        if hold == 0 {
            return None;
        }
        self.pending_fire.fetch_or(hold, Ordering::Relaxed);
        Some(std::time::Duration::from_nanos(due_in))
    }

    /// The statistics registers' view of the counters.
    pub fn hw_counters(&self) -> HwCounters {
        let s = self.counters.snapshot();
        HwCounters {
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            rx_multicast: s.rx_multicast,
            ..HwCounters::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    struct Count(Arc<AtomicU64>);
    impl IrqSink for Count {
        fn fire(&self, _: u32) -> bool {
            self.0.fetch_add(1, Ordering::Relaxed);
            true
        }
    }

    #[test]
    fn moderation_holds_interrupts_back_until_the_gap_passed() {
        let fired = Arc::new(AtomicU64::new(0));
        let p = VfPort::new(
            "t".into(),
            IgbVf::new(),
            Arc::new(DmaTable::new()),
            Box::new(Count(fired.clone())),
        );
        p.set_moderation(1, Duration::from_millis(20));
        p.defer_fire(0b10);
        assert_eq!(p.flush_fire(), None, "first interrupt goes at once");
        assert_eq!(fired.load(Ordering::Relaxed), 1);
        p.defer_fire(0b10);
        p.defer_fire(0b10);
        let due = p.flush_fire().expect("second one is held back");
        assert!(
            due > Duration::ZERO && due <= Duration::from_millis(20),
            "{due:?}"
        );
        assert_eq!(fired.load(Ordering::Relaxed), 1);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(p.flush_fire(), None);
        assert_eq!(fired.load(Ordering::Relaxed), 2, "coalesced into one");
        // An unmoderated vector is never held.
        p.defer_fire(0b1);
        p.defer_fire(0b1);
        assert_eq!(p.flush_fire(), None);
        assert_eq!(fired.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn tx_idle_reads_the_queue_pages_without_the_lock() {
        use emu_nic_defs::igbvf as r;
        let mut vf = IgbVf::new();
        let _ = vf.bar0_write(u64::from(r::TDLEN0), 4096);
        let p = VfPort::new(
            "t".into(),
            vf,
            Arc::new(DmaTable::new()),
            Box::new(Count(Arc::new(AtomicU64::new(0)))),
        );
        assert!(
            !p.tx_idle(),
            "a disabled queue is not skipped (its state must be seen)"
        );
        let _ = p
            .lock()
            .igb()
            .unwrap()
            .vf
            .bar0_write(u64::from(r::TXDCTL0), r::XDCTL_ENABLE);
        assert!(p.tx_idle(), "enabled, TDH == TDT");
        // The guest's doorbell: a plain store to TDT on the mapped page.
        let _ = p.lock().igb().unwrap().vf.bar0_write(u64::from(r::TDT0), 5);
        assert!(!p.tx_idle(), "work queued");
        let avf = VfPort::new_avf(
            "a".into(),
            AvfVf::new(4),
            None,
            Arc::new(DmaTable::new()),
            Box::new(Count(Arc::new(AtomicU64::new(0)))),
        );
        assert!(!avf.tx_idle(), "AVF ports always take the locked path");
    }

    #[test]
    fn avf_itr_gap_comes_from_the_mapped_itrn_register() {
        let words = SharedWords::owned(0x4000);
        let mut vf = AvfVf::new(4);
        vf.vsi.irq.rx_itr_idx[2] = 1;
        let st = AvfState {
            vf,
            txqs: Vec::new(),
            bar0_words: Some(words.clone()),
        };
        // VFINT_ITRN1(1, 1) (ITR index 1, vector 2): 25 × 2 µs.
        words.store((0x2800 + 64 + 4) / 4, 25);
        assert_eq!(st.itr_gap(2), Duration::from_micros(50));
        assert_eq!(
            st.itr_gap(1),
            Duration::ZERO,
            "vector 1 uses index 0, unset"
        );
        assert_eq!(
            st.itr_gap(0),
            Duration::ZERO,
            "vector 0 is not a queue vector"
        );
        assert_eq!(st.itr_gap(999), Duration::ZERO);
    }
}
