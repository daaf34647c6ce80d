//! `VfNetwork`: a secondary network over a pool's VFs, rendered into a Multus
//! NetworkAttachmentDefinition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A secondary network over the VFs of one resource. The operator renders it into a Multus
/// `NetworkAttachmentDefinition` (same name, in `networkNamespace`) carrying the
/// `k8s.v1.cni.cncf.io/resourceName` annotation, so that a pod (or a KubeVirt VM) that joins
/// the network is given a VF.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "emu.sriov",
    version = "v1alpha1",
    kind = "VfNetwork",
    plural = "vfnetworks",
    shortname = "vfnet",
    category = "emu-sriov",
    namespaced,
    status = "VfNetworkStatus",
    doc = "A secondary network over emulated VFs, rendered into a Multus NetworkAttachmentDefinition.",
    printcolumn(name = "Resource", type_ = "string", json_path = ".spec.resourceName"),
    printcolumn(name = "VLAN", type_ = "integer", json_path = ".spec.vlan"),
    printcolumn(
        name = "NAD",
        type_ = "string",
        json_path = ".status.networkAttachmentDefinition"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.vlanQoS == 0 || self.vlan != 0").message("vlanQoS: a priority needs a VLAN tag to travel in: set vlan (1-4094) or leave vlanQoS at 0"))]
#[x_kube(validation = Rule::new("self.minTxRateMbps == 0 || self.maxTxRateMbps == 0 || self.minTxRateMbps <= self.maxTxRateMbps").message("minTxRateMbps: the guaranteed rate cannot exceed maxTxRateMbps: lower minTxRateMbps or raise maxTxRateMbps"))]
#[serde(rename_all = "camelCase")]
pub struct VfNetworkSpec {
    /// The resource whose VFs this network uses (a VfPool's resourceName).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')").message("resourceName: write it as <domain>/<name>, the resourceName of a VfPool, e.g. emu.sriov/vf"))]
    pub resource_name: String,
    /// Namespace the NetworkAttachmentDefinition is created in; default: this object's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self) <= 63").message("networkNamespace: a namespace name (lower-case letters, digits and '-', at most 63 characters)"))]
    pub network_namespace: Option<String>,
    /// VLAN the VF's traffic is tagged with on the switch, 1 to 4094; 0: untagged.
    #[serde(default)]
    #[schemars(range(min = 0, max = 4094))]
    pub vlan: u32,
    /// 802.1p priority of that VLAN tag, 0 to 7.
    #[serde(default, rename = "vlanQoS")]
    #[schemars(range(min = 0, max = 7))]
    pub vlan_qos: u32,
    /// Drop frames whose source MAC is not the VF's (default: on).
    #[serde(default = "yes")]
    pub spoof_chk: bool,
    /// Let the VF turn on promiscuous mode and change its MAC.
    #[serde(default)]
    pub trust: bool,
    /// `auto` (follow the switch), `enable` or `disable`.
    #[serde(default)]
    pub link_state: LinkState,
    /// Transmit ceiling in Mbit/s; 0: unlimited.
    #[serde(default)]
    #[schemars(range(min = 0, max = 400000))]
    pub max_tx_rate_mbps: u32,
    /// Guaranteed transmit rate in Mbit/s; 0: none.
    #[serde(default)]
    #[schemars(range(min = 0, max = 400000))]
    pub min_tx_rate_mbps: u32,
    /// The CNI `ipam` section as JSON text, passed through unchanged (e.g.
    /// `{"type": "host-local", "subnet": "198.18.10.0/24"}`). Empty: no IPAM.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 8192))]
    pub ipam: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    #[default]
    Auto,
    Enable,
    Disable,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Auto => "auto",
            LinkState::Enable => "enable",
            LinkState::Disable => "disable",
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VfNetworkStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `namespace/name` of the rendered NetworkAttachmentDefinition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_attachment_definition: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn yes() -> bool {
    true
}
