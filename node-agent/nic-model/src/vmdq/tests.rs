//! Switch rule tests, one per rule of devices.md §4.2.

use super::*;

const UPLINK: usize = 7;

fn mac(n: u8) -> MacAddr {
    [0x02, 0, 0, 0, 0, n]
}

/// An open VF pool the way igb leaves it after a reset: primary MAC, VLAN 0, AUPE, BAM, RX/TX
/// on, anti-spoof on.
fn open_pool(n: u8) -> PoolFilter {
    PoolFilter {
        macs: vec![mac(n)],
        vlans: [0].into_iter().collect(),
        accept_untagged: true,
        broadcast: true,
        spoofchk: true,
        rx_enabled: true,
        tx_enabled: true,
        ..PoolFilter::closed()
    }
}

/// Ports 0..4 open VF pools; port 7 the default port (uplink, no filter); loopback on.
fn table() -> SwitchTable {
    let mut t = SwitchTable::new();
    for p in 0..4u8 {
        t.set_port(usize::from(p), Some(open_pool(p))).unwrap();
    }
    t.set_default_port(Some(UPLINK)).unwrap();
    t.set_loopback(true);
    t
}

fn frame(dst: MacAddr, src: MacAddr, vid: Option<u16>, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len.max(18));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(v) = vid {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.resize(len.max(f.len()), 0);
    f
}

fn rx(t: &SwitchTable, src: Option<usize>, f: &[u8]) -> RxTargets {
    let mut out = RxTargets::new();
    rx_targets(t, src, f, &mut out);
    out
}

fn set(ports: &[usize]) -> PortSet {
    ports.iter().copied().collect()
}

fn edit(t: &mut SwitchTable, port: usize, e: impl FnOnce(&mut PoolFilter)) {
    let mut f = t.port(port).cloned().unwrap();
    e(&mut f);
    t.set_port(port, Some(f)).unwrap();
}

#[test]
fn broadcast_replicates_to_bam_pools_only_and_uplink() {
    let mut t = table();
    edit(&mut t, 2, |f| f.broadcast = false);
    let r = rx(&t, Some(0), &frame(BROADCAST, mac(0), None, 60));
    assert_eq!(r.ports, set(&[1, 3]));
    assert!(r.to_default, "broadcast also leaves through the uplink");
    assert_eq!(r.drop, None);
    // From the uplink: all BAM pools, nothing reflected.
    let r = rx(&t, Some(UPLINK), &frame(BROADCAST, [0x04; 6], None, 60));
    assert_eq!(r.ports, set(&[0, 1, 3]));
    assert!(!r.to_default);
}

#[test]
fn unicast_exact_match_stays_local() {
    let t = table();
    let r = rx(&t, Some(0), &frame(mac(2), mac(0), None, 60));
    assert_eq!(r.ports, set(&[2]));
    assert!(
        !r.to_default,
        "a local exact hit does not also go to the uplink"
    );
    // Extra MACs match too, and one MAC on two pools reaches both.
    let mut t = table();
    edit(&mut t, 1, |f| f.macs.push(mac(9)));
    edit(&mut t, 3, |f| f.macs.push(mac(9)));
    let r = rx(&t, Some(UPLINK), &frame(mac(9), [0x04; 6], None, 60));
    assert_eq!(r.ports, set(&[1, 3]));
}

#[test]
fn unknown_unicast_goes_to_default_or_is_dropped() {
    let mut t = table();
    let r = rx(&t, Some(0), &frame(mac(99), mac(0), None, 60));
    assert!(r.ports.is_empty());
    assert!(r.to_default);
    // From the uplink itself: nowhere to go, no reflection.
    let r = rx(&t, Some(UPLINK), &frame(mac(99), [0x04; 6], None, 60));
    assert!(!r.to_default);
    assert_eq!(r.drop, Some(DropReason::NoMatch));
    // No default port (DIS_DEF_PL): dropped.
    t.set_default_port(None).unwrap();
    let r = rx(&t, Some(0), &frame(mac(99), mac(0), None, 60));
    assert!(!r.to_default);
    assert_eq!(r.drop, Some(DropReason::NoMatch));
}

#[test]
fn uc_promisc_gets_unknown_unicast_only() {
    let mut t = table();
    edit(&mut t, 3, |f| f.uc_promisc = true);
    let r = rx(&t, Some(0), &frame(mac(99), mac(0), None, 60));
    assert_eq!(r.ports, set(&[3]));
    assert!(
        r.to_default,
        "promiscuous pools do not hide unknown unicast from the uplink"
    );
    let r = rx(&t, Some(0), &frame(mac(2), mac(0), None, 60));
    assert_eq!(
        r.ports,
        set(&[2]),
        "exact match wins over promiscuous pools"
    );
}

#[test]
fn multicast_by_mta_hash_exact_addr_and_promisc() {
    let all_hosts = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    // By hand: addr[4] = 0x00, addr[5] = 0x01 -> (0x00 >> 4) | (0x01 << 4) = 0x010.
    assert_eq!(mta_hash(&all_hosts), 0x010);
    let other = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]; // mDNS, hash 0xfb0
    assert_eq!(mta_hash(&other), 0xfb0);
    let mut t = table();
    edit(&mut t, 1, |f| f.mc_hashes.insert(mta_hash(&all_hosts)));
    edit(&mut t, 2, |f| f.mc_addrs.push(all_hosts));
    edit(&mut t, 3, |f| f.mc_promisc = true);
    let r = rx(&t, Some(0), &frame(all_hosts, mac(0), None, 60));
    assert_eq!(r.ports, set(&[1, 2, 3]));
    assert!(r.to_default, "multicast also goes to the uplink");
    let r = rx(&t, Some(UPLINK), &frame(other, [0x04; 6], None, 60));
    assert_eq!(r.ports, set(&[3]), "per-pool sets: no leak of other groups");
    // Pool 0 never asked for multicast and is not BAM-reached by it.
    assert!(!r.ports.contains(0));
}

#[test]
fn vlan_membership_tagged_untagged() {
    let mut t = table();
    edit(&mut t, 1, |f| f.vlans.insert(100));
    edit(&mut t, 2, |f| f.accept_untagged = false);
    // Tagged VID 100: only pool 1 is a member.
    let r = rx(&t, Some(UPLINK), &frame(BROADCAST, [4; 6], Some(100), 64));
    assert_eq!(r.ports, set(&[1]));
    assert_eq!(*r.rejected(DropReason::VlanFilter), set(&[0, 2, 3]));
    assert_eq!(r.drop, None);
    // Untagged: AUPE pools only.
    let r = rx(&t, Some(UPLINK), &frame(BROADCAST, [4; 6], None, 60));
    assert_eq!(r.ports, set(&[0, 1, 3]));
    assert_eq!(*r.rejected(DropReason::VlanFilter), set(&[2]));
    // Priority-tagged (VID 0, PCP 5): VLAN 0 is a member after reset, like igb.
    let r = rx(
        &t,
        Some(UPLINK),
        &frame(BROADCAST, [4; 6], Some(0xa000), 64),
    );
    assert_eq!(r.ports, set(&[0, 1, 2, 3]));
    // A rejected exact unicast match is not redirected to the uplink.
    let r = rx(&t, Some(0), &frame(mac(2), mac(0), Some(5), 64));
    assert!(r.ports.is_empty() && !r.to_default);
    assert_eq!(
        r.rejections().collect::<Vec<_>>(),
        vec![(2, DropReason::VlanFilter)]
    );
}

#[test]
fn port_vlan_rx_tx() {
    let mut t = table();
    edit(&mut t, 1, |f| {
        f.port_vlan = Some(100);
        f.accept_untagged = false;
    });
    edit(&mut t, 2, |f| f.vlans.insert(100));
    // Only VID 100 reaches the port-VLAN pool; untagged does not, even with AUPE.
    let r = rx(&t, Some(UPLINK), &frame(BROADCAST, [4; 6], Some(100), 64));
    assert_eq!(r.ports, set(&[1, 2]));
    let r = rx(&t, Some(UPLINK), &frame(BROADCAST, [4; 6], Some(200), 64));
    assert!(!r.ports.contains(1));
    edit(&mut t, 1, |f| f.accept_untagged = true);
    let r = rx(&t, Some(UPLINK), &frame(BROADCAST, [4; 6], None, 60));
    assert!(!r.ports.contains(1));
    assert!(r.rejected(DropReason::VlanFilter).contains(1));
    // TX: the port VLAN is to be inserted; strip on delivery back.
    let f = frame(mac(2), mac(1), None, 60);
    assert_eq!(tx_check(&t, 1, &f), Ok(Some(100)));
    let mut tagged = [0u8; 64];
    let n = write_vlan_tagged(&f, 100, &mut tagged).unwrap();
    let r = rx(&t, Some(1), &tagged[..n]);
    assert_eq!(r.ports, set(&[2]));
    let pool1 = t.port(1).unwrap();
    assert_eq!(rx_vlan_action(pool1, &tagged[..n]), Some(100));
    // Pool 2 is a plain member without STRVLAN: the tag stays.
    assert_eq!(rx_vlan_action(t.port(2).unwrap(), &tagged[..n]), None);
    edit(&mut t, 2, |f| f.strip_vlan = true);
    assert_eq!(rx_vlan_action(t.port(2).unwrap(), &tagged[..n]), Some(100));
    assert_eq!(
        rx_vlan_action(t.port(2).unwrap(), &f),
        None,
        "untagged: nothing to strip"
    );
}

#[test]
fn rx_disabled_pools_refuse() {
    let mut t = table();
    edit(&mut t, 2, |f| f.rx_enabled = false);
    let r = rx(&t, Some(0), &frame(BROADCAST, mac(0), None, 60));
    assert_eq!(r.ports, set(&[1, 3]));
    assert_eq!(*r.rejected(DropReason::RxDisabled), set(&[2]));
    let r = rx(&t, Some(0), &frame(mac(2), mac(0), None, 60));
    assert!(r.ports.is_empty() && !r.to_default && r.drop.is_none());
    assert_eq!(*r.rejected(DropReason::RxDisabled), set(&[2]));
}

#[test]
fn oversize_counts_fcs() {
    let mut t = table();
    // igbvf SET_LPE for MTU 1500: 1500 + 22 = 1522 (header, VLAN tag, FCS included).
    edit(&mut t, 2, |f| f.max_frame = 1522);
    // Largest untagged (1514) and tagged (1518) frames without FCS fit.
    let r = rx(&t, Some(0), &frame(mac(2), mac(0), None, 1514));
    assert_eq!(r.ports, set(&[2]));
    let r = rx(&t, Some(0), &frame(mac(2), mac(0), Some(0), 1518));
    assert_eq!(r.ports, set(&[2]));
    let r = rx(&t, Some(0), &frame(mac(2), mac(0), Some(0), 1519));
    assert!(r.ports.is_empty());
    assert_eq!(*r.rejected(DropReason::Oversize), set(&[2]));
    // Per pool: a jumbo pool still gets a broadcast the others refuse.
    edit(&mut t, 3, |f| f.max_frame = 9018);
    let r = rx(&t, Some(0), &frame(BROADCAST, mac(0), None, 4000));
    assert_eq!(r.ports, set(&[3]));
    assert_eq!(*r.rejected(DropReason::Oversize), set(&[1, 2]));
}

#[test]
fn tx_disabled_and_unknown_port() {
    let mut t = table();
    edit(&mut t, 0, |f| f.tx_enabled = false);
    let f = frame(mac(1), mac(0), None, 60);
    assert_eq!(tx_check(&t, 0, &f), Err(DropReason::TxDisabled));
    assert_eq!(tx_check(&t, 5, &f), Err(DropReason::NoPort));
    assert_eq!(tx_check(&t, usize::MAX, &f), Err(DropReason::NoPort));
    assert_eq!(tx_check(&t, 1, &frame(mac(2), mac(1), None, 60)), Ok(None));
    // A closed pool can neither send nor receive.
    t.set_port(4, Some(PoolFilter::closed())).unwrap();
    assert_eq!(tx_check(&t, 4, &f), Err(DropReason::TxDisabled));
}

#[test]
fn anti_spoof_mac_and_vlan() {
    let mut t = table();
    edit(&mut t, 0, |f| {
        f.macs.push(mac(50));
        f.vlans.insert(10);
    });
    assert_eq!(tx_check(&t, 0, &frame(mac(1), mac(0), None, 60)), Ok(None));
    assert_eq!(tx_check(&t, 0, &frame(mac(1), mac(50), None, 60)), Ok(None));
    assert_eq!(
        tx_check(&t, 0, &frame(mac(1), mac(1), None, 60)),
        Err(DropReason::MacSpoof)
    );
    assert_eq!(
        tx_check(&t, 0, &frame(mac(1), mac(0), Some(10), 64)),
        Ok(None)
    );
    assert_eq!(
        tx_check(&t, 0, &frame(mac(1), mac(0), Some(11), 64)),
        Err(DropReason::VlanSpoof)
    );
    // Port VLAN: the guest may not tag at all.
    edit(&mut t, 0, |f| f.port_vlan = Some(10));
    assert_eq!(
        tx_check(&t, 0, &frame(mac(1), mac(0), Some(10), 64)),
        Err(DropReason::VlanSpoof)
    );
    // spoofchk off (trusted / `spoofchk off`): anything goes.
    edit(&mut t, 0, |f| f.spoofchk = false);
    assert_eq!(
        tx_check(&t, 0, &frame(mac(1), mac(1), Some(11), 64)),
        Ok(Some(10))
    );
}

#[test]
fn sender_never_receives_its_own_frame() {
    let mut t = table();
    edit(&mut t, 0, |f| {
        f.uc_promisc = true;
        f.mc_promisc = true;
    });
    for dst in [BROADCAST, mac(0), mac(99), [0x01, 0, 0x5e, 0, 0, 1]] {
        let r = rx(&t, Some(0), &frame(dst, mac(0), None, 60));
        assert!(!r.ports.contains(0), "{dst:02x?}");
        assert!(r.rejections().all(|(p, _)| p != 0));
    }
}

#[test]
fn loopback_off_sends_everything_to_uplink() {
    let mut t = table();
    t.set_loopback(false);
    let r = rx(&t, Some(0), &frame(mac(2), mac(0), None, 60));
    assert!(r.ports.is_empty());
    assert!(r.to_default);
    let r = rx(&t, Some(0), &frame(BROADCAST, mac(0), None, 60));
    assert!(r.ports.is_empty() && r.to_default);
    // Frames from the uplink are still switched to the pools.
    let r = rx(&t, Some(UPLINK), &frame(mac(2), [4; 6], None, 60));
    assert_eq!(r.ports, set(&[2]));
}

#[test]
fn default_port_with_its_own_filter_is_not_doubled() {
    let mut t = table();
    // The PF pool as the default pool (VT_CTL.DEF_PL), with its own MAC and BAM.
    t.set_port(UPLINK, Some(open_pool(7))).unwrap();
    let r = rx(&t, Some(0), &frame(BROADCAST, mac(0), None, 60));
    assert!(r.ports.contains(UPLINK));
    assert!(!r.to_default);
    let r = rx(&t, Some(0), &frame(mac(7), mac(0), None, 60));
    assert_eq!(r.ports, set(&[UPLINK]));
    assert!(!r.to_default);
    let r = rx(&t, Some(0), &frame(mac(99), mac(0), None, 60));
    assert!(r.ports.is_empty() && r.to_default);
}

#[test]
fn hostile_frames_never_panic() {
    let mut t = table();
    edit(&mut t, 1, |f| {
        f.uc_promisc = true;
        f.mc_promisc = true;
        f.strip_vlan = true;
    });
    let mut out = RxTargets::new();
    for len in 0..=24 {
        for fill in [0x00u8, 0x81, 0xff] {
            let mut f = vec![fill; len];
            for tpid in [None, Some([0x81, 0x00]), Some([0xff, 0xff])] {
                if let (Some(tp), true) = (tpid, len >= 14) {
                    f[12..14].copy_from_slice(&tp);
                }
                for src in [None, Some(0), Some(UPLINK), Some(usize::MAX)] {
                    rx_targets(&t, src, &f, &mut out);
                    if len < 14 {
                        assert_eq!(out.drop, Some(DropReason::Runt));
                        assert!(out.ports.is_empty() && !out.to_default);
                    }
                }
                let r = tx_check(&t, 0, &f);
                if len < 14 {
                    assert_eq!(r, Err(DropReason::Runt));
                }
                let _ = rx_vlan_action(t.port(1).unwrap(), &f);
            }
        }
    }
    // Truncated VLAN tag: 0x8100 with fewer than 18 bytes is a runt.
    let mut f = frame(BROADCAST, mac(0), None, 17);
    f[12..14].copy_from_slice(&ETH_P_8021Q.to_be_bytes());
    rx_targets(&t, Some(0), &f[..16], &mut out);
    assert_eq!(out.drop, Some(DropReason::Runt));
    assert_eq!(tx_check(&t, 0, &f[..17]), Err(DropReason::Runt));
    // 0xffff ethertype: an ordinary untagged frame.
    let mut f = frame(mac(2), mac(0), None, 60);
    f[12..14].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(tx_check(&t, 0, &f), Ok(None));
    rx_targets(&t, Some(0), &f, &mut out);
    assert_eq!(out.ports, set(&[2]));
}

#[test]
fn table_control_path() {
    let mut t = table();
    assert_eq!(
        t.set_port(MAX_PORTS, Some(PoolFilter::closed())),
        Err(VmdqError::PortOutOfRange { port: MAX_PORTS })
    );
    assert!(t.set_default_port(Some(MAX_PORTS)).is_err());
    assert_eq!(t.default_port(), Some(UPLINK));
    t.set_port(MAX_PORTS - 1, Some(open_pool(200))).unwrap();
    assert_eq!(t.lookup_mac(&mac(200)), set(&[MAX_PORTS - 1]));
    t.set_port(MAX_PORTS - 1, None).unwrap();
    assert!(t.lookup_mac(&mac(200)).is_empty());
    assert!(t.port(MAX_PORTS - 1).is_none());
    // Removing a port removes it from every index.
    t.set_port(2, None).unwrap();
    let r = rx(&t, Some(0), &frame(BROADCAST, mac(0), None, 60));
    assert_eq!(r.ports, set(&[1, 3]));
    assert_eq!(*t.configured_ports(), set(&[0, 1, 3]));
    // Group and zero MACs are not unicast filters.
    edit(&mut t, 1, |f| f.macs.extend([BROADCAST, [0; 6]]));
    assert!(t.lookup_mac(&[0; 6]).is_empty());
    assert_eq!(DropReason::ALL.len(), DROP_REASONS);
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert!(!r.name().is_empty());
    }
}
