//! AVF TX/RX ring processing: the i40e-class descriptors the Linux `iavf` driver uses
//! (16-byte TX data/context descriptors, 32-byte legacy RX descriptors).
//!
//! Pure code: guest memory and the queue configuration ([`TxQueueCfg`]/[`RxQueueCfg`] from
//! the shared VSI state) are passed in, frames leave through a callback, and reusable buffers
//! come from the caller ([`TxScratch`]); nothing allocates per packet. Every value a guest
//! controls (ring base/length, head/tail, descriptors, buffer addresses and lengths, offload
//! fields) is checked: a bad value drops the packet or frame and is counted, never panics,
//! never loops unboundedly and never writes outside the descriptors and buffers the guest
//! handed to the device.
//!
//! Ring ownership: the device owns descriptors `[head, tail)`; `head == tail` is empty.
//! A ring is usable when it is enabled, `2 <= ring_len <= MAX_RING_LEN`, and both `head` and
//! `tail` are below `ring_len`.

use crate::avf::state::{RxQueueCfg, TxQueueCfg};

mod rx;
mod tx;

#[cfg(test)]
mod tests;

pub use rx::{rx_write, RxDrop, RxMeta, RxWritten, MAX_RX_BUF, MAX_RX_FRAME};
pub use tx::{AvfTxQueue, TxOutcome, TxScratch, TxStats, MAX_TX_FRAME, MAX_TX_PACKET, MIN_TSO_MSS};

/// Largest ring accepted, in descriptors (iavf uses 64–4096 in steps of 32; i40e allows
/// 8160). Bounds the work of one call.
pub const MAX_RING_LEN: u32 = 8192;

/// The geometry of one ring, validated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ring {
    base: u64,
    count: u32,
    desc_len: u64,
}

impl Ring {
    /// A usable ring, or `None` when the length, head or tail is out of range.
    fn new(base: u64, len: u32, head: u32, tail: u32, desc_len: u64) -> Option<Self> {
        let ok = (2..=MAX_RING_LEN).contains(&len) && head < len && tail < len;
        ok.then_some(Ring {
            base,
            count: len,
            desc_len,
        })
    }

    pub(crate) fn tx(q: &TxQueueCfg) -> Option<Self> {
        Self::new(
            q.ring_base,
            q.ring_len,
            q.head,
            q.tail,
            emu_nic_defs::avf::tx::DESC_LEN,
        )
    }

    pub(crate) fn rx(q: &RxQueueCfg) -> Option<Self> {
        Self::new(
            q.ring_base,
            q.ring_len,
            q.head,
            q.tail,
            emu_nic_defs::avf::rx::DESC_LEN,
        )
    }

    /// Guest address of descriptor `idx`; `None` if the descriptor would wrap the address
    /// space.
    fn desc_addr(&self, idx: u32) -> Option<u64> {
        self.base
            .checked_add(u64::from(idx) * self.desc_len)
            .filter(|a| a.checked_add(self.desc_len - 1).is_some())
    }

    /// Descriptors the device owns: `(tail - head) mod count`.
    fn pending(&self, head: u32, tail: u32) -> u32 {
        (tail + self.count - head) % self.count
    }

    /// `idx + 1` modulo the ring size.
    fn next(&self, idx: u32) -> u32 {
        if idx + 1 >= self.count {
            0
        } else {
            idx + 1
        }
    }
}
