//! Glue between the vfio-user server and the AVF models: one [`AvfVfDevice`] per VF turns
//! trapped accesses into register-model calls, runs the AdminQ (virtchnl answered by the PF
//! model) on ATQT doorbells, performs the RESET_VF sequence, posts LINK_CHANGE after
//! ENABLE_QUEUES, and republishes the VF's switch filter. The tail pages (QTX_TAIL1 at
//! 0x0000, QRX_TAIL1 + VFINT_ITRN1 at 0x2000) are a sparse-mmap memfd the dataplane polls.

use crate::device::{AdminSettings, NodeDevice};
use crate::regions::{check, check_registers, no_region, vf_spec, CONFIG_SIZE};
use emu_dataplane::engine::DataplaneControl;
use emu_dataplane::{AvfState, VfPort};
use emu_nic_defs::avf as r;
use emu_nic_defs::avf_virtchnl::VIRTCHNL_OP_EVENT;
use emu_nic_model::avf::adminq::{post_arq, process_atq, AqScratch};
use emu_nic_model::avf::pf::{AvfPf, VfStats};
use emu_nic_model::shared::SharedWords;
use emu_vfio_server::{region, AccessError, DeviceSpec, DmaTable, LogBudget, VfioDevice};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Link speed the PF reports in LINK_CHANGE (Mbit/s).
pub const LINK_SPEED_MBPS: u32 = 25_000;

/// The BAR0 pages the client maps: (offset, size).
pub const MAPPED_PAGES: [(u64, u64); 2] = [(0x0000, 0x1000), (0x2000, 0x1000)];

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

/// One AVF VF served over vfio-user.
pub struct AvfVfDevice {
    pub port: Arc<VfPort>,
    pub vf_index: usize,
    pub pf: Arc<AvfPfShared>,
    pub dataplane: DataplaneControl,
    pub attached: AtomicBool,
    /// The client's DMA regions (the AdminQ rings and buffers live there).
    pub dma: Arc<DmaTable>,
    /// BAR0 as shared words and the memfd behind it.
    pub bar0: SharedWords,
    pub bar0_fd: Arc<OwnedFd>,
    pub vectors: u16,
    scratch: Mutex<AqScratch>,
    /// Log lines the guest or client can trigger at will (resets, link, attach/detach).
    log: LogBudget,
}

fn mapped(offset: u64) -> bool {
    MAPPED_PAGES
        .iter()
        .any(|&(o, len)| (o..o + len).contains(&offset))
}

impl AvfVfDevice {
    pub fn new(
        port: Arc<VfPort>,
        vf_index: usize,
        pf: Arc<AvfPfShared>,
        dataplane: DataplaneControl,
        dma: Arc<DmaTable>,
        (bar0, bar0_fd): (SharedWords, Arc<OwnedFd>),
        vectors: u16,
    ) -> Self {
        AvfVfDevice {
            port,
            vf_index,
            pf,
            dataplane,
            attached: AtomicBool::new(false),
            dma,
            bar0,
            bar0_fd,
            vectors,
            scratch: Mutex::new(AqScratch::new()),
            log: LogBudget::new(),
        }
    }

    fn switch_port(&self) -> usize {
        self.pf.ports[self.vf_index]
    }

    fn republish(&self, pf: &AvfPf, st: &AvfState) {
        let port = self.switch_port();
        let filter = pf.pool_filter(self.vf_index, &st.vf.vsi);
        self.dataplane.update(|t| {
            if let Err(e) = t.set_port(port, filter) {
                tracing::error!(vf = %self.port.id, error = %e, "cannot publish pool filter");
            }
        });
    }

    fn stats(&self) -> VfStats {
        let c = self.port.counters.snapshot();
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

    /// Zeroes the mapped tail pages (a reset makes every tail 0).
    fn clear_mapped(&self) {
        for &(o, len) in &MAPPED_PAGES {
            for w in (o / 4)..((o + len) / 4) {
                self.bar0.store(w as usize, 0);
            }
        }
    }

    /// The RESET_VF / FLR sequence on the device side (the PF side is already reset).
    fn reset_vf(&self, st: &mut AvfState) {
        st.vf.reset_begin();
        for q in &mut st.txqs {
            q.reset();
        }
        self.clear_mapped();
        st.vf.reset_complete();
    }

    /// Back to the power-on state (DEVICE_RESET, scrub): registers, TX state, tail pages and
    /// the PF's view of the VF.
    fn power_on(&self) {
        let mut g = self.port.lock();
        if let Some(st) = g.avf() {
            st.vf.device_reset();
            for q in &mut st.txqs {
                q.reset();
            }
            self.clear_mapped();
            let mut pf = self.pf.lock();
            pf.vf_reset(self.vf_index, &mut st.vf.vsi);
            self.republish(&pf, st);
        }
    }

    /// Processes the ATQ: every request answered by the PF model, replies on the ARQ.
    fn run_adminq(&self, st: &mut AvfState) -> u32 {
        let stats = self.stats();
        let mem = self.dma.lock();
        let mut pf = self.pf.lock();
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let (mut reset, mut link, mut filters, mut queues) = (false, false, false, false);
        let i = self.vf_index;
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
            if let Some(suppressed) = self.log.take() {
                tracing::info!(vf = %self.port.id, suppressed, "RESET_VF");
            }
            self.reset_vf(st);
            filters = true;
        } else if link {
            // LINK_CHANGE right after the ENABLE_QUEUES reply (iavf ignores it earlier).
            if let Some(ev) = pf.link_event(i, true, LINK_SPEED_MBPS) {
                if post_arq(&mut st.vf.aq, &mem, VIRTCHNL_OP_EVENT, 0, &ev).is_ok() {
                    posted += 1;
                    if let Some(suppressed) = self.log.take() {
                        tracing::info!(vf = %self.port.id, suppressed, "queues enabled, link up");
                    }
                }
            }
        }
        if posted > 0 {
            fire |= st.vf.raise_adminq().fire;
        }
        if filters {
            self.republish(&pf, st);
        }
        if queues || filters {
            self.dataplane.kick();
        }
        fire
    }
}

impl NodeDevice for AvfVfDevice {
    fn port(&self) -> &Arc<VfPort> {
        &self.port
    }
    fn attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }
    fn scrub(&self) {
        self.power_on();
        self.port.counters.reset();
    }
    fn tick(&self) {}
    fn set_admin(&self, a: AdminSettings) {
        let mut g = self.port.lock();
        let mut pf = self.pf.lock();
        pf.set_admin(
            self.vf_index,
            emu_nic_model::avf::pf::AvfVfAdmin {
                mac: a.mac,
                trusted: a.trusted,
                spoofchk: a.spoofchk,
                port_vlan: a.port_vlan,
                // Kept as created by `set_admin`.
                queue_pairs: 0,
            },
        );
        pf.set_max_frame_cap(self.vf_index, a.max_frame);
        if let Some(st) = g.avf() {
            self.republish(&pf, st);
        }
    }
}

impl VfioDevice for AvfVfDevice {
    fn spec(&self) -> DeviceSpec {
        vf_spec(
            r::BAR0_SIZE,
            &MAPPED_PAGES,
            Some(self.bar0_fd.clone()),
            r::BAR3_SIZE,
            u32::from(self.vectors),
        )
    }

    fn region_read(&self, region: u32, offset: u64, data: &mut [u8]) -> Result<(), AccessError> {
        match region {
            region::CONFIG => {
                check(region, offset, data.len(), CONFIG_SIZE)?;
                if let Some(st) = self.port.lock().avf() {
                    st.vf.config_read(offset, data);
                }
                Ok(())
            }
            region::BAR0 => {
                check_registers(region, offset, data.len(), r::BAR0_SIZE)?;
                let mut g = self.port.lock();
                for (k, chunk) in data.chunks_exact_mut(4).enumerate() {
                    let off = offset + 4 * k as u64;
                    let v = if mapped(off) {
                        self.bar0.load((off / 4) as usize)
                    } else {
                        g.avf().map_or(u32::MAX, |st| st.vf.bar0_read(off))
                    };
                    chunk.copy_from_slice(&v.to_le_bytes());
                }
                Ok(())
            }
            region::BAR3 => {
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
                if let Some(st) = self.port.lock().avf() {
                    st.vf.config_write(offset, data);
                }
                self.dataplane.kick();
                Ok(())
            }
            region::BAR0 => {
                check_registers(region, offset, data.len(), r::BAR0_SIZE)?;
                let mut g = self.port.lock();
                let Some(st) = g.avf() else {
                    return Ok(());
                };
                let mut fire = 0;
                for (k, chunk) in data.chunks_exact(4).enumerate() {
                    let off = offset + 4 * k as u64;
                    let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    if mapped(off) {
                        // Same words the client maps: a trapped tail write is a doorbell too.
                        self.bar0.store((off / 4) as usize, v);
                        self.dataplane.kick();
                        continue;
                    }
                    let fx = st.vf.bar0_write(off, v);
                    fire |= fx.fire;
                    if fx.atq_doorbell {
                        fire |= self.run_adminq(st);
                    }
                    if fx.queues_changed {
                        self.dataplane.kick();
                    }
                }
                self.port.fire_now(fire);
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
