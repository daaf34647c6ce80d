//! The network configuration (a NAD's `spec.config`, as the operator renders it and as Multus
//! passes it, with `deviceID` added) and the CNI environment.

use crate::error::{code, CniError};
use serde::Deserialize;
use std::path::PathBuf;

/// The spec versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Where the agent's control socket is when the config does not say (`runDir` of a root agent).
pub const DEFAULT_AGENT_RUN_DIR: &str = "/run/emu-sriov";

/// The plugin's network configuration. Unknown fields are allowed (a chain or Multus adds its
/// own); sriov-cni's knobs are read with its spelling.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The VF id (`igb0-vf0`), as Multus passes the device plugin's allocation.
    #[serde(default, rename = "deviceID")]
    pub device_id: Option<String>,
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default, rename = "vlanQoS")]
    pub vlan_qos: Option<u8>,
    /// `on` / `off`.
    #[serde(default)]
    pub spoofchk: Option<String>,
    #[serde(default)]
    pub trust: Option<String>,
    #[serde(default, rename = "link_state")]
    pub link_state: Option<String>,
    #[serde(default, rename = "min_tx_rate")]
    pub min_tx_rate: Option<u32>,
    #[serde(default, rename = "max_tx_rate")]
    pub max_tx_rate: Option<u32>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The IPAM plugin's configuration (`type` names the plugin).
    #[serde(default)]
    pub ipam: Option<serde_json::Value>,
    /// The agent's run dir (its control socket is `control.sock` there).
    #[serde(default)]
    pub agent_run_dir: Option<PathBuf>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// The previous plugin's result (CHECK, chained ADD/DEL).
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
    /// GC: the attachments the runtime still uses; everything else of this network goes.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<crate::agent::Attachment>>,
}

/// `runtimeConfig`: what the runtime passes through capabilities.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default, rename = "deviceID")]
    pub device_id: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
}

impl NetConf {
    /// Parses stdin.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let conf: NetConf = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {} is not one of {}",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        Ok(conf)
    }

    /// The VF: `deviceID`, else `runtimeConfig.deviceID`.
    pub fn vf(&self) -> Result<String, CniError> {
        self.device_id
            .clone()
            .or_else(|| self.runtime_config.device_id.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "no VF to attach",
                    "the configuration has no deviceID: request the pool's resource in the pod (Multus adds the device plugin's allocation as deviceID)",
                )
            })
    }

    pub fn agent_run_dir(&self) -> PathBuf {
        self.agent_run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_RUN_DIR))
    }

    /// `on`/`off` → bool; anything else is a config error naming the field.
    pub fn on_off(field: &str, v: &Option<String>) -> Result<Option<bool>, CniError> {
        match v.as_deref() {
            None => Ok(None),
            Some("on") => Ok(Some(true)),
            Some("off") => Ok(Some(false)),
            Some(other) => Err(CniError::new(
                code::INVALID_CONFIG,
                format!("invalid {field}"),
                format!("`{other}`: use \"on\" or \"off\""),
            )),
        }
    }
}

/// The CNI environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub if_name: String,
    pub path: String,
    pub args: String,
}

impl Env {
    pub fn from_env() -> Env {
        let v = |k| std::env::var(k).unwrap_or_default();
        Env {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            if_name: v("CNI_IFNAME"),
            path: v("CNI_PATH"),
            args: v("CNI_ARGS"),
        }
    }

    /// Fails unless every variable in `names` is set (spec: code 4).
    pub fn require(&self, names: &[&str]) -> Result<(), CniError> {
        for n in names {
            let val = match *n {
                "CNI_CONTAINERID" => &self.container_id,
                "CNI_NETNS" => &self.netns,
                "CNI_IFNAME" => &self.if_name,
                "CNI_PATH" => &self.path,
                _ => continue,
            };
            if val.is_empty() {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("{n} is not set"),
                    format!("CNI_COMMAND={} needs {n}", self.command),
                ));
            }
        }
        if self.if_name.len() > 15 || self.if_name.contains('/') {
            return Err(CniError::new(
                code::INVALID_ENV,
                "invalid CNI_IFNAME",
                format!("`{}`: 1 to 15 characters without /", self.if_name),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_nad_config_parses() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"net-a","type":"emu-sriov-cni","vlan":100,"vlanQoS":0,"spoofchk":"on","trust":"off","link_state":"auto","min_tx_rate":0,"max_tx_rate":0,"ipam":{"type":"host-local","subnet":"198.18.1.0/24"},"deviceID":"igb0-vf1"}"#).unwrap();
        assert_eq!(c.vf().unwrap(), "igb0-vf1");
        assert_eq!(c.vlan, Some(100));
        assert_eq!(
            NetConf::on_off("spoofchk", &c.spoofchk).unwrap(),
            Some(true)
        );
        assert_eq!(c.ipam.unwrap()["type"], "host-local");
        assert!(NetConf::on_off("trust", &Some("yes".into())).is_err());
    }

    #[test]
    fn versions_and_device_id_are_checked() {
        let e = NetConf::parse(br#"{"cniVersion":"2.0.0","name":"n","type":"t"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = NetConf::parse(b"{").unwrap_err();
        assert_eq!(e.code, code::DECODE_FAILURE);
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"t","runtimeConfig":{"deviceID":"p-vf0"}}"#,
        )
        .unwrap();
        assert_eq!(c.vf().unwrap(), "p-vf0");
        let c = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#).unwrap();
        assert_eq!(c.vf().unwrap_err().code, code::INVALID_CONFIG);
    }
}
