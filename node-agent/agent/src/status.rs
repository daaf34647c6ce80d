//! What the agent reports about its VFs: the JSON served on the control socket and printed
//! by `list --output json` (scripts and the test harness parse it), and its table form.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{AgentConfig, PfConfig, VfConfig};
use crate::mac;
use crate::naming;

/// Every VF of the node, in config order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub vfs: Vec<VfStatus>,
    /// The node's uplink (switch default port), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkStatus>,
}

/// The uplink as `list` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkStatus {
    /// Interface name, `emu0`.
    pub name: String,
    /// `tap` or `packet`.
    pub kind: String,
    /// Frames read from the uplink (switched to VFs or unmatched).
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames read from the uplink that no VF was addressed by.
    pub rx_unmatched: u64,
    pub rx_errors: u64,
    /// Frames sent to the uplink.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames the uplink refused (dropped).
    pub tx_errors: u64,
}

/// One VF as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfStatus {
    /// `igb0-vf0`.
    pub id: String,
    /// PF name, `igb0`.
    pub pf: String,
    /// VF index within the PF.
    pub index: u8,
    /// VF model, `igbvf`.
    pub model: String,
    /// PCI vendor id, `0x8086`.
    pub vendor_id: String,
    /// PCI device id, `0x10ca`.
    pub device_id: String,
    /// `02:..`, lower-case.
    pub mac: String,
    /// Absolute path of the VF's vfio-user socket.
    pub socket: PathBuf,
    /// A netdev-mode VF: its TAP's name in the agent's namespace (`igb0v0`); no socket then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netdev: Option<String>,
    pub state: ClientState,
    pub counters: VfStatusCounters,
}

/// Whether a vfio-user client (a VM) is connected to the VF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientState {
    #[default]
    Free,
    Attached,
}

/// The VF's dataplane and control counters since it was created (or last scrubbed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfStatusCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_drops: u64,
    pub rx_drops: u64,
    /// Register accesses that trapped to the agent.
    pub traps: u64,
    /// MSI-X interrupts signalled to the guest.
    pub interrupts: u64,
    /// Malformed TX descriptors and offload requests (dropped; included in no other drop
    /// counter).
    #[serde(default)]
    pub tx_bad_descriptors: u64,
    /// Clients dropped because their DMA memory faulted (a file shrunk under the agent).
    #[serde(default)]
    pub memory_faults: u64,
}

impl VfStatus {
    /// A VF as configured, before anything happened to it: free, counters zero.
    pub fn configured(config: &AgentConfig, pf: &PfConfig, vf: &VfConfig) -> Self {
        let id = naming::vf_id(&pf.name, vf.index);
        Self {
            socket: naming::vf_socket_path(&config.run_dir, &id),
            id,
            pf: pf.name.clone(),
            index: vf.index,
            model: pf.model.vf_model().to_owned(),
            vendor_id: format!("{:#06x}", pf.model.vf_vendor_id()),
            device_id: format!("{:#06x}", pf.model.vf_device_id()),
            mac: mac::format_mac(&vf.mac),
            netdev: (pf.device_type == crate::config::DeviceType::Netdev)
                .then(|| crate::netdev::host_ifname(&pf.name, vf.index)),
            state: ClientState::Free,
            counters: VfStatusCounters::default(),
        }
    }

    /// `8086:10ca`, as `lspci -n` writes it.
    pub fn pci_id(&self) -> String {
        let strip = |s: &str| s.trim_start_matches("0x").to_owned();
        format!("{}:{}", strip(&self.vendor_id), strip(&self.device_id))
    }
}

impl AgentStatus {
    /// Every configured VF, free, counters zero.
    pub fn configured(config: &AgentConfig) -> Self {
        Self {
            vfs: config
                .vfs()
                .map(|(pf, vf)| VfStatus::configured(config, pf, vf))
                .collect(),
            uplink: None,
        }
    }
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Free => "free",
            ClientState::Attached => "attached",
        }
    }
}

/// The status as an aligned text table with a header row, one line per VF, ending in `\n`.
pub fn render_table(status: &AgentStatus) -> String {
    const HEADER: [&str; 10] = [
        "ID", "PF", "MODEL", "PCI", "MAC", "STATE", "TX PKTS", "RX PKTS", "DROPS", "SOCKET",
    ];
    // Counter columns are right-aligned; the last column is not padded.
    const RIGHT: [bool; 10] = [
        false, false, false, false, false, false, true, true, true, false,
    ];
    let rows: Vec<[String; 10]> = status
        .vfs
        .iter()
        .map(|vf| {
            [
                vf.id.clone(),
                vf.pf.clone(),
                vf.model.clone(),
                vf.pci_id(),
                vf.mac.clone(),
                vf.state.as_str().to_owned(),
                vf.counters.tx_packets.to_string(),
                vf.counters.rx_packets.to_string(),
                vf.counters
                    .tx_drops
                    .saturating_add(vf.counters.rx_drops)
                    .to_string(),
                match &vf.netdev {
                    Some(tap) => format!("netdev {tap}"),
                    None => vf.socket.display().to_string(),
                },
            ]
        })
        .collect();
    let header = HEADER.map(str::to_owned);
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| match (i + 1 == row.len(), RIGHT[i]) {
                (true, _) => cell.clone(),
                (false, true) => format!("{cell:>w$}", w = widths[i]),
                (false, false) => format!("{cell:<w$}", w = widths[i]),
            })
            .collect();
        out.push_str(&cells.join("  "));
        out.push('\n');
    }
    if let Some(u) = &status.uplink {
        out.push_str(&format!(
            "uplink {} ({}): tx {} pkts {} bytes, {} errors; rx {} pkts {} bytes, {} unmatched, {} errors\n",
            u.name,
            u.kind,
            u.tx_packets,
            u.tx_bytes,
            u.tx_errors,
            u.rx_packets,
            u.rx_bytes,
            u.rx_unmatched,
            u.rx_errors
        ));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    pub(crate) fn sample() -> AgentStatus {
        AgentStatus {
            uplink: None,
            vfs: vec![
                VfStatus {
                    id: "igb0-vf0".into(),
                    pf: "igb0".into(),
                    index: 0,
                    model: "igbvf".into(),
                    vendor_id: "0x8086".into(),
                    device_id: "0x10ca".into(),
                    mac: "02:00:00:00:00:10".into(),
                    socket: "/run/emu-sriov/vfs/igb0-vf0/vf.sock".into(),
                    netdev: None,
                    state: ClientState::Attached,
                    counters: VfStatusCounters {
                        tx_packets: 12345,
                        rx_packets: 7,
                        tx_drops: 1,
                        rx_drops: 2,
                        ..VfStatusCounters::default()
                    },
                },
                VfStatus {
                    id: "igb0-vf1".into(),
                    index: 1,
                    mac: "02:00:00:00:00:11".into(),
                    socket: "/run/emu-sriov/vfs/igb0-vf1/vf.sock".into(),
                    state: ClientState::Free,
                    counters: VfStatusCounters::default(),
                    ..sample_vf0()
                },
            ],
        }
    }

    fn sample_vf0() -> VfStatus {
        VfStatus {
            id: String::new(),
            pf: "igb0".into(),
            index: 0,
            model: "igbvf".into(),
            vendor_id: "0x8086".into(),
            device_id: "0x10ca".into(),
            mac: String::new(),
            socket: PathBuf::new(),
            netdev: None,
            state: ClientState::Free,
            counters: VfStatusCounters::default(),
        }
    }

    fn keys(v: &Value) -> BTreeSet<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn json_shape_is_exactly_the_contract() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(keys(&json), BTreeSet::from(["vfs"]));
        let vf = &json["vfs"][0];
        assert_eq!(
            keys(vf),
            BTreeSet::from([
                "id",
                "pf",
                "index",
                "model",
                "vendor_id",
                "device_id",
                "mac",
                "socket",
                "state",
                "counters"
            ])
        );
        assert_eq!(
            keys(&vf["counters"]),
            BTreeSet::from([
                "tx_packets",
                "tx_bytes",
                "rx_packets",
                "rx_bytes",
                "tx_drops",
                "rx_drops",
                "traps",
                "interrupts",
                "tx_bad_descriptors",
                "memory_faults"
            ])
        );
        assert_eq!(vf["id"], "igb0-vf0");
        assert_eq!(vf["index"], 0);
        assert_eq!(vf["vendor_id"], "0x8086");
        assert_eq!(vf["device_id"], "0x10ca");
        assert_eq!(vf["socket"], "/run/emu-sriov/vfs/igb0-vf0/vf.sock");
        assert_eq!(vf["state"], "attached");
        assert_eq!(json["vfs"][1]["state"], "free");
        assert_eq!(vf["counters"]["tx_packets"], 12345);
        let back: AgentStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn configured_status_uses_naming_and_ids() {
        let config = crate::config::ConfigFile::builtin()
            .validate_with(&crate::config::HostDefaults {
                node_name: Some("n".into()),
                run_dir: "/run/x".into(),
            })
            .unwrap();
        let status = AgentStatus::configured(&config);
        assert_eq!(status.vfs.len(), 4);
        let vf = &status.vfs[3];
        assert_eq!(vf.id, "igb0-vf3");
        assert_eq!(vf.socket, PathBuf::from("/run/x/vfs/igb0-vf3/vf.sock"));
        assert_eq!(
            (vf.vendor_id.as_str(), vf.device_id.as_str()),
            ("0x8086", "0x10ca")
        );
        assert_eq!(vf.pci_id(), "8086:10ca");
        assert_eq!(vf.model, "igbvf");
        assert_eq!(vf.state, ClientState::Free);
    }

    #[test]
    fn table_is_aligned() {
        let table = render_table(&sample());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("ID        PF    MODEL  PCI        MAC"),
            "{table}"
        );
        let socket_col = lines[0].find("SOCKET").unwrap();
        assert_eq!(
            lines[1].find("/run/emu-sriov/vfs/igb0-vf0/vf.sock"),
            Some(socket_col)
        );
        assert_eq!(
            lines[2].find("/run/emu-sriov/vfs/igb0-vf1/vf.sock"),
            Some(socket_col)
        );
        assert!(lines[1].contains("attached") && lines[1].contains("12345"));
        // DROPS = tx_drops + rx_drops, right-aligned under its header.
        let drops_end = lines[0].find("DROPS").unwrap() + "DROPS".len();
        assert_eq!(&lines[1][drops_end - 1..drops_end], "3");
    }
}
