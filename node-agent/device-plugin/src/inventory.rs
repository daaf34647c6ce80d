//! The boundary the agent implements: which VFs exist, their health, and how to scrub one.

use std::path::PathBuf;

/// One VF as the device plugin sees it: ids and paths, no device internals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfDevice {
    /// Stable id, e.g. `igb0-vf0` (≤ 63 characters; the kubelet checkpoint keys on it).
    pub id: String,
    /// Extended resource name this VF is advertised under, e.g. `emu.sriov/vf`.
    pub resource: String,
    /// PF name, e.g. `igb0`.
    pub pf: String,
    /// VF model, e.g. `igbvf`.
    pub model: String,
    /// PCI vendor id, e.g. `0x8086`.
    pub vendor_id: String,
    /// PCI device id, e.g. `0x10ca`.
    pub device_id: String,
    /// MAC, e.g. `02:00:00:00:00:01`.
    pub mac: String,
    /// Host path of the vfio-user socket. Its parent directory must hold this VF only: it is
    /// what Allocate mounts into the container.
    pub socket: PathBuf,
    /// Server thread and dataplane up, PF not being removed.
    pub healthy: bool,
    /// Dataplane core serving this VF, if pinned (GetPreferredAllocation locality).
    pub core: Option<u32>,
}

/// Implemented by the agent. Called from the plugin's runtime: `devices` every poll tick (keep
/// it cheap), `scrub` on a blocking thread.
pub trait VfInventory: Send + Sync + 'static {
    /// Current view of every VF, health included.
    fn devices(&self) -> Vec<VfDevice>;
    /// Reset a released VF for its next user: client disconnected, device reset, filters and
    /// MAC restored, counters zeroed.
    fn scrub(&self, id: &str) -> Result<(), String>;
}
