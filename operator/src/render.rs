//! The pure half of the operator: pools + a node → that node's `NodeState` spec, and pools +
//! node states → a pool's status. No I/O; the controllers feed it from their caches.
//!
//! ## Placement rules
//! 1. A pool applies to a node when its `nodeSelector` matches the node's labels (an empty
//!    selector matches every node; a selector that cannot be evaluated matches none and the
//!    pool says why).
//! 2. Pools that apply to a node are ordered by `priority` (0 first, 99 last), then by name.
//! 3. Walking that order, a pool is placed unless a pool placed before it advertises the same
//!    `resourceName`: one resource on one node has one meaning. The pool that lost is
//!    "overridden" on that node; its status carries an `Overlap` condition naming the node and
//!    the winner.
//! 4. Each placed pool gets `pfsPerNode` PFs on the node with `vfsPerPf` VFs each and the
//!    pool's settings; the node's spec lists the placed pools sorted by name.
//!
//! ## PF names
//! PF names (`igb0`, `avf2`) become VF ids and socket paths, which pods hold, so they are
//! stable: a pool keeps the names it already had on the node (in order, as long as its model
//! is unchanged); new PFs take the lowest free `<model><n>` that no other pool's PF uses and
//! no VF still running on the node (a pending removal reported in status) uses.

use crate::selector::{self, SelectorError};
use emu_sriov_crds::{
    conditions, NodePf, NodePool, NodeState, NodeStateSpec, PoolRunStatus, SyncStatus, VfPool,
    VfPoolSpec, VfPoolStatus,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A pool as the renderer needs it.
#[derive(Debug, Clone, Copy)]
pub struct Pool<'a> {
    pub name: &'a str,
    pub generation: i64,
    pub spec: &'a VfPoolSpec,
}

impl<'a> Pool<'a> {
    pub fn from_object(p: &'a VfPool) -> Option<Pool<'a>> {
        Some(Pool {
            name: p.metadata.name.as_deref()?,
            generation: p.metadata.generation.unwrap_or(0),
            spec: &p.spec,
        })
    }
}

/// Which pools serve one node.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placement<'a> {
    /// Placed pools, in placement order (priority, then name).
    pub placed: Vec<&'a str>,
    /// (pool, the pool that serves its resource on this node instead).
    pub overridden: Vec<(&'a str, &'a str)>,
}

/// Rules 1–3: which of `pools` serve a node with `labels`.
pub fn place<'a>(labels: &BTreeMap<String, String>, pools: &[Pool<'a>]) -> Placement<'a> {
    let mut matching: Vec<&Pool<'a>> = pools
        .iter()
        .filter(|p| selector::matches(&p.spec.node_selector, labels).unwrap_or(false))
        .collect();
    matching.sort_by(|a, b| (a.spec.priority, a.name).cmp(&(b.spec.priority, b.name)));
    let mut by_resource: HashMap<&str, &'a str> = HashMap::new();
    let mut placement = Placement::default();
    for p in matching {
        match by_resource.get(p.spec.resource_name.as_str()) {
            Some(winner) => placement.overridden.push((p.name, *winner)),
            None => {
                by_resource.insert(&p.spec.resource_name, p.name);
                placement.placed.push(p.name);
            }
        }
    }
    placement
}

/// Rule 4 and the PF naming rule: the spec of the node's `NodeState`, given what it holds now.
pub fn render_node(
    labels: &BTreeMap<String, String>,
    pools: &[Pool<'_>],
    existing: Option<&NodeState>,
) -> NodeStateSpec {
    let placement = place(labels, pools);
    let mut placed: Vec<&Pool<'_>> = placement
        .placed
        .iter()
        .filter_map(|name| pools.iter().find(|p| p.name == *name))
        .collect();
    placed.sort_by_key(|p| p.name);

    let old_pools: HashMap<&str, &NodePool> = existing
        .map(|ns| ns.spec.pools.iter().map(|p| (p.name.as_str(), p)).collect())
        .unwrap_or_default();

    // Names each placed pool keeps, then everything reserved on the node.
    let mut kept: HashMap<&str, Vec<String>> = HashMap::new();
    let mut reserved: BTreeSet<String> = BTreeSet::new();
    for p in &placed {
        let keep: Vec<String> = match old_pools.get(p.name) {
            Some(old) if old.model == p.spec.model => old
                .pfs
                .iter()
                .take(p.spec.pfs_per_node as usize)
                .map(|pf| pf.name.clone())
                .collect(),
            _ => Vec::new(),
        };
        reserved.extend(keep.iter().cloned());
        kept.insert(p.name, keep);
    }
    // PFs whose VFs still run (e.g. allocated, pending removal) keep their names too.
    if let Some(status) = existing.and_then(|ns| ns.status.as_ref()) {
        reserved.extend(status.vfs.iter().map(|vf| vf.pf.clone()));
    }

    let mut out = Vec::with_capacity(placed.len());
    for p in placed {
        let mut names = kept.remove(p.name).unwrap_or_default();
        let prefix = p.spec.model.pf_model();
        let mut n = 0u32;
        while names.len() < p.spec.pfs_per_node as usize {
            let candidate = format!("{prefix}{n}");
            n += 1;
            if reserved.insert(candidate.clone()) {
                names.push(candidate);
            }
        }
        out.push(NodePool {
            name: p.name.to_owned(),
            generation: p.generation,
            model: p.spec.model,
            queue_pairs: p.spec.queue_pairs,
            resource_name: p.spec.resource_name.clone(),
            device_type: p.spec.device_type,
            vf: p.spec.vf.clone(),
            dataplane: p.spec.dataplane.clone(),
            uplink: p.spec.uplink.clone(),
            socket_owner: p.spec.socket_owner,
            pfs: names
                .into_iter()
                .map(|name| NodePf {
                    name,
                    vfs: p.spec.vfs_per_pf,
                })
                .collect(),
        });
    }
    NodeStateSpec { pools: out }
}

/// What to do with a node's `NodeState` once its spec is rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeAction {
    /// Nothing differs.
    Keep,
    /// Create or update the spec.
    Apply(NodeStateSpec),
    /// No pool is placed and the agent runs nothing any more (or never reported): delete it.
    Delete,
}

/// Compares the rendered spec with the existing object.
pub fn node_action(desired: NodeStateSpec, existing: Option<&NodeState>) -> NodeAction {
    match existing {
        None if desired.pools.is_empty() => NodeAction::Keep,
        None => NodeAction::Apply(desired),
        Some(ns) if desired.pools.is_empty() => {
            if !ns.spec.pools.is_empty() {
                // Let the agent wind down first: it removes free VFs at once and allocated
                // ones when released, and reports that in status.
                NodeAction::Apply(desired)
            } else if ns.status.as_ref().is_none_or(|s| s.vfs.is_empty()) {
                NodeAction::Delete
            } else {
                NodeAction::Keep
            }
        }
        Some(ns) if ns.spec == desired => NodeAction::Keep,
        Some(_) => NodeAction::Apply(desired),
    }
}

/// A node as the pool status needs it.
#[derive(Debug, Clone, Copy)]
pub struct NodeLabels<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// A condition without its timestamp (the controller keeps the old one when nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The pool's status from the nodes, all pools and the node states. Conditions come back
/// without timestamps (see [`Cond`]).
pub fn pool_status(
    pool: &Pool<'_>,
    pools: &[Pool<'_>],
    nodes: &[NodeLabels<'_>],
    states: &[&NodeState],
) -> (VfPoolStatus, Vec<Cond>) {
    let mut conds = Vec::new();
    if let Err(e) = selector::validate(&pool.spec.node_selector) {
        conds.push(Cond {
            type_: conditions::READY,
            status: false,
            reason: "InvalidSelector",
            message: selector_message(&e),
        });
        return (
            VfPoolStatus {
                observed_generation: Some(pool.generation),
                ..Default::default()
            },
            conds,
        );
    }

    // Overlaps, from the same placement rule the node states were rendered with.
    let mut overridden: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for n in nodes {
        let placement = place(n.labels, pools);
        if let Some((_, winner)) = placement.overridden.iter().find(|(p, _)| *p == pool.name) {
            overridden.entry(winner).or_default().push(n.name);
        }
    }

    let by_name: HashMap<&str, &NodeState> = states
        .iter()
        .filter_map(|s| Some((s.metadata.name.as_deref()?, *s)))
        .collect();
    let mut status = VfPoolStatus {
        observed_generation: Some(pool.generation),
        ..Default::default()
    };
    let mut not_ready: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut node_names: Vec<&str> = by_name.keys().copied().collect();
    node_names.sort_unstable();
    for name in node_names {
        let ns = by_name[name];
        let Some(entry) = ns.spec.pools.iter().find(|p| p.name == pool.name) else {
            continue;
        };
        status.matched_nodes += 1;
        let st = ns.status.as_ref();
        let run: Option<&PoolRunStatus> =
            st.and_then(|s| s.pools.iter().find(|p| p.name == pool.name));
        let applied = st.is_some_and(|s| s.observed_generation == ns.metadata.generation);
        let wanted: u32 = entry.pfs.iter().map(|pf| pf.vfs).sum();
        let ready = applied
            && entry.generation == pool.generation
            && run.is_some_and(|r| {
                r.generation == pool.generation && r.pending.is_none() && r.vfs == wanted
            });
        if ready {
            status.ready_nodes += 1;
        } else {
            not_ready.push(name.to_owned());
        }
        if let Some(r) = run {
            status.vfs_total += r.vfs;
            status.vfs_allocated += r.allocated;
            if let Some(p) = &r.pending {
                pending.push(format!("{name}: {p}"));
            }
        }
        if let Some(s) = st {
            if s.sync_status == Some(SyncStatus::Failed) {
                let why = s.last_sync_error.as_deref().unwrap_or("no reason given");
                failed.push(format!("{name}: {why}"));
            }
        }
    }

    let ready = status.matched_nodes > 0 && status.ready_nodes == status.matched_nodes;
    conds.push(Cond {
        type_: conditions::READY,
        status: ready,
        reason: if ready {
            "AllNodesReady"
        } else if status.matched_nodes == 0 {
            "NoNodes"
        } else {
            "NodesNotReady"
        },
        message: if status.matched_nodes == 0 {
            if overridden.is_empty() {
                "the nodeSelector matches no node".to_owned()
            } else {
                "every node the nodeSelector matches is served by another pool (see Overlap)"
                    .to_owned()
            }
        } else if ready {
            format!(
                "{} node(s) run generation {} of this pool",
                status.ready_nodes, pool.generation
            )
        } else {
            format!(
                "{} of {} node(s) run generation {}; waiting for {}",
                status.ready_nodes,
                status.matched_nodes,
                pool.generation,
                list(&not_ready)
            )
        },
    });
    if !overridden.is_empty() {
        let parts: Vec<String> = overridden
            .iter()
            .map(|(winner, nodes)| {
                let owned: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
                format!(
                    "pool {winner} serves {} on {} (lower priority value, or same priority and a name that sorts first)",
                    pool.spec.resource_name,
                    list(&owned)
                )
            })
            .collect();
        conds.push(Cond {
            type_: conditions::OVERLAP,
            status: true,
            reason: "OverriddenByPriority",
            message: format!(
                "{}; give this pool another resourceName or a lower priority value to place it there",
                parts.join("; ")
            ),
        });
    }
    if !pending.is_empty() {
        conds.push(Cond {
            type_: conditions::PENDING,
            status: true,
            reason: "WaitingForRelease",
            message: list(&pending),
        });
    }
    if !failed.is_empty() {
        conds.push(Cond {
            type_: conditions::DEGRADED,
            status: true,
            reason: "AgentCannotApply",
            message: list(&failed),
        });
    }
    (status, conds)
}

fn selector_message(e: &SelectorError) -> String {
    format!("{e}; the pool is placed on no node until the selector is fixed")
}

/// "a, b, c and 4 more".
fn list(items: &[String]) -> String {
    const SHOWN: usize = 5;
    if items.len() <= SHOWN {
        items.join(", ")
    } else {
        format!(
            "{} and {} more",
            items[..SHOWN].join(", "),
            items.len() - SHOWN
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emu_sriov_crds::{
        NodeStateStatus, VfHealth, VfModel, VfRunStatus, VfSettings, DEFAULT_RESOURCE_NAME,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn spec(model: VfModel, selector: &[(&str, &str)], priority: u32) -> VfPoolSpec {
        VfPoolSpec {
            node_selector: LabelSelector {
                match_labels: (!selector.is_empty()).then(|| labels(selector)),
                ..Default::default()
            },
            model,
            pfs_per_node: 1,
            vfs_per_pf: 4,
            queue_pairs: 1,
            resource_name: DEFAULT_RESOURCE_NAME.into(),
            device_type: Default::default(),
            vf: VfSettings::default(),
            dataplane: Default::default(),
            uplink: None,
            socket_owner: None,
            priority,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn state(name: &str, spec: NodeStateSpec) -> NodeState {
        let mut ns = NodeState::new(name, spec);
        ns.metadata.generation = Some(1);
        ns
    }

    fn pf_names(spec: &NodeStateSpec, pool: &str) -> Vec<String> {
        spec.pools
            .iter()
            .find(|p| p.name == pool)
            .map(|p| p.pfs.iter().map(|pf| pf.name.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_pool_is_placed_only_where_its_selector_matches() {
        let s = spec(VfModel::Igbvf, &[("emu", "yes")], 99);
        let pools = [Pool {
            name: "a",
            generation: 1,
            spec: &s,
        }];
        let on = render_node(&labels(&[("emu", "yes")]), &pools, None);
        let off = render_node(&labels(&[("emu", "no")]), &pools, None);
        assert_eq!(pf_names(&on, "a"), ["igb0"]);
        assert_eq!(on.pools[0].pfs[0].vfs, 4);
        assert!(off.pools.is_empty());
    }

    #[test]
    fn the_lower_priority_value_wins_a_shared_resource_and_ties_go_by_name() {
        let low = spec(VfModel::Igbvf, &[], 10);
        let high = spec(VfModel::Iavf, &[], 5);
        let pools = [
            Pool {
                name: "a-low",
                generation: 1,
                spec: &low,
            },
            Pool {
                name: "b-high",
                generation: 1,
                spec: &high,
            },
        ];
        let p = place(&labels(&[]), &pools);
        assert_eq!(p.placed, ["b-high"]);
        assert_eq!(p.overridden, [("a-low", "b-high")]);

        let tie = spec(VfModel::Iavf, &[], 10);
        let pools = [
            Pool {
                name: "b",
                generation: 1,
                spec: &low,
            },
            Pool {
                name: "a",
                generation: 1,
                spec: &tie,
            },
        ];
        assert_eq!(place(&labels(&[]), &pools).placed, ["a"]);
    }

    #[test]
    fn pools_with_different_resources_share_a_node_with_distinct_pf_names() {
        let a = spec(VfModel::Igbvf, &[], 1);
        let mut b = spec(VfModel::Igbvf, &[], 1);
        b.resource_name = "emu.sriov/vf-b".into();
        b.pfs_per_node = 2;
        let pools = [
            Pool {
                name: "a",
                generation: 1,
                spec: &a,
            },
            Pool {
                name: "b",
                generation: 1,
                spec: &b,
            },
        ];
        let s = render_node(&labels(&[]), &pools, None);
        assert_eq!(pf_names(&s, "a"), ["igb0"]);
        assert_eq!(pf_names(&s, "b"), ["igb1", "igb2"]);
    }

    #[test]
    fn pf_names_are_stable_when_pools_come_and_go() {
        let a = spec(VfModel::Igbvf, &[], 1);
        let mut b = spec(VfModel::Igbvf, &[], 1);
        b.resource_name = "emu.sriov/vf-b".into();
        let both = [
            Pool {
                name: "a",
                generation: 1,
                spec: &a,
            },
            Pool {
                name: "b",
                generation: 1,
                spec: &b,
            },
        ];
        let first = state("n", render_node(&labels(&[]), &both, None));
        assert_eq!(pf_names(&first.spec, "b"), ["igb1"]);
        // Pool a goes; b keeps igb1 (its VFs' ids and sockets do not move).
        let only_b = [both[1]];
        let second = render_node(&labels(&[]), &only_b, Some(&first));
        assert_eq!(pf_names(&second, "b"), ["igb1"]);
        // A new pool does not take a name a still-running VF uses (pending removal).
        let mut running = state("n", second.clone());
        running.status = Some(NodeStateStatus {
            vfs: vec![VfRunStatus {
                id: "igb0-vf0".into(),
                pool: "a".into(),
                pf: "igb0".into(),
                mac: "02:00:00:00:00:01".into(),
                socket: "/run/emu-sriov/vfs/igb0-vf0/vf.sock".into(),
                resource_name: DEFAULT_RESOURCE_NAME.into(),
                allocated: true,
                health: VfHealth::Healthy,
                pending_removal: true,
            }],
            ..Default::default()
        });
        let mut c = spec(VfModel::Igbvf, &[], 1);
        c.resource_name = "emu.sriov/vf-c".into();
        let b_and_c = [
            both[1],
            Pool {
                name: "c",
                generation: 1,
                spec: &c,
            },
        ];
        let third = render_node(&labels(&[]), &b_and_c, Some(&running));
        assert_eq!(pf_names(&third, "b"), ["igb1"]);
        assert_eq!(pf_names(&third, "c"), ["igb2"]);
    }

    #[test]
    fn growing_pfs_keeps_the_old_names_and_a_model_change_renames() {
        let mut a = spec(VfModel::Igbvf, &[], 1);
        let pools = [Pool {
            name: "a",
            generation: 1,
            spec: &a,
        }];
        let first = state("n", render_node(&labels(&[]), &pools, None));
        a.pfs_per_node = 3;
        let pools = [Pool {
            name: "a",
            generation: 2,
            spec: &a,
        }];
        let grown = render_node(&labels(&[]), &pools, Some(&first));
        assert_eq!(pf_names(&grown, "a"), ["igb0", "igb1", "igb2"]);
        assert_eq!(grown.pools[0].generation, 2);
        a.model = VfModel::Iavf;
        let pools = [Pool {
            name: "a",
            generation: 3,
            spec: &a,
        }];
        let swapped = render_node(&labels(&[]), &pools, Some(&state("n", grown)));
        assert_eq!(pf_names(&swapped, "a"), ["avf0", "avf1", "avf2"]);
    }

    #[test]
    fn node_actions_wind_down_before_deleting() {
        let a = spec(VfModel::Igbvf, &[], 1);
        let pools = [Pool {
            name: "a",
            generation: 1,
            spec: &a,
        }];
        let desired = render_node(&labels(&[]), &pools, None);
        assert_eq!(
            node_action(desired.clone(), None),
            NodeAction::Apply(desired.clone())
        );
        let existing = state("n", desired.clone());
        assert_eq!(
            node_action(desired.clone(), Some(&existing)),
            NodeAction::Keep
        );
        // Unplaced: first an empty spec, then (agent reports nothing) delete.
        let empty = NodeStateSpec::default();
        assert_eq!(
            node_action(empty.clone(), Some(&existing)),
            NodeAction::Apply(empty.clone())
        );
        let mut drained = state("n", empty.clone());
        assert_eq!(
            node_action(empty.clone(), Some(&drained)),
            NodeAction::Delete
        );
        drained.status = Some(NodeStateStatus {
            vfs: vec![VfRunStatus {
                id: "igb0-vf0".into(),
                pool: "a".into(),
                pf: "igb0".into(),
                mac: "02:00:00:00:00:01".into(),
                socket: "/x".into(),
                resource_name: DEFAULT_RESOURCE_NAME.into(),
                allocated: true,
                health: VfHealth::Healthy,
                pending_removal: true,
            }],
            ..Default::default()
        });
        assert_eq!(node_action(empty.clone(), Some(&drained)), NodeAction::Keep);
        assert_eq!(node_action(empty, None), NodeAction::Keep);
    }

    #[test]
    fn pool_status_counts_ready_nodes_and_names_the_overlap() {
        let a = spec(VfModel::Igbvf, &[], 10);
        let b = spec(VfModel::Igbvf, &[("fast", "yes")], 1);
        let pools = [
            Pool {
                name: "a",
                generation: 2,
                spec: &a,
            },
            Pool {
                name: "b",
                generation: 1,
                spec: &b,
            },
        ];
        let l1 = labels(&[]);
        let l2 = labels(&[("fast", "yes")]);
        let nodes = [
            NodeLabels {
                name: "n1",
                labels: &l1,
            },
            NodeLabels {
                name: "n2",
                labels: &l2,
            },
        ];
        let mut n1 = state("n1", render_node(&l1, &pools, None));
        n1.status = Some(NodeStateStatus {
            observed_generation: Some(1),
            sync_status: Some(SyncStatus::Succeeded),
            pools: vec![PoolRunStatus {
                name: "a".into(),
                generation: 2,
                vfs: 4,
                allocated: 1,
                pending: None,
            }],
            ..Default::default()
        });
        let n2 = state("n2", render_node(&l2, &pools, None));
        let (st, conds) = pool_status(&pools[0], &pools, &nodes, &[&n1, &n2]);
        assert_eq!(st.matched_nodes, 1);
        assert_eq!(st.ready_nodes, 1);
        assert_eq!((st.vfs_total, st.vfs_allocated), (4, 1));
        assert!(conds.iter().any(|c| c.type_ == "Ready" && c.status));
        let overlap = conds
            .iter()
            .find(|c| c.type_ == "Overlap")
            .expect("overlap");
        assert!(overlap.message.contains("pool b serves emu.sriov/vf on n2"));

        let (st_b, conds_b) = pool_status(&pools[1], &pools, &nodes, &[&n1, &n2]);
        assert_eq!((st_b.matched_nodes, st_b.ready_nodes), (1, 0));
        let ready = conds_b.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert!(!ready.status && ready.message.contains("waiting for n2"));
    }
}
