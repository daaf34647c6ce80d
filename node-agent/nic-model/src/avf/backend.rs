//! The AVF VF as the dataplane drives it ([`VfBackend`]): the register model with its
//! virtchnl-configured VSI, per-queue TX state, the tail and ITR words the guest stores to on
//! the mapped BAR0 pages, RSS queue selection on receive.

use super::rings::{rx_write, AvfTxQueue, RxDrop, RxMeta};
use super::rss::rss_queue;
use super::state::MAX_QUEUE_PAIRS;
use super::vf::AvfVf;
use crate::mem::GuestMemory;
use crate::pci::PciFunction;
use crate::ring::{IdleProbe, IrqOut, RxRun, RxTally, TxFrames, TxPoll, TxScratch, VfBackend};
use crate::shared::SharedWords;
use emu_nic_defs::avf as r;
use std::time::Duration;

/// Word index of QTX_TAIL1(0) and QRX_TAIL1(0) in BAR0.
const TX_TAIL_WORD: usize = (r::QTX_TAIL1 / 4) as usize;
const RX_TAIL_WORD: usize = (r::QRX_TAIL1 / 4) as usize;

/// The mutable device state of an AVF VF: the register model (with the virtchnl-configured
/// VSI), per-queue TX state and the tail pages the client writes without trapping.
#[derive(Debug)]
pub struct AvfBackend {
    pub vf: AvfVf,
    pub txqs: Vec<AvfTxQueue>,
    /// BAR0 as shared words (at least the pages of [`r::MAPPED_PAGES`]); `None`: tails trap
    /// and live in the model only.
    pub bar0_words: Option<SharedWords>,
}

impl AvfBackend {
    pub fn new(vf: AvfVf, bar0_words: Option<SharedWords>) -> Self {
        AvfBackend {
            vf,
            txqs: (0..MAX_QUEUE_PAIRS).map(|_| AvfTxQueue::new()).collect(),
            bar0_words,
        }
    }

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

    /// Zeroes the mapped pages (a reset makes every tail 0).
    pub fn clear_mapped(&self) {
        if let Some(words) = &self.bar0_words {
            for &(o, len) in &r::MAPPED_PAGES {
                for w in (o / 4)..((o + len) / 4) {
                    words.store(w as usize, 0);
                }
            }
        }
    }

    /// The minimum interrupt gap of MSI-X vector `v` (≥ 1, a queue vector) as the guest
    /// programmed VFINT_ITRN1 for the vector's RX ITR index: the interval field (bits 0–11)
    /// counts 2 µs. The register sits on the mapped RX tail page, so it is read from there.
    pub fn itr_gap(&self, v: usize) -> Duration {
        let (Some(w), Some(idx)) = (&self.bar0_words, self.vf.vsi.irq.rx_itr_idx.get(v)) else {
            return Duration::ZERO;
        };
        if v == 0 || *idx > 2 {
            return Duration::ZERO;
        }
        let off = r::VFINT_ITRN1 as usize
            + r::VFINT_ITRN1_STRIDE as usize * usize::from(*idx)
            + 4 * (v - 1);
        let interval = w.load(off / 4) & 0xFFF;
        Duration::from_micros(2 * u64::from(interval))
    }

    fn pairs(&self) -> usize {
        usize::from(self.vf.vsi.num_pairs).min(MAX_QUEUE_PAIRS)
    }
}

impl VfBackend for AvfBackend {
    fn bus_master(&self) -> bool {
        self.vf.bus_master()
    }

    /// AVF VFs always take the locked path (their tails are many words on two pages).
    fn idle_probe(&self) -> IdleProbe {
        IdleProbe::none()
    }

    fn tx_ready(&mut self) -> bool {
        if !self.vf.bus_master() {
            return false;
        }
        self.sync_tails();
        let pairs = self.pairs();
        self.vf.vsi.tx[..pairs]
            .iter()
            .any(|cfg| cfg.enabled && cfg.head != cfg.tail)
    }

    fn poll_tx<M: GuestMemory>(
        &mut self,
        mem: &M,
        scratch: &mut TxScratch,
        budget: usize,
        frames: &mut TxFrames,
    ) -> TxPoll {
        let mut out = TxPoll::default();
        for q in 0..self.pairs() {
            let cfg = &self.vf.vsi.tx[q];
            if !cfg.enabled || cfg.head == cfg.tail {
                continue;
            }
            let (txq, cfg) = (&mut self.txqs[q], &mut self.vf.vsi.tx[q]);
            let o = txq.process(cfg, mem, scratch, budget, &mut |f: &[u8]| frames.push(f));
            out.stats.add(&o.stats);
            if o.write_backs > 0 {
                out.irq.fire |= self.vf.raise_tx(q).fire;
            }
        }
        out
    }

    fn rx_ready(&self) -> bool {
        // A disabled queue counts its frames as "no buffers" (per frame, after RSS).
        true
    }

    fn deliver<'a, M: GuestMemory, I: Iterator<Item = RxRun<'a>>>(
        &mut self,
        mem: &M,
        _expected: usize,
        batch: I,
        t: &mut RxTally,
    ) -> IrqOut {
        self.sync_tails();
        let pairs = usize::from(self.vf.vsi.num_pairs).clamp(1, MAX_QUEUE_PAIRS);
        let mut raised = 0u32;
        let vsi = &mut self.vf.vsi;
        for (frame, vlan) in batch.flat_map(RxRun::frames) {
            // RSS picks the queue (devices.md §3: Toeplitz over the enabled fields).
            let (q, hash, ptype) = rss_queue(&vsi.rss, pairs, frame);
            let q = q.min(MAX_QUEUE_PAIRS - 1);
            let meta = RxMeta {
                vlan,
                rss_hash: hash,
                ptype,
            };
            match rx_write(&mut vsi.rx[q], mem, frame, meta) {
                Ok(_) => {
                    t.delivered(frame);
                    raised |= 1 << q;
                }
                Err(RxDrop::NoBuffers) | Err(RxDrop::Disabled) => t.no_buf += 1,
                Err(_) => t.bad += 1,
            }
        }
        let mut irq = IrqOut::default();
        while raised != 0 {
            let q = raised.trailing_zeros() as usize;
            raised &= raised - 1;
            irq.fire |= self.vf.raise_rx(q).fire;
        }
        irq
    }

    fn moderation_gap(&self, vector: usize) -> Duration {
        self.itr_gap(vector)
    }

    fn reset_tx(&mut self) {
        for q in &mut self.txqs {
            q.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itr_gap_comes_from_the_mapped_itrn_register() {
        let words = SharedWords::owned(0x4000);
        let mut vf = AvfVf::new(4);
        vf.vsi.irq.rx_itr_idx[2] = 1;
        let st = AvfBackend {
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
