//! GetPreferredAllocation, pure: must-include ids first, then fill preferring VFs on a PF
//! already chosen, then on a dataplane core already chosen, then the PF with the most
//! candidates (so a request fits on one PF). Ties break on (pf, id) order: deterministic.

use crate::inventory::VfDevice;
use std::collections::{BTreeMap, HashMap};

/// The preferred `size` ids out of `available`. Unknown ids are used last, as given.
pub fn preferred(
    available: &[String],
    must_include: &[String],
    size: usize,
    devices: &BTreeMap<String, VfDevice>,
) -> Vec<String> {
    let mut chosen: Vec<String> = Vec::with_capacity(size);
    for id in must_include {
        if !chosen.contains(id) {
            chosen.push(id.clone());
        }
    }
    let mut candidates: Vec<&String> = available.iter().filter(|id| !chosen.contains(id)).collect();
    candidates.sort_by(|a, b| sort_key(devices, a).cmp(&sort_key(devices, b)));
    candidates.dedup();
    let mut free_per_pf: HashMap<&str, usize> = HashMap::new();
    for id in &candidates {
        if let Some(d) = devices.get(id.as_str()) {
            *free_per_pf.entry(d.pf.as_str()).or_default() += 1;
        }
    }
    while chosen.len() < size && !candidates.is_empty() {
        let chosen_devs: Vec<&VfDevice> = chosen.iter().filter_map(|id| devices.get(id)).collect();
        let score = |id: &String| -> (bool, bool, usize) {
            match devices.get(id.as_str()) {
                Some(d) => (
                    chosen_devs.iter().any(|c| c.pf == d.pf),
                    d.core.is_some() && chosen_devs.iter().any(|c| c.core == d.core),
                    free_per_pf.get(d.pf.as_str()).copied().unwrap_or(0),
                ),
                None => (false, false, 0),
            }
        };
        // First best in sort order wins ties.
        let mut best = 0;
        let mut best_score = score(candidates[0]);
        for (i, c) in candidates.iter().enumerate().skip(1) {
            let s = score(c);
            if s > best_score {
                best = i;
                best_score = s;
            }
        }
        let id = candidates.remove(best);
        if let Some(d) = devices.get(id.as_str()) {
            if let Some(n) = free_per_pf.get_mut(d.pf.as_str()) {
                *n = n.saturating_sub(1);
            }
        }
        chosen.push(id.clone());
    }
    chosen
}

/// (pf, id length, id): `vf2` before `vf10`.
fn sort_key<'a>(devices: &'a BTreeMap<String, VfDevice>, id: &'a str) -> (&'a str, usize, &'a str) {
    let pf = devices.get(id).map_or("\u{10ffff}", |d| d.pf.as_str());
    (pf, id.len(), id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devs(spec: &[(&str, &str, Option<u32>)]) -> BTreeMap<String, VfDevice> {
        spec.iter()
            .map(|(id, pf, core)| {
                (
                    id.to_string(),
                    VfDevice {
                        id: id.to_string(),
                        resource: "emu.sriov/vf".into(),
                        pf: pf.to_string(),
                        model: "igbvf".into(),
                        vendor_id: String::new(),
                        device_id: String::new(),
                        mac: String::new(),
                        socket: Default::default(),
                        healthy: true,
                        core: *core,
                    },
                )
            })
            .collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn must_include_then_same_pf() {
        let d = devs(&[
            ("a0", "a", None),
            ("a1", "a", None),
            ("b0", "b", None),
            ("b1", "b", None),
            ("b2", "b", None),
        ]);
        let all = s(&["a0", "a1", "b0", "b1", "b2"]);
        // Nothing required: the PF with most free VFs.
        assert_eq!(preferred(&all, &[], 2, &d), s(&["b0", "b1"]));
        // a1 required: its PF sibling next.
        assert_eq!(preferred(&all, &s(&["a1"]), 2, &d), s(&["a1", "a0"]));
        // More than fits on a: spill to b.
        assert_eq!(preferred(&all, &s(&["a1"]), 3, &d), s(&["a1", "a0", "b0"]));
        assert_eq!(preferred(&all, &[], 9, &d).len(), 5);
    }

    #[test]
    fn same_core_breaks_ties_and_order_is_natural() {
        let d = devs(&[
            ("p-vf2", "p", Some(0)),
            ("p-vf10", "p", Some(1)),
            ("p-vf11", "p", Some(1)),
        ]);
        let all = s(&["p-vf11", "p-vf10", "p-vf2"]);
        assert_eq!(preferred(&all, &[], 1, &d), s(&["p-vf2"]));
        assert_eq!(
            preferred(&all, &s(&["p-vf10"]), 2, &d),
            s(&["p-vf10", "p-vf11"])
        );
    }
}
