//! The client's DMA regions: DMA_MAP/DMA_UNMAP bookkeeping plus the mmapped memory the
//! dataplane reads and writes as [`GuestMemory`].
//!
//! Client memory can change under us: the client owns the files it maps and may truncate
//! them at any time. A map must be sealed against shrinking (`F_SEAL_SHRINK`, which QEMU's
//! `memory-backend-memfd` sets by default) unless the owner allowed unsealed maps
//! ([`DmaTable::set_allow_unsealed`]); either way every mapping is registered with the SIGBUS
//! recovery in `sys::sigbus`, so a fault in client memory (an allowed unsealed file shrunk,
//! hugetlbfs out of pages) becomes zero-filled memory plus a wake-up of the owner
//! ([`DmaTable::set_fault_notify`]), who drops that client. Why both: seals turn the attack
//! into a clear DMA_MAP error before anything runs, and the recovery covers what seals
//! cannot (hugetlbfs page exhaustion, files whose owner needs no seals).
//!
//! Locking: one `RwLock` around the table. Dataplane accesses take the read lock (per call,
//! or once per poll pass via [`DmaTable::lock`]); map/unmap/clear take the write lock, so an
//! unmap returns only after every reader that might use the mapping has finished.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard};

use crate::sys::fd;
use crate::sys::mmap::{MmapRo, MmapRw};
use crate::{GuestMemory, MemError};

/// Most simultaneous DMA maps of one client (vfio-user announces it as `max_dma_maps`;
/// QEMU accepts at most 65535).
pub const MAX_DMA_MAPS: u32 = 16384;

/// Why a DMA_MAP / DMA_UNMAP was refused.
#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    #[error("DMA range {address:#x}+{size:#x} is empty or wraps around")]
    BadRange { address: u64, size: u64 },
    #[error("DMA range {address:#x}+{size:#x} overlaps an existing map")]
    Overlap { address: u64, size: u64 },
    #[error("DMA map flags {0:#x} are invalid (need READ and/or WRITE, nothing else)")]
    BadFlags(u32),
    #[error("too many DMA maps (limit {0})")]
    TooMany(u32),
    #[error("DMA map {address:#x}+{size:#x}: fd range at offset {offset:#x} exceeds the file ({file_size:#x} bytes)")]
    BeyondFile {
        address: u64,
        size: u64,
        offset: u64,
        file_size: u64,
    },
    #[error("DMA map {address:#x}+{size:#x}: the fd is not a regular (memfd/shm) file")]
    NotRegularFile { address: u64, size: u64 },
    #[error(
        "DMA map {address:#x}+{size:#x}: the memory file is not sealed against shrinking \
         (F_SEAL_SHRINK), so the client could truncate it under the agent; share guest RAM \
         from a sealed memfd (QEMU: -object memory-backend-memfd, seal=on is the default) \
         or let the agent accept unsealed memory (allowUnsealedMemory)"
    )]
    Unsealed { address: u64, size: u64 },
    #[error("too many DMA maps with a file (limit {0} per client)")]
    TooManyFiles(usize),
    #[error("DMA map {address:#x}+{size:#x}: mmap failed")]
    Mmap {
        address: u64,
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("no DMA map is exactly {address:#x}+{size:#x}")]
    NotFound { address: u64, size: u64 },
}

impl DmaError {
    /// The errno for the vfio-user error reply.
    pub fn errno(&self) -> i32 {
        match self {
            DmaError::BadRange { .. } | DmaError::BadFlags(_) => libc::EINVAL,
            DmaError::BeyondFile { .. } | DmaError::NotRegularFile { .. } => libc::EINVAL,
            DmaError::Unsealed { .. } => libc::EPERM,
            DmaError::TooManyFiles(_) => libc::ENOSPC,
            DmaError::Overlap { .. } => libc::EEXIST,
            DmaError::TooMany(_) => libc::ENOSPC,
            DmaError::Mmap { source, .. } => source.raw_os_error().unwrap_or(libc::EFAULT),
            DmaError::NotFound { .. } => libc::ENOENT,
        }
    }
}

/// Access rights of a DMA map (DMA_MAP flags READ 1, WRITE 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaProt {
    pub read: bool,
    pub write: bool,
}

/// DMA_MAP flag: the device may read the range (as VFIO and vfio-user number it).
pub const DMA_MAP_FLAG_READ: u32 = 1 << 0;
/// DMA_MAP flag: the device may write the range.
pub const DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

impl DmaProt {
    pub fn from_flags(flags: u32) -> Result<DmaProt, DmaError> {
        if flags & !(DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE) != 0 {
            return Err(DmaError::BadFlags(flags));
        }
        Ok(DmaProt {
            read: flags & DMA_MAP_FLAG_READ != 0,
            write: flags & DMA_MAP_FLAG_WRITE != 0,
        })
    }
}

#[derive(Debug)]
struct Region {
    address: u64,
    size: u64,
    prot: DmaProt,
    /// `None` for a map without fd: recorded (overlaps, unmap) but not DMA-able.
    mem: Option<Mapping>,
}

/// A DMA map's memory, mapped with no more rights than the client granted: a read-only map
/// cannot be written through. A write-only map is mapped read-write (every mapping needs a
/// readable fd anyway); [`locate_read`] still refuses to read it.
#[derive(Debug)]
enum Mapping {
    ReadOnly(MmapRo),
    ReadWrite(MmapRw),
}

impl Mapping {
    #[inline(always)]
    fn reader(&self) -> &MmapRo {
        match self {
            Mapping::ReadOnly(m) => m,
            Mapping::ReadWrite(m) => m.as_ro(),
        }
    }
}

impl Region {
    fn end(&self) -> u64 {
        // Checked at insertion: address + size does not overflow.
        self.address.saturating_add(self.size)
    }
}

/// Most DMA maps with a file per client. Each is a mapping in the agent (a VMA, of which a
/// process has about 65530) and a slot in the node-wide SIGBUS table, so one client must
/// not be able to use them up for everyone. QEMU maps a handful (one per RAM block).
pub const MAX_FILE_MAPS: usize = 512;

/// The DMA regions of one client, sorted by address, non-overlapping.
#[derive(Debug, Default)]
pub struct DmaTable {
    regions: RwLock<Vec<Region>>,
    allow_unsealed: AtomicBool,
    /// Written when a fault in one of our mappings was recovered.
    notify: OnceLock<Arc<OwnedFd>>,
}

impl DmaTable {
    pub fn new() -> DmaTable {
        DmaTable::default()
    }

    /// Accept files without `F_SEAL_SHRINK` (default: refused). A client shrinking such a
    /// file faults our next access; that fault is recovered and the client dropped.
    pub fn set_allow_unsealed(&self, allow: bool) {
        self.allow_unsealed.store(allow, Ordering::Relaxed);
    }

    /// The eventfd written when a fault on this table's memory was recovered (the vfio-user
    /// server's wake-up fd). Set once, before the first map; later calls are ignored.
    pub fn set_fault_notify(&self, fd: Arc<OwnedFd>) {
        let _ = self.notify.set(fd);
    }

    /// The first map whose memory faulted (address, size): the client truncated its file or
    /// its pages are gone. Such a map reads zeros until it is unmapped.
    pub fn faulted(&self) -> Option<(u64, u64)> {
        self.read_lock()
            .iter()
            .find(|r| r.mem.as_ref().is_some_and(|m| m.reader().faulted()))
            .map(|r| (r.address, r.size))
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Region>> {
        // A poisoned lock only means a reader panicked; the table itself is consistent.
        self.regions.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, Vec<Region>> {
        self.regions.read().unwrap_or_else(|e| e.into_inner())
    }

    /// DMA_MAP: records `[address, address+size)`; with an fd, maps it shared at `offset`.
    pub fn map(
        &self,
        address: u64,
        size: u64,
        offset: u64,
        flags: u32,
        fd: Option<OwnedFd>,
    ) -> Result<(), DmaError> {
        let prot = DmaProt::from_flags(flags)?;
        let end = address.checked_add(size);
        if size == 0 || end.is_none() {
            return Err(DmaError::BadRange { address, size });
        }
        // Check overlap and limits before the (costly) mmap, and again under the lock.
        self.check_insert(&self.read_lock(), address, size, fd.is_some())?;
        let mem = match fd {
            None => None,
            Some(fd) => {
                if !prot.read && !prot.write {
                    return Err(DmaError::BadFlags(flags));
                }
                let len =
                    usize::try_from(size).map_err(|_| DmaError::BadRange { address, size })?;
                // Mapping past the end of the file would turn a later access into SIGBUS
                // for the whole agent; refuse it up front.
                let file_size = fd::regular_file_size(fd.as_fd())
                    .map_err(|source| DmaError::Mmap {
                        address,
                        size,
                        source,
                    })?
                    .ok_or(DmaError::NotRegularFile { address, size })?;
                if offset.checked_add(size).is_none_or(|e| e > file_size) {
                    return Err(DmaError::BeyondFile {
                        address,
                        size,
                        offset,
                        file_size,
                    });
                }
                let sealed = fd::seals(fd.as_fd())
                    .map_err(|source| DmaError::Mmap {
                        address,
                        size,
                        source,
                    })?
                    .is_some_and(|s| s & libc::F_SEAL_SHRINK != 0);
                if !sealed && !self.allow_unsealed.load(Ordering::Relaxed) {
                    return Err(DmaError::Unsealed { address, size });
                }
                let notify = self.notify.get().map_or(-1, |f| f.as_raw_fd());
                let m = if prot.write {
                    MmapRw::map_client(fd.as_fd(), offset, len, notify).map(Mapping::ReadWrite)
                } else {
                    MmapRo::map_client(fd.as_fd(), offset, len, notify).map(Mapping::ReadOnly)
                }
                .map_err(|source| DmaError::Mmap {
                    address,
                    size,
                    source,
                })?;
                // The mapping keeps the memory alive; the fd itself is closed here.
                Some(m)
            }
        };
        let mut t = self.write_lock();
        let pos = self.check_insert(&t, address, size, mem.is_some())?;
        t.insert(
            pos,
            Region {
                address,
                size,
                prot,
                mem,
            },
        );
        Ok(())
    }

    /// Returns the insertion index if `[address, address+size)` overlaps nothing.
    fn check_insert(
        &self,
        t: &[Region],
        address: u64,
        size: u64,
        with_file: bool,
    ) -> Result<usize, DmaError> {
        if t.len() >= MAX_DMA_MAPS as usize {
            return Err(DmaError::TooMany(MAX_DMA_MAPS));
        }
        if with_file && t.iter().filter(|r| r.mem.is_some()).count() >= MAX_FILE_MAPS {
            return Err(DmaError::TooManyFiles(MAX_FILE_MAPS));
        }
        let end = address.saturating_add(size);
        let pos = t.partition_point(|r| r.address < address);
        let prev_overlaps = pos > 0 && t.get(pos - 1).is_some_and(|r| r.end() > address);
        let next_overlaps = t.get(pos).is_some_and(|r| r.address < end);
        if prev_overlaps || next_overlaps {
            return Err(DmaError::Overlap { address, size });
        }
        Ok(pos)
    }

    /// DMA_UNMAP: removes the map that is exactly `[address, address+size)`. Returns after
    /// every dataplane access that could use it has finished (write lock).
    pub fn unmap(&self, address: u64, size: u64) -> Result<(), DmaError> {
        let removed = {
            let mut t = self.write_lock();
            let pos = t
                .iter()
                .position(|r| r.address == address && r.size == size)
                .ok_or(DmaError::NotFound { address, size })?;
            t.remove(pos)
        };
        drop(removed);
        Ok(())
    }

    /// Unmaps everything (client disconnect, DMA_UNMAP with the ALL flag).
    pub fn clear(&self) {
        let old = std::mem::take(&mut *self.write_lock());
        drop(old);
    }

    /// Number of maps (with or without fd).
    pub fn map_count(&self) -> usize {
        self.read_lock().len()
    }

    /// Holds the read lock for a whole dataplane pass; unmaps wait until it is dropped.
    pub fn lock(&self) -> DmaGuard<'_> {
        DmaGuard {
            regions: self.read_lock(),
        }
    }
}

/// A read-locked view of the DMA table; implements [`GuestMemory`] without further locking.
#[derive(Debug)]
pub struct DmaGuard<'a> {
    regions: RwLockReadGuard<'a, Vec<Region>>,
}

/// Finds the mapping holding all of `[addr, addr+len)` with the read right, and the offset of
/// `addr` in it. The hot path: no error is built unless the access fails.
#[inline(always)]
fn locate_read(t: &[Region], addr: u64, len: usize) -> Result<(&MmapRo, usize), MemError> {
    let pos = t.partition_point(|r| r.address <= addr);
    if let Some(r) = pos.checked_sub(1).and_then(|i| t.get(i)) {
        // r.address <= addr, so no underflow.
        let off = addr - r.address;
        let fits = off < r.size && (len as u64) <= r.size - off;
        if let (true, true, Some(mem)) = (fits, r.prot.read, r.mem.as_ref()) {
            // off < size, and size fit a usize when it was mapped.
            return Ok((mem.reader(), off as usize));
        }
    }
    Err(locate_error(t, addr, len, false))
}

/// [`locate_read`] for a write. A map has a read-write mapping exactly when the client gave
/// it the WRITE right, so the mapping's type is the right.
#[inline(always)]
fn locate_write(t: &[Region], addr: u64, len: usize) -> Result<(&MmapRw, usize), MemError> {
    let pos = t.partition_point(|r| r.address <= addr);
    if let Some(r) = pos.checked_sub(1).and_then(|i| t.get(i)) {
        let off = addr - r.address;
        let fits = off < r.size && (len as u64) <= r.size - off;
        if let (true, Some(Mapping::ReadWrite(mem))) = (fits, r.mem.as_ref()) {
            return Ok((mem, off as usize));
        }
    }
    Err(locate_error(t, addr, len, true))
}

/// Why a locate failed: a mapping that holds the range but lacks the right is `Denied`,
/// anything else `Unmapped`.
#[cold]
#[inline(never)]
fn locate_error(t: &[Region], addr: u64, len: usize, write: bool) -> MemError {
    let pos = t.partition_point(|r| r.address <= addr);
    let holder = pos.checked_sub(1).and_then(|i| t.get(i)).filter(|r| {
        let off = addr - r.address;
        off < r.size && (len as u64) <= r.size - off && r.mem.is_some()
    });
    match holder {
        Some(_) => MemError::Denied {
            addr,
            len,
            access: if write { "write" } else { "read" },
        },
        None => MemError::Unmapped { addr, len },
    }
}

#[cold]
#[inline(never)]
fn unmapped(addr: u64, len: usize) -> MemError {
    MemError::Unmapped { addr, len }
}

#[inline(always)]
fn read_in(t: &[Region], addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
    let (m, off) = locate_read(t, addr, buf.len())?;
    match m.read(off, buf) {
        Some(()) => Ok(()),
        None => Err(unmapped(addr, buf.len())),
    }
}

#[inline(always)]
fn write_in(t: &[Region], addr: u64, data: &[u8]) -> Result<(), MemError> {
    let (m, off) = locate_write(t, addr, data.len())?;
    match m.write(off, data) {
        Some(()) => Ok(()),
        None => Err(unmapped(addr, data.len())),
    }
}

impl GuestMemory for DmaGuard<'_> {
    // Always inlined: the ring code calls these once or twice per packet, and the call and
    // the returned Result cost as much as the lookup itself.
    #[inline(always)]
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        read_in(&self.regions, addr, buf)
    }
    #[inline(always)]
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        write_in(&self.regions, addr, data)
    }
    #[inline]
    fn write_ordered(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let (m, off) = locate_write(&self.regions, addr, data.len())?;
        m.write_ordered(off, data)
            .ok_or_else(|| unmapped(addr, data.len()))
    }
    #[inline]
    fn read_ordered(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let (m, off) = locate_read(&self.regions, addr, buf.len())?;
        m.read_ordered(off, buf)
            .ok_or_else(|| unmapped(addr, buf.len()))
    }
    #[inline]
    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        let (m, off) = locate_read(&self.regions, addr, 8)?;
        m.read_u64(off).ok_or_else(|| unmapped(addr, 8))
    }
    #[inline]
    fn read_u32(&self, addr: u64) -> Result<u32, MemError> {
        let (m, off) = locate_read(&self.regions, addr, 4)?;
        m.read_u32(off).ok_or_else(|| unmapped(addr, 4))
    }
    #[inline]
    fn write_u64(&self, addr: u64, v: u64) -> Result<(), MemError> {
        let (m, off) = locate_write(&self.regions, addr, 8)?;
        m.write_u64(off, v).ok_or_else(|| unmapped(addr, 8))
    }
    #[inline]
    fn write_u32(&self, addr: u64, v: u32) -> Result<(), MemError> {
        let (m, off) = locate_write(&self.regions, addr, 4)?;
        m.write_u32(off, v).ok_or_else(|| unmapped(addr, 4))
    }
}

impl GuestMemory for DmaTable {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        read_in(&self.read_lock(), addr, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        write_in(&self.read_lock(), addr, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: u32 = 3;

    #[test]
    fn map_rejects_overlap_empty_and_wrapping() {
        let t = DmaTable::new();
        t.map(0x1000, 0x1000, 0, RW, None).unwrap();
        assert_eq!(
            t.map(0x1800, 0x1000, 0, RW, None).unwrap_err().errno(),
            libc::EEXIST
        );
        assert_eq!(
            t.map(0x0800, 0x1000, 0, RW, None).unwrap_err().errno(),
            libc::EEXIST
        );
        assert_eq!(
            t.map(0x0, 0x10000, 0, RW, None).unwrap_err().errno(),
            libc::EEXIST
        );
        t.map(0x2000, 0x1000, 0, RW, None).unwrap(); // adjacent is fine
        t.map(0x0, 0x1000, 0, RW, None).unwrap();
        assert_eq!(
            t.map(0x9000, 0, 0, RW, None).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(
            t.map(u64::MAX, 2, 0, RW, None).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(
            t.map(0x9000, 1, 0, 4, None).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(t.map_count(), 3);
        assert_eq!(t.unmap(0x1000, 0x800).unwrap_err().errno(), libc::ENOENT);
        t.unmap(0x1000, 0x1000).unwrap();
        assert_eq!(t.map_count(), 2);
        t.clear();
        assert_eq!(t.map_count(), 0);
    }

    #[test]
    fn memfd_map_is_guest_memory_with_bounds() {
        let fd = fd::memfd("dma-test", 0x3000).unwrap();
        let t = DmaTable::new();
        t.map(0x10_0000, 0x2000, 0x1000, RW, Some(fd)).unwrap();
        t.write_u32(0x10_1ffc, 0xdead_beef).unwrap();
        assert_eq!(t.read_u32(0x10_1ffc).unwrap(), 0xdead_beef);
        let g = t.lock();
        assert!(g.read_u32(0x10_1ffd).is_err()); // crosses the end
        assert!(g.read_u32(0x0f_fffe).is_err()); // starts before
        assert!(g.read(u64::MAX - 1, &mut [0; 4]).is_err()); // wraps
        drop(g);
        // Read-only map refuses writes with Denied.
        let fd2 = fd::memfd("dma-ro", 0x1000).unwrap();
        t.map(0x20_0000, 0x1000, 0, 1, Some(fd2)).unwrap();
        assert!(matches!(
            t.write_u32(0x20_0000, 1),
            Err(MemError::Denied {
                access: "write",
                ..
            })
        ));
        assert_eq!(t.read_u32(0x20_0000).unwrap(), 0);
        // Past the end of the file: refused instead of a later SIGBUS.
        let fd3 = fd::memfd("dma-small", 0x1000).unwrap();
        assert_eq!(
            t.map(0x30_0000, 0x2000, 0, RW, Some(fd3))
                .unwrap_err()
                .errno(),
            libc::EINVAL
        );
    }

    #[test]
    fn write_only_map_refuses_reads_and_takes_writes() {
        let t = DmaTable::new();
        let fd = fd::memfd("dma-wo", 0x1000).unwrap();
        t.map(0x4000, 0x1000, 0, DMA_MAP_FLAG_WRITE, Some(fd))
            .unwrap();
        t.write_u64(0x4008, 0x1122_3344_5566_7788).unwrap();
        assert!(matches!(
            t.read_u64(0x4008),
            Err(MemError::Denied { access: "read", .. })
        ));
    }

    #[test]
    fn unsealed_files_are_refused_unless_allowed() {
        let t = DmaTable::new();
        let fd = fd::memfd_unsealed("dma-unsealed", 0x1000).unwrap();
        let e = t.map(0x1000, 0x1000, 0, RW, Some(fd)).unwrap_err();
        assert!(matches!(e, DmaError::Unsealed { .. }), "{e}");
        assert_eq!(e.errno(), libc::EPERM);
        assert!(e.to_string().contains("F_SEAL_SHRINK"), "{e}");
        t.set_allow_unsealed(true);
        let fd = fd::memfd_unsealed("dma-unsealed", 0x1000).unwrap();
        t.map(0x1000, 0x1000, 0, RW, Some(fd)).unwrap();
        // Sealed files are always accepted, and cannot be shrunk by their owner.
        let t = DmaTable::new();
        let fd = fd::memfd("dma-sealed", 0x1000).unwrap();
        let keep = fd.try_clone().unwrap();
        t.map(0x1000, 0x1000, 0, RW, Some(fd)).unwrap();
        let f = std::fs::File::from(keep);
        assert!(f.set_len(0).is_err(), "a sealed memfd shrank");
        assert_eq!(t.read_u32(0x1000).unwrap(), 0);
    }

    #[test]
    fn a_file_shrunk_under_a_map_faults_only_that_map() {
        let t = DmaTable::new();
        t.set_allow_unsealed(true);
        let notify = Arc::new(fd::eventfd().unwrap());
        t.set_fault_notify(notify.clone());
        let fd = fd::memfd_unsealed("dma-shrink", 0x4000).unwrap();
        let keep = std::fs::File::from(fd.try_clone().unwrap());
        t.map(0x10_0000, 0x4000, 0, RW, Some(fd)).unwrap();
        let other = fd::memfd("dma-other", 0x1000).unwrap();
        t.map(0x20_0000, 0x1000, 0, RW, Some(other)).unwrap();
        t.write_u32(0x10_3000, 0x1234_5678).unwrap();
        t.write_u32(0x20_0000, 0xfeed).unwrap();
        assert_eq!(t.faulted(), None);

        keep.set_len(0).unwrap();
        // Without the recovery this read kills the process with SIGBUS.
        assert_eq!(t.read_u32(0x10_3000).unwrap(), 0);
        t.write_u32(0x10_3000, 7).unwrap();
        assert_eq!(t.faulted(), Some((0x10_0000, 0x4000)));
        assert_eq!(fd::eventfd_read(notify.as_fd()).unwrap(), 1);
        assert!(crate::faults_recovered() >= 1);
        // The other map is untouched.
        assert_eq!(t.read_u32(0x20_0000).unwrap(), 0xfeed);
        t.unmap(0x10_0000, 0x4000).unwrap();
        assert_eq!(t.faulted(), None);
    }

    #[test]
    fn file_maps_per_client_are_limited() {
        let t = DmaTable::new();
        let fd = fd::memfd("dma-many", 0x1000).unwrap();
        for i in 0..MAX_FILE_MAPS as u64 {
            t.map(i * 0x1000, 0x1000, 0, RW, Some(fd.try_clone().unwrap()))
                .unwrap();
        }
        let e = t
            .map(0x1000_0000, 0x1000, 0, RW, Some(fd.try_clone().unwrap()))
            .unwrap_err();
        assert_eq!(e.errno(), libc::ENOSPC);
        // Maps without a file cost no mapping and stay allowed.
        t.map(0x2000_0000, 0x1000, 0, RW, None).unwrap();
        t.clear();
    }

    #[test]
    fn fdless_map_is_recorded_but_not_accessible() {
        let t = DmaTable::new();
        t.map(0xc0000, 0x20000, 0, RW, None).unwrap();
        assert_eq!(
            t.read_u32(0xc0000),
            Err(MemError::Unmapped {
                addr: 0xc0000,
                len: 4
            })
        );
    }
}
