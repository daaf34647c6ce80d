//! Which VF goes to which request of the VMI, pure: the VMI JSON and the VFs the pod was given
//! in, the devices to attach (or why not) out.
//!
//! A VMI asks for VFs in one of two ways:
//! - **network binding plugin**: each `spec.domain.devices.interfaces[]` whose `binding.name` is
//!   this plugin's (KubeVirt's `NETWORK_BINDING_PLUGIN_NAME`) wants the VF given for the network
//!   of the same name (network-info), or else the next VF from the device plugin env;
//! - **hook sidecar** (annotation `hooks.kubevirt.io/hookSidecars`): `spec.domain.resources`
//!   `limits`/`requests` of `emu.sriov/*` resources, or the VMI annotation [`VFS_ANNOTATION`]
//!   (`"emu.sriov/vf,emu.sriov/vf"`: one entry per VF) when it should use fewer.

use crate::alloc::GivenVf;
use crate::domain::VfAttachment;
use emu_device_plugin::config::env_name;
use serde_json::Value;
use std::collections::BTreeMap;

/// VMI annotation listing the VFs to attach, one resource name per VF, comma-separated.
pub const VFS_ANNOTATION: &str = "emu.sriov/vfs";
/// Resource names this hook serves start with this.
pub const RESOURCE_PREFIX: &str = "emu.sriov/";

/// Why the VMI cannot get its VFs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the VMI is not JSON ({0}); virt-launcher sends the VirtualMachineInstance as JSON")]
    VmiJson(String),
    #[error("VMI interface `{interface}` (binding `{binding}`) was given no emu-sriov VF: {why}")]
    InterfaceNotGiven {
        interface: String,
        binding: String,
        why: String,
    },
    #[error("the VMI asks for {wanted} × {resource} but the pod was given {given}: {why}")]
    ResourceNotGiven {
        resource: String,
        wanted: usize,
        given: usize,
        why: String,
    },
    #[error("VMI annotation {VFS_ANNOTATION}=`{0}` names a resource outside {RESOURCE_PREFIX}*; list one emu-sriov resource name per VF, e.g. `emu.sriov/vf,emu.sriov/vf`")]
    BadAnnotation(String),
    #[error("resource quantity `{quantity}` of {resource} is not a whole number of VFs")]
    BadQuantity { resource: String, quantity: String },
    #[error("VF {vf} has no socket path in {source_name}; the emu-sriov device plugin fills it in — is the agent current?")]
    NoSocket { vf: String, source_name: String },
}

/// What the VMI asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wants {
    /// Interface names with our binding, in VMI order.
    pub interfaces: Vec<String>,
    /// Resource name → VF count (sidecar shape).
    pub resources: BTreeMap<String, usize>,
}

fn quantity(resource: &str, v: &Value) -> Result<usize, PlanError> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    s.parse::<usize>().map_err(|_| PlanError::BadQuantity {
        resource: resource.to_owned(),
        quantity: s,
    })
}

/// Reads what `vmi` (JSON) asks of binding `binding`.
pub fn wants(vmi: &[u8], binding: &str) -> Result<Wants, PlanError> {
    let v: Value = serde_json::from_slice(vmi).map_err(|e| PlanError::VmiJson(e.to_string()))?;
    let mut w = Wants::default();
    if let Some(ifaces) = v
        .pointer("/spec/domain/devices/interfaces")
        .and_then(Value::as_array)
    {
        for i in ifaces {
            if i.pointer("/binding/name").and_then(Value::as_str) == Some(binding) {
                if let Some(n) = i.get("name").and_then(Value::as_str) {
                    w.interfaces.push(n.to_owned());
                }
            }
        }
    }
    if let Some(a) = v
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(VFS_ANNOTATION))
        .and_then(Value::as_str)
    {
        for r in a.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            if !r.starts_with(RESOURCE_PREFIX) || r.len() == RESOURCE_PREFIX.len() {
                return Err(PlanError::BadAnnotation(a.to_owned()));
            }
            *w.resources.entry(r.to_owned()).or_default() += 1;
        }
        return Ok(w);
    }
    // Extended resources must have limits (requests default to them); take the larger.
    for key in [
        "/spec/domain/resources/limits",
        "/spec/domain/resources/requests",
    ] {
        if let Some(m) = v.pointer(key).and_then(Value::as_object) {
            for (res, q) in m.iter().filter(|(r, _)| r.starts_with(RESOURCE_PREFIX)) {
                let n = quantity(res, q)?;
                let e = w.resources.entry(res.clone()).or_default();
                *e = (*e).max(n);
            }
        }
    }
    Ok(w)
}

/// Resource counts the VMI's own spec gives the compute container (for [`crate::alloc::by_index`]).
pub fn spec_resources(vmi: &[u8]) -> Result<BTreeMap<String, usize>, PlanError> {
    let v: Value = serde_json::from_slice(vmi).map_err(|e| PlanError::VmiJson(e.to_string()))?;
    let mut out = BTreeMap::new();
    for key in [
        "/spec/domain/resources/limits",
        "/spec/domain/resources/requests",
    ] {
        if let Some(m) = v.pointer(key).and_then(Value::as_object) {
            for (res, q) in m.iter().filter(|(r, _)| r.starts_with(RESOURCE_PREFIX)) {
                let n = quantity(res, q)?;
                let e: &mut usize = out.entry(res.clone()).or_default();
                *e = (*e).max(n);
            }
        }
    }
    Ok(out)
}

/// Matches `wants` with `given` (from `source_name`, for messages). Every interface and every
/// wanted resource VF must be met; given VFs nobody asked for are not attached.
pub fn plan(
    wants: &Wants,
    given: &[GivenVf],
    binding: &str,
    source_name: &str,
) -> Result<Vec<VfAttachment>, PlanError> {
    let mut used = vec![false; given.len()];
    let mut out = Vec::new();
    for iface in &wants.interfaces {
        let by_net = given
            .iter()
            .position(|g| g.network.as_deref() == Some(iface.as_str()));
        let pick =
            by_net.or_else(|| (0..given.len()).find(|&i| !used[i] && given[i].network.is_none()));
        let Some(i) = pick.filter(|&i| !used[i]) else {
            let why = if given.iter().any(|g| g.network.is_some()) {
                format!(
                    "{source_name} has no emu-sriov device-info for network `{iface}`; check that its NetworkAttachmentDefinition has k8s.v1.cni.cncf.io/resourceName: emu.sriov/vf and the binding has downwardAPI: device-info"
                )
            } else {
                format!(
                    "{} VF(s) in {source_name} for {} interface(s) with this binding",
                    given.len(),
                    wants.interfaces.len()
                )
            };
            return Err(PlanError::InterfaceNotGiven {
                interface: iface.clone(),
                binding: binding.to_owned(),
                why,
            });
        };
        used[i] = true;
        out.push((i, iface.clone()));
    }
    for (res, &n) in &wants.resources {
        let env = env_name(res);
        let avail: Vec<usize> = (0..given.len())
            .filter(|&i| !used[i] && given[i].env.as_deref() == Some(env.as_str()))
            .collect();
        if avail.len() < n {
            return Err(PlanError::ResourceNotGiven {
                resource: res.clone(),
                wanted: n,
                given: avail.len(),
                why: format!(
                    "{source_name} lists {} such VF(s) ({env}); request the resource in the VMI's spec.domain.resources.limits or lower {VFS_ANNOTATION}",
                    avail.len()
                ),
            });
        }
        for &i in avail.iter().take(n) {
            used[i] = true;
            out.push((i, given[i].id.clone()));
        }
    }
    out.into_iter()
        .map(|(i, name)| {
            let g = &given[i];
            if g.socket.is_empty() {
                return Err(PlanError::NoSocket {
                    vf: g.id.clone(),
                    source_name: source_name.to_owned(),
                });
            }
            Ok(VfAttachment {
                name,
                socket: g.socket.clone(),
            })
        })
        .collect()
}
