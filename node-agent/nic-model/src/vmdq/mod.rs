//! VMDq pool filters and switching decisions.
//!
//! The dataplane switches frames between pools (one per VF, plus the PF/uplink) the way the
//! 82576's internal VMDq switch does (devices.md §4). This module is the pure part: the per-pool
//! filter state ([`PoolFilter`]), a read-only snapshot of all pools ([`SwitchTable`]) and the
//! decisions taken per frame ([`tx_check`], [`rx_targets`], [`rx_vlan_action`]). It does no I/O,
//! takes no locks and never allocates on the hot path: results go into caller-owned fixed-size
//! values ([`PortSet`], [`RxTargets`]).
//!
//! # Flow of one transmitted frame
//!
//! 1. [`tx_check`] (devices.md §4.2 TX 1–3): TX gate, anti-spoof; returns the port VLAN to insert.
//! 2. The caller inserts that tag ([`write_vlan_tagged`]) into its own buffer.
//! 3. [`rx_targets`] with `src = Some(sender)` (§4.2 TX 4 and RX 1–5): the pools that receive
//!    it, whether it also leaves through the default port, and per-pool rejections to count.
//! 4. Per receiving pool, [`rx_vlan_action`] (§4.2 RX 6) says whether to strip the tag and report
//!    it in the RX descriptor ([`write_vlan_stripped`] does the copy).
//!
//! Frames arriving from the uplink run step 3 with `src = Some(uplink port)`, which is the
//! default port, or `None` for frames that belong to no port (e.g. injected by the PF model).

mod bitset;
mod filter;
mod frame;
mod switch;
mod table;

#[cfg(test)]
mod tests;

pub use bitset::{MtaSet, PortIter, PortSet, VlanSet};
pub use filter::{PoolFilter, DEFAULT_MAX_FRAME};
pub use frame::{
    is_multicast, is_valid_unicast, mta_hash, write_vlan_stripped, write_vlan_tagged, L2Header,
    BROADCAST, ETH_FCS_LEN, ETH_HLEN, ETH_P_8021Q, VLAN_HLEN, VLAN_VID_MASK,
};
pub use switch::{
    rx_targets, rx_targets_header, rx_vlan_action, tx_check, tx_check_header, vlan_accepts,
    RxTargets,
};
pub use table::SwitchTable;

/// An Ethernet MAC address, in wire order.
pub type MacAddr = [u8; 6];

/// Ports (pools) across one switching domain; a port index is a switch port.
pub const MAX_PORTS: usize = 256;

/// Errors of the control-path setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VmdqError {
    /// A port index at or beyond [`MAX_PORTS`].
    #[error("switch port {port} is out of range (at most {} ports)", MAX_PORTS)]
    PortOutOfRange {
        /// The rejected port index.
        port: usize,
    },
}

/// Why a frame was not delivered somewhere; [`DropReason::index`] indexes counter arrays of
/// length [`DROP_REASONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// TX from a pool whose VFTE bit is clear (devices.md §4.2 TX 1).
    TxDisabled = 0,
    /// TX anti-spoof: the source MAC is not one of the pool's MACs (§4.2 TX 2).
    MacSpoof = 1,
    /// TX anti-spoof: the VLAN is not one the pool may use (§4.2 TX 2).
    VlanSpoof = 2,
    /// Shorter than an Ethernet header, or an 802.1Q TPID without room for the tag.
    Runt = 3,
    /// Longer than the receiving pool's `max_frame` (§4.2 RX 5).
    Oversize = 4,
    /// The receiving pool's VFRE bit is clear (§4.2 RX 5).
    RxDisabled = 5,
    /// The receiving pool does not accept the frame's VLAN, or untagged frames (§4.2 RX 4).
    VlanFilter = 6,
    /// No pool and no default port wanted the frame.
    NoMatch = 7,
    /// TX from a port that has no filter in the table.
    NoPort = 8,
}

/// Number of [`DropReason`] variants.
pub const DROP_REASONS: usize = 9;

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [Self; DROP_REASONS] = [
        Self::TxDisabled,
        Self::MacSpoof,
        Self::VlanSpoof,
        Self::Runt,
        Self::Oversize,
        Self::RxDisabled,
        Self::VlanFilter,
        Self::NoMatch,
        Self::NoPort,
    ];

    /// Counter index, `0..DROP_REASONS`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name, for metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::TxDisabled => "tx_disabled",
            Self::MacSpoof => "mac_spoof",
            Self::VlanSpoof => "vlan_spoof",
            Self::Runt => "runt",
            Self::Oversize => "oversize",
            Self::RxDisabled => "rx_disabled",
            Self::VlanFilter => "vlan_filter",
            Self::NoMatch => "no_match",
            Self::NoPort => "no_port",
        }
    }
}
