//! The agent's configuration: the YAML file schema ([`ConfigFile`]), the built-in default,
//! and validation into [`AgentConfig`], the only form the rest of the agent sees.
//!
//! Validation errors name the field path (`pfs[0].vf[1].mac`), the bad value, and what is
//! allowed, so that a user can fix the file without reading this code.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::mac::{self, Mac, MacRequest};
use crate::naming;
use crate::sys;

/// The configuration `run` uses when it gets no `--config`: one igb PF with 4 VFs.
pub const DEFAULT_CONFIG_YAML: &str = "\
pfs:
  - model: igb
    vfs: 4
dataplane:
  mode: adaptive
";

/// Every field of the config file, with its default, as shown by `run --help`.
/// A unit test checks that this text parses and validates.
pub const CONFIG_REFERENCE_YAML: &str = r#"nodeName: node-a        # default: the host name. Seeds the generated MACs.
runDir: /run/emu-sriov  # default: /run/emu-sriov (root), else $XDG_RUNTIME_DIR/emu-sriov
                        # or /tmp/emu-sriov-$UID. Holds control.sock and, per VF,
                        # vfs/<id>/vf.sock (one directory per VF), and state.json:
                        # each VF's MAC, kept across restarts.
socketOwner:            # who may connect to the VF sockets (KubeVirt's qemu is 107:107).
  uid: 107              # Each VF socket becomes 0660 uid:gid, its directory 0750 owned
  gid: 107              # by the agent's user and group gid, the run dir 0711. Default:
                        # none, i.e. the agent's own user only (sockets 0600, dirs 0700).
pfs:                    # at least one
  - name: igb0          # default: <model><n>, n counting PFs of that model from 0
    model: igb          # supported: igb (Intel 82576, VFs are igbvf 8086:10ca)
    vfs: 4              # 1..=7 for igb
    resourceName: emu.sriov/vf  # kubelet extended resource these VFs are advertised as
                                # by the device plugin (run --device-plugin); default emu.sriov/vf
    socketOwner: {uid: 107, gid: 107}  # this PF's VF sockets; default: the global one
    deviceType: vfio-user # vfio-user (default): each VF is a vfio-user socket (VMs, userspace
                        # drivers). netdev (igb only): each VF is a kernel TAP switched like a
                        # VF (same MAC/VLAN/spoof-check/trust/rate rules), named <pf>v<index>
                        # (igb0v0), that emu-sriov-cni moves into a pod's network namespace.
    vf:                 # optional per-VF settings, by index (0..vfs-1)
      - index: 0
        mac: "02:00:00:00:00:10"  # default: locally administered, derived from (nodeName,
                                  # PF name, index) at first start, then kept in state.json.
                                  # Must be unicast.
        vlan: 100       # port VLAN 1..=4094; default: none
        spoofchk: true  # drop frames whose source MAC is not the VF's; default true
        trust: false    # let the VF set promiscuous mode / change its MAC; default false
dataplane:
  mode: adaptive        # adaptive (default): sleeps when idle. poll: not supported yet.
uplink:                 # optional; default: none (VF traffic stays inside the node)
  type: tap             # tap: create TAP `name` (needs root; gone when the agent exits)
  name: emu0            # packet: `interface: eth1`, an AF_PACKET socket on that interface
                        # Interface names: 1 to 15 characters.
allowUnsealedMemory: false  # default false: a client's DMA_MAP file must be sealed against
                        # shrinking (F_SEAL_SHRINK; QEMU's memory-backend-memfd seals by
                        # default), else the map is refused (EPERM). true: unsealed files are
                        # accepted; a client that shrinks one is dropped and its VF reset
                        # when the agent next touches that memory (other VFs unaffected).
"#;

/// Longest path a unix socket can be bound at: `sun_path` is 108 bytes including the NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Longest PF name. PF names end up in socket file names and, later, in netdev names.
const MAX_PF_NAME: usize = 12;

/// Errors from loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read config file {}: check the path and its permissions", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {origin} does not match the schema (see `emu-sriov-agent run --help`)")]
    Parse {
        origin: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{field}: `{value}` is not allowed: {allowed}")]
    Invalid {
        field: String,
        value: String,
        allowed: String,
    },
    #[error(
        "unknown NIC model `{model}`: supported models are {}",
        NicModel::supported()
    )]
    UnknownModel { model: String },
    #[error("{field}: PF name `{name}` is already used by {first}: PF names must be unique")]
    DuplicatePfName {
        field: String,
        name: String,
        first: String,
    },
    #[error("{field}: MAC {mac} is already used by {first}: every VF needs its own MAC")]
    DuplicateMac {
        field: String,
        mac: String,
        first: String,
    },
    #[error("{field}: VF index {index} is configured twice: give each index at most one entry")]
    DuplicateVfIndex { field: String, index: u32 },
    #[error("pfs: no PF configured: add one, e.g. `--pf igb:4`, or in the config file `pfs: [{{model: igb, vfs: 4}}]`")]
    NoPfs,
    #[error(
        "dataplane.mode: `poll` busy-polls dedicated cores: list them in dataplane.cores (e.g. `cores: [2, 3]`), or use `adaptive`"
    )]
    PollModeUnsupported,
    #[error(
        "nodeName: the host name could not be read: set nodeName in the config or pass --node-name"
    )]
    NoNodeName,
    #[error(
        "--cluster needs --node-name: the Kubernetes node name, which the NodeState to follow is named after (in a DaemonSet, pass spec.nodeName through the downward API: --node-name \"$NODE_NAME\")"
    )]
    ClusterNeedsNodeName,
}

fn invalid(
    field: impl Into<String>,
    value: impl fmt::Display,
    allowed: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

/// An emulated physical NIC model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    /// Intel 82576 ("igb"); its VFs are 82576 VFs driven by Linux `igbvf`.
    Igb,
    /// Intel Ethernet Adaptive Virtual Function ("avf"); VFs driven by Linux `iavf`, with
    /// up to 16 queue pairs and RSS.
    Avf,
}

impl NicModel {
    /// Every supported model, in the order help texts list them.
    pub const ALL: &'static [NicModel] = &[NicModel::Igb, NicModel::Avf];

    /// The name used in configs and on the command line (`igb`).
    pub fn name(self) -> &'static str {
        match self {
            NicModel::Igb => "igb",
            NicModel::Avf => "avf",
        }
    }

    /// The most VFs one PF of this model can have. The 82576 has 8 VMDq pools, one kept by
    /// the PF; Linux `igb` caps `max_vfs` at 7 for the same reason.
    pub fn max_vfs(self) -> u8 {
        match self {
            NicModel::Igb => 7,
            // An AVF PF carves up to 64 VFs here (real E810s allow more; 64 keeps a node's
            // switch ports within the 256 the VMDq tables hold).
            NicModel::Avf => 64,
        }
    }

    /// The VF's model, as reported in status (`igbvf`, the guest driver that binds to it).
    pub fn vf_model(self) -> &'static str {
        match self {
            NicModel::Igb => "igbvf",
            NicModel::Avf => "iavf",
        }
    }

    /// PCI vendor id of the VF.
    pub fn vf_vendor_id(self) -> u16 {
        match self {
            NicModel::Igb | NicModel::Avf => 0x8086,
        }
    }

    /// PCI device id of the VF (82576 VF: 0x10ca).
    pub fn vf_device_id(self) -> u16 {
        match self {
            NicModel::Igb => 0x10ca,
            NicModel::Avf => 0x1889,
        }
    }

    /// The supported model names, comma-separated, for error messages.
    pub fn supported() -> String {
        let names: Vec<_> = Self::ALL.iter().map(|m| m.name()).collect();
        names.join(", ")
    }
}

impl fmt::Display for NicModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NicModel {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|m| m.name() == s)
            .ok_or_else(|| ConfigError::UnknownModel {
                model: s.to_owned(),
            })
    }
}

/// How dataplane threads wait for work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneMode {
    /// Poll while busy, back off to sleeping when idle (laptops, CI).
    #[default]
    Adaptive,
    /// Busy-poll on pinned cores (`dataplane.cores` must list them).
    Poll,
}

// ---------------------------------------------------------------------------------------------
// The file schema, exactly as written by users. Everything optional is an `Option` here; the
// defaults are applied by validation.

/// The config file as written (YAML, camelCase keys, unknown keys rejected).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
    #[serde(default)]
    pub pfs: Vec<PfFile>,
    #[serde(default)]
    pub dataplane: DataplaneFile,
    /// Where unknown unicast and broadcast/multicast leave the node's switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkConfig>,
    /// Accept client memory (DMA_MAP files) not sealed against shrinking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unsealed_memory: Option<bool>,
    /// Who may connect to the VF sockets of PFs that do not name their own owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_owner: Option<SocketOwner>,
}

/// The user and group a VF socket is handed to (`socketOwner: {uid, gid}`), e.g. 107:107 for
/// KubeVirt's `qemu`. Numeric: the agent may run in a container whose /etc/passwd does not
/// know the host's users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketOwner {
    pub uid: u32,
    pub gid: u32,
}

impl fmt::Display for SocketOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

impl FromStr for SocketOwner {
    type Err = String;

    /// `UID:GID`, both numeric, e.g. `107:107`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = s
            .split_once(':')
            .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
        match parsed {
            Some((uid, gid)) => Ok(SocketOwner { uid, gid }),
            None => Err(format!(
                "expected numeric UID:GID, e.g. 107:107 (KubeVirt's qemu), got `{s}`"
            )),
        }
    }
}

/// The node's uplink (the switch's default port), as written and as validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum UplinkConfig {
    /// A TAP device the agent creates (`IFF_TAP|IFF_NO_PI`, not persistent).
    Tap { name: String },
    /// An AF_PACKET socket on an existing interface.
    Packet { interface: String },
}

/// Longest network interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

impl UplinkConfig {
    /// `tap`/`packet`.
    pub fn kind(&self) -> &'static str {
        match self {
            UplinkConfig::Tap { .. } => "tap",
            UplinkConfig::Packet { .. } => "packet",
        }
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        match self {
            UplinkConfig::Tap { name } => name,
            UplinkConfig::Packet { interface } => interface,
        }
    }

    pub(crate) fn validate(self) -> Result<Self, ConfigError> {
        let field = match &self {
            UplinkConfig::Tap { .. } => "uplink.name",
            UplinkConfig::Packet { .. } => "uplink.interface",
        };
        let n = self.ifname();
        let ok = !n.is_empty()
            && n.len() <= MAX_IFNAME
            && n != "."
            && n != ".."
            && n.chars()
                .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
        if !ok {
            return Err(invalid(
                field,
                n,
                format!("an interface name of 1 to {MAX_IFNAME} printable ASCII characters without `/`, `:` or spaces"),
            ));
        }
        Ok(self)
    }
}

/// One `pfs[]` entry as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PfFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub model: NicModel,
    pub vfs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// Queue pairs per VF (avf only; 1..=16, default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_pairs: Option<u32>,
    /// Who may connect to this PF's VF sockets; default: the file's `socketOwner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_owner: Option<SocketOwner>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vf: Vec<VfFile>,
    /// How the VFs are consumed: vfio-user sockets (default) or TAP-backed netdevs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<DeviceType>,
}

/// How a PF's VFs are handed to their users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceType {
    /// A vfio-user socket per VF (VMs, userspace drivers).
    #[default]
    #[serde(rename = "vfio-user")]
    VfioUser,
    /// A kernel TAP per VF, switched like the VF, for pods (`emu-sriov-cni`).
    #[serde(rename = "netdev")]
    Netdev,
}

/// One `pfs[].vf[]` entry as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VfFile {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoofchk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<bool>,
    /// Transmit rate limit in Mbit/s (token bucket; frames wait in the VF's ring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_mbps: Option<u32>,
}

/// The `dataplane` section as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataplaneFile {
    #[serde(default)]
    pub mode: DataplaneMode,
    /// CPU cores for dataplane threads, one thread per core, pinned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cores: Vec<u32>,
}

impl ConfigFile {
    /// Parses YAML text; `origin` names it in errors (a path, or "built-in default").
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: origin.to_owned(),
            source,
        })
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// The built-in default ([`DEFAULT_CONFIG_YAML`]).
    pub fn builtin() -> Self {
        Self::from_yaml(DEFAULT_CONFIG_YAML, "built-in default")
            .unwrap_or_else(|e| unreachable!("the built-in config is tested to parse: {e}"))
    }

    /// Replaces the PF list with `count` VFs per model, named `<model><n>` in order
    /// (what `--pf MODEL:VFS` does). Per-VF settings of the replaced PFs are dropped.
    pub fn set_pfs(&mut self, pfs: impl IntoIterator<Item = (NicModel, u8)>) {
        self.pfs = pfs
            .into_iter()
            .map(|(model, vfs)| PfFile {
                name: None,
                model,
                vfs: u32::from(vfs),
                resource_name: None,
                queue_pairs: None,
                socket_owner: None,
                vf: Vec::new(),
                device_type: None,
            })
            .collect();
    }

    /// Validates against the host's defaults (host name, run dir for this user).
    pub fn validate(self) -> Result<AgentConfig, ConfigError> {
        self.validate_with(&HostDefaults::detect())
    }

    /// Validates, applying defaults from `host`. Pure: tests pass their own `host`.
    pub fn validate_with(self, host: &HostDefaults) -> Result<AgentConfig, ConfigError> {
        let node_name = match self.node_name {
            Some(name) => validate_node_name(name)?,
            None => host.node_name.clone().ok_or(ConfigError::NoNodeName)?,
        };
        let run_dir = validate_run_dir(self.run_dir.unwrap_or_else(|| host.run_dir.clone()))?;
        if self.dataplane.mode == DataplaneMode::Poll && self.dataplane.cores.is_empty() {
            return Err(ConfigError::PollModeUnsupported);
        }
        let ncpu = std::thread::available_parallelism().map_or(1024, |n| n.get());
        let ncpu = ncpu.max(crate::sys::online_cpus());
        for (i, &c) in self.dataplane.cores.iter().enumerate() {
            if c as usize >= ncpu {
                return Err(invalid(
                    format!("dataplane.cores[{i}]"),
                    c,
                    format!("a CPU number below {ncpu}"),
                ));
            }
        }
        if self.pfs.is_empty() {
            return Err(ConfigError::NoPfs);
        }

        let mut pfs = Vec::with_capacity(self.pfs.len());
        let mut names: HashMap<String, String> = HashMap::new();
        let mut per_model: HashMap<NicModel, usize> = HashMap::new();
        for (p, pf) in self.pfs.into_iter().enumerate() {
            let field = format!("pfs[{p}]");
            let nth = per_model.entry(pf.model).or_default();
            let name = match pf.name {
                Some(name) => validate_pf_name(&format!("{field}.name"), name)?,
                None => format!("{}{nth}", pf.model),
            };
            *nth += 1;
            if let Some(first) = names.get(&name) {
                return Err(ConfigError::DuplicatePfName {
                    field: format!("{field}.name"),
                    name,
                    first: first.clone(),
                });
            }
            names.insert(name.clone(), field.clone());
            let resource_name = match pf.resource_name {
                Some(r) => validate_resource_name(&format!("{field}.resourceName"), r)?,
                None => DEFAULT_RESOURCE_NAME.to_owned(),
            };
            let queue_pairs = validate_queue_pairs(&field, pf.model, pf.queue_pairs)?;
            let mut cfg = validate_pf(&field, name, pf.model, pf.vfs, pf.vf)?;
            cfg.queue_pairs = queue_pairs;
            cfg.resource_name = resource_name;
            cfg.socket_owner = pf.socket_owner.or(self.socket_owner);
            cfg.device_type = pf.device_type.unwrap_or_default();
            if cfg.device_type == DeviceType::Netdev && cfg.model != NicModel::Igb {
                return Err(invalid(
                    format!("{field}.deviceType"),
                    "netdev",
                    "model igb only for now (netdev VFs are driven through the igb PF model): use model igb, or deviceType vfio-user",
                ));
            }
            pfs.push(cfg);
        }

        let uplink = self.uplink.map(UplinkConfig::validate).transpose()?;
        check_socket_paths(&run_dir, &pfs)?;
        assign_macs(&node_name, &mut pfs)?;
        Ok(AgentConfig {
            node_name,
            run_dir,
            pfs,
            dataplane: DataplaneConfig {
                mode: self.dataplane.mode,
                cores: self.dataplane.cores.iter().map(|&c| c as usize).collect(),
            },
            uplink,
            allow_unsealed_memory: self.allow_unsealed_memory.unwrap_or(false),
        })
    }
}

/// Where defaults that depend on the host come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDefaults {
    /// The host name, if it could be read.
    pub node_name: Option<String>,
    /// [`default_run_dir`].
    pub run_dir: PathBuf,
}

impl HostDefaults {
    /// Reads the host name and the user's default run dir.
    pub fn detect() -> Self {
        Self {
            node_name: sys::hostname(),
            run_dir: default_run_dir(),
        }
    }
}

/// The run dir used when none is configured: `/run/emu-sriov` for root, else
/// `$XDG_RUNTIME_DIR/emu-sriov`, else `/tmp/emu-sriov-$UID`.
pub fn default_run_dir() -> PathBuf {
    let uid = sys::effective_uid();
    if uid == 0 {
        return PathBuf::from("/run/emu-sriov");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("emu-sriov"),
        _ => PathBuf::from(format!("/tmp/emu-sriov-{uid}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The validated configuration.

/// A validated agent configuration: every default applied, every VF with its MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The node's name; seeds generated MACs.
    pub node_name: String,
    /// Absolute, UTF-8 directory for the control socket and the VF sockets.
    pub run_dir: PathBuf,
    /// At least one PF, names unique.
    pub pfs: Vec<PfConfig>,
    pub dataplane: DataplaneConfig,
    /// The switch's default port, if any.
    pub uplink: Option<UplinkConfig>,
    /// Accept DMA_MAP files without `F_SEAL_SHRINK` (faults on them are recovered).
    pub allow_unsealed_memory: bool,
}

/// One emulated PF and its VFs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfConfig {
    /// Unique name, e.g. `igb0`.
    pub name: String,
    pub model: NicModel,
    /// `vfs[i].index == i`; 1..=`model.max_vfs()` entries.
    pub vfs: Vec<VfConfig>,
    /// Extended resource the device plugin advertises these VFs as.
    pub resource_name: String,
    /// Queue pairs per VF (1 for igb, whose Linux driver uses one pair).
    pub queue_pairs: u16,
    /// Who may connect to these VFs' sockets; `None`: only the agent's own user.
    pub socket_owner: Option<SocketOwner>,
    /// vfio-user sockets, or TAP-backed netdevs ([`crate::netdev`]).
    pub device_type: DeviceType,
}

/// One VF's PF-side settings, as `ip link set PF vf N ...` would set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfConfig {
    pub index: u8,
    /// Unicast; unique across the node.
    pub mac: Mac,
    /// The config file set `mac` (else it was derived, and the one remembered in the state
    /// file may replace it: see [`crate::state`]).
    pub mac_configured: bool,
    /// Port VLAN (1..=4094) the PF inserts/strips, if any.
    pub port_vlan: Option<u16>,
    /// Drop frames whose source MAC is not `mac`.
    pub spoofchk: bool,
    /// Allow the VF to request promiscuous mode and MAC changes.
    pub trusted: bool,
    /// Transmit rate limit in Mbit/s; `None`: unlimited.
    pub rate_mbps: Option<u32>,
    /// The PF-side MTU: frames with a larger payload are not delivered to the VF (cluster
    /// mode's pool `mtu`); `None`: the VF's driver decides alone.
    pub mtu: Option<u32>,
}

/// Dataplane settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    pub mode: DataplaneMode,
    /// One pinned dataplane thread per listed core; empty: one unpinned thread.
    pub cores: Vec<usize>,
}

impl TryFrom<ConfigFile> for AgentConfig {
    type Error = ConfigError;

    fn try_from(file: ConfigFile) -> Result<Self, Self::Error> {
        file.validate()
    }
}

impl AgentConfig {
    /// Every VF with its PF, in config order.
    pub fn vfs(&self) -> impl Iterator<Item = (&PfConfig, &VfConfig)> {
        self.pfs
            .iter()
            .flat_map(|pf| pf.vfs.iter().map(move |vf| (pf, vf)))
    }

    /// Whether some PF hands its VF sockets to a configured owner (then the run dir must let
    /// that user reach its VF's directory: see [`crate::access`]).
    pub fn shares_sockets(&self) -> bool {
        self.pfs.iter().any(|pf| pf.socket_owner.is_some())
    }

    /// The vfio-user socket path of VF `index` of `pf`.
    pub fn vf_socket_path(&self, pf: &PfConfig, vf: &VfConfig) -> PathBuf {
        naming::vf_socket_path(&self.run_dir, &naming::vf_id(&pf.name, vf.index))
    }
}

// ---------------------------------------------------------------------------------------------
// Field validators.

fn validate_node_name(name: String) -> Result<String, ConfigError> {
    if name.is_empty()
        || name.len() > 253
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid("nodeName", &name, "1 to 253 characters, no spaces"));
    }
    Ok(name)
}

fn validate_run_dir(dir: PathBuf) -> Result<PathBuf, ConfigError> {
    if !dir.is_absolute() {
        return Err(invalid(
            "runDir",
            dir.display(),
            "an absolute path (on the command line, relative paths are resolved first)",
        ));
    }
    if dir.to_str().is_none() {
        return Err(invalid("runDir", dir.display(), "a UTF-8 path"));
    }
    Ok(dir)
}

pub(crate) fn validate_pf_name(field: &str, name: String) -> Result<String, ConfigError> {
    let ok = name.len() <= MAX_PF_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(invalid(
            field,
            &name,
            format!("1 to {MAX_PF_NAME} characters of a-z, 0-9 and _, starting with a letter"),
        ));
    }
    Ok(name)
}

/// Default queue pairs of an AVF VF (iavf's base mode).
pub const DEFAULT_AVF_QUEUE_PAIRS: u16 = 4;

fn validate_queue_pairs(field: &str, model: NicModel, v: Option<u32>) -> Result<u16, ConfigError> {
    match (model, v) {
        (NicModel::Igb, None) => Ok(1),
        (NicModel::Igb, Some(n)) => Err(invalid(
            format!("{field}.queuePairs"),
            n,
            "nothing: igbvf has one queue pair (remove queuePairs, or use model avf)",
        )),
        (NicModel::Avf, None) => Ok(DEFAULT_AVF_QUEUE_PAIRS),
        (NicModel::Avf, Some(n)) => u16::try_from(n)
            .ok()
            .filter(|n| (1..=16).contains(n))
            .ok_or_else(|| invalid(format!("{field}.queuePairs"), n, "1..=16")),
    }
}

fn validate_pf(
    field: &str,
    name: String,
    model: NicModel,
    vfs: u32,
    overrides: Vec<VfFile>,
) -> Result<PfConfig, ConfigError> {
    let max = model.max_vfs();
    let count = u8::try_from(vfs)
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            invalid(
                format!("{field}.vfs"),
                vfs,
                format!("1..={max} for model {model}"),
            )
        })?;

    let mut vf_list: Vec<VfConfig> = (0..count)
        .map(|index| VfConfig {
            index,
            mac: [0; 6],
            mac_configured: false,
            port_vlan: None,
            spoofchk: true,
            trusted: false,
            rate_mbps: None,
            mtu: None,
        })
        .collect();
    let mut seen = BTreeSet::new();
    for (o, entry) in overrides.into_iter().enumerate() {
        let vf_field = format!("{field}.vf[{o}]");
        let Some(vf) = usize::try_from(entry.index)
            .ok()
            .and_then(|i| vf_list.get_mut(i))
        else {
            return Err(invalid(
                format!("{vf_field}.index"),
                entry.index,
                format!("0..={} ({name} has {count} VFs)", count - 1),
            ));
        };
        if !seen.insert(entry.index) {
            return Err(ConfigError::DuplicateVfIndex {
                field: format!("{vf_field}.index"),
                index: entry.index,
            });
        }
        if let Some(vlan) = entry.vlan {
            let id = u16::try_from(vlan)
                .ok()
                .filter(|v| (1..=4094).contains(v))
                .ok_or_else(|| {
                    invalid(
                        format!("{vf_field}.vlan"),
                        vlan,
                        "1..=4094 (omit for no port VLAN)",
                    )
                })?;
            vf.port_vlan = Some(id);
        }
        vf.spoofchk = entry.spoofchk.unwrap_or(true);
        vf.trusted = entry.trust.unwrap_or(false);
        if let Some(r) = entry.rate_mbps {
            if !(1..=400_000).contains(&r) {
                return Err(invalid(
                    format!("{vf_field}.rateMbps"),
                    r,
                    "1..=400000 (Mbit/s), or leave it out for no limit",
                ));
            }
            vf.rate_mbps = Some(r);
        }
        if let Some(text) = entry.mac {
            vf.mac = validate_mac(&format!("{vf_field}.mac"), &text)?;
            vf.mac_configured = true;
        }
    }
    Ok(PfConfig {
        name,
        model,
        vfs: vf_list,
        resource_name: DEFAULT_RESOURCE_NAME.to_owned(),
        queue_pairs: 1,
        socket_owner: None,
        device_type: DeviceType::VfioUser,
    })
}

fn validate_mac(field: &str, text: &str) -> Result<Mac, ConfigError> {
    let mac = mac::parse_mac(text)
        .ok_or_else(|| invalid(field, text, "six hex octets, e.g. 02:00:00:00:00:10"))?;
    if mac == [0; 6] {
        return Err(invalid(
            field,
            text,
            "a unicast MAC other than 00:00:00:00:00:00",
        ));
    }
    if mac::is_multicast(&mac) {
        return Err(invalid(
            field,
            text,
            "a unicast MAC (the lowest bit of the first octet must be 0), e.g. 02:00:00:00:00:10",
        ));
    }
    if !mac::is_locally_administered(&mac) {
        tracing::warn!(
            field,
            mac = text,
            "MAC is not locally administered (second-lowest bit of the first octet is 0); \
             it may clash with a real NIC's vendor-assigned address"
        );
    }
    Ok(mac)
}

/// The extended resource VFs are advertised as unless a PF names its own.
pub const DEFAULT_RESOURCE_NAME: &str = "emu.sriov/vf";

/// `<domain>/<name>`: a DNS-subdomain-like prefix and a name of 1..=63 of `[A-Za-z0-9._-]`
/// with alphanumeric ends (what the kubelet accepts as an extended resource name).
pub(crate) fn validate_resource_name(field: &str, name: String) -> Result<String, ConfigError> {
    let ok_part = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    match name.split_once('/') {
        Some((domain, n)) if ok_part(domain, 253) && ok_part(n, 63) && !n.contains('/') => Ok(name),
        _ => Err(invalid(
            field,
            &name,
            "an extended resource name DOMAIN/NAME, e.g. emu.sriov/vf-fast".to_owned(),
        )),
    }
}

/// Every socket the agent binds must fit in `sun_path`; say so now rather than at bind time.
fn check_socket_paths(run_dir: &Path, pfs: &[PfConfig]) -> Result<(), ConfigError> {
    let longest = pfs
        .iter()
        .flat_map(|pf| {
            pf.vfs
                .iter()
                .map(move |vf| naming::vf_socket_path(run_dir, &naming::vf_id(&pf.name, vf.index)))
        })
        .chain(std::iter::once(naming::control_socket_path(run_dir)))
        .max_by_key(|p| p.as_os_str().len())
        .unwrap_or_default();
    if longest.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(invalid(
            "runDir",
            run_dir.display(),
            format!(
                "a shorter path: socket {} is longer than the {MAX_SOCKET_PATH} bytes a unix socket path may have",
                longest.display()
            ),
        ));
    }
    Ok(())
}

/// Checks explicit MACs (unique across the node) and fills in the generated ones.
/// Before this runs, a VF without a configured MAC holds all-zeroes (rejected as a value).
fn assign_macs(node_name: &str, pfs: &mut [PfConfig]) -> Result<(), ConfigError> {
    let mut owners: HashMap<Mac, String> = HashMap::new();
    let mut requests = Vec::new();
    for (p, pf) in pfs.iter().enumerate() {
        for vf in &pf.vfs {
            let explicit = (vf.mac != [0; 6]).then_some(vf.mac);
            if let Some(mac) = explicit {
                let field = format!("pfs[{p}].vf[index {}].mac", vf.index);
                if let Some(first) = owners.get(&mac) {
                    return Err(ConfigError::DuplicateMac {
                        field,
                        mac: mac::format_mac(&mac),
                        first: first.clone(),
                    });
                }
                owners.insert(mac, field);
            }
            requests.push(MacRequest {
                pf: pf.name.as_str(),
                index: vf.index,
                explicit,
            });
        }
    }
    let macs = mac::assign_macs(node_name, &requests);
    for (vf, mac) in pfs.iter_mut().flat_map(|pf| pf.vfs.iter_mut()).zip(macs) {
        vf.mac = mac;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostDefaults {
        HostDefaults {
            node_name: Some("node-a".into()),
            run_dir: PathBuf::from("/run/emu-sriov"),
        }
    }

    fn validate(yaml: &str) -> Result<AgentConfig, ConfigError> {
        ConfigFile::from_yaml(yaml, "test")?.validate_with(&host())
    }

    fn err(yaml: &str) -> String {
        let e = validate(yaml).expect_err("config should be rejected");
        // What the binary prints: the message and its causes.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    #[test]
    fn builtin_default_is_one_igb_with_four_vfs() {
        let config = ConfigFile::builtin().validate_with(&host()).unwrap();
        assert_eq!(config.node_name, "node-a");
        assert_eq!(config.run_dir, PathBuf::from("/run/emu-sriov"));
        assert_eq!(config.pfs.len(), 1);
        assert_eq!(config.pfs[0].name, "igb0");
        assert_eq!(config.pfs[0].model, NicModel::Igb);
        assert_eq!(config.pfs[0].vfs.len(), 4);
        assert_eq!(config.dataplane.mode, DataplaneMode::Adaptive);
        for (i, vf) in config.pfs[0].vfs.iter().enumerate() {
            assert_eq!(usize::from(vf.index), i);
            assert!(vf.spoofchk && !vf.trusted && vf.port_vlan.is_none());
            assert_eq!(vf.mac[0], 0x02);
        }
    }

    #[test]
    fn reference_config_is_valid() {
        let config = validate(CONFIG_REFERENCE_YAML).unwrap();
        let vf0 = &config.pfs[0].vfs[0];
        assert_eq!(vf0.mac, [2, 0, 0, 0, 0, 0x10]);
        assert_eq!(vf0.port_vlan, Some(100));
        assert!(vf0.spoofchk);
        assert!(!vf0.trusted);
        assert_eq!(config.node_name, "node-a");
    }

    #[test]
    fn names_default_per_model_and_macs_are_stable() {
        let yaml = "nodeName: n1\npfs: [{model: igb, vfs: 2}, {model: igb, vfs: 3, name: uplink}, {model: igb, vfs: 1}]";
        let a = validate(yaml).unwrap();
        let names: Vec<_> = a.pfs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["igb0", "uplink", "igb2"]);
        assert_eq!(a, validate(yaml).unwrap());
        let other_node = validate(&yaml.replace("n1", "n2")).unwrap();
        assert_ne!(a.pfs[0].vfs[0].mac, other_node.pfs[0].vfs[0].mac);
    }

    #[test]
    fn explicit_and_generated_macs_never_collide() {
        let taken = mac::format_mac(&mac::derived_mac("node-a", "igb0", 1, 0));
        let yaml = format!("pfs: [{{model: igb, vfs: 2, vf: [{{index: 0, mac: '{taken}'}}]}}]");
        let config = validate(&yaml).unwrap();
        assert_eq!(mac::format_mac(&config.pfs[0].vfs[0].mac), taken);
        assert_ne!(config.pfs[0].vfs[1].mac, config.pfs[0].vfs[0].mac);
    }

    #[test]
    fn rejects_with_field_value_and_allowed() {
        let cases: &[(&str, &[&str])] = &[
            ("pfs: [{model: igb, vfs: 8}]", &["pfs[0].vfs", "8", "1..=7"]),
            ("pfs: [{model: igb, vfs: 0}]", &["pfs[0].vfs", "`0`"]),
            ("pfs: [{model: e1000, vfs: 1}]", &["pfs[0].model", "e1000", "`igb` or `avf`"]),
            ("pfs: [{model: igb, vfs: 1, color: red}]", &["pfs[0]", "unknown field `color`"]),
            ("bogus: 1\npfs: [{model: igb, vfs: 1}]", &["unknown field `bogus`"]),
            ("pfs: []", &["no PF configured", "--pf igb:4"]),
            ("pfs: [{model: igb, vfs: 1}]\ndataplane: {mode: poll}", &["dataplane.mode", "dataplane.cores", "adaptive"]),
            ("pfs: [{model: igb, vfs: 1}]\ndataplane: {mode: poll, cores: [100000]}", &["dataplane.cores[0]", "100000"]),
            ("pfs: [{model: igb, vfs: 1, queuePairs: 2}]", &["pfs[0].queuePairs", "model avf"]),
            ("pfs: [{model: avf, vfs: 1, queuePairs: 17}]", &["pfs[0].queuePairs", "17", "1..=16"]),
            ("pfs: [{model: avf, vfs: 65}]", &["pfs[0].vfs", "65", "1..=64"]),
            ("pfs: [{model: igb, vfs: 1, vf: [{index: 0, rateMbps: 0}]}]", &["pfs[0].vf[0].rateMbps", "1..=400000"]),
            ("pfs: [{model: igb, vfs: 1, name: a}, {model: igb, vfs: 1, name: a}]", &["pfs[1].name", "`a`", "pfs[0]"]),
            ("pfs: [{model: igb, vfs: 1, name: Bad-Name}]", &["pfs[0].name", "Bad-Name", "a-z"]),
            ("pfs: [{model: igb, vfs: 2, vf: [{index: 2}]}]", &["pfs[0].vf[0].index", "`2`", "0..=1"]),
            ("pfs: [{model: igb, vfs: 2, vf: [{index: 1}, {index: 1}]}]", &["pfs[0].vf[1].index", "twice"]),
            ("pfs: [{model: igb, vfs: 1, vf: [{index: 0, vlan: 4095}]}]", &["pfs[0].vf[0].vlan", "4095", "1..=4094"]),
            ("pfs: [{model: igb, vfs: 1, vf: [{index: 0, vlan: 0}]}]", &["pfs[0].vf[0].vlan", "`0`"]),
            ("pfs: [{model: igb, vfs: 1, vf: [{index: 0, mac: '03:00:00:00:00:01'}]}]", &["pfs[0].vf[0].mac", "03:00:00:00:00:01", "unicast"]),
            ("pfs: [{model: igb, vfs: 1, vf: [{index: 0, mac: 'nope'}]}]", &["pfs[0].vf[0].mac", "nope", "hex"]),
            (
                "pfs: [{model: igb, vfs: 1, vf: [{index: 0, mac: '02:00:00:00:00:01'}]}, {model: igb, vfs: 1, vf: [{index: 0, mac: '02:00:00:00:00:01'}]}]",
                &["pfs[1]", "02:00:00:00:00:01", "already used by pfs[0]"],
            ),
            ("runDir: relative/dir\npfs: [{model: igb, vfs: 1}]", &["runDir", "relative/dir", "absolute"]),
            ("nodeName: ''\npfs: [{model: igb, vfs: 1}]", &["nodeName"]),
        ];
        for (yaml, needles) in cases {
            let text = err(yaml);
            for needle in *needles {
                assert!(
                    text.contains(needle),
                    "error for {yaml:?} lacks {needle:?}: {text}"
                );
            }
        }
        let long = format!(
            "runDir: /{}\npfs: [{{model: igb, vfs: 1}}]",
            "d".repeat(100)
        );
        assert!(err(&long).contains("unix socket path"));
    }

    #[test]
    fn socket_owner_per_pf_wins_over_the_global_one() {
        let config = validate(
            "socketOwner: {uid: 107, gid: 107}\n\
             pfs: [{model: igb, vfs: 1}, {model: avf, vfs: 1, socketOwner: {uid: 1000, gid: 1001}}]",
        )
        .unwrap();
        let owners: Vec<_> = config.pfs.iter().map(|p| p.socket_owner).collect();
        assert_eq!(
            owners,
            [
                Some(SocketOwner { uid: 107, gid: 107 }),
                Some(SocketOwner {
                    uid: 1000,
                    gid: 1001
                })
            ]
        );
        assert!(config.shares_sockets());
        let plain = validate("pfs: [{model: igb, vfs: 1}]").unwrap();
        assert_eq!(plain.pfs[0].socket_owner, None);
        assert!(!plain.shares_sockets());
        let e = err("socketOwner: {uid: 107}\npfs: [{model: igb, vfs: 1}]");
        assert!(e.contains("gid"), "{e}");
        let e = err("socketOwner: {uid: qemu, gid: 107}\npfs: [{model: igb, vfs: 1}]");
        assert!(e.contains("does not match the schema"), "{e}");
    }

    #[test]
    fn non_laa_unicast_mac_is_accepted() {
        let config =
            validate("pfs: [{model: igb, vfs: 1, vf: [{index: 0, mac: '00:1b:21:00:00:01'}]}]")
                .unwrap();
        assert_eq!(config.pfs[0].vfs[0].mac, [0, 0x1b, 0x21, 0, 0, 1]);
    }

    #[test]
    fn no_hostname_needs_node_name() {
        let host = HostDefaults {
            node_name: None,
            ..host()
        };
        let e = ConfigFile::builtin().validate_with(&host).unwrap_err();
        assert!(e.to_string().contains("--node-name"), "{e}");
    }

    #[test]
    fn model_from_str_lists_supported() {
        assert_eq!("igb".parse::<NicModel>().unwrap(), NicModel::Igb);
        assert_eq!("avf".parse::<NicModel>().unwrap(), NicModel::Avf);
        let e = "i40e".parse::<NicModel>().unwrap_err().to_string();
        assert!(
            e.contains("`i40e`") && e.contains("supported models are igb, avf"),
            "{e}"
        );
    }

    #[test]
    fn set_pfs_replaces_list() {
        let mut file = ConfigFile::from_yaml(CONFIG_REFERENCE_YAML, "ref").unwrap();
        file.set_pfs([(NicModel::Igb, 2), (NicModel::Igb, 3)]);
        let config = file.validate_with(&host()).unwrap();
        let shape: Vec<_> = config
            .pfs
            .iter()
            .map(|p| (p.name.as_str(), p.vfs.len()))
            .collect();
        assert_eq!(shape, [("igb0", 2), ("igb1", 3)]);
    }

    #[test]
    fn uplink_tap_and_packet_validate() {
        let base = "pfs: [{model: igb, vfs: 1}]\n";
        let c = validate(&format!("{base}uplink: {{type: tap, name: emu0}}")).unwrap();
        assert_eq!(
            c.uplink,
            Some(UplinkConfig::Tap {
                name: "emu0".into()
            })
        );
        let c = validate(&format!("{base}uplink: {{type: packet, interface: eth1}}")).unwrap();
        assert_eq!(
            c.uplink,
            Some(UplinkConfig::Packet {
                interface: "eth1".into()
            })
        );
        assert_eq!(validate(base).unwrap().uplink, None);
        let e = err(&format!(
            "{base}uplink: {{type: tap, name: a-very-long-name0}}"
        ));
        assert!(e.contains("uplink.name") && e.contains("1 to 15"), "{e}");
        let e = err(&format!(
            "{base}uplink: {{type: packet, interface: \"a/b\"}}"
        ));
        assert!(e.contains("uplink.interface"), "{e}");
        let e = err(&format!("{base}uplink: {{type: vxlan, name: x}}"));
        assert!(e.contains("does not match the schema"), "{e}");
        let e = err(&format!("{base}uplink: {{type: tap, name: x, mtu: 9000}}"));
        assert!(e.contains("does not match the schema"), "{e}");
    }
}
