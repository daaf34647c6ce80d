//! The igbvf register model. Every method is pure: it updates state and returns an
//! [`Effects`] value that says which MSI-X vectors to fire and what the PF must handle.

use super::rings::RingRegs;
use crate::pci::{ConfigLayout, ConfigSpace, PciFunction};
use crate::ring::IdleProbe;
use crate::shared::SharedWords;
use emu_nic_defs::igbvf as r;
use emu_nic_defs::pci as p;

/// Free-running statistics the dataplane keeps for a VF; register reads report them
/// (the driver keeps its own base and handles wrap, so they are never cleared on read).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HwCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_multicast: u64,
    pub rx_loopback_packets: u64,
    pub rx_loopback_bytes: u64,
    pub tx_loopback_packets: u64,
    pub tx_loopback_bytes: u64,
}

/// What the caller must do after a register access.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use]
pub struct Effects {
    /// Bit n set: fire MSI-X vector n.
    pub fire: u32,
    /// The VF posted a mailbox message (REQ): hand these words to the PF model, then call
    /// [`IgbVf::pf_reply`].
    pub mailbox: Option<[u32; r::VMBMEM_WORDS]>,
    /// The VF reset itself (CTRL.RST): the PF must forget the VF's filters and clear CTS.
    pub vf_reset: bool,
    /// Queue configuration, enables or doorbells changed: the dataplane should look.
    pub queues_changed: bool,
}

impl Effects {
    fn merge(&mut self, o: Effects) {
        self.fire |= o.fire;
        if o.mailbox.is_some() {
            self.mailbox = o.mailbox;
        }
        self.vf_reset |= o.vf_reset;
        self.queues_changed |= o.queues_changed;
    }
}

/// One queue's registers (RX: SRRCTL in `ctl`; TX: TXCTL in `ctl`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueRegs {
    pub bal: u32,
    pub bah: u32,
    pub len: u32,
    pub head: u32,
    pub tail: u32,
    pub ctl: u32,
    pub dctl: u32,
}

impl QueueRegs {
    pub fn enabled(&self) -> bool {
        self.dctl & r::XDCTL_ENABLE != 0
    }

    /// The ring the walks take: base, length, head and tail.
    #[inline]
    pub fn ring(&self) -> RingRegs {
        RingRegs {
            bal: self.bal,
            bah: self.bah,
            len: self.len,
            head: self.head,
            tail: self.tail,
        }
    }
}

/// Interrupt sources of a VF, mapped to vectors through IVAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqSource {
    Rx(usize),
    Tx(usize),
    Mailbox,
}

/// The VF's BAR0 state and config space.
#[derive(Debug, Clone)]
pub struct IgbVf {
    config: ConfigSpace,
    link_up: bool,
    mbx: [u32; r::VMBMEM_WORDS],
    /// Sticky mailbox bits (VFU, PFU, RSTI) and the read-to-clear ones (PFSTS, PFACK, RSTD).
    v2p: u32,
    /// The VF has not yet ACKed the PF's last message; unsolicited messages wait.
    pf_msg_unread: bool,
    /// An unsolicited PF message waiting for the buffer.
    pending_pf_msg: Option<u32>,
    /// Interrupt causes (EICR) and the effective mask (EIMS). They live here, not in the
    /// interrupt page: the guest changes them only through write-1 event registers.
    eicr: u32,
    eims: u32,
    psrtype: u32,
    pbacl: u32,
    /// The interrupt page (0x1000: EICS, EIMS, EIMC, EIAC, EIAM, EICR, EITR, IVAR) as shared
    /// words: the client may map it so that interrupt re-arms (EIMS) never trap. EIAC, EIAM,
    /// EITR and the IVARs are plain latches read from it; EICS, EIMS, EIMC and EICR writes
    /// are events that [`IgbVf::poll_irq_page`] takes from it.
    irq: SharedWords,
    /// The interrupt page may be mapped: see [`IgbVf::poll_irq_page`] for what changes.
    mapped: bool,
    /// Vectors EIAM masked when they fired and no EIMS or EIMC write has touched since.
    auto_masked: u32,
    /// The queue pages (0x2000 RX, 0x3000 TX) as shared words: the client may map them
    /// (sparse mmap) and write doorbells without trapping; the dataplane polls them.
    queues: SharedWords,
}

/// First byte of the interrupt page and its size.
pub const IRQ_PAGE_OFFSET: u64 = 0x1000;
pub const IRQ_PAGE_SIZE: u64 = 0x1000;
const IRQ_WORDS: usize = (IRQ_PAGE_SIZE / 4) as usize;

/// First byte of the queue pages and their size (RX page 0x2000, TX page 0x3000).
pub const QUEUE_PAGES_OFFSET: u64 = 0x2000;
pub const QUEUE_PAGES_SIZE: u64 = 0x2000;
const QUEUE_WORDS: usize = (QUEUE_PAGES_SIZE / 4) as usize;

// Word offsets of the per-queue registers relative to RDBAL0/TDBAL0.
const Q_BAL: u32 = 0x00;
const Q_BAH: u32 = 0x04;
const Q_LEN: u32 = 0x08;
const Q_SRRCTL: u32 = 0x0C;
const Q_HEAD: u32 = 0x10;
const Q_TXCTL: u32 = 0x14;
const Q_TAIL: u32 = 0x18;
const Q_DCTL: u32 = 0x28;

/// The PCI identity and capabilities of an igbvf function (as QEMU's `igbvf.c`).
pub fn config_layout() -> ConfigLayout {
    crate::pci::intel_vf_layout(
        p::DEVICE_IGBVF,
        (r::BAR0_SIZE, r::BAR3_SIZE),
        r::MSIX_VECTORS,
        (r::MSIX_TABLE_OFFSET, r::MSIX_PBA_OFFSET),
    )
}

impl Default for IgbVf {
    fn default() -> Self {
        Self::new()
    }
}

impl PciFunction for IgbVf {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }
}

impl IgbVf {
    /// A VF at power-on: the PF is still in reset (RSTI) until [`IgbVf::pf_reset_done`].
    pub fn new() -> Self {
        // The interrupt page and the queue pages in one block, as BAR0 lays them out (the
        // poll loop's idle look reads both with one access).
        let pages = SharedWords::owned(IRQ_WORDS + QUEUE_WORDS);
        IgbVf {
            config: ConfigSpace::new(&config_layout()),
            link_up: false,
            mbx: [0; r::VMBMEM_WORDS],
            v2p: r::V2P_RSTI,
            pf_msg_unread: false,
            pending_pf_msg: None,
            eicr: 0,
            eims: 0,
            psrtype: 0,
            pbacl: 0,
            irq: pages.sub(0, IRQ_WORDS),
            mapped: false,
            auto_masked: 0,
            queues: pages.sub(IRQ_WORDS, QUEUE_WORDS),
        }
    }

    /// A VF whose interrupt page lives in `irq` (4 KiB of words) and whose queue pages live in
    /// `queues` (8 KiB of words): e.g. memfd mappings offered to the client as sparse-mmap
    /// areas of BAR0 at [`IRQ_PAGE_OFFSET`] and [`QUEUE_PAGES_OFFSET`]. Such a VF does not
    /// re-arms coarsely (see [`IgbVf::poll_irq_page`]).
    pub fn with_pages(irq: SharedWords, queues: SharedWords) -> Self {
        let mut vf = IgbVf::new();
        irq.clear();
        queues.clear();
        vf.irq = irq;
        vf.queues = queues;
        vf.mapped = true;
        vf
    }

    fn iword(off: u32) -> usize {
        ((u64::from(off) - IRQ_PAGE_OFFSET) / 4) as usize
    }

    fn qword(off: u32) -> usize {
        ((u64::from(off) - QUEUE_PAGES_OFFSET) / 4) as usize
    }

    fn queue_regs(&self, base: u32, q: usize, ctl: u32) -> QueueRegs {
        let words = self.queues.words();
        let first = Self::qword(base + r::QUEUE_STRIDE * q as u32);
        let at = |reg: u32| {
            words
                .get(first + (reg / 4) as usize)
                .map_or(0, |w| w.load(std::sync::atomic::Ordering::Acquire))
        };
        // Masks are applied on read: a mapped page holds whatever the guest stored.
        QueueRegs {
            bal: at(Q_BAL) & !0xF,
            bah: at(Q_BAH),
            len: at(Q_LEN) & 0x000F_FF80,
            head: at(Q_HEAD) & 0xFFFF,
            tail: at(Q_TAIL) & 0xFFFF,
            ctl: at(ctl),
            dctl: at(Q_DCTL),
        }
    }

    /// TX queue `q`'s doorbell state: (TXDCTL.EN, TDH, TDT) — three loads, for the poll loop.
    pub fn tx_doorbell(&self, q: usize) -> (bool, u32, u32) {
        Self::tx_doorbell_in(&self.queues, q)
    }

    /// [`tx_doorbell`](Self::tx_doorbell) read straight from the queue pages (as returned by
    /// [`queue_pages`](Self::queue_pages), which keep their identity across resets), so that
    /// a poll loop can skip an idle queue without locking the model.
    #[inline]
    pub fn tx_doorbell_in(pages: &SharedWords, q: usize) -> (bool, u32, u32) {
        if q >= r::QUEUES {
            return (false, 0, 0);
        }
        let words = pages.words();
        let first = Self::qword(r::TDBAL0 + r::QUEUE_STRIDE * q as u32);
        let at = |reg: u32| {
            words
                .get(first + (reg / 4) as usize)
                .map_or(0, |w| w.load(std::sync::atomic::Ordering::Acquire))
        };
        (
            at(Q_DCTL) & r::XDCTL_ENABLE != 0,
            at(Q_HEAD) & 0xFFFF,
            at(Q_TAIL) & 0xFFFF,
        )
    }

    /// RX queue `q`'s registers (q < 2; others read as zero).
    pub fn rxq(&self, q: usize) -> QueueRegs {
        if q >= r::QUEUES {
            return QueueRegs::default();
        }
        self.queue_regs(r::RDBAL0, q, Q_SRRCTL)
    }

    /// RXDCTL.ENABLE of RX queue `q` (one load; [`rxq`](Self::rxq) reads them all).
    #[inline]
    pub fn rx_enabled(&self, q: usize) -> bool {
        q < r::QUEUES
            && self
                .queues
                .load(Self::qword(r::RDBAL0 + r::QUEUE_STRIDE * q as u32 + Q_DCTL))
                & r::XDCTL_ENABLE
                != 0
    }

    /// TX queue `q`'s registers.
    pub fn txq(&self, q: usize) -> QueueRegs {
        if q >= r::QUEUES {
            return QueueRegs::default();
        }
        self.queue_regs(r::TDBAL0, q, Q_TXCTL)
    }

    /// Device-owned head write-back (RDH).
    pub fn set_rx_head(&self, q: usize, head: u32) {
        if q < r::QUEUES {
            self.queues.store(
                Self::qword(r::RDBAL0 + r::QUEUE_STRIDE * q as u32 + Q_HEAD),
                head,
            );
        }
    }

    /// Device-owned head write-back (TDH).
    pub fn set_tx_head(&self, q: usize, head: u32) {
        if q < r::QUEUES {
            self.queues.store(
                Self::qword(r::TDBAL0 + r::QUEUE_STRIDE * q as u32 + Q_HEAD),
                head,
            );
        }
    }

    /// Where the poll loop reads, without the model's lock, whether TX queue 0 is idle and
    /// whether the guest stored an interrupt request on the interrupt page: the same words
    /// [`tx_doorbell_in`](Self::tx_doorbell_in) and
    /// [`irq_page_quiet_in`](Self::irq_page_quiet_in) read.
    /// Both pages are read through one window when they are views of one memory (BAR0's
    /// pages always are, and so are [`IgbVf::new`]'s); otherwise interrupt stores are only
    /// seen on the locked path.
    pub fn idle_probe(&self) -> IdleProbe {
        let q = |off: u32| Self::qword(r::TDBAL0 + off);
        let irq = [r::EIMC, r::EIMS, r::EICR, r::EICS].map(Self::iword);
        let tx = |p: IdleProbe, at: usize| {
            p.with_tx(
                (at + q(Q_DCTL), r::XDCTL_ENABLE),
                (at + q(Q_HEAD), at + q(Q_TAIL)),
                0xFFFF,
            )
        };
        match self.irq.span(&self.queues) {
            Some((words, at_irq, at_q)) => {
                tx(IdleProbe::over(words), at_q).with_irq(irq.map(|i| at_irq + i))
            }
            None => tx(IdleProbe::over(self.queues.clone()), 0).with_irq_elsewhere(),
        }
    }

    /// The shared words behind the queue pages.
    pub fn queue_pages(&self) -> &SharedWords {
        &self.queues
    }

    /// The shared words behind the interrupt page (they keep their identity across resets).
    pub fn irq_page(&self) -> &SharedWords {
        &self.irq
    }

    /// Whether the guest stored nothing to EIMC, EIMS, EICR or EICS on the interrupt page
    /// `page` (as returned by [`irq_page`](Self::irq_page)) since the last
    /// [`poll_irq_page`](Self::poll_irq_page): then polling it has nothing to do. Four loads,
    /// no lock, for the poll loop.
    #[inline]
    pub fn irq_page_quiet_in(page: &SharedWords) -> bool {
        let words = page.words();
        let quiet = |off| {
            words
                .get(Self::iword(off))
                .is_none_or(|w| w.load(std::sync::atomic::Ordering::Relaxed) == 0)
        };
        quiet(r::EIMC) && quiet(r::EIMS) && quiet(r::EICR) && quiet(r::EICS)
    }

    /// Link state as the PF reports it in STATUS.LU.
    pub fn set_link(&mut self, up: bool) {
        self.link_up = up;
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The PF driver is up: clear RSTI, present RSTD (devices.md §2.4 step 1).
    pub fn pf_reset_done(&mut self) -> Effects {
        self.v2p = (self.v2p & !r::V2P_RSTI) | r::V2P_RSTD;
        self.raise(IrqSource::Mailbox)
    }

    /// Function-level reset (vfio DEVICE_RESET): power-on state, but the PF stays up so RSTD
    /// is presented again. The caller also resets the PF's view of this VF.
    pub fn device_reset(&mut self) {
        let link = self.link_up;
        let (irq, queues, mapped) = (self.irq.clone(), self.queues.clone(), self.mapped);
        *self = IgbVf::with_pages(irq, queues);
        self.mapped = mapped;
        self.link_up = link;
        self.v2p = r::V2P_RSTD;
    }

    /// VF software reset (CTRL.RST): queues and interrupts off, mailbox reset presented.
    fn soft_reset(&mut self) -> Effects {
        self.queues.clear();
        self.irq.clear();
        self.eicr = 0;
        self.eims = 0;
        self.auto_masked = 0;
        self.pending_pf_msg = None;
        self.pf_msg_unread = false;
        self.v2p = r::V2P_RSTD;
        Effects {
            vf_reset: true,
            queues_changed: true,
            ..Effects::default()
        }
    }

    /// Vector assigned to `src` through IVAR, if valid.
    pub fn vector_of(&self, src: IrqSource) -> Option<u32> {
        let ivar0 = || self.irq.load(Self::iword(r::IVAR0));
        let byte = match src {
            IrqSource::Rx(q) if q < r::QUEUES => (ivar0() >> (16 * q)) as u8,
            IrqSource::Tx(q) if q < r::QUEUES => (ivar0() >> (16 * q + 8)) as u8,
            IrqSource::Mailbox => self.irq.load(Self::iword(r::IVAR_MISC)) as u8,
            _ => return None,
        };
        if byte & r::IVAR_VALID == 0 {
            return None;
        }
        let v = u32::from(byte & 0x1F);
        (v < u32::from(r::MSIX_VECTORS)).then_some(v)
    }

    /// Raises the cause of `src`: sets its EICR bit and fires it if unmasked.
    pub fn raise(&mut self, src: IrqSource) -> Effects {
        match self.vector_of(src) {
            Some(v) => self.raise_causes(1 << v),
            None => Effects::default(),
        }
    }

    /// 82576 MSI-X semantics: a set cause whose EIMS bit is set sends its vector; then EIAC
    /// clears the cause and EIAM clears the mask bit (auto-mask, unless the page is mapped).
    fn raise_causes(&mut self, causes: u32) -> Effects {
        self.eicr |= causes & r::EICR_VALID_MASK;
        self.deliver_pending()
    }

    fn deliver_pending(&mut self) -> Effects {
        let fire = self.eicr & self.eims;
        if fire != 0 {
            let latch = |off| self.irq.load(Self::iword(off)) & r::EICR_VALID_MASK;
            self.eicr &= !(fire & latch(r::EIAC));
            let masked = fire & latch(r::EIAM);
            self.eims &= !masked;
            self.auto_masked |= masked;
        }
        Effects {
            fire,
            ..Effects::default()
        }
    }

    /// Takes the event registers the guest wrote on the interrupt page since the last call
    /// (all of them when the page is mapped; a trapped write calls this at once) and returns
    /// the vectors that must fire now. The dataplane calls it every poll pass.
    ///
    /// A mapped page shows only the last value stored into each register since the previous
    /// poll, and not the order of the registers. Two consequences, both of which can only
    /// add interrupts (igbvf tolerates a spurious one: its handlers re-check the rings), never
    /// lose an unmask (which would stall a queue until the next reset):
    /// - Writes apply as EIMC, EIMS, EICR, EICS: when a mask and an unmask meet, the unmask
    ///   wins.
    /// - Any EIMS store re-arms every auto-masked vector, not just the bits it carries: the
    ///   TX handler's re-arm and NAPI's may land in one poll window, and the second store
    ///   overwrites the first.
    pub fn poll_irq_page(&mut self) -> Effects {
        // Four plain loads when nothing was written (every pass, every VF).
        if Self::irq_page_quiet_in(&self.irq) {
            return Effects::default();
        }
        let valid = r::EICR_VALID_MASK;
        let eimc = self.irq.take(Self::iword(r::EIMC)) & valid;
        self.eims &= !eimc;
        self.auto_masked &= !eimc;
        let eims = self.irq.take(Self::iword(r::EIMS)) & valid;
        if eims != 0 {
            let rearmed = if self.mapped { self.auto_masked } else { eims };
            self.eims |= eims | rearmed;
            self.auto_masked &= !rearmed;
        }
        self.eicr &= !self.irq.take(Self::iword(r::EICR));
        self.eicr |= self.irq.take(Self::iword(r::EICS)) & valid;
        self.deliver_pending()
    }

    /// EITR of vector `v` (interval b2–14, CNT_IGNR b31), for interrupt moderation.
    pub fn eitr(&self, v: usize) -> u32 {
        if v >= usize::from(r::MSIX_VECTORS) {
            return 0;
        }
        self.irq.load(Self::iword(r::EITR0) + v) & (r::EITR_INTERVAL_MASK | r::EITR_CNT_IGNR)
    }

    /// The minimum gap between two interrupts of vector `v` that its EITR asks for: the
    /// interval field counts microseconds on the 82576 (igbvf writes 488 for ~8000
    /// interrupts/s). Bounded to 10 ms.
    pub fn moderation_gap(&self, v: usize) -> std::time::Duration {
        let us = (self.eitr(v) & r::EITR_INTERVAL_MASK) >> 2;
        std::time::Duration::from_micros(u64::from(us.min(10_000)))
    }

    /// Posts the PF's reply to the VF's request: reply words into VMBMEM, PFACK|PFSTS, vector.
    pub fn pf_reply(&mut self, words: &[u32]) -> Effects {
        for (i, w) in self.mbx.iter_mut().enumerate() {
            *w = words.get(i).copied().unwrap_or(0);
        }
        self.v2p |= r::V2P_PFACK | r::V2P_PFSTS;
        self.pf_msg_unread = true;
        self.raise(IrqSource::Mailbox)
    }

    /// An unsolicited one-word PF message (PF_CONTROL_MSG|CTS on link changes). It waits while
    /// the VF holds the buffer or has not consumed the previous PF message.
    pub fn pf_post(&mut self, word0: u32) -> Effects {
        self.pending_pf_msg = Some(word0);
        self.try_post_pending()
    }

    fn try_post_pending(&mut self) -> Effects {
        if self.v2p & r::V2P_VFU != 0 || self.pf_msg_unread {
            return Effects::default();
        }
        match self.pending_pf_msg.take() {
            Some(w) => {
                self.mbx = [0; r::VMBMEM_WORDS];
                self.mbx[0] = w;
                self.v2p |= r::V2P_PFSTS;
                self.pf_msg_unread = true;
                self.raise(IrqSource::Mailbox)
            }
            None => Effects::default(),
        }
    }

    /// A 32-bit BAR0 read. `counters` feeds the statistics registers.
    pub fn bar0_read(&mut self, offset: u64, counters: &HwCounters) -> u32 {
        let Ok(off) = u32::try_from(offset) else {
            return 0;
        };
        if off >= r::VMBMEM && off < r::VMBMEM + 4 * r::VMBMEM_WORDS as u32 {
            return self.mbx[((off - r::VMBMEM) / 4) as usize];
        }
        if (QUEUE_PAGES_OFFSET..QUEUE_PAGES_OFFSET + QUEUE_PAGES_SIZE).contains(&u64::from(off)) {
            // Plain memory semantics (the same words the client may have mapped).
            return self.queues.load(Self::qword(off));
        }
        match off {
            r::CTRL => 0,
            r::STATUS if self.link_up => r::STATUS_LU | r::STATUS_FD | r::STATUS_SPEED_1000,
            r::STATUS => 0,
            r::V2PMAILBOX => {
                let v = self.v2p;
                self.v2p &= !r::V2P_R2C_BITS;
                v
            }
            r::PBACL => self.pbacl,
            r::PSRTYPE => self.psrtype,
            r::VFGPRC => counters.rx_packets as u32,
            r::VFGPTC => counters.tx_packets as u32,
            r::VFGORC => counters.rx_bytes as u32,
            r::VFGOTC => counters.tx_bytes as u32,
            r::VFMPRC => counters.rx_multicast as u32,
            r::VFGPRLBC => counters.rx_loopback_packets as u32,
            r::VFGPTLBC => counters.tx_loopback_packets as u32,
            r::VFGORLBC => counters.rx_loopback_bytes as u32,
            r::VFGOTLBC => counters.tx_loopback_bytes as u32,
            r::EICS => 0,
            r::EIMS => self.eims,
            r::EIAC | r::EIAM => self.irq.load(Self::iword(off)) & r::EICR_VALID_MASK,
            r::EICR => {
                let v = self.eicr;
                self.eicr = 0;
                v
            }
            o if (r::EITR0..r::EITR0 + 4 * u32::from(r::MSIX_VECTORS)).contains(&o) => {
                self.eitr(((o - r::EITR0) / 4) as usize)
            }
            r::IVAR0 => self.irq.load(Self::iword(off)),
            r::IVAR_MISC => self.irq.load(Self::iword(off)) & 0xFF,
            _ => 0,
        }
    }

    /// A 32-bit BAR0 write.
    pub fn bar0_write(&mut self, offset: u64, value: u32) -> Effects {
        let Ok(off) = u32::try_from(offset) else {
            return Effects::default();
        };
        if off >= r::VMBMEM && off < r::VMBMEM + 4 * r::VMBMEM_WORDS as u32 {
            self.mbx[((off - r::VMBMEM) / 4) as usize] = value;
            return Effects::default();
        }
        if (QUEUE_PAGES_OFFSET..QUEUE_PAGES_OFFSET + QUEUE_PAGES_SIZE).contains(&u64::from(off)) {
            self.queues.store(Self::qword(off), value);
            return Effects {
                queues_changed: true,
                ..Effects::default()
            };
        }
        match off {
            r::CTRL if value & r::CTRL_RST != 0 => self.soft_reset(),
            r::V2PMAILBOX => self.mailbox_write(value),
            r::PBACL => {
                self.pbacl = value;
                Effects::default()
            }
            r::PSRTYPE => {
                self.psrtype = value;
                Effects::default()
            }
            // Event registers: the same path as a store to the mapped page.
            r::EICS | r::EIMS | r::EIMC | r::EICR => {
                self.irq.or(Self::iword(off), value);
                self.poll_irq_page()
            }
            // Latches (masked where they are read).
            r::EIAC | r::EIAM | r::IVAR0 | r::IVAR_MISC => {
                self.irq.store(Self::iword(off), value);
                Effects::default()
            }
            o if (r::EITR0..r::EITR0 + 4 * u32::from(r::MSIX_VECTORS)).contains(&o) => {
                self.irq.store(Self::iword(off), value);
                Effects::default()
            }
            _ => Effects::default(),
        }
    }

    fn mailbox_write(&mut self, value: u32) -> Effects {
        let mut fx = Effects::default();
        if value & r::V2P_VFU != 0 && self.v2p & r::V2P_PFU == 0 {
            self.v2p |= r::V2P_VFU;
        }
        if value & r::V2P_ACK != 0 {
            // The VF consumed the PF's message; the buffer is free for the next one.
            self.v2p &= !r::V2P_VFU;
            self.pf_msg_unread = false;
        }
        if value & r::V2P_REQ != 0 {
            self.v2p &= !r::V2P_VFU;
            fx.mailbox = Some(self.mbx);
        }
        if value & (r::V2P_VFU | r::V2P_ACK | r::V2P_REQ) == 0 {
            // Writing 0 releases the lock (e1000_release_mbx_lock_vf).
            self.v2p &= !r::V2P_VFU;
        }
        if fx.mailbox.is_none() {
            fx.merge(self.try_post_pending());
        }
        fx
    }

    /// Called after the PF handled a request (and posted its reply): a held unsolicited
    /// message may go now if the buffer is free.
    pub fn mailbox_idle(&mut self) -> Effects {
        self.try_post_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up_vf() -> IgbVf {
        let mut vf = IgbVf::new();
        vf.set_link(true);
        let _ = vf.pf_reset_done();
        vf
    }

    fn rd(vf: &mut IgbVf, off: u32) -> u32 {
        vf.bar0_read(u64::from(off), &HwCounters::default())
    }

    #[test]
    fn power_on_presents_rsti_then_rstd_and_r2c_clears() {
        let mut vf = IgbVf::new();
        assert_eq!(rd(&mut vf, r::V2PMAILBOX) & r::V2P_RSTI, r::V2P_RSTI);
        assert_eq!(
            rd(&mut vf, r::V2PMAILBOX) & r::V2P_RSTI,
            r::V2P_RSTI,
            "RSTI is not R2C"
        );
        let _ = vf.pf_reset_done();
        assert_eq!(rd(&mut vf, r::V2PMAILBOX), r::V2P_RSTD);
        assert_eq!(rd(&mut vf, r::V2PMAILBOX), 0, "RSTD is read-to-clear");
    }

    #[test]
    fn mailbox_request_and_reply() {
        let mut vf = up_vf();
        let _ = vf.bar0_write(u64::from(r::IVAR_MISC), 0x82);
        let _ = vf.bar0_write(u64::from(r::EIMS), 0x7);
        let _ = vf.bar0_write(u64::from(r::V2PMAILBOX), r::V2P_VFU);
        assert_ne!(rd(&mut vf, r::V2PMAILBOX) & r::V2P_VFU, 0, "lock granted");
        let _ = vf.bar0_write(u64::from(r::VMBMEM), r::MSG_VF_RESET);
        let fx = vf.bar0_write(u64::from(r::V2PMAILBOX), r::V2P_REQ);
        let msg = fx.mailbox.expect("request surfaced");
        assert_eq!(msg[0], r::MSG_VF_RESET);
        assert_eq!(rd(&mut vf, r::V2PMAILBOX) & r::V2P_VFU, 0, "REQ drops VFU");
        let fx = vf.pf_reply(&[r::MSG_VF_RESET | r::MSG_ACK, 0x0100_0002, 0x0302]);
        assert_eq!(fx.fire, 1 << 2, "mailbox vector fired");
        let v = rd(&mut vf, r::V2PMAILBOX);
        assert_eq!(
            v & (r::V2P_PFACK | r::V2P_PFSTS),
            r::V2P_PFACK | r::V2P_PFSTS
        );
        assert_eq!(rd(&mut vf, r::V2PMAILBOX) & r::V2P_R2C_BITS, 0);
        assert_eq!(rd(&mut vf, r::VMBMEM), r::MSG_VF_RESET | r::MSG_ACK);
    }

    #[test]
    fn unsolicited_message_waits_for_ack() {
        let mut vf = up_vf();
        let _ = vf.pf_reply(&[r::MSG_VF_RESET | r::MSG_ACK]);
        let fx = vf.pf_post(r::MSG_PF_CONTROL | r::MSG_CTS);
        assert_eq!(fx.fire, 0);
        assert_eq!(
            rd(&mut vf, r::VMBMEM),
            r::MSG_VF_RESET | r::MSG_ACK,
            "reply intact"
        );
        let _ = vf.bar0_write(u64::from(r::V2PMAILBOX), r::V2P_VFU);
        let _ = vf.bar0_write(u64::from(r::V2PMAILBOX), r::V2P_ACK);
        assert_eq!(rd(&mut vf, r::VMBMEM), r::MSG_PF_CONTROL | r::MSG_CTS);
    }

    #[test]
    fn msix_auto_clear_auto_mask_and_eics() {
        let mut vf = up_vf();
        let _ = vf.bar0_write(u64::from(r::IVAR0), 0x8081); // RX q0 → 1, TX q0 → 0
        let _ = vf.bar0_write(u64::from(r::EIAC), 7);
        let _ = vf.bar0_write(u64::from(r::EIAM), 7);
        let _ = vf.bar0_write(u64::from(r::EIMS), 7);
        assert_eq!(vf.raise(IrqSource::Rx(0)).fire, 0b10);
        assert_eq!(rd(&mut vf, r::EIMS), 0b101, "auto-masked");
        assert_eq!(vf.raise(IrqSource::Rx(0)).fire, 0, "masked: pending");
        let fx = vf.bar0_write(u64::from(r::EIMS), 0b10);
        assert_eq!(fx.fire, 0b10, "unmask delivers the pending cause");
        let _ = vf.bar0_write(u64::from(r::EIMS), 0b10);
        assert_eq!(
            vf.bar0_write(u64::from(r::EICS), 0b10).fire,
            0b10,
            "EICS fires"
        );
        assert_eq!(
            vf.bar0_write(u64::from(r::EICS), 0xFFFF_FFF8).fire,
            0,
            "invalid bits"
        );
    }

    /// A guest store to the mapped interrupt page (no trap).
    fn store(vf: &IgbVf, off: u32, v: u32) {
        vf.irq_page().store(IgbVf::iword(off), v);
    }

    /// A VF whose interrupt page the guest maps, with MSI-X configured through the page.
    fn msix_vf() -> IgbVf {
        let mut vf = IgbVf::with_pages(
            SharedWords::owned(IRQ_WORDS),
            SharedWords::owned(QUEUE_WORDS),
        );
        vf.set_link(true);
        let _ = vf.pf_reset_done();
        // As igbvf_configure_msix + igbvf_irq_enable, through the mapped page.
        store(&vf, r::IVAR0, 0x8081); // RX q0 -> 1, TX q0 -> 0
        store(&vf, r::IVAR_MISC, 0x82);
        store(&vf, r::EIAC, 7);
        store(&vf, r::EIAM, 7);
        store(&vf, r::EIMS, 7);
        assert_eq!(vf.poll_irq_page().fire, 0, "nothing pending yet");
        vf
    }

    #[test]
    fn mapped_eims_unmask_delivers_the_pending_cause() {
        let mut vf = msix_vf();
        store(&vf, r::EIMC, 0b10);
        let _ = vf.poll_irq_page();
        assert_eq!(vf.raise(IrqSource::Rx(0)).fire, 0, "masked: pending");
        assert_eq!(vf.poll_irq_page().fire, 0, "no unmask stored yet");
        store(&vf, r::EIMS, 0b10);
        assert_eq!(
            vf.poll_irq_page().fire,
            0b10,
            "the unmask fires the pending cause"
        );
        assert_eq!(vf.irq_page().load(IgbVf::iword(r::EIMS)), 0, "event taken");
        assert_eq!(vf.poll_irq_page().fire, 0, "taken once");
    }

    #[test]
    fn mapped_eims_store_rearms_every_auto_masked_vector() {
        let mut vf = msix_vf();
        assert_eq!(vf.raise(IrqSource::Tx(0)).fire, 0b01);
        assert_eq!(vf.raise(IrqSource::Rx(0)).fire, 0b10);
        assert_eq!(vf.raise(IrqSource::Tx(0)).fire, 0, "auto-masked");
        assert_eq!(vf.raise(IrqSource::Rx(0)).fire, 0, "auto-masked");
        // The TX handler's re-arm, then NAPI's, before the dataplane looks: only the second
        // store is left, yet both vectors come back (with their pending causes).
        store(&vf, r::EIMS, 0b01);
        store(&vf, r::EIMS, 0b10);
        assert_eq!(vf.poll_irq_page().fire, 0b11, "and auto-masked again");
        // An explicit mask is not undone by a later re-arm of another vector.
        store(&vf, r::EIMC, 0b01);
        let _ = vf.poll_irq_page();
        store(&vf, r::EIMS, 0b10);
        let _ = vf.poll_irq_page();
        assert_eq!(rd(&mut vf, r::EIMS), 0b110);
    }

    #[test]
    fn trapped_eims_rearms_only_its_bits() {
        let mut vf = up_vf();
        let _ = vf.bar0_write(u64::from(r::IVAR0), 0x8081);
        let _ = vf.bar0_write(u64::from(r::EIAC), 7);
        let _ = vf.bar0_write(u64::from(r::EIAM), 7);
        let _ = vf.bar0_write(u64::from(r::EIMS), 7);
        assert_eq!(vf.raise(IrqSource::Tx(0)).fire, 0b01);
        assert_eq!(vf.raise(IrqSource::Rx(0)).fire, 0b10);
        let _ = vf.bar0_write(u64::from(r::EIMS), 0b10);
        assert_eq!(rd(&mut vf, r::EIMS), 0b110, "TX stays auto-masked");
    }

    #[test]
    fn mapped_eics_raises_and_eimc_masks() {
        let mut vf = msix_vf();
        store(&vf, r::EICS, 0b10); // the watchdog's kick
        assert_eq!(vf.poll_irq_page().fire, 0b10);
        store(&vf, r::EIMC, !0); // igbvf_irq_disable
        let _ = vf.poll_irq_page();
        assert_eq!(rd(&mut vf, r::EIMS), 0);
        assert_eq!(vf.raise(IrqSource::Tx(0)).fire, 0, "masked");
    }

    #[test]
    fn mapped_unmask_wins_over_a_mask_seen_in_the_same_poll() {
        let mut vf = msix_vf();
        let _ = vf.raise(IrqSource::Tx(0));
        store(&vf, r::EIMC, !0);
        store(&vf, r::EIMS, 7);
        let _ = vf.poll_irq_page();
        assert_eq!(rd(&mut vf, r::EIMS), 7);
    }

    #[test]
    fn mapped_latches_are_read_from_the_page() {
        let mut vf = msix_vf();
        store(&vf, r::EITR0 + 4, 488 | 0x3);
        assert_eq!(vf.eitr(1), 488);
        assert_eq!(vf.moderation_gap(1), std::time::Duration::from_micros(122));
        assert_eq!(vf.eitr(3), 0, "no such vector");
        assert_eq!(vf.vector_of(IrqSource::Mailbox), Some(2));
        store(&vf, r::IVAR_MISC, 0x1FF);
        assert_eq!(rd(&mut vf, r::IVAR_MISC), 0xFF, "masked on read");
        assert_eq!(
            vf.vector_of(IrqSource::Mailbox),
            None,
            "vector out of range"
        );
    }

    #[test]
    fn trapped_and_mapped_interrupt_writes_agree() {
        let mut vf = up_vf();
        let _ = vf.bar0_write(u64::from(r::IVAR0), 0x8081);
        let _ = vf.bar0_write(u64::from(r::EIAM), 7);
        let _ = vf.bar0_write(u64::from(r::EITR0), 488);
        assert_eq!(
            vf.irq_page().load(IgbVf::iword(r::EITR0)),
            488,
            "latched in the page"
        );
        let _ = vf.bar0_write(u64::from(r::EIMS), 1);
        assert_eq!(vf.raise(IrqSource::Tx(0)).fire, 1);
        assert_eq!(vf.raise(IrqSource::Tx(0)).fire, 0);
        assert_eq!(
            vf.bar0_write(u64::from(r::EIMS), 1).fire,
            1,
            "trapped re-arm fires"
        );
        assert_eq!(
            vf.irq_page().load(IgbVf::iword(r::EIMS)),
            0,
            "nothing left behind"
        );
    }

    #[test]
    fn resets_clear_the_interrupt_page() {
        let mut vf = msix_vf();
        store(&vf, r::EITR0, 488);
        let _ = vf.bar0_write(u64::from(r::CTRL), r::CTRL_RST);
        assert_eq!(vf.eitr(0), 0);
        assert_eq!(vf.vector_of(IrqSource::Rx(0)), None);
        store(&vf, r::IVAR0, 0x8081);
        vf.device_reset();
        assert_eq!(vf.vector_of(IrqSource::Rx(0)), None);
        assert_eq!(rd(&mut vf, r::IVAR0), 0);
    }

    #[test]
    fn ctrl_rst_resets_queues_and_presents_rstd() {
        let mut vf = up_vf();
        let _ = rd(&mut vf, r::V2PMAILBOX);
        let _ = vf.bar0_write(u64::from(r::RXDCTL0), r::XDCTL_ENABLE);
        let _ = vf.bar0_write(u64::from(r::TDLEN0), 4096);
        assert!(vf.rxq(0).enabled());
        let fx = vf.bar0_write(u64::from(r::CTRL), r::CTRL_RST);
        assert!(fx.vf_reset);
        assert!(!vf.rxq(0).enabled());
        assert_eq!(vf.txq(0).len, 0);
        assert_eq!(rd(&mut vf, r::V2PMAILBOX) & r::V2P_RSTD, r::V2P_RSTD);
    }

    #[test]
    fn status_reports_link() {
        let mut vf = IgbVf::new();
        assert_eq!(rd(&mut vf, r::STATUS) & r::STATUS_LU, 0);
        vf.set_link(true);
        assert_eq!(rd(&mut vf, r::STATUS) & r::STATUS_LU, r::STATUS_LU);
    }

    #[test]
    fn hostile_register_accesses_never_panic() {
        let mut vf = up_vf();
        let c = HwCounters::default();
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let off = if seed & 1 == 0 {
                seed >> 40
            } else {
                (seed >> 20) & 0x3FFC
            };
            let val = (seed >> 3) as u32;
            if seed & 2 == 0 {
                let _ = vf.bar0_read(off, &c);
            } else {
                let _ = vf.bar0_write(off, val);
            }
            let _ = vf.vector_of(IrqSource::Rx((seed >> 50) as usize));
        }
        let _ = vf.bar0_read(u64::MAX, &c);
        let _ = vf.bar0_write(u64::MAX, 1);
    }
}
