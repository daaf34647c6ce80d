//! The server loop: one thread per socket, one client at a time, every message framed and
//! validated before it reaches the device.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use emu_guest_mem::{fd, DmaError, DmaTable};

use crate::sys;
use crate::wire::{self, cmd, flags, vfio, Header, WireError, HEADER_SIZE};
use crate::{irq_index, region, AccessError, DeviceSpec, LogBudget, VfioDevice};
use emu_guest_mem::IrqSet;

/// Most requests one client may make per second (trapped register accesses, mailbox and
/// AdminQ doorbells, DMA maps). Each costs this VF's server thread CPU time that the node's
/// other tenants share; a client that asks for more waits before its next message is read
/// (it slows itself only). A booting guest makes a few thousand; the packet path makes none.
pub const MAX_REQUESTS_PER_SEC: u32 = 20_000;
/// The rate is enforced over windows this long.
const THROTTLE_WINDOW: Duration = Duration::from_millis(10);

/// Default time a started message (or a reply write) may take before the connection is
/// dropped. QEMU's own reply timeout (`x-msg-timeout`) is 5 s.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{path}: another process is already serving a vfio-user device on this socket; stop it or use another path")]
    AlreadyServed { path: PathBuf },
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("{path}: cannot check whether the existing socket is in use")]
    Probe {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: cannot remove the stale socket")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: cannot listen on the socket")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Server counters (control path plus trapped accesses).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub messages: AtomicU64,
    pub error_replies: AtomicU64,
    /// Connections closed because the framing could not be trusted (bad size, EOF or
    /// timeout in the middle of a message, unreadable socket).
    pub protocol_errors: AtomicU64,
    pub region_reads: AtomicU64,
    pub region_writes: AtomicU64,
    pub dma_maps: AtomicU64,
    pub dma_unmaps: AtomicU64,
    pub set_irqs: AtomicU64,
    /// Times the client was made to wait for exceeding [`MAX_REQUESTS_PER_SEC`].
    pub throttled: AtomicU64,
    pub resets: AtomicU64,
    /// Clients dropped because their DMA memory faulted (truncated under us).
    pub memory_faults: AtomicU64,
    pub connected: AtomicBool,
}

/// A plain copy of [`ServerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections: u64,
    pub messages: u64,
    pub error_replies: u64,
    pub protocol_errors: u64,
    pub region_reads: u64,
    pub region_writes: u64,
    pub dma_maps: u64,
    pub dma_unmaps: u64,
    pub set_irqs: u64,
    pub throttled: u64,
    pub resets: u64,
    pub memory_faults: u64,
    pub connected: bool,
}

impl ServerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections: l(&self.connections),
            messages: l(&self.messages),
            error_replies: l(&self.error_replies),
            protocol_errors: l(&self.protocol_errors),
            region_reads: l(&self.region_reads),
            region_writes: l(&self.region_writes),
            dma_maps: l(&self.dma_maps),
            dma_unmaps: l(&self.dma_unmaps),
            set_irqs: l(&self.set_irqs),
            throttled: l(&self.throttled),
            resets: l(&self.resets),
            memory_faults: l(&self.memory_faults),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Why one request got an error reply. The connection goes on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("malformed payload")]
    Wire(#[from] WireError),
    #[error("DMA request refused")]
    Dma(#[from] DmaError),
    #[error("device refused the access")]
    Access(#[from] AccessError),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("command {0} is not supported")]
    NotSupported(u16),
    #[error("command {0} is unknown")]
    Unknown(u16),
    #[error("command {0} before VERSION")]
    NotNegotiated(u16),
}

impl RequestError {
    pub(crate) fn errno(&self) -> i32 {
        match self {
            RequestError::Wire(e) => e.errno(),
            RequestError::Dma(e) => e.errno(),
            RequestError::Access(_) => libc::EINVAL,
            RequestError::Invalid(_) => libc::EINVAL,
            RequestError::NotSupported(_) => libc::ENOTSUP,
            RequestError::Unknown(_) => libc::ENOSYS,
            RequestError::NotNegotiated(_) => libc::EINVAL,
        }
    }
}

/// How a connection ended.
#[derive(Debug)]
enum Close {
    Eof,
    Shutdown,
    /// The owner asked to drop the current client ([`ServerHandle::disconnect_client`]).
    Kicked,
    /// The client's DMA memory faulted (it shrank a mapped file): the map that did.
    Faulted {
        address: u64,
        size: u64,
    },
    Protocol(String),
    Io(io::Error),
}

struct Shared {
    device: Arc<dyn VfioDevice>,
    dma: Arc<DmaTable>,
    irqs: Arc<IrqSet>,
    stats: Arc<ServerStats>,
    timeout: Duration,
    /// Set before the wake eventfd is written: stop the thread.
    stop: AtomicBool,
    /// Set before the wake eventfd is written: drop the current client, keep serving.
    kick: AtomicBool,
    /// Log lines the client can trigger (connects, refusals, protocol errors).
    log: LogBudget,
}

/// What a write to the wake eventfd meant.
enum Wake {
    Stop,
    Kick,
    Faulted { address: u64, size: u64 },
    Spurious,
}

impl Shared {
    fn take_wake(&self, wake: BorrowedFd<'_>) -> Wake {
        let _ = fd::eventfd_read(wake);
        if self.stop.load(Ordering::Acquire) {
            Wake::Stop
        } else if self.kick.swap(false, Ordering::AcqRel) {
            Wake::Kick
        } else if let Some((address, size)) = self.dma.faulted() {
            Wake::Faulted { address, size }
        } else {
            Wake::Spurious
        }
    }
}

/// A bound, not yet running, vfio-user server.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    ino: (u64, u64),
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("path", &self.path).finish()
    }
}

impl Server {
    /// Listens on `path`. A stale socket there is replaced; a live one is `AlreadyServed`.
    pub fn bind(
        path: &Path,
        device: Arc<dyn VfioDevice>,
        dma: Arc<DmaTable>,
        irqs: Arc<IrqSet>,
    ) -> Result<Server, ServerError> {
        let p = || path.to_path_buf();
        if let Ok(md) = std::fs::symlink_metadata(path) {
            if !md.file_type().is_socket() {
                return Err(ServerError::NotASocket { path: p() });
            }
            match UnixStream::connect(path) {
                // Note: the probe connection reaches the other server's backlog; it sees an
                // immediate EOF once it accepts it, which is harmless.
                Ok(_) => return Err(ServerError::AlreadyServed { path: p() }),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "removing stale vfio-user socket");
                    std::fs::remove_file(path)
                        .map_err(|source| ServerError::RemoveStale { path: p(), source })?;
                }
                Err(source) => return Err(ServerError::Probe { path: p(), source }),
            }
        }
        let listener =
            UnixListener::bind(path).map_err(|source| ServerError::Bind { path: p(), source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::Bind { path: p(), source })?;
        let ino = std::fs::symlink_metadata(path)
            .map(|m| (m.dev(), m.ino()))
            .unwrap_or((0, 0));
        Ok(Server {
            listener,
            path: p(),
            ino,
            shared: Arc::new(Shared {
                device,
                dma,
                irqs,
                stats: Arc::new(ServerStats::default()),
                timeout: DEFAULT_MESSAGE_TIMEOUT,
                stop: AtomicBool::new(false),
                kick: AtomicBool::new(false),
                log: LogBudget::new(),
            }),
        })
    }

    /// How long a started message or a reply write may take (default 5 s).
    pub fn set_message_timeout(&mut self, timeout: Duration) {
        // Only called before `spawn`, while this is the sole owner.
        if let Some(sh) = Arc::get_mut(&mut self.shared) {
            sh.timeout = timeout;
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// Starts the server thread. Panics only if the OS cannot create a thread or an
    /// eventfd (like `std::thread::spawn`).
    pub fn spawn(self, thread_name: String) -> ServerHandle {
        let wake = Arc::new(fd::eventfd().expect("cannot create the server's shutdown eventfd"));
        // A recovered fault in the client's memory wakes the server, which drops the client.
        self.shared.dma.set_fault_notify(wake.clone());
        let stats = self.shared.stats.clone();
        let shared = self.shared.clone();
        let path = self.path.clone();
        let ino = self.ino;
        let w = wake.clone();
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || self.run(w.as_fd()))
            .expect("cannot spawn the vfio-user server thread");
        ServerHandle {
            thread: Some(thread),
            wake,
            path,
            ino,
            stats,
            shared,
        }
    }

    fn run(self, wake: BorrowedFd<'_>) {
        tracing::info!(path = %self.path.display(), "vfio-user server listening");
        loop {
            match sys::poll2(self.listener.as_fd(), libc::POLLIN, wake, None) {
                Ok(r) if r.wake => match self.shared.take_wake(wake) {
                    Wake::Stop => break,
                    // No client to drop: nothing to do.
                    Wake::Kick | Wake::Faulted { .. } | Wake::Spurious => continue,
                },
                Ok(r) if !r.main => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "poll on the listening socket failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let close = self.serve(stream, wake);
            let shutdown = matches!(close, Close::Shutdown);
            if shutdown {
                break;
            }
        }
        tracing::info!(path = %self.path.display(), "vfio-user server stopped");
    }

    fn serve(&self, stream: UnixStream, wake: BorrowedFd<'_>) -> Close {
        let sh = &self.shared;
        inc(&sh.stats.connections);
        sh.stats.connected.store(true, Ordering::Relaxed);
        if let Some(suppressed) = sh.log.take() {
            tracing::info!(path = %self.path.display(), suppressed, "vfio-user client connected");
        }
        let close = match stream.set_nonblocking(true) {
            Err(e) => Close::Io(e),
            Ok(()) => {
                let mut conn = Conn {
                    stream,
                    wake,
                    sh,
                    spec: sh.device.spec(),
                    payload: Vec::new(),
                    out: Vec::new(),
                    negotiated: false,
                    max_xfer: wire::MAX_DATA_XFER,
                };
                conn.serve()
            }
        };
        if let Close::Faulted { .. } = close {
            inc(&sh.stats.memory_faults);
        }
        if let Close::Protocol(_) = close {
            inc(&sh.stats.protocol_errors);
        }
        // What a client can trigger at will is logged within the server's budget.
        let budget = if matches!(close, Close::Shutdown) {
            Some(0)
        } else {
            sh.log.take()
        };
        if let Some(suppressed) = budget {
            let path = self.path.display();
            match &close {
                Close::Eof => tracing::info!(%path, suppressed, "vfio-user client disconnected"),
                Close::Shutdown => {
                    tracing::info!(%path, "vfio-user connection closed for shutdown")
                }
                Close::Kicked => {
                    tracing::info!(%path, suppressed, "vfio-user client disconnected by the agent")
                }
                Close::Faulted { address, size } => tracing::warn!(
                    %path,
                    suppressed,
                    dma_address = format_args!("{address:#x}"),
                    dma_size = format_args!("{size:#x}"),
                    "the client's DMA memory faulted (its file was shrunk or lost its pages); \
                     client dropped and device reset, other VFs unaffected"
                ),
                Close::Protocol(reason) => tracing::warn!(
                    %path,
                    suppressed,
                    %reason,
                    "vfio-user protocol error, connection closed"
                ),
                Close::Io(e) => {
                    tracing::warn!(%path, suppressed, error = %e, "vfio-user connection failed")
                }
            }
        }
        // Disconnect duties (spec "Client Disconnection"): drop DMA and IRQ fds, keep the
        // device state, accept the next client.
        sh.dma.clear();
        sh.irqs.clear();
        if matches!(close, Close::Faulted { .. }) {
            // The device may hold state built from the zeros it read: start it afresh.
            sh.device.reset();
        }
        sh.device.client_disconnected();
        sh.stats.connected.store(false, Ordering::Relaxed);
        close
    }
}

/// The running server; `shutdown` stops it and removes the socket file.
pub struct ServerHandle {
    thread: Option<JoinHandle<()>>,
    wake: Arc<OwnedFd>,
    path: PathBuf,
    ino: (u64, u64),
    stats: Arc<ServerStats>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl ServerHandle {
    /// Drops the current client, if any, with the usual disconnect duties (DMA and IRQ fds
    /// released, `client_disconnected` called), and keeps accepting new clients. Used to
    /// scrub a VF that was released by its user. Returns once the request is posted.
    pub fn disconnect_client(&self) {
        self.shared.kick.store(true, Ordering::Release);
        if let Err(e) = fd::eventfd_write(self.wake.as_fd(), 1) {
            tracing::error!(error = %e, "cannot signal the vfio-user server thread");
        }
    }

    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Whether the server thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the server thread (closing any connection, with its disconnect duties) and
    /// removes the socket file.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(t) = self.thread.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        if let Err(e) = fd::eventfd_write(self.wake.as_fd(), 1) {
            tracing::error!(error = %e, "cannot signal the vfio-user server thread");
        }
        if t.join().is_err() {
            tracing::error!(path = %self.path.display(), "vfio-user server thread panicked");
        }
        // Remove the socket only if it is still ours (not a successor's).
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One client connection.
struct Conn<'a> {
    stream: UnixStream,
    wake: BorrowedFd<'a>,
    sh: &'a Shared,
    spec: DeviceSpec,
    /// Reused payload buffer.
    payload: Vec<u8>,
    /// Reused reply buffer: header placeholder plus reply payload.
    out: Vec<u8>,
    negotiated: bool,
    max_xfer: u32,
}

/// A received message's fds and whether the kernel had to drop some.
struct Fds {
    fds: Vec<OwnedFd>,
    truncated: bool,
}

impl Conn<'_> {
    fn serve(&mut self) -> Close {
        let per_window =
            (u128::from(MAX_REQUESTS_PER_SEC) * THROTTLE_WINDOW.as_millis() / 1000).max(1) as u32;
        let mut window = (Instant::now(), 0u32);
        loop {
            if window.1 >= per_window {
                let end = window.0 + THROTTLE_WINDOW;
                let now = Instant::now();
                if now < end {
                    inc(&self.sh.stats.throttled);
                    std::thread::sleep(end - now);
                }
                window = (Instant::now(), 0);
            }
            let (hdr, fds) = match self.read_message() {
                Ok(m) => m,
                Err(c) => return c,
            };
            window.1 += 1;
            inc(&self.sh.stats.messages);
            if let Err(c) = self.dispatch(hdr, fds) {
                return c;
            }
        }
    }

    /// Waits for `events` until `deadline`; the shutdown eventfd wins.
    fn wait(&self, events: libc::c_short, deadline: Option<Instant>) -> Result<(), Close> {
        loop {
            let timeout = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Close::Protocol(
                            "timed out in the middle of a message".into(),
                        ));
                    }
                    Some(d - now)
                }
            };
            let r =
                sys::poll2(self.stream.as_fd(), events, self.wake, timeout).map_err(Close::Io)?;
            if r.wake {
                match self.sh.take_wake(self.wake) {
                    Wake::Stop => return Err(Close::Shutdown),
                    Wake::Kick => return Err(Close::Kicked),
                    Wake::Faulted { address, size } => {
                        return Err(Close::Faulted { address, size })
                    }
                    Wake::Spurious => {}
                }
            }
            if r.main {
                return Ok(());
            }
        }
    }

    fn read_message(&mut self) -> Result<(Header, Fds), Close> {
        let mut h = [0u8; HEADER_SIZE];
        let mut got = 0;
        let mut fds = Fds {
            fds: Vec::new(),
            truncated: false,
        };
        let mut deadline = None;
        // fds arrive with the first bytes of a message, so the header is read with recvmsg.
        while got < HEADER_SIZE {
            self.wait(libc::POLLIN, deadline)?;
            let buf = h.get_mut(got..).unwrap_or_default();
            match sys::recv_with_fds(self.stream.as_fd(), buf, &mut fds.fds) {
                Ok((0, _)) if got == 0 => return Err(Close::Eof),
                Ok((0, _)) => return Err(Close::Protocol(format!("EOF after {got} header bytes"))),
                Ok((n, trunc)) => {
                    got += n;
                    fds.truncated |= trunc;
                    deadline.get_or_insert_with(|| Instant::now() + self.sh.timeout);
                }
                Err(e) if retry(&e) => {}
                Err(e) if got == 0 && e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Close::Eof)
                }
                Err(e) => return Err(Close::Io(e)),
            }
        }
        let hdr = Header::parse(&h);
        let Some(len) = hdr.payload_len() else {
            return Err(Close::Protocol(format!(
                "message size {} outside [16, {}] (command {}, id {})",
                hdr.size,
                wire::MAX_MESSAGE_SIZE,
                hdr.command,
                hdr.msg_id
            )));
        };
        self.payload.clear();
        self.payload.resize(len, 0);
        let mut got = 0;
        while got < len {
            self.wait(libc::POLLIN, deadline)?;
            let buf = self.payload.get_mut(got..).unwrap_or_default();
            // Plain reads: fds attached to payload bytes are discarded (closed) by the kernel.
            match (&self.stream).read(buf) {
                Ok(0) => {
                    return Err(Close::Protocol(format!(
                        "EOF after {got} of {len} payload bytes (command {})",
                        hdr.command
                    )))
                }
                Ok(n) => got += n,
                Err(e) if retry(&e) => {}
                Err(e) => return Err(Close::Io(e)),
            }
        }
        Ok((hdr, fds))
    }

    fn dispatch(&mut self, hdr: Header, fds: Fds) -> Result<(), Close> {
        match hdr.msg_type() {
            flags::TYPE_COMMAND => {}
            flags::TYPE_REPLY => {
                // We never send requests, so there is nothing to match; drop it (and its fds).
                tracing::debug!(
                    command = hdr.command,
                    id = hdr.msg_id,
                    "ignoring unexpected reply"
                );
                return Ok(());
            }
            _ => return self.reject(hdr, RequestError::Invalid("unknown message type")),
        }
        self.out.clear();
        self.out.extend_from_slice(&[0u8; HEADER_SIZE]);
        let payload = std::mem::take(&mut self.payload);
        let res = if fds.truncated || fds.fds.len() > sys::MAX_FDS {
            Err(RequestError::Invalid("more fds than max_msg_fds"))
        } else {
            self.handle(hdr, &payload, fds.fds)
        };
        self.payload = payload;
        match res {
            Ok(fd) if !hdr.no_reply() => {
                let size = u32::try_from(self.out.len()).unwrap_or(u32::MAX);
                let rh = Header {
                    msg_id: hdr.msg_id,
                    command: hdr.command,
                    size,
                    flags: flags::TYPE_REPLY,
                    error: 0,
                };
                if let Some(h) = self.out.get_mut(..HEADER_SIZE) {
                    h.copy_from_slice(&rh.to_bytes());
                }
                let out = std::mem::take(&mut self.out);
                let r = self.send(&out, fd.as_deref().map(|f| f.as_fd()));
                self.out = out;
                r
            }
            Ok(_) => Ok(()),
            Err(e) => self.reject(hdr, e),
        }
    }

    /// Error reply. Sent even for No_reply requests: the spec asks for errors to be
    /// reported, and QEMU only logs an error reply to a posted write.
    fn reject(&mut self, hdr: Header, e: RequestError) -> Result<(), Close> {
        inc(&self.sh.stats.error_replies);
        let errno = e.errno();
        // Refusals are worth an operator's attention (a QEMU whose memory is not sealed, an
        // fd that is not an eventfd); a client looping on bad requests must not flood the
        // log, so beyond the server's budget they go to debug.
        let cause = std::error::Error::source(&e).map(|c| c.to_string());
        if let Some(suppressed) = self.sh.log.take() {
            tracing::warn!(command = hdr.command, errno, suppressed, error = %e, cause, "vfio-user request refused");
        } else {
            tracing::debug!(command = hdr.command, id = hdr.msg_id, errno, error = %e, cause, "vfio-user request refused");
        }
        let rh = Header {
            msg_id: hdr.msg_id,
            command: hdr.command,
            size: HEADER_SIZE as u32,
            flags: flags::TYPE_REPLY | flags::ERROR,
            error: errno as u32,
        };
        self.send(&rh.to_bytes(), None)
    }

    fn send(&self, buf: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<(), Close> {
        let deadline = Some(Instant::now() + self.sh.timeout);
        let mut sent = 0;
        while sent < buf.len() {
            self.wait(libc::POLLOUT, deadline)?;
            let rest = buf.get(sent..).unwrap_or_default();
            match sys::send_with_fd(self.stream.as_fd(), rest, if sent == 0 { fd } else { None }) {
                Ok(n) => sent += n,
                Err(e) if retry(&e) => {}
                Err(e) => return Err(Close::Io(e)),
            }
        }
        Ok(())
    }

    /// Handles one request, appending the reply payload to `self.out`. Returns an fd to
    /// send with the reply.
    fn handle(
        &mut self,
        hdr: Header,
        p: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<Option<Arc<OwnedFd>>, RequestError> {
        if !self.negotiated && hdr.command != cmd::VERSION {
            return Err(RequestError::NotNegotiated(hdr.command));
        }
        let takes_fds = matches!(hdr.command, cmd::DMA_MAP | cmd::DEVICE_SET_IRQS);
        if !takes_fds && !fds.is_empty() {
            return Err(RequestError::Invalid("unexpected fds with this command"));
        }
        let sh = self.sh;
        match hdr.command {
            cmd::VERSION => {
                if self.negotiated {
                    return Err(RequestError::Invalid("VERSION was already negotiated"));
                }
                let v = wire::Version::parse(p)?;
                let client = v
                    .caps
                    .max_data_xfer_size
                    .unwrap_or(wire::MAX_DATA_XFER as u64);
                self.max_xfer = client.min(wire::MAX_DATA_XFER as u64) as u32;
                self.out
                    .extend_from_slice(&wire::version_reply(self.max_xfer));
                self.negotiated = true;
                if let Some(suppressed) = sh.log.take() {
                    tracing::info!(
                        client_minor = v.minor,
                        max_data_xfer_size = self.max_xfer,
                        suppressed,
                        "vfio-user version negotiated"
                    );
                }
                sh.device.client_connected();
                Ok(None)
            }
            cmd::DMA_MAP => {
                let m = wire::DmaMap::parse(p)?;
                if fds.len() > 1 {
                    return Err(RequestError::Invalid("DMA_MAP with more than one fd"));
                }
                let fd = fds.into_iter().next();
                sh.dma.map(m.address, m.size, m.offset, m.flags, fd)?;
                inc(&sh.stats.dma_maps);
                Ok(None)
            }
            cmd::DMA_UNMAP => {
                let m = wire::DmaUnmap::parse(p)?;
                if m.flags & vfio::DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
                    return Err(RequestError::NotSupported(hdr.command));
                }
                if m.flags == vfio::DMA_UNMAP_FLAG_ALL {
                    if m.address != 0 || m.size != 0 {
                        return Err(RequestError::Invalid(
                            "DMA_UNMAP ALL needs address 0 size 0",
                        ));
                    }
                    sh.dma.clear();
                } else if m.flags != 0 {
                    return Err(RequestError::Invalid("unknown DMA_UNMAP flags"));
                } else {
                    sh.dma.unmap(m.address, m.size)?;
                }
                inc(&sh.stats.dma_unmaps);
                m.write(&mut self.out);
                Ok(None)
            }
            cmd::DEVICE_GET_INFO => {
                wire::parse_device_get_info(p)?;
                put_u32(&mut self.out, 16);
                put_u32(
                    &mut self.out,
                    vfio::DEVICE_FLAGS_PCI | vfio::DEVICE_FLAGS_RESET,
                );
                put_u32(&mut self.out, region::COUNT);
                put_u32(&mut self.out, irq_index::COUNT);
                Ok(None)
            }
            cmd::DEVICE_GET_REGION_INFO => self.region_info(p),
            cmd::DEVICE_GET_IRQ_INFO => {
                let r = wire::IrqInfoReq::parse(p)?;
                let count = self.irq_count(r.index)?;
                let mut fl = vfio::IRQ_INFO_EVENTFD;
                if r.index == irq_index::MSIX || r.index == irq_index::MSI {
                    fl |= vfio::IRQ_INFO_MASKABLE;
                }
                put_u32(&mut self.out, 16);
                put_u32(&mut self.out, fl);
                put_u32(&mut self.out, r.index);
                put_u32(&mut self.out, count);
                Ok(None)
            }
            cmd::DEVICE_SET_IRQS => {
                self.set_irqs(p, fds)?;
                inc(&sh.stats.set_irqs);
                Ok(None)
            }
            cmd::REGION_READ => {
                inc(&sh.stats.region_reads);
                let a = wire::RegionAccess::parse("REGION_READ", p)?;
                self.check_access(a.region, a.offset, a.count, false)?;
                wire::RegionAccess::write_head(a.offset, a.region, a.count, &mut self.out);
                let start = self.out.len();
                self.out.resize(start + a.count as usize, 0);
                let buf = self.out.get_mut(start..).unwrap_or_default();
                sh.device.region_read(a.region, a.offset, buf)?;
                Ok(None)
            }
            cmd::REGION_WRITE => {
                inc(&sh.stats.region_writes);
                let a = wire::RegionAccess::parse("REGION_WRITE", p)?;
                self.check_access(a.region, a.offset, a.count, true)?;
                let data = a.data.get(..a.count as usize).ok_or(RequestError::Invalid(
                    "REGION_WRITE count exceeds the payload",
                ))?;
                sh.device.region_write(a.region, a.offset, data)?;
                wire::RegionAccess::write_head(a.offset, a.region, a.count, &mut self.out);
                Ok(None)
            }
            cmd::DEVICE_RESET => {
                sh.device.reset();
                inc(&sh.stats.resets);
                Ok(None)
            }
            cmd::DEVICE_GET_REGION_IO_FDS
            | cmd::DMA_READ
            | cmd::DMA_WRITE
            | cmd::DIRTY_PAGES
            | cmd::REGION_WRITE_MULTI => Err(RequestError::NotSupported(hdr.command)),
            other => Err(RequestError::Unknown(other)),
        }
    }

    fn irq_count(&self, index: u32) -> Result<u32, RequestError> {
        self.spec
            .irq_counts
            .get(index as usize)
            .copied()
            .ok_or(RequestError::Invalid("IRQ index out of range"))
    }

    fn check_access(
        &self,
        region: u32,
        offset: u64,
        count: u32,
        write: bool,
    ) -> Result<(), RequestError> {
        if count > self.max_xfer {
            return Err(RequestError::Invalid(
                "region access larger than max_data_xfer_size",
            ));
        }
        if region >= region::COUNT {
            return Err(RequestError::Invalid("region index out of range"));
        }
        let r = self
            .spec
            .regions
            .get(region as usize)
            .ok_or(RequestError::Invalid("region does not exist"))?;
        if (write && !r.writable) || (!write && !r.readable) {
            return Err(RequestError::Invalid("region does not allow this access"));
        }
        let end = offset
            .checked_add(u64::from(count))
            .ok_or(RequestError::Invalid("region access wraps around"))?;
        if end > r.size {
            return Err(RequestError::Invalid("region access beyond the region"));
        }
        Ok(())
    }

    fn region_info(&mut self, p: &[u8]) -> Result<Option<Arc<OwnedFd>>, RequestError> {
        let req = wire::RegionInfoReq::parse(p)?;
        if req.index >= region::COUNT {
            return Err(RequestError::Invalid("region index out of range"));
        }
        let spec = self.spec.regions.get(req.index as usize);
        let size = spec.map_or(0, |r| r.size);
        let mut fl = 0;
        if let Some(r) = spec.filter(|r| r.size > 0) {
            if r.readable {
                fl |= vfio::REGION_INFO_FLAG_READ;
            }
            if r.writable {
                fl |= vfio::REGION_INFO_FLAG_WRITE;
            }
        }
        let areas: &[(u64, u64)] = match spec {
            Some(r) if r.size > 0 && r.mmap_fd.is_some() => &r.sparse_mmap,
            _ => &[],
        };
        let base = wire::REGION_INFO_LEN;
        // Sparse-mmap cap: {u16 id, u16 version, u32 next} {u32 nr_areas, u32 pad} areas.
        let needed = if areas.is_empty() {
            base
        } else {
            fl |= vfio::REGION_INFO_FLAG_MMAP | vfio::REGION_INFO_FLAG_CAPS;
            areas
                .len()
                .checked_mul(16)
                .and_then(|a| a.checked_add(base + 16))
                .ok_or(RequestError::Invalid("too many sparse areas"))?
        };
        let needed32 =
            u32::try_from(needed).map_err(|_| RequestError::Invalid("too many sparse areas"))?;
        let fits = req.argsz as usize >= needed;
        put_u32(&mut self.out, needed32);
        put_u32(&mut self.out, fl);
        put_u32(&mut self.out, req.index);
        // cap_offset points just past the info even when the caps did not fit: QEMU's
        // vfio-user client rejects a CAPS reply whose cap_offset is below sizeof(info)
        // (EINVAL), then asks again with argsz = needed.
        put_u32(
            &mut self.out,
            if areas.is_empty() { 0 } else { base as u32 },
        );
        put_u64(&mut self.out, size);
        put_u64(&mut self.out, 0);
        if !fits || areas.is_empty() {
            return Ok(None);
        }
        self.out
            .extend_from_slice(&vfio::REGION_INFO_CAP_SPARSE_MMAP.to_le_bytes());
        self.out.extend_from_slice(&1u16.to_le_bytes());
        put_u32(&mut self.out, 0);
        put_u32(&mut self.out, areas.len() as u32);
        put_u32(&mut self.out, 0);
        for &(off, len) in areas {
            put_u64(&mut self.out, off);
            put_u64(&mut self.out, len);
        }
        Ok(spec.and_then(|r| r.mmap_fd.clone()))
    }

    fn set_irqs(&mut self, p: &[u8], fds: Vec<OwnedFd>) -> Result<(), RequestError> {
        let s = wire::SetIrqs::parse(p)?;
        let max = self.irq_count(s.index)?;
        let all = vfio::IRQ_SET_DATA_TYPE_MASK | vfio::IRQ_SET_ACTION_TYPE_MASK;
        if s.flags & !all != 0 {
            return Err(RequestError::Invalid("unknown SET_IRQS flags"));
        }
        let data = s.flags & vfio::IRQ_SET_DATA_TYPE_MASK;
        let action = s.flags & vfio::IRQ_SET_ACTION_TYPE_MASK;
        if data.count_ones() != 1 || action.count_ones() != 1 {
            return Err(RequestError::Invalid(
                "SET_IRQS needs one data type and one action",
            ));
        }
        let msix = s.index == irq_index::MSIX;
        let irqs = &self.sh.irqs;
        if data == vfio::IRQ_SET_DATA_NONE && action == vfio::IRQ_SET_ACTION_TRIGGER && s.count == 0
        {
            if !fds.is_empty() {
                return Err(RequestError::Invalid("fds with a SET_IRQS disable"));
            }
            if msix {
                irqs.clear();
                self.sh.device.irqs_changed();
            }
            return Ok(());
        }
        let end = s
            .start
            .checked_add(s.count)
            .ok_or(RequestError::Invalid("SET_IRQS start+count overflows"))?;
        if end > max {
            return Err(RequestError::Invalid(
                "SET_IRQS range beyond the index's vectors",
            ));
        }
        if data != vfio::IRQ_SET_DATA_EVENTFD && !fds.is_empty() {
            return Err(RequestError::Invalid("fds with a non-eventfd SET_IRQS"));
        }
        match data {
            vfio::IRQ_SET_DATA_EVENTFD => {
                if action != vfio::IRQ_SET_ACTION_TRIGGER {
                    return Err(RequestError::Invalid(
                        "eventfds are only supported for TRIGGER",
                    ));
                }
                if fds.len() > s.count as usize {
                    return Err(RequestError::Invalid("more fds than vectors"));
                }
                if !fds.is_empty() && fds.len() != s.count as usize {
                    return Err(RequestError::Invalid("fewer fds than vectors"));
                }
                // Only real eventfds: a pipe, FIFO, socket or file posing as one could block
                // or slow the dataplane's interrupt write, or fill a disk.
                for fd in &fds {
                    if !fd::is_eventfd(fd.as_fd()).unwrap_or(false) {
                        return Err(RequestError::Invalid(
                            "SET_IRQS fd is not an eventfd (pipes, sockets and files are refused)",
                        ));
                    }
                }
                if msix {
                    // No fds: de-assign the vectors (QEMU sends -1 fds that way).
                    let binding: Vec<Option<OwnedFd>> = if fds.is_empty() {
                        (0..s.count).map(|_| None).collect()
                    } else {
                        fds.into_iter().map(Some).collect()
                    };
                    irqs.bind(s.start, binding);
                    self.sh.device.irqs_changed();
                }
                // Other indexes: our devices do not raise them; the fds are closed here.
            }
            vfio::IRQ_SET_DATA_BOOL => {
                let bools = s.data.get(..s.count as usize).ok_or(RequestError::Invalid(
                    "SET_IRQS bool array shorter than count",
                ))?;
                if msix && action == vfio::IRQ_SET_ACTION_TRIGGER {
                    for (i, &b) in bools.iter().enumerate() {
                        if b != 0 {
                            irqs.fire(s.start + i as u32);
                        }
                    }
                }
            }
            _ => {
                // DATA_NONE: TRIGGER fires the vectors; MASK/UNMASK are accepted (QEMU
                // emulates the MSI-X table and masks on its side).
                if msix && action == vfio::IRQ_SET_ACTION_TRIGGER {
                    for v in s.start..end {
                        irqs.fire(v);
                    }
                }
            }
        }
        Ok(())
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_of_each_error_reply() {
        let cases: Vec<(RequestError, i32)> = vec![
            (
                RequestError::Wire(WireError::Truncated {
                    what: "x",
                    need: 4,
                    got: 0,
                }),
                libc::EINVAL,
            ),
            (RequestError::Wire(WireError::VersionNoNul), libc::EINVAL),
            (RequestError::Wire(WireError::VersionNotUtf8), libc::EINVAL),
            (
                RequestError::Wire(WireError::VersionJson("x".into())),
                libc::EINVAL,
            ),
            (
                RequestError::Wire(WireError::VersionMajor(1)),
                libc::ENOTSUP,
            ),
            (
                RequestError::Dma(DmaError::Overlap {
                    address: 0,
                    size: 1,
                }),
                libc::EEXIST,
            ),
            (
                RequestError::Dma(DmaError::NotFound {
                    address: 0,
                    size: 1,
                }),
                libc::ENOENT,
            ),
            (
                RequestError::Dma(DmaError::BadRange {
                    address: 0,
                    size: 0,
                }),
                libc::EINVAL,
            ),
            (RequestError::Dma(DmaError::TooMany(1)), libc::ENOSPC),
            (
                RequestError::Dma(DmaError::Mmap {
                    address: 0,
                    size: 1,
                    source: io::Error::from_raw_os_error(libc::EACCES),
                }),
                libc::EACCES,
            ),
            (
                RequestError::Access(AccessError::OutOfBounds {
                    region: 0,
                    offset: 0,
                    len: 4,
                }),
                libc::EINVAL,
            ),
            (RequestError::Invalid("x"), libc::EINVAL),
            (RequestError::NotSupported(6), libc::ENOTSUP),
            (RequestError::Unknown(200), libc::ENOSYS),
            (RequestError::NotNegotiated(4), libc::EINVAL),
        ];
        for (e, errno) in cases {
            assert_eq!(e.errno(), errno, "{e:?}");
            assert_ne!(e.errno(), 0);
        }
    }
}
