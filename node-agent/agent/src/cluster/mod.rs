//! Cluster mode (`run --cluster`): the agent runs what its node's `NodeState` asks for and
//! reports what it runs in the object's status.
//!
//! ```text
//!  NodeState (watch, field selector metadata.name=NODE)
//!        │ spec
//!        ▼
//!  desired::desired ── checked against this machine (CPUs, run dir) ──► Desired + problems
//!        │                                     device plugin: held VF ids (pod-resources)
//!        ▼                                                │
//!  plan::plan(running pools, Desired, held) ──► actions + what waits (pure, unit-tested)
//!        │
//!        ▼
//!  pools::Pools::apply ── one Node per pool: start/stop, serve/unserve/configure a VF
//!        │
//!        ├──► device plugin: inventory (VFs, health), resources served
//!        └──► status::status ──► NodeState status (server-side apply, only when it changed)
//! ```
//!
//! Decisions:
//!
//! - **One node per pool.** Each pool entry gets its own [`crate::node::Node`]: its own PFs,
//!   switch, dataplane threads and uplink, so that pools differ in dataplane mode, cores and
//!   uplink, and a pool starts, changes or stops without touching the others.
//! - **VF slots instead of a growable port list.** A pool's PFs are built with more VF slots
//!   than they serve ([`desired::DesiredPool::slots`]): igb PFs with all 7 (the 82576's
//!   limit), avf PFs with the VFs rounded up to a multiple of 8 (at most 64; exactly the VFs
//!   asked when a pool would otherwise exceed its switch's 256 ports). Growing within the slots
//!   binds new sockets and touches nothing else (the dataplane's port list is fixed, which keeps
//!   the hot path free of resizing and locking); growing beyond them is a rebuild of the pool,
//!   which waits until none of its VFs is allocated. An unserved slot costs one atomic load per
//!   dataplane pass and a little sparse memory.
//! - **No drain** (ARCHITECTURE.md decision 8): see the table in [`plan`]. What applies at
//!   once to an allocated VF is what a real PF changes under a running guest (spoof check and
//!   the TX rate limit); VLAN, trust, MTU and the resource name change when the pod releases
//!   the VF. A VF whose change waits is advertised Unhealthy to the kubelet (running pods keep
//!   it; new pods do not get it), so every wait ends when the pods using the VF end.
//! - **Allocations** come from the device plugin's table (Allocate, then the kubelet's
//!   pod-resources API). Until pod-resources has answered once after a start, nothing is
//!   removed: a pod may hold a VF this agent has not seen allocated.
//! - **MTU** is the PF side's: a VF receives no frame with a larger payload (plus Ethernet
//!   header, one VLAN tag and FCS), whatever MTU its driver sets, as a real PF's MTU bounds
//!   its VFs'. What a VF sends is not cut.
//! - **Status** is written only when it differs from the object's, with the
//!   [`emu_sriov_crds::AGENT_MANAGER`] field manager; conditions Ready, Pending and Degraded
//!   ([`emu_sriov_crds::conditions`]). A missing NodeState means "run nothing" (logged once);
//!   a NodeState deleted later is treated the same way (free VFs go, allocated ones wait). A
//!   spec that cannot be read or a pool that cannot be applied keeps what runs and says why
//!   in Degraded; the agent never exits over a bad NodeState.

pub mod controller;
pub mod desired;
pub mod macs;
pub mod plan;
pub mod pools;
pub mod status;

pub use controller::{run, ClusterOptions};
