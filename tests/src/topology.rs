//! What each guest gets: our VF over `vfio-user-pci`, or QEMU's own igb as the reference
//! (guest-tests.md §4, §6.1, §6.2).

use std::path::PathBuf;

/// PCI address every device is pinned to (`"addr":"05.0"`).
pub const GUEST_BDF: &str = "0000:00:05.0";
/// Guest memory; with vfio-user it is a shared memfd of exactly this size.
pub const GUEST_MEM_MB: u32 = 512;

/// The NIC a guest sees.
#[derive(Debug, Clone)]
pub enum Device {
    /// An emu-sriov VF served on a vfio-user socket (stock `igbvf`, 8086:10CA).
    VfioUser {
        /// The agent's socket for this VF.
        socket: PathBuf,
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
            Device::VfioUser { .. } => "igbvf",
            Device::QemuIgb { .. } => "igb",
        }
    }

    /// Modules the initramfs must carry for this device (the cache's names).
    pub fn modules(&self) -> &'static [&'static str] {
        match self {
            Device::VfioUser { .. } => &["igbvf"],
            Device::QemuIgb { .. } => &["dca", "i2c-algo-bit", "igb"],
        }
    }

    /// Can QEMU be started now? (its socket must exist unless QEMU creates it)
    pub fn ready(&self) -> bool {
        match self {
            Device::VfioUser { socket } => socket.exists(),
            Device::QemuIgb {
                l2_socket, server, ..
            } => *server || l2_socket.exists(),
        }
    }

    /// The device's QEMU arguments (memory backend included where the device needs it).
    pub fn qemu_args(&self) -> Vec<String> {
        match self {
            Device::VfioUser { socket } => {
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
}

impl GuestSpec {
    /// The kernel command line.
    pub fn append(&self, guest_timeout_s: u64) -> String {
        let mut s = format!(
            "console=ttyS0 quiet panic=-1 emu.role={} emu.ip={} emu.peer={} emu.driver={} \
             emu.bdf={GUEST_BDF} emu.timeout={guest_timeout_s}",
            self.name,
            self.ip,
            self.peer,
            self.device.driver()
        );
        if let Some(mac) = &self.expect_mac {
            s.push_str(&format!(" emu.mac={mac}"));
        }
        s
    }

    /// Checks the guest must report as PASS.
    pub fn expected_checks(&self) -> Vec<&'static str> {
        let mut v = vec!["enumeration", "driver"];
        if self.expect_mac.is_some() {
            v.push("mac");
        }
        v.extend(["link", "ping", "msix", "jumbo", "downup", "dmesg"]);
        v
    }
}

/// A set of guests booted together.
#[derive(Debug, Clone)]
pub struct Topology {
    /// In start order.
    pub guests: Vec<GuestSpec>,
}

impl Topology {
    /// Two guests, one VF each (§6.1): `a` = 198.18.0.1 on the first, `b` = 198.18.0.2.
    pub fn vf_pair(a: (PathBuf, String), b: (PathBuf, String)) -> Topology {
        let g = |name: &str, ip: &str, peer: &str, (socket, mac): (PathBuf, String)| GuestSpec {
            name: name.into(),
            device: Device::VfioUser { socket },
            ip: ip.into(),
            peer: peer.into(),
            expect_mac: Some(mac),
        };
        Topology {
            guests: vec![
                g("a", "198.18.0.1/24", "198.18.0.2", a),
                g("b", "198.18.0.2/24", "198.18.0.1", b),
            ],
        }
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
            for m in g.device.modules() {
                if !v.contains(m) {
                    v.push(m);
                }
            }
        }
        v
    }
}
