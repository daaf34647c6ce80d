//! The claim record of a netdev VF: `RUN_DIR/netdev/<vf>.json`, written (atomically: a temp
//! file renamed over) before the plugin acts on the netdev, removed when the VF is freed.

use super::proto::NetdevSettings;
use serde::{Deserialize, Serialize};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Who holds a netdev VF, where, and with which network settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub vf: String,
    pub container_id: String,
    pub if_name: String,
    /// The pod's network namespace path, as CNI_NETNS gave it.
    pub netns: String,
    #[serde(default)]
    pub settings: NetdevSettings,
    /// The CNI network that made the claim (empty in records of older agents: never
    /// garbage-collected).
    #[serde(default)]
    pub network: String,
}

/// `RUN_DIR/netdev`.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("netdev")
}

/// The record of VF `vf`.
pub fn path(dir: &Path, vf: &str) -> PathBuf {
    dir.join(format!("{vf}.json"))
}

/// The remembered claim on `vf`, if any. An unreadable record is logged and ignored (the VF
/// is then free).
pub fn load(dir: &Path, vf: &str) -> Option<Claim> {
    let p = path(dir, vf);
    let text = match std::fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %p.display(), error = %e, "cannot read a netdev claim; ignoring it");
            return None;
        }
    };
    match serde_json::from_slice::<Claim>(&text) {
        Ok(c) if c.vf == vf => Some(c),
        Ok(_) | Err(_) => {
            tracing::warn!(file = %p.display(), "malformed netdev claim; ignoring it");
            None
        }
    }
}

/// Records `claim` durably before anything acts on it.
pub fn store(dir: &Path, claim: &Claim) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let p = path(dir, &claim.vf);
    let tmp = p.with_extension("json.tmp");
    let json = serde_json::to_vec(claim).map_err(io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&json)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)
}

/// Forgets the claim on `vf` (nothing to do when there is none).
pub fn remove(dir: &Path, vf: &str) {
    let p = path(dir, vf);
    if let Err(e) = std::fs::remove_file(&p) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(file = %p.display(), error = %e, "cannot remove a netdev claim");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_remove() {
        let d = std::env::temp_dir().join(format!("emu-claims-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(load(&d, "p-vf0"), None);
        let c = Claim {
            vf: "p-vf0".into(),
            container_id: "c1".into(),
            if_name: "net1".into(),
            netns: "/var/run/netns/x".into(),
            settings: NetdevSettings {
                vlan: Some(5),
                ..Default::default()
            },
            network: "red".into(),
        };
        store(&d, &c).unwrap();
        assert_eq!(load(&d, "p-vf0"), Some(c.clone()));
        assert_eq!(load(&d, "p-vf1"), None);
        std::fs::write(path(&d, "p-vf1"), b"{nonsense").unwrap();
        assert_eq!(load(&d, "p-vf1"), None, "malformed: ignored");
        remove(&d, "p-vf0");
        remove(&d, "p-vf0");
        assert_eq!(load(&d, "p-vf0"), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
