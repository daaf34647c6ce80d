//! `emu-sriov-cni`: a CNI 1.1 plugin for emu-sriov's netdev-mode VFs.
//!
//! A netdev VF is a kernel TAP the node agent switches exactly like a VF (VMDq MAC filter, VLAN,
//! anti-spoofing, rate limit, counters). ADD asks the agent to claim the VF for the container
//! (the agent records the claim before anything moves and applies VLAN/spoofchk/trust/rate
//! through its PF model, like `ip link set PF vf N …`), moves the TAP into the container's
//! network namespace, renames it, sets MAC, MTU and brings it up, delegates IPAM to the standard
//! plugins and prints the CNI result. DEL moves the TAP back and releases the VF (idempotent);
//! CHECK verifies the claim, the interface and its addresses; STATUS says whether the agent
//! answers; VERSION lists the spec versions.
//!
//! Layers: [`conf`] (the network configuration and the environment), [`agent`] (the agent's
//! control socket), [`link`] (netlink inside a namespace), [`ipam`] (delegation),
//! [`result`] (CNI result and error JSON), [`plugin`] (the commands), [`install`] (copying the
//! plugin onto a node).
#![deny(unsafe_code)]

pub mod agent;
pub mod conf;
pub mod error;
pub mod install;
pub mod ipam;
pub mod link;
pub mod plugin;
pub mod result;
#[allow(unsafe_code)]
mod sys;

pub use error::CniError;
