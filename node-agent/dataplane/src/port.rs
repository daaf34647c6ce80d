//! One VF as the dataplane sees it: its device model (shared with the vfio-user server thread
//! that handles trapped register accesses), its guest memory, its interrupt sink, its counters.

use crate::counters::VfCounters;
use crate::tap_port::TapState;
use emu_guest_mem::DmaTable;
use emu_nic_model::avf::backend::AvfBackend;
use emu_nic_model::avf::vf::AvfVf;
use emu_nic_model::igbvf::backend::IgbvfBackend;
use emu_nic_model::igbvf::vf::{HwCounters, IgbVf};
use emu_nic_model::pci::PciFunction;
use emu_nic_model::ring::{IdleProbe, IrqOut, VfBackend};
use emu_nic_model::shared::SharedWords;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Interrupt delivery of one VF (MSI-X eventfds).
pub trait IrqSink: Send + Sync {
    /// Signals vector `vector`; false if it is not bound.
    fn fire(&self, vector: u32) -> bool;
}

/// The eventfds a vfio-user client bound with SET_IRQS: the dataplane writes them directly.
impl IrqSink for emu_guest_mem::IrqSet {
    #[inline]
    fn fire(&self, vector: u32) -> bool {
        emu_guest_mem::IrqSet::fire(self, vector)
    }
}

impl<T: IrqSink + ?Sized> IrqSink for Arc<T> {
    #[inline]
    fn fire(&self, vector: u32) -> bool {
        T::fire(self, vector)
    }
}

/// What sits behind one VF port: a device model's backend (the models, each in its own
/// folder of `emu-nic-model`, implement [`VfBackend`]), or a kernel TAP.
// One value per VF, behind its mutex for the VF's lifetime: the size gap between models
// costs a few KiB per VF and no copies, so boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PortState {
    Igbvf(IgbvfBackend),
    Avf(AvfBackend),
    /// A netdev-mode VF: a kernel TAP instead of rings ([`crate::tap_port`]).
    Tap(TapState),
}

impl PortState {
    pub fn igb(&mut self) -> Option<&mut IgbvfBackend> {
        match self {
            PortState::Igbvf(s) => Some(s),
            _ => None,
        }
    }
    pub fn avf(&mut self) -> Option<&mut AvfBackend> {
        match self {
            PortState::Avf(s) => Some(s),
            _ => None,
        }
    }
    pub fn tap(&mut self) -> Option<&mut TapState> {
        match self {
            PortState::Tap(s) => Some(s),
            _ => None,
        }
    }
    pub fn bus_master(&self) -> bool {
        match self {
            PortState::Igbvf(s) => s.bus_master(),
            PortState::Avf(s) => s.bus_master(),
            // A TAP has no bus to master: its fd is its memory.
            PortState::Tap(_) => true,
        }
    }

    /// The model's PCI function (config space), if the port has a device model.
    pub fn pci(&mut self) -> Option<&mut dyn PciFunction> {
        match self {
            PortState::Igbvf(s) => Some(&mut s.vf),
            PortState::Avf(s) => Some(&mut s.vf),
            PortState::Tap(_) => None,
        }
    }

    fn idle_probe(&self) -> IdleProbe {
        match self {
            PortState::Igbvf(s) => s.idle_probe(),
            PortState::Avf(s) => s.idle_probe(),
            PortState::Tap(_) => IdleProbe::none(),
        }
    }
}

/// A VF attached to the dataplane. The switch port number is its index in the dataplane's
/// port list.
pub struct VfPort {
    pub id: String,
    state: Mutex<PortState>,
    /// The client's DMA regions (empty when no client is attached: every access fails).
    /// The dataplane read-locks it once per ring pass.
    pub mem: Arc<DmaTable>,
    pub irqs: Box<dyn IrqSink>,
    pub counters: VfCounters,
    /// Where the poll loop looks, without the lock, whether the VF has work (the same
    /// shared words its model reads; built by the model).
    probe: IdleProbe,
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
        Self::with_state(id, PortState::Igbvf(IgbvfBackend::new(vf)), mem, irqs)
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
            PortState::Avf(AvfBackend::new(vf, bar0_words)),
            mem,
            irqs,
        )
    }

    /// Whether a pass can skip this VF without its lock (see [`IdleProbe::nothing_to_do`]).
    #[inline]
    pub fn nothing_to_do(&self, admitted: bool) -> bool {
        self.probe.nothing_to_do(admitted)
    }

    /// Whether the poll loop may skip reading this VF's interrupt requests: the guest stored
    /// none on its mapped interrupt page since the last read (always, for models without one).
    pub fn irq_page_quiet(&self) -> bool {
        self.probe.irq_quiet()
    }

    /// Whether the VF's TX queue is known, without the lock, to be enabled and empty: then a
    /// poll pass has nothing to do there and skips it without taking the state lock.
    pub fn tx_idle(&self) -> bool {
        self.probe.tx_idle()
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
            PortState::Tap(TapState::default()),
            Arc::new(DmaTable::new()),
            Box::new(NoIrqs),
        )
    }

    fn with_state(
        id: String,
        state: PortState,
        mem: Arc<DmaTable>,
        irqs: Box<dyn IrqSink>,
    ) -> Self {
        VfPort {
            id,
            probe: state.idle_probe(),
            state: Mutex::new(state),
            mem,
            irqs,
            counters: VfCounters::default(),
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
    pub fn lock(&self) -> MutexGuard<'_, PortState> {
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

    /// Queues the vectors a backend asked for to fire at the end of the pass, each moderated
    /// as the backend's throttle register (which the guest may write without trapping) asks.
    #[inline]
    pub(crate) fn defer_fire_moderated(&self, irq: IrqOut, backend: &impl VfBackend) {
        if irq.fire == 0 {
            return;
        }
        let mut v = irq.fire;
        while v != 0 {
            let n = v.trailing_zeros() as usize;
            v &= v - 1;
            self.set_moderation(n, backend.moderation_gap(n));
        }
        self.defer_fire(irq.fire);
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
}
