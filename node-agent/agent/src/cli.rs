//! The command line. `--help` is the user documentation: every flag says what it does and
//! what it defaults to, and each command ends with examples.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use emu_sriov_agent::cluster::ClusterOptions;
use emu_sriov_agent::config::{
    self, AgentConfig, ConfigError, ConfigFile, NicModel, SocketOwner, UplinkConfig,
};

const ABOUT: &str = "Emulated SR-IOV NICs: Intel 82576 (igb) PFs carved into igbvf VFs, each \
                     served as a vfio-user socket that QEMU (>= 10.1) attaches with vfio-user-pci.";

const AFTER_HELP: &str = "\
Examples:
  emu-sriov-agent run                        # one igb PF with 4 VFs, default run dir
  emu-sriov-agent run --pf igb:2 --pf igb:7  # two PFs: igb0 (2 VFs), igb1 (7 VFs)
  emu-sriov-agent list                       # VFs of the running agent, with counters
  emu-sriov-agent qemu-args igb0-vf0         # the QEMU -device argument for one VF";

const LIST_AFTER_HELP: &str = "\
Examples:
  emu-sriov-agent list
  emu-sriov-agent list --run-dir /run/emu-sriov --output json | jq '.vfs[] | {id, mac, socket}'

JSON output: {\"vfs\":[{\"id\",\"pf\",\"index\",\"model\",\"vendor_id\",\"device_id\",\"mac\",\"socket\",
\"state\":\"free\"|\"attached\",\"counters\":{\"tx_packets\",\"tx_bytes\",\"rx_packets\",\"rx_bytes\",
\"tx_drops\",\"rx_drops\",\"traps\",\"interrupts\"}}]}";

const QEMU_ARGS_AFTER_HELP: &str = "\
Example:
  qemu-system-x86_64 -m 1G -object memory-backend-memfd,id=mem,size=1G,share=on \\
    -machine q35,memory-backend=mem ... \\
    -device \"$(emu-sriov-agent qemu-args igb0-vf0)\"";

fn run_after_help() -> String {
    format!(
        "Precedence: flags override the config file, which overrides the built-in default.\n\
         \n\
         Built-in default (used without --config):\n{}\n\
         Config file reference (YAML; unknown keys are errors):\n{}\n\
         Cluster mode (--cluster, or --kubeconfig):\n  \
         The agent follows the cluster-scoped NodeState (emu.sriov/v1alpha1) named --node-name:\n  \
         one switch and dataplane per spec.pools[] entry, VFs <pf>-vf<index> with sockets\n  \
         RUN_DIR/vfs/<id>/vf.sock and MACs kept in RUN_DIR/state.json. Changes never need a\n  \
         drain: new VFs appear at once; removed VFs go at once when free, and when their pod\n  \
         releases them otherwise; spoofChk and maxTxRateMbps change at once, vlan, trust, mtu\n  \
         and resourceName of an allocated VF when it is released; model, queuePairs,\n  \
         dataplane, uplink, socketOwner or a new PF rebuild the pool once none of its VFs is\n  \
         allocated. With --device-plugin, each pool's resourceName is advertised to the kubelet\n  \
         and allocations are read from its pod-resources API. The status (VFs, MACs, sockets,\n  \
         allocation, health; conditions Ready, Pending, Degraded) is written by server-side\n  \
         apply, only when it changed. RBAC: get/list/watch nodestates, patch nodestates/status.\n  \
         The cluster comes from --kubeconfig, else the pod's service account, else $KUBECONFIG\n  \
         or ~/.kube/config. --config, --pf, --uplink and --socket-owner do not apply.\n\
         \n\
         Examples:\n  \
         emu-sriov-agent run\n  \
         emu-sriov-agent run --pf igb:2 --pf igb:2 --run-dir /tmp/sriov\n  \
         emu-sriov-agent run --config /etc/emu-sriov/agent.yaml --log-level debug\n  \
         emu-sriov-agent run --metrics-addr 127.0.0.1:9477 &\n  \
         curl -s http://127.0.0.1:9477/metrics | grep emu_sriov_vf_rx_packets_total\n  \
         emu-sriov-agent run --cluster --node-name \"$NODE_NAME\" --device-plugin --run-dir /var/run/emu-sriov\n  \
         emu-sriov-agent run --kubeconfig ~/.kube/config --node-name node-a --run-dir /tmp/sriov",
        indent(config::DEFAULT_CONFIG_YAML),
        indent(config::CONFIG_REFERENCE_YAML)
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `emu-sriov-agent`: the node agent.
#[derive(Debug, Parser)]
#[command(name = "emu-sriov-agent", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// Log filter for stderr, e.g. `debug` or `info,emu_vfio_server=trace`.
    /// [default: $RUST_LOG, else `info`]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start and matched once: the size gap between `run`'s many flags and the
// others costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: standalone from a local config (no cluster needed), or with --cluster
    /// from the node's NodeState.
    ///
    /// Creates the emulated PFs and their VFs, serves each VF as a vfio-user socket in the run
    /// dir, answers `list` on RUN_DIR/control.sock, and (standalone) prints how to attach each
    /// VF to QEMU. With --cluster the PFs and VFs come from the NodeState named --node-name and
    /// follow it as it changes, and the agent reports what it runs in the NodeState's status.
    /// Runs until interrupted.
    #[command(
        after_help = "The config file reference and the built-in default: emu-sriov-agent run --help",
        after_long_help = run_after_help()
    )]
    Run(RunArgs),
    /// Show the VFs of the running agent: MAC, state, counters, socket.
    #[command(after_help = LIST_AFTER_HELP)]
    List(ListArgs),
    /// Print the QEMU `-device` argument (JSON) that attaches one VF of the running agent.
    #[command(after_help = QEMU_ARGS_AFTER_HELP)]
    QemuArgs(QemuArgsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Cluster mode: run what the NodeState named --node-name asks for and report status
    /// there (see "Cluster mode" below). Needs --node-name.
    #[arg(long, conflicts_with_all = ["config", "pfs", "uplink", "socket_owner"])]
    pub cluster: bool,

    /// Kubeconfig for cluster mode; implies --cluster. [default: the pod's service account,
    /// else $KUBECONFIG or ~/.kube/config]
    #[arg(long, value_name = "PATH", conflicts_with_all = ["config", "pfs", "uplink", "socket_owner"])]
    pub kubeconfig: Option<PathBuf>,

    /// YAML config file (see the reference below). [default: the built-in config]
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the control socket, the VF sockets and state.json (each VF's MAC, kept
    /// across restarts: restart on the same dir to keep them); overrides the config's `runDir`.
    /// [default: /run/emu-sriov as root, else $XDG_RUNTIME_DIR/emu-sriov or /tmp/emu-sriov-$UID]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,

    /// Add a PF of MODEL with VFS VFs, e.g. `igb:4` (igb: 1..=7 VFs). Repeatable; PFs are named
    /// igb0, igb1, ... in order. Any --pf replaces the config's whole `pfs` list, per-VF
    /// settings included.
    #[arg(long = "pf", value_name = "MODEL:VFS")]
    pub pfs: Vec<PfSpec>,

    /// Node name; seeds the generated VF MACs (same name and config ⇒ same MACs).
    /// Overrides the config's `nodeName`. With --cluster: the Kubernetes node name, which is
    /// also the NodeState's name (required). [default: the host name]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// The node's uplink, the switch's default port (unknown unicast and broadcast/multicast
    /// leave through it; frames read from it are switched to the VFs): `tap:NAME` creates TAP
    /// NAME (root; gone when the agent exits), `packet:IFNAME` opens an AF_PACKET socket on an
    /// existing interface. Overrides the config's `uplink`. [default: none]
    #[arg(long, value_name = "tap:NAME|packet:IFNAME")]
    pub uplink: Option<UplinkSpec>,

    /// Accept guest memory that is not sealed against shrinking. By default a client's
    /// DMA_MAP must share a file with F_SEAL_SHRINK (QEMU's memory-backend-memfd seals by
    /// default), because a client that truncates its memory file under the agent would
    /// otherwise fault the agent's next access. With this flag such files are accepted and a
    /// fault on one drops that client and resets its VF only. Overrides the config's
    /// `allowUnsealedMemory`.
    #[arg(long)]
    pub allow_unsealed_memory: bool,

    /// Also run the kubelet device plugin: advertise the VFs as extended resources (each PF's
    /// `resourceName`, default emu.sriov/vf), register with the kubelet, answer Allocate with a
    /// mount of the VF's socket directory, env vars and CDI names. Off by default: standalone
    /// use needs no kubelet.
    #[arg(long)]
    pub device_plugin: bool,

    /// Kubelet's device-plugin dir (kubelet.sock and our sockets); with --device-plugin.
    #[arg(long, value_name = "DIR", default_value = emu_device_plugin::config::DEFAULT_DEVICE_PLUGIN_DIR, requires = "device_plugin")]
    pub device_plugin_dir: PathBuf,

    /// Kubelet's pod-resources socket, polled to learn which VFs pods still hold (released VFs
    /// are scrubbed before being offered again); with --device-plugin.
    #[arg(long, value_name = "SOCKET", default_value = emu_device_plugin::config::DEFAULT_POD_RESOURCES_SOCKET, requires = "device_plugin")]
    pub pod_resources_socket: PathBuf,

    /// Write CDI spec files here and return CDI device names (emu.sriov/vf=<id>) from
    /// Allocate, e.g. /var/run/cdi. [default: CDI off]
    #[arg(long, value_name = "DIR", requires = "device_plugin")]
    pub cdi_dir: Option<PathBuf>,

    /// Hand the VF sockets to UID:GID (numeric, e.g. 107:107 for KubeVirt's qemu): each socket
    /// becomes 0660 UID:GID, its directory RUN_DIR/vfs/<id> 0750 with group GID (still the
    /// agent's), the run dir 0711 so that the owner can reach its socket by path but list
    /// nothing. Overrides the config's top-level `socketOwner`; a PF's own `socketOwner` still
    /// wins for that PF. Needs root (or CAP_CHOWN). The control socket and state.json stay
    /// 0600. [default: none: sockets 0600, directories 0700, the agent's user only]
    #[arg(long, value_name = "UID:GID")]
    pub socket_owner: Option<SocketOwner>,

    /// Serve Prometheus metrics over HTTP on ADDR (IP:PORT, e.g. 127.0.0.1:9477 or
    /// [::]:9477): GET /metrics (per-VF packet, byte, drop, trap and interrupt counters,
    /// attached and healthy gauges, dataplane busy ratio) and GET /healthz. No TLS and no
    /// authentication: bind to a loopback or otherwise trusted address.
    /// Try: curl -s http://127.0.0.1:9477/metrics. [default: off]
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics_addr: Option<SocketAddr>,
}

/// `--metrics-addr`: an IP address and a port; host names are not resolved.
fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        let hint = match s.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => format!("a port is missing, e.g. {ip}:9477"),
            Ok(std::net::IpAddr::V6(ip)) => {
                format!("a port is missing (an IPv6 address goes in brackets), e.g. [{ip}]:9477")
            }
            Err(_) => "expected IP:PORT with a numeric IP (host names are not resolved), \
                       e.g. 127.0.0.1:9477 or [::]:9477"
                .to_owned(),
        };
        format!("invalid address `{s}`: {hint}")
    })
}

impl RunArgs {
    /// The device-plugin paths when --device-plugin is given.
    pub fn plugin_paths(&self) -> Option<emu_sriov_agent::plugin::PluginPaths> {
        self.device_plugin
            .then(|| emu_sriov_agent::plugin::PluginPaths {
                device_plugin_dir: self.device_plugin_dir.clone(),
                pod_resources_socket: self.pod_resources_socket.clone(),
                cdi_dir: self.cdi_dir.clone(),
            })
    }
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Run dir of the agent to ask. [default: as for `run`]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Args)]
pub struct QemuArgsArgs {
    /// Run dir of the agent to ask. [default: as for `run`]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,

    /// The VF, as `list` shows it, e.g. igb0-vf0.
    #[arg(value_name = "VF_ID")]
    pub vf_id: String,
}

/// How `list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns, for people.
    Table,
    /// The control socket's JSON, one line, for scripts.
    Json,
}

/// `--pf MODEL:VFS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfSpec {
    pub model: NicModel,
    pub vfs: u8,
}

impl FromStr for PfSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((model, vfs)) = s.split_once(':') else {
            return Err(format!(
                "expected MODEL:VFS, e.g. igb:4 (supported models: {})",
                NicModel::supported()
            ));
        };
        let model: NicModel = model.parse().map_err(|e: ConfigError| e.to_string())?;
        let max = model.max_vfs();
        let vfs = vfs
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("VFS must be 1..={max} for model {model}, got `{vfs}`"))?;
        Ok(PfSpec { model, vfs })
    }
}

impl fmt::Display for PfSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.model, self.vfs)
    }
}

/// `--uplink tap:NAME | packet:IFNAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSpec(pub UplinkConfig);

impl FromStr for UplinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cfg = match s.split_once(':') {
            Some(("tap", name)) => UplinkConfig::Tap {
                name: name.to_owned(),
            },
            Some(("packet", ifname)) => UplinkConfig::Packet {
                interface: ifname.to_owned(),
            },
            _ => {
                return Err(
                    "expected tap:NAME or packet:IFNAME, e.g. tap:emu0 or packet:eth1".to_owned(),
                )
            }
        };
        let n = cfg.ifname();
        if n.is_empty() || n.len() > config::MAX_IFNAME {
            return Err(format!(
                "interface name `{n}` must be 1 to {} characters",
                config::MAX_IFNAME
            ));
        }
        Ok(UplinkSpec(cfg))
    }
}

/// A directory given on the command line, made absolute against the current directory
/// (socket paths in status and banners are absolute).
pub fn absolute_dir(flag: &str, dir: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(dir).map_err(|e| ConfigError::Invalid {
        field: flag.to_owned(),
        value: dir.display().to_string(),
        allowed: format!("a directory path ({e})"),
    })
}

/// The run dir `list`/`qemu-args` talk to: the flag, else the same default as `run`.
pub fn run_dir_or_default(flag: Option<&Path>) -> Result<PathBuf, ConfigError> {
    match flag {
        Some(dir) => absolute_dir("--run-dir", dir),
        None => Ok(config::default_run_dir()),
    }
}

impl RunArgs {
    /// The config file (or built-in default) with the flags applied, not yet validated.
    pub fn config_file(&self) -> Result<ConfigFile, ConfigError> {
        let mut file = match &self.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::builtin(),
        };
        if let Some(dir) = &self.run_dir {
            file.run_dir = Some(absolute_dir("--run-dir", dir)?);
        }
        if !self.pfs.is_empty() {
            file.set_pfs(self.pfs.iter().map(|pf| (pf.model, pf.vfs)));
        }
        if let Some(name) = &self.node_name {
            file.node_name = Some(name.clone());
        }
        if let Some(up) = &self.uplink {
            file.uplink = Some(up.0.clone());
        }
        if self.allow_unsealed_memory {
            file.allow_unsealed_memory = Some(true);
        }
        if let Some(owner) = self.socket_owner {
            file.socket_owner = Some(owner);
        }
        Ok(file)
    }
}

impl RunArgs {
    /// Whether the agent runs in cluster mode (`--cluster`, or `--kubeconfig`).
    pub fn cluster_mode(&self) -> bool {
        self.cluster || self.kubeconfig.is_some()
    }
}

impl TryFrom<&RunArgs> for ClusterOptions {
    type Error = ConfigError;

    fn try_from(args: &RunArgs) -> Result<Self, Self::Error> {
        let node_name = args
            .node_name
            .clone()
            .ok_or(ConfigError::ClusterNeedsNodeName)?;
        if node_name.is_empty() || node_name.len() > 253 {
            return Err(ConfigError::Invalid {
                field: "--node-name".into(),
                value: node_name,
                allowed: "a Kubernetes node name, 1 to 253 characters".into(),
            });
        }
        let run_dir = match &args.run_dir {
            Some(dir) => absolute_dir("--run-dir", dir)?,
            None => config::default_run_dir(),
        };
        let kubeconfig = args
            .kubeconfig
            .as_deref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_owned()));
        Ok(ClusterOptions {
            node_name,
            kubeconfig,
            run_dir,
            plugin: args.plugin_paths(),
            metrics_addr: args.metrics_addr,
            allow_unsealed_memory: args.allow_unsealed_memory,
        })
    }
}

impl TryFrom<&RunArgs> for AgentConfig {
    type Error = ConfigError;

    fn try_from(args: &RunArgs) -> Result<Self, Self::Error> {
        args.config_file()?.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(std::iter::once("emu-sriov-agent").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).unwrap().command {
            Command::Run(run) => run,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_without_flags_uses_builtin() {
        let args = run_args(&["run"]);
        assert_eq!(args.config_file().unwrap(), ConfigFile::builtin());
    }

    #[test]
    fn pf_flags_replace_pfs_in_order() {
        let args = run_args(&[
            "run",
            "--pf",
            "igb:2",
            "--pf",
            "igb:7",
            "--node-name",
            "n",
            "--run-dir",
            "rel",
        ]);
        assert_eq!(
            args.pfs,
            [
                PfSpec {
                    model: NicModel::Igb,
                    vfs: 2
                },
                PfSpec {
                    model: NicModel::Igb,
                    vfs: 7
                }
            ]
        );
        let config = AgentConfig::try_from(&args).unwrap();
        let shape: Vec<_> = config
            .pfs
            .iter()
            .map(|p| (p.name.as_str(), p.vfs.len()))
            .collect();
        assert_eq!(shape, [("igb0", 2), ("igb1", 7)]);
        assert_eq!(config.node_name, "n");
        assert!(config.run_dir.is_absolute() && config.run_dir.ends_with("rel"));
    }

    #[test]
    fn bad_pf_flags_explain_themselves() {
        let cases: &[(&str, &[&str])] = &[
            ("igb:9", &["igb:9", "1..=7", "igb"]),
            ("igb:0", &["1..=7"]),
            ("igb:x", &["1..=7", "`x`"]),
            (
                "foo:1",
                &["unknown NIC model `foo`", "supported models are igb, avf"],
            ),
            ("avf:65", &["avf:65", "1..=64"]),
            ("igb", &["expected MODEL:VFS", "igb:4"]),
        ];
        for (value, needles) in cases {
            let e = parse(&["run", "--pf", value]).unwrap_err();
            assert!(e.contains("--pf"), "{e}");
            for needle in *needles {
                assert!(
                    e.contains(needle),
                    "--pf {value}: {needle:?} missing from: {e}"
                );
            }
        }
    }

    #[test]
    fn socket_owner_flag_sets_the_global_owner() {
        let args = run_args(&["run", "--pf", "igb:1", "--socket-owner", "107:108"]);
        let config = AgentConfig::try_from(&args).unwrap();
        assert_eq!(
            config.pfs[0].socket_owner,
            Some(SocketOwner { uid: 107, gid: 108 })
        );
        for bad in ["107", "qemu:qemu", "107:-1", "107:"] {
            let e = parse(&["run", "--socket-owner", bad]).unwrap_err();
            assert!(e.contains("UID:GID") && e.contains("107:107"), "{bad}: {e}");
        }
        let help = Cli::command()
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("--socket-owner") && help.contains("socketOwner"));
    }

    #[test]
    fn list_and_qemu_args_parse() {
        let Command::List(list) = parse(&["list"]).unwrap().command else {
            panic!("not list")
        };
        assert_eq!(list.output, OutputFormat::Table);
        assert!(list.run_dir.is_none());
        let Command::List(list) = parse(&[
            "--log-level",
            "debug",
            "list",
            "-o",
            "json",
            "--run-dir",
            "/x",
        ])
        .unwrap()
        .command
        else {
            panic!("not list")
        };
        assert_eq!(list.output, OutputFormat::Json);
        assert_eq!(list.run_dir.as_deref(), Some(Path::new("/x")));
        let Command::QemuArgs(q) = parse(&["qemu-args", "igb0-vf1"]).unwrap().command else {
            panic!("not qemu-args")
        };
        assert_eq!(q.vf_id, "igb0-vf1");
        assert!(parse(&["list", "--output", "yaml"]).is_err());
    }

    #[test]
    fn run_help_documents_the_config() {
        let help = Cli::command()
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("Built-in default"), "{help}");
        assert!(help.contains("vfs: 4"));
        assert!(help.contains("spoofchk"));
    }

    #[test]
    fn device_plugin_flags() {
        let args = run_args(&["run"]);
        assert_eq!(args.plugin_paths(), None);
        let args = run_args(&["run", "--device-plugin", "--cdi-dir", "/c"]);
        let p = args.plugin_paths().unwrap();
        assert_eq!(
            p.device_plugin_dir,
            Path::new("/var/lib/kubelet/device-plugins")
        );
        assert_eq!(p.cdi_dir.as_deref(), Some(Path::new("/c")));
        assert!(parse(&["run", "--cdi-dir", "/c"]).is_err());
    }

    #[test]
    fn metrics_addr_flag() {
        assert_eq!(run_args(&["run"]).metrics_addr, None);
        let args = run_args(&["run", "--metrics-addr", "127.0.0.1:9477"]);
        assert_eq!(args.metrics_addr, Some("127.0.0.1:9477".parse().unwrap()));
        let args = run_args(&["run", "--metrics-addr", "[::]:9477"]);
        assert_eq!(args.metrics_addr, Some("[::]:9477".parse().unwrap()));
        let cases: &[(&str, &str)] = &[
            ("127.0.0.1", "a port is missing, e.g. 127.0.0.1:9477"),
            ("::1", "goes in brackets), e.g. [::1]:9477"),
            ("::1:80", "goes in brackets), e.g. [::1:80]:9477"),
            ("localhost:9477", "host names are not resolved"),
            ("127.0.0.1:99999", "e.g. 127.0.0.1:9477"),
            ("", "expected IP:PORT"),
        ];
        for (value, needle) in cases {
            let e = parse(&["run", "--metrics-addr", value]).unwrap_err();
            assert!(e.contains("--metrics-addr"), "{e}");
            assert!(e.contains(&format!("invalid address `{value}`")), "{e}");
            assert!(
                e.contains(needle),
                "--metrics-addr {value}: {needle:?} missing: {e}"
            );
        }
        let help = Cli::command()
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("--metrics-addr <ADDR>"), "{help}");
        assert!(
            help.contains("curl -s http://127.0.0.1:9477/metrics"),
            "{help}"
        );
    }

    #[test]
    fn cluster_flags() {
        assert!(!run_args(&["run"]).cluster_mode());
        let args = run_args(&["run", "--cluster", "--node-name", "n1", "--device-plugin"]);
        assert!(args.cluster_mode());
        let o = ClusterOptions::try_from(&args).unwrap();
        assert_eq!(o.node_name, "n1");
        assert!(o.kubeconfig.is_none() && o.plugin.is_some());
        let args = run_args(&[
            "run",
            "--kubeconfig",
            "kc",
            "--node-name",
            "n1",
            "--run-dir",
            "/r",
        ]);
        assert!(args.cluster_mode());
        let o = ClusterOptions::try_from(&args).unwrap();
        assert!(o.kubeconfig.unwrap().is_absolute());
        assert_eq!(o.run_dir, Path::new("/r"));
        let e = ClusterOptions::try_from(&run_args(&["run", "--cluster"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--node-name") && e.contains("NODE_NAME"), "{e}");
        for bad in [
            &["run", "--cluster", "--pf", "igb:1"][..],
            &["run", "--kubeconfig", "k", "--config", "c"],
            &["run", "--cluster", "--uplink", "tap:x"],
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("cannot be used with"), "{bad:?}: {e}");
        }
        let help = Cli::command()
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("--cluster") && help.contains("Cluster mode"),
            "{help}"
        );
        assert!(help.contains("NodeState"));
    }

    #[test]
    fn missing_config_file_names_it() {
        let args = run_args(&["run", "--config", "/nonexistent/agent.yaml"]);
        let e = args.config_file().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/agent.yaml"), "{e}");
    }

    #[test]
    fn uplink_flag() {
        let args = run_args(&["run", "--uplink", "tap:emu7", "--node-name", "n"]);
        let c = AgentConfig::try_from(&args).unwrap();
        assert_eq!(
            c.uplink,
            Some(UplinkConfig::Tap {
                name: "emu7".into()
            })
        );
        let args = run_args(&["run", "--uplink", "packet:eth1", "--node-name", "n"]);
        assert_eq!(
            args.config_file().unwrap().uplink,
            Some(UplinkConfig::Packet {
                interface: "eth1".into()
            })
        );
        for bad in ["emu0", "tap:", "vxlan:x", "tap:sixteen-chars-xx"] {
            let e = parse(&["run", "--uplink", bad]).unwrap_err();
            assert!(e.contains("--uplink"), "{bad}: {e}");
        }
    }
}
