//! What each guest gets: our VF over `vfio-user-pci`, or QEMU's own igb as the reference
//! (guest-tests.md §4, §6.1, §6.2).

use std::path::PathBuf;

/// PCI address every device is pinned to (`"addr":"05.0"`).
pub const GUEST_BDF: &str = "0000:00:05.0";
/// Guest memory; with vfio-user it is a shared memfd of exactly this size.
pub const GUEST_MEM_MB: u32 = 512;

/// Modules `8021q` needs, in load order (the `vlan` check).
pub const VLAN_MODULES: &[&str] = &["llc", "stp", "garp", "mrp", "8021q"];

/// Which VF model the agent serves on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfModel {
    /// igbvf, 8086:10CA (`--pf igb:N`).
    Igbvf,
    /// iavf, 8086:1889 (`--pf avf:N`), [`IAVF_QUEUES`] queue pairs.
    Iavf,
}

/// Queue pairs the agent gives each iavf VF by default (`emu.queues=`).
pub const IAVF_QUEUES: u32 = 4;

impl VfModel {
    /// The agent's `device_id` and the guest's PCI device id.
    pub fn device_id(self) -> &'static str {
        match self {
            VfModel::Igbvf => "0x10ca",
            VfModel::Iavf => "0x1889",
        }
    }
}

/// The NIC a guest sees.
#[derive(Debug, Clone)]
pub enum Device {
    /// An emu-sriov VF served on a vfio-user socket (stock `igbvf` 8086:10CA or `iavf` 8086:1889).
    VfioUser {
        /// The agent's socket for this VF.
        socket: PathBuf,
        /// Its model (decides the driver and modules).
        model: VfModel,
    },
    /// QEMU's emulated igb (8086:10C9) on a `-netdev stream` UNIX socket shared by two guests.
    QemuIgb {
        /// The stream socket; the `server` side creates it.
        l2_socket: PathBuf,
        /// Listens (`server=on`) or connects (`server=off`).
        server: bool,
        /// The MAC QEMU gives the NIC (the two ends must differ).
        mac: String,
    },
}

impl Device {
    /// Guest driver expected to bind (`emu.driver=`).
    pub fn driver(&self) -> &'static str {
        match self {
            Device::VfioUser {
                model: VfModel::Igbvf,
                ..
            } => "igbvf",
            Device::VfioUser {
                model: VfModel::Iavf,
                ..
            } => "iavf",
            Device::QemuIgb { .. } => "igb",
        }
    }

    /// Modules the initramfs must carry for this device (the cache's names).
    pub fn modules(&self) -> &'static [&'static str] {
        match self {
            Device::VfioUser {
                model: VfModel::Igbvf,
                ..
            } => &["igbvf"],
            Device::VfioUser {
                model: VfModel::Iavf,
                ..
            } => &["libeth", "libie", "iavf"],
            Device::QemuIgb { .. } => &["dca", "i2c-algo-bit", "igb"],
        }
    }

    /// Can QEMU be started now? (its socket must exist unless QEMU creates it)
    pub fn ready(&self) -> bool {
        match self {
            Device::VfioUser { socket, .. } => socket.exists(),
            Device::QemuIgb {
                l2_socket, server, ..
            } => *server || l2_socket.exists(),
        }
    }

    /// The device's QEMU arguments (memory backend included where the device needs it).
    pub fn qemu_args(&self) -> Vec<String> {
        match self {
            Device::VfioUser { socket, .. } => {
                let dev = serde_json::json!({
                    "driver": "vfio-user-pci",
                    "socket": {"type": "unix", "path": socket.display().to_string()},
                    "rombar": 0,
                    "addr": "05.0",
                });
                vec![
                    "-object".into(),
                    format!("memory-backend-memfd,id=mem,size={GUEST_MEM_MB}M,share=on"),
                    "-machine".into(),
                    "pc,memory-backend=mem".into(),
                    "-device".into(),
                    dev.to_string(),
                ]
            }
            Device::QemuIgb {
                l2_socket,
                server,
                mac,
            } => vec![
                "-machine".into(),
                "pc".into(),
                "-netdev".into(),
                format!(
                    "stream,id=n0,server={},addr.type=unix,addr.path={}",
                    if *server { "on" } else { "off" },
                    l2_socket.display()
                ),
                "-device".into(),
                format!("igb,netdev=n0,addr=05.0,mac={mac}"),
            ],
        }
    }
}

/// One guest of a topology.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// `a`, `b`, … (`emu.role=`, log names).
    pub name: String,
    /// Its NIC.
    pub device: Device,
    /// `emu.ip=` with prefix, from 198.18.0.0/15.
    pub ip: String,
    /// `emu.peer=`.
    pub peer: String,
    /// `emu.mac=`: the MAC the guest must see, when asserted.
    pub expect_mac: Option<String>,
    /// Further `emu.<key>=<value>` arguments (`mode`, `queues`, `vlan`, `iperf`, `scen`, …; see
    /// the header of `tests/guest/init.sh`).
    pub args: Vec<(String, String)>,
}

impl GuestSpec {
    /// The kernel command line.
    pub fn append(&self, guest_timeout_s: u64) -> String {
        let mut s = format!(
            "console=ttyS0 quiet panic=-1 emu.role={} emu.ip={} emu.peer={} emu.driver={} \
             emu.bdf={} emu.timeout={guest_timeout_s}",
            self.name,
            self.ip,
            self.peer,
            self.device.driver(),
            self.arg("bdf").unwrap_or(GUEST_BDF)
        );
        if let Some(mac) = &self.expect_mac {
            s.push_str(&format!(" emu.mac={mac}"));
        }
        for (k, v) in self.args.iter().filter(|(k, _)| k != "bdf") {
            s.push_str(&format!(" emu.{k}={v}"));
        }
        s
    }

    /// An `emu.<key>=` argument, if set.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (or replaces) `emu.<key>=<value>`; returns `self` for chaining.
    pub fn with_arg(mut self, key: &str, value: impl ToString) -> GuestSpec {
        self.args.retain(|(k, _)| k != key);
        self.args.push((key.to_string(), value.to_string()));
        self
    }

    /// `emu.mode=` (default `full`).
    pub fn mode(&self) -> &str {
        self.arg("mode").unwrap_or("full")
    }

    /// Checks the guest must report as PASS (init.sh, per mode and driver).
    pub fn expected_checks(&self) -> Vec<&'static str> {
        let mut v = vec!["tools", "enumeration", "driver"];
        if self.expect_mac.is_some() {
            v.push("mac");
        }
        v.extend(["link", "ping"]);
        if self.arg("hostip").is_some() {
            v.push("host");
        }
        match self.mode() {
            "throughput" => v.push("iperf"),
            "basic" => v.extend(["msix", "dmesg"]),
            _ => {
                v.push("msix");
                if self.device.driver() == "iavf" {
                    v.push("channels");
                    if self.arg("iperf").is_some() {
                        v.push("rss");
                    }
                }
                if self.arg("vlan") == Some("1") {
                    v.push("vlan");
                }
                v.extend(["jumbo", "downup", "dmesg"]);
            }
        }
        v
    }

    /// Modules this guest's image must carry.
    pub fn modules(&self) -> Vec<&'static str> {
        let mut v = self.device.modules().to_vec();
        if self.arg("vlan") == Some("1") {
            v.extend_from_slice(VLAN_MODULES);
        }
        v
    }
}

impl GuestSpec {
    /// A guest on an agent VF `(socket, mac)`, asserting that MAC.
    pub fn vf(
        name: &str,
        model: VfModel,
        ip: &str,
        peer: &str,
        (socket, mac): (PathBuf, String),
    ) -> GuestSpec {
        GuestSpec {
            name: name.into(),
            device: Device::VfioUser { socket, model },
            ip: ip.into(),
            peer: peer.into(),
            expect_mac: Some(mac),
            args: Vec::new(),
        }
    }
}

/// A set of guests booted together.
#[derive(Debug, Clone)]
pub struct Topology {
    /// In start order.
    pub guests: Vec<GuestSpec>,
}

impl Topology {
    /// Two guests, one igbvf VF each (§6.1): `a` = 198.18.0.1 on the first, `b` = 198.18.0.2.
    pub fn vf_pair(a: (PathBuf, String), b: (PathBuf, String)) -> Topology {
        Topology::vf_pair_of(VfModel::Igbvf, a, b)
    }

    /// Two guests, one VF of `model` each: `a` = 198.18.0.1 (iperf3 client), `b` = 198.18.0.2
    /// (server). iavf guests also get `emu.queues=` [`IAVF_QUEUES`] and the `vlan` check.
    pub fn vf_pair_of(model: VfModel, a: (PathBuf, String), b: (PathBuf, String)) -> Topology {
        let mut guests = vec![
            GuestSpec::vf("a", model, "198.18.0.1/24", "198.18.0.2", a),
            GuestSpec::vf("b", model, "198.18.0.2/24", "198.18.0.1", b),
        ];
        if model == VfModel::Iavf {
            for (g, role) in guests.iter_mut().zip(["client", "server"]) {
                *g = g
                    .clone()
                    .with_arg("queues", IAVF_QUEUES)
                    .with_arg("vlan", 1)
                    .with_arg("iperf", role);
            }
        }
        Topology { guests }
    }

    /// Two guests with QEMU's igb each, joined by `-netdev stream` on `l2_socket` (§6.2).
    pub fn qemu_igb_pair(l2_socket: PathBuf) -> Topology {
        let g = |name: &str, ip: &str, peer: &str, server: bool, mac: &str| GuestSpec {
            name: name.into(),
            device: Device::QemuIgb {
                l2_socket: l2_socket.clone(),
                server,
                mac: mac.into(),
            },
            ip: ip.into(),
            peer: peer.into(),
            expect_mac: None,
            args: Vec::new(),
        };
        Topology {
            guests: vec![
                g(
                    "a",
                    "198.18.0.1/24",
                    "198.18.0.2",
                    true,
                    "52:54:00:12:34:01",
                ),
                g(
                    "b",
                    "198.18.0.2/24",
                    "198.18.0.1",
                    false,
                    "52:54:00:12:34:02",
                ),
            ],
        }
    }

    /// Union of the modules every guest needs.
    pub fn modules(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = Vec::new();
        for g in &self.guests {
            for m in g.modules() {
                if !v.contains(&m) {
                    v.push(m);
                }
            }
        }
        v
    }

    /// Sets `emu.<key>=<value>` on every guest.
    pub fn with_arg(mut self, key: &str, value: impl ToString) -> Topology {
        let value = value.to_string();
        self.guests = self
            .guests
            .into_iter()
            .map(|g| g.with_arg(key, &value))
            .collect();
        self
    }
}
