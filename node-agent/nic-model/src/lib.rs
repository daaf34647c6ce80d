//! Pure device models of the emulated NICs.
//!
//! Nothing here performs I/O: guest memory ([`mem::GuestMemory`]) and time are passed in, and
//! every operation returns what should happen (interrupts to raise, frames to switch) for the
//! caller to perform. Guest-controlled values never panic: unknown registers read as zero or are
//! ignored, descriptors are bounds-checked and dropped with a reason.
#![forbid(unsafe_code)]

pub mod avf;
pub mod igb_pf;
pub mod igbvf;
pub mod mem;
pub mod pci;
pub mod ring;
pub mod shared;
pub mod vmdq;
