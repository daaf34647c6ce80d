//! The AVF model's part of the glue: BAR0 registers trapped into the register model, the
//! AdminQ run on ATQT doorbells (virtchnl answered by the AVF PF model), the RESET_VF
//! sequence, LINK_CHANGE after ENABLE_QUEUES, and the region layout: the tail pages
//! ([`r::MAPPED_PAGES`]) are a sparse-mmap memfd the dataplane polls.

use super::regions::vf_spec;
use super::{words, AdminSettings, ModelGlue, VfCore};
use emu_guest_mem::DmaTable;
use emu_nic_defs::avf as r;
use emu_nic_defs::avf_virtchnl::VIRTCHNL_OP_EVENT;
use emu_nic_model::avf::adminq::{post_arq, process_atq, AqScratch};
use emu_nic_model::avf::backend::AvfBackend;
use emu_nic_model::avf::pf::{AvfPf, VfStats};
use emu_nic_model::ring::VfBackend;
use emu_nic_model::shared::SharedWords;
use emu_vfio_server::DeviceSpec;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

/// Link speed the PF reports in LINK_CHANGE (Mbit/s).
pub const LINK_SPEED_MBPS: u32 = 25_000;

/// An AVF PF model shared by its VFs' server threads.
pub struct AvfPfShared {
    pub name: String,
    pub model: Mutex<AvfPf>,
    /// Switch port of each VF, by VF index.
    pub ports: Vec<usize>,
}

impl AvfPfShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, AvfPf> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What an AVF VF adds to the common glue.
pub struct AvfGlue {
    pub pf: Arc<AvfPfShared>,
    /// The client's DMA regions (the AdminQ rings and buffers live there).
    pub dma: Arc<DmaTable>,
    /// BAR0 as shared words and the memfd behind it.
    pub bar0: SharedWords,
    pub bar0_fd: Arc<OwnedFd>,
    pub vectors: u16,
    scratch: Mutex<AqScratch>,
}

fn mapped(offset: u64) -> bool {
    r::MAPPED_PAGES
        .iter()
        .any(|&(o, len)| (o..o + len).contains(&offset))
}

impl AvfGlue {
    pub fn new(
        pf: Arc<AvfPfShared>,
        dma: Arc<DmaTable>,
        (bar0, bar0_fd): (SharedWords, Arc<OwnedFd>),
        vectors: u16,
    ) -> Self {
        AvfGlue {
            pf,
            dma,
            bar0,
            bar0_fd,
            vectors,
            scratch: Mutex::new(AqScratch::new()),
        }
    }

    fn republish(&self, core: &VfCore, pf: &AvfPf, st: &AvfBackend) {
        core.publish_filter(
            self.pf.ports[core.vf_index],
            pf.pool_filter(core.vf_index, &st.vf.vsi),
        );
    }

    fn stats(core: &VfCore) -> VfStats {
        let c = core.port.counters.snapshot();
        VfStats {
            rx_bytes: c.rx_bytes,
            rx_unicast: c.rx_packets.saturating_sub(c.rx_multicast + c.rx_broadcast),
            rx_multicast: c.rx_multicast,
            rx_broadcast: c.rx_broadcast,
            rx_discards: c.rx_drops,
            tx_bytes: c.tx_bytes,
            tx_unicast: c.tx_packets,
            tx_discards: c.tx_drops,
            tx_errors: c.tx_bad_descriptors,
            ..VfStats::default()
        }
    }

    /// The RESET_VF / FLR sequence on the device side (the PF side is already reset).
    fn reset_vf(st: &mut AvfBackend) {
        st.vf.reset_begin();
        st.reset_tx();
        st.clear_mapped();
        st.vf.reset_complete();
    }

    /// Processes the ATQ: every request answered by the PF model, replies on the ARQ.
    fn run_adminq(&self, core: &VfCore, st: &mut AvfBackend) -> u32 {
        let stats = Self::stats(core);
        let mem = self.dma.lock();
        let mut pf = self.pf.lock();
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let (mut reset, mut link, mut filters, mut queues) = (false, false, false, false);
        let i = core.vf_index;
        let vsi = &mut st.vf.vsi;
        let outcome = process_atq(&mut st.vf.aq, &mem, &mut scratch, &mut |op, msg, reply| {
            let h = pf.handle(i, vsi, op, msg, &stats, reply);
            reset |= h.reset_vf;
            link |= h.link_event_after;
            filters |= h.filters_changed;
            queues |= h.queues_changed;
            if h.status != 0 {
                tracing::debug!(vf = i, op, status = h.status, "virtchnl request refused");
            }
            h.reply.then_some(h.status)
        });
        let mut fire = 0;
        let mut posted = outcome.posted;
        if reset {
            if let Some(suppressed) = core.log.take() {
                tracing::info!(vf = %core.port.id, suppressed, "RESET_VF");
            }
            Self::reset_vf(st);
            filters = true;
        } else if link {
            // LINK_CHANGE right after the ENABLE_QUEUES reply (iavf ignores it earlier).
            if let Some(ev) = pf.link_event(i, true, LINK_SPEED_MBPS) {
                if post_arq(&mut st.vf.aq, &mem, VIRTCHNL_OP_EVENT, 0, &ev).is_ok() {
                    posted += 1;
                    if let Some(suppressed) = core.log.take() {
                        tracing::info!(vf = %core.port.id, suppressed, "queues enabled, link up");
                    }
                }
            }
        }
        if posted > 0 {
            fire |= st.vf.raise_adminq().fire;
        }
        if filters {
            self.republish(core, &pf, st);
        }
        if queues || filters {
            core.dataplane.kick();
        }
        fire
    }
}

impl ModelGlue for AvfGlue {
    const BAR0_SIZE: u64 = r::BAR0_SIZE;
    const BAR3_SIZE: u64 = r::BAR3_SIZE;

    fn spec(&self) -> DeviceSpec {
        vf_spec(
            r::BAR0_SIZE,
            &r::MAPPED_PAGES,
            Some(self.bar0_fd.clone()),
            r::BAR3_SIZE,
            u32::from(self.vectors),
        )
    }

    fn bar0_read(&self, core: &VfCore, offset: u64, data: &mut [u8]) {
        let mut g = core.port.lock();
        for (k, chunk) in data.chunks_exact_mut(4).enumerate() {
            let off = offset + 4 * k as u64;
            let v = if mapped(off) {
                self.bar0.load((off / 4) as usize)
            } else {
                g.avf().map_or(u32::MAX, |st| st.vf.bar0_read(off))
            };
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn bar0_write(&self, core: &VfCore, offset: u64, data: &[u8]) {
        let mut g = core.port.lock();
        let Some(st) = g.avf() else {
            return;
        };
        let mut fire = 0;
        for (off, v) in words(offset, data) {
            if mapped(off) {
                // Same words the client maps: a trapped tail write is a doorbell too.
                self.bar0.store((off / 4) as usize, v);
                core.dataplane.kick();
                continue;
            }
            let fx = st.vf.bar0_write(off, v);
            fire |= fx.fire;
            if fx.atq_doorbell {
                fire |= self.run_adminq(core, st);
            }
            if fx.queues_changed {
                core.dataplane.kick();
            }
        }
        core.port.fire_now(fire);
    }

    /// Registers, TX state, tail pages and the PF's view of the VF.
    fn power_on(&self, core: &VfCore) {
        let mut g = core.port.lock();
        if let Some(st) = g.avf() {
            st.vf.device_reset();
            st.reset_tx();
            st.clear_mapped();
            let mut pf = self.pf.lock();
            pf.vf_reset(core.vf_index, &mut st.vf.vsi);
            self.republish(core, &pf, st);
        }
    }

    fn set_admin(&self, core: &VfCore, a: AdminSettings) {
        let mut g = core.port.lock();
        let mut pf = self.pf.lock();
        pf.set_admin(
            core.vf_index,
            emu_nic_model::avf::pf::AvfVfAdmin {
                mac: a.mac,
                trusted: a.trusted,
                spoofchk: a.spoofchk,
                port_vlan: a.port_vlan,
                // Kept as created by `set_admin`.
                queue_pairs: 0,
            },
        );
        pf.set_max_frame_cap(core.vf_index, a.max_frame);
        if let Some(st) = g.avf() {
            self.republish(core, &pf, st);
        }
    }
}
