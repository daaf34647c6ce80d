//! The igbvf VF's BAR0 and config space as a guest drives them, with the PF model answering
//! the mailbox exactly as the agent wires it (`node-agent/agent/src/device.rs`), and the
//! queues the guest programmed run over guest memory taken from the input.
//!
//! Input: `u16` length of the op stream, the ops, then guest memory contents.
#![no_main]

use emu_nic_defs::igbvf as r;
use emu_nic_model::igb_pf::IgbPf;
use emu_nic_model::igbvf::rings::{rx_write, RingRegs, RxLayout, RxMeta, TxQueue, TxScratch};
use emu_nic_model::igbvf::vf::{Effects, HwCounters, IgbVf, IrqSource, QueueRegs};
use emu_nic_model::pci::PciFunction;
use emu_sriov_fuzz::{guest_memory, igb_admins, Input};
use libfuzzer_sys::fuzz_target;

/// What `IgbVfDevice::apply` does with the effects of a register write.
fn apply(vf: &mut IgbVf, pf: &mut IgbPf, txq: &mut TxQueue, fx: Effects) {
    if fx.vf_reset {
        txq.reset();
        pf.vf_reset(0);
    }
    if let Some(msg) = fx.mailbox {
        let (reply, _err) = pf.handle(0, &msg);
        assert!(
            reply.len <= r::VMBMEM_WORDS,
            "reply longer than the mailbox"
        );
        let _ = vf.pf_reply(&reply.words[..reply.len]);
        let _ = pf.pool_filter(0);
        if reply.post_cts {
            let _ = vf.pf_post(r::MSG_PF_CONTROL | r::MSG_CTS);
        }
    }
}

fn ring(q: QueueRegs) -> RingRegs {
    q.ring()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let ops_len = usize::from(input.u16());
    let mut ops = Input::new(input.bytes(ops_len));
    let mem = guest_memory(input.rest());

    let mut pf = IgbPf::new(&igb_admins());
    let mut vf = IgbVf::new();
    vf.set_link(true);
    let _ = vf.pf_reset_done();
    let mut txq = TxQueue::new();
    let mut scratch = TxScratch::new();
    let counters = HwCounters::default();

    while !ops.is_empty() {
        let fx = match ops.u8() % 8 {
            0 => {
                let _ = vf.bar0_read(u64::from(ops.u16() & 0x3ffc), &counters);
                Effects::default()
            }
            1 => vf.bar0_write(u64::from(ops.u16() & 0x3ffc), ops.u32()),
            2 => {
                let _ = vf.bar0_read(ops.u64(), &counters);
                Effects::default()
            }
            3 => vf.bar0_write(ops.u64(), ops.u32()),
            4 => {
                // A whole mailbox message: the words, then REQ (with whatever else the input
                // sets in V2PMAILBOX).
                let n = usize::from(ops.u8()) % (r::VMBMEM_WORDS + 1);
                for i in 0..n {
                    let _ = vf.bar0_write(u64::from(r::VMBMEM) + 4 * i as u64, ops.u32());
                }
                vf.bar0_write(u64::from(r::V2PMAILBOX), u32::from(ops.u8()) | r::V2P_REQ)
            }
            5 => {
                let offset = u64::from(ops.u16() & 0x1ff);
                let n = usize::from(ops.u8() % 9);
                let data = ops.bytes(n);
                vf.config_write(offset, data);
                let mut back = [0u8; 8];
                vf.config_read(offset, &mut back[..data.len()]);
                Effects::default()
            }
            6 => match ops.u8() % 5 {
                0 => vf.pf_post(ops.u32()),
                1 => vf.mailbox_idle(),
                2 => vf.poll_irq_page(),
                3 => vf.raise(IrqSource::Rx(usize::from(ops.u8()))),
                _ => vf.raise(IrqSource::Tx(usize::from(ops.u8()))),
            },
            _ => {
                let q = usize::from(ops.u8());
                match ops.u8() % 4 {
                    0 => vf.device_reset(),
                    1 => vf.set_link(ops.bool()),
                    2 => {
                        // A dataplane pass over TX queue q.
                        let mut ring = ring(vf.txq(q));
                        let budget = usize::from(ops.u8());
                        let _ =
                            txq.process(&mut ring, &mem, &mut scratch, budget, &mut |_: &[u8]| {});
                        vf.set_tx_head(q, ring.head);
                    }
                    _ => {
                        // One frame delivered to RX queue q.
                        let regs = vf.rxq(q);
                        let mut ring = ring(regs);
                        let n = usize::from(ops.u16() % 2048);
                        let frame = ops.bytes(n);
                        let _ = rx_write(
                            &mut ring,
                            RxLayout::from_srrctl(regs.ctl),
                            &mem,
                            frame,
                            RxMeta::default(),
                        );
                        vf.set_rx_head(q, ring.head);
                    }
                }
                Effects::default()
            }
        };
        apply(&mut vf, &mut pf, &mut txq, fx);
    }
});
