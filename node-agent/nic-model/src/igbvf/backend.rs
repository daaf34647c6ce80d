//! The igbvf VF as the dataplane drives it ([`VfBackend`]): the register model, the TX
//! queue's assembly state, one TX and one RX queue (queue 0, as the Linux `igbvf` driver
//! uses), head write-back into the mapped queue pages, EITR moderation.

use super::rings::{RxBurst, RxDrop, RxLayout, RxMeta, TxQueue};
use super::vf::{IgbVf, IrqSource};
use crate::mem::GuestMemory;
use crate::pci::PciFunction;
use crate::ring::{
    FrameKind, FrameSource, IdleProbe, IrqOut, RxRun, RxTally, TxFrames, TxPoll, TxScratch,
    VfBackend,
};
use std::time::Duration;

/// The mutable device state of an igbvf VF: the register model and the TX queue's assembly
/// state.
#[derive(Debug, Default)]
pub struct IgbvfBackend {
    pub vf: IgbVf,
    pub txq: TxQueue,
    /// TXDCTL.EN as last seen: a re-enabled queue starts with fresh context slots.
    pub tx_was_enabled: bool,
}

impl IgbvfBackend {
    pub fn new(vf: IgbVf) -> Self {
        IgbvfBackend {
            vf,
            txq: TxQueue::new(),
            tx_was_enabled: false,
        }
    }

    /// One frame through the burst's checked path, tallied.
    #[inline(always)]
    fn push<M: GuestMemory>(
        t: &mut RxTally,
        burst: &mut RxBurst<'_, M>,
        frame: &[u8],
        vlan: Option<u16>,
    ) {
        let meta = RxMeta {
            vlan,
            rss_hash: None,
        };
        match burst.push(frame, meta) {
            Ok(_) => t.delivered(frame),
            Err(RxDrop::NoBuffers) => t.no_buf += 1,
            Err(_) => t.bad += 1,
        }
    }
}

impl VfBackend for IgbvfBackend {
    #[inline]
    fn bus_master(&self) -> bool {
        self.vf.bus_master()
    }

    fn idle_probe(&self) -> IdleProbe {
        self.vf.idle_probe()
    }

    /// Interrupt re-arms (EIMS), kicks (EICS) and masks the guest stored on the mapped
    /// interrupt page: four loads when there are none.
    #[inline]
    fn poll_irqs(&mut self) -> IrqOut {
        IrqOut::vectors(self.vf.poll_irq_page().fire)
    }

    #[inline]
    fn tx_ready(&mut self) -> bool {
        // Three loads decide whether there is anything to do.
        let (enabled, head, tail) = self.vf.tx_doorbell(0);
        if !enabled {
            self.tx_was_enabled = false;
            return false;
        }
        if !self.tx_was_enabled {
            self.txq.reset();
            self.tx_was_enabled = true;
        }
        head != tail && self.vf.bus_master()
    }

    #[inline]
    fn poll_tx<M: GuestMemory>(
        &mut self,
        mem: &M,
        scratch: &mut TxScratch,
        budget: usize,
        frames: &mut TxFrames,
    ) -> TxPoll {
        let mut ring = self.vf.txq(0).ring();
        let outcome = self.txq.process(&mut ring, mem, scratch, budget, frames);
        self.vf.set_tx_head(0, ring.head);
        let irq = if outcome.write_backs > 0 {
            IrqOut::vectors(self.vf.raise(IrqSource::Tx(0)).fire)
        } else {
            IrqOut::default()
        };
        TxPoll {
            stats: outcome.stats,
            irq,
        }
    }

    #[inline]
    fn rx_ready(&self) -> bool {
        self.vf.rx_enabled(0)
    }

    #[inline]
    fn deliver<'a, M: GuestMemory, I: Iterator<Item = RxRun<'a>>>(
        &mut self,
        mem: &M,
        expected: usize,
        batch: I,
        t: &mut RxTally,
    ) -> IrqOut {
        let q = self.vf.rxq(0);
        let mut ring = q.ring();
        let layout = RxLayout::from_srrctl(q.ctl);
        let mut burst = RxBurst::new(&mut ring, layout, mem, expected);
        for item in batch {
            match item {
                RxRun::One(frame, vlan) => Self::push(t, &mut burst, frame, vlan),
                RxRun::Plain(mut run) => {
                    // A run of plain frames: the block path without per-frame bookkeeping; a
                    // frame it cannot take goes through push, then the run resumes.
                    let kind = run.peek_frame().map_or(FrameKind::Unicast, FrameKind::of);
                    loop {
                        let (n, bytes) = burst.push_plain(&mut run);
                        t.delivered_many(kind, n, bytes);
                        let Some(frame) = run.next() else { break };
                        Self::push(t, &mut burst, frame, None);
                    }
                }
            }
        }
        let loss = burst.finish();
        t.lost(loss.frames, loss.bytes);
        self.vf.set_rx_head(0, ring.head);
        if t.ok > 0 {
            IrqOut::vectors(self.vf.raise(IrqSource::Rx(0)).fire)
        } else {
            IrqOut::default()
        }
    }

    #[inline]
    fn moderation_gap(&self, vector: usize) -> Duration {
        self.vf.moderation_gap(vector)
    }

    fn reset_tx(&mut self) {
        self.txq.reset();
    }
}
