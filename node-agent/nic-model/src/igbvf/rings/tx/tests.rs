use super::*;
use crate::mem::VecMemory;
use crate::ring::offload::{self, L4Type, TxContext, MIN_TSO_MSS};
use crate::ring::testutil::*;
use crate::ring::MAX_TX_PACKET;

const DATA: u32 = d::DTYP_DATA | d::DCMD_DEXT | d::DCMD_IFCS;
const LAST: u32 = d::DCMD_EOP | d::DCMD_RS;

fn ring(count: u32, head: u32, tail: u32) -> RingRegs {
    RingRegs {
        bal: RING_BASE as u32,
        bah: (RING_BASE >> 32) as u32,
        len: count * 16,
        head,
        tail,
    }
}

fn run(m: &VecMemory, r: &mut RingRegs, q: &mut TxQueue) -> (TxOutcome, Vec<Vec<u8>>) {
    let mut scratch = TxScratch::new();
    let mut frames = Vec::new();
    let out = q.process(r, m, &mut scratch, 64, &mut |f: &[u8]| {
        frames.push(f.to_vec())
    });
    (out, frames)
}

fn ring_range(count: u32) -> (u64, usize) {
    (RING_BASE, count as usize * 16)
}

/// Puts `frame` in guest memory at BUF_BASE and queues it as data descriptors of at most
/// `chunk` bytes starting at `idx`; returns the next free index.
fn queue(m: &VecMemory, idx: u32, frame: &[u8], chunk: usize, cmd: u32, olinfo: u32) -> u32 {
    m.write(BUF_BASE, frame).unwrap();
    let n = frame.len().div_ceil(chunk);
    for i in 0..n {
        let len = chunk.min(frame.len() - i * chunk) as u32;
        let last = if i + 1 == n { LAST } else { 0 };
        let addr = BUF_BASE + (i * chunk) as u64;
        write_tx_data(m, idx + i as u32, addr, DATA | cmd | last | len, olinfo);
    }
    idx + n as u32
}

fn dd(m: &VecMemory, idx: u32) -> bool {
    u32::from_le_bytes(read_desc(m, idx)[12..16].try_into().unwrap()) & d::STAT_DD != 0
}

#[test]
fn single_descriptor_frame_is_emitted_and_dd_written() {
    let m = canary_mem();
    let frame = ipv4_frame(17, 18);
    let tail = queue(&m, 0, &frame, 4096, 0, (frame.len() as u32) << 14);
    let before = snapshot(&m);
    let mut r = ring(8, 0, tail);
    let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
    assert_eq!(frames, vec![frame.clone()]);
    assert_eq!(r.head, 1);
    assert!(dd(&m, 0));
    assert_eq!(out.write_backs, 1);
    assert_eq!(out.stats.packets, 1);
    assert_eq!(out.stats.bytes, frame.len() as u64);
    assert_eq!(out.stats.descriptors, 1);
    assert_only_changed(&m, &before, &[(RING_BASE + 12, 4)]);
    // Nothing more to do.
    let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
    assert!(frames.is_empty());
    assert_eq!(out, TxOutcome::default());
}

#[test]
fn multi_descriptor_frame_wraps_the_ring() {
    let m = canary_mem();
    let frame = ipv4_frame(6, 3000);
    // Three descriptors starting at index 6 of an 8-entry ring: 6, 7, 0.
    m.write(BUF_BASE, &frame).unwrap();
    let parts = [(0usize, 100usize), (100, 2000), (2100, frame.len() - 2100)];
    for (i, (off, len)) in parts.iter().enumerate() {
        let idx = (6 + i as u32) % 8;
        let last = if i == 2 { LAST } else { 0 };
        write_tx_data(
            &m,
            idx,
            BUF_BASE + *off as u64,
            DATA | last | *len as u32,
            0,
        );
    }
    let mut r = ring(8, 6, 1);
    let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
    assert_eq!(frames, vec![frame]);
    assert_eq!(r.head, 1);
    assert_eq!(out.stats.descriptors, 3);
    assert_eq!(out.write_backs, 1);
    assert!(dd(&m, 0) && !dd(&m, 6) && !dd(&m, 7));
}

#[test]
fn incomplete_packet_waits_for_eop() {
    let m = canary_mem();
    let frame = ipv4_frame(17, 100);
    let tail = queue(&m, 0, &frame, 64, 0, 0);
    assert_eq!(tail, 3);
    let mut q = TxQueue::new();
    let mut r = ring(8, 0, 2);
    let before = snapshot(&m);
    let (out, frames) = run(&m, &mut r, &mut q);
    assert!(frames.is_empty());
    assert_eq!((r.head, out), (0, TxOutcome::default()));
    assert_only_changed(&m, &before, &[]);
    r.tail = 3;
    let (_, frames) = run(&m, &mut r, &mut q);
    assert_eq!(frames, vec![frame]);
    assert_eq!(r.head, 3);
}

#[test]
fn checksum_offloads_produce_valid_checksums() {
    for (proto, v6) in [(6u8, false), (17, false), (6, true), (132, false)] {
        let m = canary_mem();
        let mut f = if v6 {
            ipv6_tcp_frame(999)
        } else {
            ipv4_frame(proto, 999)
        };
        let (iplen, l4, ipv4) = if v6 {
            (40, 54, 0)
        } else {
            (20, 34, d::TUCMD_IPV4)
        };
        let l4t = match proto {
            6 => d::TUCMD_L4T_TCP,
            17 => 0,
            _ => d::TUCMD_L4T_SCTP,
        };
        // CHECKSUM_PARTIAL: Linux seeds TCP/UDP with the pseudo-header sum.
        let len = f.len() - l4;
        match (proto, v6) {
            (6, false) => {
                let p = pseudo_v4(&f, 6, Some(len));
                seed_l4(&mut f, l4 + 16, p)
            }
            (17, _) => {
                let p = pseudo_v4(&f, 17, Some(len));
                seed_l4(&mut f, l4 + 6, p)
            }
            (6, true) => {
                let p = pseudo_v6(&f, 6, Some(len));
                seed_l4(&mut f, l4 + 16, p)
            }
            _ => {}
        }
        write_tx_ctx(&m, 0, 14 << 9 | iplen, ipv4 | l4t, 0);
        let olinfo = d::POPTS_TXSM | if v6 { 0 } else { d::POPTS_IXSM };
        let tail = queue(&m, 1, &f, 512, 0, olinfo);
        let mut r = ring(8, 0, tail);
        let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
        assert_eq!(out.stats.packets, 1, "proto {proto} v6 {v6}");
        assert_eq!(out.stats.descriptors, u64::from(tail));
        let g = &frames[0];
        assert_eq!(g.len(), f.len());
        match (proto, v6) {
            (132, _) => {
                let mut z = g[l4..].to_vec();
                z[8..12].fill(0);
                let crc = offload::crc32c(&z);
                assert_eq!(g[l4 + 8..l4 + 12], crc.to_le_bytes());
            }
            (_, true) => assert!(l4_v6_ok(g, 14, l4, proto)),
            _ => {
                assert!(ipv4_header_ok(g, 14));
                assert!(l4_v4_ok(g, 14, l4, proto));
            }
        }
    }
}

fn tso_frame_v4(payload: usize) -> Vec<u8> {
    // As igbvf_tso leaves it: tot_len 0, IP checksum 0, TCP seeded without length.
    let mut f = ipv4_frame(6, payload);
    f[16..18].fill(0);
    let p = pseudo_v4(&f, 6, None);
    seed_l4(&mut f, 34 + 16, p);
    f
}

#[test]
fn tso_ipv4_segments_have_valid_headers() {
    let m = canary_mem();
    let payload = 20_000;
    let f = tso_frame_v4(payload);
    write_tx_ctx(
        &m,
        0,
        14 << 9 | 20,
        d::TUCMD_IPV4 | d::TUCMD_L4T_TCP,
        1448 << 16 | 32 << 8,
    );
    let olinfo = d::POPTS_TXSM | d::POPTS_IXSM | (payload as u32) << 14;
    let tail = queue(&m, 1, &f, 4096, d::DCMD_TSE, olinfo);
    let mut r = ring(16, 0, tail);
    let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
    let n = payload.div_ceil(1448);
    assert_eq!(frames.len(), n);
    assert_eq!(out.stats.tso_segments, n as u64);
    assert_eq!(out.stats.packets, n as u64);
    let mut data = Vec::new();
    for (i, g) in frames.iter().enumerate() {
        let seg_payload = if i + 1 == n {
            payload - 1448 * (n - 1)
        } else {
            1448
        };
        assert_eq!(g.len(), 66 + seg_payload);
        assert_eq!(u16::from_be_bytes([g[16], g[17]]) as usize, g.len() - 14);
        assert_eq!(u16::from_be_bytes([g[18], g[19]]), 0x1234 + i as u16);
        assert!(ipv4_header_ok(g, 14), "segment {i}");
        assert!(l4_v4_ok(g, 14, 34, 6), "segment {i}");
        let seq = u32::from_be_bytes(g[38..42].try_into().unwrap());
        assert_eq!(seq, 0x1000_0000 + (i * 1448) as u32);
        let flags = g[47];
        assert_eq!(flags & 0x01 != 0, i + 1 == n, "FIN only last");
        assert_eq!(flags & 0x08 != 0, i + 1 == n, "PSH only last");
        assert_eq!(flags & 0x80 != 0, i == 0, "CWR only first");
        assert_eq!(flags & 0x10, 0x10, "ACK kept");
        data.extend_from_slice(&g[66..]);
    }
    assert_eq!(data, f[66..]);
    assert_eq!(r.head, tail);
}

#[test]
fn tso_ipv6_with_vlan_insertion() {
    let m = canary_mem();
    let payload = 5000;
    let mut f = ipv6_tcp_frame(payload);
    f[18..20].fill(0);
    let p = pseudo_v6(&f, 6, None);
    seed_l4(&mut f, 54 + 16, p);
    write_tx_ctx(
        &m,
        0,
        0x0abc << 16 | 14 << 9 | 40,
        d::TUCMD_L4T_TCP,
        1000 << 16 | 32 << 8,
    );
    let cmd = d::DCMD_TSE | d::DCMD_VLE;
    let tail = queue(&m, 1, &f, 2048, cmd, d::POPTS_TXSM);
    let mut r = ring(8, 0, tail);
    let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
    assert_eq!(frames.len(), 5);
    for g in &frames {
        assert_eq!(g[12..16], [0x81, 0x00, 0x0a, 0xbc]);
        let untagged: Vec<u8> = g[..12].iter().chain(&g[16..]).copied().collect();
        assert_eq!(untagged.len(), 86 + 1000);
        assert_eq!(u16::from_be_bytes([untagged[18], untagged[19]]), 32 + 1000);
        assert!(l4_v6_ok(&untagged, 14, 54, 6));
    }
    assert_eq!(out.stats.bytes, 5 * (4 + 86 + 1000));
}

#[test]
fn vlan_insertion_and_context_slot_one() {
    let m = canary_mem();
    let f = ipv4_frame(17, 10);
    // Slot 0 says VLAN 1, slot 1 says VLAN 0x0123; the packet asks for slot 1.
    write_tx_ctx(&m, 0, 1 << 16 | 14 << 9 | 20, 0, 0);
    write_tx_ctx(&m, 1, 0x0123 << 16 | 14 << 9 | 20, 0, 1 << 4);
    let tail = queue(&m, 2, &f, 4096, d::DCMD_VLE, 1 << 4);
    let mut r = ring(8, 0, tail);
    let (_, frames) = run(&m, &mut r, &mut TxQueue::new());
    let g = &frames[0];
    assert_eq!(g.len(), f.len() + 4);
    assert_eq!(g[..12], f[..12]);
    assert_eq!(g[12..16], [0x81, 0x00, 0x01, 0x23]);
    assert_eq!(g[16..], f[12..]);
}

#[test]
fn bad_buffers_drop_but_complete() {
    let cases: [(u64, u32); 4] = [
        (0xffff_ffff_ffff_f000, 64),              // unmapped
        (u64::MAX - 10, 64),                      // wraps
        (BUF_BASE, 0),                            // zero length
        (MEM_BASE + MEM_SIZE as u64 - 8, 0xffff), // runs off the end
    ];
    for (addr, len) in cases {
        let m = canary_mem();
        write_tx_data(&m, 0, addr, DATA | LAST | len, 0);
        // A good packet behind it still goes out.
        let f = ipv4_frame(17, 10);
        let tail = queue(&m, 1, &f, 4096, 0, 0);
        let before = snapshot(&m);
        let mut r = ring(8, 0, tail);
        let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
        assert_eq!(frames, vec![f], "{addr:#x}/{len}");
        assert_eq!(out.stats.dropped_packets, 1);
        assert_eq!(out.stats.bad_descriptors, 1);
        assert_eq!(out.write_backs, 2);
        assert!(dd(&m, 0) && dd(&m, 1));
        assert_eq!(r.head, tail);
        assert_only_changed(&m, &before, &[ring_range(8)]);
    }
}

#[test]
fn oversized_packet_is_dropped() {
    let m = canary_mem();
    // Two 0xffff-byte buffers: 128 KiB, over MAX_TX_PACKET.
    write_tx_data(&m, 0, BUF_BASE, DATA | 0xffff, 0);
    write_tx_data(&m, 1, BUF_BASE, DATA | LAST | 0xffff, 0);
    let mut r = ring(8, 0, 2);
    let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
    assert!(frames.is_empty());
    assert_eq!(out.stats.dropped_packets, 1);
    assert_eq!(r.head, 2);
    // A single 0xffff buffer without TSO exceeds MAX_TX_FRAME.
    write_tx_data(&m, 2, BUF_BASE, DATA | LAST | 0xffff, 0);
    r.tail = 3;
    let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
    assert!(frames.is_empty());
    assert_eq!(out.stats.dropped_packets, 1);
}

#[test]
fn invalid_ring_registers_do_nothing() {
    let m = canary_mem();
    let f = ipv4_frame(17, 10);
    queue(&m, 0, &f, 4096, 0, 0);
    let before = snapshot(&m);
    let bad = [
        ring(8, 0, 8),
        ring(8, 9, 1),
        ring(8, u32::MAX, 1),
        RingRegs {
            len: 0,
            ..ring(8, 0, 1)
        },
        RingRegs {
            len: 100,
            ..ring(8, 0, 1)
        },
        RingRegs {
            len: u32::MAX,
            ..ring(8, 0, 1)
        },
        RingRegs {
            len: 0xffff_ff80,
            ..ring(8, 0, 1)
        },
    ];
    for mut r in bad {
        let orig = r;
        let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
        assert!(frames.is_empty());
        assert_eq!(out.stats.bad_ring, 1, "{orig:?}");
        assert_eq!(r, orig);
    }
    // Ring base outside memory, or at the very top of the address space.
    for (bal, bah) in [(0, 0xffff_0000), (u32::MAX, u32::MAX)] {
        let mut r = RingRegs {
            bal,
            bah,
            len: 128,
            head: 0,
            tail: 1,
        };
        let (out, _) = run(&m, &mut r, &mut TxQueue::new());
        assert_eq!(out.stats.bad_ring, 1);
        assert_eq!(r.head, 0);
    }
    assert_only_changed(&m, &before, &[]);
}

#[test]
fn ring_full_of_non_eop_descriptors_is_dropped() {
    let m = canary_mem();
    for i in 0..8 {
        write_tx_data(&m, i, BUF_BASE, DATA | d::DCMD_RS | 64, 0);
    }
    let before = snapshot(&m);
    // Full: 7 descriptors owned, none with EOP.
    let mut r = ring(8, 3, 2);
    let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
    assert!(frames.is_empty());
    assert_eq!(out.stats.dropped_packets, 1);
    assert_eq!(out.stats.descriptors, 7);
    assert_eq!(out.write_backs, 7);
    assert_eq!(r.head, 2);
    assert_only_changed(&m, &before, &[ring_range(8)]);
    // Not full: waits.
    let mut r = ring(8, 0, 5);
    let (out, _) = run(&m, &mut r, &mut TxQueue::new());
    assert_eq!((out, r.head), (TxOutcome::default(), 0));
}

#[test]
fn malformed_tso_requests_are_dropped() {
    let f = tso_frame_v4(3000);
    let ctxs = [
        (14 << 9 | 20, 32 << 8, 3000),                // MSS 0
        (14 << 9 | 20, 1 << 16 | 32 << 8, 3000),      // MSS 1: 3000 frames of work
        (14 << 9 | 20, 63 << 16 | 32 << 8, 3000),     // MSS just below MIN_TSO_MSS
        (127 << 9 | 511, 1448 << 16 | 255 << 8, 500), // headers longer than the packet
        (14 << 9 | 20, 1448 << 16 | 32 << 8, 0),      // headers are the whole packet
        (14 << 9 | 20, 1448 << 16 | 4 << 8, 3000),    // L4LEN below a TCP header
        (2 << 9 | 20, 1448 << 16 | 32 << 8, 3000),    // MACLEN below Ethernet
        (14 << 9 | 20, 0xffff << 16 | 32 << 8, 3000), // segment over MAX_TX_FRAME
    ];
    for (macip, mss, payload) in ctxs {
        let f = tso_frame_v4(payload);
        let m = canary_mem();
        write_tx_ctx(&m, 0, macip, d::TUCMD_IPV4 | d::TUCMD_L4T_TCP, mss);
        let tail = queue(&m, 1, &f, 4096, d::DCMD_TSE, d::POPTS_TXSM | d::POPTS_IXSM);
        let before = snapshot(&m);
        let mut r = ring(8, 0, tail);
        let (out, frames) = run(&m, &mut r, &mut TxQueue::new());
        assert!(frames.is_empty(), "{macip:#x} {mss:#x}");
        assert_eq!(out.stats.dropped_packets, 1);
        assert_eq!(out.stats.bad_descriptors, 1);
        assert_eq!(r.head, tail);
        assert_only_changed(&m, &before, &[ring_range(8)]);
    }
    // UDP TSO is not an 82576 feature.
    let m = canary_mem();
    write_tx_ctx(&m, 0, 14 << 9 | 20, d::TUCMD_IPV4, 1448 << 16 | 8 << 8);
    let tail = queue(&m, 1, &f, 4096, d::DCMD_TSE, d::POPTS_TXSM);
    let (out, _) = run(&m, &mut ring(8, 0, tail), &mut TxQueue::new());
    assert_eq!(out.stats.dropped_packets, 1);
}

#[test]
fn budget_limits_packets() {
    let m = canary_mem();
    let f = ipv4_frame(17, 10);
    m.write(BUF_BASE, &f).unwrap();
    for i in 0..5 {
        write_tx_data(&m, i, BUF_BASE, DATA | LAST | f.len() as u32, 0);
    }
    let mut r = ring(8, 0, 5);
    let mut scratch = TxScratch::new();
    let mut n = 0;
    let out = TxQueue::new().process(&mut r, &m, &mut scratch, 2, &mut |_: &[u8]| n += 1);
    assert_eq!((n, r.head, out.stats.packets), (2, 2, 2));
}

/// A guest cannot multiply work past the pass budget with TSO: the first packet that
/// segments into at least `budget` frames ends the pass, and the largest packet at the
/// smallest MSS is about a thousand frames (MAX_TX_PACKET / MIN_TSO_MSS).
#[test]
fn tso_frames_count_against_the_budget() {
    let m = canary_mem();
    let payload = MAX_TX_PACKET - 66;
    let f = tso_frame_v4(payload);
    write_tx_ctx(
        &m,
        0,
        14 << 9 | 20,
        d::TUCMD_IPV4 | d::TUCMD_L4T_TCP,
        (MIN_TSO_MSS as u32) << 16 | 32 << 8,
    );
    let olinfo = d::POPTS_TXSM | d::POPTS_IXSM | (payload as u32) << 14;
    // The same 64 KiB packet queued three times (descriptors only; same buffers).
    let mut tail = 1;
    for _ in 0..3 {
        tail = queue(&m, tail, &f, 4096, d::DCMD_TSE, olinfo);
    }
    let mut r = ring(64, 0, tail);
    let mut q = TxQueue::new();
    let (out, frames) = run(&m, &mut r, &mut q);
    let per_packet = payload.div_ceil(MIN_TSO_MSS);
    assert!(per_packet <= MAX_TX_PACKET / MIN_TSO_MSS, "{per_packet}");
    // Budget 64: the first packet alone exceeds it, so the pass stops after one packet.
    assert_eq!(frames.len(), per_packet);
    assert_eq!(out.stats.tso_segments, per_packet as u64);
    assert_ne!(r.head, tail, "the pass should have stopped early");
    let (_, more) = run(&m, &mut r, &mut q);
    assert_eq!(
        more.len(),
        per_packet,
        "the next pass takes the next packet"
    );
}

#[test]
fn random_descriptors_never_escape() {
    let mut rng = XorShift(0x1234_5678_9abc_def0);
    let mut scratch = TxScratch::new();
    let mut q = TxQueue::new();
    let m = canary_mem();
    for iter in 0..1500 {
        let count = 8 * (1 + (rng.next() % 4) as u32);
        for i in 0..count {
            let addr = match rng.next() % 4 {
                0 => rng.next(),
                1 => BUF_BASE + rng.next() % 0x1_0000,
                2 => MEM_BASE + MEM_SIZE as u64 - rng.next() % 0x100,
                _ => BUF_BASE,
            };
            let mut cmd = rng.next() as u32;
            if rng.next().is_multiple_of(2) {
                cmd = (cmd & 0xcf0f_ffff) | d::DCMD_DEXT | d::DTYP_DATA;
            }
            if rng.next().is_multiple_of(3) {
                cmd = (cmd & !0xffff) | (rng.next() % 2000) as u32;
            }
            let d = RING_BASE + u64::from(i) * 16;
            m.write_u64(d, addr).unwrap();
            m.write_u32(d + 8, cmd).unwrap();
            m.write_u32(d + 12, rng.next() as u32).unwrap();
        }
        let before = snapshot(&m);
        let mut r = RingRegs {
            bal: RING_BASE as u32,
            bah: 0,
            len: if iter % 50 == 0 {
                rng.next() as u32
            } else {
                count * 16
            },
            head: (rng.next() % u64::from(count + 1)) as u32,
            tail: (rng.next() % u64::from(count + 1)) as u32,
        };
        let allowed = if r.is_valid() { r.len as usize } else { 0 };
        let budget = (rng.next() % 70) as usize;
        let out = q.process(&mut r, &m, &mut scratch, budget, &mut |f: &[u8]| {
            assert!(f.len() >= 14 && f.len() <= MAX_TX_FRAME + 4);
        });
        assert!(out.stats.packets <= (budget as u64) * 64);
        if r.is_valid() {
            assert!(r.head < r.count());
        }
        assert_only_changed(&m, &before, &[(RING_BASE, allowed)]);
    }
}

#[test]
fn simple_packet_path_matches_the_general_walk() {
    // The same ring processed with and without the one-step path for simple packets: the
    // frames, the outcome, the registers and every byte of memory must agree, for rings mixing
    // simple packets with multi-descriptor, offloaded, context, zero-length, runt, oversize,
    // unmapped and non-EOP descriptors, random budgets, and rings that refuse write-backs.
    let mut rng = XorShift(0x7a5c_0ffe_e000_0001);
    for round in 0..300 {
        let count = 8 * (1 + (rng.next() % 16) as u32);
        let base = canary_mem();
        for i in 0..count {
            let addr = match rng.next() % 8 {
                0 => 0xdead_0000_0000,
                1 => MEM_BASE + MEM_SIZE as u64 - rng.next() % 0x80,
                _ => BUF_BASE + (rng.next() % 0x1_0000),
            };
            let len = match rng.next() % 8 {
                0 => 0,
                1 => (rng.next() % 14) as u32,
                2 => (MAX_TX_FRAME as u32) + (rng.next() % 4) as u32 - 1,
                _ => 14 + (rng.next() % 1600) as u32,
            };
            let mut cmd = DATA | len;
            match rng.next() % 10 {
                0 => cmd &= !d::DCMD_EOP,
                1 => cmd |= d::DCMD_VLE,
                2 => cmd = (cmd & !d::DTYP_MASK) | d::DTYP_CTXT,
                3 => cmd &= !d::DCMD_DEXT,
                _ => cmd |= d::DCMD_EOP,
            }
            if rng.next().is_multiple_of(2) {
                cmd |= d::DCMD_RS;
            }
            let olinfo = if rng.next().is_multiple_of(6) {
                d::POPTS_IXSM
            } else {
                (rng.next() as u32) & 0xffff_c000
            };
            write_tx_data(&base, i, addr, cmd, olinfo);
        }
        let r = ring(
            count,
            (rng.next() % u64::from(count)) as u32,
            (rng.next() % u64::from(count)) as u32,
        );
        let budget = (rng.next() % 80) as usize;
        let read_only = round % 9 == 4;
        let run = |fast: bool| {
            let m = VecMemory::new(MEM_BASE, MEM_SIZE);
            m.write(MEM_BASE, &snapshot(&base)).unwrap();
            let (mut r, mut q, mut scratch) = (r, TxQueue::new(), TxScratch::new());
            let mut frames = Vec::new();
            let mut emit = |f: &[u8]| frames.push(f.to_vec());
            let out = if read_only {
                let v = ReadOnlyRing(&m);
                if fast {
                    q.process_with::<true>(&mut r, &v, &mut scratch, budget, &mut emit)
                } else {
                    q.process_with::<false>(&mut r, &v, &mut scratch, budget, &mut emit)
                }
            } else if fast {
                q.process_with::<true>(&mut r, &m, &mut scratch, budget, &mut emit)
            } else {
                q.process_with::<false>(&mut r, &m, &mut scratch, budget, &mut emit)
            };
            (out, frames, r, snapshot(&m))
        };
        let (fast, general) = (run(true), run(false));
        assert_eq!(fast.0, general.0, "round {round}: outcome");
        assert_eq!(fast.1, general.1, "round {round}: frames");
        assert_eq!(fast.2, general.2, "round {round}: registers");
        assert!(fast.3 == general.3, "round {round}: memory differs");
    }
}

#[test]
fn context_decodes_linux_values() {
    // MACLEN 14, IPLEN 20, VLAN 0x0123; IPv4 + TCP; MSS 1448, L4LEN 32.
    let c = TxContext::decode(
        0x0123_0000 | 14 << 9 | 20,
        0x2020_0c00,
        1448 << 16 | 32 << 8,
    );
    assert_eq!(c.vlan, 0x0123);
    assert_eq!((c.maclen, c.iplen, c.l4len, c.mss), (14, 20, 32, 1448));
    assert!(c.ipv4);
    assert_eq!(c.l4, L4Type::Tcp);
    let c = TxContext::decode(u32::MAX, u32::MAX, u32::MAX);
    assert_eq!((c.maclen, c.iplen, c.l4len, c.mss), (127, 511, 255, 0xffff));
    assert_eq!(c.l4, L4Type::Reserved);
}
