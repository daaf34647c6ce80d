//! The switch decision of the previous frame, reused for the frames after it from the same
//! port with the same L2 header: within a burst one flow is the common case, and one 16-byte
//! compare replaces the filter walk.
//!
//! Only the plainest decision is kept: the frame goes unchanged to exactly one VF port — no
//! VLAN tag inserted or stripped, no pool refusing it, nothing for the uplink. Under the VMDq
//! rules ([`emu_nic_model::vmdq`]) that decision depends on the frame only through its
//! destination and source MACs, its 802.1Q tag if it carries one, and its length (against the
//! destination's maximum frame). So a frame with the same [`HeaderKey`] and a length within
//! the remembered bound gets the same decision. The owner forgets it whenever the switch table
//! or the source port changes (the engine: at every source port's burst).

/// Bytes 0..16 of a frame as two little-endian words, with bytes 14..16 zeroed unless bytes
/// 12..14 are the 802.1Q TPID (then they hold the TCI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderKey([u64; 2]);

/// 0x8100 as it reads from bytes 12..14 in the high half of the second little-endian word.
const TPID_LE: u64 = 0x0081;

impl HeaderKey {
    /// The key of `frame`; `None` for frames shorter than 16 bytes (they take the full path).
    #[inline]
    pub fn of(frame: &[u8]) -> Option<Self> {
        let (a, rest) = frame.split_first_chunk::<8>()?;
        let (b, _) = rest.split_first_chunk::<8>()?;
        let (a, mut b) = (u64::from_le_bytes(*a), u64::from_le_bytes(*b));
        if (b >> 32) & 0xFFFF != TPID_LE {
            b &= 0x0000_FFFF_FFFF_FFFF;
        }
        Some(HeaderKey([a, b]))
    }
}

/// The last plain unicast decision of a burst.
#[derive(Debug, Default)]
pub struct LastDecision {
    entry: Option<Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: HeaderKey,
    /// Longest frame the decision holds for (the destination's `max_frame` less the FCS).
    max_len: usize,
    dst: u16,
}

impl Entry {
    /// Whether the decision holds for `frame`: same key, length within the bound.
    #[inline(always)]
    fn covers(&self, frame: &[u8]) -> bool {
        frame.len() <= self.max_len && HeaderKey::of(frame).is_some_and(|k| k == self.key)
    }
}

impl LastDecision {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the decision (new source port or new switch table).
    #[inline]
    pub fn clear(&mut self) {
        self.entry = None;
    }

    /// The destination port of `frame` if it repeats the remembered decision.
    #[inline]
    pub fn lookup(&self, frame: &[u8]) -> Option<u16> {
        let e = self.entry.as_ref()?;
        e.covers(frame).then_some(e.dst)
    }

    /// How many frames in a row repeat the remembered decision, and its destination: the
    /// frames are `bytes[start..ends[0]]`, `bytes[ends[0]..ends[1]]`, … (a burst arena).
    /// `(_, 0)` when the first one does not (or nothing is remembered).
    #[inline]
    pub fn repeats(&self, bytes: &[u8], start: usize, ends: &[usize]) -> (u16, usize) {
        let Some(e) = self.entry.as_ref() else {
            return (0, 0);
        };
        let (mut from, mut k) = (start, 0);
        for &end in ends {
            if !bytes.get(from..end).is_some_and(|f| e.covers(f)) {
                break;
            }
            k += 1;
            from = end;
        }
        (e.dst, k)
    }

    /// Remembers that `frame` goes unchanged to port `dst` alone, which takes frames of up to
    /// `max_len` bytes. The caller vouches that the decision is the plain one described above.
    pub fn remember(&mut self, frame: &[u8], dst: u16, max_len: usize) {
        self.entry = HeaderKey::of(frame).map(|key| Entry { key, max_len, dst });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emu_nic_model::vmdq::{
        rx_targets, rx_vlan_action, tx_check, PoolFilter, RxTargets, SwitchTable, VlanSet,
    };

    fn frame(dst: u8, src: u8, ethertype: u16, tci: u16, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].fill(dst);
        f[6..12].fill(src);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f[14..16].copy_from_slice(&tci.to_be_bytes());
        f
    }

    #[test]
    fn key_ignores_the_payload_of_untagged_frames_but_not_the_tag() {
        let a = frame(2, 4, 0x0800, 0x4500, 64);
        let b = frame(2, 4, 0x0800, 0x4600, 64);
        assert_eq!(
            HeaderKey::of(&a),
            HeaderKey::of(&b),
            "bytes 14..16 are payload"
        );
        let t1 = frame(2, 4, 0x8100, 10, 64);
        let t2 = frame(2, 4, 0x8100, 11, 64);
        assert_ne!(
            HeaderKey::of(&t1),
            HeaderKey::of(&t2),
            "TCI is part of the key"
        );
        assert_ne!(
            HeaderKey::of(&a),
            HeaderKey::of(&frame(2, 4, 0x86dd, 0x4500, 64))
        );
        assert_ne!(
            HeaderKey::of(&a),
            HeaderKey::of(&frame(3, 4, 0x0800, 0x4500, 64))
        );
        assert_ne!(
            HeaderKey::of(&a),
            HeaderKey::of(&frame(2, 5, 0x0800, 0x4500, 64))
        );
        assert_eq!(HeaderKey::of(&a[..15]), None);
    }

    #[test]
    fn lookup_hits_only_the_same_header_within_the_length_bound() {
        let mut c = LastDecision::new();
        let f = frame(2, 4, 0x0800, 0, 100);
        assert_eq!(c.lookup(&f), None, "empty");
        c.remember(&f, 7, 1518);
        assert_eq!(c.lookup(&f), Some(7));
        assert_eq!(c.lookup(&frame(2, 4, 0x0800, 0, 1518)), Some(7));
        assert_eq!(c.lookup(&frame(2, 4, 0x0800, 0, 1519)), None, "oversize");
        assert_eq!(c.lookup(&frame(9, 4, 0x0800, 0, 100)), None);
        assert_eq!(c.lookup(&f[..14]), None, "short frames never hit");
        c.clear();
        assert_eq!(c.lookup(&f), None);
        c.remember(&f[..10], 7, 1518);
        assert_eq!(c.lookup(&f), None, "a short frame is never remembered");
    }

    #[test]
    fn repeats_counts_the_run_of_frames_that_hit() {
        let mut c = LastDecision::new();
        let (a, b) = (frame(2, 4, 0x0800, 0, 100), frame(3, 4, 0x0800, 0, 100));
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for f in [&a, &a, &a, &b, &a] {
            bytes.extend_from_slice(f);
            ends.push(bytes.len());
        }
        assert_eq!(c.repeats(&bytes, 0, &ends).1, 0, "nothing remembered");
        c.remember(&a, 5, 1518);
        assert_eq!(
            c.repeats(&bytes, 0, &ends),
            (5, 3),
            "stops at the other header"
        );
        assert_eq!(c.repeats(&bytes, 300, &ends[3..]).1, 0);
        assert_eq!(c.repeats(&bytes, 400, &ends[4..]), (5, 1));
        assert_eq!(c.repeats(&bytes, 0, &[]).1, 0);
        assert_eq!(
            c.repeats(&bytes, 0, &[9999]).1,
            0,
            "out-of-range ends never hit"
        );
        c.remember(&a, 5, 99);
        assert_eq!(c.repeats(&bytes, 0, &ends).1, 0, "over the length bound");
    }

    /// The plain decision for `frame` from `src` under the full VMDq rules, as the engine
    /// takes it: `Some(port)` when the frame goes unchanged to that one port alone.
    fn plain(t: &SwitchTable, src: usize, frame: &[u8]) -> Option<usize> {
        if tx_check(t, src, frame) != Ok(None) {
            return None;
        }
        let mut out = RxTargets::new();
        rx_targets(t, Some(src), frame, &mut out);
        if out.drop.is_some() || out.to_default || out.any_rejected {
            return None;
        }
        let p = out.ports.single()?;
        rx_vlan_action(t.port(p)?, frame).is_none().then_some(p)
    }

    #[test]
    fn a_plain_decision_holds_for_every_frame_with_its_key_and_a_length_within_bound() {
        // The premise of LastDecision, checked against the switch rules themselves: random
        // tables (VLAN membership, port VLANs, stripping, spoof checks, max frame sizes,
        // promiscuous pools, loopback, uplink) and random frames. Whenever a frame's decision
        // is plain to port p, every frame with the same key and a length up to p's max_len
        // must get exactly the same full decision, and the cache must return p for it.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mac = |n: u64| [0x02, 0, 0, 0, 0, (n % 6) as u8];
        let mut plain_seen = 0;
        for round in 0..12000 {
            let mut t = SwitchTable::new();
            for p in 0..5usize {
                let r = rnd();
                let mut vlans = VlanSet::EMPTY;
                for _ in 0..(r % 3) {
                    vlans.insert((rnd() % 4) as u16);
                }
                let f = PoolFilter {
                    macs: vec![mac(p as u64)],
                    vlans,
                    port_vlan: (r >> 8).is_multiple_of(5).then_some((rnd() % 4) as u16),
                    accept_untagged: !(r >> 12).is_multiple_of(4),
                    broadcast: (r >> 16).is_multiple_of(2),
                    uc_promisc: (r >> 20).is_multiple_of(7),
                    mc_promisc: (r >> 24).is_multiple_of(5),
                    strip_vlan: (r >> 28).is_multiple_of(3),
                    max_frame: 60 + (rnd() % 1500) as u32,
                    spoofchk: !(r >> 32).is_multiple_of(3),
                    rx_enabled: !(r >> 36).is_multiple_of(6),
                    tx_enabled: !(r >> 40).is_multiple_of(6),
                    ..PoolFilter::closed()
                };
                t.set_port(p, Some(f)).unwrap();
            }
            t.set_loopback(!rnd().is_multiple_of(5));
            if rnd().is_multiple_of(2) {
                t.set_default_port(Some(7)).unwrap();
            }
            let src = (rnd() % 5) as usize;
            let header = |r: &mut dyn FnMut() -> u64| {
                let mut h = vec![0u8; 16];
                let dst = match r() % 4 {
                    0 => [0xff; 6],
                    1 => [0x01, 0, 0x5e, 0, 0, (r() % 3) as u8],
                    _ => mac(r()),
                };
                h[..6].copy_from_slice(&dst);
                h[6..12].copy_from_slice(&mac(r()));
                let tagged = r().is_multiple_of(3);
                h[12..14].copy_from_slice(&(if tagged { 0x8100u16 } else { 0x0800 }).to_be_bytes());
                h[14..16]
                    .copy_from_slice(&((r() % 5) as u16 | ((r() % 2) as u16) << 13).to_be_bytes());
                h
            };
            let h = header(&mut rnd);
            let mut a = h.clone();
            a.resize(16 + (rnd() % 1600) as usize, 0xa5);
            let Some(p) = plain(&t, src, &a) else {
                continue;
            };
            plain_seen += 1;
            let mut c = LastDecision::new();
            c.remember(&a, p as u16, t.port(p).unwrap().max_len());
            for _ in 0..8 {
                let mut b = h.clone();
                match rnd() % 4 {
                    // Another TCI, or the tag added or removed: a different key unless the
                    // frame is untagged either way.
                    0 => b[14..16].copy_from_slice(&(rnd() as u16).to_be_bytes()),
                    1 => {
                        let tagged = (b[12], b[13]) == (0x81, 0x00);
                        b[12..14].copy_from_slice(
                            &(if tagged { 0x0800u16 } else { 0x8100 }).to_be_bytes(),
                        );
                    }
                    _ => {}
                }
                if (b[12], b[13]) != (0x81, 0x00) {
                    // Untagged: bytes 14..16 are payload and may differ.
                    b[14] = rnd() as u8;
                    b[15] = rnd() as u8;
                }
                b.resize(16 + (rnd() % 1700) as usize, rnd() as u8);
                let same_key = HeaderKey::of(&b) == HeaderKey::of(&a);
                match c.lookup(&b) {
                    Some(d) => assert_eq!(
                        plain(&t, src, &b),
                        Some(usize::from(d)),
                        "round {round}: a cache hit must be the full decision"
                    ),
                    None => assert!(
                        !same_key || b.len() > t.port(p).unwrap().max_len(),
                        "round {round}: same key within bound must hit"
                    ),
                }
            }
            // A different header never hits.
            let other = header(&mut rnd);
            if HeaderKey::of(&other) != HeaderKey::of(&a) {
                assert_eq!(c.lookup(&other), None);
            }
        }
        assert!(
            plain_seen > 150,
            "the random tables must produce plain decisions ({plain_seen})"
        );
    }
}
