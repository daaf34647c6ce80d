//! CNI errors: the spec's `{"cniVersion","code","msg","details"}` on stdout, exit status 1.

use serde::Serialize;

/// Well-known CNI error codes (spec "Error" section); 100+ are this plugin's own.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const CONTAINER_UNKNOWN: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADDs now (the agent does not answer).
    pub const NOT_AVAILABLE: u32 = 50;
    /// CHECK: the container holds no VF under that interface name.
    pub const NOT_HELD: u32 = 100;
    /// CHECK: the interface is missing or differs from what ADD set up.
    pub const INTERFACE_CHANGED: u32 = 101;
}

/// A failed command, as the runtime receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON the spec asks for, with `cniVersion`.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            cni_version: &'a str,
            #[serde(flatten)]
            err: &'a CniError,
        }
        serde_json::to_string(&Out {
            cni_version,
            err: self,
        })
        .unwrap_or_else(|_| {
            format!(r#"{{"cniVersion":"{cni_version}","code":999,"msg":"internal error"}}"#)
        })
    }
}
