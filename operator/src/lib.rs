//! `emu-sriov-operator`: turns the cluster's `VfPool`s into one `NodeState` per node (what
//! that node's agent runs) and `VfNetwork`s into Multus NetworkAttachmentDefinitions.
//!
//! - [`render`] and [`network`]: pure functions (objects in, objects out), where the rules
//!   live and are unit-tested (placement, priority, stable PF names, NAD rendering).
//! - [`controllers`]: thin kube-runtime controllers that feed them from caches and write
//!   only what differs (server-side apply, field manager `emu-sriov-operator`).
//! - [`leader`]: leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager);
//!   only the leader runs controllers.
//! - [`metrics`]: `/healthz`, `/readyz`, `/metrics`.

pub mod controllers;
pub mod leader;
pub mod metrics;
pub mod network;
pub mod render;
pub mod selector;

/// `app.kubernetes.io/managed-by` on everything the operator creates.
pub const MANAGED_BY: &str = "emu-sriov-operator";
