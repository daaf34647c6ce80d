//! Library half of `emu-sriov-agent`: configuration, naming, status types, the state kept
//! across restarts ([`state`]), who may reach the run dir ([`access`]), the control
//! socket, the ready banner and the Prometheus endpoint ([`metrics`]), and cluster mode
//! ([`cluster`]: the NodeState-driven control plane). The binary (`main.rs`)
//! parses the command line and wires devices. Other crates (tests, the device plugin) use
//! [`status`] and [`control`] to read an agent.

pub mod access;
pub mod banner;
pub mod cluster;
pub mod config;
pub mod control;
pub mod device;
pub mod mac;
pub mod metrics;
pub mod naming;
pub mod netdev;
pub mod node;
pub mod plugin;
pub mod state;
pub mod status;
pub mod sys;
