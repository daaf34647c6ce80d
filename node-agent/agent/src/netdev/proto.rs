//! The control-socket requests `emu-sriov-cni` sends for netdev-mode VFs, and the answers.
//!
//! Wire: `{"cmd":"netdev","netdev":{"op":"claim",...}}\n` → one [`NetdevAnswer`] line, or
//! `{"error":"...","code":N}` (a CNI error code the plugin passes on). The plugin keeps its own
//! copy of these shapes (it does not link the agent); the JSON is the contract, and the netdev
//! end-to-end tests drive both sides.

use serde::{Deserialize, Serialize};

/// What the plugin asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetdevOp {
    /// Reserve VF `vf` for (container, ifName) in `netns` with `settings`, recorded on disk
    /// before the answer (so that a plugin killed afterwards leaks nothing); idempotent for the
    /// same owner.
    Claim,
    /// Give the owner's VF back (scrubbed, its TAP home again); succeeds when there is none.
    Release,
    /// The owner's claim and whether its TAP is alive under `ifName`.
    Check,
    /// CNI GC for `network`: free every claim of that network whose (container, ifName) is
    /// not in `valid`; the answer lists them (`collected`) so that the plugin can release
    /// their IPAM allocations.
    Gc,
}

/// One attachment a runtime still uses (CNI GC's `cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID", alias = "containerId")]
    pub container_id: String,
    #[serde(rename = "ifname", alias = "ifName")]
    pub if_name: String,
}

/// A claim that GC freed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Collected {
    pub vf: String,
    pub container_id: String,
    pub if_name: String,
}

/// One netdev request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetdevRequest {
    pub op: NetdevOp,
    pub container_id: String,
    pub if_name: String,
    /// The VF id (`igb0-vf0`), Multus' `deviceID`; needed by `claim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vf: Option<String>,
    /// The pod's network namespace path; needed by `claim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default)]
    pub settings: NetdevSettings,
    /// The CNI network's name (its config's `name`): recorded with a claim, matched by `gc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `gc`: the attachments that stay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid: Vec<Attachment>,
}

/// The network's VF settings, sriov-cni's knobs (`ip link set PF vf N …`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetdevSettings {
    /// A MAC for the VF instead of its own (must be unique on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Port VLAN 0..=4094 (0: none); `None`: the pool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// 802.1p priority 0..=7 of the port VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_qos: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoofchk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<bool>,
    /// `auto`, `enable` or `disable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_state: Option<String>,
    /// Mbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx_rate: Option<u32>,
    /// Mbit/s; 0: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tx_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// A claim as the agent holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetdevAnswer {
    /// `""` in a `release`/`check` answer when the owner holds no VF.
    pub vf: String,
    /// The TAP's name in the agent's namespace (`igb0v0`).
    pub host_name: String,
    /// The MAC the interface must carry.
    pub mac: String,
    /// The MTU the interface must have.
    pub mtu: u32,
    pub netns: String,
    pub if_name: String,
    /// The TAP's current name, wherever it is; `None`: its netdev is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_name: Option<String>,
    /// `gc`: the claims it freed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collected: Vec<Collected>,
}
