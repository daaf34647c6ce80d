//! Plugin configuration and on-disk names.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default extended resource name.
pub const DEFAULT_RESOURCE: &str = "emu.sriov/vf";
/// `DevicePluginPath`.
pub const DEFAULT_DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// The kubelet's pod-resources socket.
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// The dynamic CDI spec dir.
pub const DEFAULT_CDI_DIR: &str = "/var/run/cdi";
/// Where a VF's socket directory appears inside the container: `<this>/<vf-id>/`.
pub const CONTAINER_SOCKET_ROOT: &str = "/var/run/emu-sriov";
/// CDI kind of every VF (kubernetes.md §3); qualified device names are `emu.sriov/vf=<id>`.
pub const CDI_KIND: &str = "emu.sriov/vf";

/// How the plugins run.
#[derive(Debug, Clone)]
pub struct DevicePluginConfig {
    /// Kubelet's device-plugin dir: `kubelet.sock` and our sockets.
    pub device_plugin_dir: PathBuf,
    /// Kubelet's pod-resources socket, polled to learn which VFs are in use.
    pub pod_resources_socket: PathBuf,
    /// CDI spec dir; `None` disables CDI (no spec files, no `cdi_devices`).
    pub cdi_dir: Option<PathBuf>,
    /// Resource names to serve, one server each. VFs whose resource is not here are ignored.
    pub resources: Vec<String>,
    /// How often the inventory is read (health changes reach ListAndWatch within this).
    pub inventory_poll: Duration,
    /// How often `kubelet.sock` and our sockets are checked for a kubelet restart.
    pub kubelet_watch: Duration,
    /// How often pod-resources `List` is polled.
    pub pod_resources_poll: Duration,
    /// An allocation pod-resources has never listed is released after this long (the pod
    /// failed admission after Allocate).
    pub release_grace: Duration,
}

impl Default for DevicePluginConfig {
    fn default() -> Self {
        DevicePluginConfig {
            device_plugin_dir: DEFAULT_DEVICE_PLUGIN_DIR.into(),
            pod_resources_socket: DEFAULT_POD_RESOURCES_SOCKET.into(),
            cdi_dir: None,
            resources: vec![DEFAULT_RESOURCE.to_owned()],
            inventory_poll: Duration::from_millis(100),
            kubelet_watch: Duration::from_millis(100),
            pod_resources_poll: Duration::from_secs(1),
            release_grace: Duration::from_secs(30),
        }
    }
}

/// The class part of a resource name: `emu.sriov/vf-fast` → `vf-fast`.
pub fn resource_class(resource: &str) -> &str {
    resource.rsplit_once('/').map_or(resource, |(_, c)| c)
}

/// `[A-Za-z0-9]` kept, anything else → `sep`.
fn sanitize(s: &str, sep: char) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { sep })
        .collect()
}

/// Our socket's file name for `resource`: `emu.sriov/vf` → `emu-sriov-vf.sock`,
/// `emu.sriov/vf-fast` → `emu-sriov-vf-fast.sock`.
pub fn socket_name(resource: &str) -> String {
    format!("emu-sriov-{}.sock", sanitize(resource_class(resource), '-'))
}

/// Our socket for `resource` in `dir`.
pub fn socket_path(dir: &Path, resource: &str) -> PathBuf {
    dir.join(socket_name(resource))
}

/// The ids env var: `emu.sriov/vf` → `EMU_SRIOV_VF_VF`, `emu.sriov/vf-fast` →
/// `EMU_SRIOV_VF_VF_FAST`. The JSON details go in the same name + `_INFO`.
pub fn env_name(resource: &str) -> String {
    format!(
        "EMU_SRIOV_VF_{}",
        sanitize(resource_class(resource), '_').to_ascii_uppercase()
    )
}

/// Container annotation carrying the allocation for the KubeVirt hook sidecar:
/// `emu.sriov/vfs-<class>`, e.g. `emu.sriov/vfs-vf`.
pub fn annotation_key(resource: &str) -> String {
    format!("emu.sriov/vfs-{}", sanitize(resource_class(resource), '-'))
}

/// CDI spec file for `resource`: `emu.sriov-vf.json` for the default resource, else
/// `emu.sriov-vf_<class>.json` (`<vendor>-<class>_<id>.json`, CDI `spec.go`).
pub fn cdi_file_name(resource: &str) -> String {
    if resource == DEFAULT_RESOURCE {
        "emu.sriov-vf.json".to_owned()
    } else {
        format!(
            "emu.sriov-vf_{}.json",
            sanitize(resource_class(resource), '-')
        )
    }
}

/// Qualified CDI device name: `emu.sriov/vf=<id>`.
pub fn cdi_device_name(id: &str) -> String {
    format!("{CDI_KIND}={id}")
}

/// The second mount of a container's `n`-th VF (0-based, Allocate order) of `resource`:
/// `/var/run/emu-sriov/by-index/<class>/<n>`. A KubeVirt hook sidecar cannot see the compute
/// container's env, but knows from the VMI how many VFs of each resource it holds, so it can
/// name their sockets by index (node-agent/kubevirt-hook `alloc.rs`).
pub fn by_index_dir(resource: &str, n: usize) -> PathBuf {
    Path::new(CONTAINER_SOCKET_ROOT)
        .join("by-index")
        .join(sanitize(resource_class(resource), '-'))
        .join(n.to_string())
}

/// The VF's directory inside the container: `/var/run/emu-sriov/<id>`.
pub fn container_dir(id: &str) -> PathBuf {
    Path::new(CONTAINER_SOCKET_ROOT).join(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(socket_name("emu.sriov/vf"), "emu-sriov-vf.sock");
        assert_eq!(socket_name("emu.sriov/vf-fast"), "emu-sriov-vf-fast.sock");
        assert_eq!(env_name("emu.sriov/vf"), "EMU_SRIOV_VF_VF");
        assert_eq!(env_name("emu.sriov/vf-fast"), "EMU_SRIOV_VF_VF_FAST");
        assert_eq!(annotation_key("emu.sriov/vf-fast"), "emu.sriov/vfs-vf-fast");
        assert_eq!(cdi_file_name("emu.sriov/vf"), "emu.sriov-vf.json");
        assert_eq!(
            cdi_file_name("emu.sriov/vf-fast"),
            "emu.sriov-vf_vf-fast.json"
        );
        assert_eq!(cdi_device_name("igb0-vf1"), "emu.sriov/vf=igb0-vf1");
        assert_eq!(
            container_dir("igb0-vf1"),
            Path::new("/var/run/emu-sriov/igb0-vf1")
        );
    }
}
