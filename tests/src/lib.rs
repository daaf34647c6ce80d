//! Real-driver end-to-end test harness (shared/design/guest-tests.md).
//!
//! Boots TCG guests whose stock kernel drivers (`igbvf`, or QEMU's `igb` as the reference) drive
//! the device, asserts the `/init` checks (`tests/guest/init.sh`) from the serial console, and,
//! with the agent, compares its per-VF counters with the guests' interface statistics.
//!
//! The guest tests are `#[ignore]`d so that plain `cargo test` stays fast; run them with
//! `cargo test -p emu-sriov-tests -- --include-ignored` (as root; the first run builds the guest
//! cache, ~1 min with network). A requested run with a missing prerequisite fails loudly.
//!
//! [`k8s`] runs a real Kubernetes control plane (etcd + kube-apiserver of the pinned release) for
//! the operator and CRD tests; those are not ignored (a start takes seconds).

pub mod agent;
pub mod arp;
pub mod cluster;
pub mod cni;
pub mod console;
pub mod env;
pub mod fake_kubelet;
pub mod harness;
pub mod initramfs;
pub mod k8s;
pub mod kubevirt;
pub mod netns;
pub mod operator;
pub mod proc;
pub mod qemu;
pub mod scenarios;
pub mod simagent;
pub mod topology;
pub mod traffic;

pub use agent::{agent_bin, Agent, VfInfo};
pub use console::{Check, Console, Marker};
pub use env::GuestEnv;
pub use harness::{compare_counters, GuestReport, Harness, Launcher, GUEST_TOOLS};
pub use initramfs::{build_initramfs, build_initramfs_with_tools};
pub use netns::NetNs;
pub use proc::RunDir;
pub use qemu::Qemu;
pub use topology::{Device, GuestSpec, Topology, VfModel, IAVF_QUEUES};
