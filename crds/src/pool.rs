//! `VfPool`: which nodes get which emulated PFs and VFs, advertised as which resource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pool of emulated VFs on every node its selector matches.
///
/// Each matched node runs `pfsPerNode` PFs of `model` with `vfsPerPf` VFs each, on one switch
/// (the pool's dataplane), and its agent advertises them to the kubelet as `resourceName`.
/// Changing the pool never drains a node: more VFs appear at once, fewer VFs remove free ones
/// first and allocated ones when their pods release them.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "emu.sriov",
    version = "v1alpha1",
    kind = "VfPool",
    plural = "vfpools",
    shortname = "vfpool",
    category = "emu-sriov",
    status = "VfPoolStatus",
    doc = "A pool of emulated SR-IOV VFs on every node its selector matches.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(name = "Resource", type_ = "string", json_path = ".spec.resourceName"),
    printcolumn(
        name = "PFs",
        type_ = "integer",
        json_path = ".spec.pfsPerNode",
        priority = "1"
    ),
    printcolumn(name = "VFs/PF", type_ = "integer", json_path = ".spec.vfsPerPf"),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.matchedNodes"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyNodes"),
    printcolumn(name = "VFs", type_ = "integer", json_path = ".status.vfsTotal"),
    printcolumn(
        name = "Allocated",
        type_ = "integer",
        json_path = ".status.vfsAllocated"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.model == 'iavf' || self.vfsPerPf <= 7").message("vfsPerPf: an igbvf PF (Intel 82576) carries at most 7 VFs: set vfsPerPf to 7 or less, raise pfsPerNode, or use model: iavf (up to 64 VFs per PF)"))]
#[x_kube(validation = Rule::new("self.model == 'iavf' || self.queuePairs == 1").message("queuePairs: igbvf VFs have exactly one queue pair: leave queuePairs out (or 1), or use model: iavf for up to 16"))]
#[x_kube(validation = Rule::new("self.pfsPerNode * self.vfsPerPf <= 256").message("pfsPerNode * vfsPerPf: one pool's switch holds at most 256 VF ports per node: lower pfsPerNode or vfsPerPf"))]
#[x_kube(validation = Rule::new("self.deviceType != 'netdev' || self.model == 'igbvf'").message("deviceType: netdev (TAP-backed VFs for the emu-sriov CNI plugin) is driven through the igb PF model: use model: igbvf, or deviceType: vfio-user"))]
#[x_kube(validation = Rule::new("self.dataplane.mode != 'poll' || size(self.dataplane.cores) > 0").message("dataplane.cores: poll mode busy-polls dedicated cores: list them (e.g. cores: [2, 3]) or use mode: adaptive"))]
#[serde(rename_all = "camelCase")]
pub struct VfPoolSpec {
    /// Nodes this pool applies to (labels). Empty: every node.
    #[serde(default)]
    pub node_selector: LabelSelector,
    /// VF model the guest driver sees: `igbvf` (Intel 82576 VF, up to 7 per PF) or `iavf`
    /// (Intel Adaptive Virtual Function, up to 64 per PF, up to 16 queue pairs).
    pub model: VfModel,
    /// Emulated PFs per matched node, 1 to 8.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 8))]
    pub pfs_per_node: u32,
    /// VFs per PF: 1 to 7 for igbvf, 1 to 64 for iavf.
    #[serde(default = "four")]
    #[schemars(range(min = 1, max = 64))]
    pub vfs_per_pf: u32,
    /// Queue pairs per VF (iavf only; igbvf has one).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 16))]
    pub queue_pairs: u32,
    /// Extended resource the VFs are advertised as (`<domain>/<name>`). Two pools on one node
    /// with the same resource: the one with the lower `priority` value serves it.
    #[serde(default = "default_resource")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$') && size(self) <= 63").message("resourceName: write it as <domain>/<name> in lower-case DNS form, at most 63 characters, e.g. emu.sriov/vf-fast"))]
    pub resource_name: String,
    /// How pods consume a VF: `vfio-user` (a socket a VM's QEMU attaches) or `netdev` (a
    /// TAP-backed interface that `emu-sriov-cni` moves into the pod; model igbvf).
    #[serde(default)]
    pub device_type: DeviceType,
    /// The VFs' settings, as `ip link set PF vf N …` would set them.
    #[serde(flatten)]
    pub vf: VfSettings,
    /// The pool's dataplane on each node: one switch for this pool's VFs.
    #[serde(default)]
    pub dataplane: DataplaneSpec,
    /// The switch's default port on each node (frames to unknown MACs go there). None: the
    /// pool's VFs talk only to each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkSpec>,
    /// Who may connect to the VF sockets besides root (KubeVirt's QEMU runs as 107:107).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_owner: Option<SocketOwner>,
    /// 0 (highest) to 99 (lowest, the default), as in the SR-IOV network operator: where pools
    /// with the same resourceName select the same node, the lowest value serves it (ties: the
    /// pool whose name sorts first).
    #[serde(default = "lowest_priority")]
    #[schemars(range(min = 0, max = 99))]
    pub priority: u32,
}

/// A VF's PF-side settings (`ip link set PF vf N mac/vlan/spoofchk/trust/max_tx_rate`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct VfSettings {
    /// Largest frame payload the VF may send and receive, 68 to 9216.
    #[serde(default = "default_mtu")]
    #[schemars(range(min = 68, max = 9216))]
    pub mtu: u32,
    /// Port VLAN the PF inserts and strips, 1 to 4094; 0: none.
    #[serde(default)]
    #[schemars(range(min = 0, max = 4094))]
    pub vlan: u32,
    /// Drop frames whose source MAC is not the VF's.
    #[serde(default = "yes")]
    pub spoof_chk: bool,
    /// Let the VF turn on promiscuous mode and change its own MAC.
    #[serde(default)]
    pub trust: bool,
    /// Transmit rate limit in Mbit/s; 0: unlimited.
    #[serde(default)]
    #[schemars(range(min = 0, max = 400000))]
    pub max_tx_rate_mbps: u32,
}

impl Default for VfSettings {
    fn default() -> Self {
        VfSettings {
            mtu: default_mtu(),
            vlan: 0,
            spoof_chk: true,
            trust: false,
            max_tx_rate_mbps: 0,
        }
    }
}

/// The VF model guests see.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VfModel {
    /// Intel 82576 VF (`8086:10ca`), Linux `igbvf`.
    #[serde(rename = "igbvf")]
    Igbvf,
    /// Intel Adaptive Virtual Function (`8086:1889`), Linux `iavf`.
    #[serde(rename = "iavf")]
    Iavf,
}

impl VfModel {
    /// The most VFs one PF of this model carries.
    pub fn max_vfs_per_pf(self) -> u32 {
        match self {
            VfModel::Igbvf => 7,
            VfModel::Iavf => 64,
        }
    }

    /// The agent's PF model name (`igb`, `avf`), also the prefix of the node's PF names.
    pub fn pf_model(self) -> &'static str {
        match self {
            VfModel::Igbvf => "igb",
            VfModel::Iavf => "avf",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VfModel::Igbvf => "igbvf",
            VfModel::Iavf => "iavf",
        }
    }
}

/// How a pod consumes a VF.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// A vfio-user socket mounted into the container (VMs, userspace drivers).
    #[default]
    #[serde(rename = "vfio-user")]
    VfioUser,
    /// A TAP-backed network interface `emu-sriov-cni` moves into the pod (model igbvf).
    #[serde(rename = "netdev")]
    Netdev,
}

/// The pool's dataplane threads on each node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneSpec {
    /// `adaptive` (sleeps when idle) or `poll` (busy-polls the listed cores).
    #[serde(default)]
    pub mode: DataplaneMode,
    /// One pinned dataplane thread per listed core. Empty: one unpinned thread.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub cores: Vec<u32>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneMode {
    #[default]
    Adaptive,
    Poll,
}

/// The switch's default port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct UplinkSpec {
    /// `tap`: a TAP the agent creates; `packet`: AF_PACKET on an existing interface.
    #[serde(rename = "type")]
    pub kind: UplinkType,
    /// Interface name, 1 to 15 characters.
    #[schemars(length(min = 1, max = 15))]
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 15 && !self.contains('/') && !self.contains(' ')").message("uplink.name: an interface name has 1 to 15 characters and no '/' or spaces"))]
    pub name: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum UplinkType {
    Tap,
    Packet,
}

/// A user and group given the VF sockets (mode 0660).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketOwner {
    pub uid: u32,
    pub gid: u32,
}

/// What the operator sees of the pool across nodes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VfPoolStatus {
    /// The pool generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes the pool is placed on (selector matched, not overridden by another pool).
    #[serde(default)]
    pub matched_nodes: u32,
    /// Of those, nodes whose agent runs this generation of the pool.
    #[serde(default)]
    pub ready_nodes: u32,
    /// VFs the agents run for this pool.
    #[serde(default)]
    pub vfs_total: u32,
    /// Of those, VFs allocated to pods.
    #[serde(default)]
    pub vfs_allocated: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn one() -> u32 {
    1
}
fn four() -> u32 {
    4
}
fn yes() -> bool {
    true
}
fn lowest_priority() -> u32 {
    99
}
fn default_mtu() -> u32 {
    1500
}
fn default_resource() -> String {
    crate::DEFAULT_RESOURCE_NAME.to_owned()
}
