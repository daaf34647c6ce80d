//! The igbvf model's part of the glue: BAR0 registers trapped into the register model,
//! mailbox messages handed to the igb PF model, the PF's periodic CTS ping, and the region
//! layout (the interrupt page and the queue pages offered as sparse-mmap areas).

use super::regions::vf_spec;
use super::{words, AdminSettings, ModelGlue, VfCore};
use emu_nic_defs::igbvf as r;
use emu_nic_model::igb_pf::IgbPf;
use emu_nic_model::igbvf::backend::IgbvfBackend;
use emu_nic_model::igbvf::vf::{
    Effects, IRQ_PAGE_OFFSET, IRQ_PAGE_SIZE, QUEUE_PAGES_OFFSET, QUEUE_PAGES_SIZE,
};
use emu_nic_model::ring::VfBackend;
use emu_vfio_server::DeviceSpec;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A PF model shared by its VFs' server threads.
pub struct PfShared {
    pub name: String,
    pub model: Mutex<IgbPf>,
    /// Switch port of each VF, by VF index.
    pub ports: Vec<usize>,
}

impl PfShared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, IgbPf> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What an igbvf VF adds to the common glue.
pub struct IgbvfGlue {
    pub pf: Arc<PfShared>,
    /// Mailbox requests the PF refused (NACK), for the logs and `list`.
    pub mailbox_nacks: AtomicU64,
    /// Memory behind BAR0 whose interrupt page (0x1000) and queue pages (0x2000–0x3FFF) are
    /// offered to the client as sparse-mmap areas, so that neither doorbells nor interrupt
    /// re-arms trap; `None` traps the whole BAR.
    pub bar0_pages: Option<Arc<OwnedFd>>,
}

impl IgbvfGlue {
    pub fn new(pf: Arc<PfShared>, bar0_pages: Option<Arc<OwnedFd>>) -> Self {
        IgbvfGlue {
            pf,
            mailbox_nacks: AtomicU64::new(0),
            bar0_pages,
        }
    }

    /// Posts PF_CONTROL_MSG|CTS if the VF completed its reset handshake (the periodic ping
    /// of devices.md §2.5); it waits in the model while the VF holds the mailbox.
    pub fn cts_ping(&self, core: &VfCore) {
        let mut g = core.port.lock();
        let cts = self.pf.lock().pool(core.vf_index).is_some_and(|p| p.cts);
        if let (true, Some(st)) = (cts, g.igb()) {
            let fx = st.vf.pf_post(r::MSG_PF_CONTROL | r::MSG_CTS);
            core.port.fire_now(fx.fire);
        }
    }

    /// Publishes the PF's current filter for this VF's pool.
    fn republish(&self, core: &VfCore, pf: &IgbPf) {
        core.publish_filter(self.pf.ports[core.vf_index], pf.pool_filter(core.vf_index));
    }

    /// Carries out what a BAR0 write asked for. Called with the VF state locked (`st`).
    fn apply(&self, core: &VfCore, st: &mut IgbvfBackend, fx: Effects) {
        let mut fire = fx.fire;
        if fx.vf_reset {
            st.reset_tx();
            let mut pf = self.pf.lock();
            pf.vf_reset(core.vf_index);
            self.republish(core, &pf);
            tracing::debug!(vf = %core.port.id, "VF reset (CTRL.RST)");
        }
        if let Some(msg) = fx.mailbox {
            let mut pf = self.pf.lock();
            let (reply, err) = pf.handle(core.vf_index, &msg);
            if let Some(e) = err {
                self.mailbox_nacks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(vf = %core.port.id, msg = format_args!("{:#x}", msg[0]), error = %e, "mailbox request refused");
            }
            fire |= st.vf.pf_reply(&reply.words[..reply.len]).fire;
            if reply.filters_changed {
                self.republish(core, &pf);
            }
            if reply.post_cts {
                fire |= st.vf.pf_post(r::MSG_PF_CONTROL | r::MSG_CTS).fire;
                if let Some(suppressed) = core.log.take() {
                    tracing::info!(vf = %core.port.id, suppressed, "VF reset handshake done, clear to send");
                }
            }
        }
        core.port.fire_now(fire);
        if fx.queues_changed {
            core.dataplane.kick();
        }
    }
}

impl ModelGlue for IgbvfGlue {
    const BAR0_SIZE: u64 = r::BAR0_SIZE;
    const BAR3_SIZE: u64 = r::BAR3_SIZE;

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

    fn bar0_read(&self, core: &VfCore, offset: u64, data: &mut [u8]) {
        let counters = core.port.hw_counters();
        let mut g = core.port.lock();
        let Some(st) = g.igb() else {
            data.fill(0xFF);
            return;
        };
        for (i, chunk) in data.chunks_exact_mut(4).enumerate() {
            let v = st.vf.bar0_read(offset + 4 * i as u64, &counters);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn bar0_write(&self, core: &VfCore, offset: u64, data: &[u8]) {
        let mut g = core.port.lock();
        let Some(st) = g.igb() else {
            return;
        };
        for (off, v) in words(offset, data) {
            let fx = st.vf.bar0_write(off, v);
            self.apply(core, st, fx);
        }
    }

    /// Registers, TX state and the PF's view of the VF (RSTD presented, pool closed until
    /// the next VF_RESET).
    fn power_on(&self, core: &VfCore) {
        let mut g = core.port.lock();
        if let Some(st) = g.igb() {
            st.vf.device_reset();
            st.reset_tx();
        }
        let mut pf = self.pf.lock();
        pf.vf_reset(core.vf_index);
        self.republish(core, &pf);
    }

    fn clear_counters(&self) {
        self.mailbox_nacks.store(0, Ordering::Relaxed);
    }

    fn tick(&self, core: &VfCore) {
        self.cts_ping(core);
    }

    fn set_admin(&self, core: &VfCore, a: AdminSettings) {
        let mut pf = self.pf.lock();
        pf.set_admin(
            core.vf_index,
            emu_nic_model::igb_pf::VfAdmin {
                mac: a.mac,
                port_vlan: a.port_vlan,
                spoofchk: a.spoofchk,
                trusted: a.trusted,
            },
        );
        pf.set_max_frame_cap(core.vf_index, a.max_frame);
        self.republish(core, &pf);
    }
}
