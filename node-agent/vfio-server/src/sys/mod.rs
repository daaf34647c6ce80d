//! Every `unsafe` call of the crate: recvmsg/sendmsg with SCM_RIGHTS and poll (memory
//! mappings and fd helpers are in `emu-guest-mem`). Each wrapper is safe to call with any
//! argument.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Most fds accepted in one message (the vfio-user `max_msg_fds` we announce).
pub const MAX_FDS: usize = 16;

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
