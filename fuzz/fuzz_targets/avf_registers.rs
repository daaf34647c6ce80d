//! The AVF VF's BAR0 and config space as a guest drives them; an ATQ doorbell runs the
//! AdminQ over guest memory from the input with the PF model answering, as the agent wires
//! it (`node-agent/agent/src/avf_device.rs`), and the queues virtchnl configured run too.
//!
//! Input: `u16` length of the op stream, the ops, then guest memory contents.
#![no_main]

use emu_nic_defs::avf as r;
use emu_nic_defs::avf_virtchnl::VIRTCHNL_OP_EVENT;
use emu_nic_model::avf::adminq::{post_arq, process_atq, AqScratch};
use emu_nic_model::avf::pf::{AvfPf, VfStats};
use emu_nic_model::avf::rings::{rx_write, AvfTxQueue, RxMeta, TxScratch};
use emu_nic_model::avf::vf::{AvfVf, Effects};
use emu_nic_model::mem::VecMemory;
use emu_nic_model::pci::PciFunction;
use emu_sriov_fuzz::{avf_admins, guest_memory, Input};
use libfuzzer_sys::fuzz_target;

/// `AvfVfDevice::run_adminq`: every request answered by the PF model, replies on the ARQ.
fn run_adminq(vf: &mut AvfVf, pf: &mut AvfPf, mem: &VecMemory, scratch: &mut AqScratch) {
    let (mut reset, mut link) = (false, false);
    let vsi = &mut vf.vsi;
    let stats = VfStats::default();
    let outcome = process_atq(&mut vf.aq, mem, scratch, &mut |op, msg, reply| {
        let h = pf.handle(0, vsi, op, msg, &stats, reply);
        reset |= h.reset_vf;
        link |= h.link_event_after;
        h.reply.then_some(h.status)
    });
    let mut posted = outcome.posted;
    if reset {
        vf.reset_begin();
        vf.reset_complete();
    } else if link {
        if let Some(ev) = pf.link_event(0, true, 10_000) {
            if post_arq(&mut vf.aq, mem, VIRTCHNL_OP_EVENT, 0, &ev).is_ok() {
                posted += 1;
            }
        }
    }
    if posted > 0 {
        let _ = vf.raise_adminq();
    }
    let _ = pf.pool_filter(0, &vf.vsi);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let ops_len = usize::from(input.u16());
    let mut ops = Input::new(input.bytes(ops_len));
    let mem = guest_memory(input.rest());

    let mut pf = AvfPf::new(&avf_admins());
    let mut vf = AvfVf::new(4);
    let mut aq = AqScratch::new();
    let mut txqs: Vec<AvfTxQueue> = (0..16).map(|_| AvfTxQueue::new()).collect();
    let mut tx_scratch = TxScratch::new();

    while !ops.is_empty() {
        let fx = match ops.u8() % 7 {
            0 => {
                let _ = vf.bar0_read(u64::from(ops.u16() & 0xfffc));
                Effects::default()
            }
            1 => vf.bar0_write(u64::from(ops.u16() & 0xfffc), ops.u32()),
            2 => {
                let _ = vf.bar0_read(ops.u64());
                Effects::default()
            }
            3 => vf.bar0_write(ops.u64(), ops.u32()),
            4 => {
                let offset = u64::from(ops.u16() & 0x1ff);
                let n = usize::from(ops.u8() % 9);
                let data = ops.bytes(n);
                vf.config_write(offset, data);
                let mut back = [0u8; 8];
                vf.config_read(offset, &mut back[..data.len()]);
                Effects::default()
            }
            5 => match ops.u8() % 7 {
                0 => vf.raise_vector(usize::from(ops.u8())),
                1 => vf.raise_rx(usize::from(ops.u8())),
                2 => vf.raise_tx(usize::from(ops.u8())),
                3 => vf.raise_adminq(),
                4 => {
                    vf.reset_begin();
                    vf.reset_complete();
                    pf.vf_reset(0, &mut vf.vsi);
                    Effects::default()
                }
                5 => {
                    vf.device_reset();
                    Effects::default()
                }
                _ => {
                    let _ = (vf.rstat(), vf.armed(usize::from(ops.u8())));
                    let _ = vf.itrn(usize::from(ops.u8()), usize::from(ops.u8()));
                    Effects::default()
                }
            },
            _ => {
                // A dataplane pass: TX queue q, then one frame to RX queue q.
                let q = usize::from(ops.u8()) % 16;
                let budget = usize::from(ops.u8());
                if let (Some(txq), Some(cfg)) = (txqs.get_mut(q), vf.vsi.tx.get_mut(q)) {
                    let _ = txq.process(cfg, &mem, &mut tx_scratch, budget, &mut |_| {});
                }
                let n = usize::from(ops.u16() % 2048);
                let frame = ops.bytes(n);
                if let Some(cfg) = vf.vsi.rx.get_mut(q) {
                    let _ = rx_write(cfg, &mem, frame, RxMeta::default());
                }
                Effects::default()
            }
        };
        if fx.atq_doorbell {
            run_adminq(&mut vf, &mut pf, &mem, &mut aq);
        }
    }
    // The ATQ registers are at their documented offsets.
    let _ = r::VF_ATQT1;
});
