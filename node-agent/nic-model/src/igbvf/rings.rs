//! igbvf TX/RX ring processing: advanced descriptors of the 82576, as the Linux `igbvf`
//! driver uses them.
//!
//! Pure code: guest memory is passed in, frames leave through a callback, and reusable
//! buffers come from the caller ([`TxScratch`]); nothing allocates per packet. Every value a
//! guest controls (ring registers, descriptors, buffer addresses and lengths, context fields,
//! SRRCTL) is checked: a bad value drops the packet or frame and is counted, never panics,
//! never loops unboundedly and never writes outside the descriptors and buffers the guest
//! handed to the device.
//!
//! Ring ownership: the device owns descriptors `[head, tail)`; `head == tail` is empty.
//! A ring is valid when `len` is a non-zero multiple of 128 no larger than [`MAX_RING_LEN`]
//! and both `head` and `tail` are below `len / 16`. Bits 3:0 of the base are ignored, as the
//! 82576 ignores them (TDBAL/RDBAL are 16-byte aligned).

use emu_nic_defs::igb_desc::{DESC_LEN, RING_BASE_ALIGN_MASK, RING_LEN_ALIGN};

mod rx;
mod tx;

pub use rx::{
    rx_write, RxBurst, RxBurstLoss, RxDescType, RxDrop, RxLayout, RxMeta, RxWritten, MAX_RX_FRAME,
    RX_BURST,
};
pub use tx::TxQueue;
// The model-neutral TX types, where the igbvf walk's callers have always found them.
pub use crate::ring::{
    TxFrames, TxOutcome, TxScratch, TxSink, TxStats, MAX_TX_FRAME, MAX_TX_PACKET,
};

/// Largest ring we accept: 65536 descriptors (Linux igbvf uses 64–4096). Bounds the work of
/// one call.
pub const MAX_RING_LEN: u32 = 65536 * DESC_LEN;

/// The ring registers of one queue as the register model holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingRegs {
    /// TDBAL/RDBAL.
    pub bal: u32,
    /// TDBAH/RDBAH.
    pub bah: u32,
    /// TDLEN/RDLEN in bytes.
    pub len: u32,
    /// TDH/RDH: next descriptor the device will use.
    pub head: u32,
    /// TDT/RDT: one past the last descriptor the guest handed over.
    pub tail: u32,
}

impl RingRegs {
    /// Guest address of descriptor 0 (bits 3:0 ignored).
    pub fn base(&self) -> u64 {
        (u64::from(self.bah) << 32 | u64::from(self.bal)) & !RING_BASE_ALIGN_MASK
    }

    /// Number of descriptors the ring length describes (`len / 16`).
    pub fn count(&self) -> u32 {
        self.len / DESC_LEN
    }

    /// Whether `len`, `head` and `tail` describe a usable ring.
    pub fn is_valid(&self) -> bool {
        self.valid_count().is_some()
    }

    /// The descriptor count when the ring is valid.
    pub(crate) fn valid_count(&self) -> Option<u32> {
        let count = self.count();
        let ok = self.len != 0
            && self.len.is_multiple_of(RING_LEN_ALIGN)
            && self.len <= MAX_RING_LEN
            && self.head < count
            && self.tail < count;
        ok.then_some(count)
    }

    /// Guest address of descriptor `idx`; `None` if it would wrap the address space.
    pub(crate) fn desc_addr(&self, idx: u32) -> Option<u64> {
        self.base()
            .checked_add(u64::from(idx) * u64::from(DESC_LEN))
            .filter(|a| a.checked_add(u64::from(DESC_LEN) - 1).is_some())
    }

    /// Descriptors the device owns: `(tail - head) mod count`. Requires a valid ring.
    #[inline]
    pub(crate) fn pending(&self, count: u32) -> u32 {
        // head and tail are below count in a valid ring: no division needed.
        if self.tail >= self.head {
            self.tail - self.head
        } else {
            self.tail + count - self.head
        }
    }
}

/// `idx + 1` modulo the ring size.
pub(crate) fn next_idx(idx: u32, count: u32) -> u32 {
    if idx + 1 >= count {
        0
    } else {
        idx + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_validity() {
        let ok = RingRegs {
            bal: 0x1007,
            bah: 1,
            len: 1024 * 16,
            head: 3,
            tail: 1023,
        };
        assert!(ok.is_valid());
        assert_eq!(ok.base(), 0x1_0000_1000);
        assert_eq!(ok.count(), 1024);
        assert_eq!(ok.pending(1024), 1020);
        let empty = RingRegs {
            head: 0,
            tail: 0,
            ..ok
        };
        assert!(empty.is_valid());
        let bad = [
            RingRegs { len: 0, ..empty },
            RingRegs { len: 100, ..empty },
            RingRegs {
                len: 16 * 65,
                ..empty
            }, // not a multiple of 128
            RingRegs {
                len: 0xffff_ff80,
                ..empty
            },
            RingRegs { head: 1024, ..ok },
            RingRegs {
                tail: u32::MAX,
                ..ok
            },
        ];
        for r in bad {
            assert!(!r.is_valid(), "{r:?}");
        }
        let top = RingRegs {
            bal: u32::MAX,
            bah: u32::MAX,
            len: 128,
            ..Default::default()
        };
        assert_eq!(top.desc_addr(0), Some(0xffff_ffff_ffff_fff0));
        assert_eq!(top.desc_addr(1), None);
    }
}
