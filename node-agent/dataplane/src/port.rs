//! One VF as the dataplane sees it: its device model (shared with the vfio-user server thread
//! that handles trapped register accesses), its guest memory, its interrupt sink, its counters.

use crate::counters::VfCounters;
use emu_nic_model::igbvf::rings::TxQueue;
use emu_nic_model::igbvf::vf::{HwCounters, IgbVf};
use emu_nic_model::mem::GuestMemory;
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

/// The mutable device state of a VF: the register model and the TX queue's assembly state.
#[derive(Debug, Default)]
pub struct VfState {
    pub vf: IgbVf,
    pub txq: TxQueue,
    /// TXDCTL.EN as last seen: a re-enabled queue starts with fresh context slots.
    pub tx_was_enabled: bool,
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
}

impl std::fmt::Debug for VfPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfPort").field("id", &self.id).finish()
    }
}

impl VfPort {
    pub fn new(id: String, vf: IgbVf, mem: Box<dyn DmaMemory>, irqs: Box<dyn IrqSink>) -> Self {
        VfPort {
            id,
            state: Mutex::new(VfState {
                vf,
                txq: TxQueue::new(),
                tx_was_enabled: false,
            }),
            mem,
            irqs,
            counters: VfCounters::default(),
            pending_fire: AtomicU32::new(0),
            active: AtomicBool::new(false),
        }
    }

    /// Marks the VF attached (a client with memory) or detached; the dataplane skips detached
    /// VFs and drops frames addressed to them.
    pub fn set_active(&self, on: bool) {
        self.active.store(on, Ordering::Release);
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
