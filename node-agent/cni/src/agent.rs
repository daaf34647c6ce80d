//! The node agent's control socket, as this plugin uses it: one JSON request line, one answer
//! line (see the agent's `netdev::proto`; the JSON is the contract, these are this side's
//! copies of the shapes).

use crate::error::{code, CniError};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long one exchange with the agent may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Claim,
    Release,
    Check,
    Gc,
}

/// An attachment the runtime keeps (GC's `cni.dev/valid-attachments`, spelled as the spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(rename = "ifname")]
    pub if_name: String,
}

/// A claim the agent freed in GC.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Collected {
    pub vf: String,
    pub container_id: String,
    pub if_name: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub op: Op,
    pub container_id: String,
    pub if_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    pub settings: Settings,
    /// The network's name (recorded with a claim; the scope of GC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// GC: the attachments that stay.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub valid: Vec<Attachment>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan_qos: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spoofchk: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_tx_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tx_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// The agent's view of a claim; `vf` is empty when the owner holds none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub vf: String,
    pub host_name: String,
    pub mac: String,
    pub mtu: u32,
    pub netns: String,
    pub if_name: String,
    #[serde(default)]
    pub current_name: Option<String>,
    #[serde(default)]
    pub collected: Vec<Collected>,
}

#[derive(Deserialize)]
struct Refusal {
    error: String,
    #[serde(default)]
    code: Option<u32>,
}

/// Sends `req` to the agent with run dir `run_dir`.
pub fn call(run_dir: &Path, req: &Request) -> Result<Answer, CniError> {
    let line = serde_json::json!({"cmd": "netdev", "netdev": req}).to_string() + "\n";
    let value = exchange(run_dir, &line)?;
    if let Ok(r) = serde_json::from_value::<Refusal>(value.clone()) {
        return Err(CniError::new(
            r.code.filter(|&c| c != 0).unwrap_or(code::IO_FAILURE),
            "the emu-sriov agent refused the request",
            r.error,
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        CniError::new(
            code::DECODE_FAILURE,
            "cannot decode the agent's answer (agent and plugin versions differ?)",
            e.to_string(),
        )
    })
}

/// Whether the agent answers at all (STATUS).
pub fn ping(run_dir: &Path) -> Result<(), CniError> {
    exchange(run_dir, "{\"cmd\":\"list\"}\n").map(|_| ())
}

fn exchange(run_dir: &Path, line: &str) -> Result<serde_json::Value, CniError> {
    let socket = run_dir.join("control.sock");
    let unreachable = |e: std::io::Error| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            "the emu-sriov agent is not reachable",
            format!(
                "{}: {e} (is emu-sriov-agent running with run dir {}? set agentRunDir in the network config if it uses another)",
                socket.display(),
                run_dir.display()
            ),
        )
    };
    let stream = UnixStream::connect(&socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    (&stream).write_all(line.as_bytes()).map_err(unreachable)?;
    let mut answer = Vec::new();
    BufReader::new((&stream).take(16 << 20))
        .read_until(b'\n', &mut answer)
        .map_err(unreachable)?;
    serde_json::from_slice(&answer).map_err(|e| {
        CniError::new(
            code::DECODE_FAILURE,
            "cannot decode the agent's answer",
            e.to_string(),
        )
    })
}
