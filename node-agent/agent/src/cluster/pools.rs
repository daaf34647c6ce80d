//! The pools this agent runs: one [`Node`] per pool (its own PFs, switch and dataplane), the
//! bookkeeping [`plan`] works on, and the execution of a plan.
//!
//! [`Pools::apply`] is blocking (it starts and stops server and dataplane threads): the
//! controller calls it on a blocking thread. Removing a VF follows a protocol that cannot race
//! with the kubelet's Allocate: the VF is first withdrawn from the inventory, the device
//! plugin re-reads the inventory (after which Allocate refuses the id), and only if the plugin
//! still does not hold it is the VF torn down; otherwise it stays (and shows as pending).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use emu_device_plugin::{PluginHandle, VfDevice, VfInventory};

use super::desired::{Desired, DesiredPool, Problem, Settings};
use super::macs::MacBook;
use super::plan::{plan, Action, Plan, PoolWait, RunningPool, RunningVf};
use crate::config::{AgentConfig, PfConfig, VfConfig};
use crate::metrics::Sample;
use crate::naming;
use crate::node::{Layout, Node};
use crate::status::AgentStatus;

/// One running pool.
struct PoolRun {
    node: Arc<Node>,
    state: RunningPool,
    /// VFs being removed: no longer offered to the device plugin.
    withdrawn: BTreeSet<String>,
}

struct Inner {
    pools: BTreeMap<String, PoolRun>,
    macs: MacBook,
    /// Pools whose node could not start, with the spec that failed and why; retried when the
    /// pool's spec changes.
    failed: BTreeMap<String, (DesiredPool, String)>,
    /// The last error per VF (serve or configure), logged once.
    errors: BTreeMap<String, String>,
    /// What waits, from the plan made after the last apply.
    waits: BTreeMap<String, PoolWait>,
}

/// Every pool of the node.
pub struct Pools {
    node_name: String,
    run_dir: PathBuf,
    allow_unsealed_memory: bool,
    inner: Mutex<Inner>,
}

/// One VF as the NodeState status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfSnapshot {
    pub id: String,
    pub pf: String,
    pub mac: String,
    pub socket: String,
    pub resource: String,
    pub healthy: bool,
}

/// One pool as the NodeState status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub generation: i64,
    pub vfs: Vec<VfSnapshot>,
    pub wait: PoolWait,
}

/// What runs now, for the NodeState status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub pools: BTreeMap<String, PoolSnapshot>,
    /// What failed at run time (a node that did not start, a VF that could not be served).
    pub problems: Vec<Problem>,
}

/// What an apply did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Something started, stopped, was served, removed or reconfigured.
    pub changed: bool,
    /// Actions are left (a removal met a fresh allocation, a VF failed): apply again soon.
    pub again: bool,
}

fn vf_config(index: u8, mac: [u8; 6], s: &Settings) -> VfConfig {
    VfConfig {
        index,
        mac,
        mac_configured: false,
        port_vlan: s.port_vlan,
        spoofchk: s.spoofchk,
        trusted: s.trusted,
        rate_mbps: s.rate_mbps,
        mtu: Some(s.mtu),
    }
}

impl Pools {
    pub fn new(
        node_name: &str,
        run_dir: PathBuf,
        allow_unsealed_memory: bool,
        macs: MacBook,
    ) -> Pools {
        Pools {
            node_name: node_name.to_owned(),
            run_dir,
            allow_unsealed_memory,
            inner: Mutex::new(Inner {
                pools: BTreeMap::new(),
                macs,
                failed: BTreeMap::new(),
                errors: BTreeMap::new(),
                waits: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the pools towards `desired` (see the module docs and [`plan`]). `plugin`: the
    /// device plugin, whose view of allocations decides what may go; `None` without one.
    pub fn apply(&self, desired: &Desired, plugin: Option<&PluginHandle>) -> Applied {
        let held = plugin.map(PluginHandle::held).unwrap_or_default();
        let known = plugin.is_none_or(PluginHandle::allocations_known);
        let mut out = Applied::default();

        // 1. The plan, with pools whose start failed on this very spec kept out.
        let (the_plan, effective) = {
            let mut inner = self.lock();
            inner
                .failed
                .retain(|name, (spec, _)| desired.pools.get(name) == Some(spec));
            let effective = self.effective(&inner, desired);
            (
                plan(&running_view(&inner), &effective, &held, known),
                effective,
            )
        };
        if the_plan.actions.is_empty() {
            self.settle(&held, known, &effective);
            return out;
        }

        // 2. Withdraw what goes, let the plugin forget it, then check nobody took it.
        let mut going: BTreeSet<String> = BTreeSet::new();
        {
            let mut inner = self.lock();
            for a in &the_plan.actions {
                match a {
                    Action::Remove { pool, id } => {
                        if let Some(p) = inner.pools.get_mut(pool) {
                            p.withdrawn.insert(id.clone());
                            going.insert(id.clone());
                        }
                    }
                    Action::Stop { pool } => {
                        if let Some(p) = inner.pools.get_mut(pool) {
                            let ids: Vec<String> = p.state.vfs.keys().cloned().collect();
                            p.withdrawn.extend(ids.iter().cloned());
                            going.extend(ids);
                        }
                    }
                    _ => {}
                }
            }
        }
        let held_now = match plugin {
            Some(p) if !going.is_empty() => {
                p.refresh();
                p.held()
            }
            _ => held.clone(),
        };

        // 3. Execute.
        {
            let mut inner = self.lock();
            let mut blocked: BTreeSet<String> = BTreeSet::new();
            for a in &the_plan.actions {
                match a {
                    Action::Remove { pool, id } => {
                        out.again |= !self.remove(&mut inner, pool, id, &held_now);
                        out.changed = true;
                    }
                    Action::Stop { pool } => {
                        let removed = !effective.pools.contains_key(pool);
                        if self.stop(&mut inner, pool, &held_now, removed) {
                            out.changed = true;
                        } else {
                            blocked.insert(pool.clone());
                            out.again = true;
                        }
                    }
                    Action::Start { pool, slots } => {
                        if blocked.contains(pool) {
                            continue;
                        }
                        if let Some(want) = effective.pools.get(pool) {
                            self.start(&mut inner, want, slots, &effective);
                            out.changed = true;
                        }
                    }
                    Action::Add { pool, pf, index } => {
                        if let Some(want) = effective.pools.get(pool) {
                            out.again |= !self.add(&mut inner, want, pf, *index);
                            out.changed = true;
                        }
                    }
                    Action::Configure {
                        pool,
                        id,
                        settings,
                        resource,
                    } => {
                        out.again |= !self.configure(&mut inner, pool, id, settings, resource);
                        out.changed = true;
                    }
                }
            }
            if out.changed {
                if let Err(e) = inner.macs.save(&self.run_dir) {
                    tracing::warn!(error = %e, "VF MACs not recorded");
                }
            }
        }
        self.settle(&held_now, known, &effective);
        if let Some(p) = plugin {
            p.refresh();
        }
        out
    }

    /// The desired pools minus those whose start failed on the same spec (those become
    /// problems and are kept as they run, i.e. not at all).
    fn effective(&self, inner: &Inner, desired: &Desired) -> Desired {
        let mut d = desired.clone();
        for (name, (spec, _)) in &inner.failed {
            if d.pools.remove(name).is_some() {
                d.invalid.insert(name.clone(), spec.generation);
            }
        }
        d
    }

    /// Records what waits (for status and the inventory) and the generations fully applied.
    fn settle(&self, held: &BTreeSet<String>, known: bool, desired: &Desired) {
        let mut inner = self.lock();
        let after: Plan = plan(&running_view(&inner), desired, held, known);
        let mut busy: BTreeSet<&str> = BTreeSet::new();
        for a in &after.actions {
            busy.insert(match a {
                Action::Start { pool, .. }
                | Action::Stop { pool }
                | Action::Add { pool, .. }
                | Action::Remove { pool, .. }
                | Action::Configure { pool, .. } => pool,
            });
        }
        for (name, run) in inner.pools.iter_mut() {
            let settled = after.waits.get(name).is_none_or(|w| w.pending.is_empty());
            if let Some(want) = desired.pools.get(name) {
                if settled && !busy.contains(name.as_str()) {
                    run.state.generation = want.generation;
                }
            }
        }
        inner.waits = after.waits;
    }

    fn remove(&self, inner: &mut Inner, pool: &str, id: &str, held: &BTreeSet<String>) -> bool {
        let Some(p) = inner.pools.get_mut(pool) else {
            return true;
        };
        p.withdrawn.remove(id);
        if held.contains(id) {
            tracing::info!(vf = %id, "VF allocated while being removed: kept, pending removal");
            return false;
        }
        if let Err(e) = p.node.unserve(id) {
            tracing::warn!(vf = %id, error = %e, "VF not removed cleanly");
        }
        p.state.vfs.remove(id);
        inner.macs.forget(id);
        true
    }

    /// Stops `pool` unless one of its VFs was allocated meanwhile. `removed`: the pool left
    /// the spec (its VFs' MACs are forgotten; a rebuild keeps them).
    fn stop(&self, inner: &mut Inner, pool: &str, held: &BTreeSet<String>, removed: bool) -> bool {
        let Some(p) = inner.pools.get_mut(pool) else {
            return true;
        };
        if p.state.vfs.keys().any(|id| held.contains(id)) {
            p.withdrawn.clear();
            tracing::info!(pool, "a VF was allocated while the pool was stopping: kept");
            return false;
        }
        let Some(p) = inner.pools.remove(pool) else {
            return true;
        };
        p.node.shutdown();
        if removed {
            // Its netdev VFs' TAPs go too (a rebuild keeps them for the new node to find).
            p.node.destroy_netdevs();
            for id in p.state.vfs.keys() {
                inner.macs.forget(id);
            }
        }
        tracing::info!(pool, vfs = p.state.vfs.len(), "pool stopped");
        true
    }

    fn start(&self, inner: &mut Inner, want: &DesiredPool, slots: &[(String, u8)], all: &Desired) {
        let b = &want.build;
        let mut pfs = Vec::new();
        for (pf, _) in slots {
            let n = want.vfs_on(pf);
            let vfs = (0..n)
                .map(|i| {
                    let mac = inner.macs.assign(&self.run_dir, pf, i, b.model);
                    vf_config(i, mac, &want.settings)
                })
                .collect();
            pfs.push(PfConfig {
                name: pf.clone(),
                model: b.model,
                vfs,
                resource_name: want.resource.clone(),
                queue_pairs: b.queue_pairs,
                socket_owner: b.socket_owner,
                device_type: b.device_type,
            });
        }
        let config = AgentConfig {
            node_name: self.node_name.clone(),
            run_dir: self.run_dir.clone(),
            pfs,
            dataplane: b.dataplane.clone(),
            uplink: b.uplink.clone(),
            allow_unsealed_memory: self.allow_unsealed_memory,
        };
        // Owners may need to traverse the run dir for this pool's sockets or another's.
        let shared = all.pools.values().any(|p| p.build.socket_owner.is_some())
            || inner
                .pools
                .values()
                .any(|p| p.state.build.socket_owner.is_some());
        let layout = Layout {
            capacity: slots.iter().map(|(_, c)| *c).collect(),
            shared_run_dir: shared,
        };
        match Node::start_layout(&config, &layout) {
            Ok(node) => {
                let vfs = config
                    .vfs()
                    .map(|(pf, vf)| {
                        (
                            naming::vf_id(&pf.name, vf.index),
                            RunningVf {
                                pf: pf.name.clone(),
                                index: vf.index,
                                settings: want.settings,
                                resource: want.resource.clone(),
                            },
                        )
                    })
                    .collect::<BTreeMap<_, _>>();
                tracing::info!(
                    pool = %want.name,
                    generation = want.generation,
                    model = %b.model,
                    pfs = slots.len(),
                    vfs = vfs.len(),
                    "pool started"
                );
                inner.pools.insert(
                    want.name.clone(),
                    PoolRun {
                        node,
                        state: RunningPool {
                            generation: want.generation,
                            build: b.clone(),
                            slots: slots.to_vec(),
                            vfs,
                        },
                        withdrawn: BTreeSet::new(),
                    },
                );
            }
            Err(e) => {
                let msg = format!(
                    "cannot start the pool's node: {}; fix the pool's spec (or the node) and the agent retries",
                    error_chain(&e)
                );
                tracing::error!(pool = %want.name, error = %msg, "pool not started");
                inner.failed.insert(want.name.clone(), (want.clone(), msg));
            }
        }
    }

    fn add(&self, inner: &mut Inner, want: &DesiredPool, pf: &str, index: u8) -> bool {
        let Some(model) = inner.pools.get(&want.name).map(|p| p.state.build.model) else {
            return true;
        };
        let id = naming::vf_id(pf, index);
        let mac = inner.macs.assign(&self.run_dir, pf, index, model);
        let Some(p) = inner.pools.get_mut(&want.name) else {
            return true;
        };
        match p.node.serve(pf, &vf_config(index, mac, &want.settings)) {
            Ok(()) => {
                p.state.vfs.insert(
                    id.clone(),
                    RunningVf {
                        pf: pf.to_owned(),
                        index,
                        settings: want.settings,
                        resource: want.resource.clone(),
                    },
                );
                inner.errors.remove(&id);
                true
            }
            Err(e) => {
                let msg = format!("cannot serve VF {id}: {}", error_chain(&e));
                if inner.errors.get(&id) != Some(&msg) {
                    tracing::warn!(pool = %want.name, error = %msg, "VF not served; retrying");
                    inner.errors.insert(id, msg);
                }
                false
            }
        }
    }

    fn configure(
        &self,
        inner: &mut Inner,
        pool: &str,
        id: &str,
        settings: &Settings,
        resource: &str,
    ) -> bool {
        let Some(p) = inner.pools.get_mut(pool) else {
            return true;
        };
        let Some(vf) = p.state.vfs.get_mut(id) else {
            return true;
        };
        let Some(mac) = p.node.mac(id) else {
            return true;
        };
        match p.node.configure(id, &vf_config(vf.index, mac, settings)) {
            Ok(()) => {
                if vf.settings != *settings {
                    tracing::info!(vf = %id, ?settings, "VF settings applied");
                }
                vf.settings = *settings;
                vf.resource = resource.to_owned();
                true
            }
            Err(e) => {
                tracing::warn!(vf = %id, error = %e, "VF settings not applied");
                false
            }
        }
    }

    /// What runs, for the NodeState status.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let mut out = Snapshot::default();
        for (name, p) in &inner.pools {
            let status = p.node.status();
            let vfs = status
                .vfs
                .into_iter()
                .filter_map(|v| {
                    let run = p.state.vfs.get(&v.id)?;
                    Some(VfSnapshot {
                        healthy: p.node.healthy(&v.id),
                        resource: run.resource.clone(),
                        socket: v.socket.display().to_string(),
                        id: v.id,
                        pf: v.pf,
                        mac: v.mac,
                    })
                })
                .collect();
            out.pools.insert(
                name.clone(),
                PoolSnapshot {
                    generation: p.state.generation,
                    vfs,
                    wait: inner.waits.get(name).cloned().unwrap_or_default(),
                },
            );
        }
        out.problems
            .extend(inner.failed.iter().map(|(name, (_, msg))| Problem {
                pool: Some(name.clone()),
                message: msg.clone(),
            }));
        out.problems
            .extend(inner.errors.values().map(|msg| Problem {
                pool: None,
                message: msg.clone(),
            }));
        out
    }

    /// The resource names the running pools advertise (the device plugin serves these).
    pub fn resources(&self, desired: &Desired) -> BTreeSet<String> {
        let inner = self.lock();
        let mut out = BTreeSet::new();
        for (name, p) in &inner.pools {
            out.extend(p.state.vfs.values().map(|v| v.resource.clone()));
            if let Some(want) = desired.pools.get(name) {
                out.insert(want.resource.clone());
            }
        }
        out
    }

    /// Every served VF, for `list` (pools in name order; the first pool's uplink).
    pub fn agent_status(&self) -> AgentStatus {
        let nodes: Vec<Arc<Node>> = self.lock().pools.values().map(|p| p.node.clone()).collect();
        let mut out = AgentStatus::default();
        for n in nodes {
            let st = n.status();
            out.vfs.extend(st.vfs);
            if out.uplink.is_none() {
                out.uplink = st.uplink;
            }
        }
        out
    }

    /// Serves one `emu-sriov-cni` request on whichever pool's node has the VF (a claim) or
    /// holds the (container, ifName) (release, check).
    pub fn netdev_request(
        &self,
        req: &crate::netdev::proto::NetdevRequest,
    ) -> Result<crate::netdev::proto::NetdevAnswer, crate::netdev::NetdevError> {
        let nodes: Vec<Arc<Node>> = self.lock().pools.values().map(|p| p.node.clone()).collect();
        let mut refused = None;
        let mut collected = Vec::new();
        for n in nodes {
            match n.netdev_request(req) {
                Ok(a) if !a.vf.is_empty() => return Ok(a),
                Ok(a) if !a.collected.is_empty() => collected.extend(a.collected),
                Ok(_) => {}
                Err(crate::netdev::NetdevError::UnknownVf(v)) => {
                    refused = Some(crate::netdev::NetdevError::UnknownVf(v))
                }
                Err(e) => return Err(e),
            }
        }
        match (req.op, refused, &req.vf) {
            (crate::netdev::proto::NetdevOp::Claim, _, Some(vf)) => {
                Err(crate::netdev::NetdevError::UnknownVf(vf.clone()))
            }
            _ => Ok(crate::netdev::proto::NetdevAnswer {
                collected,
                ..Default::default()
            }),
        }
    }

    /// Every served VF's metrics; the busiest dataplane's busy ratio.
    pub fn metrics_sample(&self) -> Sample {
        let nodes: Vec<Arc<Node>> = self.lock().pools.values().map(|p| p.node.clone()).collect();
        let mut out = Sample::default();
        for n in nodes {
            let s = Sample::collect(&n);
            out.vfs.extend(s.vfs);
            out.dataplane_busy_ratio = out.dataplane_busy_ratio.max(s.dataplane_busy_ratio);
        }
        out
    }

    /// Stops every pool (sockets removed, threads joined).
    pub fn shutdown(&self) {
        let pools = std::mem::take(&mut self.lock().pools);
        for (name, p) in pools {
            let summary = p.node.shutdown();
            tracing::info!(pool = %name, vfs = summary.vfs.len(), "pool stopped");
        }
    }
}

fn running_view(inner: &Inner) -> BTreeMap<String, RunningPool> {
    inner
        .pools
        .iter()
        .map(|(n, p)| (n.clone(), p.state.clone()))
        .collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The device plugin's view of the pools.
pub struct PoolInventory(pub Arc<Pools>);

impl VfInventory for PoolInventory {
    fn devices(&self) -> Vec<VfDevice> {
        let inner = self.0.lock();
        let mut out = Vec::new();
        for (name, p) in &inner.pools {
            let held_back = inner.waits.get(name).map(|w| &w.held_back);
            for v in p.node.status().vfs {
                let Some(run) = p.state.vfs.get(&v.id) else {
                    continue;
                };
                if p.withdrawn.contains(&v.id) {
                    continue;
                }
                let back = held_back.is_some_and(|h| h.contains(&v.id));
                out.push(VfDevice {
                    healthy: p.node.healthy(&v.id) && !back,
                    resource: run.resource.clone(),
                    core: None,
                    id: v.id,
                    pf: v.pf,
                    model: v.model,
                    vendor_id: v.vendor_id,
                    device_id: v.device_id,
                    mac: v.mac,
                    socket: v.socket,
                });
            }
        }
        out
    }

    fn scrub(&self, id: &str) -> Result<(), String> {
        let node = {
            let inner = self.0.lock();
            inner
                .pools
                .values()
                .find(|p| p.state.vfs.contains_key(id))
                .map(|p| p.node.clone())
        };
        match node {
            Some(n) => n.scrub(id).map_err(|e| e.to_string()),
            None => Err(format!("no VF {id} runs on this node")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::desired::{desired, tests_support::*, Host};
    use emu_sriov_crds::{NodeStateSpec, VfModel};

    fn want(host: &Host, pools: Vec<emu_sriov_crds::NodePool>) -> Desired {
        let d = desired(&NodeStateSpec { pools }, Some(1), host);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        d
    }

    fn macs(p: &Pools) -> Vec<(String, String, String)> {
        p.agent_status()
            .vfs
            .into_iter()
            .map(|v| (v.id, v.mac, v.model))
            .collect()
    }

    #[test]
    fn start_grow_rebuild_and_remove_without_a_plugin() {
        let run = std::env::temp_dir().join(format!("emu-pools-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).unwrap();
        let host = Host {
            run_dir: run.clone(),
            ..host()
        };
        let pools = Pools::new("n", run.clone(), false, MacBook::new("n"));

        let a = pools.apply(
            &want(&host, vec![pool("a", VfModel::Igbvf, &[("igb0", 2)])]),
            None,
        );
        assert!(a.changed && !a.again);
        let two = macs(&pools);
        assert_eq!(two.len(), 2);
        let snap = pools.snapshot();
        assert_eq!(snap.pools["a"].generation, 1);
        assert!(snap.pools["a"].vfs.iter().all(|v| v.healthy));

        // Grow: the first two keep their MACs (and run on).
        pools.apply(
            &want(&host, vec![pool("a", VfModel::Igbvf, &[("igb0", 3)])]),
            None,
        );
        let three = macs(&pools);
        assert_eq!(&three[..2], &two[..]);
        assert_eq!(three.len(), 3);
        // Nothing to do: nothing changes.
        let again = pools.apply(
            &want(&host, vec![pool("a", VfModel::Igbvf, &[("igb0", 3)])]),
            None,
        );
        assert_eq!(again, Applied::default());

        // A new model rebuilds the pool (nothing is held without a plugin).
        let mut avf = pool("a", VfModel::Iavf, &[("igb0", 3)]);
        avf.queue_pairs = 2;
        avf.generation = 2;
        pools.apply(&want(&host, vec![avf]), None);
        let rebuilt = macs(&pools);
        assert!(rebuilt.iter().all(|(_, _, m)| m == "iavf"), "{rebuilt:?}");
        assert_eq!(pools.snapshot().pools["a"].generation, 2);
        // The inventory offers them to the device plugin.
        let inv = PoolInventory(Arc::new(pools));
        assert_eq!(inv.devices().len(), 3);
        assert!(inv.scrub("igb0-vf0").is_ok());
        assert!(inv.scrub("nope").is_err());
        let pools = &inv.0;

        // The pool leaves the spec: its VFs go, and their MACs with them.
        pools.apply(&want(&host, vec![]), None);
        assert!(macs(pools).is_empty());
        assert!(pools.snapshot().pools.is_empty());
        let st = std::fs::read_to_string(crate::state::state_path(&run)).unwrap();
        assert!(!st.contains("igb0-vf0"), "{st}");
        pools.shutdown();
        let _ = std::fs::remove_dir_all(&run);
    }
}
