//! Per-VF counters: written by the dataplane thread only, read by anyone (relaxed atomics; no
//! locks and no allocation on the packet path).

use emu_nic_model::vmdq::{DropReason, DROP_REASONS};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of one VF.
#[derive(Debug, Default)]
pub struct VfCounters {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_multicast: AtomicU64,
    pub rx_broadcast: AtomicU64,
    /// Frames this VF sent that the switch refused (anti-spoof, TX gate, runt) or that found
    /// no destination.
    pub tx_drops: AtomicU64,
    /// Frames addressed to this VF that it could not take (filters, disabled, no buffers).
    pub rx_drops: AtomicU64,
    /// Drops by VMDq reason (TX-side reasons count on the sender, RX-side on the receiver).
    pub drop_reasons: [AtomicU64; DROP_REASONS],
    /// RX drops because the ring had no free descriptor (QDE semantics).
    pub rx_no_buffers: AtomicU64,
    /// RX drops because the ring or a buffer was unusable (bad address, bad ring registers).
    pub rx_bad_ring: AtomicU64,
    /// TX descriptors that were malformed or pointed outside guest memory.
    pub tx_bad_descriptors: AtomicU64,
    /// TX passes that found the ring itself unusable (bad ring registers, ring memory
    /// unmapped): whatever it held stays there, counted once per pass.
    pub tx_bad_ring: AtomicU64,
    /// MSI-X eventfd writes.
    pub interrupts: AtomicU64,
}

/// A plain copy of [`VfCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_multicast: u64,
    pub rx_broadcast: u64,
    pub tx_drops: u64,
    pub rx_drops: u64,
    pub drop_reasons: [u64; DROP_REASONS],
    pub rx_no_buffers: u64,
    pub rx_bad_ring: u64,
    pub tx_bad_descriptors: u64,
    pub tx_bad_ring: u64,
    pub interrupts: u64,
}

/// Adds `n` to a counter that only one thread writes.
#[inline]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

impl VfCounters {
    pub(crate) fn drop(&self, reason: DropReason, rx: bool) {
        bump(&self.drop_reasons[reason.index()], 1);
        bump(if rx { &self.rx_drops } else { &self.tx_drops }, 1);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let mut drop_reasons = [0; DROP_REASONS];
        for (d, s) in drop_reasons.iter_mut().zip(self.drop_reasons.iter()) {
            *d = s.load(Relaxed);
        }
        CounterSnapshot {
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            rx_multicast: self.rx_multicast.load(Relaxed),
            rx_broadcast: self.rx_broadcast.load(Relaxed),
            tx_drops: self.tx_drops.load(Relaxed),
            rx_drops: self.rx_drops.load(Relaxed),
            drop_reasons,
            rx_no_buffers: self.rx_no_buffers.load(Relaxed),
            rx_bad_ring: self.rx_bad_ring.load(Relaxed),
            tx_bad_descriptors: self.tx_bad_descriptors.load(Relaxed),
            tx_bad_ring: self.tx_bad_ring.load(Relaxed),
            interrupts: self.interrupts.load(Relaxed),
        }
    }

    /// Zeroes everything (a VF being scrubbed for its next user).
    pub fn reset(&self) {
        for c in [
            &self.tx_packets,
            &self.tx_bytes,
            &self.rx_packets,
            &self.rx_bytes,
            &self.rx_multicast,
            &self.rx_broadcast,
            &self.tx_drops,
            &self.rx_drops,
            &self.rx_no_buffers,
            &self.rx_bad_ring,
            &self.tx_bad_descriptors,
            &self.tx_bad_ring,
            &self.interrupts,
        ] {
            c.store(0, Relaxed);
        }
        for c in &self.drop_reasons {
            c.store(0, Relaxed);
        }
    }
}
