//! The pure half of the VfNetwork controller: a VfNetwork → its Multus
//! NetworkAttachmentDefinition.
//!
//! The CNI config uses sriov-cni's knobs (kubernetes.md §4.3) so that tools and people who know
//! SR-IOV networks read it at once: `vlan`, `vlanQoS`, `spoofchk`/`trust` ("on"/"off"),
//! `link_state`, `min_tx_rate`/`max_tx_rate` (Mbit/s), `ipam`. The plugin type is
//! `emu-sriov-cni`.

use emu_sriov_crds::{VfNetwork, RESOURCE_NAME_ANNOTATION};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The CNI plugin the NAD names.
pub const CNI_TYPE: &str = "emu-sriov-cni";
/// CNI spec version of the rendered config.
pub const CNI_VERSION: &str = "1.0.0";
/// Labels on a rendered NAD pointing back at its VfNetwork (NADs may live in another
/// namespace, where an owner reference cannot point).
pub const LABEL_NETWORK_NAMESPACE: &str = "emu.sriov/vfnetwork-namespace";
pub const LABEL_NETWORK_NAME: &str = "emu.sriov/vfnetwork-name";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Node-wide facts the rendered CNI config carries, set once for the operator (flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NadOptions {
    /// The agents' run dir, where emu-sriov-cni finds the agent's control socket; `None`: the
    /// plugin's default (`/run/emu-sriov`), and the config says nothing.
    pub agent_run_dir: Option<String>,
}

/// A NAD to apply: where, and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedNad {
    pub namespace: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// The CNI config JSON text (`spec.config`).
    pub config: String,
}

/// Why a VfNetwork cannot be rendered (shown in its Ready condition).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the VfNetwork has no name or namespace")]
    Unnamed,
    #[error("ipam is not valid JSON ({0}): write the CNI ipam section as a JSON object, e.g. {{\"type\": \"host-local\", \"subnet\": \"198.18.10.0/24\"}}")]
    IpamJson(String),
    #[error("ipam must be a JSON object with a \"type\" (the IPAM plugin), e.g. {{\"type\": \"static\"}}")]
    IpamShape,
}

/// Renders the NAD for `net`.
pub fn render(net: &VfNetwork, opts: &NadOptions) -> Result<RenderedNad, RenderError> {
    let name = net.metadata.name.clone().ok_or(RenderError::Unnamed)?;
    let own_ns = net.metadata.namespace.clone().ok_or(RenderError::Unnamed)?;
    let s = &net.spec;
    let mut config = json!({
        "cniVersion": CNI_VERSION,
        "name": name,
        "type": CNI_TYPE,
        "vlan": s.vlan,
        "vlanQoS": s.vlan_qos,
        "spoofchk": on_off(s.spoof_chk),
        "trust": on_off(s.trust),
        "link_state": s.link_state.as_str(),
        "min_tx_rate": s.min_tx_rate_mbps,
        "max_tx_rate": s.max_tx_rate_mbps,
    });
    if let Some(dir) = &opts.agent_run_dir {
        config["agentRunDir"] = json!(dir);
    }
    if !s.ipam.trim().is_empty() {
        let ipam: Value =
            serde_json::from_str(&s.ipam).map_err(|e| RenderError::IpamJson(e.to_string()))?;
        if !ipam.get("type").is_some_and(Value::is_string) {
            return Err(RenderError::IpamShape);
        }
        config["ipam"] = ipam;
    }
    Ok(RenderedNad {
        namespace: s
            .network_namespace
            .clone()
            .unwrap_or_else(|| own_ns.clone()),
        name: name.clone(),
        annotations: [(RESOURCE_NAME_ANNOTATION.to_owned(), s.resource_name.clone())].into(),
        labels: [
            (LABEL_NETWORK_NAMESPACE.to_owned(), own_ns),
            (LABEL_NETWORK_NAME.to_owned(), name),
            (LABEL_MANAGED_BY.to_owned(), crate::MANAGED_BY.to_owned()),
        ]
        .into(),
        config: config.to_string(),
    })
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emu_sriov_crds::{LinkState, VfNetworkSpec};

    fn net(ipam: &str) -> VfNetwork {
        let mut n = VfNetwork::new(
            "blue",
            VfNetworkSpec {
                resource_name: "emu.sriov/vf".into(),
                network_namespace: None,
                vlan: 100,
                vlan_qos: 3,
                spoof_chk: true,
                trust: false,
                link_state: LinkState::Enable,
                max_tx_rate_mbps: 1000,
                min_tx_rate_mbps: 0,
                ipam: ipam.into(),
            },
        );
        n.metadata.namespace = Some("tenant".into());
        n
    }

    #[test]
    fn renders_the_sriov_cni_knobs_and_the_resource_annotation() {
        let r = render(
            &net(r#"{"type":"host-local","subnet":"198.18.10.0/24"}"#),
            &NadOptions::default(),
        )
        .unwrap();
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("tenant", "blue"));
        assert_eq!(r.annotations[RESOURCE_NAME_ANNOTATION], "emu.sriov/vf");
        let c: Value = serde_json::from_str(&r.config).unwrap();
        assert_eq!(c["type"], "emu-sriov-cni");
        assert_eq!(c["vlan"], 100);
        assert_eq!(c["vlanQoS"], 3);
        assert_eq!(c["spoofchk"], "on");
        assert_eq!(c["trust"], "off");
        assert_eq!(c["link_state"], "enable");
        assert_eq!(c["max_tx_rate"], 1000);
        assert_eq!(c["ipam"]["subnet"], "198.18.10.0/24");
        assert!(
            c.get("agentRunDir").is_none(),
            "the plugin's default needs no key"
        );
    }

    #[test]
    fn an_agent_run_dir_reaches_the_plugin() {
        let opts = NadOptions {
            agent_run_dir: Some("/var/lib/x/emu-sriov".into()),
        };
        let r = render(&net(""), &opts).unwrap();
        let c: Value = serde_json::from_str(&r.config).unwrap();
        assert_eq!(c["agentRunDir"], "/var/lib/x/emu-sriov");
    }

    #[test]
    fn a_target_namespace_moves_the_nad() {
        let mut n = net("");
        n.spec.network_namespace = Some("other".into());
        let r = render(&n, &NadOptions::default()).unwrap();
        assert_eq!(r.namespace, "other");
        assert_eq!(r.labels[LABEL_NETWORK_NAMESPACE], "tenant");
        let c: Value = serde_json::from_str(&r.config).unwrap();
        assert!(c.get("ipam").is_none());
    }

    #[test]
    fn bad_ipam_is_refused_with_what_to_write() {
        let e = render(&net("{type: host-local"), &NadOptions::default()).unwrap_err();
        assert!(matches!(e, RenderError::IpamJson(_)));
        assert!(e.to_string().contains("host-local"));
        assert_eq!(
            render(&net("[1,2]"), &NadOptions::default()).unwrap_err(),
            RenderError::IpamShape
        );
    }
}
