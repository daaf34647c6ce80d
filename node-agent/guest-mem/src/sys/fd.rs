//! File descriptor helpers: the memfds that back guest RAM in tests and BAR pages in the
//! agent (sealed as QEMU seals guest RAM), the checks on files and eventfds a client hands
//! over, and eventfds. Each wrapper is safe to call with any argument.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
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
