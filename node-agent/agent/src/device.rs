//! Glue between the vfio-user server and the device models: one [`IgbVfDevice`] per VF turns
//! trapped config/BAR accesses into model calls, hands mailbox messages to the PF model,
//! republishes the VF's switch filter when the PF changed it, fires MSI-X vectors and kicks the
//! dataplane on doorbells.

use crate::regions::{check, check_registers, no_region, vf_spec, CONFIG_SIZE};
use emu_dataplane::engine::DataplaneControl;
use emu_dataplane::{IgbState, IrqSink, VfPort};
use emu_nic_defs::igbvf as r;
use emu_nic_model::igb_pf::IgbPf;
use emu_nic_model::igbvf::vf::{
    Effects, IRQ_PAGE_OFFSET, IRQ_PAGE_SIZE, QUEUE_PAGES_OFFSET, QUEUE_PAGES_SIZE,
};
use emu_vfio_server::{region, AccessError, DeviceSpec, IrqSet, LogBudget, VfioDevice};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the node needs from any VF device besides the vfio-user callbacks.
pub trait NodeDevice: VfioDevice {
    fn port(&self) -> &Arc<VfPort>;
    /// A client is connected.
    fn attached(&self) -> bool;
    /// Back to the just-created state for the next user (the client is already gone).
    fn scrub(&self);
    /// Periodic PF duties (every [`crate::node::CTS_PING_PERIOD`]).
    fn tick(&self);
    /// Changes the VF's PF-side settings (`ip link set PF vf N …`) and republishes its switch
    /// filter: port VLAN, spoof check, trust and the frame cap apply to the next frame, with or without a
    /// client; a new MAC reaches the guest at its next VF reset.
    fn set_admin(&self, admin: AdminSettings);
}

/// The PF-side settings of one VF that the agent may change at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminSettings {
    pub mac: [u8; 6],
    pub port_vlan: Option<u16>,
    pub spoofchk: bool,
    pub trusted: bool,
    /// Largest frame (FCS included) the VF receives, whatever its driver asks for; `None`:
    /// what its driver asks for.
    pub max_frame: Option<u32>,
}

/// A PF model shared by its VFs' server threads.
pub struct PfShared {
    pub name: String,
    pub model: Mutex<IgbPf>,
    /// Switch port of each VF, by VF index.
    pub ports: Vec<usize>,
}

impl PfShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, IgbPf> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// MSI-X eventfds of a VF as the dataplane sees them.
pub struct IrqAdapter(pub Arc<IrqSet>);

impl IrqSink for IrqAdapter {
    fn fire(&self, vector: u32) -> bool {
        self.0.fire(vector)
    }
}

/// One igbvf VF served over vfio-user.
pub struct IgbVfDevice {
    pub port: Arc<VfPort>,
    pub vf_index: usize,
    pub pf: Arc<PfShared>,
    pub dataplane: DataplaneControl,
    pub attached: AtomicBool,
    /// Mailbox requests the PF refused (NACK), for the logs and `list`.
    pub mailbox_nacks: AtomicU64,
    /// Memory behind BAR0 whose interrupt page (0x1000) and queue pages (0x2000–0x3FFF) are
    /// offered to the client as sparse-mmap areas, so that neither doorbells nor interrupt
    /// re-arms trap; `None` traps the whole BAR.
    pub bar0_pages: Option<Arc<OwnedFd>>,
    /// Log lines the guest or client can trigger at will (resets, attach/detach).
    pub log: LogBudget,
}

impl IgbVfDevice {
    /// Returns the VF to its just-created state for its next user: registers at power-on
    /// with the PF up (RSTD), pool filters closed (the VF gets its MAC back at its next
    /// VF_RESET), counters zeroed. The caller disconnects the client first.
    pub fn scrub(&self) {
        self.power_on();
        self.port.counters.reset();
        self.mailbox_nacks.store(0, Ordering::Relaxed);
    }

    /// Back to the power-on state (DEVICE_RESET, scrub): registers, TX state and the PF's
    /// view of the VF (RSTD presented, pool closed until the next VF_RESET).
    fn power_on(&self) {
        let mut g = self.port.lock();
        if let Some(st) = g.igb() {
            st.vf.device_reset();
            st.txq.reset();
        }
        let mut pf = self.pf.lock();
        pf.vf_reset(self.vf_index);
        self.republish(&pf);
    }

    /// Posts PF_CONTROL_MSG|CTS if the VF completed its reset handshake (the periodic ping
    /// of devices.md §2.5); it waits in the model while the VF holds the mailbox.
    pub fn cts_ping(&self) {
        let mut g = self.port.lock();
        let cts = self.pf.lock().pool(self.vf_index).is_some_and(|p| p.cts);
        if let (true, Some(st)) = (cts, g.igb()) {
            let fx = st.vf.pf_post(r::MSG_PF_CONTROL | r::MSG_CTS);
            self.port.fire_now(fx.fire);
        }
    }

    fn switch_port(&self) -> usize {
        self.pf.ports[self.vf_index]
    }

    /// Publishes the PF's current filter for this VF's pool.
    fn republish(&self, pf: &IgbPf) {
        let port = self.switch_port();
        let filter = pf.pool_filter(self.vf_index);
        self.dataplane.update(|t| {
            if let Err(e) = t.set_port(port, filter) {
                tracing::error!(vf = %self.port.id, error = %e, "cannot publish pool filter");
            }
        });
    }

    /// Carries out what a BAR0 write asked for. Called with the VF state locked (`vf`).
    fn apply(&self, vf: &mut IgbState, fx: Effects) {
        let mut fire = fx.fire;
        if fx.vf_reset {
            vf.txq.reset();
            let mut pf = self.pf.lock();
            pf.vf_reset(self.vf_index);
            self.republish(&pf);
            tracing::debug!(vf = %self.port.id, "VF reset (CTRL.RST)");
        }
        if let Some(msg) = fx.mailbox {
            let mut pf = self.pf.lock();
            let (reply, err) = pf.handle(self.vf_index, &msg);
            if let Some(e) = err {
                self.mailbox_nacks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(vf = %self.port.id, msg = format_args!("{:#x}", msg[0]), error = %e, "mailbox request refused");
            }
            fire |= vf.vf.pf_reply(&reply.words[..reply.len]).fire;
            if reply.filters_changed {
                self.republish(&pf);
            }
            if reply.post_cts {
                fire |= vf.vf.pf_post(r::MSG_PF_CONTROL | r::MSG_CTS).fire;
                if let Some(suppressed) = self.log.take() {
                    tracing::info!(vf = %self.port.id, suppressed, "VF reset handshake done, clear to send");
                }
            }
        }
        self.port.fire_now(fire);
        if fx.queues_changed {
            self.dataplane.kick();
        }
    }
}

impl NodeDevice for IgbVfDevice {
    fn port(&self) -> &Arc<VfPort> {
        &self.port
    }
    fn attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }
    fn scrub(&self) {
        IgbVfDevice::scrub(self);
    }
    fn tick(&self) {
        if self.attached() {
            self.cts_ping();
        }
    }
    fn set_admin(&self, a: AdminSettings) {
        let mut pf = self.pf.lock();
        pf.set_admin(
            self.vf_index,
            emu_nic_model::igb_pf::VfAdmin {
                mac: a.mac,
                port_vlan: a.port_vlan,
                spoofchk: a.spoofchk,
                trusted: a.trusted,
            },
        );
        pf.set_max_frame_cap(self.vf_index, a.max_frame);
        self.republish(&pf);
    }
}

impl VfioDevice for IgbVfDevice {
    fn spec(&self) -> DeviceSpec {
        vf_spec(
            r::BAR0_SIZE,
            &[
                (IRQ_PAGE_OFFSET, IRQ_PAGE_SIZE),
                (QUEUE_PAGES_OFFSET, QUEUE_PAGES_SIZE),
            ],
            self.bar0_pages.clone(),
            r::BAR3_SIZE,
            u32::from(r::MSIX_VECTORS),
        )
    }

    fn region_read(&self, region: u32, offset: u64, data: &mut [u8]) -> Result<(), AccessError> {
        match region {
            region::CONFIG => {
                check(region, offset, data.len(), CONFIG_SIZE)?;
                if let Some(st) = self.port.lock().igb() {
                    st.vf.config_read(offset, data);
                }
                Ok(())
            }
            region::BAR0 => {
                check_registers(region, offset, data.len(), r::BAR0_SIZE)?;
                let counters = self.port.hw_counters();
                let mut g = self.port.lock();
                let Some(st) = g.igb() else {
                    data.fill(0xFF);
                    return Ok(());
                };
                for (i, chunk) in data.chunks_exact_mut(4).enumerate() {
                    let v = st.vf.bar0_read(offset + 4 * i as u64, &counters);
                    chunk.copy_from_slice(&v.to_le_bytes());
                }
                Ok(())
            }
            region::BAR3 => {
                // MSI-X table is emulated by QEMU; PBA reads are forwarded: report nothing
                // pending (devices.md §1.4).
                check(region, offset, data.len(), r::BAR3_SIZE)?;
                data.fill(0);
                Ok(())
            }
            _ => Err(no_region(region, offset, data.len())),
        }
    }

    fn region_write(&self, region: u32, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        match region {
            region::CONFIG => {
                check(region, offset, data.len(), CONFIG_SIZE)?;
                if let Some(st) = self.port.lock().igb() {
                    st.vf.config_write(offset, data);
                }
                // Bus mastering may just have been enabled.
                self.dataplane.kick();
                Ok(())
            }
            region::BAR0 => {
                check_registers(region, offset, data.len(), r::BAR0_SIZE)?;
                let mut g = self.port.lock();
                let Some(st) = g.igb() else {
                    return Ok(());
                };
                for (i, chunk) in data.chunks_exact(4).enumerate() {
                    let off = offset + 4 * i as u64;
                    let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    let fx = st.vf.bar0_write(off, v);
                    self.apply(st, fx);
                }
                Ok(())
            }
            region::BAR3 => check(region, offset, data.len(), r::BAR3_SIZE),
            _ => Err(no_region(region, offset, data.len())),
        }
    }

    fn reset(&self) {
        self.power_on();
        if let Some(suppressed) = self.log.take() {
            tracing::info!(vf = %self.port.id, suppressed, "device reset (DEVICE_RESET)");
        }
    }

    fn client_connected(&self) {
        self.attached.store(true, Ordering::Release);
        self.port.set_active(true);
        if let Some(suppressed) = self.log.take() {
            tracing::info!(vf = %self.port.id, suppressed, "client attached");
        }
    }

    fn client_disconnected(&self) {
        self.port.set_active(false);
        self.attached.store(false, Ordering::Release);
        if let Some(suppressed) = self.log.take() {
            tracing::info!(vf = %self.port.id, suppressed, "client detached; device state kept");
        }
    }
}
