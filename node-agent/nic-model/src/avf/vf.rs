//! The iavf-facing BAR0 register model of an AVF VF. Every method is pure: it updates state
//! and returns an [`Effects`] value saying which MSI-X vectors to fire and what the AdminQ
//! model or the dataplane must look at.
//!
//! Interrupts (devices.md §3.2, `iavf_txrx.c` `iavf_buildreg_itr`/`iavf_force_wb`):
//! - Vector `v ≥ 1` is controlled by DYN_CTLN1(v − 1); vector 0 by DYN_CTL01.
//! - A queue event on a vector whose INTENA is set fires it and **auto-masks** (INTENA is
//!   cleared until the driver re-arms). An event on a masked vector is remembered and fires
//!   when INTENA is set again, so packets that arrive between the last NAPI poll and the
//!   re-arm are not stranded.
//! - SWINT_TRIG fires the vector whatever INTENA says (iavf uses it with INTENA_MSK to kick a
//!   masked vector), then auto-masks.
//! - CLEARPBA refers to the MSI-X PBA, which QEMU owns; it does not drop remembered causes.
//! - Vector 0 fires for ICR01 causes enabled in ICR0_ENA1 while DYN_CTL01.INTENA is set;
//!   ICR01 is read-to-clear (`iavf_msix_aq`), and `iavf_misc_irq_enable` re-arms.
//!
//! Tails (QTX_TAIL1, QRX_TAIL1) and VFINT_ITRN1 are plain stored values whose only effect is
//! `queues_changed`: their pages will be mapped into the guest and polled (devices.md §5).

use super::state::{AqRegs, VsiState, MAX_QUEUE_PAIRS, MAX_VECTORS, RSS_KEY_SIZE, RSS_LUT_SIZE};
use crate::pci::{ConfigLayout, ConfigSpace, PciFunction};
use emu_nic_defs::avf as r;

const QUEUE_VECTORS: usize = r::MAX_QUEUE_VECTORS as usize;
const ITR_INDEXES: usize = r::ITR_INDEXES as usize;

/// What the caller must do after a register access or an event.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Effects {
    /// Bit v set: fire MSI-X vector v.
    pub fire: u32,
    /// ATQT was written: process the ATQ from ATQH up to ATQT.
    pub atq_doorbell: bool,
    /// ARQT was written (the driver returned ARQ buffers): messages held back for a full ARQ
    /// may be posted now.
    pub arq_doorbell: bool,
    /// A tail or RSS register changed: kick the dataplane.
    pub queues_changed: bool,
}

impl Effects {
    /// Combines two effects (fire bits and flags are or-ed).
    pub fn merge(&mut self, o: Effects) {
        self.fire |= o.fire;
        self.atq_doorbell |= o.atq_doorbell;
        self.arq_doorbell |= o.arq_doorbell;
        self.queues_changed |= o.queues_changed;
    }

    fn fire(v: usize) -> Self {
        Effects {
            fire: 1 << v,
            ..Effects::default()
        }
    }

    fn queues() -> Self {
        Effects {
            queues_changed: true,
            ..Effects::default()
        }
    }
}

/// The PCI identity and capabilities of an AVF VF with `vectors` MSI-X vectors.
pub fn config_layout(vectors: u16) -> ConfigLayout {
    crate::pci::intel_vf_layout(
        r::DEVICE_AVF,
        (r::BAR0_SIZE, r::BAR3_SIZE),
        vectors,
        (r::MSIX_TABLE_OFFSET, r::MSIX_PBA_OFFSET),
    )
}

/// One AVF VF: config space, BAR0 registers, and the per-VF state shared with the AdminQ /
/// virtchnl PF model and the dataplane.
#[derive(Debug, Clone)]
pub struct AvfVf {
    config: ConfigSpace,
    vectors: u16,
    /// AdminQ registers; the AdminQ model advances the heads.
    pub aq: AqRegs,
    /// Queue, IRQ-map and RSS configuration (virtchnl or VFQF_* registers) and tails.
    pub vsi: VsiState,
    icr01: u32,
    icr0_ena1: u32,
    stat_ctl01: u32,
    dyn_ctl01: u32,
    dyn_ctln: [u32; QUEUE_VECTORS],
    itr01: [u32; ITR_INDEXES],
    itrn: [[u32; QUEUE_VECTORS]; ITR_INDEXES],
    rstat: u32,
    /// Bit v: a queue event for vector v arrived while it was masked.
    pending: u32,
}

impl PciFunction for AvfVf {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }
}

impl AvfVf {
    /// A VF with `queue_pairs` queue pairs (clamped to 1..=16) and `queue_pairs + 1` MSI-X
    /// vectors.
    ///
    /// RSTAT starts at VFACTIVE: the VF exists only while the agent (its PF) is up, so the
    /// driver's probe-time poll for COMPLETED/VFACTIVE succeeds at once.
    pub fn new(queue_pairs: u16) -> Self {
        let pairs = queue_pairs.clamp(1, MAX_QUEUE_PAIRS as u16);
        let vectors = pairs + 1;
        let vsi = VsiState {
            num_pairs: pairs,
            ..VsiState::default()
        };
        AvfVf {
            config: ConfigSpace::new(&config_layout(vectors)),
            vectors,
            aq: AqRegs::default(),
            vsi,
            icr01: 0,
            icr0_ena1: 0,
            stat_ctl01: 0,
            dyn_ctl01: 0,
            dyn_ctln: [0; QUEUE_VECTORS],
            itr01: [0; ITR_INDEXES],
            itrn: [[0; QUEUE_VECTORS]; ITR_INDEXES],
            rstat: r::VFR_VFACTIVE,
            pending: 0,
        }
    }

    /// MSI-X vectors the function exposes (queue pairs + 1).
    pub fn num_vectors(&self) -> u16 {
        self.vectors
    }

    /// VFGEN_RSTAT.VFR_STATE.
    pub fn rstat(&self) -> u32 {
        self.rstat
    }

    /// VFINT_ITRN1(itr_idx, v - 1) of queue vector `v` (1-based), for interrupt moderation.
    pub fn itrn(&self, itr_idx: usize, v: usize) -> u32 {
        v.checked_sub(1)
            .and_then(|i| self.itrn.get(itr_idx)?.get(i).copied())
            .unwrap_or(0)
    }

    /// Whether vector `v` is armed (DYN_CTL01 / DYN_CTLN1(v−1) INTENA).
    pub fn armed(&self, v: usize) -> bool {
        self.dyn_ctl(v).is_some_and(|c| c & r::DYN_CTL_INTENA != 0)
    }

    fn dyn_ctl(&self, v: usize) -> Option<u32> {
        match v {
            0 => Some(self.dyn_ctl01),
            _ => self.dyn_ctln.get(v - 1).copied(),
        }
    }

    fn dyn_ctl_mut(&mut self, v: usize) -> Option<&mut u32> {
        match v {
            0 => Some(&mut self.dyn_ctl01),
            _ => self.dyn_ctln.get_mut(v - 1),
        }
    }

    /// RSTAT = INPROGRESS; AdminQ registers, queue/IRQ/RSS configuration and interrupt state
    /// cleared (devices.md §3.5 step 2). ARQLEN.ENABLE reading 0 is what the driver waits for.
    pub fn reset_begin(&mut self) {
        self.rstat = r::VFR_INPROGRESS;
        self.aq = AqRegs::default();
        self.vsi.reset();
        self.icr01 = 0;
        self.icr0_ena1 = 0;
        self.stat_ctl01 = 0;
        self.dyn_ctl01 = 0;
        self.dyn_ctln = [0; QUEUE_VECTORS];
        self.itr01 = [0; ITR_INDEXES];
        self.itrn = [[0; QUEUE_VECTORS]; ITR_INDEXES];
        self.pending = 0;
    }

    /// The PF finished the reset: RSTAT = COMPLETED then VFACTIVE. Both steps happen in one
    /// call, so only VFACTIVE is observable; iavf accepts either.
    pub fn reset_complete(&mut self) {
        self.rstat = r::VFR_COMPLETED;
        self.rstat = r::VFR_VFACTIVE;
    }

    /// vfio DEVICE_RESET (function-level reset): the power-on state, config space included.
    pub fn device_reset(&mut self) {
        *self = AvfVf::new(self.vsi.num_pairs);
    }

    /// An event on vector `v`: fire it if armed (then auto-mask), else remember it.
    pub fn raise_vector(&mut self, v: usize) -> Effects {
        if v >= usize::from(self.vectors) {
            return Effects::default();
        }
        match self.dyn_ctl_mut(v) {
            Some(c) if *c & r::DYN_CTL_INTENA != 0 => {
                *c &= !r::DYN_CTL_INTENA;
                Effects::fire(v)
            }
            Some(_) => {
                self.pending |= 1 << v;
                Effects::default()
            }
            None => Effects::default(),
        }
    }

    /// RX queue `q` wrote back descriptors: its mapped vector (CONFIG_IRQ_MAP), if any.
    pub fn raise_rx(&mut self, q: usize) -> Effects {
        match self.vsi.irq.rx_vector(q) {
            Some(v) => self.raise_vector(v),
            None => Effects::default(),
        }
    }

    /// TX queue `q` completed descriptors: its mapped vector, if any.
    pub fn raise_tx(&mut self, q: usize) -> Effects {
        match self.vsi.irq.tx_vector(q) {
            Some(v) => self.raise_vector(v),
            None => Effects::default(),
        }
    }

    /// The PF posted to the ARQ: ICR01.ADMINQ, and vector 0 if ICR0_ENA1.ADMINQ and
    /// DYN_CTL01.INTENA allow it.
    pub fn raise_adminq(&mut self) -> Effects {
        self.icr01 |= r::ICR0_ADMINQ;
        self.deliver(0)
    }

    /// Fires vector `v` if it is armed and has a remembered cause (for vector 0: also an
    /// enabled ICR01 cause), then auto-masks.
    fn deliver(&mut self, v: usize) -> Effects {
        let cause = self.pending & (1 << v) != 0
            || (v == 0
                && self.icr01 & self.icr0_ena1 & (r::ICR0_ADMINQ | r::ICR0_LINK_STAT_CHANGE) != 0);
        if cause && self.armed(v) && v < usize::from(self.vectors) {
            self.pending &= !(1 << v);
            if let Some(c) = self.dyn_ctl_mut(v) {
                *c &= !r::DYN_CTL_INTENA;
            }
            return Effects::fire(v);
        }
        Effects::default()
    }

    /// A DYN_CTL01 / DYN_CTLN1 write for vector `v`.
    fn dyn_ctl_write(&mut self, v: usize, value: u32) -> Effects {
        let exists = v < usize::from(self.vectors);
        let Some(c) = self.dyn_ctl_mut(v) else {
            return Effects::default();
        };
        let mut new = value & !r::DYN_CTL_COMMAND_BITS;
        if value & r::DYN_CTL_INTENA_MSK != 0 {
            new = (new & !r::DYN_CTL_INTENA) | (*c & r::DYN_CTL_INTENA);
        }
        *c = new;
        if value & r::DYN_CTL_SWINT_TRIG != 0 && exists {
            *c &= !r::DYN_CTL_INTENA;
            self.pending &= !(1 << v);
            return Effects::fire(v);
        }
        self.deliver(v)
    }

    /// A 32-bit BAR0 read. ICR01 is read-to-clear; unknown or unaligned offsets read 0.
    pub fn bar0_read(&mut self, offset: u64) -> u32 {
        let Some(off) = reg_offset(offset) else {
            return 0;
        };
        if let Some(q) = indexed(off, r::QTX_TAIL1, r::MAX_QUEUES) {
            return self.vsi.tx[q].tail;
        }
        if let Some(q) = indexed(off, r::QRX_TAIL1, r::MAX_QUEUES) {
            return self.vsi.rx[q].tail;
        }
        if let Some((i, v)) = itrn_index(off) {
            return self.itrn[i][v];
        }
        if let Some(v) = indexed(off, r::VFINT_DYN_CTLN1, r::MAX_QUEUE_VECTORS) {
            return self.dyn_ctln[v];
        }
        if let Some(i) = indexed(off, r::VFINT_ITR01, r::ITR_INDEXES) {
            return self.itr01[i];
        }
        if let Some(i) = indexed(off, r::VFQF_HENA, r::VFQF_HENA_COUNT) {
            return (self.vsi.rss.hena >> (32 * i)) as u32;
        }
        if let Some(i) = indexed(off, r::VFQF_HKEY, r::VFQF_HKEY_COUNT) {
            return le_word(&self.vsi.rss.key, i);
        }
        if let Some(i) = indexed(off, r::VFQF_HLUT, r::VFQF_HLUT_COUNT) {
            return le_word(&self.vsi.rss.lut, i);
        }
        let aq = &self.aq;
        match off {
            r::VFINT_ICR01 => std::mem::take(&mut self.icr01),
            r::VFINT_ICR0_ENA1 => self.icr0_ena1,
            r::VFINT_STAT_CTL01 => self.stat_ctl01,
            r::VFINT_DYN_CTL01 => self.dyn_ctl01,
            r::VF_ARQBAH1 => aq.arq_bah,
            r::VF_ARQBAL1 => aq.arq_bal,
            r::VF_ARQH1 => aq.arq_head,
            r::VF_ARQT1 => aq.arq_tail,
            r::VF_ARQLEN1 => aq.arq_len,
            r::VF_ATQBAH1 => aq.atq_bah,
            r::VF_ATQBAL1 => aq.atq_bal,
            r::VF_ATQH1 => aq.atq_head,
            r::VF_ATQT1 => aq.atq_tail,
            r::VF_ATQLEN1 => aq.atq_len,
            r::VFGEN_RSTAT => self.rstat,
            _ => 0,
        }
    }

    /// A 32-bit BAR0 write. Read-only, unknown or unaligned offsets are ignored.
    pub fn bar0_write(&mut self, offset: u64, value: u32) -> Effects {
        let Some(off) = reg_offset(offset) else {
            return Effects::default();
        };
        if let Some(q) = indexed(off, r::QTX_TAIL1, r::MAX_QUEUES) {
            self.vsi.tx[q].tail = value;
            return Effects::queues();
        }
        if let Some(q) = indexed(off, r::QRX_TAIL1, r::MAX_QUEUES) {
            self.vsi.rx[q].tail = value;
            return Effects::queues();
        }
        if let Some((i, v)) = itrn_index(off) {
            self.itrn[i][v] = value;
            return Effects::default();
        }
        if let Some(v) = indexed(off, r::VFINT_DYN_CTLN1, r::MAX_QUEUE_VECTORS) {
            return self.dyn_ctl_write(v + 1, value);
        }
        if let Some(i) = indexed(off, r::VFINT_ITR01, r::ITR_INDEXES) {
            self.itr01[i] = value;
            return Effects::default();
        }
        if let Some(i) = indexed(off, r::VFQF_HENA, r::VFQF_HENA_COUNT) {
            let shift = 32 * i;
            let hena = &mut self.vsi.rss.hena;
            *hena = (*hena & !(0xFFFF_FFFFu64 << shift)) | (u64::from(value) << shift);
            return Effects::queues();
        }
        if let Some(i) = indexed(off, r::VFQF_HKEY, r::VFQF_HKEY_COUNT) {
            set_le_word(&mut self.vsi.rss.key, i, value);
            return Effects::queues();
        }
        if let Some(i) = indexed(off, r::VFQF_HLUT, r::VFQF_HLUT_COUNT) {
            set_le_word(&mut self.vsi.rss.lut, i, value);
            return Effects::queues();
        }
        let len_bits = r::AQ_LEN_MASK | r::AQ_LEN_VFE | r::AQ_LEN_OVFL | r::AQ_LEN_CRIT;
        let len_bits = len_bits | r::AQ_LEN_ENABLE;
        let aq = &mut self.aq;
        match off {
            r::VFINT_ICR0_ENA1 => {
                self.icr0_ena1 = value & (r::ICR0_ADMINQ | r::ICR0_LINK_STAT_CHANGE);
                return self.deliver(0);
            }
            r::VFINT_STAT_CTL01 => self.stat_ctl01 = value,
            r::VFINT_DYN_CTL01 => return self.dyn_ctl_write(0, value),
            // BAL/BAH are kept verbatim: `iavf_config_asq_regs` compares BAL with what it wrote.
            r::VF_ARQBAH1 => aq.arq_bah = value,
            r::VF_ARQBAL1 => aq.arq_bal = value,
            r::VF_ARQH1 => aq.arq_head = value & r::AQ_HT_MASK,
            r::VF_ARQT1 => {
                aq.arq_tail = value & r::AQ_HT_MASK;
                return Effects {
                    arq_doorbell: true,
                    ..Effects::default()
                };
            }
            r::VF_ARQLEN1 => aq.arq_len = value & len_bits,
            r::VF_ATQBAH1 => aq.atq_bah = value,
            r::VF_ATQBAL1 => aq.atq_bal = value,
            r::VF_ATQH1 => aq.atq_head = value & r::AQ_HT_MASK,
            r::VF_ATQT1 => {
                aq.atq_tail = value & r::AQ_HT_MASK;
                return Effects {
                    atq_doorbell: true,
                    ..Effects::default()
                };
            }
            r::VF_ATQLEN1 => aq.atq_len = value & len_bits,
            // ICR01 (read-to-clear), RSTAT (device-owned) and unknown offsets: ignored.
            _ => {}
        }
        Effects::default()
    }
}

/// The BAR0 offset as u32 when it is a 4-byte-aligned offset inside BAR0.
fn reg_offset(offset: u64) -> Option<u32> {
    (offset < r::BAR0_SIZE && offset.is_multiple_of(4)).then_some(offset as u32)
}

/// Index `i` when `off == base + 4i` and `i < count`.
fn indexed(off: u32, base: u32, count: u32) -> Option<usize> {
    let i = off.checked_sub(base)? / 4;
    (i < count).then_some(i as usize)
}

/// (ITR index, vector − 1) of a VFINT_ITRN1 offset.
fn itrn_index(off: u32) -> Option<(usize, usize)> {
    let rel = off.checked_sub(r::VFINT_ITRN1)?;
    let i = (rel / r::VFINT_ITRN1_STRIDE) as usize;
    let v = ((rel % r::VFINT_ITRN1_STRIDE) / 4) as usize;
    (i < ITR_INDEXES && v < QUEUE_VECTORS).then_some((i, v))
}

/// Bytes `4i..4i+4` of `b` as a little-endian dword (0 beyond the end).
fn le_word(b: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    for (k, x) in w.iter_mut().enumerate() {
        *x = b.get(4 * i + k).copied().unwrap_or(0);
    }
    u32::from_le_bytes(w)
}

fn set_le_word(b: &mut [u8], i: usize, v: u32) {
    for (k, x) in v.to_le_bytes().into_iter().enumerate() {
        if let Some(d) = b.get_mut(4 * i + k) {
            *d = x;
        }
    }
}

// The register arrays must cover what the shared state can describe.
const _: () = assert!(RSS_KEY_SIZE == 4 * r::VFQF_HKEY_COUNT as usize);
const _: () = assert!(RSS_LUT_SIZE == 4 * r::VFQF_HLUT_COUNT as usize);
const _: () = assert!(MAX_VECTORS == QUEUE_VECTORS + 1);
const _: () = assert!(MAX_QUEUE_PAIRS == r::MAX_QUEUES as usize);

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(vf: &mut AvfVf, off: u32) -> u32 {
        vf.bar0_read(u64::from(off))
    }

    fn wr(vf: &mut AvfVf, off: u32, v: u32) -> Effects {
        vf.bar0_write(u64::from(off), v)
    }

    /// A VF with RX/TX queue q mapped to vector q + 1 and everything armed.
    fn mapped_vf(pairs: u16) -> AvfVf {
        let mut vf = AvfVf::new(pairs);
        for q in 0..usize::from(pairs) {
            vf.vsi.irq.rxq_map[q + 1] = 1 << q;
            vf.vsi.irq.txq_map[q + 1] = 1 << q;
            let _ = wr(
                &mut vf,
                r::VFINT_DYN_CTLN1 + 4 * q as u32,
                r::DYN_CTL_INTENA,
            );
        }
        vf
    }

    #[test]
    fn config_space_identity_and_msix() {
        let vf = AvfVf::new(4);
        assert_eq!(vf.num_vectors(), 5);
        let c = vf.config();
        assert_eq!(c.read_u32(0), 0x1889_8086);
        assert_eq!(c.read_u32(0x08) >> 8, 0x02_0000);
        assert_eq!(c.bar_size(0), 64 * 1024);
        assert_eq!(c.bar_size(3), 16 * 1024);
        assert_eq!(c.read_u16(0x72) & 0x7FF, 4, "5 vectors = table size 4");
        assert_eq!(c.read_u32(0x78), 0x2003, "PBA at 0x2000 in BAR3");
        assert_eq!(AvfVf::new(0).num_vectors(), 2);
        assert_eq!(AvfVf::new(99).num_vectors(), 17);
    }

    #[test]
    fn icr01_is_read_to_clear_and_vector0_gating() {
        let mut vf = AvfVf::new(4);
        // Neither ENA1 nor INTENA: cause latched, nothing fires.
        assert_eq!(vf.raise_adminq().fire, 0);
        assert_eq!(rd(&mut vf, r::VFINT_ICR01), r::ICR0_ADMINQ);
        assert_eq!(rd(&mut vf, r::VFINT_ICR01), 0, "R2C");
        // INTENA without ENA1.ADMINQ: still nothing.
        let _ = wr(
            &mut vf,
            r::VFINT_DYN_CTL01,
            r::DYN_CTL_INTENA | r::DYN_CTL_ITR_INDX_MASK,
        );
        assert_eq!(vf.raise_adminq().fire, 0);
        // Enabling ADMINQ with the cause pending delivers it.
        assert_eq!(wr(&mut vf, r::VFINT_ICR0_ENA1, r::ICR0_ADMINQ).fire, 1);
        assert!(!vf.armed(0), "vector 0 auto-masks");
        let _ = rd(&mut vf, r::VFINT_ICR01);
        assert_eq!(vf.raise_adminq().fire, 0, "masked until re-armed");
        // Re-arm (iavf_misc_irq_enable): the latched cause fires now.
        assert_eq!(wr(&mut vf, r::VFINT_DYN_CTL01, r::DYN_CTL_INTENA).fire, 1);
        let _ = rd(&mut vf, r::VFINT_ICR01);
        assert_eq!(
            wr(&mut vf, r::VFINT_DYN_CTL01, r::DYN_CTL_INTENA).fire,
            0,
            "ICR01 was read"
        );
        assert_eq!(vf.raise_adminq().fire, 1);
        assert_eq!(rd(&mut vf, r::VFINT_ICR0_ENA1), r::ICR0_ADMINQ);
        // SWINT_TRIG on vector 0.
        assert_eq!(
            wr(&mut vf, r::VFINT_DYN_CTL01, r::DYN_CTL_SWINT_TRIG).fire,
            1
        );
    }

    #[test]
    fn adminq_registers_read_back_and_atqt_rings() {
        let mut vf = AvfVf::new(4);
        let _ = wr(&mut vf, r::VF_ATQH1, 0);
        let _ = wr(&mut vf, r::VF_ATQLEN1, 32 | r::AQ_LEN_ENABLE);
        let _ = wr(&mut vf, r::VF_ATQBAL1, 0x1234_5000);
        let _ = wr(&mut vf, r::VF_ATQBAH1, 0x1);
        let _ = wr(&mut vf, r::VF_ARQLEN1, 32 | r::AQ_LEN_ENABLE);
        let _ = wr(&mut vf, r::VF_ARQBAL1, 0x5678_9000);
        assert_eq!(rd(&mut vf, r::VF_ATQBAL1), 0x1234_5000);
        assert_eq!(rd(&mut vf, r::VF_ATQBAH1), 1);
        assert_eq!(rd(&mut vf, r::VF_ATQLEN1), 32 | r::AQ_LEN_ENABLE);
        assert_eq!(rd(&mut vf, r::VF_ARQLEN1), 32 | r::AQ_LEN_ENABLE);
        assert_eq!(rd(&mut vf, r::VF_ARQBAL1), 0x5678_9000);
        assert_eq!(vf.aq.atq_len, 32 | r::AQ_LEN_ENABLE);
        let fx = wr(&mut vf, r::VF_ATQT1, 1);
        assert!(fx.atq_doorbell && !fx.queues_changed);
        assert_eq!(vf.aq.atq_tail, 1);
        // The AdminQ model advances the head; the driver sees it.
        vf.aq.atq_head = 1;
        assert_eq!(rd(&mut vf, r::VF_ATQH1), 1);
        let fx = wr(&mut vf, r::VF_ARQT1, 31);
        assert!(fx.arq_doorbell && !fx.atq_doorbell);
        assert_eq!(rd(&mut vf, r::VF_ARQT1), 31);
        assert_eq!(wr(&mut vf, r::VF_ATQT1, 0xFFFF_FFFF).fire, 0);
        assert_eq!(vf.aq.atq_tail, 0x3FF, "10-bit index");
    }

    #[test]
    fn tails_and_itrn_are_plain_stored_values() {
        let mut vf = AvfVf::new(4);
        for q in 0..16u32 {
            let fx = wr(&mut vf, r::QTX_TAIL1 + 4 * q, 100 + q);
            assert_eq!(
                fx,
                Effects {
                    queues_changed: true,
                    ..Effects::default()
                }
            );
            let fx = wr(&mut vf, r::QRX_TAIL1 + 4 * q, 200 + q);
            assert!(fx.queues_changed && fx.fire == 0);
        }
        for q in 0..16usize {
            assert_eq!(vf.vsi.tx[q].tail, 100 + q as u32);
            assert_eq!(vf.vsi.rx[q].tail, 200 + q as u32);
            assert_eq!(rd(&mut vf, r::QRX_TAIL1 + 4 * q as u32), 200 + q as u32);
        }
        let fx = wr(&mut vf, r::VFINT_ITRN1 + 64 + 4 * 3, 0x3E);
        assert_eq!(fx, Effects::default());
        assert_eq!(rd(&mut vf, r::VFINT_ITRN1 + 64 + 12), 0x3E);
        assert_eq!(vf.itrn(1, 4), 0x3E);
        assert_eq!(vf.itrn(7, 4), 0);
        assert_eq!(vf.itrn(1, 0), 0);
    }

    #[test]
    fn queue_vectors_automask_rearm_and_swint() {
        let mut vf = mapped_vf(4);
        assert_eq!(vf.raise_rx(0).fire, 1 << 1);
        assert!(!vf.armed(1), "auto-masked");
        assert_eq!(vf.raise_rx(0).fire, 0);
        assert_eq!(vf.raise_tx(0).fire, 0);
        assert_eq!(vf.raise_tx(2).fire, 1 << 3, "other vectors unaffected");
        // Re-arm as iavf_buildreg_itr does (INTENA | CLEARPBA | ITR index): the event that
        // arrived while masked fires at once, and CLEARPBA does not drop it.
        let rearm = r::DYN_CTL_INTENA | r::DYN_CTL_CLEARPBA | (3 << r::DYN_CTL_ITR_INDX_SHIFT);
        assert_eq!(wr(&mut vf, r::VFINT_DYN_CTLN1, rearm).fire, 1 << 1);
        assert!(!vf.armed(1));
        assert_eq!(rd(&mut vf, r::VFINT_DYN_CTLN1) & r::DYN_CTL_COMMAND_BITS, 0);
        // Nothing pending: re-arming does not fire, and stays armed.
        assert_eq!(wr(&mut vf, r::VFINT_DYN_CTLN1, rearm).fire, 0);
        assert!(vf.armed(1));
        // CLEARPBA alone disarms (INTENA = 0) and fires nothing.
        assert_eq!(wr(&mut vf, r::VFINT_DYN_CTLN1, r::DYN_CTL_CLEARPBA).fire, 0);
        assert!(!vf.armed(1));
        // iavf_force_wb: INTENA_MSK | SWINT_TRIG fires a masked vector.
        let force = r::DYN_CTL_INTENA_MSK
            | r::DYN_CTL_SWINT_TRIG
            | r::DYN_CTL_SW_ITR_INDX_ENA
            | r::DYN_CTL_SW_ITR_INDX_MASK
            | r::DYN_CTL_ITR_INDX_MASK;
        assert_eq!(wr(&mut vf, r::VFINT_DYN_CTLN1 + 4, force).fire, 1 << 2);
        // INTENA_MSK keeps INTENA as it was.
        let _ = wr(&mut vf, r::VFINT_DYN_CTLN1 + 8, r::DYN_CTL_INTENA);
        let _ = wr(&mut vf, r::VFINT_DYN_CTLN1 + 8, r::DYN_CTL_INTENA_MSK);
        assert!(vf.armed(3));
    }

    #[test]
    fn out_of_range_vectors_and_queues_do_nothing() {
        let mut vf = mapped_vf(2); // vectors 0..=2
                                   // DYN_CTLN1(15) = vector 16: beyond the MSI-X table, never fires.
        assert_eq!(
            wr(&mut vf, r::VFINT_DYN_CTLN1 + 60, r::DYN_CTL_SWINT_TRIG).fire,
            0
        );
        let _ = wr(&mut vf, r::VFINT_DYN_CTLN1 + 60, r::DYN_CTL_INTENA);
        vf.vsi.irq.rxq_map[16] = 1 << 5;
        assert_eq!(vf.raise_rx(5).fire, 0);
        assert_eq!(vf.raise_rx(16).fire, 0);
        assert_eq!(vf.raise_tx(usize::MAX).fire, 0);
        assert_eq!(vf.raise_vector(usize::MAX).fire, 0);
        assert_eq!(vf.raise_rx(3).fire, 0, "unmapped queue");
    }

    #[test]
    fn reset_sequence_clears_aq_and_reports_rstat() {
        let mut vf = mapped_vf(4);
        assert_eq!(rd(&mut vf, r::VFGEN_RSTAT), r::VFR_VFACTIVE);
        let _ = wr(&mut vf, r::VF_ARQLEN1, 32 | r::AQ_LEN_ENABLE);
        let _ = wr(&mut vf, r::VF_ATQBAL1, 0x1000);
        let _ = wr(&mut vf, r::QTX_TAIL1, 5);
        let _ = wr(&mut vf, r::VFQF_HLUT, 0x0302_0100);
        vf.vsi.rx[0].enabled = true;
        let _ = wr(&mut vf, r::VFGEN_RSTAT, r::VFR_VFACTIVE);
        vf.reset_begin();
        assert_eq!(rd(&mut vf, r::VFGEN_RSTAT), r::VFR_INPROGRESS);
        assert_eq!(rd(&mut vf, r::VF_ARQLEN1) & r::AQ_LEN_ENABLE, 0);
        assert_eq!(rd(&mut vf, r::VF_ATQBAL1), 0);
        assert_eq!(vf.aq, AqRegs::default());
        assert!(!vf.vsi.rx[0].enabled);
        assert_eq!(vf.vsi.tx[0].tail, 0);
        assert_eq!(vf.vsi.rss.lut, [0; RSS_LUT_SIZE]);
        assert_eq!(vf.vsi.num_pairs, 4, "granted pairs survive");
        assert!(!vf.armed(1));
        assert_eq!(vf.raise_rx(0).fire, 0, "IRQ map forgotten");
        let _ = wr(&mut vf, r::VFGEN_RSTAT, r::VFR_VFACTIVE);
        assert_eq!(
            rd(&mut vf, r::VFGEN_RSTAT),
            r::VFR_INPROGRESS,
            "RSTAT is device-owned"
        );
        vf.reset_complete();
        assert_eq!(rd(&mut vf, r::VFGEN_RSTAT), r::VFR_VFACTIVE);
    }

    #[test]
    fn device_reset_is_power_on() {
        let mut vf = mapped_vf(4);
        vf.config_write(0x04, &[0x06, 0]);
        assert!(vf.bus_master());
        let _ = wr(&mut vf, r::VF_ATQLEN1, r::AQ_LEN_ENABLE);
        vf.device_reset();
        assert!(!vf.bus_master());
        assert_eq!(vf.aq, AqRegs::default());
        assert_eq!(vf.num_vectors(), 5);
        assert_eq!(vf.rstat(), r::VFR_VFACTIVE);
    }

    #[test]
    fn rss_registers_land_in_vsi_state() {
        let mut vf = AvfVf::new(4);
        let _ = wr(&mut vf, r::VFQF_HENA, 0x8000_0000);
        let fx = wr(&mut vf, r::VFQF_HENA + 4, 0x8000_0002);
        assert!(fx.queues_changed);
        assert_eq!(vf.vsi.rss.hena, 0x8000_0002_8000_0000);
        assert_eq!(rd(&mut vf, r::VFQF_HENA + 4), 0x8000_0002);
        for i in 0..13u32 {
            let _ = wr(
                &mut vf,
                r::VFQF_HKEY + 4 * i,
                u32::from_le_bytes([
                    4 * i as u8,
                    4 * i as u8 + 1,
                    4 * i as u8 + 2,
                    4 * i as u8 + 3,
                ]),
            );
        }
        let want: Vec<u8> = (0..52).collect();
        assert_eq!(vf.vsi.rss.key.as_slice(), want.as_slice());
        for i in 0..16u32 {
            let _ = wr(&mut vf, r::VFQF_HLUT + 4 * i, 0x0302_0100);
        }
        assert_eq!(vf.vsi.rss.lut[..6], [0, 1, 2, 3, 0, 1]);
        assert_eq!(rd(&mut vf, r::VFQF_HLUT + 60), 0x0302_0100);
        // One past the arrays: ignored.
        let _ = wr(&mut vf, r::VFQF_HKEY + 52, 0xFFFF_FFFF);
        let _ = wr(&mut vf, r::VFQF_HENA + 8, 0xFFFF_FFFF);
        assert_eq!(vf.vsi.rss.hena, 0x8000_0002_8000_0000);
        assert_eq!(rd(&mut vf, r::VFQF_HKEY + 52), 0);
    }

    #[test]
    fn hostile_register_accesses_never_panic() {
        let mut vf = mapped_vf(16);
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let off = match seed & 3 {
                0 => seed >> 20,
                1 => (seed >> 20) & 0xFFFF,
                _ => (seed >> 20) & 0xFFFC,
            };
            let val = (seed >> 3) as u32;
            if seed & 4 == 0 {
                let _ = vf.bar0_read(off);
            } else {
                let fx = vf.bar0_write(off, val);
                assert_eq!(fx.fire >> vf.num_vectors(), 0, "only existing vectors fire");
            }
            let q = (seed >> 50) as usize;
            let fx = vf.raise_rx(q).fire | vf.raise_tx(q).fire | vf.raise_adminq().fire;
            assert_eq!(fx >> vf.num_vectors(), 0);
            if seed >> 60 == 0 {
                vf.reset_begin();
                vf.reset_complete();
            }
        }
        let _ = vf.bar0_read(u64::MAX);
        let _ = vf.bar0_write(u64::MAX, 1);
        let _ = vf.bar0_write(r::BAR0_SIZE, 1);
    }
}
