use super::*;
use crate::mem::VecMemory;
use crate::ring::testutil::*;

/// Linux igbvf at MTU 1500: 2 KiB one-buffer (ALIGN(1522, 1024) >> 10 = 2).
const SRRCTL_ONEBUF_2K: u32 = 0x0200_0002;
/// Linux igbvf at MTU 9000: half-page packet buffers, 128-byte header buffers, split always.
const SRRCTL_JUMBO: u32 = 0x0a00_0000 | (128 << 2) | 2;

fn ring(count: u32, head: u32, tail: u32) -> RingRegs {
    RingRegs {
        bal: RING_BASE as u32,
        bah: (RING_BASE >> 32) as u32,
        len: count * 16,
        head,
        tail,
    }
}

fn pkt_buf(i: u32) -> u64 {
    BUF_BASE + u64::from(i) * 0x1000
}

fn hdr_buf(i: u32) -> u64 {
    BUF_BASE + 0x8_0000 + u64::from(i) * 0x100
}

/// Fills descriptors `0..count` with distinct packet and header buffers.
fn post_all(m: &VecMemory, count: u32) {
    for i in 0..count {
        write_rx_desc(m, i, pkt_buf(i), hdr_buf(i));
    }
}

struct Wb {
    hdr_info: u16,
    rss: u32,
    status: u32,
    length: u16,
    vlan: u16,
}

fn wb(m: &VecMemory, idx: u32) -> Wb {
    let b = read_desc(m, idx);
    Wb {
        hdr_info: u16::from_le_bytes([b[2], b[3]]),
        rss: u32::from_le_bytes(b[4..8].try_into().unwrap()),
        status: u32::from_le_bytes(b[8..12].try_into().unwrap()),
        length: u16::from_le_bytes([b[12], b[13]]),
        vlan: u16::from_le_bytes([b[14], b[15]]),
    }
}

fn read(m: &VecMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    m.read(addr, &mut v).unwrap();
    v
}

/// Reassembles the frame starting at descriptor `first` the way igbvf_clean_rx_irq does.
fn linux_reassemble(m: &VecMemory, first: u32, count: u32, ps_hdr: usize) -> (Vec<u8>, u32) {
    let mut out = Vec::new();
    let mut i = first;
    let mut n = 0;
    let mut has_frags = false;
    loop {
        let w = wb(m, i);
        assert!(w.status & d::STAT_DD != 0, "DD missing on {i}");
        n += 1;
        if ps_hdr == 0 {
            out.extend(read(m, pkt_buf(i), w.length as usize));
        } else {
            if !has_frags {
                let hlen = ((w.hdr_info & d::HDRBUFLEN_MASK) >> d::HDRBUFLEN_SHIFT) as usize;
                out.extend(read(m, hdr_buf(i), hlen.min(ps_hdr)));
            }
            if w.length > 0 {
                out.extend(read(m, pkt_buf(i), w.length as usize));
                has_frags = true;
            }
        }
        if w.status & d::STAT_EOP != 0 {
            return (out, n);
        }
        i = (i + 1) % count;
    }
}

#[test]
fn layout_from_srrctl() {
    let l = RxLayout::from_srrctl(SRRCTL_JUMBO);
    assert_eq!(l.desc_type, RxDescType::HeaderSplitAlways);
    assert_eq!((l.pkt_buf_len, l.hdr_buf_len), (2048, 128));
    let l = RxLayout::from_srrctl(0x0200_0000);
    assert_eq!((l.desc_type, l.pkt_buf_len), (RxDescType::OneBuffer, 2048));
    let l = RxLayout::from_srrctl(u32::MAX);
    assert_eq!(l.desc_type, RxDescType::Reserved(7));
    assert_eq!(
        (l.pkt_buf_len, l.hdr_buf_len, l.drop_en),
        (127 * 1024, 960, true)
    );
    assert_eq!(RxLayout::from_srrctl(0).desc_type, RxDescType::Legacy);
}

#[test]
fn one_buffer_write_back_fields() {
    let m = canary_mem();
    post_all(&m, 8);
    let frame = ipv4_frame(17, 100);
    let before = snapshot(&m);
    let mut r = ring(8, 0, 7);
    let meta = RxMeta {
        vlan: Some(0x0123),
        rss_hash: Some(0xdead_beef),
    };
    let layout = RxLayout::from_srrctl(SRRCTL_ONEBUF_2K);
    let w = rx_write(&mut r, layout, &m, &frame, meta).unwrap();
    assert_eq!(
        w,
        RxWritten {
            descriptors: 1,
            bytes: frame.len()
        }
    );
    assert_eq!(r.head, 1);
    assert_eq!(read(&m, pkt_buf(0), frame.len()), frame);
    let b = wb(&m, 0);
    assert_eq!(b.hdr_info, 0);
    assert_eq!(b.rss, 0xdead_beef);
    assert_eq!(
        b.status,
        d::STAT_DD | d::STAT_EOP | d::STAT_IXSM | d::STAT_VP
    );
    assert_eq!(b.length as usize, frame.len());
    assert_eq!(b.vlan, 0x0123);
    assert_only_changed(&m, &before, &[(RING_BASE, 16), (pkt_buf(0), frame.len())]);
}

#[test]
fn one_buffer_frame_spans_descriptors() {
    let m = canary_mem();
    post_all(&m, 8);
    let frame = ipv4_frame(6, 3000 - 66);
    // 1 KiB buffers, starting at 6 so that the frame wraps: 6, 7, 0.
    let layout = RxLayout::from_srrctl(0x0200_0001);
    let mut r = ring(8, 6, 5);
    let w = rx_write(&mut r, layout, &m, &frame, RxMeta::default()).unwrap();
    assert_eq!(w.descriptors, 3);
    assert_eq!(r.head, 1);
    let lens: Vec<u16> = [6, 7, 0].iter().map(|&i| wb(&m, i).length).collect();
    assert_eq!(lens, [1024, 1024, 952]);
    assert_eq!(wb(&m, 6).status, d::STAT_DD);
    assert_eq!(wb(&m, 7).status, d::STAT_DD);
    assert_eq!(wb(&m, 0).status, d::STAT_DD | d::STAT_EOP | d::STAT_IXSM);
    assert_eq!(linux_reassemble(&m, 6, 8, 0), (frame, 3));
}

#[test]
fn header_split_jumbo_reassembles_like_linux() {
    let m = canary_mem();
    post_all(&m, 16);
    let frame = ipv4_frame(6, 9018 - 66);
    assert_eq!(frame.len(), 9018);
    let before = snapshot(&m);
    let mut r = ring(16, 3, 2);
    let layout = RxLayout::from_srrctl(SRRCTL_JUMBO);
    let w = rx_write(&mut r, layout, &m, &frame, RxMeta::default()).unwrap();
    // 66 header bytes, 8952 in 2 KiB buffers: 5 descriptors.
    assert_eq!(w.descriptors, 5);
    assert_eq!(r.head, 8);
    let first = wb(&m, 3);
    assert_eq!(first.hdr_info, d::HDR_INFO_SPH | (66 << 5));
    assert_eq!(first.length, 2048);
    for i in 4..8 {
        assert_eq!(wb(&m, i).hdr_info, 0);
    }
    assert_eq!(linux_reassemble(&m, 3, 16, 128), (frame, 5));
    let mut allowed = vec![(RING_BASE + 3 * 16, 5 * 16), (hdr_buf(3), 66)];
    allowed.extend((3..8).map(|i| (pkt_buf(i), 2048)));
    assert_only_changed(&m, &before, &allowed);
}

#[test]
fn header_split_small_and_unrecognised_frames() {
    let layout = RxLayout::from_srrctl(SRRCTL_JUMBO);
    // TCP SYN-sized: everything fits the header buffer, no packet buffer bytes.
    let m = canary_mem();
    post_all(&m, 8);
    let frame = ipv4_frame(6, 0);
    let mut r = ring(8, 0, 7);
    rx_write(&mut r, layout, &m, &frame, RxMeta::default()).unwrap();
    let b = wb(&m, 0);
    assert_eq!((b.hdr_info, b.length), (d::HDR_INFO_SPH | (66 << 5), 0));
    assert_eq!(linux_reassemble(&m, 0, 8, 128).0, frame);
    // ARP (not IP): the first 128 bytes go to the header buffer, without SPH.
    let mut arp = vec![0xffu8; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend((0..300).map(|i| i as u8));
    rx_write(&mut r, layout, &m, &arp, RxMeta::default()).unwrap();
    let b = wb(&m, 1);
    assert_eq!((b.hdr_info, b.length), (128 << 5, arp.len() as u16 - 128));
    assert_eq!(linux_reassemble(&m, 1, 8, 128).0, arp);
    // IPv6/TCP splits after the TCP header.
    let v6 = ipv6_tcp_frame(500);
    rx_write(&mut r, layout, &m, &v6, RxMeta::default()).unwrap();
    assert_eq!(wb(&m, 2).hdr_info, d::HDR_INFO_SPH | (86 << 5));
    assert_eq!(linux_reassemble(&m, 2, 8, 128).0, v6);
}

#[test]
fn no_buffers_writes_nothing() {
    let m = canary_mem();
    post_all(&m, 8);
    let before = snapshot(&m);
    let layout = RxLayout::from_srrctl(0x0200_0001);
    let frame = ipv4_frame(17, 100);
    let mut r = ring(8, 4, 4);
    assert_eq!(
        rx_write(&mut r, layout, &m, &frame, RxMeta::default()),
        Err(RxDrop::NoBuffers)
    );
    // Two buffers free, a 3000-byte frame needs three.
    let big = ipv4_frame(17, 2900);
    let mut r2 = ring(8, 4, 6);
    assert_eq!(
        rx_write(&mut r2, layout, &m, &big, RxMeta::default()),
        Err(RxDrop::NoBuffers)
    );
    assert_eq!((r.head, r2.head), (4, 4));
    assert_only_changed(&m, &before, &[]);
}

#[test]
fn hostile_rx_inputs_are_refused_without_writes() {
    let m = canary_mem();
    post_all(&m, 8);
    let frame = ipv4_frame(17, 100);
    let one = RxLayout::from_srrctl(SRRCTL_ONEBUF_2K);
    let before = snapshot(&m);
    let cases: Vec<(RingRegs, RxLayout, usize, RxDrop)> = vec![
        (ring(8, 0, 8), one, 100, RxDrop::BadRing),
        (ring(8, 9, 1), one, 100, RxDrop::BadRing),
        (
            RingRegs {
                len: 0,
                ..ring(8, 0, 1)
            },
            one,
            100,
            RxDrop::BadRing,
        ),
        (
            RingRegs {
                len: 200,
                ..ring(8, 0, 1)
            },
            one,
            100,
            RxDrop::BadRing,
        ),
        (
            RingRegs {
                len: u32::MAX,
                ..ring(8, 0, 1)
            },
            one,
            100,
            RxDrop::BadRing,
        ),
        (
            ring(8, 0, 7),
            RxLayout::from_srrctl(0),
            100,
            RxDrop::UnsupportedLayout,
        ),
        (
            ring(8, 0, 7),
            RxLayout::from_srrctl(u32::MAX),
            100,
            RxDrop::UnsupportedLayout,
        ),
        (ring(8, 0, 7), one, 0, RxDrop::Empty),
        (ring(8, 0, 7), one, MAX_RX_FRAME + 1, RxDrop::TooBig),
        // 16 KiB in 1 KiB buffers needs 16 descriptors; an 8-ring can never hold it.
        (
            ring(8, 0, 7),
            RxLayout::from_srrctl(0x0200_0001),
            16 * 1024,
            RxDrop::TooBig,
        ),
        // Ring base outside memory and at the top of the address space.
        (
            RingRegs {
                bah: 0xffff_0000,
                ..ring(8, 0, 1)
            },
            one,
            100,
            RxDrop::BadRing,
        ),
        (
            RingRegs {
                bal: u32::MAX,
                bah: u32::MAX,
                ..ring(8, 1, 2)
            },
            one,
            100,
            RxDrop::BadRing,
        ),
    ];
    let big = vec![0u8; MAX_RX_FRAME + 1];
    for (mut r, layout, len, want) in cases {
        let orig = r;
        let f = if len <= frame.len() {
            &frame[..len]
        } else {
            &big[..len]
        };
        assert_eq!(
            rx_write(&mut r, layout, &m, f, RxMeta::default()),
            Err(want),
            "{orig:?}"
        );
        assert_eq!(r, orig);
    }
    assert_only_changed(&m, &before, &[]);
}

#[test]
fn unmapped_buffers_are_bad_address() {
    let split = RxLayout::from_srrctl(SRRCTL_JUMBO);
    let one = RxLayout::from_srrctl(SRRCTL_ONEBUF_2K);
    let jumbo = ipv4_frame(6, 5000);
    for (pkt, hdr, layout) in [
        (0xffff_ffff_ffff_f000, 0, one),
        (u64::MAX - 8, 0, one),
        (MEM_BASE + MEM_SIZE as u64 - 100, 0, one),
        (pkt_buf(0), 0xffff_ffff_ffff_f000, split),
        (pkt_buf(0), u64::MAX, split),
    ] {
        let m = canary_mem();
        post_all(&m, 8);
        write_rx_desc(&m, 0, pkt, hdr);
        let before = snapshot(&m);
        let mut r = ring(8, 0, 7);
        assert_eq!(
            rx_write(&mut r, layout, &m, &jumbo, RxMeta::default()),
            Err(RxDrop::BadAddress)
        );
        assert_eq!(r.head, 0);
        // Only buffers may have been touched; no descriptor changed.
        let bufs: Vec<(u64, usize)> = (0..8).map(|i| (pkt_buf(i), 2048)).collect();
        assert_only_changed(&m, &before, &bufs);
    }
    // A later buffer of a multi-descriptor frame unmapped: no descriptor completes.
    let m = canary_mem();
    post_all(&m, 8);
    write_rx_desc(&m, 2, 0xffff_ffff_ffff_f000, 0);
    let before = snapshot(&m);
    let mut r = ring(8, 0, 7);
    assert_eq!(
        rx_write(&mut r, split, &m, &jumbo, RxMeta::default()),
        Err(RxDrop::BadAddress)
    );
    let mut bufs: Vec<(u64, usize)> = (0..8).map(|i| (pkt_buf(i), 2048)).collect();
    bufs.push((hdr_buf(0), 128));
    assert_only_changed(&m, &before, &bufs);
}

#[test]
fn random_rx_never_escapes() {
    let mut rng = XorShift(0xfeed_f00d_1234_5678);
    let m = canary_mem();
    let frame_src: Vec<u8> = (0..MAX_RX_FRAME + 10).map(|i| (i * 13) as u8).collect();
    for iter in 0..1500 {
        let count = 8 * (1 + (rng.next() % 4) as u32);
        for i in 0..count {
            let mut addr = || match rng.next() % 4 {
                0 => rng.next(),
                1 => BUF_BASE + rng.next() % 0x4_0000,
                2 => MEM_BASE + MEM_SIZE as u64 - rng.next() % 0x4000,
                _ => u64::MAX - rng.next() % 0x1000,
            };
            let (p, h) = (addr(), addr());
            write_rx_desc(&m, i, p, h);
        }
        let srrctl = match rng.next() % 3 {
            0 => rng.next() as u32,
            1 => SRRCTL_JUMBO,
            _ => 0x0200_0000 | (rng.next() % 4) as u32,
        };
        let layout = RxLayout::from_srrctl(srrctl);
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
        // Allowed: the ring and every buffer a descriptor of it names, at its size.
        let mut allowed = Vec::new();
        if r.is_valid() {
            allowed.push((RING_BASE, r.len as usize));
            for i in 0..r.count().min(4096) {
                let b = read_desc(&m, i);
                let p = u64::from_le_bytes(b[..8].try_into().unwrap());
                let h = u64::from_le_bytes(b[8..].try_into().unwrap());
                allowed.push((p, layout.pkt_buf_len as usize));
                allowed.push((h, layout.hdr_buf_len as usize));
            }
        }
        let before = snapshot(&m);
        let len = (rng.next() % (MAX_RX_FRAME as u64 + 10)) as usize;
        let len = if rng.next().is_multiple_of(2) {
            len % 2000
        } else {
            len
        };
        let orig = r;
        match rx_write(&mut r, layout, &m, &frame_src[..len], RxMeta::default()) {
            Ok(w) => {
                assert!(w.descriptors >= 1 && w.descriptors <= orig.pending(orig.count()));
                assert!(r.head < r.count());
            }
            Err(_) => assert_eq!(r, orig),
        }
        assert_only_changed(&m, &before, &allowed);
    }
}

/// Memory holding `bytes` at MEM_BASE (a copy of another test memory).
fn mem_from(bytes: &[u8]) -> VecMemory {
    let m = VecMemory::new(MEM_BASE, MEM_SIZE);
    m.write(MEM_BASE, bytes).unwrap();
    m
}

/// One random burst case: a ring of random size and indexes over posted buffers (a few of
/// them unmapped), one of four layouts, and up to 149 frames of random sizes (empty ones,
/// ones beyond one buffer, and ordinary ones). Returns the memory, the ring, the layout and
/// the frames.
fn random_burst_case(rng: &mut XorShift) -> (VecMemory, RingRegs, RxLayout, Vec<Vec<u8>>) {
    let layouts = [0x0200_0002u32, 0x0200_0001, SRRCTL_JUMBO, 0x0200_0000];
    let count = 8 * (1 + (rng.next() % 32) as u32);
    let head = (rng.next() % u64::from(count)) as u32;
    let tail = (rng.next() % u64::from(count)) as u32;
    let layout = RxLayout::from_srrctl(layouts[(rng.next() % 4) as usize]);
    let base = canary_mem();
    post_all(&base, count);
    // Some buffers point outside guest memory.
    for _ in 0..(rng.next() % 3) {
        let i = (rng.next() % u64::from(count)) as u32;
        write_rx_desc(&base, i, 0xdead_0000_0000, hdr_buf(i));
    }
    let frames = (0..(rng.next() % 150))
        .map(|k| {
            let len = match rng.next() % 8 {
                0 => 0,
                1 => 1 + (rng.next() % 3000) as usize,
                _ => 60 + (rng.next() % 1454) as usize,
            };
            let mut f = ipv4_frame(17, len.saturating_sub(42));
            f.resize(len, (k % 251) as u8);
            f
        })
        .collect();
    (base, ring(count, head, tail), layout, frames)
}

#[test]
fn burst_writes_exactly_what_frame_by_frame_writes() {
    // The same frames into the same ring, once with rx_write per frame and once as a burst:
    // every result, every byte of memory and the final head must agree, for random ring
    // states, layouts, frame sizes and hostile descriptors (unmapped buffers, a ring outside
    // memory), including bursts longer than one block.
    let mut rng = XorShift(0x5eed_b0a5);
    for round in 0..400 {
        let (base, mut r, layout, frames) = random_burst_case(&mut rng);
        if round % 50 == 7 {
            r.bah = 0x7777; // ring outside memory
        }
        let (a, b) = (mem_from(&snapshot(&base)), mem_from(&snapshot(&base)));
        let mut ra = r;
        let want: Vec<_> = frames
            .iter()
            .map(|f| rx_write(&mut ra, layout, &a, f, RxMeta::default()))
            .collect();
        let mut rb = r;
        let mut burst = RxBurst::new(&mut rb, layout, &b, frames.len());
        let got: Vec<_> = frames
            .iter()
            .map(|f| burst.push(f, RxMeta::default()))
            .collect();
        assert_eq!(burst.finish(), RxBurstLoss::default(), "round {round}");
        assert_eq!(got, want, "round {round}: results");
        assert_eq!(rb.head, ra.head, "round {round}: head");
        assert!(
            snapshot(&a) == snapshot(&b),
            "round {round}: memory differs"
        );
    }
}

#[test]
fn plain_runs_write_exactly_what_pushing_each_frame_writes() {
    // A burst fed through push_plain (falling back to push for the frame it stops at) must
    // end exactly like a burst fed frame by frame through push: same frames accepted, same
    // bytes, every byte of memory and the final head, for random rings, layouts, frame sizes
    // (empty, oversize, multi-buffer) and unmapped buffers, across block boundaries.
    let mut rng = XorShift(0x0dd_ba11_f00d);
    for round in 0..300 {
        let (base, r, layout, frames) = random_burst_case(&mut rng);
        let (a, b) = (mem_from(&snapshot(&base)), mem_from(&snapshot(&base)));
        let mut ra = r;
        let mut burst = RxBurst::new(&mut ra, layout, &a, frames.len());
        let (mut want_n, mut want_bytes, mut want_err) = (0u64, 0u64, Vec::new());
        for f in &frames {
            match burst.push(f, RxMeta::default()) {
                Ok(w) => {
                    want_n += 1;
                    want_bytes += w.bytes as u64;
                }
                Err(e) => want_err.push(e),
            }
        }
        assert_eq!(burst.finish(), RxBurstLoss::default());
        let mut rb = r;
        let mut burst = RxBurst::new(&mut rb, layout, &b, frames.len());
        let (mut n, mut bytes, mut errs) = (0u64, 0u64, Vec::new());
        let mut it = frames.iter().map(Vec::as_slice).peekable();
        loop {
            let (k, by) = burst.push_plain(&mut it);
            n += k;
            bytes += by;
            let Some(f) = it.next() else { break };
            match burst.push(f, RxMeta::default()) {
                Ok(w) => {
                    n += 1;
                    bytes += w.bytes as u64;
                }
                Err(e) => errs.push(e),
            }
        }
        assert_eq!(burst.finish(), RxBurstLoss::default());
        assert_eq!((n, bytes), (want_n, want_bytes), "round {round}: accepted");
        assert_eq!(errs, want_err, "round {round}: errors");
        assert_eq!(rb.head, ra.head, "round {round}: head");
        assert!(
            snapshot(&a) == snapshot(&b),
            "round {round}: memory differs"
        );
    }
}

#[test]
fn burst_reports_frames_whose_completion_could_not_be_written() {
    // A memory that reads but refuses descriptor writes: buffers are written, but no
    // descriptor completes, head stays, and finish() reports the frames as lost.
    let m = canary_mem();
    post_all(&m, 16);
    let before: Vec<[u8; 16]> = (0..16).map(|i| read_desc(&m, i)).collect();
    let mut r = ring(16, 0, 15);
    let view = ReadOnlyRing(&m);
    let mut burst = RxBurst::new(&mut r, RxLayout::from_srrctl(0x0200_0002), &view, 3);
    for _ in 0..3 {
        assert!(burst.push(&[0xab; 100], RxMeta::default()).is_ok());
    }
    assert_eq!(
        burst.finish(),
        RxBurstLoss {
            frames: 3,
            bytes: 300
        }
    );
    assert_eq!(r.head, 0);
    let after: Vec<[u8; 16]> = (0..16).map(|i| read_desc(&m, i)).collect();
    assert_eq!(before, after, "no descriptor completed");
}
