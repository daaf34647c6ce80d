//! A hardened vfio-user server for emulated PCI devices.
//!
//! We own the server loop instead of using `vfio_user::Server` (see `devices.md` §1.6 for the
//! crate's defects: desync after unsupported commands, errno 0 replies, a panic on VERSION JSON
//! without NUL, hard-coded caps, one blocking connection per `run()`). The wire format is a
//! 16-byte header plus `repr(C)` vfio structs; `vfio_user::Client` is used in the tests as a
//! well-behaved peer.
//!
//! Shape:
//! - [`VfioDevice`]: what a device must provide (region layout, trapped accesses, reset).
//! - [`DmaTable`] (from `emu-guest-mem`): the client's DMA regions, filled by DMA_MAP and
//!   shared with the dataplane, which reads them as guest memory.
//! - [`IrqSet`]: MSI-X eventfds bound by SET_IRQS; `fire(vector)` writes 1.
//! - [`Server`]: listens on a unix socket path and serves one client at a time on its own
//!   thread; a malformed message gets an error reply (or closes that connection only).
//!
//! This crate is the protocol only: memory mappings, seals and fd helpers live in
//! `emu-guest-mem`, device behaviour behind [`VfioDevice`].

#![deny(unsafe_code)]

pub mod logbudget;
mod server;
#[allow(unsafe_code)]
mod sys;
pub mod wire;

pub use emu_guest_mem::IrqSet;
pub use emu_guest_mem::{DmaError, DmaTable};
pub use logbudget::LogBudget;
pub use server::{
    Server, ServerError, ServerHandle, ServerStats, StatsSnapshot, DEFAULT_MESSAGE_TIMEOUT,
    MAX_REQUESTS_PER_SEC,
};

/// PCI region indexes as vfio numbers them.
pub mod region {
    pub const BAR0: u32 = 0;
    pub const BAR3: u32 = 3;
    pub const CONFIG: u32 = 7;
    pub const COUNT: u32 = 9;
}

/// IRQ indexes as vfio numbers them.
pub mod irq_index {
    pub const INTX: u32 = 0;
    pub const MSI: u32 = 1;
    pub const MSIX: u32 = 2;
    pub const ERR: u32 = 3;
    pub const REQ: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// Error a device returns for a trapped access it refuses; the server turns it into an error
/// reply with the given errno (EINVAL for a bad offset/size, EFAULT etc.).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("access to region {region} at {offset:#x}+{len} is out of bounds")]
    OutOfBounds {
        region: u32,
        offset: u64,
        len: usize,
    },
    #[error("region {region} does not support {len}-byte accesses at {offset:#x}")]
    BadWidth {
        region: u32,
        offset: u64,
        len: usize,
    },
}

/// One region as the device describes it (for GET_REGION_INFO).
#[derive(Debug, Clone, Default)]
pub struct RegionSpec {
    /// Size in bytes; 0 means the region does not exist.
    pub size: u64,
    pub readable: bool,
    pub writable: bool,
    /// Areas the client may mmap (offset, size) from `mmap_fd`; everything else traps.
    pub sparse_mmap: Vec<(u64, u64)>,
    /// Shared memory backing the mmappable areas, at file offset 0 == region offset 0.
    pub mmap_fd: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// The static description of a device (for DEVICE_GET_INFO / GET_REGION_INFO / GET_IRQ_INFO).
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Indexed by vfio region index; length `region::COUNT`.
    pub regions: Vec<RegionSpec>,
    /// Vector counts per IRQ index (INTx, MSI, MSI-X, ERR, REQ).
    pub irq_counts: [u32; irq_index::COUNT as usize],
}

/// A device served over vfio-user. Methods take `&self` because the same device is shared
/// with the dataplane; implementations lock internally. None of them may panic on any input.
pub trait VfioDevice: Send + Sync {
    fn spec(&self) -> DeviceSpec;
    fn region_read(&self, region: u32, offset: u64, data: &mut [u8]) -> Result<(), AccessError>;
    fn region_write(&self, region: u32, offset: u64, data: &[u8]) -> Result<(), AccessError>;
    /// DEVICE_RESET: back to the power-on state.
    fn reset(&self);
    /// A client connected (after VERSION). Default: nothing.
    fn client_connected(&self) {}
    /// The client went away (EOF, protocol error, shutdown). DMA and IRQ fds are already
    /// dropped by the server when this runs; the device keeps its state.
    fn client_disconnected(&self) {}
    /// SET_IRQS changed MSI-X bindings. Default: nothing.
    fn irqs_changed(&self) {}
}
