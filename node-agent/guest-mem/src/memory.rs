//! Guest memory as the device models see it: DMA addresses (IOVAs) that must be translated
//! and bounds-checked before a single byte moves. Implemented by [`crate::DmaTable`]
//! (the `mmap` feature) in production and by [`VecMemory`] in tests.

/// Why a guest memory access failed. Every variant is a guest (or client) mistake, never an
/// agent bug: callers drop the work item and count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// Some byte of `[addr, addr+len)` lies outside every DMA region of the VF.
    #[error("guest range {addr:#x}+{len:#x} is outside every DMA region")]
    Unmapped { addr: u64, len: usize },
    /// The range is mapped, but without the access right that was needed.
    #[error("guest range {addr:#x}+{len:#x} is mapped without {access} access")]
    Denied {
        addr: u64,
        len: usize,
        access: &'static str,
    },
}

/// Byte-granular access to one VF's guest memory.
///
/// Implementations must fail (never panic) for any address and length, including ranges that
/// wrap around `u64::MAX`. A range must lie inside a single DMA region.
pub trait GuestMemory {
    /// Copies `buf.len()` bytes starting at guest address `addr` into `buf`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Copies `data` to guest address `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError>;

    /// Reads a little-endian u64.
    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Reads a little-endian u32.
    fn read_u32(&self, addr: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Writes a little-endian u64.
    fn write_u64(&self, addr: u64, v: u64) -> Result<(), MemError> {
        self.write(addr, &v.to_le_bytes())
    }
    /// Writes a little-endian u32.
    fn write_u32(&self, addr: u64, v: u32) -> Result<(), MemError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// [`write`](Self::write) for descriptors another CPU polls: every aligned 8-byte word
    /// is stored once, as one store, in ascending address order. A plain `write` may use
    /// `memcpy`, which can store a word twice (overlapping vector moves) or out of order:
    /// a late second store of a write-back the guest already consumed and re-posted would
    /// put the stale DD and a bogus buffer address back into its ring.
    fn write_ordered(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.write(addr, data)
    }
    /// [`read`](Self::read) of descriptors another CPU writes: every aligned 8-byte word is
    /// read once, as one load, in ascending address order.
    fn read_ordered(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.read(addr, buf)
    }
}

impl<T: GuestMemory + ?Sized> GuestMemory for &T {
    fn write_ordered(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        (**self).write_ordered(addr, data)
    }
    fn read_ordered(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read_ordered(addr, buf)
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read(addr, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        (**self).write(addr, data)
    }
    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        (**self).read_u64(addr)
    }
    fn read_u32(&self, addr: u64) -> Result<u32, MemError> {
        (**self).read_u32(addr)
    }
    fn write_u64(&self, addr: u64, v: u64) -> Result<(), MemError> {
        (**self).write_u64(addr, v)
    }
    fn write_u32(&self, addr: u64, v: u32) -> Result<(), MemError> {
        (**self).write_u32(addr, v)
    }
}

/// One contiguous region of plain process memory posing as guest memory at `base`.
/// For unit tests and the userspace test drivers; interior mutability so that `write` takes
/// `&self` like the real DMA table.
#[derive(Debug)]
pub struct VecMemory {
    base: u64,
    bytes: std::cell::RefCell<Vec<u8>>,
}

impl VecMemory {
    /// `size` zeroed bytes at guest address `base`.
    pub fn new(base: u64, size: usize) -> Self {
        VecMemory {
            base,
            bytes: std::cell::RefCell::new(vec![0; size]),
        }
    }

    fn range(&self, addr: u64, len: usize) -> Result<std::ops::Range<usize>, MemError> {
        let err = MemError::Unmapped { addr, len };
        let off = addr.checked_sub(self.base).ok_or(err)?;
        let off = usize::try_from(off).map_err(|_| err)?;
        let end = off.checked_add(len).ok_or(err)?;
        if end > self.bytes.borrow().len() {
            return Err(err);
        }
        Ok(off..end)
    }
}

impl GuestMemory for VecMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.bytes.borrow()[r]);
        Ok(())
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let r = self.range(addr, data.len())?;
        self.bytes.borrow_mut()[r].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_memory_rejects_out_of_range_and_wrapping() {
        let m = VecMemory::new(0x1000, 0x100);
        let mut b = [0u8; 8];
        assert!(m.read(0x1000, &mut b).is_ok());
        assert!(m.read(0x10f8, &mut b).is_ok());
        assert!(m.read(0x10f9, &mut b).is_err());
        assert!(m.read(0xfff, &mut b).is_err());
        assert!(m.read(u64::MAX - 3, &mut b).is_err());
        assert!(m.write(u64::MAX, &b).is_err());
        m.write_u32(0x1004, 0xdead_beef).unwrap();
        assert_eq!(m.read_u32(0x1004).unwrap(), 0xdead_beef);
    }
}
