//! IPAM delegation (spec "Delegated plugins"): the IPAM plugin named by `ipam.type` is found on
//! CNI_PATH and executed with the same CNI environment (CNI_COMMAND as ours; GC releases each
//! collected attachment with that attachment's container id and ifName) and our network
//! configuration on stdin; its result (ADD) is ours to apply.

use crate::conf::Env;
use crate::error::{code, CniError};
use crate::result::CniResult;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The IPAM plugin's executable: the first `CNI_PATH` entry that has it.
fn find(env: &Env, kind: &str) -> Result<PathBuf, CniError> {
    if kind.is_empty() || kind.contains('/') {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "invalid ipam.type",
            format!("`{kind}` is not a plugin name"),
        ));
    }
    env.path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("IPAM plugin {kind} not found"),
                format!("no `{kind}` in CNI_PATH {}", env.path),
            )
        })
}

/// Runs the IPAM plugin of `conf` for `command`; `Ok(None)` when the network has no IPAM.
/// `stdin` is our network configuration, unchanged.
pub fn delegate(
    env: &Env,
    ipam: Option<&serde_json::Value>,
    command: &str,
    stdin: &[u8],
) -> Result<Option<CniResult>, CniError> {
    let Some(ipam) = ipam else { return Ok(None) };
    let kind = ipam.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let exe = find(env, kind)?;
    // The delegate sees `env` (ours, or an attachment's that GC releases), not whatever the
    // process environment says.
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.if_name)
        .env("CNI_PATH", &env.path)
        .env("CNI_ARGS", &env.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::new(
                code::IO_FAILURE,
                format!("cannot run IPAM plugin {kind}"),
                format!("{}: {e}", exe.display()),
            )
        })?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading its stdin is judged by its exit status below.
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!("IPAM plugin {kind} failed"),
            e.to_string(),
        )
    })?;
    if !out.status.success() {
        // The delegate's own CNI error, passed on as it is.
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            if let (Some(c), Some(m)) = (v.get("code").and_then(|c| c.as_u64()), v.get("msg")) {
                return Err(CniError::new(
                    u32::try_from(c).unwrap_or(code::IO_FAILURE),
                    format!("IPAM plugin {kind}: {}", m.as_str().unwrap_or("")),
                    v.get("details")
                        .and_then(|d| d.as_str())
                        .unwrap_or("")
                        .to_owned(),
                ));
            }
        }
        return Err(CniError::new(
            code::IO_FAILURE,
            format!("IPAM plugin {kind} failed"),
            format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        ));
    }
    if command != "ADD" {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| {
        CniError::new(
            code::DECODE_FAILURE,
            format!("cannot decode the result of IPAM plugin {kind}"),
            e.to_string(),
        )
    })
}
