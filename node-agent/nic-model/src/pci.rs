//! PCI configuration space as a byte array plus per-byte writable masks (the Cloud Hypervisor
//! `configuration.rs` idea): read-only fields stay read-only, BAR sizing works, and unknown
//! offsets read as zero. QEMU's vfio-user-pci virtualizes BARs and the MSI-X table itself;
//! we still answer BAR sizing correctly because QEMU reads the BAR type bits from us.

use emu_nic_defs::pci as d;

/// A conventional (4 KiB, PCIe extended) configuration space.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: Box<[u8; d::CONFIG_SIZE]>,
    wmask: Box<[u8; d::CONFIG_SIZE]>,
    /// Size of each BAR (0 = unimplemented); 64-bit BARs occupy two slots, upper slot 0.
    bar_sizes: [u64; 6],
    power_on: Box<[u8; d::CONFIG_SIZE]>,
}

impl std::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSpace")
            .field("vendor", &self.read_u16(d::VENDOR_ID))
            .field("device", &self.read_u16(d::DEVICE_ID))
            .finish()
    }
}

/// The identity and layout a function presents.
#[derive(Debug, Clone)]
pub struct ConfigLayout {
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    pub class: u32,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    /// (bar index, size, flags bits such as MEM64|PREFETCH); 64-bit BARs take index+1 too.
    pub bars: Vec<(usize, u64, u32)>,
    /// MSI-X: (capability offset, vectors, table BIR, table offset, PBA BIR, PBA offset).
    pub msix: Option<MsixLayout>,
    /// Offset of a PCIe capability (endpoint, version 2).
    pub pcie_cap: Option<usize>,
    /// Extended capabilities at 0x100+: (offset, id, version, size).
    pub ext_caps: Vec<(usize, u16, u8, usize)>,
}

#[derive(Debug, Clone, Copy)]
pub struct MsixLayout {
    pub cap_offset: usize,
    pub vectors: u16,
    pub table_bir: u8,
    pub table_offset: u32,
    pub pba_bir: u8,
    pub pba_offset: u32,
}

/// The layout both Intel VFs share (QEMU's `igbvf.c`, the X710 VF): 64-bit prefetchable
/// BAR0 (registers) and BAR3 (MSI-X table and PBA), MSI-X capability at 0x70, PCIe at 0xA0,
/// AER at 0x100, ARI at 0x150.
pub fn intel_vf_layout(
    device: u16,
    (bar0_size, bar3_size): (u64, u64),
    vectors: u16,
    (table_offset, pba_offset): (u32, u32),
) -> ConfigLayout {
    ConfigLayout {
        vendor: d::VENDOR_INTEL,
        device,
        revision: 1,
        class: d::CLASS_ETHERNET,
        subsystem_vendor: d::VENDOR_INTEL,
        subsystem: 0,
        bars: vec![
            (0, bar0_size, d::BAR_MEM64 | d::BAR_PREFETCH),
            (3, bar3_size, d::BAR_MEM64 | d::BAR_PREFETCH),
        ],
        msix: Some(MsixLayout {
            cap_offset: 0x70,
            vectors,
            table_bir: 3,
            table_offset,
            pba_bir: 3,
            pba_offset,
        }),
        pcie_cap: Some(0xA0),
        ext_caps: vec![
            (0x100, d::EXT_CAP_ID_AER, 2, 0x48),
            (0x150, d::EXT_CAP_ID_ARI, 1, 8),
        ],
    }
}

/// A PCI function's config space as its model holds it: what every model's VF exposes the
/// same way (the vfio-user CONFIG region, bus mastering for the dataplane).
pub trait PciFunction {
    fn config(&self) -> &ConfigSpace;
    fn config_mut(&mut self) -> &mut ConfigSpace;

    fn config_read(&self, offset: u64, buf: &mut [u8]) {
        self.config().read(offset, buf);
    }

    fn config_write(&mut self, offset: u64, data: &[u8]) {
        self.config_mut().write(offset, data);
    }

    /// Whether the guest has enabled bus mastering (the device may DMA).
    fn bus_master(&self) -> bool {
        self.config().bus_master()
    }
}

impl ConfigSpace {
    /// Builds the power-on configuration space for `layout`.
    pub fn new(layout: &ConfigLayout) -> Self {
        let mut c = ConfigSpace {
            bytes: Box::new([0; d::CONFIG_SIZE]),
            wmask: Box::new([0; d::CONFIG_SIZE]),
            bar_sizes: [0; 6],
            power_on: Box::new([0; d::CONFIG_SIZE]),
        };
        c.put_u16(d::VENDOR_ID, layout.vendor);
        c.put_u16(d::DEVICE_ID, layout.device);
        c.bytes[d::REVISION] = layout.revision;
        c.bytes[d::CLASS_PROG] = layout.class as u8;
        c.bytes[d::CLASS_PROG + 1] = (layout.class >> 8) as u8;
        c.bytes[d::CLASS_PROG + 2] = (layout.class >> 16) as u8;
        c.put_u16(d::SUBSYSTEM_VENDOR_ID, layout.subsystem_vendor);
        c.put_u16(d::SUBSYSTEM_ID, layout.subsystem);
        // Memory space, bus master and INTx disable are writable; a VF has no I/O space.
        let cmd_mask = d::COMMAND_MEMORY | d::COMMAND_MASTER | d::COMMAND_INTX_DISABLE;
        c.wmask[d::COMMAND] = cmd_mask as u8;
        c.wmask[d::COMMAND + 1] = (cmd_mask >> 8) as u8;
        c.wmask[d::INTERRUPT_LINE] = 0xFF;
        for &(bar, size, flags) in &layout.bars {
            if bar >= 6 || size == 0 || !size.is_power_of_two() {
                continue;
            }
            c.bar_sizes[bar] = size;
            let off = d::BAR0 + 4 * bar;
            c.put_u32(off, flags & 0xF);
            let mask = !(size - 1);
            c.put_mask_u32(off, (mask as u32) & !0xF);
            if flags & d::BAR_MEM64 != 0 && bar + 1 < 6 {
                c.put_mask_u32(off + 4, (mask >> 32) as u32);
            }
        }
        let mut last_cap: Option<usize> = None;
        let mut link = |c: &mut ConfigSpace, off: usize| {
            match last_cap {
                None => c.bytes[d::CAP_PTR] = off as u8,
                Some(prev) => c.bytes[prev + 1] = off as u8,
            }
            last_cap = Some(off);
        };
        if let Some(m) = layout.msix {
            let o = m.cap_offset;
            link(&mut c, o);
            c.bytes[o] = d::CAP_ID_MSIX;
            c.put_u16(o + 2, m.vectors.saturating_sub(1) & 0x7FF);
            c.put_u32(o + 4, m.table_offset | u32::from(m.table_bir & 7));
            c.put_u32(o + 8, m.pba_offset | u32::from(m.pba_bir & 7));
            c.wmask[o + 3] = ((d::MSIX_CTRL_ENABLE | d::MSIX_CTRL_MASKALL) >> 8) as u8;
        }
        if let Some(o) = layout.pcie_cap {
            link(&mut c, o);
            c.bytes[o] = d::CAP_ID_EXP;
            // Version 2, PCI Express endpoint.
            c.put_u16(o + 2, 0x0002);
            // Device capabilities: max payload 256 B, function-level reset.
            c.put_u32(o + 4, 0x1000_8001);
            // Device control is writable (the kernel tunes payload/read request sizes).
            c.put_mask_u32(o + 8, 0x0000_FFFF);
            // Link capabilities / status: x1, 2.5 GT/s, link up.
            c.put_u32(o + 0x0C, 0x0000_0011);
            c.put_u16(o + 0x12, 0x0011);
        }
        let mut prev_ext: Option<usize> = None;
        for &(off, id, ver, _size) in &layout.ext_caps {
            if !(0x100..d::CONFIG_SIZE - 4).contains(&off) {
                continue;
            }
            if let Some(p) = prev_ext {
                let hdr = c.read_u32(p) | ((off as u32) << 20);
                c.put_u32(p, hdr);
            }
            c.put_u32(off, u32::from(id) | (u32::from(ver & 0xF) << 16));
            prev_ext = Some(off);
        }
        if last_cap.is_some() {
            c.put_u16(d::STATUS, d::STATUS_CAP_LIST);
        }
        *c.power_on = *c.bytes;
        c
    }

    fn put_u16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_mask_u32(&mut self, off: usize, m: u32) {
        self.wmask[off..off + 4].copy_from_slice(&m.to_le_bytes());
    }

    /// Reads `buf.len()` bytes at `offset`; bytes beyond the space read as zero.
    pub fn read(&self, offset: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.bytes.get(o).copied())
                .unwrap_or(0);
        }
    }

    /// Writes `data` at `offset`, honouring the writable mask; bytes beyond the space are ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let Some(o) = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .filter(|&o| o < d::CONFIG_SIZE)
            else {
                continue;
            };
            let m = self.wmask[o];
            self.bytes[o] = (self.bytes[o] & !m) | (v & m);
        }
    }

    pub fn read_u16(&self, off: usize) -> u16 {
        let mut b = [0; 2];
        self.read(off as u64, &mut b);
        u16::from_le_bytes(b)
    }
    pub fn read_u32(&self, off: usize) -> u32 {
        let mut b = [0; 4];
        self.read(off as u64, &mut b);
        u32::from_le_bytes(b)
    }

    /// Whether bus mastering (DMA) is enabled.
    pub fn bus_master(&self) -> bool {
        self.read_u16(d::COMMAND) & d::COMMAND_MASTER != 0
    }

    /// Size of BAR `i` (0 if unimplemented).
    pub fn bar_size(&self, i: usize) -> u64 {
        self.bar_sizes.get(i).copied().unwrap_or(0)
    }

    /// Back to the power-on values (function-level reset).
    pub fn reset(&mut self) {
        *self.bytes = *self.power_on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> ConfigLayout {
        ConfigLayout {
            vendor: 0x8086,
            device: 0x10CA,
            revision: 1,
            class: 0x020000,
            subsystem_vendor: 0x8086,
            subsystem: 0,
            bars: vec![(0, 16384, d::BAR_MEM64 | d::BAR_PREFETCH)],
            msix: Some(MsixLayout {
                cap_offset: 0x70,
                vectors: 3,
                table_bir: 3,
                table_offset: 0,
                pba_bir: 3,
                pba_offset: 0x2000,
            }),
            pcie_cap: Some(0xA0),
            ext_caps: vec![(0x100, 1, 2, 0x48), (0x150, 0xE, 1, 8)],
        }
    }

    #[test]
    fn ids_are_read_only_and_bar_sizing_works() {
        let mut c = ConfigSpace::new(&layout());
        c.write(0, &[0xFF; 4]);
        assert_eq!(c.read_u32(0), 0x10CA_8086);
        c.write(0x10, &0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(c.read_u32(0x10), 0xFFFF_C000 | 0xC);
        c.write(0x30, &0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(c.read_u32(0x30), 0, "ROM BAR must stay read-only zero");
        assert_eq!(c.read_u32(0x08) >> 8, 0x020000);
    }

    #[test]
    fn capability_chain() {
        let c = ConfigSpace::new(&layout());
        assert_eq!(
            c.read_u16(d::STATUS) & d::STATUS_CAP_LIST,
            d::STATUS_CAP_LIST
        );
        assert_eq!(c.read_u32(d::CAP_PTR) & 0xFF, 0x70);
        assert_eq!(c.read_u16(0x70), 0xA011);
        assert_eq!(c.read_u16(0x72), 2, "3 vectors = table size 2");
        assert_eq!(c.read_u32(0x74), 3);
        assert_eq!(c.read_u32(0x78), 0x2003);
        assert_eq!(c.read_u16(0xA0) & 0xFF, 0x10);
        assert_eq!(c.read_u32(0x100) >> 20, 0x150);
        assert_eq!(c.read_u32(0x150) & 0xFFFF, 0xE);
    }

    #[test]
    fn hostile_offsets_do_not_panic() {
        let mut c = ConfigSpace::new(&layout());
        let mut b = [0u8; 8];
        c.read(u64::MAX - 2, &mut b);
        assert_eq!(b, [0; 8]);
        c.write(u64::MAX - 1, &[1, 2, 3]);
        c.write(4094, &[1, 2, 3, 4]);
        c.reset();
    }
}
