//! `NodeState`: what one node's agent must run (spec, by the operator) and runs (status, by
//! the agent).

use crate::pool::{DataplaneSpec, DeviceType, SocketOwner, UplinkSpec, VfModel, VfSettings};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The emulated PFs and VFs one node runs. Named after the node and owned by its Node object;
/// the operator writes `spec`, the node's agent writes `status`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "emu.sriov",
    version = "v1alpha1",
    kind = "NodeState",
    plural = "nodestates",
    shortname = "vfnode",
    category = "emu-sriov",
    status = "NodeStateStatus",
    doc = "The emulated PFs and VFs one node runs (spec: the operator; status: the node's agent).",
    printcolumn(name = "Sync", type_ = "string", json_path = ".status.syncStatus"),
    printcolumn(name = "VFs", type_ = "integer", json_path = ".status.vfsTotal"),
    printcolumn(
        name = "Allocated",
        type_ = "integer",
        json_path = ".status.vfsAllocated"
    ),
    printcolumn(name = "Pools", type_ = "string", json_path = ".spec.pools[*].name"),
    printcolumn(
        name = "Error",
        type_ = "string",
        json_path = ".status.lastSyncError",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.pools.all(p, self.pools.exists_one(q, q.name == p.name))").message("pools: each VfPool appears once per node"))]
#[serde(rename_all = "camelCase")]
pub struct NodeStateSpec {
    /// One entry per VfPool placed on this node, sorted by pool name; at most 32.
    // The bounds on these lists and names keep the CEL rules within the API server's cost
    // budget, which multiplies a rule's cost by the most items of every enclosing list; without
    // them kube-apiserver 1.36 rejects this CRD ("estimated rule cost exceeds budget").
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub pools: Vec<NodePool>,
}

/// One pool's share of a node: its PFs (names stable across renders) and their VFs' settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    /// The VfPool's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The VfPool generation this entry was rendered from.
    pub generation: i64,
    pub model: VfModel,
    #[serde(default = "one")]
    pub queue_pairs: u32,
    pub resource_name: String,
    #[serde(default)]
    pub device_type: DeviceType,
    #[serde(flatten)]
    pub vf: VfSettings,
    #[serde(default)]
    pub dataplane: DataplaneSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_owner: Option<SocketOwner>,
    /// The pool's PFs on this node: `pfsPerNode` of them, at most 8.
    #[schemars(length(max = 8))]
    pub pfs: Vec<NodePf>,
}

/// One emulated PF on the node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct NodePf {
    /// Unique on the node and kept while the PF exists (`igb0`, `avf3`): VF ids and socket
    /// paths derive from it.
    #[schemars(length(min = 1, max = 12))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z][a-z0-9]{0,11}$')").message("pfs[].name: 1 to 12 lower-case letters and digits, starting with a letter"))]
    pub name: String,
    /// VFs on this PF.
    #[schemars(range(min = 0, max = 64))]
    pub vfs: u32,
}

/// What the agent runs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStateStatus {
    /// The NodeState generation the agent applied (as far as it could: see `conditions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_status: Option<SyncStatus>,
    /// Why the last apply failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_error: Option<String>,
    #[serde(default)]
    pub vfs_total: u32,
    #[serde(default)]
    pub vfs_allocated: u32,
    /// Per pool: the generation running and the VFs it has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolRunStatus>,
    /// Every VF the agent runs, sorted by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vfs: Vec<VfRunStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStatus {
    /// The spec is applied.
    Succeeded,
    /// Part of the spec waits (allocated VFs pending removal or reconfiguration).
    InProgress,
    /// Part of the spec cannot be applied (`lastSyncError` says why).
    Failed,
}

/// One pool as the agent runs it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PoolRunStatus {
    pub name: String,
    /// The pool generation whose settings the agent runs.
    pub generation: i64,
    pub vfs: u32,
    pub allocated: u32,
    /// What is still waiting, if anything (e.g. "2 allocated VFs pending removal").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// One VF as the agent runs it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VfRunStatus {
    /// Stable id, `<pf>-vf<index>` (the device plugin's device id).
    pub id: String,
    pub pool: String,
    pub pf: String,
    pub mac: String,
    /// Host path of the vfio-user socket.
    pub socket: String,
    pub resource_name: String,
    /// Held by a pod (from the kubelet's pod-resources API).
    pub allocated: bool,
    pub health: VfHealth,
    /// The spec no longer has this VF: it goes when its pod releases it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_removal: bool,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfHealth {
    Healthy,
    Unhealthy,
}

fn one() -> u32 {
    1
}
