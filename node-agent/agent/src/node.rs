//! A running node: the PF models and their VFs built from the validated config, the
//! dataplane, one vfio-user server per VF. [`Node::start`] brings it up; [`Node::status`]
//! feeds `list` and the device plugin; [`Node::scrub`] readies a released VF for its next
//! user; [`Node::shutdown`] tears everything down (sockets removed, threads joined).
//!
//! **Slots.** Each PF is built with a number of VF *slots* (its switch ports and device state),
//! at least the VFs it serves. Standalone mode builds exactly the configured VFs. Cluster mode
//! ([`crate::cluster`]) builds more ([`Node::start_layout`]) so that a PF can grow without
//! restarting the dataplane of the VFs already in use: [`Node::serve`] binds the socket of a
//! free slot, [`Node::unserve`] closes one again, [`Node::configure`] changes a served VF's
//! PF-side settings. An unserved slot has no socket, is never listed, and costs the dataplane
//! one atomic load per pass (its port is inactive).

use crate::access::{self, AccessError};
use crate::config::{
    AgentConfig, DataplaneMode, DeviceType, NicModel, PfConfig, SocketOwner, UplinkConfig, VfConfig,
};
use crate::device::{
    AdminSettings, AvfGlue, AvfPfShared, AvfVfDevice, IgbVfDevice, IgbvfGlue, NodeDevice, PfShared,
    VfCore,
};
use crate::naming;
use crate::netdev::proto::{NetdevAnswer, NetdevRequest};
use crate::netdev::{NetdevError, NetdevVf};
use crate::status::{AgentStatus, ClientState, UplinkStatus, VfStatus, VfStatusCounters};
use emu_dataplane::engine::DataplaneControl;
use emu_dataplane::engine::Mode;
use emu_dataplane::{
    Dataplane, DataplaneConfig, PacketUplink, TapUplink, Uplink, UplinkInfo, VfPort,
};
use emu_guest_mem::{DmaTable, SharedPages};
use emu_nic_defs::{avf as avf_regs, igbvf as r};
use emu_nic_model::avf::pf::{AvfPf, AvfVfAdmin};
use emu_nic_model::avf::vf::AvfVf;
use emu_nic_model::igb_pf::{IgbPf, VfAdmin};
use emu_nic_model::igbvf::vf::{
    IgbVf, IRQ_PAGE_OFFSET, IRQ_PAGE_SIZE, QUEUE_PAGES_OFFSET, QUEUE_PAGES_SIZE,
};
use emu_nic_model::shared::SharedWords;
use emu_nic_model::vmdq::SwitchTable;
use emu_vfio_server::{IrqSet, Server, ServerError, ServerHandle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("cannot start the dataplane thread or allocate its shared memory")]
    Dataplane(#[source] std::io::Error),
    #[error("cannot serve VF {id}")]
    Serve {
        id: String,
        #[source]
        source: ServerError,
    },
    #[error("no VF with id {0}")]
    UnknownVf(String),
    #[error("VF {0} has no slot on this node (its PF was built with fewer VFs): rebuild the node")]
    NoSlot(String),
    #[error("VF {0} is already served")]
    AlreadyServed(String),
    #[error("cannot start netdev VF {id}")]
    Netdev {
        id: String,
        #[source]
        source: NetdevError,
    },
    #[error("cannot open the {kind} uplink")]
    Uplink {
        kind: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Everything known about one VF slot at run time.
struct VfEntry {
    id: String,
    pf: String,
    index: u8,
    model: NicModel,
    mac: [u8; 6],
    socket: PathBuf,
    device: Arc<dyn NodeDevice>,
    dma: Arc<DmaTable>,
    irqs: Arc<IrqSet>,
    owner: Option<SocketOwner>,
    /// The socket is (to be) bound: the VF exists for clients, `list` and the device plugin.
    served: bool,
    server: Option<ServerHandle>,
    /// A netdev-mode VF (TAP port, no socket server).
    netdev: Option<Arc<NetdevVf>>,
}

/// A VF slot built but not yet wired to the dataplane.
struct Pending {
    id: String,
    pf_name: String,
    index: u8,
    model: NicModel,
    /// The VF's settings when it is served from the start.
    served: Option<VfConfig>,
    owner: Option<SocketOwner>,
    dma: Arc<DmaTable>,
    irqs: Arc<IrqSet>,
    make: MakeDevice,
}

/// Builds a VF's device once the dataplane (and its control handle) exists; netdev VFs also
/// return their netdev side.
type MakeDevice =
    Box<dyn FnOnce(&DataplaneControl) -> (Arc<dyn NodeDevice>, Option<Arc<NetdevVf>>)>;

/// How often the PF pings every ready VF with PF_CONTROL_MSG|CTS (devices.md §2.5): the VF's
/// 2 s watchdog re-checks link from the mailbox word it reads.
pub const CTS_PING_PERIOD: Duration = Duration::from_secs(2);

/// How many VF slots each PF of a config gets, beyond the VFs it serves (cluster mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Slots per PF, in config order; a PF missing here (or given fewer) gets one slot per
    /// configured VF index.
    pub capacity: Vec<u8>,
    /// Some VF socket of the agent (this node's or another's) is handed to a socket owner:
    /// the run dir must let owners traverse it (see [`crate::access`]).
    pub shared_run_dir: bool,
}

/// A running node.
pub struct Node {
    vfs: Mutex<Vec<VfEntry>>,
    run_dir: PathBuf,
    allow_unsealed_memory: bool,
    dataplane: Mutex<Option<Dataplane>>,
    control: DataplaneControl,
    stop: Arc<AtomicBool>,
    pinger: Mutex<Option<std::thread::JoinHandle<()>>>,
    uplink: Option<UplinkInfo>,
}

fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

impl Node {
    /// Builds every PF and VF of `config` and starts serving them.
    pub fn start(config: &AgentConfig) -> Result<Arc<Node>, NodeError> {
        Self::start_with_mode(config, None)
    }

    /// [`Node::start`] with a dataplane that has no threads: the caller moves packets with
    /// [`Node::step_dataplane`] (deterministic runs for `bench --instructions`).
    pub fn start_stepped(config: &AgentConfig) -> Result<Arc<Node>, NodeError> {
        Self::start_with_mode(config, Some(Mode::Stepped))
    }

    /// One dataplane pass on the caller's thread (a node from [`Node::start_stepped`]);
    /// returns the packets moved, 0 for a node with dataplane threads.
    pub fn step_dataplane(&self) -> usize {
        self.with_dataplane(0, Dataplane::step)
    }

    /// Builds every PF of `config` with the slots `layout` asks for and serves the VFs
    /// `config` lists (their indexes need not be contiguous). The run dir is prepared for
    /// `layout.shared_run_dir`.
    pub fn start_layout(config: &AgentConfig, layout: &Layout) -> Result<Arc<Node>, NodeError> {
        Self::build(config, None, layout)
    }

    fn start_with_mode(config: &AgentConfig, mode: Option<Mode>) -> Result<Arc<Node>, NodeError> {
        let layout = Layout {
            capacity: Vec::new(),
            shared_run_dir: config.shares_sockets(),
        };
        Self::build(config, mode, &layout)
    }

    fn build(
        config: &AgentConfig,
        mode: Option<Mode>,
        layout: &Layout,
    ) -> Result<Arc<Node>, NodeError> {
        access::prepare_run_dir(&config.run_dir, layout.shared_run_dir)?;
        // Switch port n = n-th VF slot over all PFs, in config order: PFs of the node share
        // one L2 segment (like the ToR switch their ports would plug into).
        let mut ports = Vec::new();
        let mut pending = Vec::new();
        for (p, pf_cfg) in config.pfs.iter().enumerate() {
            let needed = pf_cfg.vfs.iter().map(|v| v.index + 1).max().unwrap_or(0);
            let slots = layout.capacity.get(p).copied().unwrap_or(0).max(needed);
            match pf_cfg.model {
                NicModel::Igb => {
                    build_igb(pf_cfg, slots, &config.run_dir, &mut ports, &mut pending)?
                }
                NicModel::Avf => build_avf(pf_cfg, slots, &mut ports, &mut pending)?,
            }
        }

        let mut table = SwitchTable::new();
        // DTXSWC.LOOPBACK_EN: VF-to-VF traffic is switched locally.
        table.set_loopback(true);
        // The uplink is switch port `ports.len()`, the default port (VT_CTL.DEF_PL).
        let uplink = config.uplink.as_ref().map(open_uplink).transpose()?;
        if uplink.is_some() {
            let _ = table.set_default_port(Some(ports.len()));
        }
        let dp_config = DataplaneConfig {
            mode: mode.unwrap_or(match config.dataplane.mode {
                DataplaneMode::Adaptive => Mode::Adaptive,
                DataplaneMode::Poll => Mode::Poll,
            }),
            cores: config.dataplane.cores.clone(),
        };
        let dataplane = Dataplane::start_with_uplink(dp_config, ports, table, uplink)
            .map_err(NodeError::Dataplane)?;
        let control = dataplane.control();
        let uplink = dataplane.uplink();
        if let Some(u) = &uplink {
            tracing::info!(uplink = %u.name, kind = u.kind, port = u.port, "uplink is the switch's default port");
        }

        let mut vfs = Vec::new();
        for p in pending {
            let (device, netdev) = (p.make)(&control);
            let socket = naming::vf_socket_path(&config.run_dir, &p.id);
            p.dma.set_allow_unsealed(config.allow_unsealed_memory);
            let mut entry = VfEntry {
                id: p.id,
                pf: p.pf_name,
                index: p.index,
                model: p.model,
                mac: p.served.as_ref().map_or([0; 6], |v| v.mac),
                socket,
                device,
                dma: p.dma,
                irqs: p.irqs,
                owner: p.owner,
                served: false,
                server: None,
                netdev,
            };
            if let Some(vf) = &p.served {
                if entry.netdev.is_none() && vf.mtu.is_some() {
                    entry.device.set_admin(admin_of(vf));
                }
                bind(&mut entry, &config.run_dir, vf)?;
            }
            vfs.push(entry);
        }

        let node = Arc::new(Node {
            vfs: Mutex::new(vfs),
            run_dir: config.run_dir.clone(),
            allow_unsealed_memory: config.allow_unsealed_memory,
            dataplane: Mutex::new(Some(dataplane)),
            control,
            stop: Arc::new(AtomicBool::new(false)),
            pinger: Mutex::new(None),
            uplink,
        });
        let weak = Arc::downgrade(&node);
        let stop = node.stop.clone();
        let pinger = std::thread::Builder::new()
            .name("cts-ping".into())
            .spawn(move || {
                // Sleep in small steps so that shutdown is prompt.
                let step = Duration::from_millis(100);
                let mut waited = Duration::ZERO;
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited < CTS_PING_PERIOD {
                        continue;
                    }
                    waited = Duration::ZERO;
                    match weak.upgrade() {
                        Some(n) => n.ping_all(),
                        None => break,
                    }
                }
            })
            .map_err(NodeError::Dataplane)?;
        *node.pinger.lock().unwrap_or_else(|p| p.into_inner()) = Some(pinger);
        Ok(node)
    }

    /// `f` of the dataplane, or `stopped` once it has been shut down.
    fn with_dataplane<T>(&self, stopped: T, f: impl FnOnce(&Dataplane) -> T) -> T {
        self.dataplane
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(stopped, f)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<VfEntry>> {
        self.vfs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Periodic PF duties (igb: PF_CONTROL_MSG|CTS to every attached VF).
    fn ping_all(&self) {
        for e in self.entries().iter() {
            e.device.tick();
        }
    }

    /// A snapshot of every VF for `list` and the device plugin.
    pub fn status(&self) -> AgentStatus {
        let vfs = self.entries();
        AgentStatus {
            vfs: vfs
                .iter()
                .filter(|e| e.served)
                .map(|e| {
                    let c = e.device.port().counters.snapshot();
                    let (traps, memory_faults) = e
                        .server
                        .as_ref()
                        .map(|s| {
                            let st = s.stats().snapshot();
                            (st.region_reads + st.region_writes, st.memory_faults)
                        })
                        .unwrap_or((0, 0));
                    VfStatus {
                        id: e.id.clone(),
                        pf: e.pf.clone(),
                        index: e.index,
                        model: e.model.vf_model().into(),
                        vendor_id: format!("{:#06x}", e.model.vf_vendor_id()),
                        device_id: format!("{:#06x}", e.model.vf_device_id()),
                        mac: format_mac(&e.mac),
                        socket: e.socket.clone(),
                        netdev: e.netdev.as_ref().map(|n| n.host_name.clone()),
                        state: if e.device.attached() {
                            ClientState::Attached
                        } else {
                            ClientState::Free
                        },
                        counters: VfStatusCounters {
                            tx_packets: c.tx_packets,
                            tx_bytes: c.tx_bytes,
                            rx_packets: c.rx_packets,
                            rx_bytes: c.rx_bytes,
                            tx_drops: c.tx_drops,
                            rx_drops: c.rx_drops,
                            traps,
                            interrupts: c.interrupts,
                            tx_bad_descriptors: c.tx_bad_descriptors,
                            memory_faults,
                        },
                    }
                })
                .collect(),
            uplink: self.uplink_status(),
        }
    }

    /// The uplink's name, backend and counters, if the node has one.
    pub fn uplink_status(&self) -> Option<UplinkStatus> {
        self.uplink.as_ref().map(|u| {
            let c = u.counters.snapshot();
            UplinkStatus {
                name: u.name.clone(),
                kind: u.kind.to_owned(),
                rx_packets: c.rx_packets,
                rx_bytes: c.rx_bytes,
                rx_unmatched: c.rx_unmatched,
                rx_errors: c.rx_errors,
                tx_packets: c.tx_packets,
                tx_bytes: c.tx_bytes,
                tx_errors: c.tx_errors,
            }
        })
    }

    /// Every VF's full dataplane counters (drops by reason included), by VF id.
    pub fn counter_snapshots(&self) -> Vec<(String, emu_dataplane::CounterSnapshot)> {
        self.entries()
            .iter()
            .filter(|e| e.served)
            .map(|e| (e.id.clone(), e.device.port().counters.snapshot()))
            .collect()
    }

    /// (poll passes, passes that found work) of the dataplane threads since start.
    pub fn dataplane_passes(&self) -> (u64, u64) {
        self.with_dataplane((0, 0), Dataplane::passes)
    }

    /// Share of wall time the dataplane threads spent moving packets, since start.
    pub fn dataplane_busy_ratio(&self) -> f64 {
        self.with_dataplane(0.0, Dataplane::busy_ratio)
    }

    /// Whether VF `id`'s server thread and the dataplane are running.
    pub fn healthy(&self, id: &str) -> bool {
        let dp_up = self.with_dataplane(false, Dataplane::is_running);
        dp_up
            && self
                .entries()
                .iter()
                .find(|e| e.id == id && e.served)
                .is_some_and(|e| {
                    e.netdev.is_some() || e.server.as_ref().is_some_and(|s| s.is_running())
                })
    }

    /// The MAC of served VF `id`.
    pub fn mac(&self, id: &str) -> Option<[u8; 6]> {
        self.entries()
            .iter()
            .find(|e| e.id == id && e.served)
            .map(|e| e.mac)
    }

    /// The slots of PF `pf` (served or not); 0 for a PF this node does not have.
    pub fn slots(&self, pf: &str) -> usize {
        self.entries().iter().filter(|e| e.pf == pf).count()
    }

    /// Serves slot `vf.index` of PF `pf` with `vf`'s MAC and settings: the device is reset to
    /// power-on with them and its socket bound (and handed to the PF's socket owner). The
    /// other VFs, and the dataplane, are not touched.
    pub fn serve(&self, pf: &str, vf: &VfConfig) -> Result<(), NodeError> {
        let id = naming::vf_id(pf, vf.index);
        let mut vfs = self.entries();
        let e = vfs
            .iter_mut()
            .find(|e| e.pf == pf && e.index == vf.index)
            .ok_or_else(|| NodeError::NoSlot(id.clone()))?;
        if e.served {
            return Err(NodeError::AlreadyServed(id));
        }
        if e.netdev.is_none() {
            e.device.set_admin(admin_of(vf));
            e.device.scrub();
            e.device
                .port()
                .set_rate_limit(vf.rate_mbps.map_or(0, |m| u64::from(m) * 1_000_000));
        }
        e.mac = vf.mac;
        e.dma.set_allow_unsealed(self.allow_unsealed_memory);
        bind(e, &self.run_dir, vf)?;
        tracing::info!(vf = %id, mac = %format_mac(&vf.mac), "VF served");
        Ok(())
    }

    /// Stops serving VF `id`: its client (if any) is dropped, its socket and socket directory
    /// removed, the slot reset for a later [`Node::serve`]. The other VFs are not touched.
    pub fn unserve(&self, id: &str) -> Result<(), NodeError> {
        let mut vfs = self.entries();
        let e = vfs
            .iter_mut()
            .find(|e| e.id == id && e.served)
            .ok_or_else(|| NodeError::UnknownVf(id.to_owned()))?;
        e.served = false;
        if let Some(s) = e.server.take() {
            s.shutdown();
        }
        match &e.netdev {
            Some(n) => n.stop(),
            None => e.device.scrub(),
        }
        e.device.port().set_rate_limit(0);
        let dir = naming::vf_dir(&self.run_dir, id);
        if let Err(err) = std::fs::remove_dir(&dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(vf = %id, dir = %dir.display(), error = %err, "cannot remove the VF's socket directory");
            }
        }
        tracing::info!(vf = %id, "VF removed");
        Ok(())
    }

    /// Changes served VF `id`'s PF-side settings now (port VLAN, spoof check, trust, MTU: see
    /// [`NodeDevice::set_admin`]; rate limit: from the next dataplane pass). The MAC stays.
    pub fn configure(&self, id: &str, vf: &VfConfig) -> Result<(), NodeError> {
        let vfs = self.entries();
        let e = vfs
            .iter()
            .find(|e| e.id == id && e.served)
            .ok_or_else(|| NodeError::UnknownVf(id.to_owned()))?;
        e.device.set_admin(AdminSettings {
            mac: e.mac,
            ..admin_of(vf)
        });
        e.device
            .port()
            .set_rate_limit(vf.rate_mbps.map_or(0, |m| u64::from(m) * 1_000_000));
        Ok(())
    }

    /// Readies VF `id` for its next user: drops its client (DMA and interrupts released),
    /// resets the device and its pool to the configured MAC and filters, zeroes counters.
    pub fn scrub(&self, id: &str) -> Result<(), NodeError> {
        let vfs = self.entries();
        let e = vfs
            .iter()
            .find(|e| e.id == id && e.served)
            .ok_or_else(|| NodeError::UnknownVf(id.to_owned()))?;
        if let Some(s) = &e.server {
            s.disconnect_client();
            // The server thread runs the disconnect duties; wait for them (bounded).
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while s.stats().connected.load(Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        e.device.scrub();
        tracing::info!(vf = %id, "VF scrubbed");
        Ok(())
    }

    /// Serves one `emu-sriov-cni` request (see [`crate::netdev`]): a claim names its VF; a
    /// release or check finds the VF the (container, ifName) holds, and answers an empty
    /// [`NetdevAnswer`] when it holds none.
    pub fn netdev_request(&self, req: &NetdevRequest) -> Result<NetdevAnswer, NetdevError> {
        let vfs = self.entries();
        if req.op == crate::netdev::proto::NetdevOp::Gc {
            // Every VF of the node: GC names no VF.
            let mut out = NetdevAnswer::default();
            for n in vfs
                .iter()
                .filter(|e| e.served)
                .filter_map(|e| e.netdev.as_ref())
            {
                out.collected.extend(n.handle(req, &|_| false)?.collected);
            }
            return Ok(out);
        }
        let target = match &req.vf {
            Some(vf) if req.op == crate::netdev::proto::NetdevOp::Claim => vfs
                .iter()
                .find(|e| &e.id == vf && e.served && e.netdev.is_some())
                .ok_or_else(|| NetdevError::UnknownVf(vf.clone()))?,
            _ => {
                let held = vfs.iter().find(|e| {
                    e.served
                        && e.netdev
                            .as_ref()
                            .is_some_and(|n| n.held_by(&req.container_id, &req.if_name))
                });
                match held {
                    Some(e) => e,
                    None => return Ok(NetdevAnswer::default()),
                }
            }
        };
        let Some(n) = &target.netdev else {
            return Err(NetdevError::UnknownVf(target.id.clone()));
        };
        let in_use = |m: &[u8; 6]| {
            vfs.iter()
                .any(|o| o.served && o.id != target.id && &o.mac == m)
        };
        n.handle(req, &in_use)
    }

    /// Destroys the TAPs of netdev VFs (claims forgotten): for a pool that leaves for good.
    /// [`Node::shutdown`] alone keeps them, so that a restarted agent finds them again.
    pub fn destroy_netdevs(&self) {
        for e in self.entries().iter() {
            if let Some(n) = &e.netdev {
                n.stop();
            }
        }
    }

    /// Stops servers, the pinger and the dataplane; returns the final status.
    pub fn shutdown(&self) -> AgentStatus {
        self.stop.store(true, Ordering::Release);
        if let Some(p) = self.pinger.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = p.join();
        }
        for e in self.entries().iter_mut() {
            if let Some(s) = e.server.take() {
                s.shutdown();
            }
        }
        if let Some(d) = self
            .dataplane
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            d.stop();
        }
        let _ = &self.control;
        self.status()
    }
}

/// Ethernet header, one VLAN tag and the FCS on top of the MTU: the frame size igbvf asks
/// for (RLPML) at a given MTU.
const FRAME_OVERHEAD: u32 = 14 + 4 + 4;

fn admin_of(vf: &VfConfig) -> AdminSettings {
    AdminSettings {
        mac: vf.mac,
        port_vlan: vf.port_vlan,
        spoofchk: vf.spoofchk,
        trusted: vf.trusted,
        max_frame: vf.mtu.map(|m| m.saturating_add(FRAME_OVERHEAD)),
    }
}

/// Binds `e`'s socket and starts its server thread; a netdev VF gets its TAP instead (and an
/// empty VF directory, which the device plugin mounts like any VF's).
fn bind(e: &mut VfEntry, run_dir: &std::path::Path, vf: &VfConfig) -> Result<(), NodeError> {
    let dir = naming::vf_dir(run_dir, &e.id);
    if let Some(n) = &e.netdev {
        access::close_vf_dir(&dir)?;
        n.start(vf).map_err(|source| NodeError::Netdev {
            id: e.id.clone(),
            source,
        })?;
        e.served = true;
        return Ok(());
    }
    // Closed while the socket is bound, opened to its owner once the socket is theirs
    // (see `access`): nobody else can connect in between. The directory itself is kept
    // across restarts, so that a bind mount of it stays valid.
    access::close_vf_dir(&dir)?;
    let server = Server::bind(&e.socket, e.device.clone(), e.dma.clone(), e.irqs.clone()).map_err(
        |source| NodeError::Serve {
            id: e.id.clone(),
            source,
        },
    )?;
    access::open_vf_socket(&dir, &e.socket, e.owner)?;
    e.server = Some(server.spawn(format!("vfio-{}", e.id)));
    e.served = true;
    Ok(())
}

fn open_uplink(cfg: &UplinkConfig) -> Result<Box<dyn Uplink>, NodeError> {
    let kind = cfg.kind();
    let dev: Box<dyn Uplink> = match cfg {
        UplinkConfig::Tap { name } => {
            Box::new(TapUplink::open(name).map_err(|source| NodeError::Uplink { kind, source })?)
        }
        UplinkConfig::Packet { interface } => Box::new(
            PacketUplink::open(interface).map_err(|source| NodeError::Uplink { kind, source })?,
        ),
    };
    Ok(dev)
}

/// The VF configured for slot `index` of `pf`, if it is served from the start.
fn served_at(pf: &PfConfig, index: u8) -> Option<&VfConfig> {
    pf.vfs.iter().find(|v| v.index == index)
}

/// A slot nobody uses yet: no MAC (it gets one when served), closed pool.
const UNUSED_ADMIN: VfAdmin = VfAdmin {
    mac: [0; 6],
    port_vlan: None,
    spoofchk: true,
    trusted: false,
};

fn build_igb(
    pf_cfg: &PfConfig,
    slots: u8,
    run_dir: &std::path::Path,
    ports: &mut Vec<Arc<VfPort>>,
    pending: &mut Vec<Pending>,
) -> Result<(), NodeError> {
    let admins: Vec<VfAdmin> = (0..slots)
        .map(|i| match served_at(pf_cfg, i) {
            Some(v) => VfAdmin {
                mac: v.mac,
                port_vlan: v.port_vlan,
                spoofchk: v.spoofchk,
                trusted: v.trusted,
            },
            None => UNUSED_ADMIN,
        })
        .collect();
    let first = ports.len();
    let pf = Arc::new(PfShared {
        name: pf_cfg.name.clone(),
        model: Mutex::new(IgbPf::new(&admins)),
        ports: (first..first + admins.len()).collect(),
    });
    for index in 0..slots {
        let i = usize::from(index);
        let served = served_at(pf_cfg, index).cloned();
        let id = naming::vf_id(&pf_cfg.name, index);
        let dma = Arc::new(DmaTable::new());
        let irqs = Arc::new(IrqSet::new(u32::from(r::MSIX_VECTORS)));
        if pf_cfg.device_type == DeviceType::Netdev {
            // A TAP port: its TAP is attached when the VF is served (see `crate::netdev`).
            let port = Arc::new(VfPort::new_tap(id.clone()));
            ports.push(port.clone());
            let tap = (
                port,
                crate::netdev::host_ifname(&pf_cfg.name, index),
                run_dir.to_owned(),
            );
            let pf = pf.clone();
            pending.push(Pending {
                id,
                pf_name: pf_cfg.name.clone(),
                index,
                model: NicModel::Igb,
                served,
                owner: pf_cfg.socket_owner,
                dma,
                irqs,
                make: netdev_maker(tap, i, pf),
            });
            continue;
        }
        // BAR0's interrupt and queue pages live in a memfd the client maps: neither doorbells
        // nor interrupt re-arms trap.
        let pages = Arc::new(
            SharedPages::new(&format!("{id}-bar0"), r::BAR0_SIZE).map_err(NodeError::Dataplane)?,
        );
        let window = |offset: u64, size: u64| {
            SharedWords::window(pages.clone(), (offset / 4) as usize, (size / 4) as usize)
        };
        let mut vf = IgbVf::with_pages(
            window(IRQ_PAGE_OFFSET, IRQ_PAGE_SIZE),
            window(QUEUE_PAGES_OFFSET, QUEUE_PAGES_SIZE),
        );
        vf.set_link(true);
        // The PF is up from the start: RSTI clears, RSTD is presented.
        let _ = vf.pf_reset_done();
        let port = Arc::new(VfPort::new(
            id.clone(),
            vf,
            dma.clone(),
            Box::new(irqs.clone()),
        ));
        if let Some(mbps) = served.as_ref().and_then(|v| v.rate_mbps) {
            port.set_rate_limit(u64::from(mbps) * 1_000_000);
        }
        ports.push(port.clone());
        let pf = pf.clone();
        pending.push(Pending {
            id,
            pf_name: pf_cfg.name.clone(),
            index,
            model: NicModel::Igb,
            served,
            owner: pf_cfg.socket_owner,
            dma,
            irqs,
            make: Box::new(move |control: &DataplaneControl| {
                let device = Arc::new(IgbVfDevice::new(
                    VfCore::new(port, i, control.clone()),
                    IgbvfGlue::new(pf.clone(), Some(pages.fd())),
                ));
                // The pool starts closed; publish it so the switch knows the port exists.
                let filter = pf
                    .model
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pool_filter(i);
                control.update(|t| {
                    let _ = t.set_port(pf.ports[i], filter);
                });
                (device as Arc<dyn NodeDevice>, None)
            }),
        });
    }
    Ok(())
}

/// The device of a netdev-mode igb VF: a [`NetdevVf`] over its TAP port.
fn netdev_maker(
    (port, host_name, run_dir): (Arc<VfPort>, String, PathBuf),
    i: usize,
    pf: Arc<PfShared>,
) -> MakeDevice {
    Box::new(move |control: &DataplaneControl| {
        let nd = Arc::new(NetdevVf::new(
            port,
            i,
            pf.clone(),
            control.clone(),
            host_name,
            &run_dir,
        ));
        // The pool starts closed; publish it so the switch knows the port exists.
        let filter = pf
            .model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pool_filter(i);
        control.update(|t| {
            let _ = t.set_port(pf.ports[i], filter);
        });
        (nd.clone() as Arc<dyn NodeDevice>, Some(nd))
    })
}

fn build_avf(
    pf_cfg: &PfConfig,
    slots: u8,
    ports: &mut Vec<Arc<VfPort>>,
    pending: &mut Vec<Pending>,
) -> Result<(), NodeError> {
    let pairs = pf_cfg.queue_pairs.clamp(1, 16);
    let admins: Vec<AvfVfAdmin> = (0..slots)
        .map(|i| {
            let v = served_at(pf_cfg, i);
            AvfVfAdmin {
                mac: v.map_or([0; 6], |v| v.mac),
                trusted: v.is_some_and(|v| v.trusted),
                spoofchk: v.is_none_or(|v| v.spoofchk),
                port_vlan: v.and_then(|v| v.port_vlan),
                queue_pairs: pairs,
            }
        })
        .collect();
    let first = ports.len();
    let pf = Arc::new(AvfPfShared {
        name: pf_cfg.name.clone(),
        model: Mutex::new(AvfPf::new(&admins)),
        ports: (first..first + admins.len()).collect(),
    });
    for index in 0..slots {
        let i = usize::from(index);
        let served = served_at(pf_cfg, index).cloned();
        let id = naming::vf_id(&pf_cfg.name, index);
        let vectors = pairs + 1;
        let dma = Arc::new(DmaTable::new());
        let irqs = Arc::new(IrqSet::new(u32::from(vectors)));
        let pages = Arc::new(
            SharedPages::new(&format!("{id}-bar0"), avf_regs::BAR0_SIZE)
                .map_err(NodeError::Dataplane)?,
        );
        let words = SharedWords::window(pages.clone(), 0, (avf_regs::BAR0_SIZE / 4) as usize);
        let vf = AvfVf::new(pairs);
        let port = Arc::new(VfPort::new_avf(
            id.clone(),
            vf,
            Some(words.clone()),
            dma.clone(),
            Box::new(irqs.clone()),
        ));
        if let Some(mbps) = served.as_ref().and_then(|v| v.rate_mbps) {
            port.set_rate_limit(u64::from(mbps) * 1_000_000);
        }
        ports.push(port.clone());
        let pf = pf.clone();
        let dma2 = dma.clone();
        pending.push(Pending {
            id,
            pf_name: pf_cfg.name.clone(),
            index,
            model: NicModel::Avf,
            served,
            owner: pf_cfg.socket_owner,
            dma,
            irqs,
            make: Box::new(move |control: &DataplaneControl| {
                let device = Arc::new(AvfVfDevice::new(
                    VfCore::new(port, i, control.clone()),
                    AvfGlue::new(pf.clone(), dma2, (words, pages.fd()), vectors),
                ));
                let filter = {
                    let mut g = device.core.port.lock();
                    let pfm = pf.model.lock().unwrap_or_else(|p| p.into_inner());
                    g.avf().and_then(|st| pfm.pool_filter(i, &st.vf.vsi))
                };
                control.update(|t| {
                    let _ = t.set_port(pf.ports[i], filter);
                });
                (device as Arc<dyn NodeDevice>, None)
            }),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, HostDefaults};

    fn config(run_dir: &std::path::Path, yaml: &str) -> AgentConfig {
        ConfigFile::from_yaml(yaml, "test")
            .unwrap()
            .validate_with(&HostDefaults {
                node_name: Some("n".into()),
                run_dir: run_dir.to_owned(),
            })
            .unwrap()
    }

    fn ids(node: &Node) -> Vec<String> {
        node.status().vfs.into_iter().map(|v| v.id).collect()
    }

    #[test]
    fn slots_serve_unserve_and_configure_one_vf_at_a_time() {
        let run = std::env::temp_dir().join(format!("emu-node-slots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        for model in ["igb", "avf"] {
            let c = config(
                &run,
                &format!("pfs: [{{model: {model}, vfs: 2, name: p0}}]"),
            );
            let node = Node::start_layout(
                &c,
                &Layout {
                    capacity: vec![4],
                    shared_run_dir: false,
                },
            )
            .unwrap();
            assert_eq!(node.slots("p0"), 4);
            assert_eq!(ids(&node), ["p0-vf0", "p0-vf1"]);
            assert!(node.healthy("p0-vf1") && !node.healthy("p0-vf3"));
            let sock = |i: u8| naming::vf_socket_path(&run, &naming::vf_id("p0", i));
            assert!(!sock(3).exists());

            let mut vf3 = c.pfs[0].vfs[0].clone();
            vf3.index = 3;
            vf3.mac = [2, 0, 0, 0, 0, 3];
            node.serve("p0", &vf3).unwrap();
            assert!(sock(3).exists());
            assert_eq!(ids(&node), ["p0-vf0", "p0-vf1", "p0-vf3"]);
            assert_eq!(node.mac("p0-vf3"), Some([2, 0, 0, 0, 0, 3]));
            assert!(matches!(
                node.serve("p0", &vf3),
                Err(NodeError::AlreadyServed(_))
            ));
            vf3.index = 4;
            assert!(matches!(node.serve("p0", &vf3), Err(NodeError::NoSlot(_))));

            let mut s = c.pfs[0].vfs[1].clone();
            s.port_vlan = Some(7);
            s.spoofchk = false;
            s.rate_mbps = Some(10);
            node.configure("p0-vf1", &s).unwrap();
            assert!(node.configure("p0-vf2", &s).is_err());

            node.unserve("p0-vf0").unwrap();
            assert!(!sock(0).exists());
            assert!(!naming::vf_dir(&run, "p0-vf0").exists());
            assert_eq!(ids(&node), ["p0-vf1", "p0-vf3"]);
            assert!(node.scrub("p0-vf0").is_err());
            assert!(node.unserve("p0-vf0").is_err());
            // Served again in the same slot.
            node.serve("p0", &c.pfs[0].vfs[0]).unwrap();
            assert!(sock(0).exists());
            node.shutdown();
            assert!(!sock(1).exists() && !sock(3).exists());
        }
        let _ = std::fs::remove_dir_all(&run);
    }

    #[test]
    fn a_node_without_pfs_or_vfs_runs_and_stops() {
        let run = std::env::temp_dir().join(format!("emu-node-empty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        let mut c = config(&run, "pfs: [{model: igb, vfs: 1, name: p0}]");
        c.pfs[0].vfs.clear();
        let layout = Layout {
            capacity: vec![7],
            shared_run_dir: false,
        };
        let node = Node::start_layout(&c, &layout).unwrap();
        assert!(ids(&node).is_empty());
        assert_eq!(node.slots("p0"), 7);
        node.shutdown();
        c.pfs.clear();
        let node = Node::start_layout(&c, &Layout::default()).unwrap();
        assert!(ids(&node).is_empty());
        node.shutdown();
        let _ = std::fs::remove_dir_all(&run);
    }
}
