//! The packet path: a dataplane thread that polls every VF's TX ring, switches each frame with
//! VMDq rules ([`emu_nic_model::vmdq`]) and writes it into the receiving VFs' RX rings, raising
//! interrupts at most once per vector per poll pass.
//!
//! This crate never links tokio, kube or tonic. Guest memory is the client's DMA
//! table ([`emu_guest_mem::DmaTable`], read-locked once per ring pass and used as a concrete
//! type so that every descriptor access inlines); interrupts leave through [`IrqSink`].
#![deny(unsafe_code)]

pub mod counters;
pub mod engine;
pub mod flowcache;
pub mod port;
pub mod ratelimit;
#[allow(unsafe_code)]
mod sys;
pub mod tap_port;
pub mod uplink;

pub use counters::{CounterSnapshot, VfCounters};
pub use engine::{Dataplane, DataplaneConfig, Mode, UplinkInfo};
pub use port::{IrqSink, PortState, VfPort};
pub use tap_port::TapState;
pub use uplink::{PacketUplink, TapUplink, Uplink, UplinkCounters, UplinkSnapshot};

/// Restricts the calling thread to `cores`, e.g. to keep a benchmark's synthetic guests off
/// the dataplane's pinned core.
pub fn pin_current_thread(cores: &[usize]) -> std::io::Result<()> {
    sys::pin_to_cores(cores)
}
