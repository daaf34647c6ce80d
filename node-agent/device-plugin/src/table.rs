//! Allocation bookkeeping, pure: which VF is free, allocated, being scrubbed. Time is passed
//! in; the runner does the I/O (pod-resources, scrub) and feeds the results back.

use crate::api::{v1beta1::Device, HEALTHY, UNHEALTHY};
use crate::inventory::VfDevice;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Where one VF stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfState {
    /// Not allocated.
    Free,
    /// Handed out by Allocate; `seen` once pod-resources listed it.
    Allocated { at: Instant, seen: bool },
    /// Released; scrub running. Advertised healthy; Allocate waits for the scrub.
    Scrubbing,
    /// Scrub failed; advertised unhealthy, retried.
    Dirty,
}

/// Why an Allocate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    #[error("unknown VF id {id} for resource {resource} (known: {known})")]
    Unknown {
        id: String,
        resource: String,
        known: String,
    },
    #[error("VF {id} is requested twice in one container")]
    Duplicate { id: String },
    #[error("VF {id} is already allocated (to a pod pod-resources still lists, or one not yet released)")]
    Taken { id: String },
    #[error("VF {id} is being scrubbed for its next user; retry shortly")]
    Scrubbing { id: String },
    #[error("VF {id} is not healthy ({why}); it cannot be allocated now")]
    Unhealthy { id: String, why: &'static str },
}

/// The table, plus the set of VFs that have ever been ready (only those are advertised).
#[derive(Debug, Default)]
pub struct Table {
    states: HashMap<String, VfState>,
    ready: HashSet<String>,
}

impl Table {
    /// The state of `id` (`Free` if never touched).
    pub fn state(&self, id: &str) -> VfState {
        self.states.get(id).copied().unwrap_or(VfState::Free)
    }

    /// Records the latest inventory: a VF seen healthy once counts as ready from then on,
    /// until the inventory stops listing it (a VF added again is listed once healthy again).
    /// A vanished VF that failed its scrub is forgotten; one that is allocated or being
    /// scrubbed is kept (pods hold it).
    pub fn observe_devices(&mut self, devices: &[VfDevice]) {
        for d in devices.iter().filter(|d| d.healthy) {
            if !self.ready.contains(&d.id) {
                self.ready.insert(d.id.clone());
            }
        }
        let present: HashSet<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        self.ready.retain(|id| present.contains(id.as_str()));
        self.states
            .retain(|id, st| present.contains(id.as_str()) || *st != VfState::Dirty);
    }

    /// The ids that are not free: allocated, or released and being scrubbed.
    pub fn held(&self) -> BTreeSet<String> {
        self.states
            .iter()
            .filter(|(_, st)| matches!(st, VfState::Allocated { .. } | VfState::Scrubbing))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The ListAndWatch list for `resource`, sorted by id.
    pub fn advertised(&self, resource: &str, devices: &[VfDevice]) -> Vec<Device> {
        let mut out: Vec<Device> = devices
            .iter()
            .filter(|d| d.resource == resource && self.ready.contains(&d.id))
            .map(|d| {
                // A VF being scrubbed stays Healthy: the kubelet's choice is authoritative and
                // a pod created right after the previous one ended must be admitted (an
                // Unhealthy flip would fail it with UnexpectedAdmissionError). Allocate waits
                // for the scrub to finish before it answers, so the new pod never sees the
                // previous tenant's state.
                let ok = d.healthy
                    && matches!(
                        self.state(&d.id),
                        VfState::Free | VfState::Allocated { .. } | VfState::Scrubbing
                    );
                Device {
                    id: d.id.clone(),
                    health: if ok { HEALTHY } else { UNHEALTHY }.to_owned(),
                    topology: None,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Checks `ids` against `devices` of `resource` and, if all can be had, marks them
    /// allocated. All or nothing.
    pub fn allocate(
        &mut self,
        resource: &str,
        ids: &[String],
        devices: &BTreeMap<String, VfDevice>,
        now: Instant,
    ) -> Result<(), AllocateError> {
        let mut seen = HashSet::new();
        for id in ids {
            let known = devices
                .get(id)
                .filter(|d| d.resource == resource && self.ready.contains(id));
            let Some(d) = known else {
                let known: Vec<&str> = devices
                    .values()
                    .filter(|d| d.resource == resource)
                    .map(|d| d.id.as_str())
                    .collect();
                return Err(AllocateError::Unknown {
                    id: id.clone(),
                    resource: resource.to_owned(),
                    known: known.join(", "),
                });
            };
            if !seen.insert(id.as_str()) {
                return Err(AllocateError::Duplicate { id: id.clone() });
            }
            match self.state(id) {
                VfState::Free => {}
                VfState::Allocated { .. } => return Err(AllocateError::Taken { id: id.clone() }),
                VfState::Scrubbing => return Err(AllocateError::Scrubbing { id: id.clone() }),
                VfState::Dirty => {
                    return Err(AllocateError::Unhealthy {
                        id: id.clone(),
                        why: "its last scrub failed",
                    })
                }
            }
            if !d.healthy {
                return Err(AllocateError::Unhealthy {
                    id: id.clone(),
                    why: "its server or dataplane is down",
                });
            }
        }
        for id in ids {
            self.states.insert(
                id.clone(),
                VfState::Allocated {
                    at: now,
                    seen: false,
                },
            );
        }
        Ok(())
    }

    /// Feeds one pod-resources answer: `in_use` are the ids of our resources that pods hold.
    /// In-use ids we did not know of (allocated before an agent restart) are adopted. Returns
    /// the released ids, now `Scrubbing`: seen once and gone, or never seen within `grace`.
    /// `Dirty` ids are returned again for a retry.
    pub fn observe_in_use(
        &mut self,
        in_use: &HashSet<String>,
        now: Instant,
        grace: Duration,
    ) -> Vec<String> {
        for id in in_use {
            let st = self.states.entry(id.clone()).or_insert(VfState::Free);
            match *st {
                VfState::Free => {
                    *st = VfState::Allocated {
                        at: now,
                        seen: true,
                    }
                }
                VfState::Allocated { at, .. } => *st = VfState::Allocated { at, seen: true },
                VfState::Scrubbing | VfState::Dirty => {}
            }
        }
        let mut released = Vec::new();
        for (id, st) in self.states.iter_mut() {
            let release = match *st {
                VfState::Allocated { at, seen } => {
                    !in_use.contains(id) && (seen || now.saturating_duration_since(at) >= grace)
                }
                VfState::Dirty => !in_use.contains(id),
                VfState::Free | VfState::Scrubbing => false,
            };
            if release {
                *st = VfState::Scrubbing;
                released.push(id.clone());
            }
        }
        released.sort();
        released
    }

    /// The outcome of a scrub started by [`Table::observe_in_use`].
    pub fn scrubbed(&mut self, id: &str, ok: bool) {
        if ok {
            self.states.remove(id);
        } else {
            self.states.insert(id.to_owned(), VfState::Dirty);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, healthy: bool) -> VfDevice {
        VfDevice {
            id: id.into(),
            resource: "emu.sriov/vf".into(),
            pf: "igb0".into(),
            model: "igbvf".into(),
            vendor_id: "0x8086".into(),
            device_id: "0x10ca".into(),
            mac: "02:00:00:00:00:01".into(),
            socket: format!("/run/x/vfs/{id}/vf.sock").into(),
            healthy,
            core: None,
        }
    }

    fn map(devs: &[VfDevice]) -> BTreeMap<String, VfDevice> {
        devs.iter().map(|d| (d.id.clone(), d.clone())).collect()
    }

    #[test]
    fn not_listed_before_ready_then_health_follows() {
        let mut t = Table::default();
        let devs = [dev("a", false), dev("b", true)];
        t.observe_devices(&devs);
        let ad = t.advertised("emu.sriov/vf", &devs);
        assert_eq!(ad.len(), 1);
        assert_eq!((ad[0].id.as_str(), ad[0].health.as_str()), ("b", HEALTHY));
        let devs = [dev("a", true), dev("b", false)];
        t.observe_devices(&devs);
        let ad = t.advertised("emu.sriov/vf", &devs);
        let h: Vec<_> = ad.iter().map(|d| d.health.as_str()).collect();
        assert_eq!(h, [HEALTHY, UNHEALTHY]);
        assert!(t.advertised("emu.sriov/other", &devs).is_empty());
    }

    #[test]
    fn allocate_refusals() {
        let mut t = Table::default();
        let devs = [dev("a", true), dev("b", true)];
        t.observe_devices(&devs);
        let m = map(&devs);
        let now = Instant::now();
        let r = "emu.sriov/vf";
        let e = t.allocate(r, &["zz".into()], &m, now).unwrap_err();
        assert!(e.to_string().contains("unknown VF id zz"), "{e}");
        assert!(e.to_string().contains("known: a, b"), "{e}");
        let e = t
            .allocate("emu.sriov/x", &["a".into()], &m, now)
            .unwrap_err();
        assert!(matches!(e, AllocateError::Unknown { .. }));
        let e = t
            .allocate(r, &["a".into(), "a".into()], &m, now)
            .unwrap_err();
        assert!(matches!(e, AllocateError::Duplicate { .. }));
        t.allocate(r, &["a".into()], &m, now).unwrap();
        let e = t
            .allocate(r, &["b".into(), "a".into()], &m, now)
            .unwrap_err();
        assert_eq!(e, AllocateError::Taken { id: "a".into() });
        // All or nothing: b stayed free.
        assert_eq!(t.state("b"), VfState::Free);
        let m2 = map(&[dev("a", true), dev("b", false)]);
        let e = t.allocate(r, &["b".into()], &m2, now).unwrap_err();
        assert!(matches!(e, AllocateError::Unhealthy { .. }));
    }

    #[test]
    fn release_after_seen_or_grace_then_scrub() {
        let mut t = Table::default();
        let devs = [dev("a", true), dev("b", true), dev("c", true)];
        t.observe_devices(&devs);
        let m = map(&devs);
        let t0 = Instant::now();
        let g = Duration::from_secs(10);
        t.allocate("emu.sriov/vf", &["a".into(), "b".into()], &m, t0)
            .unwrap();
        // a listed, b not yet (within grace), c adopted (allocated before a restart).
        let in_use: HashSet<String> = ["a".into(), "c".into()].into();
        assert!(t.observe_in_use(&in_use, t0, g).is_empty());
        assert!(matches!(
            t.state("c"),
            VfState::Allocated { seen: true, .. }
        ));
        // a gone → released; b past grace → released; c stays.
        let in_use: HashSet<String> = ["c".into()].into();
        let rel = t.observe_in_use(&in_use, t0 + g, g);
        assert_eq!(rel, ["a", "b"]);
        // Scrubbing stays Healthy (Allocate waits for the scrub) but counts as held.
        assert_eq!(t.advertised("emu.sriov/vf", &devs)[0].health, HEALTHY);
        assert_eq!(
            t.held(),
            BTreeSet::from(["a".into(), "b".into(), "c".into()])
        );
        t.scrubbed("a", true);
        t.scrubbed("b", false);
        assert_eq!(t.state("a"), VfState::Free);
        assert_eq!(t.state("b"), VfState::Dirty);
        assert_eq!(t.held(), BTreeSet::from(["c".into()]));
        assert_eq!(t.observe_in_use(&in_use, t0 + g, g), ["b"]);
    }

    #[test]
    fn vanished_vfs_are_forgotten_unless_held() {
        let mut t = Table::default();
        let devs = [dev("a", true), dev("b", true), dev("c", true)];
        t.observe_devices(&devs);
        let t0 = Instant::now();
        t.allocate("emu.sriov/vf", &["a".into(), "b".into()], &map(&devs), t0)
            .unwrap();
        let g = Duration::from_secs(1);
        let rel = t.observe_in_use(&HashSet::from(["a".into()]), t0 + g, g);
        assert_eq!(rel, ["b"]);
        t.scrubbed("b", false);
        // b (dirty) and c (free) vanish; a stays held though the inventory dropped it.
        t.observe_devices(&[]);
        assert_eq!(t.state("b"), VfState::Free);
        assert!(matches!(t.state("a"), VfState::Allocated { .. }));
        assert_eq!(t.held(), BTreeSet::from(["a".into()]));
        // c comes back: listed once healthy again, not before.
        let back = [dev("c", false)];
        t.observe_devices(&back);
        assert!(t.advertised("emu.sriov/vf", &back).is_empty());
        let back = [dev("c", true)];
        t.observe_devices(&back);
        assert_eq!(t.advertised("emu.sriov/vf", &back).len(), 1);
    }
}
