//! The pure core of cluster mode: given what runs, which VFs pods hold and what the spec
//! asks for, what to do now and what has to wait.
//!
//! Rules (ARCHITECTURE.md decision 8, "reconfiguration never needs a drain"):
//!
//! | change | VF free | VF held by a pod |
//! |---|---|---|
//! | more VFs on a PF (within its slots) | served at once | — |
//! | fewer VFs, PF or pool removed | removed at once | kept, `pendingRemoval`, goes when released |
//! | spoofChk, maxTxRateMbps | at once | at once (a real PF changes them live too) |
//! | vlan, trust, mtu, resourceName | at once | when released |
//! | model, queuePairs, dataplane, uplink, socketOwner, a new PF, more VFs than slots | pool rebuilt at once if none of its VFs is held | rebuild when all are released |
//!
//! A VF whose change waits is *held back*: still running for its pod, but advertised
//! Unhealthy so that the kubelet does not hand it to a new pod before the change is made. A
//! pool waiting for a rebuild holds back all of its VFs for the same reason (the rebuild would
//! take them away again). Pools the spec keeps as they run ([`Desired::keeps`]) are left alone.

use std::collections::{BTreeMap, BTreeSet};

use super::desired::{Build, Desired, DesiredPool, Settings};
use crate::naming;

/// One VF as it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningVf {
    pub pf: String,
    pub index: u8,
    pub settings: Settings,
    pub resource: String,
}

/// One pool as it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPool {
    /// The pool generation whose spec is fully applied.
    pub generation: i64,
    pub build: Build,
    /// (PF, slots), in build order.
    pub slots: Vec<(String, u8)>,
    /// Served VFs by id.
    pub vfs: BTreeMap<String, RunningVf>,
}

impl RunningPool {
    fn slots_of(&self, pf: &str) -> Option<u8> {
        self.slots.iter().find(|(n, _)| n == pf).map(|(_, c)| *c)
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Build the pool's node with these slots and serve every VF the spec asks for.
    Start {
        pool: String,
        slots: Vec<(String, u8)>,
    },
    /// Stop the pool's node: every VF of it goes (none is held).
    Stop { pool: String },
    /// Serve slot `index` of `pf` with the pool's settings.
    Add { pool: String, pf: String, index: u8 },
    /// Remove a free VF.
    Remove { pool: String, id: String },
    /// Apply `settings` (and advertise under `resource`) to a served VF.
    Configure {
        pool: String,
        id: String,
        settings: Settings,
        resource: String,
    },
}

/// What waits in one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolWait {
    /// Human-readable, one entry per kind of wait.
    pub pending: Vec<String>,
    /// VFs advertised Unhealthy until their change is made.
    pub held_back: BTreeSet<String>,
    /// VFs the spec no longer has, kept for their pods.
    pub pending_removal: BTreeSet<String>,
}

/// The outcome of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In order: removals first (they may free the way for a rebuild), then the rest.
    pub actions: Vec<Action>,
    /// Every pool that runs or is asked for, and what of it waits.
    pub waits: BTreeMap<String, PoolWait>,
}

impl Plan {
    /// Nothing waits anywhere.
    pub fn settled(&self) -> bool {
        self.waits.values().all(|w| w.pending.is_empty())
    }
}

/// What to do to get from `running` to `desired`, given the VFs pods `held`.
/// `removals_allowed`: whether the agent knows which VFs pods hold (the device plugin's
/// first pod-resources answer is in, or there is no device plugin); until then nothing is
/// removed or rebuilt.
pub fn plan(
    running: &BTreeMap<String, RunningPool>,
    desired: &Desired,
    held: &BTreeSet<String>,
    removals_allowed: bool,
) -> Plan {
    let mut out = Plan::default();
    let mut later = Vec::new();
    for (name, run) in running {
        if desired.keeps(name) {
            out.waits.insert(name.clone(), PoolWait::default());
            continue;
        }
        let wait = match desired.pools.get(name) {
            None => removed_pool(name, run, held, removals_allowed, &mut out.actions),
            Some(want) => changed_pool(
                name,
                run,
                want,
                held,
                removals_allowed,
                &mut out.actions,
                &mut later,
            ),
        };
        out.waits.insert(name.clone(), wait);
    }
    for (name, want) in &desired.pools {
        if !running.contains_key(name) {
            later.push(Action::Start {
                pool: name.clone(),
                slots: want.slots(),
            });
            out.waits.insert(name.clone(), PoolWait::default());
        }
    }
    out.actions.extend(later);
    out
}

const UNKNOWN_ALLOCATIONS: &str =
    "waiting for the kubelet's pod-resources API to tell which VFs pods hold before removing any";

/// The pool left the spec: free VFs go, held ones wait; the node stops once empty.
fn removed_pool(
    name: &str,
    run: &RunningPool,
    held: &BTreeSet<String>,
    removals_allowed: bool,
    actions: &mut Vec<Action>,
) -> PoolWait {
    let mut wait = PoolWait::default();
    if !removals_allowed {
        wait.pending
            .push(format!("removed from the spec; {UNKNOWN_ALLOCATIONS}"));
        wait.held_back = run.vfs.keys().cloned().collect();
        return wait;
    }
    let kept: BTreeSet<String> = run
        .vfs
        .keys()
        .filter(|id| held.contains(*id))
        .cloned()
        .collect();
    if kept.is_empty() {
        actions.push(Action::Stop { pool: name.into() });
        return wait;
    }
    for id in run.vfs.keys().filter(|id| !kept.contains(*id)) {
        actions.push(Action::Remove {
            pool: name.into(),
            id: id.clone(),
        });
    }
    wait.pending.push(format!(
        "removed from the spec; {} allocated VF(s) go when released: {}",
        kept.len(),
        join(&kept)
    ));
    wait.held_back = kept.clone();
    wait.pending_removal = kept;
    wait
}

/// Why `run` cannot become `want` without a rebuild; empty if it can.
pub fn rebuild_reasons(run: &RunningPool, want: &DesiredPool) -> Vec<String> {
    let (a, b) = (&run.build, &want.build);
    let mut why = Vec::new();
    if a.model != b.model {
        why.push(format!(
            "model {} → {}",
            a.model.vf_model(),
            b.model.vf_model()
        ));
    }
    if a.queue_pairs != b.queue_pairs {
        why.push(format!("queuePairs {} → {}", a.queue_pairs, b.queue_pairs));
    }
    if a.dataplane != b.dataplane {
        why.push("dataplane".into());
    }
    if a.uplink != b.uplink {
        why.push("uplink".into());
    }
    if a.socket_owner != b.socket_owner {
        why.push("socketOwner".into());
    }
    for (pf, n) in &want.pfs {
        match run.slots_of(pf) {
            _ if *n == 0 => {}
            None => why.push(format!("new PF {pf}")),
            Some(cap) if cap < *n => why.push(format!("{pf} needs {n} VFs, built for {cap}")),
            Some(_) => {}
        }
    }
    why
}

fn changed_pool(
    name: &str,
    run: &RunningPool,
    want: &DesiredPool,
    held: &BTreeSet<String>,
    removals_allowed: bool,
    actions: &mut Vec<Action>,
    later: &mut Vec<Action>,
) -> PoolWait {
    let mut wait = PoolWait::default();
    let rebuild = rebuild_reasons(run, want);
    if !rebuild.is_empty() {
        let in_use: BTreeSet<String> = run
            .vfs
            .keys()
            .filter(|id| held.contains(*id))
            .cloned()
            .collect();
        if in_use.is_empty() && removals_allowed {
            actions.push(Action::Stop { pool: name.into() });
            later.push(Action::Start {
                pool: name.into(),
                slots: want.slots(),
            });
            return wait;
        }
        let why = if removals_allowed {
            format!(
                "{} allocated VF(s) must be released first: {}",
                in_use.len(),
                join(&in_use)
            )
        } else {
            UNKNOWN_ALLOCATIONS.to_owned()
        };
        wait.pending.push(format!(
            "rebuild for generation {} ({}) waits: {why}",
            want.generation,
            rebuild.join(", ")
        ));
        wait.held_back = run.vfs.keys().cloned().collect();
        // Shrinking still happens now; growing and settings wait for the rebuild.
        shrink(name, run, want, held, removals_allowed, actions, &mut wait);
        return wait;
    }

    shrink(name, run, want, held, removals_allowed, actions, &mut wait);
    let mut on_release: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (pf, cap) in &run.slots {
        let n = want.vfs_on(pf).min(*cap);
        for index in 0..n {
            let id = naming::vf_id(pf, index);
            let Some(vf) = run.vfs.get(&id) else {
                later.push(Action::Add {
                    pool: name.into(),
                    pf: pf.clone(),
                    index,
                });
                continue;
            };
            if vf.settings == want.settings && vf.resource == want.resource {
                continue;
            }
            if !held.contains(&id) {
                later.push(Action::Configure {
                    pool: name.into(),
                    id,
                    settings: want.settings,
                    resource: want.resource.clone(),
                });
                continue;
            }
            let live = want.settings.live_part(&vf.settings);
            if live != vf.settings {
                later.push(Action::Configure {
                    pool: name.into(),
                    id: id.clone(),
                    settings: live,
                    resource: vf.resource.clone(),
                });
            }
            let mut fields = want.settings.on_release_diff(&vf.settings);
            if vf.resource != want.resource {
                fields.push("resourceName");
            }
            if !fields.is_empty() {
                on_release
                    .entry(fields.join("/"))
                    .or_default()
                    .insert(id.clone());
                wait.held_back.insert(id);
            }
        }
    }
    for (fields, ids) in on_release {
        wait.pending.push(format!(
            "{fields} of {} allocated VF(s) change when released: {}",
            ids.len(),
            join(&ids)
        ));
    }
    wait
}

/// VFs beyond what the spec asks for: free ones go, held ones wait.
fn shrink(
    name: &str,
    run: &RunningPool,
    want: &DesiredPool,
    held: &BTreeSet<String>,
    removals_allowed: bool,
    actions: &mut Vec<Action>,
    wait: &mut PoolWait,
) {
    let extra: BTreeSet<String> = run
        .vfs
        .iter()
        .filter(|(_, vf)| vf.index >= want.vfs_on(&vf.pf))
        .map(|(id, _)| id.clone())
        .collect();
    if extra.is_empty() {
        return;
    }
    if !removals_allowed {
        wait.pending.push(format!(
            "{} VF(s) to remove ({}); {UNKNOWN_ALLOCATIONS}",
            extra.len(),
            join(&extra)
        ));
        wait.held_back.extend(extra);
        return;
    }
    let kept: BTreeSet<String> = extra
        .iter()
        .filter(|id| held.contains(*id))
        .cloned()
        .collect();
    for id in extra.difference(&kept) {
        actions.push(Action::Remove {
            pool: name.into(),
            id: id.clone(),
        });
    }
    if !kept.is_empty() {
        wait.pending.push(format!(
            "{} allocated VF(s) pending removal: {}",
            kept.len(),
            join(&kept)
        ));
        wait.held_back.extend(kept.iter().cloned());
        wait.pending_removal = kept;
    }
}

fn join(ids: &BTreeSet<String>) -> String {
    const SHOWN: usize = 8;
    let mut s: Vec<&str> = ids.iter().take(SHOWN).map(String::as_str).collect();
    let more = ids.len().saturating_sub(SHOWN);
    let tail = (more > 0).then(|| format!("and {more} more"));
    if let Some(t) = &tail {
        s.push(t);
    }
    s.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::desired::{desired, tests_support::*};
    use crate::config::{DataplaneConfig, DataplaneMode, NicModel};
    use emu_sriov_crds::{NodeStateSpec, VfModel};

    fn build(model: NicModel) -> Build {
        Build {
            model,
            queue_pairs: match model {
                NicModel::Igb => 1,
                NicModel::Avf => 1,
            },
            device_type: crate::config::DeviceType::VfioUser,
            dataplane: DataplaneConfig {
                mode: DataplaneMode::Adaptive,
                cores: Vec::new(),
            },
            uplink: None,
            socket_owner: None,
        }
    }

    /// A pool running `pfs` (name, served VFs) with 7 igb slots each and default settings.
    fn running(pfs: &[(&str, u8)]) -> RunningPool {
        let mut vfs = BTreeMap::new();
        for (pf, n) in pfs {
            for i in 0..*n {
                vfs.insert(
                    naming::vf_id(pf, i),
                    RunningVf {
                        pf: (*pf).into(),
                        index: i,
                        settings: Settings::default(),
                        resource: emu_sriov_crds::DEFAULT_RESOURCE_NAME.into(),
                    },
                );
            }
        }
        RunningPool {
            generation: 1,
            build: build(NicModel::Igb),
            slots: pfs.iter().map(|(pf, _)| ((*pf).into(), 7)).collect(),
            vfs,
        }
    }

    fn want(pools: Vec<emu_sriov_crds::NodePool>) -> Desired {
        let d = desired(&NodeStateSpec { pools }, Some(2), &host());
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        d
    }

    fn run_map(pools: &[(&str, RunningPool)]) -> BTreeMap<String, RunningPool> {
        pools
            .iter()
            .map(|(n, p)| ((*n).to_string(), p.clone()))
            .collect()
    }

    fn held(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn add(pool: &str, pf: &str, index: u8) -> Action {
        Action::Add {
            pool: pool.into(),
            pf: pf.into(),
            index,
        }
    }

    fn remove(pool: &str, id: &str) -> Action {
        Action::Remove {
            pool: pool.into(),
            id: id.into(),
        }
    }

    #[test]
    fn a_new_pool_starts_with_its_slots() {
        let d = want(vec![pool("a", VfModel::Igbvf, &[("igb0", 2)])]);
        let p = plan(&BTreeMap::new(), &d, &held(&[]), false);
        assert_eq!(
            p.actions,
            [Action::Start {
                pool: "a".into(),
                slots: vec![("igb0".into(), 7)]
            }]
        );
        assert!(p.settled());
    }

    #[test]
    fn nothing_to_do_when_it_runs_as_asked() {
        let d = want(vec![pool("a", VfModel::Igbvf, &[("igb0", 2)])]);
        let r = run_map(&[("a", running(&[("igb0", 2)]))]);
        let p = plan(&r, &d, &held(&["igb0-vf0"]), true);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.settled());
    }

    #[test]
    fn growing_adds_only_the_new_vfs() {
        let d = want(vec![pool("a", VfModel::Igbvf, &[("igb0", 4)])]);
        let r = run_map(&[("a", running(&[("igb0", 2)]))]);
        let p = plan(&r, &d, &held(&["igb0-vf0"]), true);
        assert_eq!(p.actions, [add("a", "igb0", 2), add("a", "igb0", 3)]);
        assert!(p.settled());
    }

    #[test]
    fn shrinking_removes_free_vfs_and_keeps_held_ones_pending() {
        let d = want(vec![pool("a", VfModel::Igbvf, &[("igb0", 1)])]);
        let r = run_map(&[("a", running(&[("igb0", 4)]))]);
        let p = plan(&r, &d, &held(&["igb0-vf2", "igb0-vf0"]), true);
        assert_eq!(
            p.actions,
            [remove("a", "igb0-vf1"), remove("a", "igb0-vf3")]
        );
        let w = &p.waits["a"];
        assert_eq!(w.pending_removal, held(&["igb0-vf2"]));
        assert_eq!(w.held_back, held(&["igb0-vf2"]));
        assert_eq!(w.pending, ["1 allocated VF(s) pending removal: igb0-vf2"]);
        // Released: it goes.
        let mut r2 = r.clone();
        r2.get_mut("a")
            .unwrap()
            .vfs
            .retain(|id, _| id == "igb0-vf0" || id == "igb0-vf2");
        let p = plan(&r2, &d, &held(&["igb0-vf0"]), true);
        assert_eq!(p.actions, [remove("a", "igb0-vf2")]);
        assert!(p.settled());
    }

    #[test]
    fn growing_back_over_a_pending_vf_keeps_it() {
        // vf2 pending removal (held), then the spec grows back to 4.
        let d = want(vec![pool("a", VfModel::Igbvf, &[("igb0", 4)])]);
        let mut r = running(&[("igb0", 4)]);
        r.vfs.remove("igb0-vf1");
        r.vfs.remove("igb0-vf3");
        let p = plan(&run_map(&[("a", r)]), &d, &held(&["igb0-vf2"]), true);
        assert_eq!(p.actions, [add("a", "igb0", 1), add("a", "igb0", 3)]);
        assert!(p.settled());
    }

    #[test]
    fn nothing_is_removed_before_allocations_are_known() {
        let d = want(vec![pool("a", VfModel::Igbvf, &[("igb0", 1)])]);
        let r = run_map(&[
            ("a", running(&[("igb0", 3)])),
            ("gone", running(&[("igb9", 1)])),
        ]);
        let p = plan(&r, &d, &held(&[]), false);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(
            p.waits["a"].pending[0].contains("pod-resources"),
            "{:?}",
            p.waits
        );
        assert_eq!(p.waits["a"].held_back, held(&["igb0-vf1", "igb0-vf2"]));
        assert!(p.waits["gone"].pending[0].contains("removed from the spec"));
    }

    #[test]
    fn a_removed_pool_stops_when_free_and_waits_when_held() {
        let d = want(vec![]);
        let r = run_map(&[("a", running(&[("igb0", 2)]))]);
        let p = plan(&r, &d, &held(&[]), true);
        assert_eq!(p.actions, [Action::Stop { pool: "a".into() }]);
        let p = plan(&r, &d, &held(&["igb0-vf1"]), true);
        assert_eq!(p.actions, [remove("a", "igb0-vf0")]);
        assert_eq!(p.waits["a"].pending_removal, held(&["igb0-vf1"]));
        assert!(!p.settled());
    }

    #[test]
    fn settings_apply_to_free_vfs_now_and_to_held_ones_partly() {
        let mut sp = pool("a", VfModel::Igbvf, &[("igb0", 2)]);
        sp.vf.vlan = 10;
        sp.vf.spoof_chk = false;
        sp.vf.max_tx_rate_mbps = 50;
        let d = want(vec![sp]);
        let target = d.pools["a"].settings;
        let r = run_map(&[("a", running(&[("igb0", 2)]))]);
        let p = plan(&r, &d, &held(&["igb0-vf1"]), true);
        let res = emu_sriov_crds::DEFAULT_RESOURCE_NAME.to_string();
        assert_eq!(
            p.actions,
            [
                Action::Configure {
                    pool: "a".into(),
                    id: "igb0-vf0".into(),
                    settings: target,
                    resource: res.clone(),
                },
                Action::Configure {
                    pool: "a".into(),
                    id: "igb0-vf1".into(),
                    settings: Settings {
                        spoofchk: false,
                        rate_mbps: Some(50),
                        ..Settings::default()
                    },
                    resource: res,
                },
            ]
        );
        assert_eq!(
            p.waits["a"].pending,
            ["vlan of 1 allocated VF(s) change when released: igb0-vf1"]
        );
        assert_eq!(p.waits["a"].held_back, held(&["igb0-vf1"]));
        assert!(p.waits["a"].pending_removal.is_empty());
    }

    #[test]
    fn a_new_resource_name_waits_for_held_vfs() {
        let mut sp = pool("a", VfModel::Igbvf, &[("igb0", 1)]);
        sp.resource_name = "emu.sriov/fast".into();
        let d = want(vec![sp]);
        let r = run_map(&[("a", running(&[("igb0", 1)]))]);
        let p = plan(&r, &d, &held(&["igb0-vf0"]), true);
        assert!(p.actions.is_empty());
        assert!(
            p.waits["a"].pending[0].starts_with("resourceName of 1"),
            "{:?}",
            p.waits
        );
    }

    #[test]
    fn structural_changes_rebuild_when_free_and_wait_when_held() {
        let mut sp = pool("a", VfModel::Iavf, &[("igb0", 1)]);
        sp.queue_pairs = 4;
        let d = want(vec![sp]);
        let r = run_map(&[("a", running(&[("igb0", 3)]))]);
        let p = plan(&r, &d, &held(&[]), true);
        assert_eq!(
            p.actions,
            [
                Action::Stop { pool: "a".into() },
                Action::Start {
                    pool: "a".into(),
                    slots: vec![("igb0".into(), 8)]
                }
            ]
        );
        let p = plan(&r, &d, &held(&["igb0-vf0", "igb0-vf2"]), true);
        // vf1 is free and beyond the new count: removed now; vf2 waits for removal.
        assert_eq!(p.actions, [remove("a", "igb0-vf1")]);
        let w = &p.waits["a"];
        assert!(
            w.pending[0].starts_with("rebuild for generation 1 (model igbvf → iavf, queuePairs 1 → 4) waits: 2 allocated VF(s) must be released first: igb0-vf0, igb0-vf2"),
            "{:?}",
            w.pending
        );
        assert_eq!(w.held_back, held(&["igb0-vf0", "igb0-vf1", "igb0-vf2"]));
        assert_eq!(w.pending_removal, held(&["igb0-vf2"]));
    }

    #[test]
    fn new_pfs_and_slot_overflow_are_structural() {
        let d = want(vec![pool(
            "a",
            VfModel::Igbvf,
            &[("igb0", 2), ("igb1", 1), ("igb2", 0)],
        )]);
        let r = running(&[("igb0", 2)]);
        assert_eq!(rebuild_reasons(&r, &d.pools["a"]), ["new PF igb1"]);
        let mut small = r.clone();
        small.slots = vec![("igb0".into(), 2)];
        let d = want(vec![pool("a", VfModel::Igbvf, &[("igb0", 3)])]);
        assert_eq!(
            rebuild_reasons(&small, &d.pools["a"]),
            ["igb0 needs 3 VFs, built for 2"]
        );
        // A PF dropped from the spec is shrinking, not a rebuild.
        let d = want(vec![pool("a", VfModel::Igbvf, &[("igb1", 0)])]);
        let r = running(&[("igb0", 2)]);
        assert!(rebuild_reasons(&r, &d.pools["a"]).is_empty());
        let p = plan(&run_map(&[("a", r)]), &d, &held(&[]), true);
        assert_eq!(
            p.actions,
            [remove("a", "igb0-vf0"), remove("a", "igb0-vf1")]
        );
    }

    #[test]
    fn invalid_or_unreadable_pools_are_left_alone() {
        let mut d = want(vec![]);
        d.invalid.insert("a".into(), 3);
        let r = run_map(&[
            ("a", running(&[("igb0", 2)])),
            ("b", running(&[("igb1", 1)])),
        ]);
        let p = plan(&r, &d, &held(&[]), true);
        assert_eq!(p.actions, [Action::Stop { pool: "b".into() }]);
        let u = Desired::unreadable(Some(3), "bad".into());
        assert!(plan(&r, &u, &held(&[]), true).actions.is_empty());
    }

    #[test]
    fn long_id_lists_are_cut() {
        let ids: BTreeSet<String> = (0..10).map(|i| format!("v{i}")).collect();
        assert_eq!(join(&ids), "v0, v1, v2, v3, v4, v5, v6, v7, and 2 more");
    }
}
