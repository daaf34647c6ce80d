//! igbvf (82576 virtual function, 8086:10CA) BAR0 registers, interrupt causes and the VF↔PF
//! mailbox. Names follow `drivers/net/ethernet/intel/igbvf/{regs.h,defines.h,mbx.h}`;
//! semantics are in `shared/design/devices.md` §2.

/// BAR0 size (16 KiB, 64-bit prefetchable; 32-bit accesses only).
pub const BAR0_SIZE: u64 = 16 * 1024;
/// BAR3 (MSI-X) size; table at 0, PBA at [`MSIX_PBA_OFFSET`].
pub const BAR3_SIZE: u64 = 16 * 1024;
pub const MSIX_TABLE_OFFSET: u32 = 0;
pub const MSIX_PBA_OFFSET: u32 = 0x2000;
/// The driver requires exactly three vectors (TX q0, RX q0, mailbox/other).
pub const MSIX_VECTORS: u16 = 3;

// --- General registers (page 0x0000, trapped) ---
pub const CTRL: u32 = 0x0000;
pub const STATUS: u32 = 0x0008;
pub const VMBMEM: u32 = 0x0800;
/// 16 dwords of mailbox memory shared by the VF and the PF.
pub const VMBMEM_WORDS: usize = 16;
pub const V2PMAILBOX: u32 = 0x0C40;
pub const PBACL: u32 = 0x0F04;
pub const PSRTYPE: u32 = 0x0F0C;
pub const VFGPRC: u32 = 0x0F10;
pub const VFGPTC: u32 = 0x0F14;
pub const VFGORC: u32 = 0x0F18;
pub const VFGOTC: u32 = 0x0F34;
pub const VFMPRC: u32 = 0x0F3C;
pub const VFGPRLBC: u32 = 0x0F40;
pub const VFGPTLBC: u32 = 0x0F44;
pub const VFGORLBC: u32 = 0x0F48;
pub const VFGOTLBC: u32 = 0x0F50;

pub const CTRL_RST: u32 = 0x0400_0000;
pub const STATUS_FD: u32 = 0x0000_0001;
pub const STATUS_LU: u32 = 0x0000_0002;
pub const STATUS_SPEED_100: u32 = 0x0000_0040;
pub const STATUS_SPEED_1000: u32 = 0x0000_0080;

// --- Interrupt registers (page 0x1000, trapped) ---
pub const EICS: u32 = 0x1520;
pub const EIMS: u32 = 0x1524;
pub const EIMC: u32 = 0x1528;
pub const EIAC: u32 = 0x152C;
pub const EIAM: u32 = 0x1530;
pub const EICR: u32 = 0x1580;
/// EITR(n) = EITR0 + 4n, n < 3.
pub const EITR0: u32 = 0x1680;
pub const EITR_INTERVAL_MASK: u32 = 0x7FFC;
pub const EITR_CNT_IGNR: u32 = 0x8000_0000;
/// IVAR0: byte0 RX q0, byte1 TX q0, byte2 RX q1, byte3 TX q1; each `vector | IVAR_VALID`.
pub const IVAR0: u32 = 0x1700;
/// IVAR_MISC: byte0 = mailbox vector | IVAR_VALID.
pub const IVAR_MISC: u32 = 0x1740;
pub const IVAR_VALID: u8 = 0x80;
/// Causes implemented by a VF: one EICR bit per MSI-X vector.
pub const EICR_VALID_MASK: u32 = (1 << MSIX_VECTORS) - 1;

// --- Queue registers (pages 0x2000 RX, 0x3000 TX; queue n at +0x100*n) ---
pub const QUEUES: usize = 2;
pub const QUEUE_STRIDE: u32 = 0x100;
pub const RDBAL0: u32 = 0x2800;
pub const RDBAH0: u32 = 0x2804;
pub const RDLEN0: u32 = 0x2808;
pub const SRRCTL0: u32 = 0x280C;
pub const RDH0: u32 = 0x2810;
pub const RDT0: u32 = 0x2818;
pub const RXDCTL0: u32 = 0x2828;
pub const TDBAL0: u32 = 0x3800;
pub const TDBAH0: u32 = 0x3804;
pub const TDLEN0: u32 = 0x3808;
pub const TDH0: u32 = 0x3810;
pub const TXCTL0: u32 = 0x3814;
pub const TDT0: u32 = 0x3818;
pub const TXDCTL0: u32 = 0x3828;
pub const TDWBAL0: u32 = 0x3838;
pub const TDWBAH0: u32 = 0x383C;
/// RXDCTL/TXDCTL queue enable.
pub const XDCTL_ENABLE: u32 = 0x0200_0000;

// --- Mailbox (V2PMAILBOX bits; devices.md §2.3) ---
pub const V2P_REQ: u32 = 0x01;
pub const V2P_ACK: u32 = 0x02;
pub const V2P_VFU: u32 = 0x04;
pub const V2P_PFU: u32 = 0x08;
pub const V2P_PFSTS: u32 = 0x10;
pub const V2P_PFACK: u32 = 0x20;
pub const V2P_RSTI: u32 = 0x40;
pub const V2P_RSTD: u32 = 0x80;
/// Bits that clear when the VF reads the register.
pub const V2P_R2C_BITS: u32 = V2P_PFSTS | V2P_PFACK | V2P_RSTD;

// --- Mailbox messages (word 0; devices.md §2.5) ---
pub const MSG_TYPE_MASK: u32 = 0x0000_FFFF;
pub const MSGINFO_SHIFT: u32 = 16;
pub const MSGINFO_MASK: u32 = 0x00FF_0000;
pub const MSG_ACK: u32 = 0x8000_0000;
pub const MSG_NACK: u32 = 0x4000_0000;
pub const MSG_CTS: u32 = 0x2000_0000;
pub const MSG_VF_RESET: u32 = 0x01;
pub const MSG_SET_MAC_ADDR: u32 = 0x02;
pub const MSG_SET_MULTICAST: u32 = 0x03;
pub const MSG_SET_VLAN: u32 = 0x04;
pub const MSG_SET_LPE: u32 = 0x05;
pub const MSG_SET_PROMISC: u32 = 0x06;
pub const MSG_PF_CONTROL: u32 = 0x0100;
/// SET_MAC_ADDR MSGINFO values (igb_main.c `igb_set_vf_mac_filter`).
pub const MAC_FILTER_PRIMARY: u32 = 0;
pub const MAC_FILTER_CLR: u32 = 1;
pub const MAC_FILTER_ADD: u32 = 2;
/// SET_VLAN MSGINFO: add (1) or remove (0).
pub const VLAN_ADD: u32 = 1;
/// SET_PROMISC MSGINFO bits.
pub const PROMISC_UNICAST: u32 = 0x1;
pub const PROMISC_MULTICAST: u32 = 0x2;
/// The VF sends at most 30 multicast hashes (more ⇒ it asks for all-multicast).
pub const MAX_MC_HASHES: usize = 30;
/// Largest frame the 82576 accepts with LPE (RLPML is 14 bits; igb caps max_frame at 9728).
pub const MAX_JUMBO_FRAME: u32 = 9728;
/// Default max frame without LPE: 1518 + VLAN tag.
pub const DEFAULT_MAX_FRAME: u32 = 1522;
