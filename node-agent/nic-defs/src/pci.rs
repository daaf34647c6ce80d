//! PCI identifiers and configuration-space layout (PCI Local Bus 3.0, PCIe Base 4.0).

pub const VENDOR_INTEL: u16 = 0x8086;
/// 82576 virtual function (igbvf).
pub const DEVICE_IGBVF: u16 = 0x10CA;
pub const CLASS_ETHERNET: u32 = 0x02_0000;

pub const CONFIG_SIZE: usize = 4096;
pub const VENDOR_ID: usize = 0x00;
pub const DEVICE_ID: usize = 0x02;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION: usize = 0x08;
pub const CLASS_PROG: usize = 0x09;
pub const HEADER_TYPE: usize = 0x0E;
pub const BAR0: usize = 0x10;
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2C;
pub const SUBSYSTEM_ID: usize = 0x2E;
pub const ROM_BAR: usize = 0x30;
pub const CAP_PTR: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3C;
pub const INTERRUPT_PIN: usize = 0x3D;

pub const COMMAND_IO: u16 = 0x1;
pub const COMMAND_MEMORY: u16 = 0x2;
pub const COMMAND_MASTER: u16 = 0x4;
pub const COMMAND_INTX_DISABLE: u16 = 0x400;
pub const STATUS_CAP_LIST: u16 = 0x10;

pub const BAR_MEM64: u32 = 0x4;
pub const BAR_PREFETCH: u32 = 0x8;

pub const CAP_ID_PM: u8 = 0x01;
pub const CAP_ID_MSIX: u8 = 0x11;
pub const CAP_ID_EXP: u8 = 0x10;
pub const EXT_CAP_ID_AER: u16 = 0x0001;
pub const EXT_CAP_ID_ARI: u16 = 0x000E;

/// MSI-X capability: message control at +2 (table size − 1 in b0–10, function mask b14,
/// enable b15), table offset/BIR at +4, PBA offset/BIR at +8.
pub const MSIX_CTRL_ENABLE: u16 = 0x8000;
pub const MSIX_CTRL_MASKALL: u16 = 0x4000;
