//! The server against malformed and hostile clients, plus the positive paths (DMA through a
//! memfd, MSI-X eventfds). Raw `UnixStream` messages for the hostile cases, `vfio_user::Client`
//! as a well-behaved peer.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emu_guest_mem::{fd as fdutil, GuestMemory, MemError};
use emu_vfio_server::wire::{cmd, flags, Header};
use emu_vfio_server::{
    irq_index, region, AccessError, DeviceSpec, DmaTable, IrqSet, RegionSpec, Server, ServerError,
    ServerHandle, VfioDevice, MAX_REQUESTS_PER_SEC,
};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const BAR0_SIZE: usize = 4096;
const BAR3_SIZE: u64 = 0x4000;
const MSIX_VECTORS: u32 = 3;

struct TestDev {
    bar0: Mutex<Vec<u8>>,
    config: Mutex<Vec<u8>>,
    bar3_fd: Arc<OwnedFd>,
    resets: AtomicU32,
    connects: AtomicU32,
    disconnects: AtomicU32,
}

impl TestDev {
    fn new() -> TestDev {
        let mut config = vec![0u8; 256];
        config[0..4].copy_from_slice(&[0x86, 0x80, 0xca, 0x10]);
        TestDev {
            bar0: Mutex::new(vec![0; BAR0_SIZE]),
            config: Mutex::new(config),
            bar3_fd: Arc::new(fdutil::memfd("bar3", BAR3_SIZE).unwrap()),
            resets: AtomicU32::new(0),
            connects: AtomicU32::new(0),
            disconnects: AtomicU32::new(0),
        }
    }

    fn mem(&self, region: u32) -> Option<&Mutex<Vec<u8>>> {
        match region {
            region::BAR0 => Some(&self.bar0),
            region::CONFIG => Some(&self.config),
            _ => None,
        }
    }
}

fn range(
    region: u32,
    offset: u64,
    len: usize,
    size: usize,
) -> Result<std::ops::Range<usize>, AccessError> {
    let oob = AccessError::OutOfBounds {
        region,
        offset,
        len,
    };
    let start = usize::try_from(offset).map_err(|_| oob)?;
    let end = start.checked_add(len).ok_or(oob)?;
    if end > size {
        return Err(oob);
    }
    Ok(start..end)
}

impl VfioDevice for TestDev {
    fn spec(&self) -> DeviceSpec {
        let mut regions = vec![RegionSpec::default(); region::COUNT as usize];
        regions[region::BAR0 as usize] = RegionSpec {
            size: BAR0_SIZE as u64,
            readable: true,
            writable: true,
            ..Default::default()
        };
        regions[region::BAR3 as usize] = RegionSpec {
            size: BAR3_SIZE,
            readable: true,
            writable: true,
            sparse_mmap: vec![(0, 0x2000)],
            mmap_fd: Some(self.bar3_fd.clone()),
        };
        regions[region::CONFIG as usize] = RegionSpec {
            size: 256,
            readable: true,
            writable: true,
            ..Default::default()
        };
        DeviceSpec {
            regions,
            irq_counts: [0, 0, MSIX_VECTORS, 0, 0],
        }
    }
    fn region_read(&self, region: u32, offset: u64, data: &mut [u8]) -> Result<(), AccessError> {
        let m = self.mem(region).ok_or(AccessError::OutOfBounds {
            region,
            offset,
            len: data.len(),
        })?;
        let m = m.lock().unwrap();
        let r = range(region, offset, data.len(), m.len())?;
        data.copy_from_slice(&m[r]);
        Ok(())
    }
    fn region_write(&self, region: u32, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        if !matches!(data.len(), 1 | 2 | 4 | 8) {
            return Err(AccessError::BadWidth {
                region,
                offset,
                len: data.len(),
            });
        }
        let m = self.mem(region).ok_or(AccessError::OutOfBounds {
            region,
            offset,
            len: data.len(),
        })?;
        let mut m = m.lock().unwrap();
        let r = range(region, offset, data.len(), m.len())?;
        m[r].copy_from_slice(data);
        Ok(())
    }
    fn reset(&self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
        self.bar0.lock().unwrap().fill(0);
    }
    fn client_connected(&self) {
        self.connects.fetch_add(1, Ordering::SeqCst);
    }
    fn client_disconnected(&self) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }
}

struct Fx {
    path: PathBuf,
    handle: Option<ServerHandle>,
    dev: Arc<TestDev>,
    dma: Arc<DmaTable>,
    irqs: Arc<IrqSet>,
}

fn sock_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("emu-vfio-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn start(name: &str) -> Fx {
    let path = sock_path(name);
    let dev = Arc::new(TestDev::new());
    let dma = Arc::new(DmaTable::new());
    let irqs = Arc::new(IrqSet::new(MSIX_VECTORS));
    let mut server = Server::bind(&path, dev.clone(), dma.clone(), irqs.clone()).unwrap();
    server.set_message_timeout(Duration::from_millis(500));
    let handle = server.spawn(format!("vfio-{name}"));
    Fx {
        path,
        handle: Some(handle),
        dev,
        dma,
        irqs,
    }
}

impl Fx {
    fn stats(&self) -> emu_vfio_server::StatsSnapshot {
        self.handle.as_ref().unwrap().stats().snapshot()
    }
    fn alive(&self) -> bool {
        self.handle.as_ref().unwrap().is_running()
    }
    /// Waits until no client is connected (the server did its disconnect duties).
    fn wait_disconnected(&self) {
        let t = Instant::now();
        while self.stats().connected {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "server kept the connection"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    /// A fresh client must get a full, correct session.
    fn assert_serves_new_client(&self) {
        self.wait_disconnected();
        assert!(self.alive());
        let mut c = Raw::connect(&self.path);
        c.version();
        c.assert_device_info();
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

struct Reply {
    hdr: Header,
    payload: Vec<u8>,
}

impl Reply {
    fn errno(&self) -> i32 {
        assert_eq!(self.hdr.flags & flags::TYPE_MASK, flags::TYPE_REPLY);
        if self.hdr.flags & flags::ERROR != 0 {
            assert_ne!(self.hdr.error, 0, "error reply with errno 0");
            self.hdr.error as i32
        } else {
            0
        }
    }
    fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.payload[off..off + 4].try_into().unwrap())
    }
}

/// A raw vfio-user peer.
struct Raw {
    s: UnixStream,
    id: u16,
}

fn msg(id: u16, command: u16, fl: u32, payload: &[u8]) -> Vec<u8> {
    let h = Header {
        msg_id: id,
        command,
        size: (16 + payload.len()) as u32,
        flags: fl,
        error: 0,
    };
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn version_payload(json: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(json);
    p
}

fn le32(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn region_access(offset: u64, region: u32, count: u32, data: &[u8]) -> Vec<u8> {
    let mut p = offset.to_le_bytes().to_vec();
    p.extend_from_slice(&region.to_le_bytes());
    p.extend_from_slice(&count.to_le_bytes());
    p.extend_from_slice(data);
    p
}

fn dma_map(flags: u32, offset: u64, address: u64, size: u64) -> Vec<u8> {
    let mut p = le32(&[32, flags]);
    for v in [offset, address, size] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    p
}

fn dma_unmap(address: u64, size: u64) -> Vec<u8> {
    let mut p = le32(&[24, 0]);
    p.extend_from_slice(&address.to_le_bytes());
    p.extend_from_slice(&size.to_le_bytes());
    p
}

fn set_irqs(flags: u32, index: u32, start: u32, count: u32) -> Vec<u8> {
    le32(&[20, flags, index, start, count])
}

const EVENTFD_TRIGGER: u32 = 0x24;
const NONE_TRIGGER: u32 = 0x21;
const BOOL_TRIGGER: u32 = 0x22;

impl Raw {
    fn connect(path: &Path) -> Raw {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Raw { s, id: 100 }
    }

    fn send(&mut self, command: u16, payload: &[u8]) -> u16 {
        self.send_flags(command, 0, payload)
    }

    fn send_flags(&mut self, command: u16, fl: u32, payload: &[u8]) -> u16 {
        self.id = self.id.wrapping_add(1);
        self.s
            .write_all(&msg(self.id, command, fl, payload))
            .unwrap();
        self.id
    }

    fn send_fds(&mut self, command: u16, payload: &[u8], fds: &[RawFd]) -> u16 {
        self.id = self.id.wrapping_add(1);
        let m = msg(self.id, command, 0, payload);
        let n = self.s.send_with_fds(&[&m[..]], fds).unwrap();
        assert_eq!(n, m.len());
        self.id
    }

    fn recv(&mut self) -> Reply {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).unwrap();
        let hdr = Header::parse(&h);
        let mut payload = vec![0; hdr.size as usize - 16];
        self.s.read_exact(&mut payload).unwrap();
        Reply { hdr, payload }
    }

    fn call(&mut self, command: u16, payload: &[u8]) -> Reply {
        let id = self.send(command, payload);
        let r = self.recv();
        assert_eq!(
            (r.hdr.msg_id, r.hdr.command),
            (id, command),
            "reply out of step"
        );
        r
    }

    fn call_fds(&mut self, command: u16, payload: &[u8], fds: &[RawFd]) -> Reply {
        let id = self.send_fds(command, payload, fds);
        let r = self.recv();
        assert_eq!(
            (r.hdr.msg_id, r.hdr.command),
            (id, command),
            "reply out of step"
        );
        r
    }

    fn version(&mut self) {
        let r = self.call(
            cmd::VERSION,
            &version_payload(
                b"{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576}}\0",
            ),
        );
        assert_eq!(r.errno(), 0);
        assert_eq!(&r.payload[..4], &[0, 0, 0, 0], "server version must be 0.0");
        assert_eq!(*r.payload.last().unwrap(), 0, "caps must be NUL-terminated");
        let v: serde_json::Value =
            serde_json::from_slice(&r.payload[4..r.payload.len() - 1]).unwrap();
        assert_eq!(v["capabilities"]["max_msg_fds"], 16);
        assert_eq!(v["capabilities"]["pgsizes"], 4096);
    }

    fn assert_device_info(&mut self) {
        let r = self.call(cmd::DEVICE_GET_INFO, &le32(&[16, 0, 0, 0]));
        assert_eq!(r.errno(), 0);
        assert_eq!(r.payload.len(), 16);
        assert_eq!(r.u32_at(4), 3, "flags PCI|RESET");
        assert_eq!(r.u32_at(8), 9);
        assert_eq!(r.u32_at(12), 5);
    }

    fn assert_closed_by_server(&mut self) {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("expected the server to close the connection, got {other:?}"),
        }
    }
}

/// A socket pair: we send `.0` to the server and keep `.1`; once every copy of `.0` is
/// closed, reading `.1` returns EOF. Proves the server did not keep (leak) the fd.
fn leak_probe() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    (a, b)
}

fn assert_fd_closed_by_server(sent: UnixStream, mut kept: UnixStream) {
    drop(sent);
    let mut buf = [0u8; 1];
    assert_eq!(kept.read(&mut buf).expect("server kept the fd open"), 0);
}

// ---------------------------------------------------------------- positive paths

#[test]
fn well_behaved_client_session() {
    let fx = start("session");
    let mut c = vfio_user::Client::new(&fx.path).unwrap();
    let bar0 = c.region(region::BAR0).unwrap();
    assert_eq!(bar0.size, BAR0_SIZE as u64);
    assert_eq!(bar0.flags & 0x3, 0x3);
    let bar3 = c.region(region::BAR3).unwrap();
    assert!(
        bar3.file_offset.is_some(),
        "BAR3 mmap fd must come with the reply"
    );
    assert_eq!(bar3.sparse_areas.len(), 1);
    assert_eq!(
        (bar3.sparse_areas[0].offset, bar3.sparse_areas[0].size),
        (0, 0x2000)
    );
    assert_eq!(bar3.flags & 0xc, 0xc, "MMAP|CAPS");
    assert_eq!(c.region(1).unwrap().size, 0);

    c.region_write(region::BAR0, 0x10, &0x1234_5678u32.to_le_bytes())
        .unwrap();
    let mut b = [0u8; 4];
    c.region_read(region::BAR0, 0x10, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x1234_5678);
    c.region_read(region::CONFIG, 0, &mut b).unwrap();
    assert_eq!(b, [0x86, 0x80, 0xca, 0x10]);
    let info = c.get_irq_info(irq_index::MSIX).unwrap();
    assert_eq!(info.count, MSIX_VECTORS);
    assert_eq!(info.flags & 1, 1, "EVENTFD");
    c.reset().unwrap();
    assert_eq!(fx.dev.resets.load(Ordering::SeqCst), 1);
    c.region_read(region::BAR0, 0x10, &mut b).unwrap();
    assert_eq!(b, [0; 4]);

    let s = fx.stats();
    assert_eq!(s.connections, 1);
    assert!(s.connected);
    assert_eq!((s.region_reads, s.region_writes, s.resets), (3, 1, 1));
    assert_eq!(s.error_replies, 0);
    assert_eq!(fx.dev.connects.load(Ordering::SeqCst), 1);
}

#[test]
fn region_info_reports_needed_argsz_then_caps_with_fd() {
    let fx = start("reginfo");
    let mut c = Raw::connect(&fx.path);
    c.version();
    let mut req = le32(&[32, 0, region::BAR3, 0]);
    req.extend_from_slice(&[0; 16]);
    let r = c.call(cmd::DEVICE_GET_REGION_INFO, &req);
    assert_eq!(r.errno(), 0);
    assert_eq!(r.payload.len(), 32);
    let needed = r.u32_at(0);
    assert_eq!(needed, 32 + 16 + 16);
    // QEMU's client rejects CAPS with a cap_offset below sizeof(vfio_region_info), even
    // in the "argsz too small" answer, so cap_offset points past the info in both replies.
    assert_eq!(
        r.u32_at(12),
        32,
        "cap_offset even when the caps did not fit"
    );
    assert_ne!(
        r.u32_at(4) & 8,
        0,
        "CAPS flag tells the client to ask again"
    );

    req[0..4].copy_from_slice(&needed.to_le_bytes());
    let id = c.send(cmd::DEVICE_GET_REGION_INFO, &req);
    let mut buf = vec![0u8; 16 + needed as usize];
    let (n, fd) = c.s.recv_with_fd(&mut buf).unwrap();
    assert_eq!(n, buf.len());
    assert_eq!(Header::parse(buf[..16].try_into().unwrap()).msg_id, id);
    let p = &buf[16..];
    assert_eq!(
        u32::from_le_bytes(p[12..16].try_into().unwrap()),
        32,
        "cap_offset"
    );
    assert_eq!(&p[32..36], &[1, 0, 1, 0], "sparse mmap cap id 1 version 1");
    assert_eq!(
        u32::from_le_bytes(p[40..44].try_into().unwrap()),
        1,
        "nr_areas"
    );
    assert!(fd.is_some(), "region fd must be sent with the caps reply");

    // Index beyond the regions.
    req[8..12].copy_from_slice(&9u32.to_le_bytes());
    assert_eq!(
        c.call(cmd::DEVICE_GET_REGION_INFO, &req).errno(),
        libc::EINVAL
    );
    c.assert_device_info();
}

#[test]
fn dma_map_memfd_is_guest_memory() {
    let fx = start("dmamemfd");
    let mut c = Raw::connect(&fx.path);
    c.version();
    let fd = fdutil::memfd("guest-ram", 0x4000).unwrap();
    let file = File::from(fd.try_clone().unwrap());
    let r = c.call_fds(
        cmd::DMA_MAP,
        &dma_map(3, 0x1000, 0x10_0000, 0x2000),
        &[fd.as_raw_fd()],
    );
    assert_eq!(r.errno(), 0);
    drop(fd);
    assert_eq!(fx.dma.map_count(), 1);

    // Guest writes through its RAM fd; the dataplane reads via GuestMemory.
    file.write_all_at(&0xfeed_f00d_u32.to_le_bytes(), 0x1000 + 0x40)
        .unwrap();
    assert_eq!(fx.dma.read_u32(0x10_0040).unwrap(), 0xfeed_f00d);
    // And back: the dataplane writes, the guest sees it.
    {
        let g = fx.dma.lock();
        g.write_u64(0x10_1ff8, 0x0123_4567_89ab_cdef).unwrap();
        assert!(
            g.write_u64(0x10_1ffc, 0).is_err(),
            "crosses the end of the map"
        );
    }
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, 0x1000 + 0x1ff8).unwrap();
    assert_eq!(u64::from_le_bytes(b), 0x0123_4567_89ab_cdef);

    let r = c.call(cmd::DMA_UNMAP, &dma_unmap(0x10_0000, 0x2000));
    assert_eq!(r.errno(), 0);
    assert_eq!(r.payload.len(), 24);
    assert_eq!(fx.dma.map_count(), 0);
    assert!(fx.dma.read_u32(0x10_0040).is_err());
    let s = fx.stats();
    assert_eq!((s.dma_maps, s.dma_unmaps), (1, 1));
}

#[test]
fn set_irqs_binds_eventfd_and_fire_signals_it() {
    let fx = start("irqs");
    let mut c = Raw::connect(&fx.path);
    c.version();
    let e0 = fdutil::eventfd().unwrap();
    let e2 = fdutil::eventfd().unwrap();
    // QEMU style: one SET_IRQS per vector, the fd in SCM_RIGHTS, no data payload.
    let r = c.call_fds(
        cmd::DEVICE_SET_IRQS,
        &set_irqs(EVENTFD_TRIGGER, 2, 0, 1),
        &[e0.as_raw_fd()],
    );
    assert_eq!(r.errno(), 0);
    let r = c.call_fds(
        cmd::DEVICE_SET_IRQS,
        &set_irqs(EVENTFD_TRIGGER, 2, 2, 1),
        &[e2.as_raw_fd()],
    );
    assert_eq!(r.errno(), 0);
    assert!(fx.irqs.fire(0));
    assert!(!fx.irqs.fire(1), "vector 1 is unbound");
    assert!(fx.irqs.fire(2) && fx.irqs.fire(2));
    assert_eq!(fdutil::eventfd_read(e0.as_fd()).unwrap(), 1);
    assert_eq!(fdutil::eventfd_read(e2.as_fd()).unwrap(), 2);
    assert_eq!(fx.irqs.fired(2), 2);

    // DATA_NONE|TRIGGER with a count fires from the client side.
    assert_eq!(
        c.call(cmd::DEVICE_SET_IRQS, &set_irqs(NONE_TRIGGER, 2, 0, 1))
            .errno(),
        0
    );
    assert_eq!(fdutil::eventfd_read(e0.as_fd()).unwrap(), 1);
    // DATA_BOOL fires the vectors whose bool is set, and consumes its array.
    let mut p = le32(&[23, BOOL_TRIGGER, 2, 0, 3]);
    p.extend_from_slice(&[0, 0, 1]);
    assert_eq!(c.call(cmd::DEVICE_SET_IRQS, &p).errno(), 0);
    assert_eq!(fdutil::eventfd_read(e2.as_fd()).unwrap(), 1);
    // An eventfd set without fds de-assigns.
    assert_eq!(
        c.call(cmd::DEVICE_SET_IRQS, &set_irqs(EVENTFD_TRIGGER, 2, 0, 1))
            .errno(),
        0
    );
    assert!(!fx.irqs.fire(0));
    assert!(fx.irqs.fire(2));
    // DATA_NONE|TRIGGER with count 0 disables the whole index.
    assert_eq!(
        c.call(cmd::DEVICE_SET_IRQS, &set_irqs(NONE_TRIGGER, 2, 0, 0))
            .errno(),
        0
    );
    assert!(!fx.irqs.fire(2));
    // MASK/UNMASK accepted.
    assert_eq!(
        c.call(cmd::DEVICE_SET_IRQS, &set_irqs(0x09, 2, 0, 1))
            .errno(),
        0
    );
    assert_eq!(
        c.call(cmd::DEVICE_SET_IRQS, &set_irqs(0x11, 2, 0, 1))
            .errno(),
        0
    );
    assert_eq!(fx.stats().set_irqs, 8);
}

// ---------------------------------------------------------------- broken framing

#[test]
fn truncated_header_then_eof_closes_only_that_connection() {
    let fx = start("trunchdr");
    {
        let mut c = Raw::connect(&fx.path);
        c.version();
        c.s.write_all(&[1, 0, 4, 0, 32, 0, 0, 0, 0, 0]).unwrap();
    }
    fx.assert_serves_new_client();
    assert_eq!(fx.stats().protocol_errors, 1);
}

#[test]
fn size_smaller_than_header_closes_connection() {
    let fx = start("smallsize");
    let mut c = Raw::connect(&fx.path);
    c.version();
    let mut m = msg(7, cmd::DEVICE_GET_INFO, 0, &[]);
    m[4..8].copy_from_slice(&8u32.to_le_bytes());
    c.s.write_all(&m).unwrap();
    c.assert_closed_by_server();
    fx.assert_serves_new_client();
    assert_eq!(fx.stats().protocol_errors, 1);
}

#[test]
fn size_larger_than_max_closes_connection() {
    let fx = start("hugesize");
    let mut c = Raw::connect(&fx.path);
    c.version();
    let mut m = msg(7, cmd::REGION_WRITE, 0, &[0; 16]);
    m[4..8].copy_from_slice(&(64u32 << 20).to_le_bytes());
    c.s.write_all(&m).unwrap();
    c.assert_closed_by_server();
    fx.assert_serves_new_client();
    assert_eq!(fx.stats().protocol_errors, 1);
}

#[test]
fn size_larger_than_payload_then_disconnect() {
    let fx = start("shortpayload");
    {
        let mut c = Raw::connect(&fx.path);
        c.version();
        let mut m = msg(7, cmd::REGION_WRITE, 0, &[0; 10]);
        m[4..8].copy_from_slice(&100u32.to_le_bytes());
        c.s.write_all(&m).unwrap();
    } // client goes away mid-message
    fx.wait_disconnected();
    assert_eq!(fx.dev.disconnects.load(Ordering::SeqCst), 1);
    assert_eq!(fx.stats().protocol_errors, 1);
    fx.assert_serves_new_client();
}

#[test]
fn stalled_message_times_out_and_closes_connection() {
    let fx = start("stall");
    let mut c = Raw::connect(&fx.path);
    c.version();
    let mut m = msg(7, cmd::REGION_WRITE, 0, &[0; 10]);
    m[4..8].copy_from_slice(&100u32.to_le_bytes());
    c.s.write_all(&m).unwrap();
    let t = Instant::now();
    c.assert_closed_by_server();
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "closed before the timeout"
    );
    fx.assert_serves_new_client();
    assert_eq!(fx.stats().protocol_errors, 1);
}

#[test]
fn idle_connection_is_not_timed_out() {
    let fx = start("idle");
    let mut c = Raw::connect(&fx.path);
    c.version();
    std::thread::sleep(Duration::from_millis(800));
    c.assert_device_info();
}

// ---------------------------------------------------------------- bad requests, stream stays in sync

#[test]
fn unknown_and_unsupported_commands_keep_the_stream_in_sync() {
    let fx = start("unknown");
    let mut c = Raw::connect(&fx.path);
    // Before VERSION, nothing else is served.
    assert_eq!(
        c.call(cmd::DEVICE_GET_INFO, &le32(&[16, 0, 0, 0])).errno(),
        libc::EINVAL
    );
    c.version();
    // Pipelined in one write: the replies must come back in order, one per request.
    let mut burst = Vec::new();
    burst.extend(msg(1, 16, 0, &[0xaa; 40])); // DEVICE_FEATURE
    burst.extend(msg(2, 200, 0, &[0xbb; 3]));
    burst.extend(msg(3, 0, 0, &[]));
    burst.extend(msg(4, cmd::DEVICE_GET_REGION_IO_FDS, 0, &[0; 16]));
    burst.extend(msg(5, cmd::DMA_READ, 0, &[0; 16]));
    burst.extend(msg(6, cmd::REGION_WRITE_MULTI, 0, &[0; 40]));
    burst.extend(msg(7, cmd::DEVICE_GET_INFO, 0, &le32(&[16, 0, 0, 0])));
    c.s.write_all(&burst).unwrap();
    let expect = [
        (1, libc::ENOSYS),
        (2, libc::ENOSYS),
        (3, libc::ENOSYS),
        (4, libc::ENOTSUP),
        (5, libc::ENOTSUP),
        (6, libc::ENOTSUP),
        (7, 0),
    ];
    for (id, errno) in expect {
        let r = c.recv();
        assert_eq!(r.hdr.msg_id, id);
        assert_eq!(r.errno(), errno, "msg {id}");
        if errno != 0 {
            assert_eq!(r.hdr.size, 16);
            assert_eq!(r.hdr.flags, flags::TYPE_REPLY | flags::ERROR);
        }
    }
    c.assert_device_info();
    let s = fx.stats();
    assert_eq!(s.error_replies, 7);
    assert_eq!(s.protocol_errors, 0);
    assert!(fx.alive());
}

#[test]
fn bad_version_payloads_get_einval() {
    let fx = start("badversion");
    let mut c = Raw::connect(&fx.path);
    let bad: [&[u8]; 6] = [
        &[0, 0],                                                 // too short for major/minor
        b"\0\0\0\0{\"capabilities\":",                           // no NUL, invalid
        b"\0\0\0\0{}",                                           // valid JSON without NUL
        b"\0\0\0\0\xff\xfe{}\0",                                 // not UTF-8
        b"\0\0\0\0{\"capabilities\":{\0",                        // invalid JSON
        b"\0\0\0\0{\"capabilities\":{\"max_msg_fds\":\"x\"}}\0", // wrong type
    ];
    for p in bad {
        assert_eq!(c.call(cmd::VERSION, p).errno(), libc::EINVAL, "{p:?}");
    }
    assert_eq!(
        c.call(cmd::VERSION, &[1, 0, 0, 0]).errno(),
        libc::ENOTSUP,
        "major 1"
    );
    c.version();
    assert_eq!(
        c.call(cmd::VERSION, &version_payload(b"{}\0")).errno(),
        libc::EINVAL,
        "second VERSION"
    );
    c.assert_device_info();
}

#[test]
fn dma_map_without_fd_overlap_and_unknown_unmap() {
    let fx = start("dmaerr");
    let mut c = Raw::connect(&fx.path);
    c.version();
    // ROM/VGA style: a map without fd is recorded but not DMA-able.
    assert_eq!(
        c.call(cmd::DMA_MAP, &dma_map(1, 0, 0xc0000, 0x20000))
            .errno(),
        0
    );
    assert_eq!(fx.dma.map_count(), 1);
    assert!(matches!(
        fx.dma.read_u32(0xc0000),
        Err(MemError::Unmapped { .. })
    ));
    // Overlaps, with or without fd.
    assert_eq!(
        c.call(cmd::DMA_MAP, &dma_map(3, 0, 0xd0000, 0x1000))
            .errno(),
        libc::EEXIST
    );
    let fd = fdutil::memfd("ram", 0x10000).unwrap();
    assert_eq!(
        c.call_fds(
            cmd::DMA_MAP,
            &dma_map(3, 0, 0xb0000, 0x20000),
            &[fd.as_raw_fd()]
        )
        .errno(),
        libc::EEXIST
    );
    // Empty and wrapping ranges; fd range beyond the file.
    assert_eq!(
        c.call(cmd::DMA_MAP, &dma_map(3, 0, 0x100000, 0)).errno(),
        libc::EINVAL
    );
    assert_eq!(
        c.call(cmd::DMA_MAP, &dma_map(3, 0, u64::MAX - 0xfff, 0x2000))
            .errno(),
        libc::EINVAL
    );
    assert_eq!(
        c.call_fds(
            cmd::DMA_MAP,
            &dma_map(3, 0x8000, 0x100000, 0x10000),
            &[fd.as_raw_fd()]
        )
        .errno(),
        libc::EINVAL
    );
    // Bad argsz, short payload.
    let mut p = dma_map(3, 0, 0x100000, 0x1000);
    p[0] = 8;
    assert_eq!(c.call(cmd::DMA_MAP, &p).errno(), libc::EINVAL);
    assert_eq!(c.call(cmd::DMA_MAP, &p[..20]).errno(), libc::EINVAL);
    // Two fds on one DMA_MAP: refused, and both fds closed by the server.
    let (a1, k1) = leak_probe();
    let (a2, k2) = leak_probe();
    assert_eq!(
        c.call_fds(
            cmd::DMA_MAP,
            &dma_map(3, 0, 0x200000, 0x1000),
            &[a1.as_raw_fd(), a2.as_raw_fd()]
        )
        .errno(),
        libc::EINVAL
    );
    assert_fd_closed_by_server(a1, k1);
    assert_fd_closed_by_server(a2, k2);
    // Unmap of a range never mapped, or not exactly matching.
    assert_eq!(
        c.call(cmd::DMA_UNMAP, &dma_unmap(0x300000, 0x1000)).errno(),
        libc::ENOENT
    );
    assert_eq!(
        c.call(cmd::DMA_UNMAP, &dma_unmap(0xc0000, 0x1000)).errno(),
        libc::ENOENT
    );
    assert_eq!(
        c.call(cmd::DMA_UNMAP, &dma_unmap(0xc0000, 0x20000)).errno(),
        0
    );
    assert_eq!(fx.dma.map_count(), 0);
    c.assert_device_info();
}

#[test]
fn region_access_errors() {
    let fx = start("regerr");
    let mut c = Raw::connect(&fx.path);
    c.version();
    let cases: Vec<(u16, Vec<u8>)> = vec![
        (cmd::REGION_READ, region_access(4094, region::BAR0, 4, &[])), // crosses the end
        (
            cmd::REGION_READ,
            region_access(u64::MAX, region::BAR0, 4, &[]),
        ), // wraps
        (
            cmd::REGION_READ,
            region_access(0, region::BAR0, 0x7fff_ffff, &[]),
        ), // huge count
        (cmd::REGION_READ, region_access(0, 99, 4, &[])),              // no such region
        (cmd::REGION_READ, region_access(0, 1, 4, &[])),               // empty region
        (
            cmd::REGION_READ,
            region_access(0, region::BAR0, 4, &[])[..12].to_vec(),
        ), // short
        (
            cmd::REGION_WRITE,
            region_access(0, region::BAR0, 8, &[1, 2, 3, 4]),
        ), // count > payload
        (
            cmd::REGION_WRITE,
            region_access(0, region::BAR0, 3, &[1, 2, 3]),
        ), // device: bad width
        (
            cmd::REGION_WRITE,
            region_access(4096, region::BAR0, 4, &[0; 4]),
        ), // beyond
        (cmd::REGION_WRITE, region_access(0, 99, 4, &[0; 4])),
    ];
    for (command, p) in &cases {
        assert_eq!(c.call(*command, p).errno(), libc::EINVAL, "{command} {p:?}");
    }
    // An unexpected fd with a region access is refused and closed.
    let (a, k) = leak_probe();
    assert_eq!(
        c.call_fds(
            cmd::REGION_READ,
            &region_access(0, region::BAR0, 4, &[]),
            &[a.as_raw_fd()]
        )
        .errno(),
        libc::EINVAL
    );
    assert_fd_closed_by_server(a, k);
    // The valid access right after.
    assert_eq!(
        c.call(
            cmd::REGION_WRITE,
            &region_access(8, region::BAR0, 4, &[9, 8, 7, 6])
        )
        .errno(),
        0
    );
    let r = c.call(cmd::REGION_READ, &region_access(8, region::BAR0, 4, &[]));
    assert_eq!(r.errno(), 0);
    assert_eq!(&r.payload[16..], &[9, 8, 7, 6]);
    assert_eq!(fx.stats().error_replies, cases.len() as u64 + 1);
}

#[test]
fn no_reply_writes_are_silent_but_errors_are_reported() {
    let fx = start("noreply");
    let mut c = Raw::connect(&fx.path);
    c.version();
    c.send_flags(
        cmd::REGION_WRITE,
        flags::NO_REPLY,
        &region_access(0, region::BAR0, 4, &[1, 0, 0, 0]),
    );
    let bad = c.send_flags(
        cmd::REGION_WRITE,
        flags::NO_REPLY,
        &region_access(0, 99, 4, &[0; 4]),
    );
    let r = c.recv();
    assert_eq!((r.hdr.msg_id, r.errno()), (bad, libc::EINVAL));
    let r = c.call(cmd::REGION_READ, &region_access(0, region::BAR0, 4, &[]));
    assert_eq!(&r.payload[16..], &[1, 0, 0, 0]);
}

#[test]
fn set_irqs_errors() {
    let fx = start("irqerr");
    let mut c = Raw::connect(&fx.path);
    c.version();
    let e = fdutil::eventfd().unwrap();
    let bad = [
        set_irqs(EVENTFD_TRIGGER, 2, u32::MAX, 2), // start+count overflows
        set_irqs(NONE_TRIGGER, 2, 2, 2),           // beyond the 3 vectors
        set_irqs(NONE_TRIGGER, 7, 0, 1),           // no such index
        set_irqs(NONE_TRIGGER, 0, 0, 1),           // INTx has 0 vectors
        set_irqs(0x25, 2, 0, 1),                   // two data types
        set_irqs(0x04, 2, 0, 1),                   // no action
        set_irqs(0x1000 | NONE_TRIGGER, 2, 0, 1),  // unknown flag
        set_irqs(BOOL_TRIGGER, 2, 0, 3),           // bool array missing
        le32(&[16, NONE_TRIGGER, 2, 0]),           // short
        le32(&[24, NONE_TRIGGER, 2, 0, 1]),        // argsz beyond payload
    ];
    for p in &bad {
        assert_eq!(
            c.call(cmd::DEVICE_SET_IRQS, p).errno(),
            libc::EINVAL,
            "{p:?}"
        );
    }
    // More fds than vectors: refused, nothing bound, fds closed.
    let (a, k) = leak_probe();
    let (b, kb) = leak_probe();
    assert_eq!(
        c.call_fds(
            cmd::DEVICE_SET_IRQS,
            &set_irqs(EVENTFD_TRIGGER, 2, 0, 1),
            &[a.as_raw_fd(), b.as_raw_fd()]
        )
        .errno(),
        libc::EINVAL
    );
    assert_fd_closed_by_server(a, k);
    assert_fd_closed_by_server(b, kb);
    assert!(!fx.irqs.is_bound(0));
    // 17 fds: more than max_msg_fds; all closed, connection goes on.
    let probes: Vec<(UnixStream, UnixStream)> = (0..17).map(|_| leak_probe()).collect();
    let raw: Vec<RawFd> = probes.iter().map(|p| p.0.as_raw_fd()).collect();
    assert_eq!(
        c.call_fds(
            cmd::DEVICE_SET_IRQS,
            &set_irqs(EVENTFD_TRIGGER, 2, 0, 3),
            &raw
        )
        .errno(),
        libc::EINVAL
    );
    for (a, k) in probes {
        assert_fd_closed_by_server(a, k);
    }
    // Still works.
    assert_eq!(
        c.call_fds(
            cmd::DEVICE_SET_IRQS,
            &set_irqs(EVENTFD_TRIGGER, 2, 1, 1),
            &[e.as_raw_fd()]
        )
        .errno(),
        0
    );
    assert!(fx.irqs.fire(1));
    assert_eq!(fx.stats().set_irqs, 1);
}

// ---------------------------------------------------------------- connections

#[test]
fn second_client_waits_until_the_first_leaves() {
    let fx = start("second");
    let mut a = Raw::connect(&fx.path);
    a.version();
    let mut b = Raw::connect(&fx.path);
    b.s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let id = b.send(cmd::VERSION, &version_payload(b"{}\0"));
    let mut h = [0u8; 16];
    let e = b.s.read_exact(&mut h).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e:?}"
    );
    a.assert_device_info(); // the first client is unaffected
    drop(a);
    b.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = b.recv();
    assert_eq!((r.hdr.msg_id, r.errno()), (id, 0));
    b.assert_device_info();
    assert_eq!(fx.stats().connections, 2);
}

#[test]
fn reconnect_after_disconnect_drops_dma_and_irqs() {
    let fx = start("reconnect");
    {
        let mut c = vfio_user::Client::new(&fx.path).unwrap();
        let ram = fdutil::memfd("ram", 0x10000).unwrap();
        c.dma_map(0, 0x0, 0x10000, ram.as_raw_fd()).unwrap();
        let e = fdutil::eventfd().unwrap();
        c.set_irqs(irq_index::MSIX, EVENTFD_TRIGGER, 0, 1, &[e.as_raw_fd()])
            .unwrap();
        assert_eq!(fx.dma.map_count(), 1);
        assert!(fx.irqs.is_bound(0));
        c.region_write(region::BAR0, 0x20, &[5, 0, 0, 0]).unwrap();
    }
    fx.wait_disconnected();
    assert_eq!(
        fx.dma.map_count(),
        0,
        "DMA maps must be dropped on disconnect"
    );
    assert!(
        !fx.irqs.is_bound(0),
        "IRQ fds must be dropped on disconnect"
    );
    assert_eq!(fx.dev.disconnects.load(Ordering::SeqCst), 1);
    // Device state is kept across the reconnect.
    let mut c = vfio_user::Client::new(&fx.path).unwrap();
    let mut b = [0u8; 4];
    c.region_read(region::BAR0, 0x20, &mut b).unwrap();
    assert_eq!(b, [5, 0, 0, 0]);
    let s = fx.stats();
    assert_eq!((s.connections, s.protocol_errors), (2, 0));
    assert!(s.connected);
}

#[test]
fn bind_refuses_live_socket_replaces_stale_and_shutdown_is_prompt() {
    let mut fx = start("bind");
    let dev: Arc<dyn VfioDevice> = fx.dev.clone();
    let err = Server::bind(&fx.path, dev.clone(), fx.dma.clone(), fx.irqs.clone()).unwrap_err();
    assert!(matches!(err, ServerError::AlreadyServed { .. }), "{err}");
    assert!(err.to_string().contains("already serving"));

    // A connected, idle client must not delay shutdown.
    let mut c = Raw::connect(&fx.path);
    c.version();
    let t = Instant::now();
    fx.handle.take().unwrap().shutdown();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!fx.path.exists(), "socket file must be removed");
    c.assert_closed_by_server();
    // 2: the AlreadyServed probe of the failed bind was itself accepted as a (brief) client.
    assert_eq!(fx.dev.disconnects.load(Ordering::SeqCst), 2);

    // Stale socket (listener gone, file left): replaced.
    let stale = sock_path("stale");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let s = Server::bind(&stale, dev.clone(), fx.dma.clone(), fx.irqs.clone()).unwrap();
    let h = s.spawn("stale".into());
    Raw::connect(&stale).version();
    h.shutdown();

    // A regular file is never replaced.
    let file = sock_path("regular");
    std::fs::write(&file, b"x").unwrap();
    let err = Server::bind(&file, dev, fx.dma.clone(), fx.irqs.clone()).unwrap_err();
    assert!(matches!(err, ServerError::NotASocket { .. }));
    std::fs::remove_file(&file).unwrap();
}

/// Fds that are not what they claim: every "eventfd" that is something else and every DMA
/// fd that is not a sealed memory file is refused with an error reply; the connection goes
/// on, and the same real eventfd twice is fine.
#[test]
fn fds_that_are_not_what_they_claim_are_refused() {
    let fx = start("badfds");
    let mut c = Raw::connect(&fx.path);
    c.version();
    let dir = std::env::temp_dir().join(format!("emu-badfds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo failed");
    // Opened read-write so that the open does not wait for a peer.
    let fifo_fd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap()
        .into();
    let (pipe_r, pipe_w) = std::io::pipe().unwrap();
    let (pipe_r, pipe_w): (OwnedFd, OwnedFd) = (pipe_r.into(), pipe_w.into());
    let (sock_a, _sock_b) = UnixStream::pair().unwrap();
    let file: OwnedFd = File::create(dir.join("file")).unwrap().into();
    let devnull: OwnedFd = File::open("/dev/null").unwrap().into();
    let dirfd: OwnedFd = File::open(&dir).unwrap().into();

    for (what, fd) in [
        ("pipe", pipe_w.as_raw_fd()),
        ("fifo", fifo_fd.as_raw_fd()),
        ("socket", sock_a.as_raw_fd()),
        ("regular file", file.as_raw_fd()),
        ("device node", devnull.as_raw_fd()),
    ] {
        let r = c.call_fds(
            cmd::DEVICE_SET_IRQS,
            &set_irqs(EVENTFD_TRIGGER, 2, 0, 1),
            &[fd],
        );
        assert_eq!(r.errno(), libc::EINVAL, "a {what} accepted as an eventfd");
        assert!(!fx.irqs.is_bound(0), "a {what} got bound");
    }
    // The same eventfd for two vectors is a legal (if odd) binding.
    let e = fdutil::eventfd().unwrap();
    let r = c.call_fds(
        cmd::DEVICE_SET_IRQS,
        &set_irqs(EVENTFD_TRIGGER, 2, 0, 2),
        &[e.as_raw_fd(), e.as_raw_fd()],
    );
    assert_eq!(r.errno(), 0);
    assert!(fx.irqs.fire(0) && fx.irqs.fire(1));
    assert_eq!(fdutil::eventfd_read(e.as_fd()).unwrap(), 2);

    let unsealed = fdutil::memfd_unsealed("unsealed", 0x2000).unwrap();
    for (what, fd, errno) in [
        ("directory", dirfd.as_raw_fd(), libc::EINVAL),
        ("device node", devnull.as_raw_fd(), libc::EINVAL),
        ("pipe", pipe_r.as_raw_fd(), libc::EINVAL),
        ("unsealed memfd", unsealed.as_raw_fd(), libc::EPERM),
    ] {
        let r = c.call_fds(cmd::DMA_MAP, &dma_map(3, 0, 0x10_0000, 0x1000), &[fd]);
        assert_eq!(r.errno(), errno, "DMA_MAP of a {what}");
    }
    assert_eq!(fx.dma.map_count(), 0);
    c.assert_device_info();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A client flooding the server with requests is slowed to MAX_REQUESTS_PER_SEC, and every
/// request is still answered in order.
#[test]
fn a_request_flood_is_throttled() {
    let fx = start("flood");
    let mut c = Raw::connect(&fx.path);
    c.version();
    let n = 3000u32;
    // Replies are read by a second thread while this one writes, so neither side stalls on
    // a full socket buffer.
    let mut reader = Raw {
        s: c.s.try_clone().unwrap(),
        id: 0,
    };
    let t0 = Instant::now();
    let replies = std::thread::spawn(move || {
        (0..n)
            .map(|_| reader.recv().errno())
            .filter(|&e| e == 0)
            .count()
    });
    for _ in 0..n {
        c.send(cmd::REGION_READ, &region_access(0, region::CONFIG, 4, &[]));
    }
    let ok = replies.join().unwrap();
    let took = t0.elapsed();
    assert_eq!(ok, n as usize, "every flooded request answered");
    // At MAX_REQUESTS_PER_SEC the flood takes at least n / rate, less one window.
    let floor = Duration::from_secs_f64(f64::from(n) / f64::from(MAX_REQUESTS_PER_SEC))
        .saturating_sub(Duration::from_millis(10));
    println!("{n} requests in {took:?} (floor {floor:?})");
    assert!(took >= floor, "{n} requests in {took:?}: not throttled");
    assert!(fx.stats().throttled > 0);
    c.assert_device_info();
}
