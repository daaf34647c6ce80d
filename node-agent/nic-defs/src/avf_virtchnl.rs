//! AVF AdminQ descriptors and the virtchnl protocol spoken over them, as data: AQ descriptor
//! layout, flags, opcodes and return codes; virtchnl opcodes, status codes, capability bits,
//! wire struct sizes, event codes and link speeds. Names follow
//! `include/linux/avf/virtchnl.h` and `drivers/net/ethernet/intel/iavf/iavf_adminq_cmd.h`;
//! semantics are in `shared/design/devices.md` §3.3–§3.7. Register offsets live in `avf`.

// --- AdminQ descriptor (struct iavf_aq_desc, 32 bytes, little-endian) ---

pub const AQ_DESC_SIZE: usize = 32;
pub const AQ_DESC_FLAGS: usize = 0;
pub const AQ_DESC_OPCODE: usize = 2;
pub const AQ_DESC_DATALEN: usize = 4;
pub const AQ_DESC_RETVAL: usize = 6;
/// virtchnl opcode (`virtchnl_msg.v_opcode`).
pub const AQ_DESC_COOKIE_HIGH: usize = 8;
/// virtchnl status (`virtchnl_msg.v_retval`).
pub const AQ_DESC_COOKIE_LOW: usize = 12;
pub const AQ_DESC_PARAM0: usize = 16;
pub const AQ_DESC_PARAM1: usize = 20;
pub const AQ_DESC_ADDR_HIGH: usize = 24;
pub const AQ_DESC_ADDR_LOW: usize = 28;

// Descriptor flags (IAVF_AQ_FLAG_*).
pub const AQ_FLAG_DD: u16 = 0x0001;
pub const AQ_FLAG_CMP: u16 = 0x0002;
pub const AQ_FLAG_ERR: u16 = 0x0004;
pub const AQ_FLAG_VFE: u16 = 0x0008;
/// Buffer larger than [`AQ_LARGE_BUF`] bytes.
pub const AQ_FLAG_LB: u16 = 0x0200;
/// The indirect buffer is input to the device.
pub const AQ_FLAG_RD: u16 = 0x0400;
pub const AQ_FLAG_VFC: u16 = 0x0800;
/// The descriptor carries an indirect buffer (addr_high/addr_low, datalen).
pub const AQ_FLAG_BUF: u16 = 0x1000;
pub const AQ_FLAG_SI: u16 = 0x2000;
pub const AQ_FLAG_EI: u16 = 0x4000;
pub const AQ_FLAG_FE: u16 = 0x8000;
/// Buffers above this size carry [`AQ_FLAG_LB`] (IAVF_AQ_LARGE_BUF).
pub const AQ_LARGE_BUF: usize = 512;
/// Largest AQ indirect buffer iavf allocates (IAVF_MAX_AQ_BUF_SIZE).
pub const AQ_MAX_BUF_SIZE: usize = 4096;

// AQ opcodes (iavf_aqc_opc_*).
/// VF→PF message, posted on the ATQ.
pub const AQ_OPC_SEND_MSG_TO_PF: u16 = 0x0801;
/// PF→VF message, delivered on the ARQ.
pub const AQ_OPC_SEND_MSG_TO_VF: u16 = 0x0802;

// AQ return codes (enum iavf_admin_queue_err), written to `retval` with AQ_FLAG_ERR.
pub const AQ_RC_OK: u16 = 0;
pub const AQ_RC_EIO: u16 = 5;
pub const AQ_RC_E2BIG: u16 = 7;
pub const AQ_RC_EFAULT: u16 = 11;
pub const AQ_RC_EINVAL: u16 = 14;
pub const AQ_RC_ENOSYS: u16 = 17;

// ATQLEN/ARQLEN bit fields (VF_ATQLEN1 / VF_ARQLEN1).
pub const AQ_LEN_MASK: u32 = 0x3FF;
pub const AQ_LEN_VFE: u32 = 1 << 28;
pub const AQ_LEN_OVFL: u32 = 1 << 29;
pub const AQ_LEN_CRIT: u32 = 1 << 30;
pub const AQ_LEN_ENABLE: u32 = 1 << 31;
/// ATQH/ATQT/ARQH/ARQT hold a 10-bit index.
pub const AQ_HT_MASK: u32 = 0x3FF;

// --- virtchnl versions ---

pub const VIRTCHNL_VERSION_MAJOR: u32 = 1;
pub const VIRTCHNL_VERSION_MINOR: u32 = 1;
pub const VIRTCHNL_VERSION_MINOR_NO_VF_CAPS: u32 = 0;

// --- virtchnl opcodes (enum virtchnl_ops) ---

pub const VIRTCHNL_OP_UNKNOWN: u32 = 0;
pub const VIRTCHNL_OP_VERSION: u32 = 1;
pub const VIRTCHNL_OP_RESET_VF: u32 = 2;
pub const VIRTCHNL_OP_GET_VF_RESOURCES: u32 = 3;
pub const VIRTCHNL_OP_CONFIG_TX_QUEUE: u32 = 4;
pub const VIRTCHNL_OP_CONFIG_RX_QUEUE: u32 = 5;
pub const VIRTCHNL_OP_CONFIG_VSI_QUEUES: u32 = 6;
pub const VIRTCHNL_OP_CONFIG_IRQ_MAP: u32 = 7;
pub const VIRTCHNL_OP_ENABLE_QUEUES: u32 = 8;
pub const VIRTCHNL_OP_DISABLE_QUEUES: u32 = 9;
pub const VIRTCHNL_OP_ADD_ETH_ADDR: u32 = 10;
pub const VIRTCHNL_OP_DEL_ETH_ADDR: u32 = 11;
pub const VIRTCHNL_OP_ADD_VLAN: u32 = 12;
pub const VIRTCHNL_OP_DEL_VLAN: u32 = 13;
pub const VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE: u32 = 14;
pub const VIRTCHNL_OP_GET_STATS: u32 = 15;
pub const VIRTCHNL_OP_RSVD: u32 = 16;
pub const VIRTCHNL_OP_EVENT: u32 = 17;
pub const VIRTCHNL_OP_CONFIG_RSS_HFUNC: u32 = 18;
pub const VIRTCHNL_OP_RDMA: u32 = 20;
pub const VIRTCHNL_OP_CONFIG_RSS_KEY: u32 = 23;
pub const VIRTCHNL_OP_CONFIG_RSS_LUT: u32 = 24;
pub const VIRTCHNL_OP_GET_RSS_HENA_CAPS: u32 = 25;
pub const VIRTCHNL_OP_SET_RSS_HENA: u32 = 26;
pub const VIRTCHNL_OP_ENABLE_VLAN_STRIPPING: u32 = 27;
pub const VIRTCHNL_OP_DISABLE_VLAN_STRIPPING: u32 = 28;
pub const VIRTCHNL_OP_REQUEST_QUEUES: u32 = 29;
pub const VIRTCHNL_OP_ENABLE_CHANNELS: u32 = 30;
pub const VIRTCHNL_OP_DISABLE_CHANNELS: u32 = 31;
pub const VIRTCHNL_OP_ADD_CLOUD_FILTER: u32 = 32;
pub const VIRTCHNL_OP_DEL_CLOUD_FILTER: u32 = 33;
pub const VIRTCHNL_OP_GET_SUPPORTED_RXDIDS: u32 = 44;
pub const VIRTCHNL_OP_ADD_RSS_CFG: u32 = 45;
pub const VIRTCHNL_OP_DEL_RSS_CFG: u32 = 46;
pub const VIRTCHNL_OP_ADD_FDIR_FILTER: u32 = 47;
pub const VIRTCHNL_OP_DEL_FDIR_FILTER: u32 = 48;
pub const VIRTCHNL_OP_GET_OFFLOAD_VLAN_V2_CAPS: u32 = 51;
pub const VIRTCHNL_OP_ADD_VLAN_V2: u32 = 52;
pub const VIRTCHNL_OP_DEL_VLAN_V2: u32 = 53;
pub const VIRTCHNL_OP_ENABLE_VLAN_STRIPPING_V2: u32 = 54;
pub const VIRTCHNL_OP_DISABLE_VLAN_STRIPPING_V2: u32 = 55;
pub const VIRTCHNL_OP_ENABLE_VLAN_INSERTION_V2: u32 = 56;
pub const VIRTCHNL_OP_DISABLE_VLAN_INSERTION_V2: u32 = 57;
pub const VIRTCHNL_OP_1588_PTP_GET_CAPS: u32 = 60;
pub const VIRTCHNL_OP_1588_PTP_GET_TIME: u32 = 61;

// --- virtchnl status codes (enum virtchnl_status_code) ---

pub const VIRTCHNL_STATUS_SUCCESS: i32 = 0;
pub const VIRTCHNL_STATUS_ERR_PARAM: i32 = -5;
pub const VIRTCHNL_STATUS_ERR_NO_MEMORY: i32 = -18;
pub const VIRTCHNL_STATUS_ERR_OPCODE_MISMATCH: i32 = -38;
pub const VIRTCHNL_STATUS_ERR_CQP_COMPL_ERROR: i32 = -39;
pub const VIRTCHNL_STATUS_ERR_INVALID_VF_ID: i32 = -40;
pub const VIRTCHNL_STATUS_ERR_ADMIN_QUEUE_ERROR: i32 = -53;
pub const VIRTCHNL_STATUS_ERR_NOT_SUPPORTED: i32 = -64;

// --- VF capability flags (VIRTCHNL_VF_OFFLOAD_* / VIRTCHNL_VF_CAP_*) ---

pub const VIRTCHNL_VF_OFFLOAD_L2: u32 = 1 << 0;
pub const VIRTCHNL_VF_OFFLOAD_RDMA: u32 = 1 << 1;
pub const VIRTCHNL_VF_OFFLOAD_RSS_AQ: u32 = 1 << 3;
pub const VIRTCHNL_VF_OFFLOAD_RSS_REG: u32 = 1 << 4;
pub const VIRTCHNL_VF_OFFLOAD_WB_ON_ITR: u32 = 1 << 5;
pub const VIRTCHNL_VF_OFFLOAD_REQ_QUEUES: u32 = 1 << 6;
pub const VIRTCHNL_VF_CAP_ADV_LINK_SPEED: u32 = 1 << 7;
pub const VIRTCHNL_VF_OFFLOAD_CRC: u32 = 1 << 10;
pub const VIRTCHNL_VF_OFFLOAD_VLAN_V2: u32 = 1 << 15;
pub const VIRTCHNL_VF_OFFLOAD_VLAN: u32 = 1 << 16;
pub const VIRTCHNL_VF_OFFLOAD_RX_POLLING: u32 = 1 << 17;
pub const VIRTCHNL_VF_OFFLOAD_RSS_PCTYPE_V2: u32 = 1 << 18;
pub const VIRTCHNL_VF_OFFLOAD_RSS_PF: u32 = 1 << 19;
pub const VIRTCHNL_VF_OFFLOAD_ENCAP: u32 = 1 << 20;
pub const VIRTCHNL_VF_OFFLOAD_ENCAP_CSUM: u32 = 1 << 21;
pub const VIRTCHNL_VF_OFFLOAD_RX_ENCAP_CSUM: u32 = 1 << 22;
pub const VIRTCHNL_VF_OFFLOAD_ADQ: u32 = 1 << 23;
pub const VIRTCHNL_VF_OFFLOAD_ADQ_V2: u32 = 1 << 24;
pub const VIRTCHNL_VF_OFFLOAD_USO: u32 = 1 << 25;
pub const VIRTCHNL_VF_OFFLOAD_RX_FLEX_DESC: u32 = 1 << 26;
pub const VIRTCHNL_VF_OFFLOAD_ADV_RSS_PF: u32 = 1 << 27;
pub const VIRTCHNL_VF_OFFLOAD_FDIR_PF: u32 = 1 << 28;
pub const VIRTCHNL_VF_CAP_PTP: u32 = 1 << 31;

/// VF_BASE_MODE_OFFLOADS in `virtchnl.h`.
pub const VF_BASE_MODE_OFFLOADS: u32 =
    VIRTCHNL_VF_OFFLOAD_L2 | VIRTCHNL_VF_OFFLOAD_VLAN | VIRTCHNL_VF_OFFLOAD_RSS_PF;

// --- VSI ---

/// `enum virtchnl_vsi_type`: iavf looks for exactly this ("No LAN VSI found" otherwise).
pub const VIRTCHNL_VSI_SRIOV: i32 = 6;

// --- Wire struct sizes (VIRTCHNL_CHECK_STRUCT_LEN). "One-element" structs include one
// element of their trailing array, and the length rules of virtchnl_vc_validate_vf_msg keep it.

pub const VIRTCHNL_VERSION_INFO_LEN: usize = 8;
pub const VIRTCHNL_VSI_RESOURCE_LEN: usize = 16;
/// `virtchnl_vf_resource` including one `virtchnl_vsi_resource`.
pub const VIRTCHNL_VF_RESOURCE_LEN: usize = 36;
/// `virtchnl_vf_resource` without its `vsi_res` array.
pub const VIRTCHNL_VF_RESOURCE_HDR_LEN: usize = 20;
pub const VIRTCHNL_TXQ_INFO_LEN: usize = 24;
pub const VIRTCHNL_RXQ_INFO_LEN: usize = 40;
pub const VIRTCHNL_QUEUE_PAIR_INFO_LEN: usize = 64;
/// `virtchnl_vsi_queue_config_info` with one pair; the valid length is this + n × 64.
pub const VIRTCHNL_VSI_QUEUE_CONFIG_INFO_LEN: usize = 72;
/// Offset of `qpair[0]` in `virtchnl_vsi_queue_config_info`.
pub const VIRTCHNL_VSI_QUEUE_CONFIG_HDR_LEN: usize = 8;
pub const VIRTCHNL_VECTOR_MAP_LEN: usize = 12;
/// `virtchnl_irq_map_info` with one map; the valid length is this + n × 12.
pub const VIRTCHNL_IRQ_MAP_INFO_LEN: usize = 14;
pub const VIRTCHNL_IRQ_MAP_INFO_HDR_LEN: usize = 2;
pub const VIRTCHNL_QUEUE_SELECT_LEN: usize = 12;
pub const VIRTCHNL_ETHER_ADDR_LEN: usize = 8;
/// `virtchnl_ether_addr_list` with one address; the valid length is this + n × 8.
pub const VIRTCHNL_ETHER_ADDR_LIST_LEN: usize = 12;
pub const VIRTCHNL_ETHER_ADDR_LIST_HDR_LEN: usize = 4;
/// `virtchnl_vlan_filter_list` with one VID; the valid length is this + n × 2.
pub const VIRTCHNL_VLAN_FILTER_LIST_LEN: usize = 6;
pub const VIRTCHNL_VLAN_FILTER_LIST_HDR_LEN: usize = 4;
pub const VIRTCHNL_PROMISC_INFO_LEN: usize = 4;
pub const VIRTCHNL_ETH_STATS_LEN: usize = 96;
/// `virtchnl_rss_key` with one key byte; the valid length is this + key_len − 1.
pub const VIRTCHNL_RSS_KEY_LEN: usize = 6;
pub const VIRTCHNL_RSS_KEY_HDR_LEN: usize = 4;
/// `virtchnl_rss_lut` with one entry; the valid length is this + lut_entries − 1.
pub const VIRTCHNL_RSS_LUT_LEN: usize = 6;
pub const VIRTCHNL_RSS_LUT_HDR_LEN: usize = 4;
pub const VIRTCHNL_RSS_HENA_LEN: usize = 8;
pub const VIRTCHNL_RSS_HFUNC_LEN: usize = 8;
pub const VIRTCHNL_PF_EVENT_LEN: usize = 16;

// Field offsets inside virtchnl_txq_info / virtchnl_rxq_info.
pub const TXQ_VSI_ID: usize = 0;
pub const TXQ_QUEUE_ID: usize = 2;
pub const TXQ_RING_LEN: usize = 4;
pub const TXQ_DMA_RING_ADDR: usize = 8;
pub const RXQ_VSI_ID: usize = 0;
pub const RXQ_QUEUE_ID: usize = 2;
pub const RXQ_RING_LEN: usize = 4;
pub const RXQ_HDR_SIZE: usize = 8;
pub const RXQ_SPLITHDR_ENABLED: usize = 10;
pub const RXQ_DATABUFFER_SIZE: usize = 12;
pub const RXQ_MAX_PKT_SIZE: usize = 16;
pub const RXQ_CRC_DISABLE: usize = 20;
pub const RXQ_RXDID: usize = 21;
pub const RXQ_DMA_RING_ADDR: usize = 24;

// virtchnl_ether_addr.type
pub const VIRTCHNL_ETHER_ADDR_LEGACY: u8 = 0;
pub const VIRTCHNL_ETHER_ADDR_PRIMARY: u8 = 1;
pub const VIRTCHNL_ETHER_ADDR_EXTRA: u8 = 2;

// virtchnl_promisc_info.flags
pub const FLAG_VF_UNICAST_PROMISC: u16 = 0x0001;
pub const FLAG_VF_MULTICAST_PROMISC: u16 = 0x0002;

// enum virtchnl_rss_algorithm (CONFIG_RSS_HFUNC)
pub const VIRTCHNL_RSS_ALG_TOEPLITZ_ASYMMETRIC: u16 = 0;
pub const VIRTCHNL_RSS_ALG_R_ASYMMETRIC: u16 = 1;
pub const VIRTCHNL_RSS_ALG_TOEPLITZ_SYMMETRIC: u16 = 2;
pub const VIRTCHNL_RSS_ALG_XOR_SYMMETRIC: u16 = 3;

// i40e packet classifier types (enum i40e_filter_pctype), the bit numbers of HENA.
pub const PCTYPE_NONF_UNICAST_IPV4_UDP: u32 = 29;
pub const PCTYPE_NONF_MULTICAST_IPV4_UDP: u32 = 30;
pub const PCTYPE_NONF_IPV4_UDP: u32 = 31;
pub const PCTYPE_NONF_IPV4_TCP_SYN_NO_ACK: u32 = 32;
pub const PCTYPE_NONF_IPV4_TCP: u32 = 33;
pub const PCTYPE_NONF_IPV4_SCTP: u32 = 34;
pub const PCTYPE_NONF_IPV4_OTHER: u32 = 35;
pub const PCTYPE_FRAG_IPV4: u32 = 36;
pub const PCTYPE_NONF_UNICAST_IPV6_UDP: u32 = 39;
pub const PCTYPE_NONF_MULTICAST_IPV6_UDP: u32 = 40;
pub const PCTYPE_NONF_IPV6_UDP: u32 = 41;
pub const PCTYPE_NONF_IPV6_TCP_SYN_NO_ACK: u32 = 42;
pub const PCTYPE_NONF_IPV6_TCP: u32 = 43;
pub const PCTYPE_NONF_IPV6_SCTP: u32 = 44;
pub const PCTYPE_NONF_IPV6_OTHER: u32 = 45;
pub const PCTYPE_FRAG_IPV6: u32 = 46;
pub const PCTYPE_L2_PAYLOAD: u32 = 63;

/// I40E_DEFAULT_RSS_HENA (XL710): the hash-enable bits a PF reports in GET_RSS_HENA_CAPS.
pub const DEFAULT_RSS_HENA: u64 = (1 << PCTYPE_NONF_IPV4_UDP)
    | (1 << PCTYPE_NONF_IPV4_SCTP)
    | (1 << PCTYPE_NONF_IPV4_TCP)
    | (1 << PCTYPE_NONF_IPV4_OTHER)
    | (1 << PCTYPE_FRAG_IPV4)
    | (1 << PCTYPE_NONF_IPV6_UDP)
    | (1 << PCTYPE_NONF_IPV6_TCP)
    | (1 << PCTYPE_NONF_IPV6_SCTP)
    | (1 << PCTYPE_NONF_IPV6_OTHER)
    | (1 << PCTYPE_FRAG_IPV6)
    | (1 << PCTYPE_L2_PAYLOAD);

// --- Events (VIRTCHNL_OP_EVENT, struct virtchnl_pf_event) ---

pub const VIRTCHNL_EVENT_UNKNOWN: i32 = 0;
pub const VIRTCHNL_EVENT_LINK_CHANGE: i32 = 1;
pub const VIRTCHNL_EVENT_RESET_IMPENDING: i32 = 2;
pub const VIRTCHNL_EVENT_PF_DRIVER_CLOSE: i32 = 3;
pub const PF_EVENT_SEVERITY_INFO: i32 = 0;
pub const PF_EVENT_SEVERITY_CERTAIN_DOOM: i32 = 255;
/// Offsets in virtchnl_pf_event: event, link speed (enum or Mbps), link status, severity.
pub const PF_EVENT_EVENT: usize = 0;
pub const PF_EVENT_LINK_SPEED: usize = 4;
pub const PF_EVENT_LINK_STATUS: usize = 8;
pub const PF_EVENT_SEVERITY: usize = 12;

// enum virtchnl_link_speed (legacy link event, without ADV_LINK_SPEED)
pub const VIRTCHNL_LINK_SPEED_UNKNOWN: u32 = 0;
pub const VIRTCHNL_LINK_SPEED_2_5GB: u32 = 1 << 0;
pub const VIRTCHNL_LINK_SPEED_100MB: u32 = 1 << 1;
pub const VIRTCHNL_LINK_SPEED_1GB: u32 = 1 << 2;
pub const VIRTCHNL_LINK_SPEED_10GB: u32 = 1 << 3;
pub const VIRTCHNL_LINK_SPEED_40GB: u32 = 1 << 4;
pub const VIRTCHNL_LINK_SPEED_20GB: u32 = 1 << 5;
pub const VIRTCHNL_LINK_SPEED_25GB: u32 = 1 << 6;
pub const VIRTCHNL_LINK_SPEED_5GB: u32 = 1 << 7;

// --- Limits a real PF enforces (i40e_virtchnl_pf.c) ---

/// I40E_MAX_VF_QUEUES.
pub const MAX_VF_QUEUES: usize = 16;
/// Largest RX data buffer (i40e: 16 KiB − 128) and its granularity (RXQ_CTX_DBUFF_SHIFT 7).
pub const RX_MAX_DATABUFFER: u32 = 16 * 1024 - 128;
pub const RX_DATABUFFER_UNIT: u32 = 128;
/// I40E_MAX_RXBUFFER / IAVF_MAX_RXBUFFER: largest RX frame without FCS.
pub const RX_MAX_PKT_SIZE: u32 = 9728;
/// Smallest max_pkt_size i40e accepts.
pub const RX_MIN_PKT_SIZE: u32 = 64;
/// Ring base addresses are in 128-byte units in the i40e queue context.
pub const RING_BASE_ALIGN: u64 = 128;
/// iavf ring sizes: IAVF_MIN_TXD/RXD, IAVF_REQ_DESCRIPTOR_MULTIPLE; the top is the 13-bit
/// queue-context QLEN rounded down to the multiple.
pub const RING_LEN_MIN: u32 = 64;
pub const RING_LEN_MAX: u32 = 8160;
/// A power of two (checked with a mask).
pub const RING_LEN_MULTIPLE: u32 = 32;
/// ITR indexes 0–2, and 3 = no ITR.
pub const ITR_IDX_MAX: u16 = 3;
/// I40E_VC_MAX_MAC_ADDR_PER_VF: exact MAC filters (unicast + multicast) an untrusted VF may hold.
pub const UNTRUSTED_MAX_MAC_FILTERS: usize = 18;
/// I40E_VC_MAX_VLAN_PER_VF: VLAN filters an untrusted VF may hold.
pub const UNTRUSTED_MAX_VLANS: usize = 16;
