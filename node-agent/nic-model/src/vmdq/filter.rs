//! The VMDq filter state of one pool (devices.md §4.2 "Per-pool state").

use super::frame::ETH_FCS_LEN;
use super::{MacAddr, MtaSet, VlanSet};

/// The largest frame, FCS included, a pool accepts while LPE is off: 1500-byte MTU + 14-byte
/// header + 4-byte 802.1Q tag + 4-byte FCS (QEMU `igb_rx_is_oversized` without LPE).
pub const DEFAULT_MAX_FRAME: u32 = 1522;

/// The VMDq filter state of one pool (one VF, or the PF/uplink default pool): what the PF model
/// programmed through mailbox/virtchnl and agent config. The PF model enforces trust (who may set
/// `uc_promisc`, extra MACs); this type only states the filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolFilter {
    /// Exact unicast filters (RAL/RAH with this pool in POOLSEL): the primary first, then
    /// extras. Group and all-zero addresses are ignored by the switch index.
    pub macs: Vec<MacAddr>,
    /// 12-bit MTA hashes from igbvf SET_MULTICAST (devices.md §2.5), per pool (§4.4).
    pub mc_hashes: MtaSet,
    /// Exact multicast addresses (AVF ADD_ETH_ADDR, devices.md §4.2).
    pub mc_addrs: Vec<MacAddr>,
    /// Member VLAN IDs (VLVF). VID 0 is an ordinary member: a priority-tagged frame (tag with
    /// VID 0) needs 0 here, exactly as on the 82576, where igb adds VLAN 0 for every VF at reset
    /// (`igb_vf_reset_msg`, devices.md §4.1). Untagged frames are governed by
    /// `accept_untagged`, not by VID 0. Ignored while `port_vlan` is set.
    pub vlans: VlanSet,
    /// VMVIR port VLAN: inserted on TX, and on RX only frames tagged with this VID are accepted
    /// (then stripped).
    pub port_vlan: Option<u16>,
    /// VMOLR.AUPE: accept untagged frames. Has no effect while `port_vlan` is set.
    pub accept_untagged: bool,
    /// VMOLR.BAM: accept broadcast.
    pub broadcast: bool,
    /// VMOLR.ROPE: receive unicast that matched no pool's exact filter (trusted VFs only).
    pub uc_promisc: bool,
    /// VMOLR.MPME: receive all multicast.
    pub mc_promisc: bool,
    /// VMOLR.STRVLAN: strip the 802.1Q tag on RX and report it in the descriptor.
    pub strip_vlan: bool,
    /// VMOLR.RLPML: the largest accepted frame **including the 4-byte FCS** and any VLAN tag, as
    /// igbvf programs it (SET_LPE sends MTU + 22 = MTU + ETH_HLEN + VLAN_HLEN + ETH_FCS_LEN).
    /// Frames here carry no FCS, so a frame of `len` bytes is oversize when
    /// `len + 4 > max_frame` (QEMU `igb_rx_is_oversized` with LPE).
    pub max_frame: u32,
    /// DTXSWC MAC_SPOOF/VLAN_SPOOF for this pool: check source MAC and VLAN on TX.
    pub spoofchk: bool,
    /// VFRE: the pool may receive.
    pub rx_enabled: bool,
    /// VFTE: the pool may transmit.
    pub tx_enabled: bool,
}

impl PoolFilter {
    /// Power-on state: no address, no VLAN, every accept flag off, RX and TX gated off, and
    /// `max_frame` at the non-LPE default. Nothing is received or sent until the PF model
    /// opens the pool (`igb_vf_reset_msg` sets VFRE/VFTE).
    pub fn closed() -> Self {
        Self {
            macs: Vec::new(),
            mc_hashes: MtaSet::EMPTY,
            mc_addrs: Vec::new(),
            vlans: VlanSet::EMPTY,
            port_vlan: None,
            accept_untagged: false,
            broadcast: false,
            uc_promisc: false,
            mc_promisc: false,
            strip_vlan: false,
            max_frame: DEFAULT_MAX_FRAME,
            spoofchk: false,
            rx_enabled: false,
            tx_enabled: false,
        }
    }

    /// Whether a frame of `len` bytes (no FCS) exceeds `max_frame`.
    pub fn is_oversize(&self, len: usize) -> bool {
        // u64 arithmetic: no overflow for any slice length on 64-bit or smaller targets.
        len as u64 + ETH_FCS_LEN as u64 > u64::from(self.max_frame)
    }

    /// The longest frame (no FCS) that is not oversize; 0 when every frame is.
    pub fn max_len(&self) -> usize {
        (self.max_frame as usize).saturating_sub(ETH_FCS_LEN)
    }

    /// Whether this pool wants any multicast beyond broadcast.
    pub(crate) fn wants_multicast(&self) -> bool {
        self.mc_promisc || !self.mc_hashes.is_empty() || !self.mc_addrs.is_empty()
    }
}

impl Default for PoolFilter {
    fn default() -> Self {
        Self::closed()
    }
}
