//! Kubelet device plugin (`v1beta1`) for emu-sriov VFs.
//!
//! One gRPC server per extended resource name (default `emu.sriov/vf`; pools may name their own,
//! e.g. `emu.sriov/vf-fast`) on `<device-plugin dir>/emu-sriov-<class>.sock`, registered with the
//! kubelet the classic way (`Register` on `kubelet.sock`). The agent implements [`VfInventory`];
//! this crate never touches devices itself (ARCHITECTURE.md: "Kubernetes sees ids and paths").
//!
//! Layout of a VF on the host, as the plugin expects it: every VF socket sits alone in its own
//! directory (`<agent run dir>/vfs/<id>/vf.sock`). Allocate mounts that directory, never the
//! whole run dir (which would expose other tenants' sockets), at `/var/run/emu-sriov/<id>/` in the
//! container; a directory mount survives the server re-creating its socket.
//!
//! Per-VF states (see [`table`]):
//!
//! | state | advertised as | left by |
//! |---|---|---|
//! | not yet ready (never reported healthy) | not listed | first healthy report |
//! | free | `Healthy` (or `Unhealthy` while the agent reports it down) | Allocate |
//! | allocated | same as free: kubelet does its own accounting | pod-resources no longer lists it |
//! | scrubbing | `Healthy` (the kubelet may hand it out again at once: Allocate waits for the scrub, at most 3 s) | scrub done |
//! | dirty (scrub failed) | `Unhealthy`; scrub retried every pod-resources poll | scrub done |
//!
//! Entry points: [`run`] (async, in the caller's runtime, fixed resources),
//! [`DevicePluginRunner`] (async, with a [`PluginHandle`] through which the agent changes the
//! served resources at run time and reads which VFs pods hold) and [`DevicePlugins::start`] (a
//! dedicated runtime thread, for the plain-threads standalone agent).

pub mod api;
pub mod cdi;
pub mod config;
pub mod inventory;
pub mod prefer;
pub mod response;
mod runner;
mod service;
pub mod table;
pub mod uds;

pub use config::{DevicePluginConfig, DEFAULT_RESOURCE};
pub use inventory::{VfDevice, VfInventory};
pub use runner::{run, DevicePluginRunner, DevicePlugins, PluginError, PluginHandle};
