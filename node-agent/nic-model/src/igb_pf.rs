//! The igb (82576) PF as the agent plays it: answers each VF's mailbox the way the Linux igb
//! PF driver does (`igb_main.c` `igb_rcv_msg_from_vf`) and owns the VMDq filter state of the
//! VF pools. The agent's own per-VF settings (MAC, port VLAN, spoof check, trust) are applied
//! here too, like `ip link set PF vf N ...`.
//!
//! Differences from Linux, on purpose:
//! - An untrusted VF re-announcing its administratively assigned MAC gets ACK (Linux NACKs
//!   any SET_MAC_ADDR once the admin set a MAC and logs a warning); a different MAC gets NACK.
//! - Multicast filters are kept per pool (no cross-VF leak through the shared MTA).

use crate::vmdq::{MtaSet, PoolFilter, VlanSet};
use emu_nic_defs::igbvf as r;

pub type MacAddr = [u8; 6];

/// Extra unicast filters a VF may add (MAC_FILTER_ADD); the 82576 shares 24 RAR entries.
pub const MAX_EXTRA_MACS: usize = 3;

/// Administrative settings of a VF (agent config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfAdmin {
    pub mac: MacAddr,
    pub port_vlan: Option<u16>,
    pub spoofchk: bool,
    pub trusted: bool,
}

/// The PF's view of one VF pool (what VMOLR, RAR, VLVF, VMVIR, VFRE/VFTE hold in hardware).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolState {
    pub admin: VfAdmin,
    /// Clear-to-send: set by VF_RESET; until then the VF's messages are NACKed.
    pub cts: bool,
    pub mac: MacAddr,
    pub extra_macs: Vec<MacAddr>,
    /// 12-bit MTA hashes from SET_MULTICAST (at most 30).
    pub mc_hashes: Vec<u16>,
    /// VLAN IDs the VF joined (SET_VLAN), always including 0 after reset.
    pub vlans: Vec<u16>,
    /// Largest frame accepted (RLPML), FCS and one VLAN tag included, as igbvf sends it.
    pub max_frame: u32,
    pub uc_promisc: bool,
    pub mc_promisc: bool,
    pub rx_enabled: bool,
    pub tx_enabled: bool,
    /// The PF's limit on the frames the pool receives (FCS included), whatever the VF asks
    /// for with SET_LPE; `None`: the VF's own RLPML. Kept across VF resets.
    pub max_frame_cap: Option<u32>,
}

impl PoolState {
    fn new(admin: VfAdmin) -> Self {
        PoolState {
            max_frame_cap: None,
            admin,
            cts: false,
            mac: admin.mac,
            extra_macs: Vec::new(),
            mc_hashes: Vec::new(),
            vlans: Vec::new(),
            max_frame: r::DEFAULT_MAX_FRAME,
            uc_promisc: false,
            mc_promisc: false,
            rx_enabled: false,
            tx_enabled: false,
        }
    }

    /// Forget everything the VF programmed; gates closed (CTRL.RST / FLR).
    fn close(&mut self) {
        *self = PoolState {
            max_frame_cap: self.max_frame_cap,
            ..PoolState::new(self.admin)
        };
    }
}

/// The reply to one mailbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub words: [u32; r::VMBMEM_WORDS],
    pub len: usize,
    /// The pool's filters changed: republish the switch table.
    pub filters_changed: bool,
    /// A VF_RESET completed: post PF_CONTROL_MSG|CTS once the VF consumed this reply.
    pub post_cts: bool,
}

impl Reply {
    fn one(word0: u32, filters_changed: bool) -> Self {
        let mut words = [0; r::VMBMEM_WORDS];
        words[0] = word0;
        Reply {
            words,
            len: 1,
            filters_changed,
            post_cts: false,
        }
    }
}

/// Why a VF's request was refused (logged by the caller, rate-limited; the VF sees NACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    #[error("VF sent message {0:#x} before completing VF_RESET (no CTS)")]
    NotClearToSend(u32),
    #[error("VF tried to change its administratively set MAC")]
    MacLocked,
    #[error("VF sent an invalid MAC address")]
    InvalidMac,
    #[error("no free unicast filter for the VF")]
    MacFiltersFull,
    #[error("VF cannot change VLANs while a port VLAN is set")]
    PortVlanSet,
    #[error("VF asked for max frame {0}, above the 82576 limit")]
    FrameTooLarge(u32),
    #[error("VF asked for unicast promiscuous mode but is not trusted")]
    NotTrusted,
    #[error("unknown mailbox message type {0:#x}")]
    Unknown(u32),
}

/// The emulated igb PF with its VFs.
#[derive(Debug, Clone)]
pub struct IgbPf {
    pools: Vec<PoolState>,
}

fn mac_from_words(w1: u32, w2: u32) -> MacAddr {
    let a = w1.to_le_bytes();
    let b = w2.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1]]
}

fn mac_to_words(mac: &MacAddr) -> (u32, u32) {
    (
        u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        u32::from_le_bytes([mac[4], mac[5], 0, 0]),
    )
}

fn valid_unicast(mac: &MacAddr) -> bool {
    mac[0] & 1 == 0 && mac != &[0; 6]
}

impl IgbPf {
    pub fn new(vfs: &[VfAdmin]) -> Self {
        IgbPf {
            pools: vfs.iter().map(|a| PoolState::new(*a)).collect(),
        }
    }

    pub fn num_vfs(&self) -> usize {
        self.pools.len()
    }

    pub fn pool(&self, vf: usize) -> Option<&PoolState> {
        self.pools.get(vf)
    }

    /// The pool's VMDq filter as the switch applies it (what RAR/MTA/VLVF/VMOLR/VMVIR/DTXSWC
    /// and VFRE/VFTE would hold for this pool on a real 82576).
    pub fn pool_filter(&self, vf: usize) -> Option<PoolFilter> {
        let p = self.pools.get(vf)?;
        let mut macs = Vec::with_capacity(1 + p.extra_macs.len());
        macs.push(p.mac);
        macs.extend_from_slice(&p.extra_macs);
        Some(PoolFilter {
            macs,
            mc_hashes: p.mc_hashes.iter().copied().collect::<MtaSet>(),
            mc_addrs: Vec::new(),
            vlans: p.vlans.iter().copied().collect::<VlanSet>(),
            port_vlan: p.admin.port_vlan,
            // igb_set_vmolr: AUPE unless a port VLAN is set; BAM always; STRVLAN always.
            accept_untagged: p.admin.port_vlan.is_none(),
            broadcast: true,
            uc_promisc: p.uc_promisc,
            mc_promisc: p.mc_promisc,
            strip_vlan: true,
            max_frame: p.max_frame_cap.map_or(p.max_frame, |c| p.max_frame.min(c)),
            spoofchk: p.admin.spoofchk,
            rx_enabled: p.rx_enabled,
            tx_enabled: p.tx_enabled,
        })
    }

    /// The agent changes VF `vf`'s administrative settings (`ip link set PF vf N …`); false
    /// for an unknown VF. Takes effect at once: the next [`IgbPf::pool_filter`] applies the
    /// port VLAN and spoof check, a VF that lost trust loses unicast promiscuous mode, and a
    /// new MAC replaces the pool's primary address (the guest reads it at its next VF_RESET,
    /// as with Linux `igb_ndo_set_vf_mac`).
    pub fn set_admin(&mut self, vf: usize, admin: VfAdmin) -> bool {
        let Some(p) = self.pools.get_mut(vf) else {
            return false;
        };
        if admin.mac != p.admin.mac {
            p.mac = admin.mac;
        }
        if !admin.trusted {
            p.uc_promisc = false;
        }
        p.admin = admin;
        true
    }

    /// Limits the frames VF `vf`'s pool receives to `cap` bytes (FCS included), as a PF's
    /// own MTU bounds its VFs'; `None` lifts the limit. False for an unknown VF.
    pub fn set_max_frame_cap(&mut self, vf: usize, cap: Option<u32>) -> bool {
        let Some(p) = self.pools.get_mut(vf) else {
            return false;
        };
        p.max_frame_cap = cap;
        true
    }

    /// The VF reset itself (CTRL.RST) or was function-level reset: close its pool.
    pub fn vf_reset(&mut self, vf: usize) {
        if let Some(p) = self.pools.get_mut(vf) {
            p.close();
        }
    }

    /// Handles one message from VF `vf`. Never panics on any content.
    pub fn handle(
        &mut self,
        vf: usize,
        msg: &[u32; r::VMBMEM_WORDS],
    ) -> (Reply, Option<MailboxError>) {
        let Some(pool) = self.pools.get_mut(vf) else {
            return (Reply::one(msg[0] | r::MSG_NACK, false), None);
        };
        let kind = msg[0] & r::MSG_TYPE_MASK;
        let info = (msg[0] & r::MSGINFO_MASK) >> r::MSGINFO_SHIFT;
        if kind == r::MSG_VF_RESET {
            return (Self::reset_msg(pool), None);
        }
        if !pool.cts {
            // igb NACKs without CTS, which makes the VF reset (igb_rcv_msg_from_vf).
            return (
                Reply::one(kind | r::MSG_NACK, false),
                Some(MailboxError::NotClearToSend(kind)),
            );
        }
        let result = match kind {
            r::MSG_SET_MAC_ADDR => Self::set_mac(pool, info, mac_from_words(msg[1], msg[2])),
            r::MSG_SET_MULTICAST => {
                let n = (info as usize).min(r::MAX_MC_HASHES);
                pool.mc_hashes.clear();
                for i in 0..n {
                    let word = msg[1 + i / 2];
                    let h = if i % 2 == 0 {
                        word as u16
                    } else {
                        (word >> 16) as u16
                    };
                    pool.mc_hashes.push(h & 0xFFF);
                }
                Ok(())
            }
            r::MSG_SET_VLAN => {
                if pool.admin.port_vlan.is_some() {
                    Err(MailboxError::PortVlanSet)
                } else {
                    let vid = (msg[1] & 0xFFF) as u16;
                    let add = info & r::VLAN_ADD != 0;
                    pool.vlans.retain(|&v| v != vid);
                    if add {
                        pool.vlans.push(vid);
                        pool.vlans.sort_unstable();
                    }
                    Ok(())
                }
            }
            r::MSG_SET_LPE => {
                // igbvf_set_rlpml sends MTU + ETH_HLEN + ETH_FCS_LEN + VLAN_TAG_SIZE.
                let size = msg[1] & 0x3FFF;
                if size > r::MAX_JUMBO_FRAME {
                    Err(MailboxError::FrameTooLarge(size))
                } else {
                    pool.max_frame = size.max(r::DEFAULT_MAX_FRAME);
                    Ok(())
                }
            }
            r::MSG_SET_PROMISC => {
                let uc = info & r::PROMISC_UNICAST != 0;
                if uc && !pool.admin.trusted {
                    Err(MailboxError::NotTrusted)
                } else {
                    pool.uc_promisc = uc;
                    pool.mc_promisc = info & r::PROMISC_MULTICAST != 0;
                    Ok(())
                }
            }
            other => Err(MailboxError::Unknown(other)),
        };
        match result {
            Ok(()) => (Reply::one(kind | r::MSG_ACK | r::MSG_CTS, true), None),
            Err(e) => (Reply::one(kind | r::MSG_NACK | r::MSG_CTS, false), Some(e)),
        }
    }

    /// VF_RESET (igb_vf_reset_msg): reset filters, VLAN 0, the admin MAC, open the gates,
    /// CTS; the reply carries the MAC and no CTS.
    fn reset_msg(pool: &mut PoolState) -> Reply {
        pool.close();
        pool.vlans = vec![0];
        pool.rx_enabled = true;
        pool.tx_enabled = true;
        pool.cts = true;
        let mut words = [0; r::VMBMEM_WORDS];
        words[0] = r::MSG_VF_RESET | r::MSG_ACK;
        (words[1], words[2]) = mac_to_words(&pool.mac);
        Reply {
            words,
            len: 3,
            filters_changed: true,
            post_cts: true,
        }
    }

    fn set_mac(pool: &mut PoolState, info: u32, mac: MacAddr) -> Result<(), MailboxError> {
        match info {
            r::MAC_FILTER_PRIMARY => {
                if !valid_unicast(&mac) {
                    return Err(MailboxError::InvalidMac);
                }
                if mac != pool.mac && !pool.admin.trusted {
                    return Err(MailboxError::MacLocked);
                }
                pool.mac = mac;
                Ok(())
            }
            r::MAC_FILTER_CLR => {
                pool.extra_macs.clear();
                Ok(())
            }
            r::MAC_FILTER_ADD => {
                if !valid_unicast(&mac) {
                    return Err(MailboxError::InvalidMac);
                }
                if pool.extra_macs.contains(&mac) || mac == pool.mac {
                    return Ok(());
                }
                if pool.extra_macs.len() >= MAX_EXTRA_MACS {
                    return Err(MailboxError::MacFiltersFull);
                }
                pool.extra_macs.push(mac);
                Ok(())
            }
            other => Err(MailboxError::Unknown(
                r::MSG_SET_MAC_ADDR | other << r::MSGINFO_SHIFT,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    fn pf(trusted: bool, port_vlan: Option<u16>) -> IgbPf {
        IgbPf::new(&[VfAdmin {
            mac: MAC,
            port_vlan,
            spoofchk: true,
            trusted,
        }])
    }

    fn msg(words: &[u32]) -> [u32; 16] {
        let mut m = [0; 16];
        m[..words.len()].copy_from_slice(words);
        m
    }

    fn reset(pf: &mut IgbPf) {
        let (rep, err) = pf.handle(0, &msg(&[r::MSG_VF_RESET]));
        assert!(err.is_none());
        assert_eq!(rep.len, 3);
        assert_eq!(
            rep.words[0],
            r::MSG_VF_RESET | r::MSG_ACK,
            "no CTS on the reset reply"
        );
        assert_eq!(mac_from_words(rep.words[1], rep.words[2]), MAC);
        assert!(rep.post_cts);
    }

    #[test]
    fn nack_without_cts_before_reset() {
        let mut p = pf(false, None);
        let (rep, err) = p.handle(0, &msg(&[r::MSG_SET_LPE, 9018]));
        assert_eq!(rep.words[0], r::MSG_SET_LPE | r::MSG_NACK);
        assert!(matches!(err, Some(MailboxError::NotClearToSend(_))));
        reset(&mut p);
        let (rep, err) = p.handle(0, &msg(&[r::MSG_SET_LPE, 9018]));
        assert!(err.is_none());
        assert_eq!(rep.words[0], r::MSG_SET_LPE | r::MSG_ACK | r::MSG_CTS);
        assert!(p.pool(0).unwrap().max_frame >= 9018);
    }

    #[test]
    fn reset_opens_gates_with_vlan0() {
        let mut p = pf(false, None);
        assert!(!p.pool(0).unwrap().rx_enabled);
        reset(&mut p);
        let s = p.pool(0).unwrap();
        assert!(s.rx_enabled && s.tx_enabled && s.cts);
        assert_eq!(s.vlans, vec![0]);
        p.vf_reset(0);
        assert!(!p.pool(0).unwrap().cts);
    }

    #[test]
    fn mac_rules() {
        let mut p = pf(false, None);
        reset(&mut p);
        let (w1, w2) = mac_to_words(&MAC);
        let (rep, _) = p.handle(0, &msg(&[r::MSG_SET_MAC_ADDR, w1, w2]));
        assert_eq!(rep.words[0] & r::MSG_ACK, r::MSG_ACK, "same MAC is fine");
        let other = [0x02, 0, 0, 0, 0, 9];
        let (w1, w2) = mac_to_words(&other);
        let (rep, err) = p.handle(0, &msg(&[r::MSG_SET_MAC_ADDR, w1, w2]));
        assert_eq!(rep.words[0] & r::MSG_NACK, r::MSG_NACK);
        assert_eq!(err, Some(MailboxError::MacLocked));
        let mut t = pf(true, None);
        reset(&mut t);
        let (rep, _) = t.handle(0, &msg(&[r::MSG_SET_MAC_ADDR, w1, w2]));
        assert_eq!(rep.words[0] & r::MSG_ACK, r::MSG_ACK);
        assert_eq!(t.pool(0).unwrap().mac, other);
        let (mw1, mw2) = mac_to_words(&[0x01, 0, 0x5e, 0, 0, 1]);
        let (_, err) = t.handle(0, &msg(&[r::MSG_SET_MAC_ADDR, mw1, mw2]));
        assert_eq!(err, Some(MailboxError::InvalidMac));
    }

    #[test]
    fn set_admin_applies_at_once() {
        let mut p = pf(true, None);
        reset(&mut p);
        let promisc = r::MSG_SET_PROMISC | (r::PROMISC_UNICAST << r::MSGINFO_SHIFT);
        assert!(p.handle(0, &msg(&[promisc])).1.is_none());
        assert!(p.pool_filter(0).unwrap().uc_promisc);
        let other = [0x02, 0, 0, 0, 0, 7];
        assert!(p.set_admin(
            0,
            VfAdmin {
                mac: other,
                port_vlan: Some(10),
                spoofchk: false,
                trusted: false,
            }
        ));
        let f = p.pool_filter(0).unwrap();
        assert_eq!(f.port_vlan, Some(10));
        assert!(!f.accept_untagged && !f.spoofchk && !f.uc_promisc);
        assert_eq!(f.macs, [other]);
        assert!(f.rx_enabled, "the pool stays open: no reset");
        assert!(!p.set_admin(1, p.pool(0).unwrap().admin));
        // The PF's frame cap bounds what the VF asks for, and survives a VF reset.
        assert!(p.handle(0, &msg(&[r::MSG_SET_LPE, 9018])).1.is_none());
        assert_eq!(p.pool_filter(0).unwrap().max_frame, 9018);
        assert!(p.set_max_frame_cap(0, Some(1522)));
        assert_eq!(p.pool_filter(0).unwrap().max_frame, 1522);
        p.vf_reset(0);
        assert_eq!(p.pool(0).unwrap().max_frame_cap, Some(1522));
        assert!(p.set_max_frame_cap(0, None));
        assert!(!p.set_max_frame_cap(3, None));
    }

    #[test]
    fn extra_macs_limited() {
        let mut p = pf(false, None);
        reset(&mut p);
        for i in 0..MAX_EXTRA_MACS as u8 {
            let (w1, w2) = mac_to_words(&[0x02, 0, 0, 0, 1, i]);
            let add = r::MSG_SET_MAC_ADDR | (r::MAC_FILTER_ADD << r::MSGINFO_SHIFT);
            assert!(p.handle(0, &msg(&[add, w1, w2])).1.is_none());
        }
        let (w1, w2) = mac_to_words(&[0x02, 0, 0, 0, 2, 0]);
        let add = r::MSG_SET_MAC_ADDR | (r::MAC_FILTER_ADD << r::MSGINFO_SHIFT);
        assert_eq!(
            p.handle(0, &msg(&[add, w1, w2])).1,
            Some(MailboxError::MacFiltersFull)
        );
        let clr = r::MSG_SET_MAC_ADDR | (r::MAC_FILTER_CLR << r::MSGINFO_SHIFT);
        assert!(p.handle(0, &msg(&[clr])).1.is_none());
        assert!(p.pool(0).unwrap().extra_macs.is_empty());
    }

    #[test]
    fn multicast_vlan_promisc() {
        let mut p = pf(false, None);
        reset(&mut p);
        let m = r::MSG_SET_MULTICAST | (3 << r::MSGINFO_SHIFT);
        assert!(p.handle(0, &msg(&[m, 0x0020_0010, 0xFFFF])).1.is_none());
        assert_eq!(p.pool(0).unwrap().mc_hashes, vec![0x010, 0x020, 0xFFF]);
        let hostile = r::MSG_SET_MULTICAST | (0xFF << r::MSGINFO_SHIFT);
        assert!(p.handle(0, &msg(&[hostile, u32::MAX])).1.is_none());
        assert_eq!(p.pool(0).unwrap().mc_hashes.len(), r::MAX_MC_HASHES);
        let add = r::MSG_SET_VLAN | (r::VLAN_ADD << r::MSGINFO_SHIFT);
        assert!(p.handle(0, &msg(&[add, 100])).1.is_none());
        assert_eq!(p.pool(0).unwrap().vlans, vec![0, 100]);
        assert!(p.handle(0, &msg(&[r::MSG_SET_VLAN, 100])).1.is_none());
        assert_eq!(p.pool(0).unwrap().vlans, vec![0]);
        let uc = r::MSG_SET_PROMISC | (r::PROMISC_UNICAST << r::MSGINFO_SHIFT);
        assert_eq!(p.handle(0, &msg(&[uc])).1, Some(MailboxError::NotTrusted));
        let mc = r::MSG_SET_PROMISC | (r::PROMISC_MULTICAST << r::MSGINFO_SHIFT);
        assert!(p.handle(0, &msg(&[mc])).1.is_none());
        assert!(p.pool(0).unwrap().mc_promisc);
        let mut pv = pf(false, Some(7));
        reset(&mut pv);
        assert_eq!(
            pv.handle(0, &msg(&[add, 100])).1,
            Some(MailboxError::PortVlanSet)
        );
    }

    #[test]
    fn hostile_messages() {
        let mut p = pf(false, None);
        reset(&mut p);
        let (rep, err) = p.handle(0, &msg(&[0xFFFF]));
        assert_eq!(rep.words[0], 0xFFFF | r::MSG_NACK | r::MSG_CTS);
        assert!(matches!(err, Some(MailboxError::Unknown(_))));
        assert_eq!(
            p.handle(0, &msg(&[r::MSG_SET_LPE, 0x3FFF])).1,
            Some(MailboxError::FrameTooLarge(0x3FFF))
        );
        let (rep, _) = p.handle(99, &msg(&[r::MSG_VF_RESET]));
        assert_eq!(rep.words[0] & r::MSG_NACK, r::MSG_NACK);
        let mut seed = 99u64;
        for _ in 0..50_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut m = [0u32; 16];
            for (i, w) in m.iter_mut().enumerate() {
                *w = (seed >> (i % 32)) as u32;
            }
            m[0] &= 0x00FF_FFFF;
            let _ = p.handle(0, &m);
        }
    }
}
