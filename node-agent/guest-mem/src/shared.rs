//! Register pages offered to the client as vfio-user sparse-mmap areas: a memfd that the
//! client maps into the guest (doorbells become plain stores, zero traps) and that the device
//! model and the dataplane see as atomic words through [`WordBacking`].

use crate::sys::fd::memfd;
use crate::sys::mmap::MmapRw;
use crate::WordBacking;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

/// A memfd-backed register window, mapped read-write in this process.
#[derive(Debug)]
pub struct SharedPages {
    fd: Arc<OwnedFd>,
    map: MmapRw,
}

impl SharedPages {
    /// `size` bytes (a multiple of the page size) of zeroed shared memory.
    pub fn new(name: &str, size: u64) -> io::Result<SharedPages> {
        let fd = memfd(name, size)?;
        let len = usize::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let map = MmapRw::map_shared(fd.as_fd(), 0, len)?;
        Ok(SharedPages {
            fd: Arc::new(fd),
            map,
        })
    }

    /// Maps `size` bytes of someone else's region fd at `offset` (a client mapping a
    /// sparse-mmap area it received with GET_REGION_INFO).
    pub fn map_fd(fd: OwnedFd, offset: u64, size: u64) -> io::Result<SharedPages> {
        let len = usize::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let map = MmapRw::map_shared(fd.as_fd(), offset, len)?;
        Ok(SharedPages {
            fd: Arc::new(fd),
            map,
        })
    }

    /// The fd to hand to the client with GET_REGION_INFO (file offset 0 = region offset 0).
    pub fn fd(&self) -> Arc<OwnedFd> {
        self.fd.clone()
    }
}

impl WordBacking for SharedPages {
    fn words(&self) -> &[AtomicU32] {
        self.map.words()
    }
}
