//! What the agent remembers across restarts: `RUN_DIR/state.json`.
//!
//! VF ids and socket paths follow from the config (`<pf>-vf<index>`, `RUN_DIR/vfs/<id>/vf.sock`),
//! but a VF's MAC must not change under a guest (DHCP leases, neighbour caches, firewall rules):
//! a derived MAC depends on the node name, which can change (a renamed host, a moved config).
//! So the MAC each VF was given is written down and reused, whatever the derivation would say
//! now. The file is small and versioned:
//!
//! ```json
//! {"version":1,"nodeName":"node-a","vfs":[{"id":"igb0-vf0","pf":"igb0","index":0,
//!   "model":"igb","mac":"02:9f:2f:99:ae:66","socket":"/run/emu-sriov/vfs/igb0-vf0/vf.sock"}]}
//! ```
//!
//! Rules, applied by [`restore`] at start:
//! - a VF of the config whose record matches (same id, PF, index and model) keeps the recorded
//!   MAC, unless the config sets a MAC for it (the config wins, and a log line says so) or
//!   another VF's configured MAC now uses it;
//! - records of VFs no longer configured are dropped, VFs without a record get their MAC as
//!   a first start would (derived, avoiding every MAC in use); one log line lists the changes;
//! - an unreadable, malformed or foreign-version file is reported with a warning and replaced,
//!   never a reason not to start.
//!
//! The file is written atomically (temporary file in the same directory, fsync, rename, fsync
//! of the directory), mode 0600, at every start, before any socket is served. Nothing changes
//! it at run time: the MACs in force are the ones the agent assigned. A trusted guest may set
//! another MAC through the mailbox (igb `SET_MAC_ADDR`) or virtchnl (AVF `ADD_ETH_ADDR`
//! PRIMARY); that is runtime state of the PF model and is not recorded: the igb PF forgets it
//! at the VF's next reset anyway, the AVF PF keeps it until the agent stops, and after a
//! restart the guest driver re-applies it when it resets the VF.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{AgentConfig, NicModel};
use crate::mac::{self, Mac, MacRequest};
use crate::naming;

/// File name of the state file inside the run dir.
pub const STATE_FILE_NAME: &str = "state.json";

/// The schema version this agent reads and writes. A file with another version is replaced.
pub const STATE_VERSION: u32 = 1;

/// The state file's path: `RUN_DIR/state.json`.
pub fn state_path(run_dir: &Path) -> PathBuf {
    run_dir.join(STATE_FILE_NAME)
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeState {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// The node name the agent ran with (information: MACs are kept even when it changes).
    pub node_name: String,
    /// Every VF, in config order.
    pub vfs: Vec<VfRecord>,
}

/// One VF as remembered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VfRecord {
    /// `igb0-vf0`.
    pub id: String,
    /// PF name, `igb0`.
    pub pf: String,
    /// VF index within the PF.
    pub index: u8,
    /// PF model: a record is only reused for a VF of the same model.
    pub model: NicModel,
    /// The MAC in force, `02:..`, lower-case.
    pub mac: String,
    /// Absolute path of the VF's vfio-user socket.
    pub socket: PathBuf,
}

impl NodeState {
    /// The record of `config` as it will run.
    pub fn of(config: &AgentConfig) -> NodeState {
        NodeState {
            version: STATE_VERSION,
            node_name: config.node_name.clone(),
            vfs: config
                .vfs()
                .map(|(pf, vf)| {
                    let id = naming::vf_id(&pf.name, vf.index);
                    VfRecord {
                        socket: naming::vf_socket_path(&config.run_dir, &id),
                        id,
                        pf: pf.name.clone(),
                        index: vf.index,
                        model: pf.model,
                        mac: mac::format_mac(&vf.mac),
                    }
                })
                .collect(),
        }
    }
}

/// What was found in the run dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// No state file: a first start.
    Missing,
    Found(NodeState),
    /// A file that cannot be used; why, in words.
    Unusable(String),
}

/// Reads `RUN_DIR/state.json`. Never fails: problems come back as [`Loaded::Unusable`].
pub fn load(run_dir: &Path) -> Loaded {
    let path = state_path(run_dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return Loaded::Unusable(format!("cannot read it: {e}")),
    };
    // The version first, so that a newer agent's file is named as such, not as "malformed".
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    match serde_json::from_slice::<Version>(&bytes) {
        Ok(Version { version }) if version != STATE_VERSION => {
            return Loaded::Unusable(format!(
                "schema version {version}, this agent reads version {STATE_VERSION}"
            ))
        }
        Ok(_) => {}
        Err(e) => return Loaded::Unusable(format!("not a state file: {e}")),
    }
    match serde_json::from_slice::<NodeState>(&bytes) {
        Ok(state) => Loaded::Found(state),
        Err(e) => Loaded::Unusable(format!("not a state file: {e}")),
    }
}

/// Writes `state` to `RUN_DIR/state.json` atomically: a reader (or a restart after a crash or
/// power loss) sees either the old file or the new one, never a mix.
pub fn write(run_dir: &Path, state: &NodeState) -> io::Result<()> {
    let path = state_path(run_dir);
    let tmp = run_dir.join(format!(".{STATE_FILE_NAME}.tmp"));
    let mut text = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    text.push(b'\n');
    // A leftover from a crash between create and rename.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&text)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, &path)?;
    // The rename itself is durable only once the directory is.
    fs::File::open(run_dir)?.sync_all()
}

/// How the config and the remembered state were brought together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// VFs that kept their recorded MAC.
    pub kept: Vec<String>,
    /// Configured VFs without a (usable) record: MAC as on a first start.
    pub added: Vec<String>,
    /// Records dropped: the VF is no longer configured, or is now another model or PF.
    pub dropped: Vec<String>,
    /// VFs whose recorded MAC was not reused: `(id, why)`.
    pub replaced: Vec<(String, String)>,
}

impl Reconciliation {
    /// Nothing but kept VFs: the state matched the config.
    pub fn unchanged(&self) -> bool {
        self.added.is_empty() && self.dropped.is_empty() && self.replaced.is_empty()
    }
}

/// Gives the VFs of `config` their remembered MACs where the rules above allow, re-deriving
/// the others so that every MAC stays unique. Pure: the caller loads and writes.
pub fn reconcile(config: &mut AgentConfig, remembered: &NodeState) -> Reconciliation {
    let mut out = Reconciliation::default();
    let mut records: BTreeMap<&str, &VfRecord> = BTreeMap::new();
    for r in &remembered.vfs {
        records.entry(r.id.as_str()).or_insert(r);
    }
    // Configured MACs are fixed; a remembered MAC may not take one of them.
    let configured: HashMap<Mac, String> = config
        .vfs()
        .filter(|(_, vf)| vf.mac_configured)
        .map(|(pf, vf)| (vf.mac, naming::vf_id(&pf.name, vf.index)))
        .collect();
    let mut taken: HashSet<Mac> = HashSet::new();
    let mut wanted: Vec<Option<Mac>> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (pf, vf) in config.vfs() {
        let id = naming::vf_id(&pf.name, vf.index);
        let record = records.get(id.as_str()).copied();
        seen.insert(id.clone());
        let recorded =
            record.filter(|r| r.pf == pf.name && r.index == vf.index && r.model == pf.model);
        if record.is_some() && recorded.is_none() {
            out.dropped.push(id.clone());
        }
        let remembered_mac = recorded.and_then(|r| mac::parse_mac(&r.mac));
        if vf.mac_configured {
            if remembered_mac.is_some_and(|m| m != vf.mac) {
                out.replaced
                    .push((id, "the config sets another MAC".into()));
            } else if recorded.is_some() {
                out.kept.push(id);
            } else {
                out.added.push(id);
            }
            wanted.push(Some(vf.mac));
            continue;
        }
        let verdict = match (recorded, remembered_mac) {
            (None, _) => Err(None),
            (Some(_), None) => Err(Some("the recorded MAC is malformed".to_owned())),
            (Some(_), Some(m)) if m == [0; 6] || mac::is_multicast(&m) => {
                Err(Some("the recorded MAC is not unicast".to_owned()))
            }
            (Some(_), Some(m)) => match configured.get(&m) {
                Some(owner) => Err(Some(format!("the config gives its MAC to {owner}"))),
                None if !taken.insert(m) => {
                    Err(Some("another VF's record has the same MAC".to_owned()))
                }
                None => Ok(m),
            },
        };
        match verdict {
            Ok(m) => {
                out.kept.push(id);
                wanted.push(Some(m));
            }
            Err(why) => {
                match why {
                    Some(why) => out.replaced.push((id, why)),
                    None => out.added.push(id),
                }
                wanted.push(None);
            }
        }
    }
    out.dropped.extend(
        remembered
            .vfs
            .iter()
            .filter(|r| !seen.contains(&r.id))
            .map(|r| r.id.clone()),
    );
    let requests: Vec<MacRequest<'_>> = config
        .vfs()
        .zip(&wanted)
        .map(|((pf, vf), explicit)| MacRequest {
            pf: &pf.name,
            index: vf.index,
            explicit: *explicit,
        })
        .collect();
    let macs = mac::assign_macs(&config.node_name, &requests);
    for (vf, m) in config
        .pfs
        .iter_mut()
        .flat_map(|pf| pf.vfs.iter_mut())
        .zip(macs)
    {
        vf.mac = m;
    }
    out
}

/// Why the state could not be recorded.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the state file {} (VF MACs would not survive a restart): check that the run dir is writable and the disk not full", path.display())]
pub struct StateError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// At start: loads the state file, applies it to `config` ([`reconcile`]), logs what happened
/// and writes the state the agent will run with. The run dir must exist.
pub fn restore(config: &mut AgentConfig) -> Result<Reconciliation, StateError> {
    let path = state_path(&config.run_dir);
    let outcome = match load(&config.run_dir) {
        Loaded::Missing => {
            tracing::info!(state = %path.display(), "no state file: first start on this run dir");
            None
        }
        Loaded::Unusable(why) => {
            tracing::warn!(
                state = %path.display(),
                problem = %why,
                "ignoring the unusable state file and replacing it: VF MACs are assigned as on a first start"
            );
            None
        }
        Loaded::Found(remembered) => Some(reconcile(config, &remembered)),
    };
    match &outcome {
        Some(r) if r.unchanged() => {
            tracing::info!(state = %path.display(), vfs = r.kept.len(), "state file matches the configuration: VF MACs kept");
        }
        Some(r) => {
            let replaced: Vec<String> = r
                .replaced
                .iter()
                .map(|(id, why)| format!("{id} ({why})"))
                .collect();
            tracing::info!(
                state = %path.display(),
                kept = r.kept.len(),
                added = %r.added.join(","),
                dropped = %r.dropped.join(","),
                new_mac = %replaced.join(", "),
                "configuration changed since the state was written: reconciled"
            );
        }
        None => {}
    }
    write(&config.run_dir, &NodeState::of(config)).map_err(|source| StateError {
        path: path.clone(),
        source,
    })?;
    Ok(outcome.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, HostDefaults};

    fn config(yaml: &str, node: &str) -> AgentConfig {
        ConfigFile::from_yaml(yaml, "test")
            .unwrap()
            .validate_with(&HostDefaults {
                node_name: Some(node.into()),
                run_dir: "/run/x".into(),
            })
            .unwrap()
    }

    fn macs(c: &AgentConfig) -> Vec<(String, Mac)> {
        c.vfs()
            .map(|(pf, vf)| (naming::vf_id(&pf.name, vf.index), vf.mac))
            .collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("emu-state-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    const TWO_PFS: &str = "pfs: [{model: igb, vfs: 2}, {model: avf, vfs: 2}]";

    #[test]
    fn same_config_keeps_everything() {
        let first = config(TWO_PFS, "a");
        let state = NodeState::of(&first);
        let mut again = config(TWO_PFS, "a");
        let r = reconcile(&mut again, &state);
        assert!(r.unchanged(), "{r:?}");
        assert_eq!(r.kept.len(), 4);
        assert_eq!(macs(&again), macs(&first));
    }

    #[test]
    fn macs_survive_a_node_rename() {
        let first = config(TWO_PFS, "a");
        let mut renamed = config(TWO_PFS, "b");
        assert_ne!(
            macs(&renamed),
            macs(&first),
            "derivation depends on the node name"
        );
        let r = reconcile(&mut renamed, &NodeState::of(&first));
        assert!(r.unchanged(), "{r:?}");
        assert_eq!(macs(&renamed), macs(&first));
    }

    #[test]
    fn changed_config_keeps_survivors_drops_the_rest() {
        let first = config(TWO_PFS, "a");
        let state = NodeState::of(&first);
        // igb0 shrinks to one VF, avf0 grows to three, nodeName changes.
        let mut next = config("pfs: [{model: igb, vfs: 1}, {model: avf, vfs: 3}]", "b");
        let r = reconcile(&mut next, &state);
        assert_eq!(r.kept, ["igb0-vf0", "avf0-vf0", "avf0-vf1"]);
        assert_eq!(r.added, ["avf0-vf2"]);
        assert_eq!(r.dropped, ["igb0-vf1"]);
        assert!(r.replaced.is_empty());
        let old: HashMap<String, Mac> = macs(&first).into_iter().collect();
        let now = macs(&next);
        for (id, m) in &now[..3] {
            assert_eq!(old[id], *m, "{id}");
        }
        let unique: HashSet<Mac> = now.iter().map(|(_, m)| *m).collect();
        assert_eq!(unique.len(), now.len());
    }

    #[test]
    fn the_config_wins_and_models_must_match() {
        let first = config(TWO_PFS, "a");
        let state = NodeState::of(&first);
        let igb1_mac = mac::format_mac(&first.pfs[0].vfs[1].mac);
        // igb0-vf0 gets an explicit MAC; avf0-vf0 an explicit MAC equal to igb0-vf1's record;
        // the second PF is renamed so that avf0 is now an igb PF named avf0.
        let yaml = format!(
            "pfs: [{{model: igb, vfs: 2, vf: [{{index: 0, mac: '02:00:00:00:00:01'}}]}}, \
             {{model: igb, name: avf0, vfs: 2, vf: [{{index: 0, mac: '{igb1_mac}'}}]}}]"
        );
        let mut next = config(&yaml, "a");
        let r = reconcile(&mut next, &state);
        let replaced: Vec<&str> = r.replaced.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(replaced, ["igb0-vf0", "igb0-vf1"]);
        assert!(r.replaced[1].1.contains("avf0-vf0"), "{r:?}");
        assert_eq!(r.dropped, ["avf0-vf0", "avf0-vf1"]);
        assert_eq!(next.pfs[0].vfs[0].mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(mac::format_mac(&next.pfs[1].vfs[0].mac), igb1_mac);
        let all: HashSet<Mac> = macs(&next).iter().map(|(_, m)| *m).collect();
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn write_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = temp_dir("rt");
        assert_eq!(load(&dir), Loaded::Missing);
        let mut c = config(TWO_PFS, "a");
        c.run_dir = dir.clone();
        let state = NodeState::of(&c);
        write(&dir, &state).unwrap();
        write(&dir, &state).unwrap();
        assert_eq!(load(&dir), Loaded::Found(state));
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [STATE_FILE_NAME]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(state_path(&dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn unusable_files_are_named_not_fatal() {
        let dir = temp_dir("bad");
        let path = state_path(&dir);
        for (text, needle) in [
            (
                &b"{\"version\":1,\"nodeName\":\"a\",\"vfs\":[{"[..],
                "not a state file",
            ),
            (b"\x00\xff garbage", "not a state file"),
            (b"{\"version\":7,\"whatever\":true}", "schema version 7"),
            (
                b"{\"version\":1,\"nodeName\":\"a\",\"vfs\":[],\"x\":1}",
                "unknown field",
            ),
        ] {
            fs::write(&path, text).unwrap();
            match load(&dir) {
                Loaded::Unusable(why) => assert!(why.contains(needle), "{why}"),
                other => panic!("{other:?} for {text:?}"),
            }
        }
        // restore() replaces it and starts as on a first start.
        let mut c = config(TWO_PFS, "a");
        c.run_dir = dir.clone();
        let fresh = c.clone();
        let r = restore(&mut c).unwrap();
        assert_eq!(r, Reconciliation::default());
        assert_eq!(macs(&c), macs(&fresh));
        assert_eq!(load(&dir), Loaded::Found(NodeState::of(&c)));
        let _ = fs::remove_dir_all(&dir);
    }
}
