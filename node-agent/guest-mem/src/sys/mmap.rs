//! Shared mappings of memory files, read-only ([`MmapRo`]) and read-write ([`MmapRw`]) as
//! distinct types: memory a client granted for reading only is mapped `PROT_READ` and has no
//! write method to call. All accesses copy bytes (volatile for descriptor-sized ones); no
//! Rust reference into the mapping is ever handed out, except the atomic words of
//! [`MmapRw::words`].

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use super::sigbus;

/// The rights a mapping is created with.
#[derive(Debug, Clone, Copy)]
enum Prot {
    Read,
    ReadWrite,
}

/// A `MAP_SHARED` mapping; unmapped on drop. Private: [`MmapRo`] and [`MmapRw`] say which
/// accesses it allows.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Set for client memory: a SIGBUS inside the mapping is recovered (see [`sigbus`]).
    guard: Option<sigbus::Registration>,
}

// SAFETY: the mapping is plain shared memory owned by this value; all accesses go through
// `read`/`write`, which copy bytes and keep no references, so it may move between and be
// used from several threads at once.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`; `&Mapping` only allows byte copies in and out of the mapping.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` at file offset `offset`, shared, with the given rights.
    fn map_shared(fd: BorrowedFd<'_>, offset: u64, len: usize, prot: Prot) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let prot = match prot {
            Prot::Read => libc::PROT_READ,
            Prot::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        };
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL) cannot alias any Rust
        // object; fd is a valid open descriptor borrowed for the call; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Mapping {
            ptr,
            len,
            guard: None,
        })
    }

    /// Registers the mapping with the SIGBUS recovery (memory a client owns and may
    /// truncate under us): a SIGBUS in it is recovered (the range becomes zero-filled private
    /// memory) and `notify` (an eventfd, or -1) is written. Fails with `ENOSPC` when the
    /// node-wide table of protected mappings ([`sigbus::CAPACITY`]) is full.
    fn protect(mut self, notify: RawFd) -> io::Result<Mapping> {
        let reg = sigbus::register(self.ptr.as_ptr() as usize, self.len, notify)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOSPC))?;
        self.guard = Some(reg);
        Ok(self)
    }

    /// Whether a SIGBUS in this (client) mapping was recovered: the client shrank its file
    /// or its pages are gone, and the mapping now reads as zeros.
    fn faulted(&self) -> bool {
        self.guard
            .as_ref()
            .is_some_and(sigbus::Registration::faulted)
    }

    #[inline]
    fn check(&self, off: usize, n: usize) -> Option<()> {
        (off <= self.len && n <= self.len - off).then_some(())
    }

    /// Copies `buf.len()` bytes from offset `off`; `None` when out of range.
    #[inline]
    fn read(&self, off: usize, buf: &mut [u8]) -> Option<()> {
        self.check(off, buf.len())?;
        // SAFETY: off+len <= self.len was checked, so the source lies inside our live
        // mapping, and `buf` is a distinct Rust buffer. The guest (another process) may write
        // the same bytes concurrently; we only ever treat them as plain bytes with no
        // validity invariant, so a torn read yields garbage data, never unsoundness in
        // our own objects. Every mapping is readable (PROT_READ).
        unsafe {
            let src = self.ptr.as_ptr().add(off);
            if buf.len() <= VOLATILE_MAX {
                volatile_read(src, buf);
            } else {
                copy_bytes(src, buf.as_mut_ptr(), buf.len());
            }
        }
        Some(())
    }

    /// Copies `data` to offset `off`; `None` when out of range.
    #[inline]
    fn write(&self, off: usize, data: &[u8]) -> Option<()> {
        self.check(off, data.len())?;
        // SAFETY: bounds checked as in `read`; the mapping is writable (only `MmapRw`, mapped
        // PROT_READ | PROT_WRITE, calls this); no Rust reference into the mapping exists, so concurrent byte
        // writes by the guest are a data race on raw bytes only.
        unsafe {
            let dst = self.ptr.as_ptr().add(off);
            if data.len() <= VOLATILE_MAX {
                volatile_write(dst, data);
            } else {
                copy_bytes(data.as_ptr(), dst, data.len());
            }
        }
        Some(())
    }

    /// Copies `buf.len()` bytes from offset `off` with volatile accesses, whatever the size:
    /// aligned 8-byte words each read once, in ascending order (descriptor blocks another
    /// CPU writes); `None` when out of range.
    #[inline]
    fn read_ordered(&self, off: usize, buf: &mut [u8]) -> Option<()> {
        self.check(off, buf.len())?;
        // SAFETY: as in `read`: off+len <= self.len was checked, `buf` is a distinct buffer.
        unsafe { volatile_read(self.ptr.as_ptr().add(off), buf) };
        Some(())
    }

    /// Copies `data` to offset `off` with volatile accesses, whatever the size: aligned
    /// 8-byte words each stored once, in ascending order (descriptor write-backs another CPU
    /// polls); `None` when out of range.
    #[inline]
    fn write_ordered(&self, off: usize, data: &[u8]) -> Option<()> {
        self.check(off, data.len())?;
        // SAFETY: as in `write`: bounds checked, the mapping is writable (only `MmapRw`, mapped
        // PROT_READ | PROT_WRITE, calls this), no Rust reference into the mapping exists.
        unsafe { volatile_write(self.ptr.as_ptr().add(off), data) };
        Some(())
    }

    /// Reads the little-endian u64 at `off` with one volatile load when it is 8-byte aligned
    /// (a guest's aligned 64-bit store is never torn); `None` when out of range.
    #[inline]
    fn read_u64(&self, off: usize) -> Option<u64> {
        self.check(off, 8)?;
        // SAFETY: off+8 <= self.len was checked; an unaligned offset takes the byte path.
        unsafe {
            let p = self.ptr.as_ptr().add(off);
            if (p as usize).is_multiple_of(8) {
                Some(u64::from_le(std::ptr::read_volatile(p.cast::<u64>())))
            } else {
                let mut b = [0u8; 8];
                volatile_read(p, &mut b);
                Some(u64::from_le_bytes(b))
            }
        }
    }

    /// Writes `v` little-endian at `off` (one volatile store when aligned); `None` when out
    /// of range.
    #[inline]
    fn write_u64(&self, off: usize, v: u64) -> Option<()> {
        self.check(off, 8)?;
        // SAFETY: off+8 <= self.len was checked; only `MmapRw` (PROT_WRITE) writes.
        unsafe {
            let p = self.ptr.as_ptr().add(off);
            if (p as usize).is_multiple_of(8) {
                std::ptr::write_volatile(p.cast::<u64>(), v.to_le());
            } else {
                volatile_write(p, &v.to_le_bytes());
            }
        }
        Some(())
    }

    /// Reads the little-endian u32 at `off` (one volatile load when 4-byte aligned).
    #[inline]
    fn read_u32(&self, off: usize) -> Option<u32> {
        self.check(off, 4)?;
        // SAFETY: off+4 <= self.len was checked; an unaligned offset takes the byte path.
        unsafe {
            let p = self.ptr.as_ptr().add(off);
            if (p as usize).is_multiple_of(4) {
                Some(u32::from_le(std::ptr::read_volatile(p.cast::<u32>())))
            } else {
                let mut b = [0u8; 4];
                volatile_read(p, &mut b);
                Some(u32::from_le_bytes(b))
            }
        }
    }

    /// Writes `v` little-endian at `off` (one volatile store when 4-byte aligned).
    #[inline]
    fn write_u32(&self, off: usize, v: u32) -> Option<()> {
        self.check(off, 4)?;
        // SAFETY: off+4 <= self.len was checked; only `MmapRw` (PROT_WRITE) writes.
        unsafe {
            let p = self.ptr.as_ptr().add(off);
            if (p as usize).is_multiple_of(4) {
                std::ptr::write_volatile(p.cast::<u32>(), v.to_le());
            } else {
                volatile_write(p, &v.to_le_bytes());
            }
        }
        Some(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Deregister first: once unmapped, the address range may be reused by anything.
        drop(self.guard.take());
        // SAFETY: ptr/len describe exactly the mapping created in `map_shared`, which is
        // unmapped only here, once; no references into it outlive `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl Mapping {
    /// The mapping as 32-bit atomic words (its length rounded down to whole words).
    fn words(&self) -> &[std::sync::atomic::AtomicU32] {
        let n = self.len / size_of::<u32>();
        // SAFETY: mmap returns page-aligned memory, so the pointer is aligned for AtomicU32,
        // which has the size and alignment of u32; the n words lie inside the live mapping,
        // which outlives the returned borrow of `self`. Other processes (the client) may
        // write the same memory concurrently: from our side every access goes through the
        // atomics, which is exactly what they are for, and u32 has no invalid bit patterns.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast(), n) }
    }
}

/// A read-only shared mapping (`PROT_READ`).
#[derive(Debug)]
pub struct MmapRo(Mapping);

impl MmapRo {
    /// Maps `len` bytes of `fd` at file offset `offset`, shared and read-only.
    pub fn map_shared(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<MmapRo> {
        Mapping::map_shared(fd, offset, len, Prot::Read).map(MmapRo)
    }

    /// [`MmapRo::map_shared`] for memory a client owns and may truncate under us: a SIGBUS in
    /// it is recovered (the range becomes zero-filled private memory) and `notify` (an
    /// eventfd, or -1) is written. Fails with `ENOSPC` when the node-wide table of protected
    /// mappings ([`sigbus::CAPACITY`]) is full.
    pub fn map_client(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        notify: RawFd,
    ) -> io::Result<MmapRo> {
        Mapping::map_shared(fd, offset, len, Prot::Read)?
            .protect(notify)
            .map(MmapRo)
    }

    /// Whether a SIGBUS in this (client) mapping was recovered: the client shrank its file
    /// or its pages are gone, and the mapping now reads as zeros.
    pub fn faulted(&self) -> bool {
        self.0.faulted()
    }

    /// Copies `buf.len()` bytes from offset `off`; `None` when out of range.
    #[inline(always)]
    pub fn read(&self, off: usize, buf: &mut [u8]) -> Option<()> {
        self.0.read(off, buf)
    }

    /// Copies `buf.len()` bytes from offset `off` with volatile accesses, whatever the size:
    /// aligned 8-byte words each read once, in ascending order (descriptor blocks another
    /// CPU writes); `None` when out of range.
    #[inline(always)]
    pub fn read_ordered(&self, off: usize, buf: &mut [u8]) -> Option<()> {
        self.0.read_ordered(off, buf)
    }

    /// Reads the little-endian u64 at `off` with one volatile load when it is 8-byte aligned
    /// (a guest's aligned 64-bit store is never torn); `None` when out of range.
    #[inline(always)]
    pub fn read_u64(&self, off: usize) -> Option<u64> {
        self.0.read_u64(off)
    }

    /// Reads the little-endian u32 at `off` (one volatile load when 4-byte aligned).
    #[inline(always)]
    pub fn read_u32(&self, off: usize) -> Option<u32> {
        self.0.read_u32(off)
    }
}

/// A read-write shared mapping (`PROT_READ | PROT_WRITE`); [`MmapRw::as_ro`] reads it.
#[derive(Debug)]
pub struct MmapRw(MmapRo);

impl MmapRw {
    /// Maps `len` bytes of `fd` at file offset `offset`, shared and read-write.
    pub fn map_shared(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<MmapRw> {
        Mapping::map_shared(fd, offset, len, Prot::ReadWrite).map(|m| MmapRw(MmapRo(m)))
    }

    /// The read-write counterpart of [`MmapRo::map_client`].
    pub fn map_client(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        notify: RawFd,
    ) -> io::Result<MmapRw> {
        Mapping::map_shared(fd, offset, len, Prot::ReadWrite)?
            .protect(notify)
            .map(|m| MmapRw(MmapRo(m)))
    }

    /// The same mapping, for reading.
    #[inline(always)]
    pub fn as_ro(&self) -> &MmapRo {
        &self.0
    }

    /// Copies `data` to offset `off`; `None` when out of range.
    #[inline(always)]
    pub fn write(&self, off: usize, data: &[u8]) -> Option<()> {
        self.0 .0.write(off, data)
    }

    /// Copies `data` to offset `off` with volatile accesses, whatever the size: aligned
    /// 8-byte words each stored once, in ascending order (descriptor write-backs another CPU
    /// polls); `None` when out of range.
    #[inline(always)]
    pub fn write_ordered(&self, off: usize, data: &[u8]) -> Option<()> {
        self.0 .0.write_ordered(off, data)
    }

    /// Writes `v` little-endian at `off` (one volatile store when aligned); `None` when out
    /// of range.
    #[inline(always)]
    pub fn write_u64(&self, off: usize, v: u64) -> Option<()> {
        self.0 .0.write_u64(off, v)
    }

    /// Writes `v` little-endian at `off` (one volatile store when 4-byte aligned).
    #[inline(always)]
    pub fn write_u32(&self, off: usize, v: u32) -> Option<()> {
        self.0 .0.write_u32(off, v)
    }

    /// The mapping as 32-bit atomic words (its length rounded down to whole words).
    pub fn words(&self) -> &[AtomicU32] {
        self.0 .0.words()
    }
}

/// Accesses up to this size (descriptors, status words, doorbell-adjacent metadata: what a
/// guest driver and the device hand back and forth) use volatile word copies; bigger ones
/// (packet payloads) use `memcpy`, whose speed matters and whose bytes steer no control flow.
/// Plain copies of small shared fields let the compiler merge or re-read them: a userspace
/// driver at several Mpps saw RX rings diverge until these became volatile.
const VOLATILE_MAX: usize = 32;

/// Copies `n` (> [`VOLATILE_MAX`]) bytes from `src` to `dst`. Up to 64 bytes (a minimum
/// frame) it is two fixed-size 32-byte copies, the second ending at the last byte: they
/// compile to a few vector moves instead of a `memcpy` call. The bytes in the overlap are
/// read, or written with the same values, twice, which nobody can tell from once.
///
/// # Safety
/// `src..src+n` must be readable and `dst..dst+n` writable, not overlapping each other,
/// and `n >= 32`.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, n: usize) {
    const HALF: usize = 32;
    if n <= 2 * HALF {
        // SAFETY: HALF <= n, so both [0, HALF) and [n - HALF, n) lie inside both ranges.
        unsafe {
            std::ptr::copy_nonoverlapping(src, dst, HALF);
            std::ptr::copy_nonoverlapping(src.add(n - HALF), dst.add(n - HALF), HALF);
        }
    } else {
        // SAFETY: the caller guarantees both ranges.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, n) };
    }
}

const _: () = assert!(VOLATILE_MAX >= 32, "copy_bytes needs n >= 32");

/// Copies guest memory at `src` into `dst` with volatile accesses: the compiler may neither
/// elide, repeat, merge nor reorder them with other volatile accesses, which is what memory
/// shared with a guest driver on another CPU needs (vm-memory does the same). Aligned 8-byte
/// words are copied as single loads, so a guest's aligned 64-bit store is never torn.
///
/// # Safety
/// `src..src+dst.len()` must lie inside a live mapping.
#[inline]
unsafe fn volatile_read(src: *const u8, dst: &mut [u8]) {
    let n = dst.len();
    if (src as usize).is_multiple_of(8) && n.is_multiple_of(8) {
        // The common case (descriptors): whole aligned words.
        for (k, chunk) in dst.chunks_exact_mut(8).enumerate() {
            // SAFETY: 8k+8 <= n and src is 8-byte aligned; the caller guarantees the range.
            let v = unsafe { std::ptr::read_volatile(src.add(8 * k).cast::<u64>()) };
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        return;
    }
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and the caller guarantees src..src+n is mapped.
        let p = unsafe { src.add(i) };
        if (p as usize).is_multiple_of(8) && n - i >= 8 {
            // SAFETY: p is 8-byte aligned and p..p+8 is inside the mapping.
            let v = unsafe { std::ptr::read_volatile(p.cast::<u64>()) };
            dst[i..i + 8].copy_from_slice(&v.to_ne_bytes());
            i += 8;
        } else {
            // SAFETY: p is inside the mapping.
            dst[i] = unsafe { std::ptr::read_volatile(p) };
            i += 1;
        }
    }
}

/// The write counterpart of [`volatile_read`].
///
/// # Safety
/// `dst..dst+src.len()` must lie inside a live, writable mapping.
#[inline]
unsafe fn volatile_write(dst: *mut u8, src: &[u8]) {
    let n = src.len();
    if (dst as usize).is_multiple_of(8) && n.is_multiple_of(8) {
        for (k, chunk) in src.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            // SAFETY: 8k+8 <= n and dst is 8-byte aligned; the caller guarantees the range
            // is mapped and writable.
            unsafe {
                std::ptr::write_volatile(dst.add(8 * k).cast::<u64>(), u64::from_ne_bytes(w))
            };
        }
        return;
    }
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and the caller guarantees dst..dst+n is mapped and writable.
        let p = unsafe { dst.add(i) };
        if (p as usize).is_multiple_of(8) && n - i >= 8 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&src[i..i + 8]);
            // SAFETY: p is 8-byte aligned and p..p+8 is inside the writable mapping.
            unsafe { std::ptr::write_volatile(p.cast::<u64>(), u64::from_ne_bytes(w)) };
            i += 8;
        } else {
            // SAFETY: p is inside the writable mapping.
            unsafe { std::ptr::write_volatile(p, src[i]) };
            i += 1;
        }
    }
}
