//! Which VFs the virt-launcher pod was given, from what the hook can see. Pure parsers: the
//! caller reads the environment and files.
//!
//! | source | shape | where it comes from |
//! |---|---|---|
//! | device plugin env | `EMU_SRIOV_VF_<CLASS>_INFO` = `{id: {socket, host_socket, mac, …}}` | Allocate (node-agent/device-plugin `response.rs`); only in the container that requested VFs |
//! | network-info | `{"interfaces":[{"network", "deviceInfo":{"type":"vhost-user","vhost-user":{"path"}}}]}` | KubeVirt's downward API (`/etc/podinfo/network-info`) for a binding plugin with `downwardAPI: device-info` |
//! | by index | `/var/run/emu-sriov/by-index/<class>/<n>/vf.sock` | Allocate's second mount of each VF, numbered per resource in allocation order |
//!
//! network-info carries the device-info Multus read for the network; KubeVirt round-trips it
//! through the typed NAD-client struct, which drops an unknown `vfio-user` type, so emu-sriov
//! reports `vhost-user` with our socket's path (design kubernetes.md §5.3). Only paths under
//! [`CONTAINER_SOCKET_ROOT`] count as ours: a real vhost-user interface is left alone.

use emu_device_plugin::config::{
    by_index_dir as plugin_by_index_dir, env_name, CONTAINER_SOCKET_ROOT,
};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One VF the pod was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenVf {
    /// Device plugin id (`igb0-vf1`), or the network name for network-info.
    pub id: String,
    /// The env var (`EMU_SRIOV_VF_VF`) its resource maps to, when known.
    pub env: Option<String>,
    /// The VMI network it was given for (network-info only).
    pub network: Option<String>,
    /// Socket path in the compute container; empty when the source named none.
    pub socket: String,
    /// Socket path on the node (device plugin env only).
    pub host_socket: Option<String>,
}

/// A malformed allocation source.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("{var} is not the device plugin's JSON ({{\"<vf id>\": {{\"socket\": …}}}}); it is set by emu-sriov's Allocate and must not be edited")]
    EnvJson {
        var: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is not KubeVirt network-info JSON ({{\"interfaces\": [...]}})")]
    NetworkInfoJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct EnvVf {
    #[serde(default)]
    socket: String,
    #[serde(default)]
    host_socket: Option<String>,
}

/// VFs from the device plugin's `EMU_SRIOV_VF_<CLASS>_INFO` variables among `vars`.
pub fn from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<GivenVf>, AllocError> {
    let mut out = Vec::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("EMU_SRIOV_VF_") && k.ends_with("_INFO"))
        .collect();
    vars.sort();
    for (k, v) in vars {
        let map: BTreeMap<String, EnvVf> =
            serde_json::from_str(&v).map_err(|source| AllocError::EnvJson {
                var: k.clone(),
                source,
            })?;
        let env = k.trim_end_matches("_INFO").to_owned();
        for (id, vf) in map {
            out.push(GivenVf {
                id,
                env: Some(env.clone()),
                network: None,
                socket: vf.socket,
                host_socket: vf.host_socket,
            });
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct NetworkInfo {
    #[serde(default)]
    interfaces: Vec<NetworkInterface>,
}

#[derive(Deserialize)]
struct NetworkInterface {
    #[serde(default)]
    network: String,
    #[serde(rename = "deviceInfo", default)]
    device_info: Option<DeviceInfo>,
}

#[derive(Deserialize)]
struct DeviceInfo {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(rename = "vhost-user", default)]
    vhost_user: Option<VhostUser>,
}

#[derive(Deserialize)]
struct VhostUser {
    #[serde(default)]
    path: String,
}

/// VFs from KubeVirt's network-info (the file at `path`, contents `json`). Networks whose
/// device-info is not an emu-sriov socket are skipped; a network whose device-info names
/// none of ours is reported with an empty socket only if its path is under our root.
pub fn from_network_info(path: &str, json: &[u8]) -> Result<Vec<GivenVf>, AllocError> {
    let info: NetworkInfo =
        serde_json::from_slice(json).map_err(|source| AllocError::NetworkInfoJson {
            path: path.to_owned(),
            source,
        })?;
    Ok(info
        .interfaces
        .into_iter()
        .filter_map(|i| {
            let d = i.device_info?;
            if d.kind != "vhost-user" {
                return None;
            }
            let p = d.vhost_user?.path;
            if !p.starts_with(&format!("{CONTAINER_SOCKET_ROOT}/")) {
                return None;
            }
            Some(GivenVf {
                id: i.network.clone(),
                env: None,
                network: Some(i.network),
                socket: p,
                host_socket: None,
            })
        })
        .collect())
}

/// The directory Allocate mounts VF `n` (0-based, allocation order) of `resource` at, besides
/// `/var/run/emu-sriov/<id>/`: `/var/run/emu-sriov/by-index/<class>/<n>`.
pub fn by_index_dir(resource: &str, n: usize) -> String {
    plugin_by_index_dir(resource, n)
        .to_string_lossy()
        .into_owned()
}

/// VFs by index for `counts` (`resource` → how many the compute container holds).
pub fn by_index(counts: &BTreeMap<String, usize>) -> Vec<GivenVf> {
    let mut out = Vec::new();
    for (res, &n) in counts {
        for i in 0..n {
            out.push(GivenVf {
                id: format!("{res}#{i}"),
                env: Some(env_name(res)),
                network: None,
                socket: format!("{}/vf.sock", by_index_dir(res, i)),
                host_socket: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_info_parses_the_device_plugins_json() {
        let vars = vec![
            ("PATH".to_owned(), "/bin".to_owned()),
            ("EMU_SRIOV_VF_VF".to_owned(), "igb0-vf0".to_owned()),
            (
                "EMU_SRIOV_VF_VF_INFO".to_owned(),
                r#"{"igb0-vf0":{"socket":"/var/run/emu-sriov/igb0-vf0/vf.sock","host_socket":"/run/emu-sriov/vfs/igb0-vf0/vf.sock","mac":"02:00:00:00:00:01","model":"igbvf","vendor_id":"0x8086","device_id":"0x10ca","pf":"igb0"}}"#.to_owned(),
            ),
        ];
        let v = from_env(vars).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].id, "igb0-vf0");
        assert_eq!(v[0].env.as_deref(), Some("EMU_SRIOV_VF_VF"));
        assert_eq!(v[0].socket, "/var/run/emu-sriov/igb0-vf0/vf.sock");
    }

    #[test]
    fn bad_env_json_names_the_variable() {
        let e = from_env(vec![("EMU_SRIOV_VF_VF_INFO".into(), "{".into())]).unwrap_err();
        assert!(e.to_string().contains("EMU_SRIOV_VF_VF_INFO"), "{e}");
    }

    #[test]
    fn network_info_keeps_only_our_sockets() {
        let j = br#"{"interfaces":[
            {"network":"vf-net","deviceInfo":{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"client","path":"/var/run/emu-sriov/igb0-vf3/vf.sock"}}},
            {"network":"dpdk","deviceInfo":{"type":"vhost-user","vhost-user":{"mode":"server","path":"/var/lib/cni/vhost/sock0"}}},
            {"network":"sriov","deviceInfo":{"type":"pci","pci":{"pci-address":"0000:81:00.1"}}},
            {"network":"plain"}]}"#;
        let v = from_network_info("/etc/podinfo/network-info", j).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].network.as_deref(), Some("vf-net"));
        assert_eq!(v[0].socket, "/var/run/emu-sriov/igb0-vf3/vf.sock");
    }

    #[test]
    fn by_index_paths() {
        let mut c = BTreeMap::new();
        c.insert("emu.sriov/vf".to_owned(), 2);
        let v = by_index(&c);
        assert_eq!(
            v.iter().map(|g| g.socket.as_str()).collect::<Vec<_>>(),
            [
                "/var/run/emu-sriov/by-index/vf/0/vf.sock",
                "/var/run/emu-sriov/by-index/vf/1/vf.sock"
            ]
        );
    }
}
