//! AVF (Intel Adaptive Virtual Function, 8086:1889) BAR0 registers, interrupt bits, TX/RX
//! descriptor layouts, RX packet types and RSS packet classifier types. Names follow
//! `drivers/net/ethernet/intel/iavf/{iavf_register.h,iavf_type.h}` and the i40e PCTYPE
//! numbering (`enum i40e_filter_pctype`); semantics are in `shared/design/devices.md` §3.

/// PCI device ID of the Adaptive VF.
pub const DEVICE_AVF: u16 = 0x1889;
/// BAR0 size: the highest register iavf touches is VFQF_HLUT(15) at 0xD03C.
pub const BAR0_SIZE: u64 = 64 * 1024;
/// BAR3 (MSI-X) size; table at 0, PBA at [`MSIX_PBA_OFFSET`] (X710-style layout).
pub const BAR3_SIZE: u64 = 16 * 1024;
pub const MSIX_TABLE_OFFSET: u32 = 0;
pub const MSIX_PBA_OFFSET: u32 = 0x2000;

/// Queue registers exist for 16 queue pairs.
pub const MAX_QUEUES: u32 = 16;
/// DYN_CTLN1/ITRN1 exist for 16 queue vectors (MSI-X vectors 1..=16).
pub const MAX_QUEUE_VECTORS: u32 = 16;
/// ITR indexes 0 (RX), 1 (TX), 2 (spare).
pub const ITR_INDEXES: u32 = 3;

// --- Doorbells (page 0x0000 TX tails; page 0x2000 RX tails + ITRN1; both map-and-poll) ---
/// `IAVF_QTX_TAIL1(q)` = `QTX_TAIL1 + 4q`, q < 16.
pub const QTX_TAIL1: u32 = 0x0000;
/// `IAVF_QRX_TAIL1(q)` = `QRX_TAIL1 + 4q`, q < 16.
pub const QRX_TAIL1: u32 = 0x2000;
/// `IAVF_VFINT_ITRN1(i, v)` = `VFINT_ITRN1 + 64i + 4v`, i < 3, v < 16.
pub const VFINT_ITRN1: u32 = 0x2800;
pub const VFINT_ITRN1_STRIDE: u32 = 64;
/// The BAR0 pages the client maps and the device polls instead of trapping, as (offset,
/// size): the TX tail page (QTX_TAIL1) and the RX tail page (QRX_TAIL1, with VFINT_ITRN1).
pub const MAPPED_PAGES: [(u64, u64); 2] = [(QTX_TAIL1 as u64, 0x1000), (QRX_TAIL1 as u64, 0x1000)];

// --- Interrupt control (trapped) ---
/// `IAVF_VFINT_DYN_CTLN1(v)` = `VFINT_DYN_CTLN1 + 4v` controls MSI-X vector v + 1.
pub const VFINT_DYN_CTLN1: u32 = 0x3800;
pub const VFINT_ICR01: u32 = 0x4800;
/// `VFINT_ITR01(i)` = `VFINT_ITR01 + 4i`, i < 3: vector 0's ITR.
pub const VFINT_ITR01: u32 = 0x4C00;
pub const VFINT_ICR0_ENA1: u32 = 0x5000;
pub const VFINT_STAT_CTL01: u32 = 0x5400;
pub const VFINT_DYN_CTL01: u32 = 0x5C00;

/// DYN_CTL01 / DYN_CTLN1 bits (same layout for both).
pub const DYN_CTL_INTENA: u32 = 1 << 0;
pub const DYN_CTL_CLEARPBA: u32 = 1 << 1;
pub const DYN_CTL_SWINT_TRIG: u32 = 1 << 2;
pub const DYN_CTL_ITR_INDX_SHIFT: u32 = 3;
pub const DYN_CTL_ITR_INDX_MASK: u32 = 0x3 << DYN_CTL_ITR_INDX_SHIFT;
pub const DYN_CTL_INTERVAL_SHIFT: u32 = 5;
pub const DYN_CTL_INTERVAL_MASK: u32 = 0xFFF << DYN_CTL_INTERVAL_SHIFT;
pub const DYN_CTL_SW_ITR_INDX_ENA: u32 = 1 << 24;
pub const DYN_CTL_SW_ITR_INDX_SHIFT: u32 = 25;
pub const DYN_CTL_SW_ITR_INDX_MASK: u32 = 0x3 << DYN_CTL_SW_ITR_INDX_SHIFT;
pub const DYN_CTL_WB_ON_ITR: u32 = 1 << 30;
/// INTENA_MSK: when set, this write leaves INTENA unchanged (`iavf_force_wb`).
pub const DYN_CTL_INTENA_MSK: u32 = 1 << 31;
/// Self-clearing command bits: never stored.
pub const DYN_CTL_COMMAND_BITS: u32 = DYN_CTL_CLEARPBA | DYN_CTL_SWINT_TRIG | DYN_CTL_INTENA_MSK;

/// ICR01 / ICR0_ENA1 cause bits.
pub const ICR0_LINK_STAT_CHANGE: u32 = 1 << 25;
pub const ICR0_ADMINQ: u32 = 1 << 30;

// --- AdminQ (trapped) ---
pub const VF_ARQBAH1: u32 = 0x6000;
pub const VF_ATQH1: u32 = 0x6400;
pub const VF_ATQLEN1: u32 = 0x6800;
pub const VF_ARQBAL1: u32 = 0x6C00;
pub const VF_ARQT1: u32 = 0x7000;
pub const VF_ARQH1: u32 = 0x7400;
pub const VF_ATQBAH1: u32 = 0x7800;
pub const VF_ATQBAL1: u32 = 0x7C00;
pub const VF_ARQLEN1: u32 = 0x8000;
pub const VF_ATQT1: u32 = 0x8400;
/// Head/tail registers hold a 10-bit descriptor index.
pub const AQ_HT_MASK: u32 = 0x3FF;
/// ATQLEN/ARQLEN: LEN b0–9, VFE b28, OVFL b29, CRIT b30, ENABLE b31.
pub const AQ_LEN_MASK: u32 = 0x3FF;
pub const AQ_LEN_VFE: u32 = 1 << 28;
pub const AQ_LEN_OVFL: u32 = 1 << 29;
pub const AQ_LEN_CRIT: u32 = 1 << 30;
pub const AQ_LEN_ENABLE: u32 = 1 << 31;

// --- Reset status (trapped) ---
pub const VFGEN_RSTAT: u32 = 0x8800;
pub const RSTAT_VFR_STATE_MASK: u32 = 0x3;
/// `IAVF_VFR_INPROGRESS`, `IAVF_VFR_COMPLETED`, `IAVF_VFR_VFACTIVE`.
pub const VFR_INPROGRESS: u32 = 0;
pub const VFR_COMPLETED: u32 = 1;
pub const VFR_VFACTIVE: u32 = 2;

// --- RSS registers (trapped; RSS_REG path of `iavf_config_rss_reg`) ---
/// `VFQF_HENA(i)`, i < 2: hash enable bits by PCTYPE, low then high dword.
pub const VFQF_HENA: u32 = 0xC400;
pub const VFQF_HENA_COUNT: u32 = 2;
/// `VFQF_HKEY(i)`, i < 13: key bytes 4i..4i+3, little-endian.
pub const VFQF_HKEY: u32 = 0xCC00;
pub const VFQF_HKEY_COUNT: u32 = 13;
/// `VFQF_HLUT(i)`, i < 16: LUT entries 4i..4i+3, one byte each, little-endian.
pub const VFQF_HLUT: u32 = 0xD000;
pub const VFQF_HLUT_COUNT: u32 = 16;

/// TX descriptors (`struct iavf_tx_desc`, `struct iavf_tx_context_desc`): 16 bytes,
/// qword0 then qword1, little-endian.
pub mod tx {
    pub const DESC_LEN: u64 = 16;
    /// Byte offset of qword1 (`cmd_type_offset_bsz`) inside a descriptor.
    pub const QW1_OFFSET: u64 = 8;

    /// qword1 b0–3: DTYPE.
    pub const DTYPE_MASK: u64 = 0xF;
    pub const DTYPE_DATA: u64 = 0x0;
    pub const DTYPE_CONTEXT: u64 = 0x1;
    /// Written back into qword1 of a completed RS descriptor.
    pub const DTYPE_DESC_DONE: u64 = 0xF;

    /// Data qword1 b4–13: CMD.
    pub const CMD_SHIFT: u32 = 4;
    pub const CMD_MASK: u64 = 0x3FF;
    pub const CMD_EOP: u64 = 0x0001;
    pub const CMD_RS: u64 = 0x0002;
    pub const CMD_ICRC: u64 = 0x0004;
    pub const CMD_IL2TAG1: u64 = 0x0008;
    pub const CMD_DUMMY: u64 = 0x0010;
    pub const CMD_IIPT_MASK: u64 = 0x0060;
    pub const CMD_IIPT_NONIP: u64 = 0x0000;
    pub const CMD_IIPT_IPV6: u64 = 0x0020;
    pub const CMD_IIPT_IPV4: u64 = 0x0040;
    pub const CMD_IIPT_IPV4_CSUM: u64 = 0x0060;
    pub const CMD_L4T_MASK: u64 = 0x0300;
    pub const CMD_L4T_UNK: u64 = 0x0000;
    pub const CMD_L4T_TCP: u64 = 0x0100;
    pub const CMD_L4T_SCTP: u64 = 0x0200;
    pub const CMD_L4T_UDP: u64 = 0x0300;

    /// Data qword1 b16–33: OFFSET = MACLEN (2-byte words, 7 bits) | IPLEN (dwords, 7 bits,
    /// at +7) | L4LEN (dwords, 4 bits, at +14).
    pub const OFFSET_SHIFT: u32 = 16;
    pub const OFFSET_MACLEN_SHIFT: u32 = 0;
    pub const OFFSET_MACLEN_MASK: u64 = 0x7F;
    pub const OFFSET_IPLEN_SHIFT: u32 = 7;
    pub const OFFSET_IPLEN_MASK: u64 = 0x7F;
    pub const OFFSET_L4LEN_SHIFT: u32 = 14;
    pub const OFFSET_L4LEN_MASK: u64 = 0xF;

    /// Data qword1 b34–47: buffer size in bytes.
    pub const BUF_SZ_SHIFT: u32 = 34;
    pub const BUF_SZ_MASK: u64 = 0x3FFF;
    /// Data qword1 b48–63: L2TAG1 (VLAN TCI inserted when CMD_IL2TAG1).
    pub const L2TAG1_SHIFT: u32 = 48;

    /// Context qword1 b4–19: CMD.
    pub const CTX_CMD_SHIFT: u32 = 4;
    pub const CTX_CMD_MASK: u64 = 0xFFFF;
    pub const CTX_CMD_TSO: u64 = 0x1;
    pub const CTX_CMD_TSYN: u64 = 0x2;
    pub const CTX_CMD_IL2TAG2: u64 = 0x4;
    /// Context qword1 b30–47: TSO_LEN (TCP payload bytes of the whole TSO packet).
    pub const CTX_TSO_LEN_SHIFT: u32 = 30;
    pub const CTX_TSO_LEN_MASK: u64 = 0x3_FFFF;
    /// Context qword1 b50–63: MSS.
    pub const CTX_MSS_SHIFT: u32 = 50;
    pub const CTX_MSS_MASK: u64 = 0x3FFF;
}

/// Legacy 32-byte RX descriptor (`union iavf_32byte_rx_desc`, RXDID 1), little-endian.
/// Read format: `{pkt_addr, hdr_addr, rsvd1, rsvd2}`.
pub mod rx {
    pub const DESC_LEN: u64 = 32;
    pub const PKT_ADDR_OFFSET: u64 = 0;
    pub const HDR_ADDR_OFFSET: u64 = 8;
    /// Write-back qword0: `mirroring_status` b0–15, L2TAG1 b16–31, RSS hash b32–63.
    pub const WB_QW0_OFFSET: u64 = 0;
    pub const WB_QW0_L2TAG1_SHIFT: u32 = 16;
    pub const WB_QW0_RSS_SHIFT: u32 = 32;
    /// Write-back qword1: `status_error_len` (overlaps `hdr_addr`).
    pub const WB_QW1_OFFSET: u64 = 8;
    /// Write-back qword2: ext_status / L2TAG2; qword3: flex / FD ID.
    pub const WB_QW2_OFFSET: u64 = 16;
    pub const WB_QW3_OFFSET: u64 = 24;

    /// qword1 status b0–18.
    pub const STATUS_DD: u64 = 1 << 0;
    pub const STATUS_EOF: u64 = 1 << 1;
    pub const STATUS_L2TAG1P: u64 = 1 << 2;
    pub const STATUS_L3L4P: u64 = 1 << 3;
    pub const STATUS_CRCP: u64 = 1 << 4;
    pub const STATUS_UMBCAST_SHIFT: u32 = 9;
    pub const STATUS_FLTSTAT_SHIFT: u32 = 12;
    pub const STATUS_FLTSTAT_MASK: u64 = 0x3 << STATUS_FLTSTAT_SHIFT;
    /// FLTSTAT = 3: the RSS hash in qword0 is valid (`IAVF_RX_DESC_FLTSTAT_RSS_HASH`).
    pub const FLTSTAT_RSS_HASH: u64 = 0x3;
    pub const STATUS_LPBK: u64 = 1 << 14;
    /// qword1 errors b19–26.
    pub const ERROR_SHIFT: u32 = 19;
    pub const ERROR_RXE: u64 = 1 << 19;
    pub const ERROR_HBO: u64 = 1 << 21;
    pub const ERROR_IPE: u64 = 1 << 22;
    pub const ERROR_L4E: u64 = 1 << 23;
    pub const ERROR_EIPE: u64 = 1 << 24;
    pub const ERROR_OVERSIZE: u64 = 1 << 25;
    pub const ERROR_PPRS: u64 = 1 << 26;
    /// qword1 b30–37: PTYPE.
    pub const PTYPE_SHIFT: u32 = 30;
    pub const PTYPE_MASK: u64 = 0xFF;
    /// qword1 b38–51: LENGTH_PBUF (bytes in this descriptor's packet buffer).
    pub const LENGTH_PBUF_SHIFT: u32 = 38;
    pub const LENGTH_PBUF_MASK: u64 = 0x3FFF;
    /// qword1 b52–62: LENGTH_HBUF; b63: SPH.
    pub const LENGTH_HBUF_SHIFT: u32 = 52;
    pub const SPH: u64 = 1 << 63;
}

/// RX packet types reported in the descriptor (DPDK `iavf_get_default_ptype_table`,
/// Linux `libie_rx_pt_lut`): outer MAC, no tunnel.
pub mod ptype {
    /// MAC, payload layer 2 (non-IP).
    pub const L2_PAY2: u8 = 1;
    /// MAC ARP.
    pub const L2_ARP: u8 = 11;
    pub const IPV4_FRAG: u8 = 22;
    pub const IPV4_OTHER: u8 = 23;
    pub const IPV4_UDP: u8 = 24;
    pub const IPV4_TCP: u8 = 26;
    pub const IPV4_SCTP: u8 = 27;
    pub const IPV4_ICMP: u8 = 28;
    pub const IPV6_FRAG: u8 = 88;
    pub const IPV6_OTHER: u8 = 89;
    pub const IPV6_UDP: u8 = 90;
    pub const IPV6_TCP: u8 = 92;
    pub const IPV6_SCTP: u8 = 93;
    pub const IPV6_ICMP: u8 = 94;
}

/// Packet classifier types (`enum i40e_filter_pctype`): bit n of HENA enables hashing of
/// PCTYPE n.
pub mod pctype {
    pub const NONF_UNICAST_IPV4_UDP: u8 = 29;
    pub const NONF_MULTICAST_IPV4_UDP: u8 = 30;
    pub const NONF_IPV4_UDP: u8 = 31;
    pub const NONF_IPV4_TCP_SYN_NO_ACK: u8 = 32;
    pub const NONF_IPV4_TCP: u8 = 33;
    pub const NONF_IPV4_SCTP: u8 = 35;
    pub const NONF_IPV4_OTHER: u8 = 36;
    pub const FRAG_IPV4: u8 = 38;
    pub const NONF_UNICAST_IPV6_UDP: u8 = 39;
    pub const NONF_MULTICAST_IPV6_UDP: u8 = 40;
    pub const NONF_IPV6_UDP: u8 = 41;
    pub const NONF_IPV6_TCP_SYN_NO_ACK: u8 = 42;
    pub const NONF_IPV6_TCP: u8 = 43;
    pub const NONF_IPV6_SCTP: u8 = 45;
    pub const NONF_IPV6_OTHER: u8 = 46;
    pub const FRAG_IPV6: u8 = 48;
    pub const L2_PAYLOAD: u8 = 63;
}
