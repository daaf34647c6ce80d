//! virtchnl PF tests: the iavf handshake in order with byte-level replies, then every op with
//! hostile payloads (each answered with an error and changing nothing).

use super::*;

const MAC: MacAddr = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const VSI: u16 = VSI_ID_BASE;
const OTHER_VSI: u16 = VSI_ID_BASE + 1;
const RING: u64 = 0x1_0000;

/// What a current iavf asks for in GET_VF_RESOURCES.
const IAVF_CAPS: u32 = VIRTCHNL_VF_OFFLOAD_L2
    | VIRTCHNL_VF_OFFLOAD_RSS_PF
    | VIRTCHNL_VF_OFFLOAD_RSS_AQ
    | VIRTCHNL_VF_OFFLOAD_RSS_REG
    | VIRTCHNL_VF_OFFLOAD_VLAN
    | VIRTCHNL_VF_OFFLOAD_WB_ON_ITR
    | VIRTCHNL_VF_OFFLOAD_RSS_PCTYPE_V2
    | VIRTCHNL_VF_OFFLOAD_ENCAP
    | VIRTCHNL_VF_OFFLOAD_ENCAP_CSUM
    | VIRTCHNL_VF_OFFLOAD_REQ_QUEUES
    | VIRTCHNL_VF_OFFLOAD_ADQ
    | VIRTCHNL_VF_OFFLOAD_USO
    | VIRTCHNL_VF_OFFLOAD_FDIR_PF
    | VIRTCHNL_VF_OFFLOAD_ADV_RSS_PF
    | VIRTCHNL_VF_CAP_ADV_LINK_SPEED
    | VIRTCHNL_VF_OFFLOAD_VLAN_V2
    | VIRTCHNL_VF_OFFLOAD_RX_FLEX_DESC
    | VIRTCHNL_VF_OFFLOAD_CRC
    | VIRTCHNL_VF_CAP_PTP;

fn admin(trusted: bool) -> AvfVfAdmin {
    AvfVfAdmin {
        mac: MAC,
        trusted,
        spoofchk: true,
        port_vlan: None,
        queue_pairs: 0,
    }
}

struct Fx {
    pf: AvfPf,
    vsi: VsiState,
    stats: VfStats,
    reply: Vec<u8>,
}

impl Fx {
    fn new(a: AvfVfAdmin) -> Self {
        Fx {
            pf: AvfPf::new(&[a, admin(false)]),
            vsi: VsiState::default(),
            stats: VfStats::default(),
            reply: Vec::new(),
        }
    }

    /// VERSION 1.1 and GET_VF_RESOURCES as iavf sends them.
    fn up(a: AvfVfAdmin) -> Self {
        let mut f = Fx::new(a);
        assert_eq!(f.call(VIRTCHNL_OP_VERSION, &version(1, 1)).status, 0);
        let h = f.call(VIRTCHNL_OP_GET_VF_RESOURCES, &IAVF_CAPS.to_le_bytes());
        assert_eq!(h.status, 0);
        f
    }

    /// Up, with all four queue pairs configured.
    fn configured(a: AvfVfAdmin) -> Self {
        let mut f = Fx::up(a);
        let qs: Vec<Qp> = (0..4).map(Qp::new).collect();
        assert_eq!(
            f.call(VIRTCHNL_OP_CONFIG_VSI_QUEUES, &vsi_queues(VSI, &qs))
                .status,
            0
        );
        f
    }

    fn call(&mut self, op: u32, msg: &[u8]) -> Handled {
        self.pf
            .handle(0, &mut self.vsi, op, msg, &self.stats, &mut self.reply)
    }

    /// Sends a hostile request: it must get the error `status` and change nothing.
    #[track_caller]
    fn hostile(&mut self, op: u32, msg: &[u8], status: i32) {
        let (pf, vsi) = (self.pf.clone(), self.vsi);
        self.reply = vec![0xEE; 7];
        let h = self.call(op, msg);
        assert_eq!(h, Handled::error(status), "op {op}, msg {msg:02x?}");
        assert!(self.reply.is_empty());
        assert_eq!(self.pf, pf, "PF state changed by op {op}");
        assert_eq!(self.vsi, vsi, "VSI state changed by op {op}");
    }
}

fn version(major: u32, minor: u32) -> Vec<u8> {
    [major.to_le_bytes(), minor.to_le_bytes()].concat()
}

#[derive(Clone, Copy)]
struct Qp {
    tx_vsi: u16,
    rx_vsi: u16,
    txq: u16,
    rxq: u16,
    tx_len: u16,
    rx_len: u32,
    tx_base: u64,
    rx_base: u64,
    buf: u32,
    max_pkt: u32,
    split: u16,
}

impl Qp {
    fn new(q: u16) -> Self {
        Qp {
            tx_vsi: VSI,
            rx_vsi: VSI,
            txq: q,
            rxq: q,
            tx_len: 512,
            rx_len: 512,
            tx_base: RING + u64::from(q) * 0x1_0000,
            rx_base: RING + 0x10_0000 + u64::from(q) * 0x1_0000,
            buf: 3072,
            max_pkt: 9728,
            split: 0,
        }
    }
}

/// CONFIG_VSI_QUEUES: 8-byte header, n pairs, and the one extra pair virtchnl counts.
fn vsi_queues(vsi: u16, qs: &[Qp]) -> Vec<u8> {
    let mut m = vec![0u8; 72 + 64 * qs.len()];
    m[0..2].copy_from_slice(&vsi.to_le_bytes());
    m[2..4].copy_from_slice(&(qs.len() as u16).to_le_bytes());
    for (i, q) in qs.iter().enumerate() {
        let t = 8 + 64 * i;
        m[t..t + 2].copy_from_slice(&q.tx_vsi.to_le_bytes());
        m[t + 2..t + 4].copy_from_slice(&q.txq.to_le_bytes());
        m[t + 4..t + 6].copy_from_slice(&q.tx_len.to_le_bytes());
        m[t + 8..t + 16].copy_from_slice(&q.tx_base.to_le_bytes());
        let r = t + 24;
        m[r..r + 2].copy_from_slice(&q.rx_vsi.to_le_bytes());
        m[r + 2..r + 4].copy_from_slice(&q.rxq.to_le_bytes());
        m[r + 4..r + 8].copy_from_slice(&q.rx_len.to_le_bytes());
        m[r + 10..r + 12].copy_from_slice(&q.split.to_le_bytes());
        m[r + 12..r + 16].copy_from_slice(&q.buf.to_le_bytes());
        m[r + 16..r + 20].copy_from_slice(&q.max_pkt.to_le_bytes());
        m[r + 24..r + 32].copy_from_slice(&q.rx_base.to_le_bytes());
    }
    m
}

/// CONFIG_IRQ_MAP: (vsi, vector, rxq_map, txq_map, rxitr, txitr) entries.
fn irq_map(maps: &[(u16, u16, u16, u16, u16, u16)]) -> Vec<u8> {
    let mut m = (maps.len() as u16).to_le_bytes().to_vec();
    for e in maps {
        for v in [e.0, e.1, e.2, e.3, e.4, e.5] {
            m.extend_from_slice(&v.to_le_bytes());
        }
    }
    m.extend_from_slice(&[0; 12]);
    m
}

/// iavf's map for 4 pairs: vectors 1..=4 take queue q-1, vector 0 last with empty maps.
fn iavf_irq_map() -> Vec<u8> {
    let mut e: Vec<_> = (1..=4u16)
        .map(|v| (VSI, v, 1 << (v - 1), 1 << (v - 1), 0, 1))
        .collect();
    e.push((VSI, 0, 0, 0, 0, 0));
    irq_map(&e)
}

fn qsel(vsi: u16, rx: u32, tx: u32) -> Vec<u8> {
    let mut m = vsi.to_le_bytes().to_vec();
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&rx.to_le_bytes());
    m.extend_from_slice(&tx.to_le_bytes());
    m
}

fn eth_list(vsi: u16, addrs: &[(MacAddr, u8)]) -> Vec<u8> {
    let mut m = vsi.to_le_bytes().to_vec();
    m.extend_from_slice(&(addrs.len() as u16).to_le_bytes());
    for (mac, ty) in addrs {
        m.extend_from_slice(mac);
        m.extend_from_slice(&[*ty, 0]);
    }
    m.extend_from_slice(&[0; 8]);
    m
}

fn vlan_list(vsi: u16, vids: &[u16]) -> Vec<u8> {
    let mut m = vsi.to_le_bytes().to_vec();
    m.extend_from_slice(&(vids.len() as u16).to_le_bytes());
    for v in vids {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(&[0; 2]);
    m
}

fn promisc(vsi: u16, flags: u16) -> Vec<u8> {
    [vsi.to_le_bytes(), flags.to_le_bytes()].concat()
}

/// CONFIG_RSS_KEY / CONFIG_RSS_LUT: header, n bytes, length 5 + n.
fn rss_bytes(vsi: u16, bytes: &[u8]) -> Vec<u8> {
    let mut m = vsi.to_le_bytes().to_vec();
    m.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    m.extend_from_slice(bytes);
    m.push(0);
    m
}

fn hfunc(vsi: u16, alg: u16) -> Vec<u8> {
    let mut m = [vsi.to_le_bytes(), alg.to_le_bytes()].concat();
    m.extend_from_slice(&[0; 4]);
    m
}

fn mc(i: u8) -> MacAddr {
    [0x33, 0x33, 0xff, 0, 0, i]
}

fn uc(i: u8) -> MacAddr {
    [0x02, 0xaa, 0, 0, 0, i]
}

#[test]
fn iavf_handshake_in_order() {
    let mut f = Fx::new(admin(false));

    // VERSION → {1, 1}.
    let h = f.call(VIRTCHNL_OP_VERSION, &version(1, 1));
    assert_eq!(h, Handled::ok());
    assert_eq!(f.reply, version(1, 1));

    // GET_VF_RESOURCES: 36 bytes, caps = L2 | RSS_PF | VLAN | ADV_LINK_SPEED.
    let h = f.call(VIRTCHNL_OP_GET_VF_RESOURCES, &IAVF_CAPS.to_le_bytes());
    assert_eq!(h.status, 0);
    let caps = VIRTCHNL_VF_OFFLOAD_L2
        | VIRTCHNL_VF_OFFLOAD_RSS_PF
        | VIRTCHNL_VF_OFFLOAD_VLAN
        | VIRTCHNL_VF_CAP_ADV_LINK_SPEED;
    let mut want = vec![1, 0, 4, 0, 5, 0];
    want.extend_from_slice(&9728u16.to_le_bytes());
    want.extend_from_slice(&caps.to_le_bytes());
    want.extend_from_slice(&52u32.to_le_bytes());
    want.extend_from_slice(&64u32.to_le_bytes());
    want.extend_from_slice(&VSI.to_le_bytes());
    want.extend_from_slice(&[4, 0, 6, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&MAC);
    assert_eq!(want.len(), VIRTCHNL_VF_RESOURCE_LEN);
    assert_eq!(f.reply, want);
    assert_eq!(f.vsi.num_pairs, 4);
    assert_eq!(f.pf.granted_caps(0), Some(caps));

    // CONFIG_IRQ_MAP.
    let h = f.call(VIRTCHNL_OP_CONFIG_IRQ_MAP, &iavf_irq_map());
    assert_eq!(h, Handled::ok().queues());
    assert!(f.reply.is_empty());
    for q in 0..4 {
        assert_eq!(f.vsi.irq.rx_vector(q), Some(q + 1));
        assert_eq!(f.vsi.irq.tx_vector(q), Some(q + 1));
    }
    assert_eq!(f.vsi.irq.tx_itr_idx[1], 1);

    // ADD_ETH_ADDR: the primary and two multicast addresses.
    let msg = eth_list(
        VSI,
        &[(MAC, VIRTCHNL_ETHER_ADDR_PRIMARY), (mc(1), 2), (mc(2), 2)],
    );
    assert_eq!(
        f.call(VIRTCHNL_OP_ADD_ETH_ADDR, &msg),
        Handled::ok().filters()
    );

    // ADD_VLAN and stripping.
    let h = f.call(VIRTCHNL_OP_ADD_VLAN, &vlan_list(VSI, &[0, 100, 200]));
    assert_eq!(h, Handled::ok().filters());
    let h = f.call(VIRTCHNL_OP_ENABLE_VLAN_STRIPPING, &[]);
    assert_eq!(h, Handled::ok().filters());
    assert!(f.vsi.vlan_strip);

    // CONFIG_VSI_QUEUES.
    let qs: Vec<Qp> = (0..4).map(Qp::new).collect();
    let h = f.call(VIRTCHNL_OP_CONFIG_VSI_QUEUES, &vsi_queues(VSI, &qs));
    assert_eq!(h, Handled::ok().queues().filters());
    assert_eq!(
        f.vsi.tx[2],
        TxQueueCfg {
            ring_base: RING + 0x2_0000,
            ring_len: 512,
            ..TxQueueCfg::default()
        }
    );
    assert_eq!(
        f.vsi.rx[3],
        RxQueueCfg {
            ring_base: RING + 0x13_0000,
            ring_len: 512,
            buf_size: 3072,
            max_pkt_size: 9728,
            ..RxQueueCfg::default()
        }
    );

    // RSS: HENA caps, key, LUT, HENA.
    let h = f.call(VIRTCHNL_OP_GET_RSS_HENA_CAPS, &[]);
    assert_eq!(h, Handled::ok());
    assert_eq!(f.reply, DEFAULT_RSS_HENA.to_le_bytes());
    let key: Vec<u8> = (0..52).collect();
    let h = f.call(VIRTCHNL_OP_CONFIG_RSS_KEY, &rss_bytes(VSI, &key));
    assert_eq!(h, Handled::ok().queues());
    assert_eq!(&f.vsi.rss.key[..], &key[..]);
    let lut: Vec<u8> = (0..64).map(|i| i % 4).collect();
    let h = f.call(VIRTCHNL_OP_CONFIG_RSS_LUT, &rss_bytes(VSI, &lut));
    assert_eq!(h, Handled::ok().queues());
    assert_eq!(&f.vsi.rss.lut[..], &lut[..]);
    let h = f.call(VIRTCHNL_OP_SET_RSS_HENA, &DEFAULT_RSS_HENA.to_le_bytes());
    assert_eq!(h, Handled::ok().queues());
    assert_eq!(f.vsi.rss.hena, DEFAULT_RSS_HENA);
    let h = f.call(VIRTCHNL_OP_CONFIG_RSS_HFUNC, &hfunc(VSI, 0));
    assert_eq!(h, Handled::ok());

    // ENABLE_QUEUES → LINK_CHANGE right after.
    let h = f.call(VIRTCHNL_OP_ENABLE_QUEUES, &qsel(VSI, 0xF, 0xF));
    assert_eq!(h.status, 0);
    assert!(h.link_event_after && h.queues_changed && h.filters_changed && h.reply);
    assert!(f.vsi.rx.iter().take(4).all(|q| q.enabled));
    assert!(f.vsi.tx.iter().take(4).all(|q| q.enabled));
    let ev = f.pf.link_event(0, true, 25_000).unwrap();
    let mut want = vec![1, 0, 0, 0];
    want.extend_from_slice(&25_000u32.to_le_bytes());
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&ev[..], &want[..]);

    let pfl = f.pf.pool_filter(0, &f.vsi).unwrap();
    assert_eq!(pfl.macs, vec![MAC]);
    assert_eq!(pfl.mc_addrs, vec![mc(1), mc(2)]);
    assert!(pfl.vlans.contains(0) && pfl.vlans.contains(100) && pfl.vlans.contains(200));
    assert_eq!(pfl.vlans.len(), 3);
    assert!(pfl.rx_enabled && pfl.tx_enabled && pfl.broadcast && pfl.accept_untagged);
    assert!(pfl.strip_vlan && pfl.spoofchk && !pfl.uc_promisc && !pfl.mc_promisc);
    assert_eq!(pfl.max_frame, 9732);

    // GET_STATS: counters since the first GET_STATS (the base), in virtchnl_eth_stats order.
    f.stats = VfStats {
        rx_bytes: 1000,
        tx_errors: 3,
        ..VfStats::default()
    };
    let h = f.call(VIRTCHNL_OP_GET_STATS, &qsel(VSI, 0, 0));
    assert_eq!(h, Handled::ok());
    assert_eq!(f.reply, vec![0; 96]);
    f.stats = VfStats {
        rx_bytes: 1500,
        rx_unicast: 1,
        rx_multicast: 2,
        rx_broadcast: 3,
        rx_discards: 4,
        rx_unknown_protocol: 5,
        tx_bytes: 6,
        tx_unicast: 7,
        tx_multicast: 8,
        tx_broadcast: 9,
        tx_discards: 10,
        tx_errors: 14,
    };
    f.call(VIRTCHNL_OP_GET_STATS, &qsel(VSI, 0, 0));
    let got: Vec<u64> = f
        .reply
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, vec![500, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);

    // DISABLE_QUEUES.
    let h = f.call(VIRTCHNL_OP_DISABLE_QUEUES, &qsel(VSI, 0xF, 0xF));
    assert_eq!(h, Handled::ok().queues().filters());
    let pfl = f.pf.pool_filter(0, &f.vsi).unwrap();
    assert!(!pfl.rx_enabled && !pfl.tx_enabled);

    // RESET_VF: no reply, everything but the default MAC and the pair count forgotten.
    let h = f.call(VIRTCHNL_OP_RESET_VF, &[]);
    assert!(!h.reply && h.reset_vf && h.status == 0);
    assert!(f.reply.is_empty());
    let fresh = VsiState {
        num_pairs: 4,
        ..VsiState::default()
    };
    assert_eq!(f.vsi, fresh);
    // Everything forgotten except the negotiated API version (see the next test).
    let mut only_version = Fx::new(admin(false));
    assert_eq!(
        only_version
            .call(VIRTCHNL_OP_VERSION, &version(1, 1))
            .status,
        0
    );
    assert_eq!(f.pf, only_version.pf);
    let pfl = f.pf.pool_filter(0, &f.vsi).unwrap();
    assert_eq!(pfl.macs, vec![MAC]);
    assert!(pfl.mc_addrs.is_empty());
    assert_eq!(pfl.max_frame, DEFAULT_MAX_FRAME);
    // After the reset the VF must negotiate again.
    f.hostile(
        VIRTCHNL_OP_CONFIG_IRQ_MAP,
        &iavf_irq_map(),
        VIRTCHNL_STATUS_ERR_PARAM,
    );
}

#[test]
fn version_negotiation() {
    // A 1.0 VF gets {1, 0}, sends GET_VF_RESOURCES without payload, gets the legacy caps.
    let mut f = Fx::new(admin(false));
    f.call(VIRTCHNL_OP_VERSION, &version(1, 0));
    assert_eq!(f.reply, version(1, 0));
    f.hostile(
        VIRTCHNL_OP_GET_VF_RESOURCES,
        &IAVF_CAPS.to_le_bytes(),
        VIRTCHNL_STATUS_ERR_PARAM,
    );
    assert_eq!(f.call(VIRTCHNL_OP_GET_VF_RESOURCES, &[]).status, 0);
    let caps = VIRTCHNL_VF_OFFLOAD_L2 | VIRTCHNL_VF_OFFLOAD_RSS_REG | VIRTCHNL_VF_OFFLOAD_VLAN;
    assert_eq!(f.pf.granted_caps(0), Some(caps));
    // RSS over virtchnl is not granted to it.
    f.hostile(
        VIRTCHNL_OP_GET_RSS_HENA_CAPS,
        &[],
        VIRTCHNL_STATUS_ERR_NOT_SUPPORTED,
    );
    // A newer VF gets {1, 1}.
    let mut f = Fx::new(admin(false));
    f.call(VIRTCHNL_OP_VERSION, &version(1, 7));
    assert_eq!(f.reply, version(1, 1));
    // A VF asking for nothing still gets L2; RSS_REG only as a fallback for RSS_PF.
    f.call(VIRTCHNL_OP_GET_VF_RESOURCES, &0u32.to_le_bytes());
    assert_eq!(f.pf.granted_caps(0), Some(VIRTCHNL_VF_OFFLOAD_L2));
    let want = VIRTCHNL_VF_OFFLOAD_RSS_REG | VIRTCHNL_VF_OFFLOAD_RX_POLLING;
    f.call(VIRTCHNL_OP_GET_VF_RESOURCES, &want.to_le_bytes());
    assert_eq!(
        f.pf.granted_caps(0),
        Some(VIRTCHNL_VF_OFFLOAD_L2 | want),
        "DPDK-style VF"
    );
}

#[test]
fn hostile_version_and_resources() {
    let mut f = Fx::new(admin(false));
    f.hostile(
        VIRTCHNL_OP_VERSION,
        &[1, 0, 0, 0],
        VIRTCHNL_STATUS_ERR_PARAM,
    );
    f.hostile(VIRTCHNL_OP_VERSION, &[0; 12], VIRTCHNL_STATUS_ERR_PARAM);
    f.call(VIRTCHNL_OP_VERSION, &version(1, 1));
    for msg in [&[][..], &[1, 0][..], &[0; 8][..]] {
        f.hostile(VIRTCHNL_OP_GET_VF_RESOURCES, msg, VIRTCHNL_STATUS_ERR_PARAM);
    }
    // Nothing but negotiation before GET_VF_RESOURCES.
    for (op, msg) in [
        (VIRTCHNL_OP_CONFIG_IRQ_MAP, iavf_irq_map()),
        (VIRTCHNL_OP_ENABLE_QUEUES, qsel(VSI, 1, 1)),
        (VIRTCHNL_OP_GET_STATS, qsel(VSI, 0, 0)),
        (VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE, promisc(VSI, 0)),
        (VIRTCHNL_OP_ADD_ETH_ADDR, eth_list(VSI, &[(MAC, 1)])),
    ] {
        f.hostile(op, &msg, VIRTCHNL_STATUS_ERR_PARAM);
    }
    // RESET_VF with a payload is malformed (no reset).
    f.hostile(VIRTCHNL_OP_RESET_VF, &[0], VIRTCHNL_STATUS_ERR_PARAM);
    // A VF index beyond the PF.
    let (mut vsi, mut reply) = (VsiState::default(), Vec::new());
    let h = f.pf.handle(
        64,
        &mut vsi,
        VIRTCHNL_OP_VERSION,
        &version(1, 1),
        &VfStats::default(),
        &mut reply,
    );
    assert_eq!(h, Handled::error(VIRTCHNL_STATUS_ERR_INVALID_VF_ID));
}

#[test]
fn unsupported_ops_get_not_supported() {
    let mut f = Fx::up(admin(true));
    for op in [
        VIRTCHNL_OP_UNKNOWN,
        VIRTCHNL_OP_CONFIG_TX_QUEUE,
        VIRTCHNL_OP_CONFIG_RX_QUEUE,
        VIRTCHNL_OP_RSVD,
        VIRTCHNL_OP_EVENT,
        VIRTCHNL_OP_RDMA,
        VIRTCHNL_OP_REQUEST_QUEUES,
        VIRTCHNL_OP_ENABLE_CHANNELS,
        VIRTCHNL_OP_ADD_CLOUD_FILTER,
        VIRTCHNL_OP_GET_SUPPORTED_RXDIDS,
        VIRTCHNL_OP_ADD_RSS_CFG,
        VIRTCHNL_OP_ADD_FDIR_FILTER,
        VIRTCHNL_OP_GET_OFFLOAD_VLAN_V2_CAPS,
        VIRTCHNL_OP_ADD_VLAN_V2,
        VIRTCHNL_OP_1588_PTP_GET_CAPS,
        1000,
        u32::MAX,
    ] {
        f.hostile(op, &[0; 16], VIRTCHNL_STATUS_ERR_NOT_SUPPORTED);
        f.hostile(op, &[], VIRTCHNL_STATUS_ERR_NOT_SUPPORTED);
    }
}

#[test]
fn hostile_config_vsi_queues() {
    const P: i32 = VIRTCHNL_STATUS_ERR_PARAM;
    let mut f = Fx::up(admin(false));
    let good: Vec<Qp> = (0..2).map(Qp::new).collect();
    let op = VIRTCHNL_OP_CONFIG_VSI_QUEUES;
    // Lengths: short, without the extra element, with a trailing byte, zero pairs.
    let m = vsi_queues(VSI, &good);
    f.hostile(op, &m[..40], P);
    f.hostile(op, &m[..m.len() - 64], P);
    f.hostile(op, &[&m[..], &[0]].concat(), P);
    f.hostile(op, &vsi_queues(VSI, &[]), P);
    // VSI ids.
    f.hostile(op, &vsi_queues(OTHER_VSI, &good), P);
    let bad = |g: fn(&mut Qp)| {
        let mut qs = good.clone();
        g(&mut qs[1]);
        vsi_queues(VSI, &qs)
    };
    let cases: Vec<Vec<u8>> = vec![
        bad(|q| q.tx_vsi = OTHER_VSI),
        bad(|q| q.rx_vsi = OTHER_VSI),
        bad(|q| q.txq = 4),
        bad(|q| {
            q.txq = 4;
            q.rxq = 4
        }),
        bad(|q| q.rxq = 0),
        bad(|q| {
            q.txq = 0;
            q.rxq = 0
        }),
        bad(|q| q.txq = u16::MAX),
        bad(|q| q.tx_len = 100),
        bad(|q| q.tx_len = 32),
        bad(|q| q.rx_len = 8192),
        bad(|q| q.rx_len = u32::MAX),
        bad(|q| q.tx_base = RING + 64),
        bad(|q| q.rx_base = RING + 8),
        bad(|q| q.buf = 64),
        bad(|q| q.buf = 16 * 1024),
        bad(|q| q.max_pkt = 9729),
        bad(|q| q.max_pkt = 10),
        bad(|q| q.split = 1),
    ];
    for m in &cases {
        f.hostile(op, m, P);
    }
    // More pairs than granted (correct length).
    let five: Vec<Qp> = (0..5).map(|q| Qp::new(q % 4)).collect();
    f.hostile(op, &vsi_queues(VSI, &five), P);
    // A huge count with a short buffer.
    let mut m = vsi_queues(VSI, &good);
    m[2..4].copy_from_slice(&u16::MAX.to_le_bytes());
    f.hostile(op, &m, P);
    // An enabled queue cannot be reconfigured.
    assert_eq!(f.call(op, &vsi_queues(VSI, &good)).status, 0);
    assert_eq!(
        f.call(VIRTCHNL_OP_ENABLE_QUEUES, &qsel(VSI, 2, 0)).status,
        0
    );
    f.hostile(op, &vsi_queues(VSI, &good), P);
    // ring_len 0 leaves a queue unconfigured; the buffer is then not checked.
    assert_eq!(
        f.call(VIRTCHNL_OP_DISABLE_QUEUES, &qsel(VSI, 2, 0)).status,
        0
    );
    let mut q = Qp::new(1);
    q.rx_len = 0;
    q.buf = 0;
    q.max_pkt = 0;
    assert_eq!(f.call(op, &vsi_queues(VSI, &[q])).status, 0);
    assert_eq!(f.vsi.rx[1], RxQueueCfg::default());
    assert_eq!(f.vsi.tx[1].ring_len, 512);
    // Buffer sizes are rounded down to the 128-byte unit.
    let mut q = Qp::new(0);
    q.buf = 2000;
    assert_eq!(f.call(op, &vsi_queues(VSI, &[q])).status, 0);
    assert_eq!(f.vsi.rx[0].buf_size, 1920);
}

#[test]
fn hostile_irq_map() {
    const P: i32 = VIRTCHNL_STATUS_ERR_PARAM;
    let mut f = Fx::up(admin(false));
    let op = VIRTCHNL_OP_CONFIG_IRQ_MAP;
    let m = iavf_irq_map();
    f.hostile(op, &m[..10], P);
    f.hostile(op, &m[..m.len() - 12], P);
    f.hostile(op, &irq_map(&[]), P);
    for e in [
        (OTHER_VSI, 1, 1, 1, 0, 1),
        (VSI, 5, 1, 1, 0, 1),
        (VSI, u16::MAX, 1, 1, 0, 1),
        (VSI, 1, 1 << 4, 1, 0, 1),
        (VSI, 1, 1, 0x8000, 0, 1),
        (VSI, 1, 1, 1, 4, 1),
        (VSI, 1, 1, 1, 0, 9),
    ] {
        // The bad entry last, after a good one, so that partial application would show.
        f.hostile(op, &irq_map(&[(VSI, 2, 2, 2, 0, 1), e]), P);
    }
    let six = [(VSI, 1, 1, 1, 0, 1); 6];
    f.hostile(op, &irq_map(&six), P);
}

#[test]
fn hostile_enable_disable_queues() {
    const P: i32 = VIRTCHNL_STATUS_ERR_PARAM;
    let mut f = Fx::configured(admin(false));
    for op in [VIRTCHNL_OP_ENABLE_QUEUES, VIRTCHNL_OP_DISABLE_QUEUES] {
        f.hostile(op, &qsel(VSI, 1, 1)[..8], P);
        f.hostile(op, &[&qsel(VSI, 1, 1)[..], &[0]].concat(), P);
        f.hostile(op, &qsel(VSI, 0, 0), P);
        f.hostile(op, &qsel(VSI, 1 << 4, 1), P);
        f.hostile(op, &qsel(VSI, 1, 1 << 31), P);
        f.hostile(op, &qsel(OTHER_VSI, 1, 1), P);
    }
    // Enabling an unconfigured queue.
    let mut f = Fx::up(admin(false));
    f.hostile(VIRTCHNL_OP_ENABLE_QUEUES, &qsel(VSI, 1, 1), P);
    // Disabling one is harmless.
    assert_eq!(
        f.call(VIRTCHNL_OP_DISABLE_QUEUES, &qsel(VSI, 1, 1)).status,
        0
    );
}

#[test]
fn mac_filters_untrusted() {
    const P: i32 = VIRTCHNL_STATUS_ERR_PARAM;
    let mut f = Fx::up(admin(false));
    let add = VIRTCHNL_OP_ADD_ETH_ADDR;
    let m = eth_list(VSI, &[(MAC, 1)]);
    f.hostile(add, &m[..8], P);
    f.hostile(add, &m[..m.len() - 8], P);
    f.hostile(add, &eth_list(VSI, &[]), P);
    f.hostile(add, &eth_list(OTHER_VSI, &[(MAC, 1)]), P);
    f.hostile(add, &eth_list(VSI, &[(mc(1), 2), ([0xff; 6], 2)]), P);
    f.hostile(add, &eth_list(VSI, &[(mc(1), 2), ([0; 6], 2)]), P);
    f.hostile(add, &eth_list(VSI, &[(mc(1), 3)]), P);
    // A MAC change away from the admin MAC: refused.
    f.hostile(
        add,
        &eth_list(VSI, &[(mc(1), 2), (uc(1), 1)]),
        VIRTCHNL_STATUS_ERR_NOT_SUPPORTED,
    );
    // Up to 18 filters: the MAC and 17 multicast.
    let list: Vec<_> = (0..17).map(|i| (mc(i), 2)).collect();
    assert_eq!(f.call(add, &eth_list(VSI, &list)).status, 0);
    assert_eq!(f.call(add, &eth_list(VSI, &list)).status, 0, "idempotent");
    f.hostile(
        add,
        &eth_list(VSI, &[(mc(100), 2)]),
        VIRTCHNL_STATUS_ERR_NO_MEMORY,
    );
    // Deleting: the admin MAC stays (acknowledged), multicast goes.
    let del = VIRTCHNL_OP_DEL_ETH_ADDR;
    f.hostile(del, &eth_list(VSI, &[]), P);
    f.hostile(del, &eth_list(VSI, &[([0xff; 6], 0)]), P);
    f.hostile(del, &eth_list(OTHER_VSI, &[(mc(1), 0)]), P);
    f.hostile(del, &m[..5], P);
    let h = f.call(del, &eth_list(VSI, &[(MAC, 1), (mc(0), 2), (uc(9), 2)]));
    assert_eq!(h, Handled::ok().filters());
    let pfl = f.pf.pool_filter(0, &f.vsi).unwrap();
    assert_eq!(pfl.macs, vec![MAC]);
    assert_eq!(pfl.mc_addrs.len(), 16);
    assert!(!pfl.mc_addrs.contains(&mc(0)));
}

#[test]
fn mac_filters_trusted_change_and_reset() {
    let mut f = Fx::up(admin(true));
    // iavf's MAC change: add the new one as PRIMARY, delete the old one.
    let h = f.call(VIRTCHNL_OP_ADD_ETH_ADDR, &eth_list(VSI, &[(uc(1), 1)]));
    assert_eq!(h.status, 0);
    let h = f.call(VIRTCHNL_OP_DEL_ETH_ADDR, &eth_list(VSI, &[(MAC, 2)]));
    assert_eq!(h.status, 0);
    let extra: Vec<_> = (2..6).map(|i| (uc(i), 2)).collect();
    assert_eq!(
        f.call(VIRTCHNL_OP_ADD_ETH_ADDR, &eth_list(VSI, &extra))
            .status,
        0
    );
    assert_eq!(f.pf.pool_filter(0, &f.vsi).unwrap().macs[0], uc(1));
    assert_eq!(f.pf.pool_filter(0, &f.vsi).unwrap().macs.len(), 5);
    // Trusted limit.
    let many: Vec<_> = (0..60).map(|i| (mc(i), 2)).collect();
    f.hostile(
        VIRTCHNL_OP_ADD_ETH_ADDR,
        &eth_list(VSI, &many),
        VIRTCHNL_STATUS_ERR_NO_MEMORY,
    );
    // Reset keeps the current default MAC only.
    f.pf.vf_reset(0, &mut f.vsi);
    assert_eq!(f.pf.pool_filter(0, &f.vsi).unwrap().macs, vec![uc(1)]);
}

#[test]
fn zero_admin_mac_lets_the_vf_choose() {
    let mut a = admin(false);
    a.mac = [0; 6];
    let mut f = Fx::up(a);
    assert_eq!(&f.reply[30..36], &[0; 6]);
    assert!(f.pf.pool_filter(0, &f.vsi).unwrap().macs.is_empty());
    assert_eq!(
        f.call(VIRTCHNL_OP_ADD_ETH_ADDR, &eth_list(VSI, &[(uc(7), 0)]))
            .status,
        0
    );
    f.pf.vf_reset(0, &mut f.vsi);
    assert_eq!(f.pf.pool_filter(0, &f.vsi).unwrap().macs, vec![uc(7)]);
}

#[test]
fn vlan_filters_and_stripping() {
    const P: i32 = VIRTCHNL_STATUS_ERR_PARAM;
    let mut f = Fx::up(admin(false));
    for op in [VIRTCHNL_OP_ADD_VLAN, VIRTCHNL_OP_DEL_VLAN] {
        let m = vlan_list(VSI, &[5]);
        f.hostile(op, &m[..4], P);
        f.hostile(op, &m[..m.len() - 2], P);
        f.hostile(op, &vlan_list(VSI, &[]), P);
        f.hostile(op, &vlan_list(VSI, &[5, 4096]), P);
        f.hostile(op, &vlan_list(OTHER_VSI, &[5]), P);
    }
    let vids: Vec<u16> = (1..=16).collect();
    assert_eq!(
        f.call(VIRTCHNL_OP_ADD_VLAN, &vlan_list(VSI, &vids)).status,
        0
    );
    f.hostile(
        VIRTCHNL_OP_ADD_VLAN,
        &vlan_list(VSI, &[17]),
        VIRTCHNL_STATUS_ERR_NO_MEMORY,
    );
    assert_eq!(
        f.call(VIRTCHNL_OP_DEL_VLAN, &vlan_list(VSI, &[0, 1, 999]))
            .status,
        0
    );
    let pfl = f.pf.pool_filter(0, &f.vsi).unwrap();
    assert!(pfl.vlans.contains(0) && !pfl.vlans.contains(1) && pfl.vlans.contains(16));
    for op in [
        VIRTCHNL_OP_ENABLE_VLAN_STRIPPING,
        VIRTCHNL_OP_DISABLE_VLAN_STRIPPING,
    ] {
        f.hostile(op, &[0], P);
    }
    // A port VLAN: no VLAN cap, so every VLAN op is NOT_SUPPORTED.
    let mut a = admin(false);
    a.port_vlan = Some(7);
    let mut f = Fx::up(a);
    assert_eq!(f.pf.granted_caps(0).unwrap() & VIRTCHNL_VF_OFFLOAD_VLAN, 0);
    for (op, m) in [
        (VIRTCHNL_OP_ADD_VLAN, vlan_list(VSI, &[5])),
        (VIRTCHNL_OP_DEL_VLAN, vlan_list(VSI, &[5])),
        (VIRTCHNL_OP_ENABLE_VLAN_STRIPPING, vec![]),
        (VIRTCHNL_OP_DISABLE_VLAN_STRIPPING, vec![]),
    ] {
        f.hostile(op, &m, VIRTCHNL_STATUS_ERR_NOT_SUPPORTED);
    }
    let pfl = f.pf.pool_filter(0, &f.vsi).unwrap();
    assert_eq!(pfl.port_vlan, Some(7));
    assert!(!pfl.accept_untagged);
}

#[test]
fn promiscuous_mode_needs_trust() {
    const P: i32 = VIRTCHNL_STATUS_ERR_PARAM;
    let op = VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE;
    let mut f = Fx::up(admin(false));
    for flags in [1, 2, 3] {
        f.hostile(op, &promisc(VSI, flags), VIRTCHNL_STATUS_ERR_NOT_SUPPORTED);
    }
    f.hostile(op, &promisc(VSI, 4), P);
    f.hostile(op, &promisc(VSI, 1)[..2], P);
    f.hostile(op, &promisc(OTHER_VSI, 0), P);
    assert_eq!(f.call(op, &promisc(VSI, 0)).status, 0);

    let mut f = Fx::up(admin(true));
    f.hostile(op, &promisc(VSI, 0x8001), P);
    assert_eq!(f.call(op, &promisc(VSI, 3)), Handled::ok().filters());
    let pfl = f.pf.pool_filter(0, &f.vsi).unwrap();
    assert!(pfl.uc_promisc && pfl.mc_promisc);
    assert_eq!(f.call(op, &promisc(VSI, 2)).status, 0);
    let pfl = f.pf.pool_filter(0, &f.vsi).unwrap();
    assert!(!pfl.uc_promisc && pfl.mc_promisc);
}

#[test]
fn hostile_stats() {
    const P: i32 = VIRTCHNL_STATUS_ERR_PARAM;
    let mut f = Fx::up(admin(false));
    f.hostile(VIRTCHNL_OP_GET_STATS, &[], P);
    f.hostile(VIRTCHNL_OP_GET_STATS, &qsel(VSI, 0, 0)[..4], P);
    f.hostile(VIRTCHNL_OP_GET_STATS, &qsel(OTHER_VSI, 0, 0), P);
    // A dataplane counter reset below the base is reported as is, not wrapped.
    f.stats.rx_bytes = 100;
    f.call(VIRTCHNL_OP_GET_STATS, &qsel(VSI, 0, 0));
    f.stats.rx_bytes = 40;
    f.call(VIRTCHNL_OP_GET_STATS, &qsel(VSI, 0, 0));
    assert_eq!(&f.reply[..8], &40u64.to_le_bytes());
}

#[test]
fn hostile_rss() {
    const P: i32 = VIRTCHNL_STATUS_ERR_PARAM;
    let mut f = Fx::up(admin(false));
    let key = [7u8; 52];
    let k = rss_bytes(VSI, &key);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_KEY, &k[..5], P);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_KEY, &k[..k.len() - 1], P);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_KEY, &[&k[..], &[0]].concat(), P);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_KEY, &rss_bytes(VSI, &key[..40]), P);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_KEY, &rss_bytes(VSI, &[]), P);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_KEY, &rss_bytes(OTHER_VSI, &key), P);
    let lut = [1u8; 64];
    let l = rss_bytes(VSI, &lut);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_LUT, &l[..3], P);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_LUT, &l[..l.len() - 2], P);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_LUT, &rss_bytes(VSI, &lut[..32]), P);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_LUT, &rss_bytes(OTHER_VSI, &lut), P);
    let mut bad = lut;
    bad[63] = 4;
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_LUT, &rss_bytes(VSI, &bad), P);
    f.hostile(VIRTCHNL_OP_GET_RSS_HENA_CAPS, &[0], P);
    f.hostile(VIRTCHNL_OP_SET_RSS_HENA, &[0; 4], P);
    f.hostile(VIRTCHNL_OP_SET_RSS_HENA, &[0; 9], P);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_HFUNC, &hfunc(VSI, 0)[..4], P);
    f.hostile(VIRTCHNL_OP_CONFIG_RSS_HFUNC, &hfunc(OTHER_VSI, 0), P);
    f.hostile(
        VIRTCHNL_OP_CONFIG_RSS_HFUNC,
        &hfunc(VSI, VIRTCHNL_RSS_ALG_TOEPLITZ_SYMMETRIC),
        VIRTCHNL_STATUS_ERR_NOT_SUPPORTED,
    );
    // HENA outside the caps is masked, not refused.
    assert_eq!(
        f.call(VIRTCHNL_OP_SET_RSS_HENA, &u64::MAX.to_le_bytes())
            .status,
        0
    );
    assert_eq!(f.vsi.rss.hena, DEFAULT_RSS_HENA);
    // A VF that did not ask for RSS_PF gets NOT_SUPPORTED for every RSS op.
    let mut f = Fx::new(admin(false));
    f.call(VIRTCHNL_OP_VERSION, &version(1, 1));
    f.call(
        VIRTCHNL_OP_GET_VF_RESOURCES,
        &VIRTCHNL_VF_OFFLOAD_L2.to_le_bytes(),
    );
    for (op, m) in [
        (VIRTCHNL_OP_CONFIG_RSS_KEY, k.clone()),
        (VIRTCHNL_OP_CONFIG_RSS_LUT, l.clone()),
        (VIRTCHNL_OP_GET_RSS_HENA_CAPS, vec![]),
        (VIRTCHNL_OP_SET_RSS_HENA, vec![0; 8]),
        (VIRTCHNL_OP_CONFIG_RSS_HFUNC, hfunc(VSI, 0)),
    ] {
        f.hostile(op, &m, VIRTCHNL_STATUS_ERR_NOT_SUPPORTED);
    }
}

#[test]
fn link_change_event_formats() {
    let ev = link_change_event(true, 10_000, false);
    assert_eq!(
        ev,
        [1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        "10G enum bit 3"
    );
    let ev = link_change_event(false, 100_000, false);
    assert_eq!(&ev[4..9], &[0x10, 0, 0, 0, 0], "40G enum, link down");
    let ev = link_change_event(true, 100_000, true);
    assert_eq!(&ev[4..9], &[0xa0, 0x86, 1, 0, 1]);
    assert_eq!(link_change_event(true, 50, false)[4], 0);
    // Before GET_VF_RESOURCES the legacy format is used.
    let pf = AvfPf::new(&[admin(false)]);
    assert_eq!(
        pf.link_event(0, true, 10_000),
        Some(link_change_event(true, 10_000, false))
    );
    assert_eq!(pf.link_event(1, true, 10_000), None);
}

#[test]
fn pool_filter_defaults_and_limits() {
    let admins = vec![admin(false); 70];
    let pf = AvfPf::new(&admins);
    assert_eq!(pf.num_vfs(), MAX_VFS);
    assert!(pf.pool_filter(64, &VsiState::default()).is_none());
    let pfl = pf.pool_filter(63, &VsiState::default()).unwrap();
    assert_eq!(pfl.macs, vec![MAC]);
    assert!(pfl.broadcast && pfl.accept_untagged && !pfl.rx_enabled && !pfl.tx_enabled);
    assert!(pfl.vlans.contains(0));
    assert_eq!(pfl.max_frame, DEFAULT_MAX_FRAME);
    // Admin pair counts: 0 → 4, >16 → 16.
    let mut a = admin(false);
    a.queue_pairs = 40;
    let f = Fx::up(a);
    assert_eq!(f.vsi.num_pairs, 16);
    assert_eq!(&f.reply[2..6], &[16, 0, 17, 0]);
}

#[test]
fn max_frame_follows_the_queues() {
    let mut f = Fx::up(admin(false));
    let mut q = Qp::new(0);
    q.max_pkt = 1534;
    f.call(VIRTCHNL_OP_CONFIG_VSI_QUEUES, &vsi_queues(VSI, &[q]));
    assert_eq!(f.pf.pool_filter(0, &f.vsi).unwrap().max_frame, 1538);
}

#[test]
fn random_messages_never_panic() {
    let mut f = Fx::configured(admin(true));
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let ops = [
        1u32, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 18, 23, 24, 25, 26, 27, 28,
    ];
    for _ in 0..5000 {
        let op = ops[(rnd() % ops.len() as u64) as usize];
        let len = (rnd() % 200) as usize;
        let mut msg: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if msg.len() >= 2 && rnd() & 1 == 0 {
            msg[0..2].copy_from_slice(&VSI.to_le_bytes());
        }
        if msg.len() >= 4 && rnd() & 1 == 0 {
            msg[2..4].copy_from_slice(&((rnd() % 6) as u16).to_le_bytes());
        }
        let h = f.call(op, &msg);
        assert!(h.reply);
        if h.status != 0 {
            assert!(f.reply.is_empty());
        }
    }
}

#[test]
fn adminq_and_pf_together() {
    use crate::avf::adminq::{process_atq, AqDesc, AqScratch};
    use crate::mem::{GuestMemory, VecMemory};
    use emu_nic_defs::avf_virtchnl::*;

    let base = 0x10_0000u64;
    let mem = VecMemory::new(base, 0x2_0000);
    let mut aq = crate::avf::state::AqRegs {
        atq_bal: base as u32,
        atq_len: 4 | AQ_LEN_ENABLE,
        arq_bal: (base + 0x100) as u32,
        arq_len: 4 | AQ_LEN_ENABLE,
        arq_tail: 3,
        ..Default::default()
    };
    for i in 0..4u64 {
        let d = AqDesc {
            flags: AQ_FLAG_BUF,
            datalen: 4096,
            addr_low: (base + 0x1_0000 + i * 0x1000) as u32,
            ..AqDesc::default()
        };
        mem.write(base + 0x100 + i * 32, &d.to_bytes()).unwrap();
    }
    let reqs = [
        (VIRTCHNL_OP_VERSION, version(1, 1)),
        (
            VIRTCHNL_OP_GET_VF_RESOURCES,
            IAVF_CAPS.to_le_bytes().to_vec(),
        ),
        (VIRTCHNL_OP_RESET_VF, vec![]),
    ];
    for (i, (op, msg)) in reqs.iter().enumerate() {
        let buf = base + 0x8000 + i as u64 * 0x1000;
        mem.write(buf, msg).unwrap();
        let d = AqDesc {
            flags: AQ_FLAG_SI
                | if msg.is_empty() {
                    0
                } else {
                    AQ_FLAG_BUF | AQ_FLAG_RD
                },
            opcode: AQ_OPC_SEND_MSG_TO_PF,
            datalen: msg.len() as u16,
            cookie_high: *op,
            addr_low: buf as u32,
            ..AqDesc::default()
        };
        mem.write(base + i as u64 * 32, &d.to_bytes()).unwrap();
    }
    aq.atq_tail = 3;
    let mut pf = AvfPf::new(&[admin(false)]);
    let mut vsi = VsiState::default();
    let stats = VfStats::default();
    let mut resets = 0;
    let out = process_atq(
        &mut aq,
        &mem,
        &mut AqScratch::new(),
        &mut |op, msg, reply| {
            let h = pf.handle(0, &mut vsi, op, msg, &stats, reply);
            resets += usize::from(h.reset_vf);
            h.reply.then_some(h.status)
        },
    );
    assert_eq!(
        (out.processed, out.posted, out.no_reply, out.errors),
        (3, 2, 1, 0)
    );
    assert_eq!(resets, 1);
    assert_eq!(aq.atq_head, 3);
    assert_eq!(aq.arq_head, 2);
    let mut d = [0u8; 32];
    mem.read(base + 0x100 + 32, &mut d).unwrap();
    let d = AqDesc::from_bytes(&d);
    assert_eq!(d.cookie_high, VIRTCHNL_OP_GET_VF_RESOURCES);
    assert_eq!(d.datalen, 36);
    let mut r = [0u8; 36];
    mem.read(base + 0x1_1000, &mut r).unwrap();
    assert_eq!(&r[30..36], &MAC);
}

#[test]
fn reset_vf_keeps_the_api_version_for_the_reset_task() {
    // iavf_reset_task re-inits the AdminQ and sends GET_VF_RESOURCES (with caps) without a
    // new VERSION; forgetting 1.1 would treat it as a 1.0 VF and refuse the caps payload.
    let mut f = Fx::configured(admin(false));
    let h = f.call(VIRTCHNL_OP_RESET_VF, &[]);
    assert!(h.reset_vf && !h.reply);
    assert_eq!(f.vsi.tx[0].ring_len, 0, "queues forgotten");
    let h = f.call(VIRTCHNL_OP_GET_VF_RESOURCES, &IAVF_CAPS.to_le_bytes());
    assert_eq!(h.status, 0, "GET_VF_RESOURCES after RESET_VF");
    assert_eq!(f.vsi.num_pairs, 4);
    let qs: Vec<Qp> = (0..4).map(Qp::new).collect();
    assert_eq!(
        f.call(VIRTCHNL_OP_CONFIG_VSI_QUEUES, &vsi_queues(VSI, &qs))
            .status,
        0
    );
}

#[test]
fn set_admin_applies_at_once_and_keeps_queue_pairs() {
    let mut f = Fx::configured(admin(true));
    assert_eq!(
        f.call(VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE, &promisc(VSI, 3))
            .status,
        0
    );
    assert!(f.pf.pool_filter(0, &f.vsi).unwrap().uc_promisc);
    let new_mac = uc(42);
    assert!(f.pf.set_admin(
        0,
        AvfVfAdmin {
            mac: new_mac,
            trusted: false,
            spoofchk: false,
            port_vlan: Some(7),
            queue_pairs: 16,
        }
    ));
    let pfl = f.pf.pool_filter(0, &f.vsi).unwrap();
    assert_eq!(pfl.macs, vec![new_mac]);
    assert_eq!(pfl.port_vlan, Some(7));
    assert!(!pfl.spoofchk && !pfl.uc_promisc && !pfl.mc_promisc);
    assert!(!f.pf.set_admin(9, admin(false)));
    let asked = pfl.max_frame;
    assert!(f.pf.set_max_frame_cap(0, Some(1000)));
    assert_eq!(
        f.pf.pool_filter(0, &f.vsi).unwrap().max_frame,
        asked.min(1000)
    );
    assert!(f.pf.set_max_frame_cap(0, Some(100_000)));
    assert_eq!(f.pf.pool_filter(0, &f.vsi).unwrap().max_frame, asked);
    assert!(!f.pf.set_max_frame_cap(9, None));
}
