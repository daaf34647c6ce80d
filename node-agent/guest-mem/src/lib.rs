//! Guest memory for the node agent: how device models, the dataplane and the userspace
//! driver reach memory a vfio-user client shares with us.
//!
//! - [`GuestMemory`]: byte-granular, bounds-checked access by DMA address (IOVA); the device
//!   models take it as a parameter. [`VecMemory`] implements it over plain memory for tests.
//! - [`DmaTable`]: one client's DMA regions (DMA_MAP/DMA_UNMAP bookkeeping), each a mapping
//!   of a seal-checked memory file, read-only ([`MmapRo`]) or read-write ([`MmapRw`]) as
//!   the client granted; implements [`GuestMemory`]. A client truncating its file under us
//!   faults only its own mappings (SIGBUS recovery, see [`faults_recovered`]).
//! - [`SharedPages`]: register pages we offer to the client (doorbells), seen by the device
//!   as atomic words through [`WordBacking`].
//! - [`fd`]: memfds, seals, eventfds and the checks on fds a client hands over.
//! - [`IrqSet`]: the interrupt eventfds a client bound, which the dataplane fires directly.
//!
//! Layering: this crate knows nothing of vfio-user messages, sockets or devices. Without the
//! default `mmap` feature it is only the traits and [`VecMemory`] (no libc, no `unsafe`),
//! which is all the pure device models need.

#![deny(unsafe_code)]

mod memory;
mod words;

pub use memory::{GuestMemory, MemError, VecMemory};
pub use words::WordBacking;

#[cfg(feature = "mmap")]
mod dma;
#[cfg(feature = "mmap")]
mod irq;
#[cfg(feature = "mmap")]
mod shared;
#[cfg(feature = "mmap")]
#[allow(unsafe_code)]
mod sys;

#[cfg(feature = "mmap")]
pub use dma::{
    DmaError, DmaGuard, DmaProt, DmaTable, DMA_MAP_FLAG_READ, DMA_MAP_FLAG_WRITE, MAX_DMA_MAPS,
    MAX_FILE_MAPS,
};
#[cfg(feature = "mmap")]
pub use irq::IrqSet;
#[cfg(feature = "mmap")]
pub use shared::SharedPages;
#[cfg(feature = "mmap")]
pub use sys::mmap::{MmapRo, MmapRw};

/// Safe fd helpers: memfds (sealed as QEMU seals guest RAM), seals, eventfds, and the checks
/// on fds a client hands over.
#[cfg(feature = "mmap")]
pub mod fd {
    pub use crate::sys::fd::{
        eventfd, eventfd_read, eventfd_write, is_eventfd, memfd, memfd_unsealed, regular_file_size,
        seals, set_nonblocking,
    };
}

/// Faults on client memory (a DMA file shrunk under us) recovered since the process started;
/// each dropped the offending client only.
#[cfg(feature = "mmap")]
pub fn faults_recovered() -> u64 {
    sys::sigbus::recovered()
}
