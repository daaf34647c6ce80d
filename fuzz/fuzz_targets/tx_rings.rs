//! igbvf and AVF TX descriptor rings over arbitrary guest memory: any ring registers (base,
//! length 0 or not a multiple of a block, head/tail past the ring), any descriptors (offload
//! contexts, TSO with tiny MSS, header lengths at the limits, chains longer than a frame).
//! Emitted frames are checked against the documented size limits.
//!
//! Input: model byte, ring registers, budget, then guest memory contents (the ring usually
//! lies at its start).
#![no_main]

use emu_nic_model::avf::rings::AvfTxQueue;
use emu_nic_model::avf::state::TxQueueCfg;
use emu_nic_model::igbvf::rings::{TxFrames, TxQueue, TxScratch, MAX_TX_FRAME};
use emu_sriov_fuzz::{guest_memory, Input, Ring};
use libfuzzer_sys::fuzz_target;

/// Largest frame a TX path may emit: MAX_TX_FRAME plus an inserted VLAN tag.
const MAX_EMITTED: usize = MAX_TX_FRAME + 4;

fn check(frame: &[u8]) {
    assert!(
        frame.len() <= MAX_EMITTED,
        "emitted a {}-byte frame",
        frame.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.u8();
    let r = Ring::read(&mut input);
    let budget = usize::from(input.u8());
    let mem = guest_memory(input.rest());
    let mut scratch = TxScratch::new();

    if mode & 1 == 0 {
        let mut ring = r.igbvf();
        let mut q = TxQueue::new();
        // Twice: the second call continues where the budget stopped the first.
        for _ in 0..2 {
            if mode & 2 == 0 {
                let _ = q.process(&mut ring, &mem, &mut scratch, budget, &mut |f: &[u8]| {
                    check(f)
                });
            } else {
                let mut frames = TxFrames::with_capacity(4, 4096);
                let _ = q.process(&mut ring, &mem, &mut scratch, budget, &mut frames);
                let mut start = 0;
                for &end in frames.ends() {
                    check(&frames.bytes()[start..end]);
                    start = end;
                }
            }
        }
    } else {
        let mut cfg = TxQueueCfg {
            ring_base: r.base,
            ring_len: r.len,
            enabled: mode & 2 == 0,
            head: r.head,
            tail: r.tail,
        };
        let mut q = AvfTxQueue::new();
        for _ in 0..2 {
            let _ = q.process(&mut cfg, &mem, &mut scratch, budget, &mut |f| check(f));
        }
    }
});
