//! CDI spec files (CDI spec 1.1.0 format; we write the lowest version our fields need).
//! One file per resource, kind `emu.sriov/vf`, one device per VF named by its id, whose edits
//! bind-mount the VF's socket directory and set its socket path in the env.

use crate::config::{cdi_file_name, container_dir, env_name, CDI_KIND};
use crate::inventory::VfDevice;
use crate::response::container_socket;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Mount `type` needs 0.4.0; nothing else we use needs more.
pub const CDI_VERSION: &str = "0.4.0";

/// A spec file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    pub devices: Vec<CdiDevice>,
}

/// One device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CdiDevice {
    pub name: String,
    pub container_edits: ContainerEdits,
}

/// Edits applied to a container that gets the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerEdits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<CdiMount>,
}

/// A bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CdiMount {
    pub host_path: String,
    pub container_path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub options: Vec<String>,
}

/// Why a spec file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    #[error("cannot write CDI spec {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The spec for the VFs of `resource` in `devices`, sorted by id.
pub fn spec(resource: &str, devices: &[VfDevice]) -> Spec {
    let mut devs: Vec<&VfDevice> = devices.iter().filter(|d| d.resource == resource).collect();
    devs.sort_by(|a, b| a.id.cmp(&b.id));
    let env = env_name(resource);
    Spec {
        cdi_version: CDI_VERSION.to_owned(),
        kind: CDI_KIND.to_owned(),
        devices: devs
            .into_iter()
            .map(|d| CdiDevice {
                name: d.id.clone(),
                container_edits: ContainerEdits {
                    env: vec![format!(
                        "{env}_{}_SOCKET={}",
                        d.id.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                            .to_ascii_uppercase(),
                        container_socket(d)
                    )],
                    mounts: vec![CdiMount {
                        host_path: d
                            .socket
                            .parent()
                            .unwrap_or(Path::new("/"))
                            .to_string_lossy()
                            .into_owned(),
                        container_path: container_dir(&d.id).to_string_lossy().into_owned(),
                        kind: "bind".to_owned(),
                        options: vec!["rbind".to_owned(), "rw".to_owned()],
                    }],
                },
            })
            .collect(),
    }
}

/// Writes `spec` for `resource` into `dir` atomically (temp file, then rename: runtimes watch
/// the dir). Returns the file's path.
pub fn write(dir: &Path, resource: &str, spec: &Spec) -> Result<PathBuf, CdiError> {
    let path = dir.join(cdi_file_name(resource));
    let tmp = dir.join(format!(".{}.tmp", cdi_file_name(resource)));
    let err = |source| CdiError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let text = serde_json::to_vec_pretty(spec).map_err(|e| err(e.into()))?;
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(path)
}
