//! Intel Adaptive Virtual Function (AVF, 8086:1889) device model, driven by the stock `iavf`.
//!
//! - [`state`]: the per-VF state shared by the register model, the virtchnl PF and the
//!   dataplane (queue and IRQ configuration set through virtchnl, AdminQ registers, RSS).
//! - `vf`: BAR0 register semantics, interrupts, reset states (RSTAT).
//! - `adminq`: ATQ/ARQ descriptor rings in guest memory.
//! - `pf`: the PF side of virtchnl (what a real PF driver answers).
//! - `rings`: TX/RX descriptor processing; `rss`: Toeplitz hashing.
//! - `backend`: the VF as the dataplane drives it (TX over every enabled queue pair, RSS on
//!   receive, tails and ITR read from the mapped pages) behind [`crate::ring::VfBackend`].

pub mod adminq;
pub mod backend;
pub mod pf;
pub mod rings;
pub mod rss;
pub mod state;
pub mod vf;
