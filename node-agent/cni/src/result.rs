//! The CNI result (spec "Success" section), as ADD prints it and CHECK reads `prevResult`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub dns: serde_json::Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR, `198.18.1.2/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// `4`/`6`: only in results of spec versions before 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// `198.18.1.2/24` → (address, prefix).
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    let ip: std::net::IpAddr = a.parse().ok()?;
    let prefix: u8 = p.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

impl CniResult {
    /// The result in `version`'s shape (IP `version` fields before 1.0).
    pub fn for_version(mut self, version: &str) -> Self {
        let pre_1 = version.starts_with("0.");
        for ip in &mut self.ips {
            ip.version = pre_1.then(|| {
                match parse_cidr(&ip.address) {
                    Some((a, _)) if a.is_ipv6() => "6",
                    _ => "4",
                }
                .to_owned()
            });
        }
        self.cni_version = version.to_owned();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_versions() {
        assert_eq!(
            parse_cidr("198.18.1.2/24"),
            Some(("198.18.1.2".parse().unwrap(), 24))
        );
        assert_eq!(parse_cidr("fe80::1/64").map(|x| x.1), Some(64));
        assert_eq!(parse_cidr("198.18.1.2/33"), None);
        assert_eq!(parse_cidr("x"), None);
        let r = CniResult {
            ips: vec![IpConfig {
                address: "198.18.1.2/24".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            r.clone().for_version("0.4.0").ips[0].version.as_deref(),
            Some("4")
        );
        let j = serde_json::to_string(&r.for_version("1.1.0")).unwrap();
        assert_eq!(
            j,
            r#"{"cniVersion":"1.1.0","ips":[{"address":"198.18.1.2/24"}]}"#
        );
    }
}
