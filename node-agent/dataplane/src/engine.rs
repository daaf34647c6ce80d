//! The dataplane thread: poll passes over every VF's TX ring, VMDq switching, RX delivery.
//!
//! One pass: for each VF, take up to [`TX_BUDGET`] packets from its TX ring (the VF's state
//! lock is held only while its ring is processed), switch them, and write each into the
//! destination VFs' RX rings (one destination lock at a time, so no lock is ever nested).
//! Interrupts raised during the pass are coalesced and written to the eventfds at its end.
//! Each pass also takes the interrupt requests the guests stored on mapped pages (igbvf's
//! EIMS re-arms), so an interrupt costs no trap.
//!
//! The engine knows no device: every model is driven through
//! [`emu_nic_model::ring::VfBackend`] (poll TX into the worker's frame arena, deliver a batch
//! into RX, collect interrupts); [`PortState`] lists the backends a port can hold. What the
//! engine does itself is scheduling (budgets, rate limits, threads), switching and counting.
//!
//! Mode `adaptive` sleeps when a pass found no work and wakes on a doorbell kick (the trapped
//! TDT write) or after [`IDLE_WAIT`], or sooner when an interrupt held back by moderation
//! falls due; mode `poll` busy-polls on pinned cores; mode `stepped`
//! has no threads and runs a pass whenever its owner calls [`Dataplane::step`].

use crate::counters::bump;
use crate::flowcache::LastDecision;
use crate::port::{PortState, VfPort};
use crate::ratelimit::TokenBucket;
use crate::tap_port::TapState;
use crate::uplink::{Uplink, UplinkCounters, UPLINK_MAX_FRAME};
use emu_nic_model::ring::{PlainRun, RxRun, RxTally, TxFrames, TxScratch, TxStats, VfBackend};
use emu_nic_model::vmdq::{
    rx_targets, rx_targets_header, rx_vlan_action, tx_check, tx_check_header, write_vlan_stripped,
    write_vlan_tagged, DropReason, L2Header, RxTargets, SwitchTable,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Packets taken from one TX ring per pass (fairness between VFs).
pub const TX_BUDGET: usize = 64;
/// Frames read from the uplink per pass (thread 0 polls it).
pub const UPLINK_RX_BUDGET: usize = 64;
/// Longest sleep of an idle adaptive dataplane. Doorbells on mapped pages do not trap, so
/// an idle dataplane polls at least this often; trapped doorbells and config writes wake it
/// at once. Sleeps start at [`IDLE_WAIT_MIN`] and double while idle.
pub const IDLE_WAIT: Duration = Duration::from_micros(200);
pub const IDLE_WAIT_MIN: Duration = Duration::from_micros(10);

/// How a dataplane thread waits when a pass found nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Spin for [`IDLE_SPIN`], then sleep with a doubling timeout up to [`IDLE_WAIT`]; a
    /// trapped doorbell or config write wakes it at once. For laptops, CI, shared machines.
    #[default]
    Adaptive,
    /// Busy-poll forever on a dedicated (pinned) core. Production.
    Poll,
    /// No threads: the caller runs each pass with [`Dataplane::step`]. For deterministic
    /// measurements (instruction counts under callgrind) and tests; not a config option.
    Stepped,
}

/// How long an adaptive thread keeps polling after its last work before it sleeps: long
/// enough to cover the gap while a guest refills its ring.
pub const IDLE_SPIN: Duration = Duration::from_micros(50);

#[derive(Debug, Clone, Default)]
pub struct DataplaneConfig {
    pub mode: Mode,
    /// One dataplane thread per core, pinned to it; empty: one unpinned thread. Thread k
    /// owns the TX side of ports k, k+n, k+2n, …; any thread may deliver to any port.
    pub cores: Vec<usize>,
}

struct Shared {
    ports: Vec<Arc<VfPort>>,
    table: RwLock<Arc<SwitchTable>>,
    /// Bumped after every table change, so that a pass can tell that its snapshot is stale.
    table_gen: AtomicU64,
    kicked: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
    passes: AtomicU64,
    busy_passes: AtomicU64,
    /// Nanoseconds spent in passes that found work (for the busy ratio).
    busy_ns: AtomicU64,
    started: std::time::Instant,
    /// The uplink, switch port `ports.len()` (the control path makes it the default port).
    uplink: Option<UplinkSlot>,
}

impl Shared {
    fn new(ports: Vec<Arc<VfPort>>, table: SwitchTable, uplink: Option<UplinkSlot>) -> Self {
        Shared {
            ports,
            table: RwLock::new(Arc::new(table)),
            table_gen: AtomicU64::new(0),
            kicked: Mutex::new(false),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            passes: AtomicU64::new(0),
            busy_passes: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            started: std::time::Instant::now(),
            uplink,
        }
    }
}

/// The uplink as the threads share it: any thread sends (under the lock), thread 0 receives.
struct UplinkSlot {
    port: usize,
    dev: Mutex<Box<dyn Uplink>>,
    counters: Arc<UplinkCounters>,
}

/// What the control path needs to know about the dataplane's uplink.
#[derive(Debug, Clone)]
pub struct UplinkInfo {
    /// Interface name (`emu0`).
    pub name: String,
    /// Backend (`tap`, `packet`).
    pub kind: &'static str,
    /// Its switch port: the number of VF ports. Make it the table's default port.
    pub port: usize,
    pub counters: Arc<UplinkCounters>,
}

/// Handle on the running dataplane threads.
pub struct Dataplane {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The worker of a [`Mode::Stepped`] dataplane.
    stepped: Option<Mutex<Worker>>,
}

impl Dataplane {
    /// Starts the dataplane over `ports` (switch port n = `ports[n]`).
    pub fn start(
        config: DataplaneConfig,
        ports: Vec<Arc<VfPort>>,
        table: SwitchTable,
    ) -> std::io::Result<Dataplane> {
        Self::start_with_uplink(config, ports, table, None)
    }

    /// [`Dataplane::start`] with an uplink on switch port `ports.len()`: frames the switch sends
    /// to the default port go out through it, and frames read from it are switched to the VFs.
    /// The caller makes that port the table's default port ([`Dataplane::uplink`] names it).
    pub fn start_with_uplink(
        config: DataplaneConfig,
        ports: Vec<Arc<VfPort>>,
        table: SwitchTable,
        uplink: Option<Box<dyn Uplink>>,
    ) -> std::io::Result<Dataplane> {
        let uplink = uplink.map(|dev| UplinkSlot {
            port: ports.len(),
            dev: Mutex::new(dev),
            counters: Arc::new(UplinkCounters::default()),
        });
        let shared = Arc::new(Shared::new(ports, table, uplink));
        if config.mode == Mode::Stepped {
            return Ok(Dataplane {
                shared,
                threads: Vec::new(),
                stepped: Some(Mutex::new(Worker::new(0, 1))),
            });
        }
        let cores: Vec<Option<usize>> = if config.cores.is_empty() {
            vec![None]
        } else {
            config.cores.iter().copied().map(Some).collect()
        };
        let n = cores.len();
        let mut threads = Vec::with_capacity(n);
        for (k, core) in cores.into_iter().enumerate() {
            let s = shared.clone();
            let mode = config.mode;
            let t = std::thread::Builder::new()
                .name(format!("dataplane-{k}"))
                .spawn(move || {
                    if let Some(c) = core {
                        if let Err(e) = crate::sys::pin_to_core(c) {
                            tracing::warn!(core = c, error = %e, "cannot pin the dataplane thread");
                        }
                    }
                    run(&s, mode, k, n)
                })?;
            threads.push(t);
        }
        Ok(Dataplane {
            shared,
            threads,
            stepped: None,
        })
    }

    /// Runs one poll pass over every port on the caller's thread and returns the packets it
    /// took from TX rings (uplink frames included). Only a [`Mode::Stepped`] dataplane steps;
    /// the others return 0.
    #[inline(never)]
    pub fn step(&self) -> usize {
        let Some(w) = &self.stepped else { return 0 };
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = w.pass(&self.shared);
        if n == 0 && w.held_for.is_some() {
            // A held-back interrupt: the caller should keep stepping.
            n = 1;
        }
        self.shared.passes.fetch_add(1, Ordering::Relaxed);
        n
    }

    /// A handle for the control path (kicks, table updates) that can be cloned freely.
    pub fn control(&self) -> DataplaneControl {
        DataplaneControl {
            shared: self.shared.clone(),
        }
    }

    /// The uplink, if the dataplane has one.
    pub fn uplink(&self) -> Option<UplinkInfo> {
        let up = self.shared.uplink.as_ref()?;
        let dev = up.dev.lock().unwrap_or_else(|p| p.into_inner());
        Some(UplinkInfo {
            name: dev.name().to_owned(),
            kind: dev.kind(),
            port: up.port,
            counters: up.counters.clone(),
        })
    }

    /// (passes, passes that found work).
    pub fn passes(&self) -> (u64, u64) {
        (
            self.shared.passes.load(Ordering::Relaxed),
            self.shared.busy_passes.load(Ordering::Relaxed),
        )
    }

    /// Share of wall time the threads spent in passes that moved packets, since start.
    pub fn busy_ratio(&self) -> f64 {
        let busy = self.shared.busy_ns.load(Ordering::Relaxed) as f64;
        let wall =
            self.shared.started.elapsed().as_nanos() as f64 * self.threads.len().max(1) as f64;
        if wall > 0.0 {
            busy / wall
        } else {
            0.0
        }
    }

    /// Whether every dataplane thread is alive.
    pub fn is_running(&self) -> bool {
        if self.stepped.is_some() {
            return !self.shared.stop.load(Ordering::Acquire);
        }
        !self.threads.is_empty() && self.threads.iter().all(|t| !t.is_finished())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let mut k = self.shared.kicked.lock().unwrap_or_else(|p| p.into_inner());
            *k = true;
            self.shared.wake.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Control-path handle: doorbell kicks and switch-table publication.
#[derive(Clone)]
pub struct DataplaneControl {
    shared: Arc<Shared>,
}

impl DataplaneControl {
    /// Wakes an idle dataplane (a doorbell was written).
    pub fn kick(&self) {
        let mut k = self.shared.kicked.lock().unwrap_or_else(|p| p.into_inner());
        *k = true;
        self.shared.wake.notify_one();
    }

    /// Replaces the switch table; frames taken from a TX ring after this returns are
    /// switched with it.
    pub fn publish(&self, table: SwitchTable) {
        let mut guard = self.shared.table.write().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(table);
        self.shared.table_gen.fetch_add(1, Ordering::Release);
    }

    /// Edits a copy of the current table and publishes it (as [`publish`](Self::publish)).
    pub fn update(&self, f: impl FnOnce(&mut SwitchTable)) {
        let mut guard = self.shared.table.write().unwrap_or_else(|p| p.into_inner());
        let mut t = SwitchTable::clone(&guard);
        f(&mut t);
        *guard = Arc::new(t);
        self.shared.table_gen.fetch_add(1, Ordering::Release);
    }
}

fn run(shared: &Shared, mode: Mode, me: usize, threads: usize) {
    let mut worker = Worker::new(me, threads);
    let mut idle = IDLE_WAIT_MIN;
    let mut last_work = std::time::Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        let t0 = std::time::Instant::now();
        let work = worker.pass(shared);
        shared.passes.fetch_add(1, Ordering::Relaxed);
        if work > 0 {
            shared.busy_passes.fetch_add(1, Ordering::Relaxed);
            shared
                .busy_ns
                .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            idle = IDLE_WAIT_MIN;
            last_work = t0;
            continue;
        }
        if mode == Mode::Poll || last_work.elapsed() < IDLE_SPIN {
            std::hint::spin_loop();
            continue;
        }
        // An interrupt held back by moderation sets the longest sleep: it fires on time
        // without the thread spinning through the gap.
        let timeout = worker.held_for.map_or(idle, |d| d.min(idle));
        let mut k = shared.kicked.lock().unwrap_or_else(|p| p.into_inner());
        if !*k {
            k = shared
                .wake
                .wait_timeout(k, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if *k {
            idle = IDLE_WAIT_MIN;
            last_work = std::time::Instant::now();
        } else if worker.held_for.is_none() {
            idle = (idle * 2).min(IDLE_WAIT);
        }
        *k = false;
    }
}

/// Frames bound for one port: one frame in one of the worker's arenas, or a run of
/// consecutive burst frames that go unchanged (the plain decisions of [`LastDecision`]).
#[derive(Debug, Clone, Copy)]
struct Delivery {
    dst: u16,
    /// Byte range in `frames` (or `extra_bytes` when `extra`); a run's whole range.
    start: u32,
    end: u32,
    extra: bool,
    vlan: Option<u16>,
    /// A run: `frames` frames of the burst arena from frame `first` on (0: a single frame).
    first: u32,
    frames: u32,
}

impl Delivery {
    fn one(dst: u16, start: usize, end: usize, extra: bool, vlan: Option<u16>) -> Self {
        Delivery {
            dst,
            start: start as u32,
            end: end as u32,
            extra,
            vlan,
            first: 0,
            frames: 0,
        }
    }

    /// Frames this delivery carries.
    fn count(&self) -> usize {
        (self.frames as usize).max(1)
    }

    /// The frames as the backends take them: one frame with the VLAN tag to report, or a
    /// run of unchanged burst frames.
    #[inline]
    fn run<'a>(&self, burst: &'a TxFrames, extra: &'a [u8]) -> RxRun<'a> {
        if self.frames == 0 {
            let arena = if self.extra { extra } else { burst.bytes() };
            let frame = arena
                .get(self.start as usize..self.end as usize)
                .unwrap_or(&[]);
            return RxRun::One(frame, self.vlan);
        }
        RxRun::Plain(PlainRun::of(
            burst,
            self.first as usize,
            self.frames as usize,
            self.start as usize,
        ))
    }
}

/// Per-thread reusable buffers: nothing is allocated per packet once they have grown.
struct Worker {
    scratch: TxScratch,
    /// Frames taken from one TX ring in this pass, back to back.
    frames: TxFrames,
    /// Frames rewritten by the switch (port VLAN inserted or stripped).
    extra_bytes: Vec<u8>,
    deliveries: Vec<Delivery>,
    /// Destinations of the current burst, in first-seen order.
    dsts: Vec<u16>,
    targets: RxTargets,
    /// The last plain unicast decision of the current burst (see [`crate::flowcache`]).
    last: LastDecision,
    /// Whether frames may repeat `last` (always, except in the tests that compare the
    /// dataplane with and without it).
    reuse_decisions: bool,
    /// Frames of the current burst bound for the uplink (`dst` unused).
    to_uplink: Vec<Delivery>,
    /// One frame read from the uplink (sized on first use).
    uplink_buf: Vec<u8>,
    /// Rate limiters by port (`None`: unlimited).
    buckets: Vec<Option<TokenBucket>>,
    /// After a pass: how long until the first interrupt held back by moderation may fire.
    held_for: Option<Duration>,
    /// This thread owns the TX side of ports `me`, `me + threads`, …
    me: usize,
    threads: usize,
}

impl Worker {
    fn new(me: usize, threads: usize) -> Self {
        Worker {
            buckets: Vec::new(),
            held_for: None,
            me,
            threads: threads.max(1),
            scratch: TxScratch::new(),
            frames: TxFrames::with_capacity(TX_BUDGET * 8, TX_BUDGET * 2048),
            extra_bytes: Vec::with_capacity(TX_BUDGET * 2048),
            deliveries: Vec::with_capacity(TX_BUDGET * 4),
            dsts: Vec::with_capacity(64),
            targets: RxTargets::new(),
            last: LastDecision::new(),
            reuse_decisions: true,
            to_uplink: Vec::with_capacity(TX_BUDGET),
            uplink_buf: Vec::new(),
        }
    }

    /// One poll pass over all ports; returns the number of packets taken from TX rings.
    fn pass(&mut self, shared: &Shared) -> usize {
        let (mut table, mut gen) = Self::snapshot(shared);
        let mut work = 0;
        for src in (self.me..shared.ports.len()).step_by(self.threads) {
            let port = &shared.ports[src];
            let admitted = self.admit(src, port);
            let n = self.take_tx(port, admitted);
            if n == 0 {
                continue;
            }
            // A guest may have sent these frames right after another VF's filter changed
            // (its driver came up): switch them with the table that was current when they
            // were taken, not the one this pass started with.
            if shared.table_gen.load(Ordering::Acquire) != gen {
                (table, gen) = Self::snapshot(shared);
            }
            self.charge(src);
            work += n;
            self.deliveries.clear();
            self.extra_bytes.clear();
            self.last.clear();
            let (mut i, mut start) = (0, 0);
            while i < self.frames.len() {
                // Frames that repeat the last plain decision go as one run; the others
                // through the switch (which may remember a new plain decision).
                let ends = &self.frames.ends()[i..];
                let (dst, k) = self.last.repeats(self.frames.bytes(), start, ends);
                if k > 0 {
                    let end = ends[k - 1];
                    self.queue_plain(dst, i, k, start, end);
                    (i, start) = (i + k, end);
                    continue;
                }
                let end = ends[0];
                self.switch(&shared.ports, &table, src, start, end);
                (i, start) = (i + 1, end);
            }
            self.deliver_all(&shared.ports);
            self.flush_uplink(shared);
        }
        if shared.table_gen.load(Ordering::Acquire) != gen {
            (table, _) = Self::snapshot(shared);
        }
        work += self.uplink_rx(shared, &table);
        // Interrupts coalesced over the pass: at most one eventfd write per vector, and none
        // sooner than the vector's moderation gap. The thread must look again by the time the
        // first held-back one is due (`held_for`).
        self.held_for = None;
        for port in &shared.ports {
            if let Some(d) = port.flush_fire() {
                self.held_for = Some(self.held_for.map_or(d, |h| h.min(d)));
            }
        }
        work
    }

    /// The current table and its generation (read first, so a change in between only
    /// makes the next check take a newer table again).
    fn snapshot(shared: &Shared) -> (Arc<SwitchTable>, u64) {
        let gen = shared.table_gen.load(Ordering::Acquire);
        let table = shared
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (table, gen)
    }

    /// The rate limiter's verdict for port `src` this pass (always yes without a limit).
    fn admit(&mut self, src: usize, port: &VfPort) -> bool {
        let rate = port.rate_limit();
        if src >= self.buckets.len() {
            self.buckets.resize(src + 1, None);
        }
        let slot = &mut self.buckets[src];
        if rate == 0 {
            *slot = None;
            return true;
        }
        let now = std::time::Instant::now();
        match slot {
            Some(b) if b.rate_bps() == rate => b.admit(now),
            _ => {
                let mut b = TokenBucket::new(rate, now);
                let ok = b.admit(now);
                *slot = Some(b);
                ok
            }
        }
    }

    /// Charges the bytes just taken from port `src` to its rate limiter.
    fn charge(&mut self, src: usize) {
        if let Some(Some(b)) = self.buckets.get_mut(src) {
            b.charge(self.frames.bytes().len() as u64);
        }
    }

    /// Processes the TX ring(s) of `port` into `frames` if the rate limiter `admitted` it
    /// this pass; an igbvf VF's interrupt page is read either way.
    fn take_tx(&mut self, port: &VfPort, admitted: bool) -> usize {
        self.frames.clear();
        if !port.is_active() {
            return 0;
        }
        // Nothing queued (or not admitted) and no interrupt-page store: skip the lock.
        if port.nothing_to_do(admitted) {
            return 0;
        }
        let mut guard = port.lock();
        match &mut *guard {
            PortState::Igbvf(b) => self.take_tx_from(port, b, admitted),
            PortState::Avf(b) => self.take_tx_from(port, b, admitted),
            PortState::Tap(st) if admitted => self.take_tx_tap(port, st),
            PortState::Tap(_) => 0,
        }
    }

    /// Takes a model's TX work: the interrupt requests its guest stored without trapping
    /// (rate limit or not), then, if `admitted`, up to [`TX_BUDGET`] packets into `frames`.
    #[inline]
    fn take_tx_from<B: VfBackend>(&mut self, port: &VfPort, b: &mut B, admitted: bool) -> usize {
        port.defer_fire_moderated(b.poll_irqs(), b);
        if !admitted || !b.tx_ready() {
            return 0;
        }
        let poll = {
            let mem = port.mem.lock();
            b.poll_tx(&mem, &mut self.scratch, TX_BUDGET, &mut self.frames)
        };
        count_tx(port, &poll.stats);
        port.defer_fire_moderated(poll.irq, b);
        self.frames.len()
    }

    /// Reads up to [`TX_BUDGET`] frames the netdev sent from a TAP port (its "TX ring").
    fn take_tx_tap(&mut self, port: &VfPort, st: &mut TapState) -> usize {
        if self.uplink_buf.is_empty() {
            self.uplink_buf.resize(UPLINK_MAX_FRAME, 0);
        }
        let mut bytes = 0u64;
        for _ in 0..TX_BUDGET {
            match st.recv(&mut self.uplink_buf) {
                Ok(Some(n)) => {
                    let n = n.min(self.uplink_buf.len());
                    self.frames.push(&self.uplink_buf[..n]);
                    bytes += n as u64;
                }
                Ok(None) => break,
                Err(e) => {
                    // The netdev is gone (EBADFD): the port stops until the control path
                    // attaches a new TAP; logged once per loss, not per frame.
                    port.set_active(false);
                    tracing::warn!(vf = %port.id, error = %e, "TAP port lost its netdev");
                    break;
                }
            }
        }
        let n = self.frames.len();
        if n > 0 {
            bump(&port.counters.tx_packets, n as u64);
            bump(&port.counters.tx_bytes, bytes);
        }
        n
    }

    /// Decides where burst frame `frames.bytes()[start..end]` from `src` goes and queues
    /// deliveries.
    fn switch(
        &mut self,
        ports: &[Arc<VfPort>],
        table: &SwitchTable,
        src: usize,
        start: usize,
        end: usize,
    ) {
        let sender = &ports[src];
        // Each frame's header is parsed once for both stages (a runt takes the slow path,
        // which reports the right reason).
        let parsed = L2Header::parse(&self.frames.bytes()[start..end]).ok();
        let (frame, extra, fs, fe) = {
            let f = &self.frames.bytes()[start..end];
            let verdict = match &parsed {
                Some(h) => tx_check_header(table, src, h),
                None => tx_check(table, src, f),
            };
            match verdict {
                Err(reason) => {
                    sender.counters.drop(reason, false);
                    return;
                }
                Ok(None) => (f, false, start, end),
                Ok(Some(tci)) => {
                    let at = self.extra_bytes.len();
                    self.extra_bytes.resize(at + f.len() + 4, 0);
                    match write_vlan_tagged(f, tci, &mut self.extra_bytes[at..]) {
                        Some(n) => {
                            self.extra_bytes.truncate(at + n);
                            (&self.extra_bytes[at..at + n], true, at, at + n)
                        }
                        None => {
                            self.extra_bytes.truncate(at);
                            sender.counters.drop(DropReason::Oversize, false);
                            return;
                        }
                    }
                }
            }
        };
        match (&parsed, extra) {
            (Some(h), false) => {
                rx_targets_header(table, Some(src), h, frame.len(), &mut self.targets)
            }
            _ => rx_targets(table, Some(src), frame, &mut self.targets),
        }
        if let Some(reason) = self.targets.drop {
            sender.counters.drop(reason, false);
        }
        for (p, reason) in self.targets.rejections() {
            if let Some(port) = ports.get(p) {
                port.counters.drop(reason, true);
            }
        }
        if self.reuse_decisions && !extra && self.targets.drop.is_none() && !self.targets.to_default
        {
            self.remember_if_plain(ports, table, fs, fe);
        }
        if self.targets.to_default {
            self.to_uplink
                .push(Delivery::one(u16::MAX, fs, fe, extra, None));
        }
        self.queue_deliveries(ports, table, extra, fs, fe);
    }

    /// Remembers the decision just taken for `frame_bytes[fs..fe]` when it is the plain one
    /// [`LastDecision`] may repeat: unchanged, to exactly one VF port, nothing refused.
    fn remember_if_plain(
        &mut self,
        ports: &[Arc<VfPort>],
        table: &SwitchTable,
        fs: usize,
        fe: usize,
    ) {
        if self.targets.any_rejected {
            return;
        }
        let Some(p) = self.targets.ports.single() else {
            return;
        };
        let (Some(_), Some(filter), Ok(dst)) = (ports.get(p), table.port(p), u16::try_from(p))
        else {
            return;
        };
        let frame = &self.frames.bytes()[fs..fe];
        if rx_vlan_action(filter, frame).is_none() {
            self.last.remember(frame, dst, filter.max_len());
        }
    }

    /// Queues burst frames `first..first + k` (`frames.bytes()[fs..fe]`) unchanged for port
    /// `dst`, extending the previous delivery when it is a run to `dst` that ends at `fs`.
    #[inline]
    fn queue_plain(&mut self, dst: u16, first: usize, k: usize, fs: usize, fe: usize) {
        if let Some(d) = self.deliveries.last_mut() {
            if d.frames > 0 && d.dst == dst && d.end as usize == fs {
                d.end = fe as u32;
                d.frames += k as u32;
                return;
            }
        }
        if !self.dsts.contains(&dst) {
            self.dsts.push(dst);
        }
        self.deliveries.push(Delivery {
            first: first as u32,
            frames: k as u32,
            ..Delivery::one(dst, fs, fe, false, None)
        });
    }

    /// Queues the frame at `fs..fe` (in `extra_bytes` when `extra`) for every port of
    /// `self.targets.ports`, VLAN-stripped per destination.
    fn queue_deliveries(
        &mut self,
        ports: &[Arc<VfPort>],
        table: &SwitchTable,
        extra: bool,
        fs: usize,
        fe: usize,
    ) {
        let dests = self.targets.ports;
        for p in dests.iter() {
            let (Some(_), Some(filter)) = (ports.get(p), table.port(p)) else {
                continue;
            };
            let frame: &[u8] = if extra {
                &self.extra_bytes[fs..fe]
            } else {
                &self.frames.bytes()[fs..fe]
            };
            let vlan = rx_vlan_action(filter, frame);
            let d = match vlan {
                Some(_) => {
                    let at = self.extra_bytes.len();
                    let len = frame.len();
                    self.extra_bytes.resize(at + len, 0);
                    let (head, tail) = self.extra_bytes.split_at_mut(at);
                    let src_frame: &[u8] = if extra {
                        &head[fs..fe]
                    } else {
                        &self.frames.bytes()[fs..fe]
                    };
                    match write_vlan_stripped(src_frame, tail) {
                        Some(n) => {
                            self.extra_bytes.truncate(at + n);
                            Delivery::one(p as u16, at, at + n, true, vlan)
                        }
                        None => {
                            self.extra_bytes.truncate(at);
                            Delivery::one(p as u16, fs, fe, extra, None)
                        }
                    }
                }
                None => Delivery::one(p as u16, fs, fe, extra, None),
            };
            if !self.dsts.contains(&d.dst) {
                self.dsts.push(d.dst);
            }
            self.deliveries.push(d);
        }
    }

    /// Sends the burst's frames for the default port to the uplink (dropped without one).
    fn flush_uplink(&mut self, shared: &Shared) {
        if self.to_uplink.is_empty() {
            return;
        }
        let Some(up) = &shared.uplink else {
            self.to_uplink.clear();
            return;
        };
        let (mut ok, mut bytes, mut err) = (0u64, 0u64, 0u64);
        let mut first_err = None;
        {
            let mut dev = up.dev.lock().unwrap_or_else(|p| p.into_inner());
            for d in &self.to_uplink {
                let arena = if d.extra {
                    &self.extra_bytes
                } else {
                    self.frames.bytes()
                };
                let Some(frame) = arena.get(d.start as usize..d.end as usize) else {
                    continue;
                };
                match dev.send(frame) {
                    Ok(()) => {
                        ok += 1;
                        bytes += frame.len() as u64;
                    }
                    Err(e) => {
                        err += 1;
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        self.to_uplink.clear();
        let c = &up.counters;
        if ok > 0 {
            bump(&c.tx_packets, ok);
            bump(&c.tx_bytes, bytes);
        }
        if err > 0 && c.tx_errors.fetch_add(err, Ordering::Relaxed) == 0 {
            if let Some(e) = first_err {
                tracing::warn!(error = %e, "uplink send failed (further failures only counted)");
            }
        }
    }

    /// Thread 0: reads up to [`UPLINK_RX_BUDGET`] frames from the uplink and switches them to
    /// the VFs (source = the uplink's port). Returns the number of frames read.
    fn uplink_rx(&mut self, shared: &Shared, table: &SwitchTable) -> usize {
        let Some(up) = &shared.uplink else { return 0 };
        if self.me != 0 {
            return 0;
        }
        if self.uplink_buf.is_empty() {
            self.uplink_buf.resize(UPLINK_MAX_FRAME, 0);
        }
        self.frames.clear();
        {
            let mut dev = up.dev.lock().unwrap_or_else(|p| p.into_inner());
            for _ in 0..UPLINK_RX_BUDGET {
                match dev.recv(&mut self.uplink_buf) {
                    Ok(Some(n)) => {
                        let n = n.min(self.uplink_buf.len());
                        self.frames.push(&self.uplink_buf[..n]);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if up.counters.rx_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!(error = %e, "uplink read failed (further failures only counted)");
                        }
                        break;
                    }
                }
            }
        }
        let n = self.frames.len();
        if n == 0 {
            return 0;
        }
        bump(&up.counters.rx_packets, n as u64);
        bump(&up.counters.rx_bytes, self.frames.bytes().len() as u64);
        self.deliveries.clear();
        self.extra_bytes.clear();
        let mut start = 0;
        for i in 0..n {
            let end = self.frames.ends()[i];
            rx_targets(
                table,
                Some(up.port),
                &self.frames.bytes()[start..end],
                &mut self.targets,
            );
            if self.targets.drop.is_some() {
                bump(&up.counters.rx_unmatched, 1);
            }
            for (p, reason) in self.targets.rejections() {
                if let Some(port) = shared.ports.get(p) {
                    port.counters.drop(reason, true);
                }
            }
            self.queue_deliveries(&shared.ports, table, false, start, end);
            start = end;
        }
        self.deliver_all(&shared.ports);
        n
    }

    /// Writes the queued deliveries, one destination at a time (one lock, one ring read,
    /// one head write-back and at most one interrupt per destination per burst).
    fn deliver_all(&mut self, ports: &[Arc<VfPort>]) {
        for k in 0..self.dsts.len() {
            let dst = self.dsts[k];
            if let Some(port) = ports.get(usize::from(dst)) {
                let expected = self
                    .deliveries
                    .iter()
                    .filter(|d| d.dst == dst)
                    .map(Delivery::count)
                    .sum();
                deliver_batch(
                    port,
                    self.deliveries.iter().filter(|d| d.dst == dst),
                    expected,
                    &self.frames,
                    &self.extra_bytes,
                );
            }
        }
        self.dsts.clear();
    }
}

fn count_tx(port: &VfPort, stats: &TxStats) {
    let c = &port.counters;
    bump(&c.tx_packets, stats.packets);
    bump(&c.tx_bytes, stats.bytes);
    if stats.bad_descriptors > 0 {
        bump(&c.tx_bad_descriptors, stats.bad_descriptors);
    }
    if stats.bad_ring > 0 {
        bump(&c.tx_bad_ring, stats.bad_ring);
    }
}

/// Adds a burst's RX tallies to `c`.
fn commit_rx(t: &RxTally, c: &crate::counters::VfCounters) {
    if t.ok > 0 {
        bump(&c.rx_packets, t.ok);
        bump(&c.rx_bytes, t.bytes);
        if t.bcast > 0 {
            bump(&c.rx_broadcast, t.bcast);
        }
        if t.mcast > 0 {
            bump(&c.rx_multicast, t.mcast);
        }
    }
    if t.no_buf + t.bad > 0 {
        bump(&c.rx_drops, t.no_buf + t.bad);
        bump(&c.rx_no_buffers, t.no_buf);
        bump(&c.rx_bad_ring, t.bad);
    }
}

/// Writes a burst of frames into `port`'s RX queue(s).
fn deliver_batch<'a>(
    port: &VfPort,
    items: impl Iterator<Item = &'a Delivery>,
    expected: usize,
    frames: &'a TxFrames,
    extra: &'a [u8],
) {
    let c = &port.counters;
    let mut guard = port.lock();
    let mut t = RxTally::default();
    if !port.is_active() || !guard.bus_master() {
        for _ in 0..expected {
            c.drop(DropReason::RxDisabled, true);
        }
        return;
    }
    match &mut *guard {
        PortState::Igbvf(b) => deliver_to(port, b, items, expected, frames, extra, &mut t),
        PortState::Avf(b) => deliver_to(port, b, items, expected, frames, extra, &mut t),
        PortState::Tap(st) => {
            for (frame, vlan) in items.flat_map(|d| d.run(frames, extra).frames()) {
                match st.send(frame, vlan) {
                    Ok(()) => t.delivered(frame),
                    // The netdev's queue is full or it is down: like a ring without buffers.
                    Err(_) => t.no_buf += 1,
                }
            }
        }
    }
    commit_rx(&t, c);
}

/// Hands a burst to a model's RX side (guest memory locked once) and queues the interrupts it
/// raises.
#[inline]
fn deliver_to<'a, B: VfBackend>(
    port: &VfPort,
    b: &mut B,
    items: impl Iterator<Item = &'a Delivery>,
    expected: usize,
    frames: &'a TxFrames,
    extra: &'a [u8],
    t: &mut RxTally,
) {
    if !b.rx_ready() {
        for _ in 0..expected {
            port.counters.drop(DropReason::RxDisabled, true);
        }
        return;
    }
    let irq = {
        let mem = port.mem.lock();
        b.deliver(&mem, expected, items.map(|d| d.run(frames, extra)), t)
    };
    port.defer_fire_moderated(irq, b);
}

/// Nanoseconds one idle VF (attached, TX enabled, nothing queued) adds to a poll pass,
/// measured over `passes` passes of `vfs` idle VFs. For `emu-sriov-bench`.
pub fn idle_pass_cost(vfs: usize, passes: u32) -> f64 {
    use crate::port::IrqSink;
    use emu_nic_model::igbvf::vf::IgbVf;
    use emu_nic_model::pci::PciFunction;
    struct NoIrq;
    impl IrqSink for NoIrq {
        fn fire(&self, _: u32) -> bool {
            false
        }
    }
    let ports: Vec<Arc<VfPort>> = (0..vfs.max(1))
        .map(|i| {
            let mut vf = IgbVf::new();
            vf.config_write(4, &[0x6, 0]);
            let _ = vf.bar0_write(u64::from(emu_nic_defs::igbvf::TDLEN0), 4096);
            let _ = vf.bar0_write(
                u64::from(emu_nic_defs::igbvf::TXDCTL0),
                emu_nic_defs::igbvf::XDCTL_ENABLE,
            );
            let p = VfPort::new(
                format!("idle{i}"),
                vf,
                Arc::new(emu_guest_mem::DmaTable::new()),
                Box::new(NoIrq),
            );
            p.set_active(true);
            Arc::new(p)
        })
        .collect();
    let shared = Shared::new(ports, SwitchTable::new(), None);
    let mut w = Worker::new(0, 1);
    let start = std::time::Instant::now();
    for _ in 0..passes {
        w.pass(&shared);
    }
    start.elapsed().as_nanos() as f64 / f64::from(passes.max(1)) / vfs.max(1) as f64
}

#[cfg(test)]
mod tests;
