//! The Network Plumbing WG's `NetworkAttachmentDefinition` (`k8s.cni.cncf.io/v1`), as far as
//! the operator writes it. Its CRD is not ours: Multus installs it (tests install the WG's own
//! definition).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Ties a NetworkAttachmentDefinition to the extended resource a pod must be given to join it.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    namespaced,
    schema = "disabled"
)]
pub struct NetworkAttachmentDefinitionSpec {
    /// The CNI configuration, JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}
