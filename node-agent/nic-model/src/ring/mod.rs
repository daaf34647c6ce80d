//! What the device models share about rings, whatever their descriptor format: the frame
//! arena and buffers a TX walk fills ([`frames`]), the transmit offloads applied to an
//! assembled frame ([`offload`]), the wire numbers frames are read by ([`wire`]), and the
//! backend trait through which the dataplane drives a VF ([`backend`]).
//!
//! Nothing here knows a register or a descriptor layout: those live in each model's folder
//! (`igbvf/`, `avf/`), which decodes its descriptors into the neutral types here.

pub mod backend;
mod frames;
pub(crate) mod offload;
mod rx;
pub(crate) mod walk;
pub(crate) mod wire;

#[cfg(test)]
pub(crate) mod testutil;

pub use backend::{
    FrameKind, FrameSource, IdleProbe, IrqOut, PlainRun, RxRun, RxRunFrames, RxTally, TxPoll,
    VfBackend,
};
pub use frames::{TxFrames, TxOutcome, TxScratch, TxSink, TxStats, MAX_TX_FRAME, MAX_TX_PACKET};
pub use offload::MIN_TSO_MSS;
pub use rx::{RxDrop, RxWritten};
