//! A userspace igbvf driver.
//!
//! It does what Linux `igbvf` does, minus the kernel: VF reset and the mailbox handshake with
//! the PF (VF_RESET → MAC), one TX and one RX ring of advanced descriptors in DMA memory it
//! owns, doorbells written to the mapped queue pages (no trap), completions found by polling
//! DD. The benchmark uses it as a synthetic guest; tests use it to count traps per packet.
//!
//! Register access and memory are passed in ([`Bar0`], [`GuestMemory`], [`SharedWords`]):
//! the same driver runs in-process against the device model or over a vfio-user socket.
#![forbid(unsafe_code)]

use emu_nic_defs::igb_desc::{rx, tx};
use emu_nic_defs::igbvf as r;
use emu_nic_model::mem::GuestMemory;
use emu_nic_model::shared::SharedWords;
use std::time::{Duration, Instant};

pub mod client;

/// Trapped BAR0 register access (pages 0x0000 and 0x1000; and the queue pages when they are
/// not mapped).
pub trait Bar0 {
    fn read32(&mut self, offset: u32) -> u32;
    fn write32(&mut self, offset: u32, value: u32);
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the PF did not finish the VF reset within {0:?} (no RSTD)")]
    ResetTimeout(Duration),
    #[error("mailbox: no {what} from the PF within {timeout:?}")]
    MailboxTimeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("the PF refused VF_RESET (NACK): no MAC address")]
    ResetNacked,
    #[error("ring size {0} must be a power of two between 8 and 4096")]
    RingSize(u32),
    #[error("DMA memory access failed: {0}")]
    Memory(#[from] emu_nic_model::mem::MemError),
}

/// Where the driver's rings and buffers live in its DMA memory.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub base: u64,
    pub ring_size: u32,
}

/// Bytes per packet buffer (one-buffer descriptors, BSIZEPKT 2 KiB).
pub const BUF_SIZE: u64 = 2048;

impl Layout {
    /// DMA memory the driver needs for `ring_size` descriptors per ring.
    pub fn bytes(ring_size: u32) -> u64 {
        let n = u64::from(ring_size);
        2 * n * 16 + 2 * n * BUF_SIZE
    }
    fn tx_ring(&self) -> u64 {
        self.base
    }
    fn rx_ring(&self) -> u64 {
        self.base + u64::from(self.ring_size) * 16
    }
    /// IOVA of TX buffer `i`.
    pub fn tx_buf(&self, i: u32) -> u64 {
        self.base + u64::from(self.ring_size) * 32 + u64::from(i) * BUF_SIZE
    }
    fn rx_buf(&self, i: u32) -> u64 {
        self.base + u64::from(self.ring_size) * (32 + BUF_SIZE) + u64::from(i) * BUF_SIZE
    }
}

/// A driven igbvf VF.
pub struct IgbvfDriver<B: Bar0> {
    bar: B,
    queues: Option<SharedWords>,
    layout: Layout,
    mac: [u8; 6],
    tx_tail: u32,
    tx_clean: u32,
    tx_pending: u32,
    rx_next: u32,
    rx_refill: u32,
    /// RS (report status) on every n-th descriptor only; reclaim checks those.
    rs_every: u32,
    /// Re-posted RX descriptors, written in one go per poll.
    repost: Vec<u8>,
    timeout: Duration,
}

const QPAGES: u32 = 0x2000;

impl<B: Bar0> IgbvfDriver<B> {
    /// `queues` are the mapped queue pages (BAR0 0x2000–0x3FFF) if the device offers them;
    /// without them doorbells go through `bar` (and trap).
    pub fn new(bar: B, queues: Option<SharedWords>, layout: Layout) -> Result<Self, DriverError> {
        let n = layout.ring_size;
        if !(8..=4096).contains(&n) || !n.is_power_of_two() {
            return Err(DriverError::RingSize(n));
        }
        Ok(IgbvfDriver {
            bar,
            queues,
            layout,
            mac: [0; 6],
            tx_tail: 0,
            tx_clean: 0,
            tx_pending: 0,
            rx_next: 0,
            rx_refill: 0,
            rs_every: 1,
            repost: Vec::with_capacity(n as usize * 16),
            timeout: Duration::from_secs(2),
        })
    }

    /// Ask for completion status on every `n`-th descriptor only (a power of two dividing
    /// the ring size), as DPDK's `tx_rs_thresh` does; reclaim then frees `n` at a time.
    /// The default 1 reports every packet, as Linux igbvf does.
    pub fn set_rs_interval(&mut self, n: u32) {
        if n.is_power_of_two() && n <= self.layout.ring_size / 2 {
            self.rs_every = n;
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn bar(&mut self) -> &mut B {
        &mut self.bar
    }

    fn qwrite(&mut self, off: u32, v: u32) {
        match &self.queues {
            Some(q) => q.store(((off - QPAGES) / 4) as usize, v),
            None => self.bar.write32(off, v),
        }
    }

    fn wait<F: FnMut(&mut Self) -> bool>(&mut self, mut f: F) -> bool {
        let end = Instant::now() + self.timeout;
        loop {
            if f(self) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::yield_now();
        }
    }

    fn mbx_send(&mut self, words: &[u32]) -> Result<[u32; r::VMBMEM_WORDS], DriverError> {
        let t = self.timeout;
        if !self.wait(|d| {
            d.bar.write32(r::V2PMAILBOX, r::V2P_VFU);
            d.bar.read32(r::V2PMAILBOX) & r::V2P_VFU != 0
        }) {
            return Err(DriverError::MailboxTimeout {
                what: "lock",
                timeout: t,
            });
        }
        for (i, w) in words.iter().enumerate().take(r::VMBMEM_WORDS) {
            self.bar.write32(r::VMBMEM + 4 * i as u32, *w);
        }
        self.bar.write32(r::V2PMAILBOX, r::V2P_REQ);
        let mut seen = 0;
        if !self.wait(|d| {
            seen |= d.bar.read32(r::V2PMAILBOX);
            seen & r::V2P_PFACK != 0
        }) {
            return Err(DriverError::MailboxTimeout {
                what: "ACK",
                timeout: t,
            });
        }
        if !self.wait(|d| {
            seen |= d.bar.read32(r::V2PMAILBOX);
            seen & r::V2P_PFSTS != 0
        }) {
            return Err(DriverError::MailboxTimeout {
                what: "reply",
                timeout: t,
            });
        }
        let mut reply = [0u32; r::VMBMEM_WORDS];
        for (i, w) in reply.iter_mut().enumerate() {
            *w = self.bar.read32(r::VMBMEM + 4 * i as u32);
        }
        self.bar.write32(r::V2PMAILBOX, r::V2P_ACK);
        Ok(reply)
    }

    /// Reset, mailbox handshake (the PF's MAC), rings configured and RX fully posted.
    pub fn init(&mut self, mem: &impl GuestMemory) -> Result<[u8; 6], DriverError> {
        let t = self.timeout;
        self.bar.write32(r::CTRL, r::CTRL_RST);
        if !self.wait(|d| d.bar.read32(r::V2PMAILBOX) & (r::V2P_RSTD | r::V2P_RSTI) != 0) {
            return Err(DriverError::ResetTimeout(t));
        }
        let reply = self.mbx_send(&[r::MSG_VF_RESET])?;
        if reply[0] & r::MSG_NACK != 0 {
            return Err(DriverError::ResetNacked);
        }
        let a = reply[1].to_le_bytes();
        let b = reply[2].to_le_bytes();
        self.mac = [a[0], a[1], a[2], a[3], b[0], b[1]];

        let n = self.layout.ring_size;
        let len = n * 16;
        let (tx, rx) = (self.layout.tx_ring(), self.layout.rx_ring());
        // TX ring.
        self.qwrite(r::TXDCTL0, 0);
        self.qwrite(r::TDBAL0, tx as u32);
        self.qwrite(r::TDBAH0, (tx >> 32) as u32);
        self.qwrite(r::TDLEN0, len);
        self.qwrite(r::TDH0, 0);
        self.qwrite(r::TDT0, 0);
        for i in 0..n {
            mem.write(tx + u64::from(i) * 16, &[0; 16])?;
        }
        self.qwrite(r::TXDCTL0, r::XDCTL_ENABLE);
        // RX ring: one 2 KiB buffer per descriptor.
        self.qwrite(r::RXDCTL0, 0);
        self.qwrite(r::RDBAL0, rx as u32);
        self.qwrite(r::RDBAH0, (rx >> 32) as u32);
        self.qwrite(r::RDLEN0, len);
        self.qwrite(r::SRRCTL0, 2 | rx::SRRCTL_DESCTYPE_ADV_ONEBUF);
        self.qwrite(r::RDH0, 0);
        for i in 0..n {
            self.post_rx(mem, i)?;
        }
        self.qwrite(r::RXDCTL0, r::XDCTL_ENABLE);
        self.qwrite(r::RDT0, n - 1);
        self.rx_refill = n - 1;
        Ok(self.mac)
    }

    fn post_rx(&self, mem: &impl GuestMemory, i: u32) -> Result<(), DriverError> {
        let at = self.layout.rx_ring() + u64::from(i) * 16;
        let mut desc = [0u8; 16];
        desc[..8].copy_from_slice(&self.layout.rx_buf(i).to_le_bytes());
        mem.write(at, &desc)?;
        Ok(())
    }

    /// TX descriptor `i` for its own buffer holding a `len`-byte frame: one data descriptor
    /// with EOP, RS only where `reclaim` looks for DD (the last descriptor of each block).
    fn tx_desc(&self, i: u32, len: u32) -> [u8; 16] {
        let mut cmd = len | tx::DTYP_DATA | tx::DCMD_EOP | tx::DCMD_IFCS | tx::DCMD_DEXT;
        if i & (self.rs_every - 1) == self.rs_every - 1 {
            cmd |= tx::DCMD_RS;
        }
        let mut desc = [0u8; 16];
        desc[..8].copy_from_slice(&self.layout.tx_buf(i).to_le_bytes());
        desc[8..12].copy_from_slice(&cmd.to_le_bytes());
        desc[12..].copy_from_slice(&(len << tx::PAYLEN_SHIFT).to_le_bytes());
        desc
    }

    /// Where the rings and buffers are.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Queues `descs` verbatim at the TX tail, as a hostile or buggy guest would write them
    /// (context descriptors, offload requests, bad addresses); false when the ring has no
    /// room. They are never reclaimed: use a fresh attachment afterwards.
    pub fn queue_tx_raw(
        &mut self,
        mem: &impl GuestMemory,
        descs: &[[u8; 16]],
    ) -> Result<bool, DriverError> {
        if descs.len() as u32 > self.tx_free() {
            return Ok(false);
        }
        for d in descs {
            let at = self.layout.tx_ring() + u64::from(self.tx_tail) * 16;
            mem.write(at, d)?;
            self.tx_tail = (self.tx_tail + 1) & (self.layout.ring_size - 1);
            self.tx_pending += 1;
        }
        Ok(true)
    }

    /// Descriptors free for sending.
    pub fn tx_free(&self) -> u32 {
        let n = self.layout.ring_size;
        n - 1 - (self.tx_tail.wrapping_sub(self.tx_clean) & (n - 1))
    }

    /// Queues one frame (≤ 2 KiB); false when the ring is full. Call [`flush`](Self::flush)
    /// to ring the doorbell for everything queued.
    pub fn queue_tx(&mut self, mem: &impl GuestMemory, frame: &[u8]) -> Result<bool, DriverError> {
        self.queue_tx_with(mem, frame.len(), Some(frame))
    }

    /// Like [`queue_tx`](Self::queue_tx), but when `frame` is `None` the buffer is sent as it
    /// already is (benchmarks write each buffer once with [`fill_tx_buffers`](Self::fill_tx_buffers)).
    pub fn queue_tx_with(
        &mut self,
        mem: &impl GuestMemory,
        len: usize,
        frame: Option<&[u8]>,
    ) -> Result<bool, DriverError> {
        if self.tx_free() == 0 || len == 0 || len as u64 > BUF_SIZE {
            return Ok(false);
        }
        let i = self.tx_tail;
        let buf = self.layout.tx_buf(i);
        if let Some(f) = frame {
            mem.write(buf, &f[..len.min(f.len())])?;
        }
        let at = self.layout.tx_ring() + u64::from(i) * 16;
        mem.write(at, &self.tx_desc(i, len as u32))?;
        self.tx_tail = (i + 1) & (self.layout.ring_size - 1);
        self.tx_pending += 1;
        Ok(true)
    }

    /// Queues up to `max` frames of `len` bytes from the TX buffers as they are (see
    /// [`fill_tx_buffers`](Self::fill_tx_buffers)), as many as the ring has room for, writing
    /// the descriptors in blocks (as DPDK's burst transmit does) instead of one by one.
    /// Returns how many were queued; [`flush`](Self::flush) rings the doorbell.
    pub fn queue_tx_burst(
        &mut self,
        mem: &impl GuestMemory,
        len: usize,
        max: u32,
    ) -> Result<u32, DriverError> {
        if len == 0 || len as u64 > BUF_SIZE {
            return Ok(0);
        }
        const BLOCK: u32 = 64;
        let mask = self.layout.ring_size - 1;
        let mut left = self.tx_free().min(max);
        let mut queued = 0;
        let mut raw = [0u8; 16 * BLOCK as usize];
        while left > 0 {
            let first = self.tx_tail;
            // Contiguous descriptors only: stop at the ring's end.
            let n = left.min(BLOCK).min(self.layout.ring_size - first);
            for (k, desc) in raw.chunks_exact_mut(16).take(n as usize).enumerate() {
                desc.copy_from_slice(&self.tx_desc(first + k as u32, len as u32));
            }
            let at = self.layout.tx_ring() + u64::from(first) * 16;
            mem.write(at, &raw[..16 * n as usize])?;
            self.tx_tail = (first + n) & mask;
            self.tx_pending += n;
            queued += n;
            left -= n;
        }
        Ok(queued)
    }

    /// A one-line view of the driver's and the device's ring indexes, for diagnostics.
    pub fn ring_state(&self, mem: &impl GuestMemory) -> String {
        let w = |off: u32| {
            self.queues
                .as_ref()
                .map_or(0, |q| q.load(((off - QPAGES) / 4) as usize))
        };
        let dd = |ring: u64, i: u32, at: u64| {
            mem.read_u32(ring + u64::from(i) * 16 + at)
                .unwrap_or(0xFFFF_FFFF)
                & 1
        };
        let n = self.layout.ring_size;
        let rx_dd: String = (0..4)
            .map(|k| {
                let i = (self.rx_next + k) & (n - 1);
                char::from(b'0' + dd(self.layout.rx_ring(), i, 8) as u8)
            })
            .collect();
        let dd_all: Vec<u32> = (0..n)
            .filter(|&i| dd(self.layout.rx_ring(), i, 8) == 1)
            .collect();
        let dd_summary = match (dd_all.first(), dd_all.last()) {
            (Some(a), Some(b)) => format!("{} DD set, first {a} last {b}", dd_all.len()),
            _ => "no DD set".into(),
        };
        let mut lo = [0u8; 8];
        let _ = mem.read(
            self.layout.rx_ring() + u64::from(self.rx_next) * 16,
            &mut lo,
        );
        let mut txd = [0u8; 16];
        let _ = mem.read(
            self.layout.tx_ring() + u64::from(w(r::TDH0) & (n - 1)) * 16,
            &mut txd,
        );
        format!(
            "tx desc@TDH {txd:02x?} tail {} clean {} TDH {} TDT {} | rx next {} refill {} RDH {} RDT {} DD@next {rx_dd}; rx ring: {dd_summary}; addr@next {lo:02x?}",
            self.tx_tail,
            self.tx_clean,
            w(r::TDH0),
            w(r::TDT0),
            self.rx_next,
            self.rx_refill,
            w(r::RDH0),
            w(r::RDT0)
        )
    }

    /// Writes `frame` into every TX buffer once (for benchmarks that send the same frame).
    pub fn fill_tx_buffers(&self, mem: &impl GuestMemory, frame: &[u8]) -> Result<(), DriverError> {
        let f = &frame[..frame.len().min(BUF_SIZE as usize)];
        for i in 0..self.layout.ring_size {
            mem.write(self.layout.tx_buf(i), f)?;
        }
        Ok(())
    }

    /// Writes TDT for everything queued (one doorbell per batch).
    pub fn flush(&mut self) {
        if self.tx_pending > 0 {
            self.tx_pending = 0;
            self.qwrite(r::TDT0, self.tx_tail);
        }
    }

    /// Reclaims sent descriptors (DD set on their block's RS descriptor); returns how many.
    pub fn reclaim(&mut self, mem: &impl GuestMemory) -> Result<u32, DriverError> {
        let mask = self.layout.ring_size - 1;
        let mut n = 0;
        while self.tx_clean != self.tx_tail {
            let last = self.tx_clean | (self.rs_every - 1);
            let queued = self.tx_tail.wrapping_sub(self.tx_clean) & mask;
            if (last - self.tx_clean) >= queued {
                break; // the block's RS descriptor is not queued yet
            }
            let at = self.layout.tx_ring() + u64::from(last) * 16;
            if mem.read_u32(at + 12)? & tx::STAT_DD == 0 {
                break;
            }
            n += last - self.tx_clean + 1;
            self.tx_clean = (last + 1) & mask;
        }
        Ok(n)
    }

    /// `buf` receives each frame (up to its length) before `f` sees it; pass an empty `buf`
    /// to only count frames.
    pub fn poll_rx(
        &mut self,
        mem: &impl GuestMemory,
        buf: &mut [u8],
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<u32, DriverError> {
        let mask = self.layout.ring_size - 1;
        let first = self.rx_next;
        let mut n = 0;
        // Descriptors are read in blocks of up to BLOCK (the device completes them in
        // blocks too), up to the ring's end and one short of a full ring.
        const BLOCK: u32 = 64;
        let mut raw = [0u8; 16 * BLOCK as usize];
        'blocks: loop {
            let start = self.rx_next;
            let want = BLOCK
                .min(self.layout.ring_size - start)
                .min(self.layout.ring_size - 1 - n);
            let block = &mut raw[..16 * want as usize];
            // Word by word: each DD qword is one load, never torn by a memcpy.
            mem.read_ordered(self.layout.rx_ring() + u64::from(start) * 16, block)?;
            for desc in block.chunks_exact(16) {
                let mut hi = [0u8; 8];
                hi.copy_from_slice(&desc[8..]);
                let wb = u64::from_le_bytes(hi);
                if (wb as u32) & rx::STAT_DD == 0 {
                    break 'blocks;
                }
                // Everything the device wrote before DD is visible after it.
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                let i = self.rx_next;
                let len = ((wb >> 32) as u16) as usize;
                let len = len.min(buf.len()).min(BUF_SIZE as usize);
                if len > 0 {
                    mem.read(self.layout.rx_buf(i), &mut buf[..len])?;
                }
                f(&buf[..len]);
                self.rx_next = (i + 1) & mask;
                n += 1;
            }
            if n >= self.layout.ring_size - 1 || self.rx_next == 0 || want < BLOCK {
                break;
            }
        }
        if n > 0 {
            // Re-post the consumed descriptors in one write (they are contiguous: the loop
            // stops at the ring's end).
            self.repost.clear();
            for i in first..first + n {
                self.repost
                    .extend_from_slice(&self.layout.rx_buf(i).to_le_bytes());
                self.repost.extend_from_slice(&[0; 8]);
            }
            mem.write(self.layout.rx_ring() + u64::from(first) * 16, &self.repost)?;
            self.rx_refill = (first + n - 1) & mask;
            self.qwrite(r::RDT0, self.rx_refill);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emu_nic_model::igbvf::rings::{rx_write, RingRegs, RxLayout, RxMeta};
    use emu_nic_model::mem::VecMemory;

    struct NoBar;
    impl Bar0 for NoBar {
        fn read32(&mut self, _: u32) -> u32 {
            0
        }
        fn write32(&mut self, _: u32, _: u32) {}
    }

    fn rx_regs(q: &SharedWords) -> RingRegs {
        let w = |off: u32| q.load(((off - QPAGES) / 4) as usize);
        RingRegs {
            bal: w(r::RDBAL0),
            bah: w(r::RDBAH0),
            len: w(r::RDLEN0),
            head: w(r::RDH0),
            tail: w(r::RDT0),
        }
    }

    /// A driver whose RX ring of `ring` descriptors is set up and fully posted, as `init`
    /// leaves it (no PF to talk to here), with its memory and queue pages.
    fn rx_ready_driver(ring: u32) -> (VecMemory, SharedWords, IgbvfDriver<NoBar>) {
        let layout = Layout {
            base: 0x10_0000,
            ring_size: ring,
        };
        let mem = VecMemory::new(layout.base, Layout::bytes(ring) as usize);
        let q = SharedWords::owned(0x800);
        let mut d = IgbvfDriver::new(NoBar, Some(q.clone()), layout).unwrap();
        d.qwrite(r::RDBAL0, layout.rx_ring() as u32);
        d.qwrite(r::RDBAH0, (layout.rx_ring() >> 32) as u32);
        d.qwrite(r::RDLEN0, ring * 16);
        d.qwrite(r::SRRCTL0, 2 | rx::SRRCTL_DESCTYPE_ADV_ONEBUF);
        for i in 0..ring {
            d.post_rx(&mem, i).unwrap();
        }
        d.qwrite(r::RDT0, ring - 1);
        d.rx_refill = ring - 1;
        (mem, q, d)
    }

    /// The RX ring protocol between this driver and the device model, under random
    /// interleavings of "device delivers k frames" and "driver polls": every delivered
    /// frame is received exactly once and the device never runs out of buffers for good.
    #[test]
    fn rx_ring_protocol_never_diverges() {
        let (mem, q, mut d) = rx_ready_driver(64);

        let frame = [0xABu8; 64];
        let (mut sent, mut got, mut seed) = (0u64, 0u64, 0x2545_F491_4F6C_DD1Du64);
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for _ in 0..(seed % 80) {
                let mut regs = rx_regs(&q);
                let layout = RxLayout::from_srrctl(q.load(((r::SRRCTL0 - QPAGES) / 4) as usize));
                if rx_write(
                    &mut regs,
                    layout,
                    &mem,
                    &frame,
                    RxMeta {
                        vlan: None,
                        rss_hash: None,
                    },
                )
                .is_ok()
                {
                    sent += 1;
                }
                q.store(((r::RDH0 - QPAGES) / 4) as usize, regs.head);
            }
            if seed & 0x100 != 0 {
                got += u64::from(d.poll_rx(&mem, &mut [], &mut |_| {}).unwrap());
            }
        }
        got += u64::from(d.poll_rx(&mem, &mut [], &mut |_| {}).unwrap());
        assert_eq!(got, sent);
        assert!(sent > 100_000, "the device kept finding buffers: {sent}");
    }

    /// The same protocol with the device writing bursts (RxBurst, as the dataplane does,
    /// through both push and push_plain) and the driver reading completions in blocks.
    #[test]
    fn rx_ring_protocol_holds_with_device_bursts() {
        use emu_nic_model::igbvf::rings::RxBurst;
        let (mem, q, mut d) = rx_ready_driver(512);
        let frame = [0xABu8; 64];
        let (mut sent, mut got, mut seed) = (0u64, 0u64, 0x9E37_79B9_7F4A_7C15u64);
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut regs = rx_regs(&q);
            let layout = RxLayout::from_srrctl(q.load(((r::SRRCTL0 - QPAGES) / 4) as usize));
            let n = (seed % 200) as usize;
            let mut burst = RxBurst::new(&mut regs, layout, &mem, n);
            if seed & 0x10 != 0 {
                let mut frames = std::iter::repeat_n(&frame[..], n).peekable();
                loop {
                    sent += burst.push_plain(&mut frames).0;
                    let Some(f) = frames.next() else { break };
                    if burst.push(f, RxMeta::default()).is_ok() {
                        sent += 1;
                    }
                }
            } else {
                for _ in 0..n {
                    if burst.push(&frame, RxMeta::default()).is_ok() {
                        sent += 1;
                    }
                }
            }
            assert_eq!(burst.finish().frames, 0);
            q.store(((r::RDH0 - QPAGES) / 4) as usize, regs.head);
            if seed & 0x300 != 0 {
                got += u64::from(d.poll_rx(&mem, &mut [], &mut |_| {}).unwrap());
            }
            assert!(
                got <= sent,
                "the driver took more than the device completed"
            );
        }
        // A poll stops at the ring's end: drain until nothing is left.
        loop {
            let n = d.poll_rx(&mem, &mut [], &mut |_| {}).unwrap();
            if n == 0 {
                break;
            }
            got += u64::from(n);
        }
        assert_eq!(got, sent);
        assert!(sent > 100_000, "the device kept finding buffers: {sent}");
    }

    #[test]
    fn tx_burst_writes_what_one_by_one_queueing_writes() {
        // The same ring state, queued frame by frame and as bursts of random sizes (wrapping
        // the ring, with RS every 4): identical descriptors, tails and counts.
        let ring = 32;
        let layout = Layout {
            base: 0x10_0000,
            ring_size: ring,
        };
        let (ma, mb) = (
            VecMemory::new(layout.base, Layout::bytes(ring) as usize),
            VecMemory::new(layout.base, Layout::bytes(ring) as usize),
        );
        let mut a = IgbvfDriver::new(NoBar, None, layout).unwrap();
        let mut b = IgbvfDriver::new(NoBar, None, layout).unwrap();
        a.set_rs_interval(4);
        b.set_rs_interval(4);
        let mut seed = 7u64;
        for round in 0..200 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let want = ((seed >> 33) % 40) as u32;
            let len = 60 + ((seed >> 20) % 1400) as usize;
            let mut one = 0;
            while one < want && a.queue_tx_with(&ma, len, None).unwrap() {
                one += 1;
            }
            let burst = b.queue_tx_burst(&mb, len, want).unwrap();
            assert_eq!(burst, one, "round {round}: queued");
            assert_eq!((a.tx_tail, a.tx_pending), (b.tx_tail, b.tx_pending));
            let (mut ra, mut rb) = (vec![0u8; ring as usize * 16], vec![0u8; ring as usize * 16]);
            ma.read(layout.tx_ring(), &mut ra).unwrap();
            mb.read(layout.tx_ring(), &mut rb).unwrap();
            assert_eq!(ra, rb, "round {round}: descriptors");
            // The device sends everything: both reclaim the same way.
            for d in [&mut a, &mut b] {
                d.tx_clean = d.tx_tail;
            }
        }
        assert_eq!(
            b.queue_tx_burst(&mb, 0, 5).unwrap(),
            0,
            "empty frames are refused"
        );
        assert_eq!(
            b.queue_tx_burst(&mb, 4096, 5).unwrap(),
            0,
            "longer than a buffer"
        );
    }
}
