//! igb/igbvf advanced descriptor layouts (82576), named as in Linux
//! `drivers/net/ethernet/intel/igbvf/vf.h` (`union e1000_adv_tx_desc`,
//! `struct e1000_adv_tx_context_desc`, `union e1000_adv_rx_desc`) and `defines.h`.
//!
//! Every descriptor is 16 bytes, little-endian. Offsets are byte offsets inside one descriptor.

/// Size of one TX or RX descriptor in bytes.
pub const DESC_LEN: u32 = 16;
/// TDLEN/RDLEN must be a non-zero multiple of this (8 descriptors).
pub const RING_LEN_ALIGN: u32 = 128;
/// TDBAL/RDBAL bits 3:0 are ignored: rings are 16-byte aligned.
pub const RING_BASE_ALIGN_MASK: u64 = 0xf;

/// Advanced TX descriptors (data and context).
pub mod tx {
    // --- Data descriptor, read format: { buffer_addr: u64, cmd_type_len: u32, olinfo_status: u32 }
    /// `read.buffer_addr`.
    pub const BUFFER_ADDR_OFFSET: u64 = 0;
    /// `read.cmd_type_len`.
    pub const CMD_TYPE_LEN_OFFSET: u64 = 8;
    /// `read.olinfo_status`.
    pub const OLINFO_STATUS_OFFSET: u64 = 12;
    /// `wb.status` (write-back format: { rsvd: u64, nxtseq_seed: u32, status: u32 }).
    pub const WB_STATUS_OFFSET: u64 = 12;

    /// `cmd_type_len` b0–15: buffer length (data) .
    pub const LEN_MASK: u32 = 0x0000_ffff;
    /// `cmd_type_len` b20–23: descriptor type.
    pub const DTYP_MASK: u32 = 0x00f0_0000;
    /// `E1000_ADVTXD_DTYP_CTXT`.
    pub const DTYP_CTXT: u32 = 0x0020_0000;
    /// `E1000_ADVTXD_DTYP_DATA`.
    pub const DTYP_DATA: u32 = 0x0030_0000;
    /// `E1000_ADVTXD_DCMD_EOP`: end of packet.
    pub const DCMD_EOP: u32 = 0x0100_0000;
    /// `E1000_ADVTXD_DCMD_IFCS`: insert FCS.
    pub const DCMD_IFCS: u32 = 0x0200_0000;
    /// `E1000_ADVTXD_DCMD_RS`: report status (write DD back).
    pub const DCMD_RS: u32 = 0x0800_0000;
    /// `E1000_ADVTXD_DCMD_DEXT`: advanced (extended) descriptor.
    pub const DCMD_DEXT: u32 = 0x2000_0000;
    /// `E1000_ADVTXD_DCMD_VLE`: insert the context descriptor's VLAN tag.
    pub const DCMD_VLE: u32 = 0x4000_0000;
    /// `E1000_ADVTXD_DCMD_TSE`: TCP segmentation.
    pub const DCMD_TSE: u32 = 0x8000_0000;

    /// `olinfo_status`: `E1000_TXD_POPTS_IXSM << 8`, insert the IPv4 header checksum.
    pub const POPTS_IXSM: u32 = 0x0000_0100;
    /// `olinfo_status`: `E1000_TXD_POPTS_TXSM << 8`, insert the L4 checksum.
    pub const POPTS_TXSM: u32 = 0x0000_0200;
    /// `olinfo_status` b4–6: context index (`E1000_ADVTXD_IDX_SHIFT`).
    pub const OLINFO_IDX_SHIFT: u32 = 4;
    /// Mask of the context index after shifting.
    pub const IDX_MASK: u32 = 0x7;
    /// `olinfo_status` b14–31: PAYLEN (`E1000_ADVTXD_PAYLEN_SHIFT`).
    pub const PAYLEN_SHIFT: u32 = 14;

    /// `wb.status`: `E1000_TXD_STAT_DD`, descriptor done.
    pub const STAT_DD: u32 = 0x0000_0001;

    // --- Context descriptor: { vlan_macip_lens, seqnum_seed, type_tucmd_mlhl, mss_l4len_idx }
    /// `vlan_macip_lens`.
    pub const CTX_VLAN_MACIP_LENS_OFFSET: u64 = 0;
    /// `seqnum_seed`.
    pub const CTX_SEQNUM_SEED_OFFSET: u64 = 4;
    /// `type_tucmd_mlhl` (holds DTYP/DEXT/RS at the same bits as `cmd_type_len`).
    pub const CTX_TYPE_TUCMD_MLHL_OFFSET: u64 = 8;
    /// `mss_l4len_idx`.
    pub const CTX_MSS_L4LEN_IDX_OFFSET: u64 = 12;

    /// `vlan_macip_lens` b0–8: IPLEN.
    pub const IPLEN_MASK: u32 = 0x1ff;
    /// `vlan_macip_lens` b9–15: MACLEN (`E1000_ADVTXD_MACLEN_SHIFT`).
    pub const MACLEN_SHIFT: u32 = 9;
    /// Mask of MACLEN after shifting.
    pub const MACLEN_MASK: u32 = 0x7f;
    /// `vlan_macip_lens` b16–31: VLAN tag (TCI) to insert.
    pub const VLAN_SHIFT: u32 = 16;

    /// `E1000_ADVTXD_TUCMD_IPV4`: the IP header at MACLEN is IPv4 (else IPv6).
    pub const TUCMD_IPV4: u32 = 0x0000_0400;
    /// `E1000_ADVTXD_TUCMD_L4T_TCP`.
    pub const TUCMD_L4T_TCP: u32 = 0x0000_0800;
    /// `E1000_ADVTXD_TUCMD_L4T_SCTP`.
    pub const TUCMD_L4T_SCTP: u32 = 0x0000_1000;
    /// L4T field (UDP is 0).
    pub const TUCMD_L4T_MASK: u32 = 0x0000_1800;

    /// `mss_l4len_idx` b4–6: context index.
    pub const CTX_IDX_SHIFT: u32 = 4;
    /// `mss_l4len_idx` b8–15: L4LEN (`E1000_ADVTXD_L4LEN_SHIFT`).
    pub const L4LEN_SHIFT: u32 = 8;
    /// Mask of L4LEN after shifting.
    pub const L4LEN_MASK: u32 = 0xff;
    /// `mss_l4len_idx` b16–31: MSS (`E1000_ADVTXD_MSS_SHIFT`).
    pub const MSS_SHIFT: u32 = 16;

    /// The 82576 holds two context slots per queue.
    pub const CONTEXT_SLOTS: usize = 2;
}

/// Advanced RX descriptors and the SRRCTL fields that select their layout.
pub mod rx {
    // --- Read format: { pkt_addr: u64, hdr_addr: u64 }
    /// `read.pkt_addr`.
    pub const PKT_ADDR_OFFSET: u64 = 0;
    /// `read.hdr_addr` (header buffer; used in header-split modes).
    pub const HDR_ADDR_OFFSET: u64 = 8;

    // --- Write-back format
    /// `wb.lower.lo_dword` (`pkt_info` u16, then `hdr_info` u16): first qword starts here.
    pub const WB_LOWER_OFFSET: u64 = 0;
    /// `wb.upper.status_error` (u32), then `length` (u16) and `vlan` (u16): second qword.
    pub const WB_UPPER_OFFSET: u64 = 8;

    /// `hdr_info` b5–14: HDRBUFLEN (`E1000_RXDADV_HDRBUFLEN_MASK`).
    pub const HDRBUFLEN_MASK: u16 = 0x7fe0;
    /// `E1000_RXDADV_HDRBUFLEN_SHIFT`.
    pub const HDRBUFLEN_SHIFT: u32 = 5;
    /// `hdr_info` b15: SPH, the header was split into the header buffer.
    pub const HDR_INFO_SPH: u16 = 0x8000;

    /// `E1000_RXD_STAT_DD`.
    pub const STAT_DD: u32 = 0x01;
    /// `E1000_RXD_STAT_EOP`.
    pub const STAT_EOP: u32 = 0x02;
    /// `E1000_RXD_STAT_IXSM`: ignore checksum indications (driver reports CHECKSUM_NONE).
    pub const STAT_IXSM: u32 = 0x04;
    /// `E1000_RXD_STAT_VP`: `vlan` holds a stripped 802.1Q tag.
    pub const STAT_VP: u32 = 0x08;
    /// `E1000_RXD_STAT_UDPCS`.
    pub const STAT_UDPCS: u32 = 0x10;
    /// `E1000_RXD_STAT_TCPCS`.
    pub const STAT_TCPCS: u32 = 0x20;
    /// `E1000_RXD_STAT_IPCS`.
    pub const STAT_IPCS: u32 = 0x40;
    /// `E1000_RXDEXT_STATERR_CE`.
    pub const ERR_CE: u32 = 0x0100_0000;
    /// `E1000_RXDEXT_STATERR_SE`.
    pub const ERR_SE: u32 = 0x0200_0000;
    /// `E1000_RXDEXT_STATERR_SEQ`.
    pub const ERR_SEQ: u32 = 0x0400_0000;
    /// `E1000_RXDEXT_STATERR_CXE`.
    pub const ERR_CXE: u32 = 0x1000_0000;
    /// `E1000_RXDEXT_STATERR_TCPE`.
    pub const ERR_TCPE: u32 = 0x2000_0000;
    /// `E1000_RXDEXT_STATERR_IPE`.
    pub const ERR_IPE: u32 = 0x4000_0000;
    /// `E1000_RXDEXT_STATERR_RXE`.
    pub const ERR_RXE: u32 = 0x8000_0000;

    // --- SRRCTL (per RX queue)
    /// SRRCTL b0–6: BSIZEPKT, packet buffer size in KiB.
    pub const SRRCTL_BSIZEPKT_MASK: u32 = 0x0000_007f;
    /// KiB → bytes (`E1000_SRRCTL_BSIZEPKT_SHIFT`).
    pub const SRRCTL_BSIZEPKT_SHIFT: u32 = 10;
    /// SRRCTL b8–11: BSIZEHDR, header buffer size in 64-byte units.
    pub const SRRCTL_BSIZEHDR_MASK: u32 = 0x0000_0f00;
    /// Position of BSIZEHDR.
    pub const SRRCTL_BSIZEHDR_SHIFT: u32 = 8;
    /// Unit of BSIZEHDR in bytes.
    pub const SRRCTL_BSIZEHDR_UNIT: u32 = 64;
    /// SRRCTL b25–27: DESCTYPE.
    pub const SRRCTL_DESCTYPE_MASK: u32 = 0x0e00_0000;
    /// `E1000_SRRCTL_DESCTYPE_LEGACY`.
    pub const SRRCTL_DESCTYPE_LEGACY: u32 = 0x0000_0000;
    /// `E1000_SRRCTL_DESCTYPE_ADV_ONEBUF`.
    pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 0x0200_0000;
    /// `E1000_SRRCTL_DESCTYPE_HDR_SPLIT`: split only when the header is recognised.
    pub const SRRCTL_DESCTYPE_HDR_SPLIT: u32 = 0x0400_0000;
    /// `E1000_SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS`.
    pub const SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS: u32 = 0x0a00_0000;
    /// `E1000_SRRCTL_DROP_EN`.
    pub const SRRCTL_DROP_EN: u32 = 0x8000_0000;
    /// Buffer size used when BSIZEPKT is 0: the RCTL default (QEMU `igb_rxbufsize` falls
    /// back to RCTL.BSIZE, whose reset value is 2048).
    pub const DEFAULT_PKT_BUF_LEN: u32 = 2048;
}
