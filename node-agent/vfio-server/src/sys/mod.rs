//! Every `unsafe` call of the crate: mmap/munmap of DMA regions, recvmsg/sendmsg with
//! SCM_RIGHTS, eventfd, memfd and poll. Each wrapper is safe to call with any argument.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

pub mod sigbus;

/// Most fds accepted in one message (the vfio-user `max_msg_fds` we announce).
pub const MAX_FDS: usize = 16;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A `MAP_SHARED` mapping of a client-provided fd; unmapped on drop.
#[derive(Debug)]
pub struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
    /// Set for client memory: a SIGBUS inside the mapping is recovered (see [`sigbus`]).
    guard: Option<sigbus::Registration>,
}

// SAFETY: the mapping is plain shared memory owned by this value; all accesses go through
// `read`/`write`, which copy bytes and keep no references, so it may move between and be
// used from several threads at once.
unsafe impl Send for Mmap {}
// SAFETY: see `Send`; `&Mmap` only allows byte copies in and out of the mapping.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `len` bytes of `fd` at file offset `offset`, shared, with the given rights.
    pub fn map_shared(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        read: bool,
        write: bool,
    ) -> io::Result<Mmap> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut prot = 0;
        if read {
            prot |= libc::PROT_READ;
        }
        if write {
            prot |= libc::PROT_WRITE;
        }
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
        Ok(Mmap {
            ptr,
            len,
            guard: None,
        })
    }

    /// [`Mmap::map_shared`] for memory a client owns and may truncate under us: a SIGBUS in
    /// it is recovered (the range becomes zero-filled private memory) and `notify` (an
    /// eventfd, or -1) is written. Fails with `ENOSPC` when the node-wide table of protected
    /// mappings ([`sigbus::CAPACITY`]) is full.
    pub fn map_client(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        read: bool,
        write: bool,
        notify: RawFd,
    ) -> io::Result<Mmap> {
        let mut m = Mmap::map_shared(fd, offset, len, read, write)?;
        let reg = sigbus::register(m.ptr.as_ptr() as usize, m.len, notify)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOSPC))?;
        m.guard = Some(reg);
        Ok(m)
    }

    /// Whether a SIGBUS in this (client) mapping was recovered: the client shrank its file
    /// or its pages are gone, and the mapping now reads as zeros.
    pub fn faulted(&self) -> bool {
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
    pub fn read(&self, off: usize, buf: &mut [u8]) -> Option<()> {
        self.check(off, buf.len())?;
        // SAFETY: off+len <= self.len was checked, so the source lies inside our live
        // mapping, and `buf` is a distinct Rust buffer. The guest (another process) may write
        // the same bytes concurrently; we only ever treat them as plain bytes with no
        // validity invariant, so a torn read yields garbage data, never unsoundness in
        // our own objects. Protections: a write-only mapping is never read (checked by the
        // caller via the region's rights).
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
    pub fn write(&self, off: usize, data: &[u8]) -> Option<()> {
        self.check(off, data.len())?;
        // SAFETY: bounds checked as in `read`; the mapping is writable (the caller checks the
        // region's rights); no Rust reference into the mapping exists, so concurrent byte
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
    pub fn read_ordered(&self, off: usize, buf: &mut [u8]) -> Option<()> {
        self.check(off, buf.len())?;
        // SAFETY: as in `read`: off+len <= self.len was checked, `buf` is a distinct buffer.
        unsafe { volatile_read(self.ptr.as_ptr().add(off), buf) };
        Some(())
    }

    /// Copies `data` to offset `off` with volatile accesses, whatever the size: aligned
    /// 8-byte words each stored once, in ascending order (descriptor write-backs another CPU
    /// polls); `None` when out of range.
    #[inline]
    pub fn write_ordered(&self, off: usize, data: &[u8]) -> Option<()> {
        self.check(off, data.len())?;
        // SAFETY: as in `write`: bounds checked, the mapping is writable (the caller checks
        // the region's rights), no Rust reference into the mapping exists.
        unsafe { volatile_write(self.ptr.as_ptr().add(off), data) };
        Some(())
    }

    /// Reads the little-endian u64 at `off` with one volatile load when it is 8-byte aligned
    /// (a guest's aligned 64-bit store is never torn); `None` when out of range.
    #[inline]
    pub fn read_u64(&self, off: usize) -> Option<u64> {
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
    pub fn write_u64(&self, off: usize, v: u64) -> Option<()> {
        self.check(off, 8)?;
        // SAFETY: off+8 <= self.len was checked; the caller checked write rights.
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
    pub fn read_u32(&self, off: usize) -> Option<u32> {
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
    pub fn write_u32(&self, off: usize, v: u32) -> Option<()> {
        self.check(off, 4)?;
        // SAFETY: off+4 <= self.len was checked; the caller checked write rights.
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

impl Drop for Mmap {
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

/// `Some(size)` when `fd` is a regular file (memfd, tmpfs, hugetlbfs), `None` otherwise.
pub fn regular_file_size(fd: BorrowedFd<'_>) -> io::Result<Option<u64>> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is valid for the call and `st` is a writable stat buffer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        Ok(u64::try_from(st.st_size).ok())
    } else {
        Ok(None)
    }
}

/// The seals of `fd` (`F_GET_SEALS`), or `None` when its file system has no seals.
pub fn seals(fd: BorrowedFd<'_>) -> io::Result<Option<libc::c_int>> {
    // SAFETY: fcntl F_GET_SEALS on a valid fd, no pointers.
    match cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) }) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `fd` is an eventfd. Pipes, FIFOs, sockets, files and devices (whose writes can
/// block, fill a disk or reach another process) have a file type; an eventfd is an
/// anonymous inode without one. Its /proc link then tells it from the other anonymous
/// inodes (signalfd, timerfd, epoll: writes to those fail at once, so where /proc is not
/// mounted an anonymous inode is accepted).
pub fn is_eventfd(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is valid for the call and `st` is a writable stat buffer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    if st.st_mode & libc::S_IFMT != 0 {
        return Ok(false);
    }
    match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(link) => Ok(link.as_os_str() == "anon_inode:[eventfd]"),
        Err(_) => Ok(true),
    }
}

/// A new eventfd (counter 0, non-blocking, close-on-exec).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall without pointers; the result is checked.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `v` to an eventfd counter (8-byte write). Never blocks when `fd` is non-blocking.
pub fn eventfd_write(fd: BorrowedFd<'_>, v: u64) -> io::Result<()> {
    let b = v.to_ne_bytes();
    // SAFETY: writes from a valid 8-byte buffer to a valid fd.
    let n = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), b.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != b.len() {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(())
}

/// Reads and resets an eventfd counter; `WouldBlock` when it is 0 and `fd` non-blocking.
pub fn eventfd_read(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut b = [0u8; 8];
    // SAFETY: reads into a valid 8-byte buffer from a valid fd.
    let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != b.len() {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(u64::from_ne_bytes(b))
}

/// A memfd of `size` bytes (close-on-exec) sealed against shrinking, growing and further
/// sealing, as QEMU's `memory-backend-memfd` seals guest RAM: whoever we hand it to (BAR
/// pages go to the client) cannot truncate it under our mapping.
pub fn memfd(name: &str, size: u64) -> io::Result<OwnedFd> {
    let fd = memfd_unsealed(name, size)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl F_ADD_SEALS on a valid memfd created with MFD_ALLOW_SEALING.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(fd)
}

/// A memfd of `size` bytes that still accepts seals and size changes (tests of clients that
/// do not seal).
pub fn memfd_unsealed(name: &str, size: u64) -> io::Result<OwnedFd> {
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: cname is a valid NUL-terminated string for the duration of the call.
    let fd = cvt(unsafe {
        libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len =
        libc::off_t::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: fd is a valid memfd; plain syscall.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(fd)
}

/// Sets O_NONBLOCK on `fd` (shared with every holder of the open file description).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on a valid fd, no pointers.
    let fl = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    if fl & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) })?;
    }
    Ok(())
}

/// What `poll2` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The main fd has the requested event, or an error/hangup condition.
    pub main: bool,
    /// The wake fd (shutdown eventfd) is readable.
    pub wake: bool,
}

/// Waits until `main` has `events` (POLLIN/POLLOUT) or `wake` is readable, or `timeout`.
/// EINTR is retried (with the full timeout; callers keep their own deadline).
pub fn poll2(
    main: BorrowedFd<'_>,
    events: libc::c_short,
    wake: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> io::Result<Ready> {
    let ms: libc::c_int = match timeout {
        None => -1,
        Some(d) => libc::c_int::try_from(d.as_millis().saturating_add(1)).unwrap_or(i32::MAX),
    };
    let mut fds = [
        libc::pollfd {
            fd: main.as_raw_fd(),
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of 2 pollfd for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(Ready {
            main: fds[0].revents != 0,
            wake: fds[1].revents != 0,
        });
    }
}

const CMSG_BUF_LEN: usize = 512;

/// `recvmsg` into `buf` without blocking, appending received fds (each owned, so nothing
/// leaks) to `fds`. Returns the byte count and whether control data was truncated (the
/// kernel then closes the fds that did not fit).
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<(usize, bool)> {
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; CMSG_BUF_LEN / 8];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<RawFd>()) as u32) } as usize;
    let space = space.min(CMSG_BUF_LEN);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero msghdr is valid; the pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points to a valid iovec over `buf` and a control buffer of `space`
    // bytes, all live for the call.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: msg was filled by recvmsg; the CMSG_* macros walk the control buffer within
    // msg_controllen as set by the kernel.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg is non-null and points into cbuf (kernel-written header).
        let hdr = unsafe { &*cmsg };
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: pure computation on a constant.
            let base = unsafe { libc::CMSG_LEN(0) } as usize;
            let data_len = (hdr.cmsg_len as usize).saturating_sub(base);
            let count = data_len / size_of::<RawFd>();
            // SAFETY: CMSG_DATA points at `data_len` bytes inside cbuf for this cmsg.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: i < count keeps the unaligned read inside this cmsg's data.
                let fd = unsafe { data.add(i).read_unaligned() };
                if fd >= 0 {
                    // SAFETY: SCM_RIGHTS installed this fd in our table just now; we are
                    // its only owner.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        // SAFETY: advances within the kernel-written control buffer; null at its end.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    let truncated = msg.msg_flags & libc::MSG_CTRUNC != 0;
    Ok((n as usize, truncated))
}

/// `sendmsg` without blocking and without SIGPIPE, with at most one fd attached.
pub fn send_with_fd(
    sock: BorrowedFd<'_>,
    buf: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<usize> {
    let mut cbuf = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: all-zero msghdr is valid; the pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: pure computation.
        let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer (32 bytes) holds CMSG_SPACE(4) = 24 bytes; we fill
        // the first header and its data inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
            libc::CMSG_DATA(cmsg)
                .cast::<RawFd>()
                .write_unaligned(fd.as_raw_fd());
        }
    }
    // SAFETY: msg points at a valid iovec over `buf` and, if set, a filled control buffer,
    // all live for the call.
    let n = unsafe {
        libc::sendmsg(
            sock.as_raw_fd(),
            &msg,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

impl Mmap {
    /// The mapping as 32-bit atomic words (its length rounded down to whole words).
    pub fn words(&self) -> &[std::sync::atomic::AtomicU32] {
        let n = self.len / size_of::<u32>();
        // SAFETY: mmap returns page-aligned memory, so the pointer is aligned for AtomicU32,
        // which has the size and alignment of u32; the n words lie inside the live mapping,
        // which outlives the returned borrow of `self`. Other processes (the client) may
        // write the same memory concurrently: from our side every access goes through the
        // atomics, which is exactly what they are for, and u32 has no invalid bit patterns.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast(), n) }
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
