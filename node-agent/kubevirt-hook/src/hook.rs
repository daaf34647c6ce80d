//! The hook's one decision, `OnDefineDomain`: which VFs, then the domain edit. No gRPC here.

use crate::alloc::{self, AllocError, GivenVf};
use crate::domain::{self, DomainError, VfAttachment};
use crate::plan::{self, PlanError};
use std::path::{Path, PathBuf};

/// Whether the hook checks that each VF's socket exists before handing the domain back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SocketCheck {
    /// No check: the sidecar container does not see the compute container's mounts; QEMU
    /// reports a missing socket when libvirt starts it.
    Off,
    /// The container path (`/var/run/emu-sriov/...`) must exist where the hook runs (a hook
    /// given the compute container's mounts).
    Container,
    /// The node path (`host_socket` in the device plugin env) must exist (a hook on the node).
    Host,
}

/// What the hook needs besides the request.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// `InfoResult.name`.
    pub name: String,
    /// The binding plugin name VMI interfaces refer to (`binding.name`).
    pub binding: String,
    /// KubeVirt's network-info file; read on every call when it exists.
    pub network_info: Option<PathBuf>,
    /// The environment (the device plugin's `EMU_SRIOV_VF_*` when the hook shares it).
    pub env: Vec<(String, String)>,
    /// See [`SocketCheck`].
    pub check_sockets: SocketCheck,
}

/// Why the domain was not edited.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error("cannot edit the domain XML safely")]
    Domain(#[from] DomainError),
    #[error("cannot read KubeVirt network-info {}", path.display())]
    ReadNetworkInfo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("VF {vf}: socket {path} does not exist; is emu-sriov-agent running and serving that VF on this node?")]
    SocketMissing { vf: String, path: String },
}

/// The message of `e` and its causes, `: `-joined (what a gRPC status or a log line carries).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The VFs the pod was given, and a description of where they came from.
fn given(cfg: &HookConfig, vmi: &[u8]) -> Result<(Vec<GivenVf>, String), HookError> {
    let mut given = Vec::new();
    let mut sources = Vec::new();
    if let Some(p) = cfg.network_info.as_deref().filter(|p| p.exists()) {
        let bytes = std::fs::read(p).map_err(|source| HookError::ReadNetworkInfo {
            path: p.to_owned(),
            source,
        })?;
        given.extend(alloc::from_network_info(&p.display().to_string(), &bytes)?);
        sources.push(format!("network-info {}", p.display()));
    }
    let env = alloc::from_env(cfg.env.iter().cloned())?;
    if !env.is_empty() {
        given.extend(env);
        sources.push("the device plugin's EMU_SRIOV_VF_*_INFO env".to_owned());
    }
    if given.is_empty() {
        // Neither source is visible (a plain hook sidecar): fall back on Allocate's by-index
        // mounts for the resources the VMI's spec put on the compute container.
        let counts = plan::spec_resources(vmi)?;
        given = alloc::by_index(&counts);
        sources.push(format!(
            "the by-index mounts for the VMI's resource limits ({})",
            if counts.is_empty() {
                "none".to_owned()
            } else {
                counts
                    .iter()
                    .map(|(r, n)| format!("{r}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
    }
    Ok((given, sources.join(" and ")))
}

fn check_sockets(
    cfg: &HookConfig,
    given: &[GivenVf],
    att: &[VfAttachment],
) -> Result<(), HookError> {
    for a in att {
        let path = match cfg.check_sockets {
            SocketCheck::Off => continue,
            SocketCheck::Container => Some(a.socket.clone()),
            SocketCheck::Host => given
                .iter()
                .find(|g| g.socket == a.socket)
                .and_then(|g| g.host_socket.clone()),
        };
        let Some(path) = path else { continue };
        if !Path::new(&path).exists() {
            return Err(HookError::SocketMissing {
                vf: a.name.clone(),
                path,
            });
        }
    }
    Ok(())
}

/// `OnDefineDomain`: the domain with the VMI's VFs attached, or unchanged when it asks for none.
pub fn on_define_domain(
    cfg: &HookConfig,
    domain_xml: &[u8],
    vmi: &[u8],
) -> Result<(Vec<u8>, Vec<VfAttachment>), HookError> {
    let wants = plan::wants(vmi, &cfg.binding)?;
    if wants.interfaces.is_empty() && wants.resources.is_empty() {
        return Ok((domain_xml.to_vec(), Vec::new()));
    }
    let (given, source) = given(cfg, vmi)?;
    let att = plan::plan(&wants, &given, &cfg.binding, &source)?;
    check_sockets(cfg, &given, &att)?;
    let out = domain::attach_vfs(domain_xml, &att)?;
    Ok((out, att))
}
