//! The driver over a real vfio-user socket, as a VM would attach: VERSION and region
//! discovery through `vfio_user::Client`, the queue pages mapped from the region fd, DMA
//! memory from a memfd shared with the server (DMA_MAP), control registers trapped.

use crate::{Bar0, DriverError, IgbvfDriver, Layout};
use emu_guest_mem::{fd as fdutil, DmaTable, SharedPages};
use emu_nic_model::shared::SharedWords;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

/// IOVA where the driver places its DMA memory.
pub const DMA_BASE: u64 = 0x1_0000_0000;
const BAR0: u32 = 0;
const QUEUE_PAGES: u64 = 0x2000;
const QUEUE_PAGES_SIZE: u64 = 0x2000;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("vfio-user: {0}")]
    Vfio(String),
    #[error("the device offers no mappable queue pages in BAR0")]
    NoSparseArea,
    #[error("cannot set up driver memory: {0}")]
    Memory(#[source] std::io::Error),
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// Trapped BAR0 access through REGION_READ/REGION_WRITE.
pub struct ClientBar(pub vfio_user::Client);

impl Bar0 for ClientBar {
    fn read32(&mut self, offset: u32) -> u32 {
        let mut b = [0u8; 4];
        match self.0.region_read(BAR0, u64::from(offset), &mut b) {
            Ok(()) => u32::from_le_bytes(b),
            Err(_) => u32::MAX,
        }
    }
    fn write32(&mut self, offset: u32, value: u32) {
        let _ = self
            .0
            .region_write(BAR0, u64::from(offset), &value.to_le_bytes());
    }
}

/// A VF attached over vfio-user: the driver plus the memory it DMAs from.
pub struct AttachedVf {
    pub driver: IgbvfDriver<ClientBar>,
    /// The driver's own view of its DMA memory (the same memfd the server mapped).
    pub mem: Arc<DmaTable>,
    /// The memfd shared with DMA_MAP (IOVA [`DMA_BASE`]), e.g. for tests that shrink it.
    pub dma_file: std::fs::File,
    _pages: Arc<SharedPages>,
}

/// How the DMA memory shared with the server is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DmaMemory {
    /// A memfd sealed against shrinking and growing, as QEMU's memory-backend-memfd.
    #[default]
    Sealed,
    /// A memfd without seals (the agent refuses it unless it allows unsealed memory).
    Unsealed,
}

/// Connects to the VF socket at `path`, maps its queue pages, shares `Layout::bytes` of DMA
/// memory and runs the driver's init (reset, mailbox, rings).
pub fn attach(path: &Path, ring_size: u32) -> Result<AttachedVf, ClientError> {
    attach_with(path, ring_size, DmaMemory::Sealed)
}

/// [`attach`] with the DMA memory made as `memory` says.
pub fn attach_with(
    path: &Path,
    ring_size: u32,
    memory: DmaMemory,
) -> Result<AttachedVf, ClientError> {
    let mut client =
        vfio_user::Client::new(path).map_err(|e| ClientError::Vfio(format!("connect: {e}")))?;
    let region = client.region(BAR0).ok_or(ClientError::NoSparseArea)?;
    let area = region
        .sparse_areas
        .iter()
        .find(|a| a.offset == QUEUE_PAGES && a.size >= QUEUE_PAGES_SIZE)
        .ok_or(ClientError::NoSparseArea)?;
    let fo = region
        .file_offset
        .as_ref()
        .ok_or(ClientError::NoSparseArea)?;
    let fd: OwnedFd = fo.file().try_clone().map_err(ClientError::Memory)?.into();
    let pages = Arc::new(
        SharedPages::map_fd(fd, fo.start() + area.offset, QUEUE_PAGES_SIZE)
            .map_err(ClientError::Memory)?,
    );
    let words = SharedWords::window(pages.clone(), 0, (QUEUE_PAGES_SIZE / 4) as usize);

    let size = Layout::bytes(ring_size).next_multiple_of(4096);
    let memfd = match memory {
        DmaMemory::Sealed => fdutil::memfd("vf-driver-dma", size),
        DmaMemory::Unsealed => fdutil::memfd_unsealed("vf-driver-dma", size),
    }
    .map_err(ClientError::Memory)?;
    let dma_file = std::fs::File::from(memfd.try_clone().map_err(ClientError::Memory)?);
    client
        .dma_map(0, DMA_BASE, size, memfd.as_raw_fd())
        .map_err(|e| ClientError::Vfio(format!("DMA_MAP: {e}")))?;
    let mem = Arc::new(DmaTable::new());
    mem.set_allow_unsealed(memory == DmaMemory::Unsealed);
    mem.map(DMA_BASE, size, 0, 3, Some(memfd))
        .map_err(|e| ClientError::Memory(std::io::Error::other(e.to_string())))?;
    // Bus mastering, as the PCI core does before the driver touches the rings.
    let mut cmd = [0u8; 2];
    client
        .region_read(7, 4, &mut cmd)
        .map_err(|e| ClientError::Vfio(format!("config read: {e}")))?;
    let v = u16::from_le_bytes(cmd) | 0x6;
    client
        .region_write(7, 4, &v.to_le_bytes())
        .map_err(|e| ClientError::Vfio(format!("config write: {e}")))?;

    let layout = Layout {
        base: DMA_BASE,
        ring_size,
    };
    let mut driver = IgbvfDriver::new(ClientBar(client), Some(words), layout)?;
    driver.init(&mem.lock())?;
    Ok(AttachedVf {
        driver,
        mem,
        dma_file,
        _pages: pages,
    })
}
