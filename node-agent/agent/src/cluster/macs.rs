//! VF MACs in cluster mode: derived as in standalone mode ([`crate::mac::derived_mac`], from
//! node name, PF name and index) and kept in `RUN_DIR/state.json` ([`crate::state`]) so that
//! a VF keeps its MAC across agent restarts and node renames.
//!
//! The book holds one record per VF id: every VF served now, and every VF remembered from the
//! state file that has not been removed since (a pool that is invalid for a while keeps its
//! VFs' MACs for when it comes back). A new VF reuses its record when PF, index and model
//! match; otherwise it gets the first derived MAC no other record has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::config::NicModel;
use crate::mac::{self, Mac};
use crate::naming;
use crate::state::{self, Loaded, VfRecord};

/// The node's VF MACs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacBook {
    node_name: String,
    records: BTreeMap<String, VfRecord>,
}

impl MacBook {
    /// An empty book for `node_name`.
    pub fn new(node_name: &str) -> MacBook {
        MacBook {
            node_name: node_name.to_owned(),
            records: BTreeMap::new(),
        }
    }

    /// The book remembered in `run_dir` (empty on a first start; an unusable file is named
    /// in a warning and replaced at the next write).
    pub fn load(node_name: &str, run_dir: &Path) -> MacBook {
        let mut book = MacBook::new(node_name);
        let path = state::state_path(run_dir);
        match state::load(run_dir) {
            Loaded::Missing => {
                tracing::info!(state = %path.display(), "no state file: first start on this run dir");
            }
            Loaded::Unusable(why) => tracing::warn!(
                state = %path.display(),
                problem = %why,
                "ignoring the unusable state file: VF MACs are derived as on a first start"
            ),
            Loaded::Found(st) => {
                for r in st.vfs {
                    let usable = mac::parse_mac(&r.mac)
                        .is_some_and(|m| m != [0; 6] && !mac::is_multicast(&m));
                    if usable {
                        book.records.entry(r.id.clone()).or_insert(r);
                    }
                }
                tracing::info!(state = %path.display(), vfs = book.records.len(), "VF MACs remembered");
            }
        }
        book
    }

    /// The MAC of VF `index` of `pf` (a PF of `model`), recorded in the book.
    pub fn assign(&mut self, run_dir: &Path, pf: &str, index: u8, model: NicModel) -> Mac {
        let id = naming::vf_id(pf, index);
        let others: BTreeSet<Mac> = self
            .records
            .iter()
            .filter(|(rid, _)| **rid != id)
            .filter_map(|(_, r)| mac::parse_mac(&r.mac))
            .collect();
        let kept = self
            .records
            .get(&id)
            .filter(|r| r.pf == pf && r.index == index && r.model == model)
            .and_then(|r| mac::parse_mac(&r.mac))
            .filter(|m| !others.contains(m));
        let m = kept.unwrap_or_else(|| {
            (0u32..)
                .map(|attempt| mac::derived_mac(&self.node_name, pf, index, attempt))
                .find(|m| !others.contains(m))
                .unwrap_or_else(|| unreachable!("a 40-bit space cannot be exhausted by VFs"))
        });
        self.records.insert(
            id.clone(),
            VfRecord {
                socket: naming::vf_socket_path(run_dir, &id),
                id,
                pf: pf.to_owned(),
                index,
                model,
                mac: mac::format_mac(&m),
            },
        );
        m
    }

    /// Forgets VF `id` (removed by the agent).
    pub fn forget(&mut self, id: &str) {
        self.records.remove(id);
    }

    /// Writes the book to `RUN_DIR/state.json` (atomically).
    pub fn save(&self, run_dir: &Path) -> Result<(), state::StateError> {
        let st = state::NodeState {
            version: state::STATE_VERSION,
            node_name: self.node_name.clone(),
            vfs: self.records.values().cloned().collect(),
        };
        state::write(run_dir, &st).map_err(|source| state::StateError {
            path: state::state_path(run_dir),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("emu-macs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn derived_like_standalone_and_kept_across_restarts_and_renames() {
        let dir = temp_dir("keep");
        let mut b = MacBook::load("node-a", &dir);
        let m0 = b.assign(&dir, "igb0", 0, NicModel::Igb);
        assert_eq!(m0, mac::derived_mac("node-a", "igb0", 0, 0));
        let m1 = b.assign(&dir, "igb0", 1, NicModel::Igb);
        assert_eq!(b.assign(&dir, "igb0", 0, NicModel::Igb), m0, "stable");
        b.save(&dir).unwrap();
        // Restart under another node name: the remembered MACs win.
        let mut again = MacBook::load("node-b", &dir);
        assert_eq!(again.assign(&dir, "igb0", 1, NicModel::Igb), m1);
        assert_eq!(again.assign(&dir, "igb0", 0, NicModel::Igb), m0);
        // Another model on the same PF name: derived again (here: the same derivation).
        assert_eq!(
            again.assign(&dir, "igb0", 0, NicModel::Avf),
            mac::derived_mac("node-b", "igb0", 0, 0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn never_twice_the_same_mac() {
        let dir = temp_dir("uniq");
        let mut b = MacBook::new("n");
        // A record that took the MAC igb0-vf1 would derive.
        let taken = mac::derived_mac("n", "igb0", 1, 0);
        b.records.insert(
            "x0-vf0".into(),
            VfRecord {
                id: "x0-vf0".into(),
                pf: "x0".into(),
                index: 0,
                model: NicModel::Igb,
                mac: mac::format_mac(&taken),
                socket: "/s".into(),
            },
        );
        let m = b.assign(&dir, "igb0", 1, NicModel::Igb);
        assert_eq!(m, mac::derived_mac("n", "igb0", 1, 1));
        b.forget("x0-vf0");
        b.forget("igb0-vf1");
        assert_eq!(b.assign(&dir, "igb0", 1, NicModel::Igb), taken);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
