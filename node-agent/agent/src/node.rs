//! A running node: the PF models and their VFs built from the validated config, the
//! dataplane, one vfio-user server per VF. [`Node::start`] brings it up; [`Node::status`]
//! feeds `list` and the device plugin; [`Node::scrub`] readies a released VF for its next
//! user; [`Node::shutdown`] tears everything down (sockets removed, threads joined).

use crate::config::AgentConfig;
use crate::device::{DmaAdapter, IgbVfDevice, IrqAdapter, PfShared};
use crate::naming;
use crate::status::{AgentStatus, VfCounters, VfState, VfStatus};
use emu_dataplane::engine::DataplaneControl;
use emu_dataplane::{Dataplane, DataplaneConfig, VfPort};
use emu_nic_defs::{igbvf as r, pci};
use emu_nic_model::igb_pf::{IgbPf, VfAdmin};
use emu_nic_model::igbvf::vf::IgbVf;
use emu_nic_model::vmdq::SwitchTable;
use emu_vfio_server::{DmaTable, IrqSet, Server, ServerError, ServerHandle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create run dir {path} (choose another with --run-dir)")]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the dataplane thread")]
    Dataplane(#[source] std::io::Error),
    #[error("cannot serve VF {id}")]
    Serve {
        id: String,
        #[source]
        source: ServerError,
    },
    #[error("no VF with id {0}")]
    UnknownVf(String),
}

/// Everything known about one VF at run time.
struct VfEntry {
    id: String,
    pf: String,
    index: u8,
    mac: [u8; 6],
    socket: PathBuf,
    device: Arc<IgbVfDevice>,
    server: Option<ServerHandle>,
}

/// How often the PF pings every ready VF with PF_CONTROL_MSG|CTS (devices.md §2.5): the VF's
/// 2 s watchdog re-checks link from the mailbox word it reads.
pub const CTS_PING_PERIOD: Duration = Duration::from_secs(2);

/// A running node.
pub struct Node {
    vfs: Mutex<Vec<VfEntry>>,
    dataplane: Mutex<Option<Dataplane>>,
    control: DataplaneControl,
    stop: Arc<AtomicBool>,
    pinger: Mutex<Option<std::thread::JoinHandle<()>>>,
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
        std::fs::create_dir_all(&config.run_dir).map_err(|source| NodeError::RunDir {
            path: config.run_dir.clone(),
            source,
        })?;
        // Switch port n = n-th VF over all PFs, in config order.
        let mut ports = Vec::new();
        let mut pending = Vec::new();
        for pf_cfg in &config.pfs {
            let admins: Vec<VfAdmin> = pf_cfg
                .vfs
                .iter()
                .map(|v| VfAdmin {
                    mac: v.mac,
                    port_vlan: v.port_vlan,
                    spoofchk: v.spoofchk,
                    trusted: v.trusted,
                })
                .collect();
            let first = ports.len();
            let pf = Arc::new(PfShared {
                name: pf_cfg.name.clone(),
                model: Mutex::new(IgbPf::new(&admins)),
                ports: (first..first + admins.len()).collect(),
            });
            for (i, v) in pf_cfg.vfs.iter().enumerate() {
                let id = naming::vf_id(&pf_cfg.name, v.index);
                let dma = Arc::new(DmaTable::new());
                let irqs = Arc::new(IrqSet::new(u32::from(r::MSIX_VECTORS)));
                let mut vf = IgbVf::new();
                vf.set_link(true);
                // The PF is up from the start: RSTI clears, RSTD is presented.
                let _ = vf.pf_reset_done();
                let port = Arc::new(VfPort::new(
                    id.clone(),
                    vf,
                    Box::new(DmaAdapter(dma.clone())),
                    Box::new(IrqAdapter(irqs.clone())),
                ));
                ports.push(port.clone());
                pending.push((pf.clone(), i, v.index, v.mac, id, port, dma, irqs));
            }
        }

        let mut table = SwitchTable::new();
        // DTXSWC.LOOPBACK_EN: VF-to-VF traffic is switched locally.
        table.set_loopback(true);
        let dataplane = Dataplane::start(DataplaneConfig::default(), ports, table)
            .map_err(NodeError::Dataplane)?;
        let control = dataplane.control();

        let mut vfs = Vec::new();
        for (pf, i, index, mac, id, port, dma, irqs) in pending {
            let device = Arc::new(IgbVfDevice {
                port,
                vf_index: i,
                pf: pf.clone(),
                dataplane: control.clone(),
                attached: AtomicBool::new(false),
                mailbox_nacks: AtomicU64::new(0),
            });
            // The pool starts closed; publish it so the switch knows the port exists.
            let filter = pf
                .model
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pool_filter(i);
            control.update(|t| {
                let _ = t.set_port(pf.ports[i], filter);
            });
            let socket = naming::vf_socket_path(&config.run_dir, &id);
            let dir = naming::vf_dir(&config.run_dir, &id);
            std::fs::create_dir_all(&dir).map_err(|source| NodeError::RunDir {
                path: dir.clone(),
                source,
            })?;
            let server = Server::bind(&socket, device.clone(), dma, irqs).map_err(|source| {
                NodeError::Serve {
                    id: id.clone(),
                    source,
                }
            })?;
            let handle = server.spawn(format!("vfio-{id}"));
            vfs.push(VfEntry {
                id,
                pf: pf.name.clone(),
                index,
                mac,
                socket,
                device,
                server: Some(handle),
            });
        }

        let node = Arc::new(Node {
            vfs: Mutex::new(vfs),
            dataplane: Mutex::new(Some(dataplane)),
            control,
            stop: Arc::new(AtomicBool::new(false)),
            pinger: Mutex::new(None),
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

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<VfEntry>> {
        self.vfs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// PF_CONTROL_MSG|CTS to every attached VF that completed its reset handshake.
    fn ping_all(&self) {
        for e in self.entries().iter() {
            if e.device.attached.load(Ordering::Acquire) {
                e.device.cts_ping();
            }
        }
    }

    /// A snapshot of every VF for `list` and the device plugin.
    pub fn status(&self) -> AgentStatus {
        let vfs = self.entries();
        AgentStatus {
            vfs: vfs
                .iter()
                .map(|e| {
                    let c = e.device.port.counters.snapshot();
                    let traps = e
                        .server
                        .as_ref()
                        .map(|s| {
                            let st = s.stats().snapshot();
                            st.region_reads + st.region_writes
                        })
                        .unwrap_or(0);
                    VfStatus {
                        id: e.id.clone(),
                        pf: e.pf.clone(),
                        index: e.index,
                        model: "igbvf".into(),
                        vendor_id: format!("{:#06x}", pci::VENDOR_INTEL),
                        device_id: format!("{:#06x}", pci::DEVICE_IGBVF),
                        mac: format_mac(&e.mac),
                        socket: e.socket.clone(),
                        state: if e.device.attached.load(Ordering::Acquire) {
                            VfState::Attached
                        } else {
                            VfState::Free
                        },
                        counters: VfCounters {
                            tx_packets: c.tx_packets,
                            tx_bytes: c.tx_bytes,
                            rx_packets: c.rx_packets,
                            rx_bytes: c.rx_bytes,
                            tx_drops: c.tx_drops,
                            rx_drops: c.rx_drops,
                            traps,
                            interrupts: c.interrupts,
                        },
                    }
                })
                .collect(),
        }
    }

    /// Whether VF `id`'s server thread and the dataplane are running.
    pub fn healthy(&self, id: &str) -> bool {
        let dp_up = self
            .dataplane
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|d| d.is_running());
        dp_up
            && self
                .entries()
                .iter()
                .find(|e| e.id == id)
                .and_then(|e| e.server.as_ref())
                .is_some_and(|s| s.is_running())
    }

    /// Readies VF `id` for its next user: drops its client (DMA and interrupts released),
    /// resets the device and its pool to the configured MAC and filters, zeroes counters.
    pub fn scrub(&self, id: &str) -> Result<(), NodeError> {
        let vfs = self.entries();
        let e = vfs
            .iter()
            .find(|e| e.id == id)
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
