//! Building an Allocate answer for one container, pure: mounts of each VF's socket directory,
//! env vars, the KubeVirt hook annotation, CDI names.

use crate::api::v1beta1::{CdiDevice, ContainerAllocateResponse, Mount};
use crate::config::{annotation_key, by_index_dir, cdi_device_name, container_dir, env_name};
use crate::inventory::VfDevice;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One VF in `EMU_SRIOV_VF_<RES>_INFO` and in the hook annotation.
#[derive(Debug, Serialize)]
pub struct VfInfo<'a> {
    /// The socket inside the container.
    pub socket: String,
    /// The socket on the host.
    pub host_socket: &'a Path,
    pub mac: &'a str,
    pub model: &'a str,
    pub vendor_id: &'a str,
    pub device_id: &'a str,
    pub pf: &'a str,
}

/// The container path of VF `d`'s socket: `/var/run/emu-sriov/<id>/<socket file name>`.
pub fn container_socket(d: &VfDevice) -> String {
    let file = d
        .socket
        .file_name()
        .map_or_else(|| "vf.sock".into(), |f| f.to_string_lossy());
    container_dir(&d.id)
        .join(&*file)
        .to_string_lossy()
        .into_owned()
}

/// The `{id: VfInfo}` JSON of `devices`.
pub fn info_json(devices: &[&VfDevice]) -> String {
    let map: BTreeMap<&str, VfInfo<'_>> = devices
        .iter()
        .map(|d| {
            (
                d.id.as_str(),
                VfInfo {
                    socket: container_socket(d),
                    host_socket: &d.socket,
                    mac: &d.mac,
                    model: &d.model,
                    vendor_id: &d.vendor_id,
                    device_id: &d.device_id,
                    pf: &d.pf,
                },
            )
        })
        .collect();
    // Serializing string maps cannot fail.
    serde_json::to_string(&map).unwrap_or_default()
}

/// The answer for one container holding `devices` of `resource`.
pub fn container_response(
    resource: &str,
    devices: &[&VfDevice],
    cdi: bool,
) -> ContainerAllocateResponse {
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    let env = env_name(resource);
    let info = info_json(devices);
    let mut envs = std::collections::HashMap::new();
    envs.insert(format!("{env}_INFO"), info.clone());
    envs.insert(env, ids.join(","));
    let mut annotations = std::collections::HashMap::new();
    annotations.insert(annotation_key(resource), info);
    let host_dir = |d: &VfDevice| {
        d.socket
            .parent()
            .unwrap_or(Path::new("/"))
            .to_string_lossy()
            .into_owned()
    };
    // Each VF twice: by id (what the env names) and by index (what a KubeVirt hook sidecar,
    // which sees only the VMI, can name). Both are the VF's own directory: the mode and owner
    // the agent gave it (socketOwner, access.rs) are what the container sees.
    let mounts = devices
        .iter()
        .map(|d| Mount {
            container_path: container_dir(&d.id).to_string_lossy().into_owned(),
            host_path: host_dir(d),
            read_only: false,
        })
        .chain(devices.iter().enumerate().map(|(n, d)| Mount {
            container_path: by_index_dir(resource, n).to_string_lossy().into_owned(),
            host_path: host_dir(d),
            read_only: false,
        }))
        .collect();
    let cdi_devices = if cdi {
        ids.iter()
            .map(|id| CdiDevice {
                name: cdi_device_name(id),
            })
            .collect()
    } else {
        Vec::new()
    };
    ContainerAllocateResponse {
        envs,
        mounts,
        devices: Vec::new(),
        annotations,
        cdi_devices,
    }
}
