//! One VF as the dataplane sees it: its device model (shared with the vfio-user server thread
//! that handles trapped register accesses), its guest memory, its interrupt sink, its counters.

use crate::counters::VfCounters;
use emu_nic_model::avf::rings::AvfTxQueue;
use emu_nic_model::avf::state::MAX_QUEUE_PAIRS;
use emu_nic_model::avf::vf::AvfVf;
use emu_nic_model::igbvf::rings::TxQueue;
use emu_nic_model::igbvf::vf::{HwCounters, IgbVf};
use emu_nic_model::mem::GuestMemory;
use emu_nic_model::shared::SharedWords;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Guest memory of one VF that can be held stable for a whole ring pass.
pub trait DmaMemory: Send + Sync {
    /// Runs `f` with the VF's DMA regions pinned (an unmap waits until `f` returns).
    fn with_memory(&self, f: &mut dyn FnMut(&dyn GuestMemory));
}

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
}

impl VfState {
    pub fn igb(&mut self) -> Option<&mut IgbState> {
        match self {
            VfState::Igbvf(s) => Some(s),
            VfState::Avf(_) => None,
        }
    }
    pub fn avf(&mut self) -> Option<&mut AvfState> {
        match self {
            VfState::Avf(s) => Some(s),
            VfState::Igbvf(_) => None,
        }
    }
    pub fn bus_master(&self) -> bool {
        match self {
            VfState::Igbvf(s) => s.vf.bus_master(),
            VfState::Avf(s) => s.vf.bus_master(),
        }
    }
}

/// A VF attached to the dataplane. The switch port number is its index in the dataplane's
/// port list.
pub struct VfPort {
    pub id: String,
    state: Mutex<VfState>,
    pub mem: Box<dyn DmaMemory>,
    pub irqs: Box<dyn IrqSink>,
    pub counters: VfCounters,
    /// Vectors to fire at the end of the current pass (coalescing).
    pending_fire: AtomicU32,
    /// A client is attached: its memory and interrupts are live.
    active: AtomicBool,
    /// Transmit rate limit in bits per second (0: unlimited), set by the control path.
    rate_bps: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for VfPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfPort").field("id", &self.id).finish()
    }
}

impl VfPort {
    /// An igbvf VF port.
    pub fn new(id: String, vf: IgbVf, mem: Box<dyn DmaMemory>, irqs: Box<dyn IrqSink>) -> Self {
        Self::with_state(
            id,
            VfState::Igbvf(IgbState {
                vf,
                txq: TxQueue::new(),
                tx_was_enabled: false,
            }),
            mem,
            irqs,
        )
    }

    /// An AVF VF port; `bar0_words` are the mapped tail pages, if any.
    pub fn new_avf(
        id: String,
        vf: AvfVf,
        bar0_words: Option<SharedWords>,
        mem: Box<dyn DmaMemory>,
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

    fn with_state(
        id: String,
        state: VfState,
        mem: Box<dyn DmaMemory>,
        irqs: Box<dyn IrqSink>,
    ) -> Self {
        VfPort {
            id,
            state: Mutex::new(state),
            mem,
            irqs,
            counters: VfCounters::default(),
            pending_fire: AtomicU32::new(0),
            active: AtomicBool::new(false),
            rate_bps: std::sync::atomic::AtomicU64::new(0),
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

    pub(crate) fn flush_fire(&self) {
        let v = self.pending_fire.swap(0, Ordering::Relaxed);
        self.fire_now(v);
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
