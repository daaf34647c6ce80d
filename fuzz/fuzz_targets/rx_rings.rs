//! igbvf and AVF RX delivery over arbitrary guest memory: any ring registers and buffer
//! layout (SRRCTL: buffer sizes, header split; AVF buffer and max packet sizes), any
//! descriptors, frames from empty to past the largest supported, with VLAN/RSS metadata,
//! through `rx_write` and the igbvf burst path (`RxBurst`).
//!
//! Input: mode byte, ring registers, layout, frames (count, then length + bytes each), then
//! guest memory contents.
#![no_main]

use emu_nic_model::avf::rings as avf;
use emu_nic_model::avf::state::RxQueueCfg;
use emu_nic_model::igbvf::rings::{rx_write, RxBurst, RxLayout, RxMeta};
use emu_sriov_fuzz::{guest_memory, Input, Ring};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.u8();
    let r = Ring::read(&mut input);
    let layout = input.u32();
    let max_pkt = input.u32();
    let vlan = input.bool().then(|| input.u16());
    let rss_hash = input.bool().then(|| input.u32());
    let ptype = input.u8();
    let mut frames = Vec::new();
    for _ in 0..input.u8() % 8 {
        // Up to 17 KiB: past MAX_RX_FRAME (16 KiB); missing bytes are zero.
        let n = usize::from(input.u16()) % (17 * 1024);
        let mut f = input.bytes(n).to_vec();
        f.resize(n, 0);
        frames.push(f);
    }
    let mem = guest_memory(input.rest());

    if mode & 1 == 0 {
        let mut ring = r.igbvf();
        let layout = RxLayout::from_srrctl(layout);
        let meta = RxMeta { vlan, rss_hash };
        match mode >> 1 & 3 {
            0 => {
                for f in &frames {
                    let _ = rx_write(&mut ring, layout, &mem, f, meta);
                }
            }
            1 => {
                let mut burst = RxBurst::new(&mut ring, layout, &mem, frames.len());
                for f in &frames {
                    let _ = burst.push(f, meta);
                }
                let _ = burst.finish();
            }
            _ => {
                let mut burst = RxBurst::new(&mut ring, layout, &mem, frames.len());
                let mut it = frames.iter().map(Vec::as_slice).peekable();
                let _ = burst.push_plain(&mut it);
                for f in it {
                    let _ = burst.push(f, RxMeta::default());
                }
                let _ = burst.finish();
            }
        }
    } else {
        let mut q = RxQueueCfg {
            ring_base: r.base,
            ring_len: r.len,
            buf_size: layout,
            max_pkt_size: max_pkt,
            enabled: mode & 2 == 0,
            head: r.head,
            tail: r.tail,
        };
        let meta = avf::RxMeta {
            vlan,
            rss_hash,
            ptype,
        };
        for f in &frames {
            let _ = avf::rx_write(&mut q, &mem, f, meta);
        }
    }
});
