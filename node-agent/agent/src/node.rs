//! Standalone node wiring: builds the PF models and their VFs from the validated config,
//! starts the dataplane, one vfio-user server per VF and the control socket, then waits for
//! SIGINT/SIGTERM and tears everything down (sockets removed, threads joined).

use anyhow::Context;
use emu_dataplane::{Dataplane, DataplaneConfig, VfPort};
use emu_nic_defs::{igbvf as r, pci};
use emu_nic_model::igb_pf::{IgbPf, VfAdmin};
use emu_nic_model::igbvf::vf::IgbVf;
use emu_nic_model::vmdq::SwitchTable;
use emu_sriov_agent::config::AgentConfig;
use emu_sriov_agent::device::{DmaAdapter, IgbVfDevice, IrqAdapter, PfShared};
use emu_sriov_agent::status::{AgentStatus, VfCounters, VfState, VfStatus};
use emu_sriov_agent::{banner, control, naming, sys};
use emu_vfio_server::{DmaTable, IrqSet, Server, ServerHandle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Everything the status snapshot needs about one VF.
struct VfEntry {
    id: String,
    pf: String,
    index: u8,
    mac: [u8; 6],
    socket: PathBuf,
    device: Arc<IgbVfDevice>,
    server: Option<ServerHandle>,
}

fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn snapshot(vfs: &[VfEntry]) -> AgentStatus {
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

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(config: AgentConfig) -> anyhow::Result<()> {
    sys::block_termination_signals().context("cannot set up signal handling")?;
    std::fs::create_dir_all(&config.run_dir).with_context(|| {
        format!(
            "cannot create run dir {} (choose another with --run-dir)",
            config.run_dir.display()
        )
    })?;

    // Build models and ports; switch port n = n-th VF over all PFs, in config order.
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
        .context("cannot start the dataplane thread")?;
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
        control.update(|t| {
            let _ = t.set_port(
                pf.ports[i],
                pf.model.lock().map(|m| m.pool_filter(i)).ok().flatten(),
            );
        });
        let socket = naming::vf_socket_path(&config.run_dir, &id);
        let server = Server::bind(&socket, device.clone(), dma, irqs)
            .with_context(|| format!("cannot serve VF {id} on {}", socket.display()))?;
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

    let vfs = Arc::new(Mutex::new(vfs));
    let status_src = vfs.clone();
    let status = Arc::new(move || {
        let v = status_src.lock().unwrap_or_else(|p| p.into_inner());
        snapshot(&v)
    });
    let control_path = config.run_dir.join("control.sock");
    let control_server = control::ControlServer::start(&control_path, status.clone())
        .with_context(|| format!("cannot open the control socket {}", control_path.display()))?;

    banner::print_ready(&config, &status().vfs);
    tracing::info!(vfs = status().vfs.len(), run_dir = %config.run_dir.display(), "agent ready");

    let sig = sys::wait_termination_signal();
    tracing::info!(signal = sig, "shutting down");

    drop(control_server);
    let mut v = vfs.lock().unwrap_or_else(|p| p.into_inner());
    for e in v.iter_mut() {
        if let Some(s) = e.server.take() {
            s.shutdown();
        }
    }
    dataplane.stop();
    let summary = snapshot(&v);
    for s in &summary.vfs {
        tracing::info!(vf = %s.id, tx_packets = s.counters.tx_packets, rx_packets = s.counters.rx_packets,
            tx_drops = s.counters.tx_drops, rx_drops = s.counters.rx_drops, "final counters");
    }
    Ok(())
}
