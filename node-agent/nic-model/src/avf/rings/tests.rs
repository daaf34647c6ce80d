use super::*;
use crate::avf::rss;
use crate::avf::state::{RssCfg, RxQueueCfg, TxQueueCfg};
use crate::mem::{GuestMemory, VecMemory};
use crate::ring::testutil::*;
use emu_nic_defs::avf::{pctype, ptype, rx as rd, tx as td};

const RING_LEN: u32 = 64;

fn txq() -> TxQueueCfg {
    TxQueueCfg {
        ring_base: RING_BASE,
        ring_len: RING_LEN,
        enabled: true,
        head: 0,
        tail: 0,
    }
}

fn rxq(buf_size: u32) -> RxQueueCfg {
    RxQueueCfg {
        ring_base: RING_BASE,
        ring_len: RING_LEN,
        buf_size,
        max_pkt_size: 9728,
        enabled: true,
        head: 0,
        tail: RING_LEN - 1,
    }
}

fn tx_data(m: &VecMemory, idx: u32, addr: u64, size: usize, cmd: u64, offset: u64, tag: u16) {
    let d = RING_BASE + u64::from(idx) * 16;
    let qw1 = td::DTYPE_DATA
        | cmd << td::CMD_SHIFT
        | offset << td::OFFSET_SHIFT
        | (size as u64) << td::BUF_SZ_SHIFT
        | u64::from(tag) << td::L2TAG1_SHIFT;
    m.write_u64(d, addr).unwrap();
    m.write_u64(d + 8, qw1).unwrap();
}

fn tx_ctx(m: &VecMemory, idx: u32, tso_len: usize, mss: usize) {
    let d = RING_BASE + u64::from(idx) * 16;
    let qw1 = td::DTYPE_CONTEXT
        | td::CTX_CMD_TSO << td::CTX_CMD_SHIFT
        | (tso_len as u64) << td::CTX_TSO_LEN_SHIFT
        | (mss as u64) << td::CTX_MSS_SHIFT;
    m.write_u64(d, 0).unwrap();
    m.write_u64(d + 8, qw1).unwrap();
}

fn qw1(m: &VecMemory, idx: u32, desc_len: u64) -> u64 {
    m.read_u64(RING_BASE + u64::from(idx) * desc_len + 8)
        .unwrap()
}

/// MACLEN/IPLEN/L4LEN in the data descriptor's OFFSET units.
fn offset(maclen: usize, iplen: usize, l4len: usize) -> u64 {
    (maclen / 2) as u64 | ((iplen / 4) as u64) << 7 | ((l4len / 4) as u64) << 14
}

fn run_tx(q: &mut TxQueueCfg, m: &VecMemory) -> (TxOutcome, Vec<Vec<u8>>) {
    let mut frames = Vec::new();
    let mut s = TxScratch::new();
    let out = AvfTxQueue::new().process(q, m, &mut s, 64, &mut |f: &[u8]| frames.push(f.to_vec()));
    (out, frames)
}

const EOP_RS: u64 = td::CMD_EOP | td::CMD_RS;

#[test]
fn tx_single_and_multi_descriptor_frames_complete_the_rs_descriptor() {
    let m = canary_mem();
    let f = ipv4_frame(17, 100);
    m.write(BUF_BASE, &f).unwrap();
    tx_data(&m, 0, BUF_BASE, f.len(), EOP_RS, 0, 0);
    // Second packet in three pieces, RS on the EOP descriptor only (iavf_tx_map).
    let g = ipv4_frame(6, 3000);
    m.write(BUF_BASE + 0x1000, &g).unwrap();
    tx_data(&m, 1, BUF_BASE + 0x1000, 1000, 0, 0, 0);
    tx_data(&m, 2, BUF_BASE + 0x1000 + 1000, 1000, 0, 0, 0);
    tx_data(
        &m,
        3,
        BUF_BASE + 0x1000 + 2000,
        g.len() - 2000,
        EOP_RS,
        0,
        0,
    );
    let before1 = qw1(&m, 1, 16);
    let mut q = txq();
    q.tail = 4;
    let before = snapshot(&m);
    let (out, frames) = run_tx(&mut q, &m);
    assert_eq!(frames, vec![f, g]);
    assert_eq!(out.write_backs, 2);
    assert_eq!(out.stats.packets, 2);
    assert_eq!(out.stats.descriptors, 4);
    assert_eq!(q.head, 4);
    assert_eq!(qw1(&m, 0, 16), td::DTYPE_DESC_DONE);
    assert_eq!(qw1(&m, 3, 16), td::DTYPE_DESC_DONE);
    assert_eq!(qw1(&m, 1, 16), before1, "non-RS descriptors untouched");
    assert_only_changed(&m, &before, &[(RING_BASE, 4 * 16)]);
    // Nothing more to do; a disabled queue is left alone.
    assert_eq!(run_tx(&mut q, &m).0, TxOutcome::default());
    q.tail = 5;
    q.enabled = false;
    assert_eq!(run_tx(&mut q, &m).0, TxOutcome::default());
    assert_eq!(q.head, 4);
}

#[test]
fn tx_checksum_offload_ipv4_and_ipv6() {
    let m = canary_mem();
    // IPv4 TCP: IP header checksum (IIPT IPv4+csum) and TCP checksum from the seed.
    // The device sums the header including the check field, which Linux leaves zero.
    let mut f = ipv4_frame(6, 333);
    let l4len = f.len() - 34;
    let p = pseudo_v4(&f, 6, Some(l4len));
    seed_l4(&mut f, 34 + 16, p);
    m.write(BUF_BASE, &f).unwrap();
    let cmd = EOP_RS | td::CMD_IIPT_IPV4_CSUM | td::CMD_L4T_TCP;
    tx_data(&m, 0, BUF_BASE, f.len(), cmd, offset(14, 20, 32), 0);
    // IPv4 UDP split over two buffers, IP checksum left to the stack (IIPT IPv4).
    let mut u = ipv4_frame(17, 501);
    let p = pseudo_v4(&u, 17, Some(u.len() - 34));
    seed_l4(&mut u, 34 + 6, p);
    m.write(BUF_BASE + 0x1000, &u).unwrap();
    let cmd = td::CMD_IIPT_IPV4 | td::CMD_L4T_UDP;
    tx_data(&m, 1, BUF_BASE + 0x1000, 40, cmd, offset(14, 20, 8), 0);
    tx_data(
        &m,
        2,
        BUF_BASE + 0x1000 + 40,
        u.len() - 40,
        cmd | EOP_RS,
        offset(14, 20, 8),
        0,
    );
    // IPv6 TCP.
    let mut v = ipv6_tcp_frame(777);
    let p = pseudo_v6(&v, 6, Some(v.len() - 54));
    seed_l4(&mut v, 54 + 16, p);
    m.write(BUF_BASE + 0x2000, &v).unwrap();
    let cmd = EOP_RS | td::CMD_IIPT_IPV6 | td::CMD_L4T_TCP;
    tx_data(
        &m,
        3,
        BUF_BASE + 0x2000,
        v.len(),
        cmd,
        offset(14, 40, 32),
        0,
    );
    let mut q = txq();
    q.tail = 4;
    let (out, frames) = run_tx(&mut q, &m);
    assert_eq!(out.stats.packets, 3, "{out:?}");
    assert!(ipv4_header_ok(&frames[0], 14));
    assert!(l4_v4_ok(&frames[0], 14, 34, 6));
    assert!(l4_v4_ok(&frames[1], 14, 34, 17));
    assert!(l4_v6_ok(&frames[2], 14, 54, 6));
}

#[test]
fn tx_tso_segments_are_valid() {
    let m = canary_mem();
    let payload = 4000;
    let mut f = ipv4_frame(6, payload);
    // iavf_tso: tot_len and the IP checksum zeroed, TCP seed without the length.
    f[16..18].copy_from_slice(&[0, 0]);
    f[24..26].copy_from_slice(&[0, 0]);
    let p = pseudo_v4(&f, 6, None);
    seed_l4(&mut f, 34 + 16, p);
    m.write(BUF_BASE, &f).unwrap();
    tx_ctx(&m, 0, payload, 1448);
    let cmd = td::CMD_IIPT_IPV4_CSUM | td::CMD_L4T_TCP | td::CMD_IL2TAG1;
    let off = offset(14, 20, 32);
    tx_data(&m, 1, BUF_BASE, 66, cmd, off, 7);
    tx_data(&m, 2, BUF_BASE + 66, f.len() - 66, cmd | EOP_RS, off, 7);
    let mut q = txq();
    q.tail = 3;
    let (out, frames) = run_tx(&mut q, &m);
    assert_eq!(out.stats.tso_segments, 3);
    assert_eq!(out.write_backs, 1);
    let mut total = 0;
    for (n, s) in frames.iter().enumerate() {
        assert_eq!(
            &s[12..16],
            &[0x81, 0x00, 0x00, 0x07],
            "VLAN inserted in every segment"
        );
        let s: Vec<u8> = s[..12].iter().chain(&s[16..]).copied().collect();
        assert!(s.len() <= 14 + 20 + 32 + 1448);
        assert_eq!(
            usize::from(u16::from_be_bytes([s[16], s[17]])),
            s.len() - 14
        );
        assert!(ipv4_header_ok(&s, 14), "segment {n}");
        assert!(l4_v4_ok(&s, 14, 34, 6), "segment {n}");
        total += s.len() - 66;
    }
    assert_eq!(total, payload);
    // TSO with an MSS below 64 is refused, and the packet still completes.
    tx_ctx(&m, 3, payload, 8);
    tx_data(&m, 4, BUF_BASE, f.len(), cmd | EOP_RS, off, 7);
    q.tail = 5;
    let (out, frames) = run_tx(&mut q, &m);
    assert!(frames.is_empty());
    assert_eq!((out.stats.dropped_packets, out.write_backs), (1, 1));
    assert_eq!(qw1(&m, 4, 16), td::DTYPE_DESC_DONE);
}

#[test]
fn tx_vlan_insertion() {
    let m = canary_mem();
    let f = ipv4_frame(17, 20);
    m.write(BUF_BASE, &f).unwrap();
    tx_data(
        &m,
        0,
        BUF_BASE,
        f.len(),
        EOP_RS | td::CMD_IL2TAG1,
        0,
        0x2123,
    );
    let mut q = txq();
    q.tail = 1;
    let (_, frames) = run_tx(&mut q, &m);
    let w = &frames[0];
    assert_eq!(w.len(), f.len() + 4);
    assert_eq!(&w[..12], &f[..12]);
    assert_eq!(&w[12..16], &[0x81, 0x00, 0x21, 0x23]);
    assert_eq!(&w[16..], &f[12..]);
}

#[test]
fn tx_hostile_descriptors_are_dropped_and_completed() {
    let m = canary_mem();
    let f = ipv4_frame(17, 20);
    m.write(BUF_BASE, &f).unwrap();
    tx_data(&m, 0, 0xdead_0000_0000, 64, EOP_RS, 0, 0); // outside memory
    tx_data(&m, 1, BUF_BASE, 0, EOP_RS, 0, 0); // zero length
    tx_data(&m, 2, BUF_BASE, 10, EOP_RS, 0, 0); // runt
    tx_data(
        &m,
        3,
        BUF_BASE,
        f.len(),
        EOP_RS | td::CMD_L4T_TCP,
        offset(126, 508, 60),
        0,
    );
    m.write_u64(
        RING_BASE + 4 * 16 + 8,
        0x7 | td::CMD_EOP << 4 | td::CMD_RS << 4,
    )
    .unwrap();
    // The unknown-DTYPE descriptor is not a data descriptor: its packet goes on to the next
    // EOP (descriptor 5) and is dropped whole.
    tx_data(&m, 5, BUF_BASE, f.len(), EOP_RS, 0, 0);
    tx_data(&m, 6, BUF_BASE, f.len(), EOP_RS, 0, 0); // a good one after them
    let mut q = txq();
    q.tail = 7;
    let before = snapshot(&m);
    let (out, frames) = run_tx(&mut q, &m);
    assert_eq!(frames, vec![f]);
    assert_eq!(out.stats.dropped_packets, 5);
    assert_eq!(q.head, 7);
    assert_eq!(out.write_backs, 6, "every RS data descriptor completed");
    assert_eq!(qw1(&m, 3, 16), td::DTYPE_DESC_DONE);
    assert_only_changed(&m, &before, &[(RING_BASE, 7 * 16)]);

    // A full ring without EOP can never complete: dropped as a whole, head moves on.
    let m = canary_mem();
    for i in 0..RING_LEN {
        tx_data(&m, i, BUF_BASE, 64, td::CMD_RS, 0, 0);
    }
    let mut q = txq();
    q.tail = RING_LEN - 1;
    let (out, frames) = run_tx(&mut q, &m);
    assert!(frames.is_empty());
    assert_eq!(out.stats.dropped_packets, 1);
    assert_eq!(q.head, q.tail);
    // Not full yet: wait.
    let mut q = txq();
    q.tail = 10;
    let (out, _) = run_tx(&mut q, &m);
    assert_eq!((out.stats.descriptors, q.head), (0, 0));

    // Bad ring configurations are counted and left alone.
    let bad = [
        TxQueueCfg {
            ring_len: 0,
            ..txq()
        },
        TxQueueCfg {
            ring_len: 1,
            ..txq()
        },
        TxQueueCfg {
            ring_len: u32::MAX,
            ..txq()
        },
        TxQueueCfg {
            head: RING_LEN,
            tail: 1,
            ..txq()
        },
        TxQueueCfg {
            tail: u32::MAX,
            ..txq()
        },
        TxQueueCfg {
            ring_base: u64::MAX - 32,
            tail: 3,
            ..txq()
        },
        TxQueueCfg {
            ring_base: 0x10,
            tail: 3,
            ..txq()
        },
    ];
    for mut q in bad {
        let before = snapshot(&m);
        let (out, frames) = run_tx(&mut q, &m);
        assert!(frames.is_empty());
        assert_eq!(out.stats.bad_ring, 1, "{q:?}");
        assert_only_changed(&m, &before, &[]);
    }
}

#[test]
fn tx_fuzz_never_panics_or_writes_outside_the_ring() {
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    let mut s = TxScratch::new();
    let mut txq_state = AvfTxQueue::new();
    for _ in 0..150 {
        let m = canary_mem();
        for i in 0..RING_LEN {
            let r = rng.next();
            let addr = match r & 3 {
                0 => rng.next(),
                _ => BUF_BASE + (rng.next() % 0x8_0000),
            };
            let qw1 = match (r >> 2) & 3 {
                0 => rng.next(),
                1 => td::DTYPE_CONTEXT | rng.next() << 4,
                _ => (rng.next() & !0xF & !(0x3FFF << 34)) | ((r >> 8) % 3000) << 34,
            };
            let d = RING_BASE + u64::from(i) * 16;
            m.write_u64(d, addr).unwrap();
            m.write_u64(d + 8, qw1).unwrap();
        }
        let r = rng.next();
        let mut q = TxQueueCfg {
            ring_base: RING_BASE,
            ring_len: if r & 7 == 0 {
                (r >> 8) as u32
            } else {
                RING_LEN
            },
            enabled: true,
            head: (r >> 16) as u32 % (RING_LEN + 2),
            tail: (r >> 32) as u32 % (RING_LEN + 2),
        };
        let before = snapshot(&m);
        let _ = txq_state.process(&mut q, &m, &mut s, 1000, &mut |f: &[u8]| {
            assert!(f.len() <= MAX_TX_FRAME + 4);
        });
        assert_only_changed(&m, &before, &[(RING_BASE, RING_LEN as usize * 16)]);
    }
}

fn rx_desc(m: &VecMemory, idx: u32, pkt: u64) {
    let d = RING_BASE + u64::from(idx) * 32;
    m.write_u64(d, pkt).unwrap();
    m.write_u64(d + 8, 0).unwrap();
}

fn rx_qw0(m: &VecMemory, idx: u32) -> u64 {
    m.read_u64(RING_BASE + u64::from(idx) * 32).unwrap()
}

fn pbuf_len(qw1: u64) -> usize {
    ((qw1 >> rd::LENGTH_PBUF_SHIFT) & rd::LENGTH_PBUF_MASK) as usize
}

fn rx_ring(m: &VecMemory, buf: u64) {
    for i in 0..RING_LEN {
        rx_desc(m, i, BUF_BASE + u64::from(i) * buf);
    }
}

#[test]
fn rx_single_buffer_write_back_fields() {
    let m = canary_mem();
    rx_ring(&m, 2048);
    let mut q = rxq(2048);
    let f = ipv4_frame(6, 100);
    let before = snapshot(&m);
    let meta = RxMeta {
        ptype: ptype::IPV4_TCP,
        ..RxMeta::default()
    };
    let w = rx_write(&mut q, &m, &f, meta).unwrap();
    assert_eq!(
        w,
        RxWritten {
            descriptors: 1,
            bytes: f.len()
        }
    );
    assert_eq!(q.head, 1);
    let qw1 = qw1(&m, 0, 32);
    assert_ne!(qw1 & rd::STATUS_DD, 0);
    assert_ne!(qw1 & rd::STATUS_EOF, 0);
    assert_eq!(
        qw1 & (rd::STATUS_L2TAG1P | rd::STATUS_L3L4P | rd::STATUS_FLTSTAT_MASK),
        0
    );
    assert_eq!(
        (qw1 >> rd::PTYPE_SHIFT) & rd::PTYPE_MASK,
        u64::from(ptype::IPV4_TCP)
    );
    assert_eq!(pbuf_len(qw1), f.len());
    assert_eq!(qw1 >> rd::ERROR_SHIFT & 0xFF, 0, "no errors");
    assert_eq!(rx_qw0(&m, 0), 0);
    let mut got = vec![0; f.len()];
    m.read(BUF_BASE, &mut got).unwrap();
    assert_eq!(got, f);
    assert_only_changed(&m, &before, &[(RING_BASE, 32), (BUF_BASE, f.len())]);
}

#[test]
fn rx_jumbo_frame_spans_buffers_with_eof_on_the_last() {
    let m = canary_mem();
    rx_ring(&m, 2048);
    let mut q = rxq(2048);
    q.head = RING_LEN - 2; // wraps
    q.tail = 4;
    let f: Vec<u8> = (0..9000).map(|i| (i * 13 % 251) as u8).collect();
    let meta = RxMeta {
        vlan: Some(0x0abc),
        rss_hash: Some(0x1234_5678),
        ptype: ptype::IPV6_UDP,
    };
    let w = rx_write(&mut q, &m, &f, meta).unwrap();
    assert_eq!(w.descriptors, 5);
    assert_eq!(q.head, 3);
    let mut got = Vec::new();
    for n in 0..5u32 {
        let idx = (RING_LEN - 2 + n) % RING_LEN;
        let qw1 = qw1(&m, idx, 32);
        assert_ne!(qw1 & rd::STATUS_DD, 0);
        assert_eq!(qw1 & rd::STATUS_EOF != 0, n == 4, "EOF only on the last");
        let len = pbuf_len(qw1);
        assert_eq!(len, if n < 4 { 2048 } else { 9000 - 4 * 2048 });
        let mut b = vec![0; len];
        m.read(BUF_BASE + u64::from(idx) * 2048, &mut b).unwrap();
        got.extend(b);
        if n == 4 {
            assert_ne!(qw1 & rd::STATUS_L2TAG1P, 0);
            let flt = (qw1 & rd::STATUS_FLTSTAT_MASK) >> rd::STATUS_FLTSTAT_SHIFT;
            assert_eq!(flt, rd::FLTSTAT_RSS_HASH);
            let qw0 = rx_qw0(&m, idx);
            assert_eq!((qw0 >> rd::WB_QW0_L2TAG1_SHIFT) as u16, 0x0abc);
            assert_eq!((qw0 >> rd::WB_QW0_RSS_SHIFT) as u32, 0x1234_5678);
        }
    }
    assert_eq!(got, f);
    // Not enough descriptors left before tail (3 → 4): refused, nothing changes.
    let before = snapshot(&m);
    assert_eq!(rx_write(&mut q, &m, &f, meta), Err(RxDrop::NoBuffers));
    assert_only_changed(&m, &before, &[]);
    assert_eq!(q.head, 3);
}

#[test]
fn rx_limits_and_hostile_configs() {
    let m = canary_mem();
    rx_ring(&m, 2048);
    let f = ipv4_frame(17, 1500);
    let meta = RxMeta::default();
    let cases: [(RxQueueCfg, RxDrop); 9] = [
        (
            RxQueueCfg {
                enabled: false,
                ..rxq(2048)
            },
            RxDrop::Disabled,
        ),
        (
            RxQueueCfg {
                ring_len: 0,
                ..rxq(2048)
            },
            RxDrop::BadRing,
        ),
        (
            RxQueueCfg {
                ring_len: u32::MAX,
                ..rxq(2048)
            },
            RxDrop::BadRing,
        ),
        (
            RxQueueCfg {
                head: RING_LEN,
                ..rxq(2048)
            },
            RxDrop::BadRing,
        ),
        (
            RxQueueCfg {
                tail: RING_LEN + 7,
                ..rxq(2048)
            },
            RxDrop::BadRing,
        ),
        (rxq(0), RxDrop::BadRing),
        (rxq(u32::MAX), RxDrop::BadRing),
        (
            RxQueueCfg {
                max_pkt_size: 1000,
                ..rxq(2048)
            },
            RxDrop::TooBig,
        ),
        (
            RxQueueCfg {
                tail: 0,
                ..rxq(2048)
            },
            RxDrop::NoBuffers,
        ),
    ];
    let before = snapshot(&m);
    for (mut q, want) in cases {
        assert_eq!(rx_write(&mut q, &m, &f, meta), Err(want), "{q:?}");
    }
    assert_eq!(rx_write(&mut rxq(2048), &m, &[], meta), Err(RxDrop::Empty));
    let big = vec![0u8; MAX_RX_FRAME + 1];
    let mut q = RxQueueCfg {
        max_pkt_size: 0,
        ..rxq(2048)
    };
    assert_eq!(rx_write(&mut q, &m, &big, meta), Err(RxDrop::TooBig));
    // A frame needing more descriptors than the ring has.
    let mut q = RxQueueCfg {
        ring_len: 4,
        tail: 3,
        max_pkt_size: 0,
        ..rxq(128)
    };
    assert_eq!(rx_write(&mut q, &m, &f, meta), Err(RxDrop::TooBig));
    // A buffer address outside memory: no descriptor written.
    rx_desc(&m, 0, 0xdead_0000_0000);
    let before2 = snapshot(&m);
    assert_eq!(
        rx_write(&mut rxq(2048), &m, &f, meta),
        Err(RxDrop::BadAddress)
    );
    assert_only_changed(&m, &before2, &[]);
    let _ = before;
}

#[test]
fn rx_fuzz_never_panics_or_writes_outside_ring_and_buffers() {
    let mut rng = XorShift(0xfeed_face_dead_beef);
    let frame: Vec<u8> = (0..9100).map(|i| i as u8).collect();
    for _ in 0..150 {
        let m = canary_mem();
        for i in 0..RING_LEN {
            let r = rng.next();
            let pkt = match r & 3 {
                0 => rng.next(),
                _ => BUF_BASE + (rng.next() % 0x8_0000),
            };
            rx_desc(&m, i, pkt);
        }
        let r = rng.next();
        let mut q = RxQueueCfg {
            ring_base: RING_BASE,
            ring_len: if r & 7 == 0 {
                (r >> 8) as u32
            } else {
                RING_LEN
            },
            buf_size: match (r >> 3) & 3 {
                0 => (r >> 40) as u32,
                _ => 1 + (r >> 40) as u32 % 4096,
            },
            max_pkt_size: (r >> 20) as u32 % 10_000,
            enabled: r & 0x100 != 0 || r & 0x200 != 0,
            head: (rng.next() % u64::from(RING_LEN + 2)) as u32,
            tail: (rng.next() % u64::from(RING_LEN + 2)) as u32,
        };
        let len = (rng.next() % 9100) as usize;
        let before = snapshot(&m);
        let head = q.head;
        match rx_write(&mut q, &m, &frame[..len], RxMeta::default()) {
            Ok(_) => assert!(q.head < q.ring_len),
            Err(_) => assert_eq!(q.head, head),
        }
        assert_only_changed(
            &m,
            &before,
            &[
                (RING_BASE, RING_LEN as usize * 32),
                (BUF_BASE, 0x8_0000 + 4096),
            ],
        );
    }
}

#[test]
fn rss_and_rx_write_together() {
    // The dataplane path: classify + hash, then write with the resulting metadata.
    let m = canary_mem();
    rx_ring(&m, 2048);
    let rss_cfg = RssCfg {
        key: [0x6d; 52],
        hena: 1 << pctype::NONF_IPV4_UDP,
        ..RssCfg::default()
    };
    let f = ipv4_frame(17, 64);
    let (qi, hash, pt) = rss::rss_queue(&rss_cfg, 4, &f);
    assert_eq!(qi, 0);
    let mut q = rxq(2048);
    let meta = RxMeta {
        vlan: None,
        rss_hash: hash,
        ptype: pt,
    };
    rx_write(&mut q, &m, &f, meta).unwrap();
    let qw1 = qw1(&m, 0, 32);
    assert_eq!(
        (qw1 >> rd::PTYPE_SHIFT) & rd::PTYPE_MASK,
        u64::from(ptype::IPV4_UDP)
    );
    assert_eq!((rx_qw0(&m, 0) >> 32) as u32, hash.unwrap());
}
