//! igb mailbox messages straight into the PF model's handler (`IgbPf::handle`), from any VF
//! (including one that does not exist), with VF resets in between; after each message the
//! pool's switch filter is derived as the agent would publish it.
//!
//! Input: ops; each is a control byte (bits 0–2: VF index, bit 7: reset the VF instead),
//! a word count and the words (missing words are 0).
#![no_main]

use emu_nic_defs::igbvf as r;
use emu_nic_model::igb_pf::IgbPf;
use emu_sriov_fuzz::{igb_admins, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut pf = IgbPf::new(&igb_admins());
    while !input.is_empty() {
        let ctl = input.u8();
        let vf = usize::from(ctl & 0x7);
        if ctl & 0x80 != 0 {
            pf.vf_reset(vf);
            continue;
        }
        let mut msg = [0u32; r::VMBMEM_WORDS];
        let n = usize::from(input.u8()) % (r::VMBMEM_WORDS + 1);
        for w in msg.iter_mut().take(n) {
            *w = input.u32();
        }
        let (reply, _err) = pf.handle(vf, &msg);
        assert!(reply.len >= 1 && reply.len <= r::VMBMEM_WORDS);
        if let Some(pool) = pf.pool(vf) {
            assert!(pool.extra_macs.len() <= emu_nic_model::igb_pf::MAX_EXTRA_MACS);
            assert!(pool.mc_hashes.len() <= r::MAX_MC_HASHES);
        }
        let _ = pf.pool_filter(vf);
    }
});
