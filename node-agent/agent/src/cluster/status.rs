//! The NodeState status the agent reports, computed from what it runs; pure.
//!
//! The agent writes it (server-side apply of the status subresource) only when it differs
//! from what the object already carries: a resync that changes nothing writes nothing. A
//! condition keeps its `lastTransitionTime` while its status stays the same.

use std::collections::{BTreeMap, BTreeSet};

use emu_sriov_crds::conditions::{DEGRADED, PENDING, READY};
use emu_sriov_crds::{NodeStateStatus, PoolRunStatus, SyncStatus, VfHealth, VfRunStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::desired::{Desired, Problem};
use super::pools::Snapshot;

/// Everything the status is made of.
pub struct Inputs<'a> {
    pub desired: &'a Desired,
    pub running: &'a Snapshot,
    /// VF ids pods hold (the device plugin's view).
    pub held: &'a BTreeSet<String>,
    /// The status the object carries now (for transition times).
    pub previous: Option<&'a NodeStateStatus>,
    /// Now, whole seconds (what the API server keeps).
    pub now: Time,
}

/// The status to report.
pub fn status(i: &Inputs<'_>) -> NodeStateStatus {
    let mut vfs = Vec::new();
    let mut pools = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    // Every pool of the spec, and every pool still running.
    let mut names: BTreeMap<&str, Option<i64>> = BTreeMap::new();
    for (n, p) in &i.desired.pools {
        names.insert(n, Some(p.generation));
    }
    for n in i.desired.invalid.keys() {
        names.insert(n, None);
    }
    for n in i.running.pools.keys() {
        names.entry(n).or_insert(None);
    }
    for name in names.keys() {
        let run = i.running.pools.get(*name);
        let mut allocated = 0;
        let mut count = 0;
        if let Some(r) = run {
            for v in &r.vfs {
                let is_held = i.held.contains(&v.id);
                allocated += u32::from(is_held);
                count += 1;
                vfs.push(VfRunStatus {
                    id: v.id.clone(),
                    pool: (*name).to_owned(),
                    pf: v.pf.clone(),
                    mac: v.mac.clone(),
                    socket: v.socket.clone(),
                    resource_name: v.resource.clone(),
                    allocated: is_held,
                    health: if v.healthy {
                        VfHealth::Healthy
                    } else {
                        VfHealth::Unhealthy
                    },
                    pending_removal: r.wait.pending_removal.contains(&v.id),
                });
            }
        }
        let waits = run.map(|r| r.wait.pending.join("; ")).unwrap_or_default();
        if !waits.is_empty() {
            pending.push(format!("pool {name}: {waits}"));
        }
        pools.push(PoolRunStatus {
            name: (*name).to_owned(),
            generation: run.map_or(0, |r| r.generation),
            vfs: count,
            allocated,
            pending: (!waits.is_empty()).then_some(waits),
        });
    }
    vfs.sort_by(|a, b| a.id.cmp(&b.id));

    let mut problems: Vec<&Problem> = i
        .desired
        .problems
        .iter()
        .chain(&i.running.problems)
        .collect();
    problems.sort();
    problems.dedup();
    let degraded = (!problems.is_empty()).then(|| {
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    });
    let pending_text = (!pending.is_empty()).then(|| pending.join("; "));

    let total = u32::try_from(vfs.len()).unwrap_or(u32::MAX);
    let allocated = u32::try_from(vfs.iter().filter(|v| v.allocated).count()).unwrap_or(u32::MAX);
    let sync = match (&degraded, &pending_text) {
        (Some(_), _) => SyncStatus::Failed,
        (None, Some(_)) => SyncStatus::InProgress,
        (None, None) => SyncStatus::Succeeded,
    };
    let gen = i.desired.generation;
    let ready = match (&degraded, &pending_text) {
        (None, None) => cond(
            READY,
            true,
            "Applied",
            format!(
                "{total} VF(s) in {} pool(s) run as specified",
                i.desired.pools.len()
            ),
        ),
        (Some(_), _) => cond(
            READY,
            false,
            "Degraded",
            "part of the spec cannot be applied: see the Degraded condition".into(),
        ),
        (None, Some(_)) => cond(
            READY,
            false,
            "Pending",
            "part of the spec waits for allocated VFs: see the Pending condition".into(),
        ),
    };
    let pending_c = match &pending_text {
        Some(t) => cond(PENDING, true, "AwaitingRelease", t.clone()),
        None => cond(PENDING, false, "NothingPending", "nothing waits".into()),
    };
    let degraded_c = match &degraded {
        Some(t) => cond(DEGRADED, true, "CannotApply", t.clone()),
        None => cond(
            DEGRADED,
            false,
            "AsSpecified",
            "every pool can be applied".into(),
        ),
    };
    let conditions = [ready, pending_c, degraded_c]
        .into_iter()
        .map(|(type_, ok, reason, message)| {
            let status = if ok { "True" } else { "False" }.to_owned();
            let since = i
                .previous
                .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
                .filter(|c| c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| i.now.clone());
            Condition {
                type_: type_.to_owned(),
                status,
                reason: reason.to_owned(),
                message,
                observed_generation: gen,
                last_transition_time: since,
            }
        })
        .collect();
    NodeStateStatus {
        observed_generation: gen,
        sync_status: Some(sync),
        last_sync_error: degraded,
        vfs_total: total,
        vfs_allocated: allocated,
        pools,
        vfs,
        conditions,
    }
}

fn cond(
    type_: &'static str,
    ok: bool,
    reason: &'static str,
    message: String,
) -> (&'static str, bool, &'static str, String) {
    (type_, ok, reason, message)
}

/// Now, truncated to whole seconds.
pub fn now() -> Time {
    let t = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::desired::{desired, tests_support::*};
    use crate::cluster::plan::PoolWait;
    use crate::cluster::pools::{PoolSnapshot, VfSnapshot};
    use emu_sriov_crds::{NodeStateSpec, VfModel};

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn vf(id: &str) -> VfSnapshot {
        VfSnapshot {
            id: id.into(),
            pf: "igb0".into(),
            mac: "02:00:00:00:00:01".into(),
            socket: format!("/run/emu-sriov/vfs/{id}/vf.sock"),
            resource: "emu.sriov/vf".into(),
            healthy: true,
        }
    }

    fn snap(ids: &[&str], wait: PoolWait) -> Snapshot {
        Snapshot {
            pools: [(
                "a".to_string(),
                PoolSnapshot {
                    generation: 1,
                    vfs: ids.iter().map(|i| vf(i)).collect(),
                    wait,
                },
            )]
            .into(),
            problems: Vec::new(),
        }
    }

    fn cond_of<'a>(s: &'a NodeStateStatus, ty: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == ty).unwrap()
    }

    #[test]
    fn ready_when_everything_runs_and_stable_across_resyncs() {
        let d = desired(
            &NodeStateSpec {
                pools: vec![pool("a", VfModel::Igbvf, &[("igb0", 2)])],
            },
            Some(3),
            &host(),
        );
        let running = snap(&["igb0-vf1", "igb0-vf0"], PoolWait::default());
        let held: BTreeSet<String> = ["igb0-vf1".to_string()].into();
        let first = status(&Inputs {
            desired: &d,
            running: &running,
            held: &held,
            previous: None,
            now: t(100),
        });
        assert_eq!(first.observed_generation, Some(3));
        assert_eq!(first.sync_status, Some(SyncStatus::Succeeded));
        assert_eq!((first.vfs_total, first.vfs_allocated), (2, 1));
        assert_eq!(first.vfs[0].id, "igb0-vf0");
        assert!(first.vfs[1].allocated && !first.vfs[0].allocated);
        assert_eq!(first.pools[0].allocated, 1);
        assert_eq!(cond_of(&first, READY).status, "True");
        assert_eq!(cond_of(&first, PENDING).status, "False");
        assert_eq!(cond_of(&first, DEGRADED).status, "False");
        // A later resync with nothing new: identical, so nothing is written.
        let again = status(&Inputs {
            desired: &d,
            running: &running,
            held: &held,
            previous: Some(&first),
            now: t(200),
        });
        assert_eq!(again, first);
    }

    #[test]
    fn pending_and_degraded_say_what_and_why() {
        let mut bad = pool("b", VfModel::Igbvf, &[("igb1", 9)]);
        bad.generation = 5;
        let d = desired(
            &NodeStateSpec {
                pools: vec![pool("a", VfModel::Igbvf, &[("igb0", 1)]), bad],
            },
            Some(4),
            &host(),
        );
        let wait = PoolWait {
            pending: vec!["1 allocated VF(s) pending removal: igb0-vf1".into()],
            held_back: ["igb0-vf1".to_string()].into(),
            pending_removal: ["igb0-vf1".to_string()].into(),
        };
        let running = snap(&["igb0-vf0", "igb0-vf1"], wait);
        let held: BTreeSet<String> = ["igb0-vf1".to_string()].into();
        let previous = status(&Inputs {
            desired: &desired(&NodeStateSpec::default(), Some(1), &host()),
            running: &Snapshot::default(),
            held: &BTreeSet::new(),
            previous: None,
            now: t(10),
        });
        let s = status(&Inputs {
            desired: &d,
            running: &running,
            held: &held,
            previous: Some(&previous),
            now: t(20),
        });
        assert_eq!(s.sync_status, Some(SyncStatus::Failed));
        assert!(s.vfs[1].pending_removal && !s.vfs[0].pending_removal);
        let p = cond_of(&s, PENDING);
        assert_eq!(p.status, "True");
        assert_eq!(
            p.message,
            "pool a: 1 allocated VF(s) pending removal: igb0-vf1"
        );
        assert_eq!(p.last_transition_time, t(20));
        let g = cond_of(&s, DEGRADED);
        assert!(
            g.message.starts_with("pool b: pfs[0].vfs: 9 VFs"),
            "{}",
            g.message
        );
        assert_eq!(s.last_sync_error.as_deref(), Some(g.message.as_str()));
        let r = cond_of(&s, READY);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "Degraded")
        );
        // The pool that cannot run is listed with nothing running.
        let b = s.pools.iter().find(|p| p.name == "b").unwrap();
        assert_eq!((b.generation, b.vfs), (0, 0));
        // Ready went True → False at 20; Pending False → True at 20.
        assert_eq!(r.last_transition_time, t(20));
    }
}
