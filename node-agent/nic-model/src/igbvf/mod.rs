//! igbvf (82576 virtual function, 8086:10CA) device model.
//!
//! - [`vf::IgbVf`]: PCI config space and BAR0 register semantics (read-to-clear, auto-clear,
//!   reset), the VF side of the mailbox and the interrupt cause/mask logic.
//! - [`rings`]: TX/RX descriptor processing over guest memory.
//! - The PF side of the mailbox lives in [`crate::igb_pf`].
//! - [`backend::IgbvfBackend`]: the VF as the dataplane drives it (the ring walks, head
//!   write-back, interrupts and EITR moderation behind [`crate::ring::VfBackend`]).

pub mod backend;
pub mod rings;
pub mod vf;
