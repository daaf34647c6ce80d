//! What the NodeState asks for, checked against what this agent and this machine can do.
//!
//! The API server already enforces the CRD's schema and CEL rules; this adds what it cannot
//! know (the CPUs this process may run on, the run dir's socket path length, PF names taken by
//! another pool) and re-checks the rest, because a NodeState can be written without the
//! operator. A pool with any problem is left out of [`Desired::pools`]: whatever the agent runs
//! for it keeps running, and [`Desired::problems`] says what to fix (the Degraded condition).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use emu_sriov_crds::{DataplaneMode as CrdDataplaneMode, DeviceType, NodePool, NodeStateSpec};

use crate::config::{
    self, DataplaneConfig, DataplaneMode, NicModel, SocketOwner, UplinkConfig, MAX_SOCKET_PATH,
};
use crate::naming;

/// Ports one pool's switch holds (the VMDq tables' limit).
pub const MAX_POOL_PORTS: usize = 256;

/// What the machine offers, passed in so that validation stays pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// CPUs the agent may run on (its affinity mask).
    pub allowed_cpus: BTreeSet<usize>,
    pub run_dir: std::path::PathBuf,
}

/// Everything about a pool that fixes how its node is built: changing any of it rebuilds the
/// pool's node (and so waits until none of its VFs is allocated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub model: NicModel,
    pub queue_pairs: u16,
    pub dataplane: DataplaneConfig,
    pub uplink: Option<UplinkConfig>,
    pub socket_owner: Option<SocketOwner>,
    /// vfio-user sockets or TAP-backed netdevs.
    pub device_type: config::DeviceType,
}

/// A VF's PF-side settings in a pool (the same for every VF of the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Port VLAN 1..=4094; `None`: none.
    pub port_vlan: Option<u16>,
    pub spoofchk: bool,
    pub trusted: bool,
    /// Mbit/s; `None`: unlimited.
    pub rate_mbps: Option<u32>,
    /// 68..=9216.
    pub mtu: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            port_vlan: None,
            spoofchk: true,
            trusted: false,
            rate_mbps: None,
            mtu: 1500,
        }
    }
}

impl Settings {
    /// The settings a real PF changes under a running guest (`ip link set … spoofchk`,
    /// `max_tx_rate`): the other fields are kept from `current`.
    pub fn live_part(&self, current: &Settings) -> Settings {
        Settings {
            spoofchk: self.spoofchk,
            rate_mbps: self.rate_mbps,
            ..*current
        }
    }

    /// Names of the fields that differ and only change when the VF is free.
    pub fn on_release_diff(&self, current: &Settings) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.port_vlan != current.port_vlan {
            d.push("vlan");
        }
        if self.trusted != current.trusted {
            d.push("trust");
        }
        if self.mtu != current.mtu {
            d.push("mtu");
        }
        d
    }
}

/// One valid pool of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPool {
    pub name: String,
    pub generation: i64,
    pub resource: String,
    pub build: Build,
    pub settings: Settings,
    /// (PF name, VFs), in spec order.
    pub pfs: Vec<(String, u8)>,
}

impl DesiredPool {
    /// VFs wanted on PF `pf` (0 if the pool does not list it).
    pub fn vfs_on(&self, pf: &str) -> u8 {
        self.pfs
            .iter()
            .find(|(n, _)| n == pf)
            .map_or(0, |(_, v)| *v)
    }

    /// Slots per PF for a fresh build: igb PFs get all 7 (the model's maximum); avf PFs the
    /// VFs rounded up to a multiple of 8 (at least 8, at most 64), so that growing within that
    /// needs no rebuild; if that would exceed the switch's 256 ports, exactly the VFs asked.
    pub fn slots(&self) -> Vec<(String, u8)> {
        let max = self.build.model.max_vfs();
        let roomy: Vec<(String, u8)> = self
            .pfs
            .iter()
            .map(|(pf, n)| {
                let cap = match self.build.model {
                    NicModel::Igb => max,
                    NicModel::Avf => n.max(&1).div_ceil(8).saturating_mul(8).min(max),
                };
                (pf.clone(), cap)
            })
            .collect();
        if roomy.iter().map(|(_, c)| usize::from(*c)).sum::<usize>() <= MAX_POOL_PORTS {
            roomy
        } else {
            self.pfs.clone()
        }
    }
}

/// Something in the spec the agent cannot apply, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The pool it concerns; `None`: the whole NodeState.
    pub pool: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pool {
            Some(p) => write!(f, "pool {p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The spec as the agent will apply it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The NodeState's `metadata.generation`.
    pub generation: Option<i64>,
    /// Valid pools by name.
    pub pools: BTreeMap<String, DesiredPool>,
    /// Pools of the spec that are not valid: kept as they run (name → generation).
    pub invalid: BTreeMap<String, i64>,
    /// The spec could not be read at all: keep everything as it runs.
    pub unreadable: bool,
    pub problems: Vec<Problem>,
}

impl Desired {
    /// No NodeState (yet): run nothing.
    pub fn nothing() -> Desired {
        Desired::default()
    }

    /// A NodeState whose spec does not parse: nothing changes, Degraded says why.
    pub fn unreadable(generation: Option<i64>, why: String) -> Desired {
        Desired {
            generation,
            unreadable: true,
            problems: vec![Problem {
                pool: None,
                message: format!(
                    "the NodeState spec cannot be read ({why}): fix or re-create the object \
                     (the operator renders it from the VfPools); the VFs running now are kept"
                ),
            }],
            ..Desired::default()
        }
    }

    /// Whether `pool` is in the spec but kept as it runs (invalid, or the spec unreadable).
    pub fn keeps(&self, pool: &str) -> bool {
        self.unreadable || self.invalid.contains_key(pool)
    }
}

/// Checks `spec` (of a NodeState at `generation`) against `host`.
pub fn desired(spec: &NodeStateSpec, generation: Option<i64>, host: &Host) -> Desired {
    let mut out = Desired {
        generation,
        ..Desired::default()
    };
    // PF name → pool that has it; poll-mode core → pool; uplink name → pool.
    let mut pf_owner: BTreeMap<String, String> = BTreeMap::new();
    let mut core_owner: BTreeMap<usize, String> = BTreeMap::new();
    let mut uplink_owner: BTreeMap<String, String> = BTreeMap::new();
    for pool in &spec.pools {
        if out.pools.contains_key(&pool.name) || out.invalid.contains_key(&pool.name) {
            out.problems.push(Problem {
                pool: Some(pool.name.clone()),
                message: "listed twice in spec.pools: keep one entry per pool".into(),
            });
            continue;
        }
        let mut errors = Vec::new();
        let checked = check_pool(pool, host, &mut errors);
        // Names and cores shared with pools checked before this one.
        for (pf, _) in &pool_pf_names(pool) {
            if let Some(other) = pf_owner.get(pf) {
                errors.push(format!(
                    "pfs: PF name {pf} is already used by pool {other} on this node: PF names must be unique per node"
                ));
            }
        }
        if let Some(b) = &checked.as_ref().map(|(b, ..)| b) {
            if b.dataplane.mode == DataplaneMode::Poll {
                for c in &b.dataplane.cores {
                    if let Some(other) = core_owner.get(c) {
                        errors.push(format!(
                            "dataplane.cores: core {c} already busy-polls for pool {other}: give each poll-mode pool its own cores"
                        ));
                    }
                }
            }
            if let Some(u) = &b.uplink {
                if let Some(other) = uplink_owner.get(u.ifname()) {
                    errors.push(format!(
                        "uplink.name: interface {} is already pool {other}'s uplink: give each pool its own",
                        u.ifname()
                    ));
                }
            }
        }
        match checked {
            Some((build, settings, resource, pfs)) if errors.is_empty() => {
                for (pf, _) in &pfs {
                    pf_owner.insert(pf.clone(), pool.name.clone());
                }
                if build.dataplane.mode == DataplaneMode::Poll {
                    for c in &build.dataplane.cores {
                        core_owner.insert(*c, pool.name.clone());
                    }
                }
                if let Some(u) = &build.uplink {
                    uplink_owner.insert(u.ifname().to_owned(), pool.name.clone());
                }
                out.pools.insert(
                    pool.name.clone(),
                    DesiredPool {
                        name: pool.name.clone(),
                        generation: pool.generation,
                        resource,
                        build,
                        settings,
                        pfs,
                    },
                );
            }
            _ => {
                // Its PF names stay reserved: its VFs keep running.
                for (pf, _) in pool_pf_names(pool) {
                    pf_owner.entry(pf).or_insert_with(|| pool.name.clone());
                }
                out.invalid.insert(pool.name.clone(), pool.generation);
                out.problems
                    .extend(errors.into_iter().map(|message| Problem {
                        pool: Some(pool.name.clone()),
                        message,
                    }));
            }
        }
    }
    out
}

fn pool_pf_names(pool: &NodePool) -> Vec<(String, u32)> {
    pool.pfs.iter().map(|p| (p.name.clone(), p.vfs)).collect()
}

type Checked = (Build, Settings, String, Vec<(String, u8)>);

/// One pool on its own; problems go to `errors` (each says what to fix).
fn check_pool(pool: &NodePool, host: &Host, errors: &mut Vec<String>) -> Option<Checked> {
    let model = match pool.model {
        emu_sriov_crds::VfModel::Igbvf => NicModel::Igb,
        emu_sriov_crds::VfModel::Iavf => NicModel::Avf,
    };
    let device_type = match pool.device_type {
        DeviceType::VfioUser => config::DeviceType::VfioUser,
        DeviceType::Netdev => config::DeviceType::Netdev,
    };
    if device_type == config::DeviceType::Netdev && model != NicModel::Igb {
        errors.push(
            "deviceType: netdev (TAP-backed VFs) is driven through the igb PF model: use model igbvf, or deviceType vfio-user"
                .into(),
        );
    }
    let queue_pairs = match (model, pool.queue_pairs) {
        (NicModel::Igb, 1) => Some(1),
        (NicModel::Igb, n) => {
            errors.push(format!(
                "queuePairs: {n}, but igbvf VFs have exactly one queue pair: set 1, or use model iavf"
            ));
            None
        }
        (NicModel::Avf, n @ 1..=16) => u16::try_from(n).ok(),
        (NicModel::Avf, n) => {
            errors.push(format!(
                "queuePairs: {n} is not allowed: iavf VFs take 1 to 16"
            ));
            None
        }
    };
    let resource = config::validate_resource_name("resourceName", pool.resource_name.clone())
        .map_err(|e| {
            errors.push(format!("{e} (the kubelet would refuse it)"));
        });
    let s = &pool.vf;
    if !(68..=9216).contains(&s.mtu) {
        errors.push(format!("mtu: {} is not allowed: use 68 to 9216", s.mtu));
    }
    let port_vlan = match u16::try_from(s.vlan) {
        Ok(0) => None,
        Ok(v @ 1..=4094) => Some(v),
        _ => {
            errors.push(format!(
                "vlan: {} is not allowed: use 1 to 4094, or 0 for no port VLAN",
                s.vlan
            ));
            None
        }
    };
    if s.max_tx_rate_mbps > 400_000 {
        errors.push(format!(
            "maxTxRateMbps: {} is not allowed: use 1 to 400000, or 0 for no limit",
            s.max_tx_rate_mbps
        ));
    }
    let settings = Settings {
        port_vlan,
        spoofchk: s.spoof_chk,
        trusted: s.trust,
        rate_mbps: (s.max_tx_rate_mbps > 0).then_some(s.max_tx_rate_mbps),
        mtu: s.mtu,
    };
    let mode = match pool.dataplane.mode {
        CrdDataplaneMode::Adaptive => DataplaneMode::Adaptive,
        CrdDataplaneMode::Poll => DataplaneMode::Poll,
    };
    if mode == DataplaneMode::Poll && pool.dataplane.cores.is_empty() {
        errors.push(
            "dataplane.cores: poll mode busy-polls dedicated cores: list them (e.g. cores: [2, 3]) or use mode: adaptive"
                .into(),
        );
    }
    let mut cores = Vec::new();
    let mut seen = BTreeSet::new();
    for &c in &pool.dataplane.cores {
        let c = c as usize;
        if !host.allowed_cpus.contains(&c) {
            errors.push(format!(
                "dataplane.cores: this agent may not run on CPU {c} (it may use {}): pick cores from that list, or widen the agent's cpuset",
                cpu_list(&host.allowed_cpus)
            ));
        } else if !seen.insert(c) {
            errors.push(format!("dataplane.cores: core {c} is listed twice"));
        } else {
            cores.push(c);
        }
    }
    let uplink = pool.uplink.as_ref().and_then(|u| {
        let cfg = match u.kind {
            emu_sriov_crds::UplinkType::Tap => UplinkConfig::Tap {
                name: u.name.clone(),
            },
            emu_sriov_crds::UplinkType::Packet => UplinkConfig::Packet {
                interface: u.name.clone(),
            },
        };
        cfg.validate().map_err(|e| errors.push(e.to_string())).ok()
    });
    let max = model.max_vfs();
    let mut pfs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, pf) in pool.pfs.iter().enumerate() {
        if let Err(e) = config::validate_pf_name(&format!("pfs[{i}].name"), pf.name.clone()) {
            errors.push(e.to_string());
            continue;
        }
        if !names.insert(pf.name.clone()) {
            errors.push(format!(
                "pfs[{i}].name: {} is listed twice in this pool",
                pf.name
            ));
            continue;
        }
        match u8::try_from(pf.vfs).ok().filter(|n| *n <= max) {
            Some(n) => pfs.push((pf.name.clone(), n)),
            None => errors.push(format!(
                "pfs[{i}].vfs: {} VFs on {}, but a {} PF carries at most {max}: lower vfs, or add PFs",
                pf.vfs,
                pf.name,
                model.vf_model()
            )),
        }
    }
    let total: usize = pfs.iter().map(|(_, n)| usize::from(*n)).sum();
    if total > MAX_POOL_PORTS {
        errors.push(format!(
            "pfs: {total} VFs in one pool, but its switch holds at most {MAX_POOL_PORTS}: lower the VFs per PF or the PFs"
        ));
    }
    if let Some(longest) = pfs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(pf, n)| naming::vf_socket_path(&host.run_dir, &naming::vf_id(pf, n - 1)))
        .max_by_key(|p| p.as_os_str().len())
    {
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            errors.push(format!(
                "socket {} is longer than a unix socket path may be ({MAX_SOCKET_PATH} bytes): run the agent with a shorter --run-dir",
                longest.display()
            ));
        }
    }
    let build = Build {
        model,
        queue_pairs: queue_pairs?,
        dataplane: DataplaneConfig { mode, cores },
        uplink,
        device_type,
        socket_owner: pool.socket_owner.map(|o| SocketOwner {
            uid: o.uid,
            gid: o.gid,
        }),
    };
    if !errors.is_empty() {
        return None;
    }
    Some((build, settings, resource.ok()?, pfs))
}

/// `0-3,6` style list.
fn cpu_list(cpus: &BTreeSet<usize>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut it = cpus.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        parts.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

/// The host this process runs on: its CPU affinity (all online CPUs if unknown) and run dir.
pub fn detect_host(run_dir: &Path) -> Host {
    let allowed_cpus = crate::sys::allowed_cpus()
        .map(|v| v.into_iter().collect())
        .unwrap_or_else(|| (0..crate::sys::online_cpus()).collect());
    Host {
        allowed_cpus,
        run_dir: run_dir.to_owned(),
    }
}

/// Spec builders shared by the cluster tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use emu_sriov_crds::{NodePf, VfModel};

    pub(crate) fn host() -> Host {
        Host {
            allowed_cpus: [0, 1, 2, 3].into(),
            run_dir: "/run/emu-sriov".into(),
        }
    }

    pub(crate) fn pool(name: &str, model: VfModel, pfs: &[(&str, u32)]) -> NodePool {
        NodePool {
            name: name.into(),
            generation: 1,
            model,
            queue_pairs: 1,
            resource_name: emu_sriov_crds::DEFAULT_RESOURCE_NAME.into(),
            device_type: DeviceType::VfioUser,
            vf: Default::default(),
            dataplane: Default::default(),
            uplink: None,
            socket_owner: None,
            pfs: pfs
                .iter()
                .map(|(n, v)| NodePf {
                    name: (*n).into(),
                    vfs: *v,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use emu_sriov_crds::{NodePf, VfModel};

    fn problems(spec: &NodeStateSpec) -> Vec<String> {
        desired(spec, Some(1), &host())
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_pool_with_defaults() {
        let spec = NodeStateSpec {
            pools: vec![pool("a", VfModel::Igbvf, &[("igb0", 3), ("igb1", 0)])],
        };
        let d = desired(&spec, Some(4), &host());
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let p = &d.pools["a"];
        assert_eq!(p.build.model, NicModel::Igb);
        assert_eq!(p.settings, Settings::default());
        assert_eq!(p.pfs, [("igb0".to_string(), 3), ("igb1".to_string(), 0)]);
        assert_eq!(
            p.slots(),
            [("igb0".to_string(), 7), ("igb1".to_string(), 7)]
        );
        assert_eq!(d.generation, Some(4));
    }

    #[test]
    fn avf_slots_round_up_within_the_switch() {
        let mut p = pool(
            "a",
            VfModel::Iavf,
            &[("avf0", 1), ("avf1", 9), ("avf2", 64)],
        );
        p.queue_pairs = 4;
        let d = desired(
            &NodeStateSpec {
                pools: vec![p.clone()],
            },
            None,
            &host(),
        );
        let slots: Vec<u8> = d.pools["a"].slots().into_iter().map(|(_, c)| c).collect();
        assert_eq!(slots, [8, 16, 64]);
        // 5 × 51 = 255 VFs fit, 5 × 56 slots would not: exactly what is asked.
        p.pfs = (0..5)
            .map(|i| NodePf {
                name: format!("avf{i}"),
                vfs: 51,
            })
            .collect();
        let d = desired(&NodeStateSpec { pools: vec![p] }, None, &host());
        assert!(d.pools["a"].slots().iter().all(|(_, c)| *c == 51));
    }

    #[test]
    fn what_cannot_be_applied_says_what_to_fix() {
        let mut bad = pool("bad", VfModel::Igbvf, &[("igb0", 8)]);
        bad.queue_pairs = 2;
        bad.vf.vlan = 4095;
        bad.vf.mtu = 10;
        bad.dataplane.mode = CrdDataplaneMode::Poll;
        bad.dataplane.cores = vec![7];
        bad.resource_name = "no-slash".into();
        let p = problems(&NodeStateSpec { pools: vec![bad] });
        let all = p.join("\n");
        for needle in [
            "pool bad: pfs[0].vfs: 8 VFs on igb0, but a igbvf PF carries at most 7",
            "queuePairs: 2",
            "vlan: 4095",
            "mtu: 10",
            "this agent may not run on CPU 7 (it may use 0-3)",
            "resourceName",
        ] {
            assert!(all.contains(needle), "{needle:?} missing from:\n{all}");
        }
        let d = desired(
            &NodeStateSpec {
                pools: vec![pool("bad", VfModel::Igbvf, &[("igb0", 8)])],
            },
            None,
            &host(),
        );
        assert!(d.pools.is_empty());
        assert!(d.keeps("bad") && !d.keeps("other"));
    }

    #[test]
    fn names_cores_and_uplinks_are_per_node() {
        let a = {
            let mut p = pool("a", VfModel::Igbvf, &[("igb0", 1)]);
            p.dataplane.mode = CrdDataplaneMode::Poll;
            p.dataplane.cores = vec![1];
            p.uplink = Some(emu_sriov_crds::UplinkSpec {
                kind: emu_sriov_crds::UplinkType::Tap,
                name: "emu0".into(),
            });
            p
        };
        let mut b = a.clone();
        b.name = "b".into();
        let d = desired(
            &NodeStateSpec {
                pools: vec![a, b.clone()],
            },
            None,
            &host(),
        );
        assert_eq!(d.pools.keys().collect::<Vec<_>>(), ["a"]);
        let all: Vec<String> = d.problems.iter().map(ToString::to_string).collect();
        let all = all.join("\n");
        assert!(
            all.contains("pool b: pfs: PF name igb0 is already used by pool a"),
            "{all}"
        );
        assert!(
            all.contains("core 1 already busy-polls for pool a"),
            "{all}"
        );
        assert!(
            all.contains("interface emu0 is already pool a's uplink"),
            "{all}"
        );
        // Listed twice.
        let d = desired(
            &NodeStateSpec {
                pools: vec![b.clone(), b],
            },
            None,
            &host(),
        );
        assert!(d
            .problems
            .iter()
            .any(|p| p.message.contains("listed twice")));
    }

    #[test]
    fn long_run_dirs_are_caught() {
        let h = Host {
            run_dir: format!("/{}", "r".repeat(90)).into(),
            ..host()
        };
        let d = desired(
            &NodeStateSpec {
                pools: vec![pool("a", VfModel::Igbvf, &[("igb0", 1)])],
            },
            None,
            &h,
        );
        assert!(
            d.problems[0].message.contains("shorter --run-dir"),
            "{:?}",
            d.problems
        );
    }

    #[test]
    fn settings_split_live_and_on_release() {
        let cur = Settings::default();
        let new = Settings {
            port_vlan: Some(5),
            spoofchk: false,
            trusted: true,
            rate_mbps: Some(100),
            mtu: 9000,
        };
        let live = new.live_part(&cur);
        assert_eq!(
            live,
            Settings {
                spoofchk: false,
                rate_mbps: Some(100),
                ..cur
            }
        );
        assert_eq!(new.on_release_diff(&cur), ["vlan", "trust", "mtu"]);
        assert_eq!(new.on_release_diff(&live).len(), 3);
        assert!(new.on_release_diff(&new).is_empty());
        assert!(cpu_list(&[0, 1, 2, 5, 7, 8].into()) == "0-2,5,7-8");
    }
}
