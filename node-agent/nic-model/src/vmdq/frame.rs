//! Checked parsing of the Ethernet/802.1Q header of an untrusted frame, and the MTA hash.
//!
//! Frames are plain byte slices without FCS (the dataplane never sees the FCS). Every access is
//! length-checked first; nothing here can panic on any input.

use super::{DropReason, MacAddr};

/// Ethernet header length: destination, source, ethertype.
pub const ETH_HLEN: usize = 14;
/// Length of one 802.1Q tag (TPID + TCI).
pub const VLAN_HLEN: usize = 4;
/// Frame check sequence length. Frames here never carry it, but `max_frame` (RLPML) counts it.
pub const ETH_FCS_LEN: usize = 4;
/// The 802.1Q TPID. The 82576 recognises one tag with the TPID in VET, 0x8100 by default; we do
/// not model double VLAN (CTRL_EXT b26), so an 0x88A8 outer tag is just an ethertype.
pub const ETH_P_8021Q: u16 = 0x8100;
/// VLAN ID bits of a TCI.
pub const VLAN_VID_MASK: u16 = 0x0fff;
/// The broadcast address.
pub const BROADCAST: MacAddr = [0xff; 6];

/// The L2 header fields the switch decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Header {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The TCI of the outer 802.1Q tag, if the frame carries one.
    pub tci: Option<u16>,
}

impl L2Header {
    /// Parses the header of `frame`.
    ///
    /// # Errors
    /// [`DropReason::Runt`] when the frame is shorter than 14 bytes, or carries an 0x8100 TPID
    /// but is too short to hold the tag and the inner ethertype (18 bytes).
    pub fn parse(frame: &[u8]) -> Result<Self, DropReason> {
        let (Some(dst), Some(src), Some(tpid)) =
            (frame.get(0..6), frame.get(6..12), frame.get(12..14))
        else {
            return Err(DropReason::Runt);
        };
        let mut h = Self {
            dst: to_mac(dst),
            src: to_mac(src),
            tci: None,
        };
        if u16::from_be_bytes([tpid[0], tpid[1]]) == ETH_P_8021Q {
            // A tag must be followed by the inner ethertype to be a valid frame.
            let Some(tag) = frame.get(14..ETH_HLEN + VLAN_HLEN) else {
                return Err(DropReason::Runt);
            };
            h.tci = Some(u16::from_be_bytes([tag[0], tag[1]]));
        }
        Ok(h)
    }

    /// The VLAN ID of the outer tag, if any.
    pub fn vid(&self) -> Option<u16> {
        self.tci.map(|t| t & VLAN_VID_MASK)
    }
}

fn to_mac(b: &[u8]) -> MacAddr {
    // Callers pass a 6-byte sub-slice; a wrong length gives the zero MAC, never a panic.
    b.try_into().unwrap_or([0; 6])
}

/// Whether `mac` is a group (multicast or broadcast) address: I/G bit, bit 0 of byte 0.
pub fn is_multicast(mac: &MacAddr) -> bool {
    mac[0] & 1 != 0
}

/// Whether `mac` is a usable unicast station address: not group, not all-zero.
pub fn is_valid_unicast(mac: &MacAddr) -> bool {
    !is_multicast(mac) && *mac != [0; 6]
}

/// The 12-bit multicast table hash igbvf sends in SET_MULTICAST (devices.md §2.5).
///
/// Linux `igbvf/vf.c` `e1000_hash_mc_addr_vf` with `mta_reg_count = 128`
/// (`e1000_init_mac_params_vf`): hash_mask = 128 * 32 - 1 = 0xfff, so bit_shift = 4 (the shift
/// where `0xfff >> shift == 0xff`), and the hash is
/// `((addr[4] >> 4) | (addr[5] << 4)) & 0xfff` — the upper 12 bits of the last two address bytes
/// (little-endian), which is the 82576 RCTL.MO = 0 filter (QEMU `igb_receive_assign`,
/// `ta_shift[0] = 4`).
pub fn mta_hash(mac: &MacAddr) -> u16 {
    ((u16::from(mac[4]) >> 4) | (u16::from(mac[5]) << 4)) & 0x0fff
}

/// Writes `frame` with an 802.1Q tag `tci` inserted after the MAC addresses into `out`
/// (the port-VLAN insertion of VMVIR, devices.md §4.1) and returns the new length.
///
/// Returns `None`, leaving `out` unspecified, when `frame` is a runt (< 14 bytes) or `out` is
/// shorter than `frame.len() + 4`. Never allocates.
pub fn write_vlan_tagged(frame: &[u8], tci: u16, out: &mut [u8]) -> Option<usize> {
    let len = frame.len().checked_add(VLAN_HLEN)?;
    if frame.len() < ETH_HLEN {
        return None;
    }
    let out = out.get_mut(..len)?;
    let (macs, rest) = frame.split_at(12);
    out[..12].copy_from_slice(macs);
    out[12..14].copy_from_slice(&ETH_P_8021Q.to_be_bytes());
    out[14..16].copy_from_slice(&tci.to_be_bytes());
    out[16..].copy_from_slice(rest);
    Some(len)
}

/// Writes `frame` without its outer 802.1Q tag into `out` (RX VLAN strip, devices.md §4.2 RX 6)
/// and returns the new length; `None` when the frame is not tagged (or is a runt) or `out` is too
/// short. Never allocates.
pub fn write_vlan_stripped(frame: &[u8], out: &mut [u8]) -> Option<usize> {
    L2Header::parse(frame).ok()?.tci?;
    let len = frame.len() - VLAN_HLEN; // parse guaranteed len >= 18
    let out = out.get_mut(..len)?;
    out[..12].copy_from_slice(frame.get(..12)?);
    out[12..].copy_from_slice(frame.get(16..)?);
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mta_hash_known_vectors() {
        // 01:00:5e:00:00:01 (all-hosts): addr[4] = 0x00, addr[5] = 0x01
        // hash = (0x00 >> 4) | (0x01 << 4) = 0x010.
        assert_eq!(mta_hash(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]), 0x010);
        // 33:33:ff:12:34:56 (IPv6 solicited-node): addr[4] = 0x34, addr[5] = 0x56
        // hash = (0x34 >> 4) | (0x56 << 4) = 0x003 | 0x560 = 0x563.
        assert_eq!(mta_hash(&[0x33, 0x33, 0xff, 0x12, 0x34, 0x56]), 0x563);
        // addr[5] = 0xff, addr[4] = 0xf0: (0xf) | (0xff0) = 0xfff; the top bits of addr[5]
        // (shifted past bit 11) are masked away.
        assert_eq!(mta_hash(&[0x01, 0, 0, 0, 0xf0, 0xff]), 0xfff);
    }

    #[test]
    fn parse_untagged_and_tagged() {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        f[6..12].copy_from_slice(&[0xa, 0xb, 0xc, 0xd, 0xe, 0xf]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let h = L2Header::parse(&f).unwrap();
        assert_eq!(h.dst, [1, 2, 3, 4, 5, 6]);
        assert_eq!(h.src, [0xa, 0xb, 0xc, 0xd, 0xe, 0xf]);
        assert_eq!(h.tci, None);
        f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        f[14..16].copy_from_slice(&0xe064u16.to_be_bytes()); // PCP 7, VID 100
        let h = L2Header::parse(&f).unwrap();
        assert_eq!(h.tci, Some(0xe064));
        assert_eq!(h.vid(), Some(100));
    }

    #[test]
    fn hostile_lengths_never_panic() {
        for len in 0..=20 {
            let mut f = vec![0xffu8; len];
            let r = L2Header::parse(&f);
            assert_eq!(r.is_err(), len < ETH_HLEN, "len {len}");
            if len >= 14 {
                f[12] = 0x81;
                f[13] = 0x00;
                assert_eq!(L2Header::parse(&f).is_err(), len < 18, "tagged len {len}");
            }
            let mut out = [0u8; 32];
            let _ = write_vlan_tagged(&f, 5, &mut out);
            let _ = write_vlan_stripped(&f, &mut out);
            let _ = write_vlan_stripped(&f, &mut []);
            let _ = write_vlan_tagged(&f, 5, &mut []);
        }
        // 0xffff ethertype is just an ethertype.
        let f = [0xffu8; 14];
        assert_eq!(L2Header::parse(&f).unwrap().tci, None);
    }

    #[test]
    fn tag_insert_strip_roundtrip() {
        let f: Vec<u8> = (0u8..64).collect();
        let mut tagged = [0u8; 68];
        assert_eq!(write_vlan_tagged(&f, 0x0123, &mut tagged), Some(68));
        assert_eq!(L2Header::parse(&tagged).unwrap().tci, Some(0x0123));
        let mut back = [0u8; 64];
        assert_eq!(write_vlan_stripped(&tagged, &mut back), Some(64));
        assert_eq!(&back[..], &f[..]);
        assert_eq!(write_vlan_tagged(&f, 1, &mut [0u8; 67]), None);
        assert_eq!(write_vlan_stripped(&f, &mut back), None);
    }
}
