//! virtchnl wire formats: the checked length rule of every request (mirroring
//! `virtchnl_vc_validate_vf_msg`), little-endian field readers that fail instead of panicking,
//! request structs decoded from a length-checked buffer, and reply encoders.

use emu_nic_defs::avf_virtchnl::*;

/// `msg[off..off+2]` as a little-endian u16, or `None` past the end.
pub(super) fn u16_at(msg: &[u8], off: usize) -> Option<u16> {
    let b = msg.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

pub(super) fn u32_at(msg: &[u8], off: usize) -> Option<u32> {
    let b = msg.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(super) fn u64_at(msg: &[u8], off: usize) -> Option<u64> {
    let lo = u32_at(msg, off)?;
    let hi = u32_at(msg, off.checked_add(4)?)?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// The only valid length of a request with opcode `op` given its first bytes, and whether its
/// element count is zero (a format error), per `virtchnl_vc_validate_vf_msg`. `v11`: the VF
/// negotiated version 1.1 (GET_VF_RESOURCES then carries its caps). `None`: no rule (an
/// opcode this PF does not implement).
pub(super) fn expected_len(op: u32, msg: &[u8], v11: bool) -> Option<(usize, bool)> {
    // For "header + n elements" messages: the one-element struct size, then + n × element.
    let list = |one: usize, count_off: usize, elem: usize| -> (usize, bool) {
        if msg.len() < one {
            return (one, false);
        }
        let n = usize::from(u16_at(msg, count_off).unwrap_or(0));
        (one + n * elem, n == 0)
    };
    // For the byte-array RSS messages: size + n − 1 (the declared one byte counts once).
    let bytes = |one: usize| -> (usize, bool) {
        if msg.len() < one {
            return (one, false);
        }
        let n = usize::from(u16_at(msg, 2).unwrap_or(0));
        ((one + n).saturating_sub(1), false)
    };
    Some(match op {
        VIRTCHNL_OP_VERSION => (VIRTCHNL_VERSION_INFO_LEN, false),
        VIRTCHNL_OP_RESET_VF => (0, false),
        VIRTCHNL_OP_GET_VF_RESOURCES => (if v11 { 4 } else { 0 }, false),
        VIRTCHNL_OP_CONFIG_VSI_QUEUES => list(
            VIRTCHNL_VSI_QUEUE_CONFIG_INFO_LEN,
            2,
            VIRTCHNL_QUEUE_PAIR_INFO_LEN,
        ),
        VIRTCHNL_OP_CONFIG_IRQ_MAP => list(VIRTCHNL_IRQ_MAP_INFO_LEN, 0, VIRTCHNL_VECTOR_MAP_LEN),
        VIRTCHNL_OP_ENABLE_QUEUES | VIRTCHNL_OP_DISABLE_QUEUES | VIRTCHNL_OP_GET_STATS => {
            (VIRTCHNL_QUEUE_SELECT_LEN, false)
        }
        VIRTCHNL_OP_ADD_ETH_ADDR | VIRTCHNL_OP_DEL_ETH_ADDR => {
            list(VIRTCHNL_ETHER_ADDR_LIST_LEN, 2, VIRTCHNL_ETHER_ADDR_LEN)
        }
        VIRTCHNL_OP_ADD_VLAN | VIRTCHNL_OP_DEL_VLAN => list(VIRTCHNL_VLAN_FILTER_LIST_LEN, 2, 2),
        VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE => (VIRTCHNL_PROMISC_INFO_LEN, false),
        VIRTCHNL_OP_CONFIG_RSS_KEY => bytes(VIRTCHNL_RSS_KEY_LEN),
        VIRTCHNL_OP_CONFIG_RSS_LUT => bytes(VIRTCHNL_RSS_LUT_LEN),
        VIRTCHNL_OP_GET_RSS_HENA_CAPS => (0, false),
        VIRTCHNL_OP_SET_RSS_HENA => (VIRTCHNL_RSS_HENA_LEN, false),
        VIRTCHNL_OP_CONFIG_RSS_HFUNC => (VIRTCHNL_RSS_HFUNC_LEN, false),
        VIRTCHNL_OP_ENABLE_VLAN_STRIPPING | VIRTCHNL_OP_DISABLE_VLAN_STRIPPING => (0, false),
        _ => return None,
    })
}

/// `virtchnl_txq_info`, the fields a PF uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TxqInfo {
    pub vsi_id: u16,
    pub queue_id: u16,
    pub ring_len: u32,
    pub dma_ring_addr: u64,
}

/// `virtchnl_rxq_info`, the fields a PF uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RxqInfo {
    pub vsi_id: u16,
    pub queue_id: u16,
    pub ring_len: u32,
    pub splithdr_enabled: u16,
    pub databuffer_size: u32,
    pub max_pkt_size: u32,
    pub dma_ring_addr: u64,
}

/// Decodes queue pair `i` of a length-checked CONFIG_VSI_QUEUES message.
pub(super) fn queue_pair(msg: &[u8], i: usize) -> Option<(TxqInfo, RxqInfo)> {
    let off = VIRTCHNL_VSI_QUEUE_CONFIG_HDR_LEN
        .checked_add(i.checked_mul(VIRTCHNL_QUEUE_PAIR_INFO_LEN)?)?;
    let tx = msg.get(off..off + VIRTCHNL_TXQ_INFO_LEN)?;
    let rx = msg.get(off + VIRTCHNL_TXQ_INFO_LEN..off + VIRTCHNL_QUEUE_PAIR_INFO_LEN)?;
    Some((
        TxqInfo {
            vsi_id: u16_at(tx, TXQ_VSI_ID)?,
            queue_id: u16_at(tx, TXQ_QUEUE_ID)?,
            ring_len: u32::from(u16_at(tx, TXQ_RING_LEN)?),
            dma_ring_addr: u64_at(tx, TXQ_DMA_RING_ADDR)?,
        },
        RxqInfo {
            vsi_id: u16_at(rx, RXQ_VSI_ID)?,
            queue_id: u16_at(rx, RXQ_QUEUE_ID)?,
            ring_len: u32_at(rx, RXQ_RING_LEN)?,
            splithdr_enabled: u16_at(rx, RXQ_SPLITHDR_ENABLED)?,
            databuffer_size: u32_at(rx, RXQ_DATABUFFER_SIZE)?,
            max_pkt_size: u32_at(rx, RXQ_MAX_PKT_SIZE)?,
            dma_ring_addr: u64_at(rx, RXQ_DMA_RING_ADDR)?,
        },
    ))
}

/// `virtchnl_vector_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct VectorMap {
    pub vsi_id: u16,
    pub vector_id: u16,
    pub rxq_map: u16,
    pub txq_map: u16,
    pub rxitr_idx: u16,
    pub txitr_idx: u16,
}

/// Decodes map `i` of a length-checked CONFIG_IRQ_MAP message.
pub(super) fn vector_map(msg: &[u8], i: usize) -> Option<VectorMap> {
    let off = VIRTCHNL_IRQ_MAP_INFO_HDR_LEN.checked_add(i.checked_mul(VIRTCHNL_VECTOR_MAP_LEN)?)?;
    Some(VectorMap {
        vsi_id: u16_at(msg, off)?,
        vector_id: u16_at(msg, off + 2)?,
        rxq_map: u16_at(msg, off + 4)?,
        txq_map: u16_at(msg, off + 6)?,
        rxitr_idx: u16_at(msg, off + 8)?,
        txitr_idx: u16_at(msg, off + 10)?,
    })
}

/// Decodes address `i` (addr, type) of a length-checked ADD/DEL_ETH_ADDR message.
pub(super) fn ether_addr(msg: &[u8], i: usize) -> Option<([u8; 6], u8)> {
    let off =
        VIRTCHNL_ETHER_ADDR_LIST_HDR_LEN.checked_add(i.checked_mul(VIRTCHNL_ETHER_ADDR_LEN)?)?;
    let b = msg.get(off..off + VIRTCHNL_ETHER_ADDR_LEN)?;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&b[..6]);
    Some((mac, b[6]))
}

/// Encodes the GET_VF_RESOURCES reply: `virtchnl_vf_resource` with one `virtchnl_vsi_resource`
/// (36 bytes).
#[allow(clippy::too_many_arguments)]
pub(super) fn put_vf_resource(
    out: &mut Vec<u8>,
    num_queue_pairs: u16,
    max_vectors: u16,
    max_mtu: u16,
    caps: u32,
    rss_key_size: u32,
    rss_lut_size: u32,
    vsi_id: u16,
    mac: [u8; 6],
) {
    out.extend_from_slice(&1u16.to_le_bytes()); // num_vsis
    out.extend_from_slice(&num_queue_pairs.to_le_bytes());
    out.extend_from_slice(&max_vectors.to_le_bytes());
    out.extend_from_slice(&max_mtu.to_le_bytes());
    out.extend_from_slice(&caps.to_le_bytes());
    out.extend_from_slice(&rss_key_size.to_le_bytes());
    out.extend_from_slice(&rss_lut_size.to_le_bytes());
    out.extend_from_slice(&vsi_id.to_le_bytes());
    out.extend_from_slice(&num_queue_pairs.to_le_bytes());
    out.extend_from_slice(&VIRTCHNL_VSI_SRIOV.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // qset_handle
    out.extend_from_slice(&mac);
}
