//! Guest memory as the device models see it (defined in `emu-guest-mem`, re-exported here so
//! that the models name one place): DMA addresses that must be translated and bounds-checked
//! before a single byte moves.

pub use emu_guest_mem::{GuestMemory, MemError, VecMemory};
