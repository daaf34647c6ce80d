//! What every model's RX write reports: how much it wrote, or why the frame was dropped.

/// What an RX write wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxWritten {
    /// Descriptors completed (head advanced by this many).
    pub descriptors: u32,
    /// Frame bytes written.
    pub bytes: usize,
}

/// Why a frame was not written. Nothing was completed and head did not move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RxDrop {
    /// The queue is not enabled (AVF: a queue virtchnl has not enabled).
    #[error("RX queue disabled")]
    Disabled,
    /// Fewer free descriptors than the frame needs (head == tail: none at all).
    #[error("not enough RX descriptors owned by the device")]
    NoBuffers,
    /// The ring's length, head, tail or buffer size is invalid, or a descriptor of the ring
    /// is unreadable or unwritable.
    #[error("RX ring registers or descriptors are invalid")]
    BadRing,
    /// A buffer address given in a descriptor is not writable guest memory.
    #[error("RX buffer address is not writable guest memory")]
    BadAddress,
    /// Larger than the queue's maximum, the model's largest frame, or what the whole ring
    /// could ever hold.
    #[error("frame too big for the RX ring")]
    TooBig,
    /// Zero-length frame.
    #[error("empty frame")]
    Empty,
    /// igbvf: SRRCTL selects legacy or a reserved descriptor type.
    #[error("unsupported RX descriptor type")]
    UnsupportedLayout,
}
