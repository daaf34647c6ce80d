//! MAC addresses: parsing, formatting, and the stable per-VF assignment.
//!
//! A VF without a configured MAC gets one derived from (node name, PF name, VF index): the same
//! config on the same node yields the same MACs across restarts, so guests keep their
//! addresses (and DHCP leases). The first octet is 0x02: unicast, locally administered, so
//! it can never clash with a vendor-assigned (OUI) address.

use std::collections::HashSet;
use std::fmt;

/// A MAC address as six bytes in wire order.
pub type Mac = [u8; 6];

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-` separators); `None` if malformed.
pub fn parse_mac(text: &str) -> Option<Mac> {
    let sep = if text.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut parts = text.split(sep);
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Lower-case, colon-separated text form, e.g. `02:1a:2b:3c:4d:5e`.
pub fn format_mac(mac: &Mac) -> String {
    MacDisplay(mac).to_string()
}

struct MacDisplay<'a>(&'a Mac);

impl fmt::Display for MacDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Group bit (I/G) of the first octet: set for multicast and broadcast.
pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 0x01 != 0
}

/// U/L bit of the first octet: set for locally administered addresses.
pub fn is_locally_administered(mac: &Mac) -> bool {
    mac[0] & 0x02 != 0
}

/// FNV-1a, 64 bit: tiny, stable across Rust versions and platforms (unlike `DefaultHasher`).
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in parts {
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
        // Separator, so that ("ab", "c") and ("a", "bc") hash differently.
        hash ^= 0xff;
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// MurmurHash3's 64-bit finalizer. FNV's low bits depend only on the inputs' low bits;
/// this spreads every input bit over the bytes we keep.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The `attempt`-th candidate MAC for VF `index` of PF `pf` on node `node`: 02:xx:xx:xx:xx:xx.
pub fn derived_mac(node: &str, pf: &str, index: u8, attempt: u32) -> Mac {
    let hash = fmix64(fnv1a64(&[
        b"emu-sriov/vf-mac/v1",
        node.as_bytes(),
        pf.as_bytes(),
        &[index],
        &attempt.to_le_bytes(),
    ]));
    let b = hash.to_be_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

/// One VF asking for a MAC: who it is, and the MAC it was configured with, if any.
#[derive(Debug, Clone)]
pub struct MacRequest<'a> {
    pub pf: &'a str,
    pub index: u8,
    pub explicit: Option<Mac>,
}

/// Gives every request a MAC, in order: explicit ones are kept (the caller has already
/// checked that they are unicast and distinct); the others get `derived_mac`, rehashed with
/// an increasing attempt counter until the MAC is unused. Deterministic in its input.
pub fn assign_macs(node: &str, requests: &[MacRequest<'_>]) -> Vec<Mac> {
    let mut used: HashSet<Mac> = requests.iter().filter_map(|r| r.explicit).collect();
    requests
        .iter()
        .map(|r| match r.explicit {
            Some(mac) => mac,
            None => {
                let mac = (0u32..)
                    .map(|attempt| derived_mac(node, r.pf, r.index, attempt))
                    .find(|mac| !used.contains(mac))
                    .unwrap_or_else(|| unreachable!("a 40-bit space cannot be exhausted by VFs"));
                used.insert(mac);
                mac
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(pf: &str, index: u8) -> MacRequest<'_> {
        MacRequest {
            pf,
            index,
            explicit: None,
        }
    }

    #[test]
    fn parse_and_format_round_trip() {
        let mac = parse_mac("02:00:0A:bb:cc:10").unwrap();
        assert_eq!(mac, [0x02, 0x00, 0x0a, 0xbb, 0xcc, 0x10]);
        assert_eq!(format_mac(&mac), "02:00:0a:bb:cc:10");
        assert_eq!(parse_mac("02-00-0a-bb-cc-10"), Some(mac));
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "0:00:00:00:00:00",
            "zz:00:00:00:00:00",
            "02:00-00:00:00:00",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn derived_macs_are_stable_unicast_and_local() {
        let a = derived_mac("node-a", "igb0", 0, 0);
        assert_eq!(a, derived_mac("node-a", "igb0", 0, 0));
        assert_eq!(a[0], 0x02);
        assert!(!is_multicast(&a));
        assert!(is_locally_administered(&a));
        assert_ne!(a, derived_mac("node-b", "igb0", 0, 0));
        assert_ne!(a, derived_mac("node-a", "igb1", 0, 0));
        assert_ne!(a, derived_mac("node-a", "igb0", 1, 0));
        assert_ne!(a, derived_mac("node-a", "igb0", 0, 1));
        // Pinned, so that an accidental change of the derivation (which would change every
        // deployed VF's MAC) fails a test.
        assert_eq!(format_mac(&a), "02:9f:2f:99:ae:66");
    }

    #[test]
    fn unique_over_many_pfs_and_vfs() {
        let names: Vec<String> = (0..7).map(|n| format!("igb{n}")).collect();
        let requests: Vec<_> = names
            .iter()
            .flat_map(|pf| (0..7).map(move |i| auto(pf, i)))
            .collect();
        let macs = assign_macs("node-a", &requests);
        assert_eq!(macs.len(), 49);
        assert_eq!(macs.iter().collect::<HashSet<_>>().len(), 49);
        assert!(macs.iter().all(|m| m[0] == 0x02));
        assert_eq!(macs, assign_macs("node-a", &requests), "not stable");
    }

    #[test]
    fn collisions_are_resolved_deterministically() {
        let taken = derived_mac("n", "igb0", 1, 0);
        let requests = [
            MacRequest {
                pf: "igb0",
                index: 0,
                explicit: Some(taken),
            },
            auto("igb0", 1),
        ];
        let macs = assign_macs("n", &requests);
        assert_eq!(macs[0], taken);
        assert_eq!(macs[1], derived_mac("n", "igb0", 1, 1));
        assert_eq!(macs, assign_macs("n", &requests));
    }
}
