//! virtchnl requests straight into the AVF PF model (`AvfPf::handle`) with any opcode and
//! message body, from any VF (including one that does not exist), with VF resets, link
//! events and the switch filter derived after each request as the agent publishes it.
//!
//! Input: ops; each is a control byte (bits 0–2: VF index, bit 7: reset the VF instead),
//! an opcode byte (< 64: that opcode; else a raw `u32` follows), a `u16` body length and the
//! body.
#![no_main]

use emu_nic_model::avf::pf::{AvfPf, VfStats};
use emu_nic_model::avf::state::VsiState;
use emu_sriov_fuzz::{avf_admins, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut pf = AvfPf::new(&avf_admins());
    let mut vsis = [VsiState::default(); 4];
    for (i, v) in vsis.iter_mut().enumerate() {
        v.num_pairs = [4, 2, 16, 4][i];
    }
    let stats = VfStats {
        rx_bytes: 1000,
        tx_bytes: 2000,
        ..VfStats::default()
    };
    let mut reply = Vec::new();
    while !input.is_empty() {
        let ctl = input.u8();
        let vf = usize::from(ctl & 0x7);
        let vsi_slot = vf.min(vsis.len() - 1);
        let vsi = &mut vsis[vsi_slot];
        if ctl & 0x80 != 0 {
            pf.vf_reset(vf, vsi);
            let _ = pf.link_event(vf, ctl & 0x40 != 0, 10_000);
            continue;
        }
        let op = match input.u8() {
            o if o < 64 => u32::from(o),
            _ => input.u32(),
        };
        let len = usize::from(input.u16() % 4608);
        let msg = input.bytes(len);
        let _ = pf.handle(vf, vsi, op, msg, &stats, &mut reply);
        let _ = pf.pool_filter(vf, vsi);
        let _ = pf.granted_caps(vf);
    }
});
