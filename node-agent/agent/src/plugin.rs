//! The agent's side of the device plugin: a [`VfInventory`] over the running [`Node`], and the
//! plugin config from the agent's config (resource name per PF).

use crate::config::AgentConfig;
use crate::node::Node;
use emu_device_plugin::{DevicePluginConfig, VfDevice, VfInventory};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// The node's VFs as the device plugin sees them.
pub struct NodeInventory {
    node: Arc<Node>,
    /// PF name → resource name.
    resources: HashMap<String, String>,
}

impl NodeInventory {
    pub fn new(node: Arc<Node>, config: &AgentConfig) -> NodeInventory {
        NodeInventory {
            node,
            resources: config
                .pfs
                .iter()
                .map(|pf| (pf.name.clone(), pf.resource_name.clone()))
                .collect(),
        }
    }
}

impl VfInventory for NodeInventory {
    fn devices(&self) -> Vec<VfDevice> {
        self.node
            .status()
            .vfs
            .into_iter()
            .filter_map(|v| {
                let resource = self.resources.get(&v.pf)?.clone();
                Some(VfDevice {
                    healthy: self.node.healthy(&v.id),
                    id: v.id,
                    resource,
                    pf: v.pf,
                    model: v.model,
                    vendor_id: v.vendor_id,
                    device_id: v.device_id,
                    mac: v.mac,
                    socket: v.socket,
                    // One adaptive dataplane thread, not pinned.
                    core: None,
                })
            })
            .collect()
    }

    fn scrub(&self, id: &str) -> Result<(), String> {
        self.node.scrub(id).map_err(|e| e.to_string())
    }
}

/// Where the plugin talks to the kubelet; see `run --help`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginPaths {
    pub device_plugin_dir: PathBuf,
    pub pod_resources_socket: PathBuf,
    pub cdi_dir: Option<PathBuf>,
}

/// The plugin config: one resource per distinct PF `resourceName`.
pub fn plugin_config(config: &AgentConfig, paths: PluginPaths) -> DevicePluginConfig {
    let resources: BTreeSet<String> = config
        .pfs
        .iter()
        .map(|pf| pf.resource_name.clone())
        .collect();
    DevicePluginConfig {
        device_plugin_dir: paths.device_plugin_dir,
        pod_resources_socket: paths.pod_resources_socket,
        cdi_dir: paths.cdi_dir,
        resources: resources.into_iter().collect(),
        ..DevicePluginConfig::default()
    }
}
