//! The dataplane's only `unsafe`: pinning a thread to a CPU core, and the uplink syscalls (TAP
//! and AF_PACKET fds, nonblocking frame reads and writes).

/// Pins the calling thread to `core`.
pub fn pin_to_core(core: usize) -> std::io::Result<()> {
    pin_to_cores(&[core])
}

/// Restricts the calling thread to `cores` (at least one).
pub fn pin_to_cores(cores: &[usize]) -> std::io::Result<()> {
    if cores.is_empty() || cores.iter().any(|&c| c >= libc::CPU_SETSIZE as usize) {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: cpu_set_t is plain data that CPU_ZERO initialises; CPU_SET gets indexes below
    // CPU_SETSIZE (checked above); sched_setaffinity(0, …) reads the set for the calling
    // thread and writes nothing of ours.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &core in cores {
            libc::CPU_SET(core, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Uplinks: a TAP device and an AF_PACKET socket. Every function returns an owned fd or works on
// a borrowed one; the fds are nonblocking and close-on-exec.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Longest interface name (IFNAMSIZ without the NUL).
pub const IFNAME_MAX: usize = 15;

/// `struct ifreq` as TUNSETIFF reads and writes it: the name, then `ifr_flags` (a short) at the
/// start of the 24-byte union.
#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; IFNAME_MAX + 1],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// `struct packet_mreq` (linux/if_packet.h).
#[repr(C)]
struct PacketMreq {
    ifindex: libc::c_int,
    kind: libc::c_ushort,
    alen: libc::c_ushort,
    address: [u8; 8],
}

/// `struct tpacket_auxdata` (linux/if_packet.h): what PACKET_AUXDATA attaches to each frame.
#[repr(C)]
#[derive(Clone, Copy)]
struct TpacketAuxdata {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    net: u16,
    vlan_tci: u16,
    vlan_tpid: u16,
}

const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const ETH_P_8021Q: u16 = 0x8100;

fn check_ifname(name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() > IFNAME_MAX || name.bytes().any(|b| b == 0 || b == b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name `{name}` must be 1 to {IFNAME_MAX} bytes without NUL or /"),
        ));
    }
    Ok(())
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens `/dev/net/tun` and attaches it to TAP `name` (`IFF_TAP | IFF_NO_PI`), creating it if it
/// does not exist (not persistent: it goes away with the fd). Returns the fd and the name the
/// kernel gave the device.
pub fn tap_open(name: &str) -> io::Result<(OwnedFd, String)> {
    check_ifname(name)?;
    // SAFETY: the path is a NUL-terminated literal; open(2) reads it and returns a new fd or -1.
    let fd = cvt(unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReqFlags {
        name: [0; IFNAME_MAX + 1],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq` (40 bytes, the layout of
    // `IfReqFlags`) through the pointer, which is valid for the whole call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) })?;
    let len = req.name.iter().position(|&c| c == 0).unwrap_or(IFNAME_MAX);
    let got: Vec<u8> = req.name[..len].iter().map(|&c| c as u8).collect();
    Ok((fd, String::from_utf8_lossy(&got).into_owned()))
}

/// Makes the TAP behind `fd` persistent (it outlives every fd attached to it) or not (it goes
/// away with the last fd).
pub fn tap_set_persist(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes its argument by value (an int cast to the pointer argument);
    // nothing is read or written through it.
    cvt(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETPERSIST as _,
            libc::c_ulong::from(on),
        )
    })?;
    Ok(())
}

/// The current name of the TAP behind `fd` (TUNGETIFF), wherever its netdev is now; `EBADFD`
/// once the netdev is gone (its namespace was destroyed, or it was deleted).
pub fn tap_name(fd: BorrowedFd<'_>) -> io::Result<String> {
    let mut req = IfReqFlags {
        name: [0; IFNAME_MAX + 1],
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: TUNGETIFF writes one `struct ifreq` (40 bytes, the layout of `IfReqFlags`)
    // through the pointer, which is valid for the whole call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF as _, &mut req) })?;
    let len = req.name.iter().position(|&c| c == 0).unwrap_or(IFNAME_MAX);
    let got: Vec<u8> = req.name[..len].iter().map(|&c| c as u8).collect();
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// The index of interface `name` in this network namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    check_ifname(name)?;
    let c = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(idx)
}

/// An AF_PACKET raw socket bound to interface `name` for every protocol (ETH_P_ALL), the
/// interface put in promiscuous mode for the socket's lifetime, frames others send out of the
/// interface (the host's own stack) not read (PACKET_IGNORE_OUTGOING, Linux ≥ 4.20; ignored when
/// unsupported). The kernel never hands a packet socket the frames it sent itself. Each frame
/// comes with its PACKET_AUXDATA, which [`packet_read_frame`] needs.
pub fn packet_open(name: &str) -> io::Result<OwnedFd> {
    let ifindex = if_index(name)?;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // Protocol 0: the socket receives nothing until bind(2) names the protocol and the
    // interface. Created with ETH_P_ALL it would queue every interface's frames until then, and
    // the dataplane would switch those to the VFs.
    // SAFETY: socket(2) takes plain integers and returns a new fd or -1.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value that we then fill in.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: the pointer and length describe `sll`, a valid sockaddr_ll, for the whole call.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    let mreq = PacketMreq {
        ifindex: ifindex as i32,
        kind: PACKET_MR_PROMISC,
        alen: 0,
        address: [0; 8],
    };
    // SAFETY: PACKET_ADD_MEMBERSHIP reads one `struct packet_mreq` (the layout of `PacketMreq`)
    // from the pointer, valid for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_ADD_MEMBERSHIP,
            (&mreq as *const PacketMreq).cast(),
            std::mem::size_of::<PacketMreq>() as libc::socklen_t,
        )
    })?;
    let one: libc::c_int = 1;
    // SAFETY: the option value is one c_int read from a valid pointer during the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_AUXDATA,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    // SAFETY: the option value is one c_int read from a valid pointer during the call. Failure
    // (a kernel older than 4.20) only means the host's own sends on the interface are read.
    let ignored = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ignored != 0 {
        tracing::warn!(
            interface = name,
            "PACKET_IGNORE_OUTGOING unsupported: frames the host sends out of the uplink reach the VFs too"
        );
    }
    Ok(fd)
}

/// Reads one frame from a nonblocking fd: `Ok(None)` when nothing is queued.
pub fn read_frame(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

/// Reads one frame from a nonblocking AF_PACKET socket made by [`packet_open`]: `Ok(None)` when
/// nothing is queued. The kernel takes a received frame's outer 802.1Q/802.1ad tag out of the
/// data (VLAN acceleration, or `skb_vlan_untag` on receive) and reports it in the frame's
/// PACKET_AUXDATA; this puts it back, so the switch sees the frame as it was on the wire.
pub fn packet_read_frame(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one cmsghdr plus a tpacket_auxdata (CMSG_SPACE(20) = 40 on 64-bit), aligned.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid value that we then fill in.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (describing `buf`, valid for writes of its length) and at
    // `control` (valid for writes of `msg_controllen` bytes); all outlive the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    let mut tag = None;
    // SAFETY: recvmsg(2) filled `control` and set `msg_controllen`; the CMSG_* macros walk only
    // within it. A PACKET_AUXDATA message long enough for a tpacket_auxdata holds one, read
    // unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let want = libc::CMSG_LEN(std::mem::size_of::<TpacketAuxdata>() as u32) as usize;
            if (*c).cmsg_level == libc::SOL_PACKET
                && (*c).cmsg_type == PACKET_AUXDATA
                && (*c).cmsg_len as usize >= want
            {
                let aux: TpacketAuxdata = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if aux.status & TP_STATUS_VLAN_VALID != 0 {
                    let tpid = if aux.status & TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.vlan_tpid
                    } else {
                        ETH_P_8021Q
                    };
                    tag = Some((tpid, aux.vlan_tci));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let n = n as usize;
    Ok(Some(match tag {
        Some((tpid, tci)) => insert_vlan_tag(buf, n, tpid, tci),
        None => n,
    }))
}

/// Puts tag `tpid`/`tci` back after the MAC addresses of the `len`-byte frame in `buf` (its last
/// 4 bytes are cut when `buf` is full). Returns the new length.
fn insert_vlan_tag(buf: &mut [u8], len: usize, tpid: u16, tci: u16) -> usize {
    if len < 12 || buf.len() < 16 {
        return len;
    }
    let new_len = (len + 4).min(buf.len());
    buf.copy_within(12..new_len - 4, 16);
    buf[12..14].copy_from_slice(&tpid.to_be_bytes());
    buf[14..16].copy_from_slice(&tci.to_be_bytes());
    new_len
}

/// Writes one frame to a nonblocking fd (a full queue is an error: the frame is dropped).
pub fn write_frame(fd: BorrowedFd<'_>, frame: &[u8]) -> io::Result<()> {
    // SAFETY: `frame` is valid for reads of `frame.len()` bytes for the whole call.
    let n = unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != frame.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short frame write",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::insert_vlan_tag;

    #[test]
    fn vlan_tag_goes_back_after_the_macs() {
        let mut buf = [0u8; 64];
        let frame: Vec<u8> = (1..=60).collect();
        buf[..60].copy_from_slice(&frame);
        assert_eq!(insert_vlan_tag(&mut buf, 60, 0x8100, 0x2064), 64);
        assert_eq!(buf[..12], frame[..12]);
        assert_eq!(buf[12..16], [0x81, 0x00, 0x20, 0x64]);
        assert_eq!(buf[16..64], frame[12..60]);
    }

    #[test]
    fn vlan_tag_into_a_full_buffer_cuts_the_end() {
        let mut buf: Vec<u8> = (1..=20).collect();
        assert_eq!(insert_vlan_tag(&mut buf, 20, 0x88a8, 7), 20);
        assert_eq!(buf[12..16], [0x88, 0xa8, 0, 7]);
        assert_eq!(buf[16..20], [13, 14, 15, 16]);
        // Too short to hold two MACs: left alone.
        let mut short = [9u8; 10];
        assert_eq!(insert_vlan_tag(&mut short, 10, 0x8100, 1), 10);
        assert_eq!(short, [9; 10]);
    }
}
