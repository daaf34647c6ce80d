//! Receive-side scaling as an i40e-class VF does it: classify a frame into a packet
//! classifier type (PCTYPE) and an RX packet type (PTYPE), hash the classic input set with
//! Toeplitz when the PCTYPE's bit is set in HENA, and pick a queue through the LUT.
//!
//! Input sets (the X710 defaults): TCP/UDP/SCTP hash source address, destination address,
//! source port, destination port; other and fragmented IP hash the two addresses. L2_PAYLOAD
//! (non-IP) frames are classified but not hashed: they report no hash and go to queue 0.
//! UDP matches NONF_*_UDP (31/41) and also the X722 unicast/multicast UDP PCTYPEs
//! (29/30, 39/40) that iavf's expanded default HENA enables.
//!
//! No allocation: the hash input lives in a fixed array inside [`RssInput`].

use super::state::{RssCfg, MAX_QUEUE_PAIRS, RSS_LUT_SIZE};
use crate::ring::wire::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPV6_DSTOPTS, IPV6_FRAGMENT,
    IPV6_HOPOPTS, IPV6_ROUTING,
};
use emu_nic_defs::avf::{pctype, ptype};

/// Largest hash input: two IPv6 addresses and two ports.
pub const HASH_INPUT_MAX: usize = 36;

/// Extension headers walked before giving up (reported as "other").
const IPV6_MAX_EXT: usize = 4;

/// A classified frame and its Toeplitz input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssInput {
    /// i40e packet classifier type (HENA bit number).
    pub pctype: u8,
    /// RX descriptor PTYPE.
    pub ptype: u8,
    /// The destination address is multicast (selects the X722 multicast UDP PCTYPE).
    pub multicast: bool,
    /// Bytes of `bytes` that form the hash input (0: not hashable).
    pub len: usize,
    pub bytes: [u8; HASH_INPUT_MAX],
}

impl RssInput {
    /// The hash input.
    pub fn input(&self) -> &[u8] {
        &self.bytes[..self.len.min(HASH_INPUT_MAX)]
    }

    fn new(pctype: u8, ptype: u8) -> Self {
        RssInput {
            pctype,
            ptype,
            multicast: false,
            len: 0,
            bytes: [0; HASH_INPUT_MAX],
        }
    }

    /// Appends `data` to the hash input; false when it does not fit.
    fn push(&mut self, data: &[u8]) -> bool {
        let end = self.len + data.len();
        match self.bytes.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(data);
                self.len = end;
                true
            }
            None => false,
        }
    }

    /// HENA allows hashing this frame.
    fn hash_enabled(&self, hena: u64) -> bool {
        let bit = |p: u8| hena & (1u64 << (p & 63)) != 0;
        if self.len == 0 {
            return false;
        }
        bit(self.pctype)
            || match self.pctype {
                pctype::NONF_IPV4_UDP if self.multicast => bit(pctype::NONF_MULTICAST_IPV4_UDP),
                pctype::NONF_IPV4_UDP => bit(pctype::NONF_UNICAST_IPV4_UDP),
                pctype::NONF_IPV6_UDP if self.multicast => bit(pctype::NONF_MULTICAST_IPV6_UDP),
                pctype::NONF_IPV6_UDP => bit(pctype::NONF_UNICAST_IPV6_UDP),
                _ => false,
            }
    }
}

/// The Microsoft RSS Toeplitz hash of `input` under `key` (key bytes beyond the end read
/// as zero, so any key length is accepted).
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let kb = |i: usize| key.get(i).copied().unwrap_or(0);
    // Key bits [8n + b, 8n + b + 32) while input bit b of byte n is examined.
    let mut window = u32::from_be_bytes([kb(0), kb(1), kb(2), kb(3)]);
    let mut hash = 0u32;
    for (n, &byte) in input.iter().enumerate() {
        let next = kb(n + 4);
        for b in 0..8 {
            if byte & (0x80 >> b) != 0 {
                hash ^= window;
            }
            window = (window << 1) | u32::from((next >> (7 - b)) & 1);
        }
    }
    hash
}

fn be16(f: &[u8], at: usize) -> Option<u16> {
    let b = f.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Classifies an Ethernet frame (up to two 802.1Q/802.1ad tags) and gathers its hash input.
/// `None` for a frame too short to hold an Ethernet header.
pub fn classify(frame: &[u8]) -> Option<RssInput> {
    let mut off = 12;
    let mut ethertype = be16(frame, off)?;
    for _ in 0..2 {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        off += 4;
        ethertype = be16(frame, off)?;
    }
    let l3 = off + 2;
    let l2 = RssInput::new(pctype::L2_PAYLOAD, ptype::L2_PAY2);
    Some(match ethertype {
        ETHERTYPE_IPV4 => classify_ipv4(frame, l3).unwrap_or(l2),
        ETHERTYPE_IPV6 => classify_ipv6(frame, l3).unwrap_or(l2),
        ETHERTYPE_ARP => RssInput::new(pctype::L2_PAYLOAD, ptype::L2_ARP),
        _ => l2,
    })
}

/// (pctype, ptype) for an L4 protocol, by IP version.
fn l4_types(proto: u8, v6: bool) -> (u8, u8, bool) {
    // The bool: the protocol has ports in the hash input.
    match (proto, v6) {
        (IPPROTO_TCP, false) => (pctype::NONF_IPV4_TCP, ptype::IPV4_TCP, true),
        (IPPROTO_UDP, false) => (pctype::NONF_IPV4_UDP, ptype::IPV4_UDP, true),
        (IPPROTO_SCTP, false) => (pctype::NONF_IPV4_SCTP, ptype::IPV4_SCTP, true),
        (IPPROTO_ICMP, false) => (pctype::NONF_IPV4_OTHER, ptype::IPV4_ICMP, false),
        (_, false) => (pctype::NONF_IPV4_OTHER, ptype::IPV4_OTHER, false),
        (IPPROTO_TCP, true) => (pctype::NONF_IPV6_TCP, ptype::IPV6_TCP, true),
        (IPPROTO_UDP, true) => (pctype::NONF_IPV6_UDP, ptype::IPV6_UDP, true),
        (IPPROTO_SCTP, true) => (pctype::NONF_IPV6_SCTP, ptype::IPV6_SCTP, true),
        (IPPROTO_ICMPV6, true) => (pctype::NONF_IPV6_OTHER, ptype::IPV6_ICMP, false),
        (_, true) => (pctype::NONF_IPV6_OTHER, ptype::IPV6_OTHER, false),
    }
}

/// Adds the ports at `l4` when present; otherwise downgrades to "other".
fn finish_l4(mut inp: RssInput, frame: &[u8], l4: usize, proto: u8, v6: bool) -> Option<RssInput> {
    let (pc, pt, ports) = l4_types(proto, v6);
    match frame.get(l4..l4.checked_add(4)?) {
        Some(p) if ports => {
            inp.pctype = pc;
            inp.ptype = pt;
            inp.push(p).then_some(inp)
        }
        Some(_) => {
            inp.pctype = pc;
            inp.ptype = pt;
            Some(inp)
        }
        None => {
            let (pc, pt, _) = l4_types(0xFF, v6);
            inp.pctype = pc;
            inp.ptype = pt;
            Some(inp)
        }
    }
}

fn classify_ipv4(frame: &[u8], ip: usize) -> Option<RssInput> {
    let ver_ihl = *frame.get(ip)?;
    let ihl = usize::from(ver_ihl & 0xF) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 || frame.len() < ip + ihl {
        return None;
    }
    let mut inp = RssInput::new(pctype::NONF_IPV4_OTHER, ptype::IPV4_OTHER);
    let addrs = frame.get(ip + 12..ip + 20)?;
    inp.push(addrs);
    inp.multicast = addrs[4] & 0xF0 == 0xE0;
    let frag = be16(frame, ip + 6)? & 0x3FFF != 0;
    if frag {
        inp.pctype = pctype::FRAG_IPV4;
        inp.ptype = ptype::IPV4_FRAG;
        return Some(inp);
    }
    finish_l4(inp, frame, ip + ihl, *frame.get(ip + 9)?, false)
}

fn classify_ipv6(frame: &[u8], ip: usize) -> Option<RssInput> {
    if *frame.get(ip)? >> 4 != 6 {
        return None;
    }
    let mut inp = RssInput::new(pctype::NONF_IPV6_OTHER, ptype::IPV6_OTHER);
    let addrs = frame.get(ip + 8..ip + 40)?;
    inp.push(addrs);
    inp.multicast = addrs[16] == 0xFF;
    let mut next = *frame.get(ip + 6)?;
    let mut off = ip + 40;
    for _ in 0..IPV6_MAX_EXT {
        match next {
            IPV6_FRAGMENT => {
                inp.pctype = pctype::FRAG_IPV6;
                inp.ptype = ptype::IPV6_FRAG;
                return Some(inp);
            }
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let hdr = frame.get(off..off + 2)?;
                next = hdr[0];
                off += (usize::from(hdr[1]) + 1) * 8;
            }
            _ => return finish_l4(inp, frame, off, next, true),
        }
    }
    Some(inp)
}

/// Picks the RX queue for `frame`: `(queue, hash when hashed, ptype)`.
///
/// The frame is hashed only when its PCTYPE is enabled in `rss.hena`; then the queue is
/// `lut[hash % 64] % num_queues`. Unhashed frames go to queue 0.
pub fn rss_queue(rss: &RssCfg, num_queues: usize, frame: &[u8]) -> (usize, Option<u32>, u8) {
    let Some(inp) = classify(frame) else {
        return (0, None, ptype::L2_PAY2);
    };
    if !inp.hash_enabled(rss.hena) {
        return (0, None, inp.ptype);
    }
    let hash = toeplitz(&rss.key, inp.input());
    let entry = usize::from(rss.lut[hash as usize % RSS_LUT_SIZE]);
    let queues = num_queues.clamp(1, MAX_QUEUE_PAIRS);
    (entry % queues, Some(hash), inp.ptype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avf::state::RSS_KEY_SIZE;

    const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    /// (src ip, src port, dst ip, dst port, IPv4-only hash, TCP hash) from the Microsoft
    /// "Verifying the RSS Hash Calculation" table.
    type Vector = ([u8; 4], u16, [u8; 4], u16, u32, u32);
    const V4: [Vector; 5] = [
        (
            [66, 9, 149, 187],
            2794,
            [161, 142, 100, 80],
            1766,
            0x323e_8fc2,
            0x51cc_c178,
        ),
        (
            [199, 92, 111, 2],
            14230,
            [65, 69, 140, 83],
            4739,
            0xd718_262a,
            0xc626_b0ea,
        ),
        (
            [24, 19, 198, 95],
            12898,
            [12, 22, 207, 184],
            38024,
            0xd2d0_a5de,
            0x5c2b_394a,
        ),
        (
            [38, 27, 205, 30],
            48228,
            [209, 142, 163, 6],
            2217,
            0x8298_9176,
            0xafc7_327f,
        ),
        (
            [153, 39, 163, 191],
            44251,
            [202, 188, 127, 2],
            1303,
            0x5d18_09c5,
            0x10e8_28a2,
        ),
    ];

    fn cfg_with_ms_key(hena: u64) -> RssCfg {
        let mut c = RssCfg::default();
        c.key[..40].copy_from_slice(&MS_KEY);
        c.hena = hena;
        c
    }

    fn ipv4_frame(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, proto: u8, vlan: bool) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        }
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sp.to_be_bytes());
        f.extend_from_slice(&dp.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        f
    }

    #[test]
    fn microsoft_ipv4_vectors() {
        for (src, sp, dst, dp, h_ip, h_tcp) in V4 {
            let mut input = [0u8; 12];
            input[..4].copy_from_slice(&src);
            input[4..8].copy_from_slice(&dst);
            input[8..10].copy_from_slice(&sp.to_be_bytes());
            input[10..].copy_from_slice(&dp.to_be_bytes());
            assert_eq!(toeplitz(&MS_KEY, &input[..8]), h_ip);
            assert_eq!(toeplitz(&MS_KEY, &input), h_tcp);
            // Through the classifier, with and without a VLAN tag.
            let cfg = cfg_with_ms_key(1 << pctype::NONF_IPV4_TCP | 1 << pctype::NONF_IPV4_OTHER);
            for vlan in [false, true] {
                let f = ipv4_frame(src, sp, dst, dp, IPPROTO_TCP, vlan);
                assert_eq!(rss_queue(&cfg, 1, &f), (0, Some(h_tcp), ptype::IPV4_TCP));
                let f = ipv4_frame(src, sp, dst, dp, 47, vlan);
                assert_eq!(rss_queue(&cfg, 1, &f), (0, Some(h_ip), ptype::IPV4_OTHER));
            }
        }
    }

    #[test]
    fn microsoft_ipv6_vector() {
        // 3ffe:2501:200:1fff::7 port 2794 → 3ffe:2501:200:3::1 port 1766.
        let src = [
            0x3f, 0xfe, 0x25, 0x01, 0x02, 0, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 7,
        ];
        let dst = [
            0x3f, 0xfe, 0x25, 0x01, 0x02, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0, 1,
        ];
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, IPPROTO_TCP, 64]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&2794u16.to_be_bytes());
        f.extend_from_slice(&1766u16.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        let inp = classify(&f).unwrap();
        assert_eq!(
            (inp.pctype, inp.ptype, inp.len),
            (pctype::NONF_IPV6_TCP, ptype::IPV6_TCP, 36)
        );
        assert_eq!(toeplitz(&MS_KEY, &inp.input()[..32]), 0x2cc1_8cd5);
        assert_eq!(toeplitz(&MS_KEY, inp.input()), 0x4020_7d3d);
        let cfg = cfg_with_ms_key(1 << pctype::NONF_IPV6_TCP);
        assert_eq!(rss_queue(&cfg, 4, &f).1, Some(0x4020_7d3d));
    }

    #[test]
    fn classification_and_hena_gating() {
        let f = ipv4_frame([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, IPPROTO_UDP, false);
        let cfg = cfg_with_ms_key(0);
        assert_eq!(
            rss_queue(&cfg, 4, &f),
            (0, None, ptype::IPV4_UDP),
            "HENA off: no hash"
        );
        let cfg = cfg_with_ms_key(1 << pctype::NONF_UNICAST_IPV4_UDP);
        assert!(
            rss_queue(&cfg, 4, &f).1.is_some(),
            "X722 unicast UDP PCTYPE"
        );
        let mc = ipv4_frame([10, 0, 0, 1], 1, [239, 0, 0, 2], 2, IPPROTO_UDP, false);
        assert!(rss_queue(&cfg, 4, &mc).1.is_none());
        let cfg = cfg_with_ms_key(1 << pctype::NONF_MULTICAST_IPV4_UDP);
        assert!(rss_queue(&cfg, 4, &mc).1.is_some());
        // Fragments hash on addresses only.
        let mut frag = f.clone();
        frag[20] = 0x20; // MF
        let inp = classify(&frag).unwrap();
        assert_eq!(
            (inp.pctype, inp.ptype, inp.len),
            (pctype::FRAG_IPV4, ptype::IPV4_FRAG, 8)
        );
        // Non-IP and ARP: classified, never hashed.
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let all = cfg_with_ms_key(u64::MAX);
        assert_eq!(rss_queue(&all, 4, &arp), (0, None, ptype::L2_ARP));
        assert_eq!(rss_queue(&all, 4, &f[..13]), (0, None, ptype::L2_PAY2));
        // Truncated L4: other.
        let inp = classify(&f[..36]).unwrap();
        assert_eq!(inp.ptype, ptype::IPV4_OTHER);
        assert_eq!(classify(&f[..30]).unwrap().ptype, ptype::L2_PAY2);
    }

    #[test]
    fn flows_spread_over_queues() {
        let mut cfg = cfg_with_ms_key(1 << pctype::NONF_IPV4_TCP);
        for (i, e) in cfg.lut.iter_mut().enumerate() {
            *e = (i % 4) as u8;
        }
        let mut hits = [0usize; 4];
        for port in 0..256u16 {
            let f = ipv4_frame(
                [10, 0, 0, 1],
                1000 + port,
                [10, 0, 0, 2],
                80,
                IPPROTO_TCP,
                false,
            );
            let (q, h, _) = rss_queue(&cfg, 4, &f);
            assert_eq!(q, usize::from(cfg.lut[h.unwrap() as usize % 64]));
            hits[q] += 1;
        }
        assert!(hits.iter().all(|&n| n > 30), "{hits:?}");
        // LUT entries beyond the queue count wrap; zero queues behaves as one.
        cfg.lut = [7; RSS_LUT_SIZE];
        let f = ipv4_frame([10, 0, 0, 1], 1, [10, 0, 0, 2], 80, IPPROTO_TCP, false);
        assert_eq!(rss_queue(&cfg, 4, &f).0, 3);
        assert_eq!(rss_queue(&cfg, 0, &f).0, 0);
        assert_eq!(cfg.key.len(), RSS_KEY_SIZE);
    }

    #[test]
    fn hostile_frames_never_panic() {
        let cfg = cfg_with_ms_key(u64::MAX);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = [0u8; 128];
        for n in 0..50_000 {
            for b in buf.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            // Bias towards IP ethertypes and long IPv6 extension chains.
            match n % 4 {
                0 => buf[12..14].copy_from_slice(&[0x08, 0x00]),
                1 => {
                    buf[12..15].copy_from_slice(&[0x86, 0xdd, 0x60]);
                    buf[20] = [0, 43, 44, 60][n % 3];
                }
                2 => buf[12..14].copy_from_slice(&[0x81, 0x00]),
                _ => {}
            }
            let len = (seed >> 57) as usize;
            let (q, _, _) = rss_queue(&cfg, 4, &buf[..len]);
            assert!(q < 4);
        }
    }
}
