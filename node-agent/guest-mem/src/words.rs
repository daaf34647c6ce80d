//! Register words shared with a client as plain memory (vfio-user sparse-mmap areas): the
//! guest stores to them without trapping; the device and the dataplane access them
//! atomically. What holds them (a memfd mapping, [`crate::SharedPages`], in production; a
//! boxed slice in tests) is the caller's choice, so the device models stay free of `unsafe`.

use std::sync::atomic::AtomicU32;

/// Memory holding 32-bit registers that another party may access concurrently.
pub trait WordBacking: Send + Sync + std::fmt::Debug {
    fn words(&self) -> &[AtomicU32];
}
