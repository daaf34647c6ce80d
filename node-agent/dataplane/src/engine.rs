//! The dataplane thread: poll passes over every VF's TX ring, VMDq switching, RX delivery.
//!
//! One pass: for each VF, take up to [`TX_BUDGET`] packets from its TX ring (the VF's state
//! lock is held only while its ring is processed), switch them, and write each into the
//! destination VFs' RX rings (one destination lock at a time, so no lock is ever nested).
//! Interrupts raised during the pass are coalesced and written to the eventfds at its end.
//!
//! Mode `adaptive` sleeps when a pass found no work and wakes on a doorbell kick (the trapped
//! TDT write) or after [`IDLE_WAIT`]; mode `poll` (busy polling on pinned cores) belongs to the
//! "pinned-core dataplane" work and is refused by the agent's config for now.

use crate::counters::bump;
use crate::port::VfPort;
use emu_nic_model::igbvf::rings::{rx_write, RingRegs, RxDrop, RxLayout, RxMeta, TxScratch};
use emu_nic_model::igbvf::vf::IrqSource;
use emu_nic_model::vmdq::{
    is_multicast, rx_targets, rx_vlan_action, tx_check, write_vlan_stripped, write_vlan_tagged,
    RxTargets, SwitchTable, BROADCAST,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Packets taken from one TX ring per pass (fairness between VFs).
pub const TX_BUDGET: usize = 64;
/// Longest sleep of an idle adaptive dataplane. Doorbells on mapped pages do not trap, so
/// an idle dataplane polls at least this often; trapped doorbells and config writes wake it
/// at once. Sleeps start at [`IDLE_WAIT_MIN`] and double while idle.
pub const IDLE_WAIT: Duration = Duration::from_micros(200);
pub const IDLE_WAIT_MIN: Duration = Duration::from_micros(10);
/// Largest frame the switch carries (a 9216-byte MTU plus header and two tags).
const MAX_FRAME: usize = 9216 + 14 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Adaptive,
}

#[derive(Debug, Clone, Default)]
pub struct DataplaneConfig {
    pub mode: Mode,
}

struct Shared {
    ports: Vec<Arc<VfPort>>,
    table: RwLock<Arc<SwitchTable>>,
    kicked: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
    passes: AtomicU64,
    busy_passes: AtomicU64,
}

/// Handle on the running dataplane thread.
pub struct Dataplane {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Dataplane {
    /// Starts the dataplane over `ports` (switch port n = `ports[n]`).
    pub fn start(
        config: DataplaneConfig,
        ports: Vec<Arc<VfPort>>,
        table: SwitchTable,
    ) -> std::io::Result<Dataplane> {
        let shared = Arc::new(Shared {
            ports,
            table: RwLock::new(Arc::new(table)),
            kicked: Mutex::new(false),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            passes: AtomicU64::new(0),
            busy_passes: AtomicU64::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dataplane".into())
            .spawn(move || run(&s, config))?;
        Ok(Dataplane {
            shared,
            thread: Some(thread),
        })
    }

    /// A handle for the control path (kicks, table updates) that can be cloned freely.
    pub fn control(&self) -> DataplaneControl {
        DataplaneControl {
            shared: self.shared.clone(),
        }
    }

    /// (passes, passes that found work).
    pub fn passes(&self) -> (u64, u64) {
        (
            self.shared.passes.load(Ordering::Relaxed),
            self.shared.busy_passes.load(Ordering::Relaxed),
        )
    }

    /// Whether the dataplane thread is alive.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.control().kick();
        if let Some(t) = self.thread.take() {
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

    /// Replaces the switch table; the next pass uses it.
    pub fn publish(&self, table: SwitchTable) {
        *self.shared.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    /// Edits a copy of the current table and publishes it.
    pub fn update(&self, f: impl FnOnce(&mut SwitchTable)) {
        let mut guard = self.shared.table.write().unwrap_or_else(|p| p.into_inner());
        let mut t = SwitchTable::clone(&guard);
        f(&mut t);
        *guard = Arc::new(t);
    }
}

fn run(shared: &Shared, _config: DataplaneConfig) {
    let mut worker = Worker::new();
    let mut idle = IDLE_WAIT_MIN;
    while !shared.stop.load(Ordering::Acquire) {
        let work = worker.pass(shared);
        shared.passes.fetch_add(1, Ordering::Relaxed);
        if work > 0 {
            shared.busy_passes.fetch_add(1, Ordering::Relaxed);
            idle = IDLE_WAIT_MIN;
            continue;
        }
        let mut k = shared.kicked.lock().unwrap_or_else(|p| p.into_inner());
        if !*k {
            k = shared
                .wake
                .wait_timeout(k, idle)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if *k {
            idle = IDLE_WAIT_MIN;
        } else {
            idle = (idle * 2).min(IDLE_WAIT);
        }
        *k = false;
    }
}

/// Per-thread reusable buffers: nothing is allocated per packet.
struct Worker {
    scratch: TxScratch,
    /// Frames taken from one TX ring in this pass, back to back in `frame_bytes`.
    frame_bytes: Vec<u8>,
    frame_ends: Vec<usize>,
    tagged: Vec<u8>,
    stripped: Vec<u8>,
    targets: RxTargets,
}

impl Worker {
    pub(crate) fn new() -> Self {
        Worker {
            scratch: TxScratch::new(),
            frame_bytes: Vec::with_capacity(TX_BUDGET * 2048),
            frame_ends: Vec::with_capacity(TX_BUDGET * 8),
            tagged: vec![0; MAX_FRAME + 4],
            stripped: vec![0; MAX_FRAME + 4],
            targets: RxTargets::new(),
        }
    }

    /// One poll pass over all ports; returns the number of packets taken from TX rings.
    fn pass(&mut self, shared: &Shared) -> usize {
        let table = shared
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut work = 0;
        for (src, port) in shared.ports.iter().enumerate() {
            work += self.take_tx(port);
            let mut start = 0;
            for i in 0..self.frame_ends.len() {
                let end = self.frame_ends[i];
                let frame = std::mem::take(&mut self.frame_bytes);
                self.switch(&shared.ports, &table, src, &frame[start..end]);
                self.frame_bytes = frame;
                start = end;
            }
        }
        for port in &shared.ports {
            port.flush_fire();
        }
        work
    }

    /// Processes the TX ring of `port` into `frame_bytes`/`frame_ends`.
    fn take_tx(&mut self, port: &VfPort) -> usize {
        self.frame_bytes.clear();
        self.frame_ends.clear();
        if !port.is_active() {
            return 0;
        }
        let mut guard = port.lock();
        let st = &mut *guard;
        let q = st.vf.txq(0);
        if !q.enabled() {
            st.tx_was_enabled = false;
            return 0;
        }
        if !st.tx_was_enabled {
            st.txq.reset();
            st.tx_was_enabled = true;
        }
        if q.head == q.tail || !st.vf.bus_master() {
            return 0;
        }
        let mut ring = RingRegs {
            bal: q.bal,
            bah: q.bah,
            len: q.len,
            head: q.head,
            tail: q.tail,
        };
        let scratch = &mut self.scratch;
        let bytes = &mut self.frame_bytes;
        let ends = &mut self.frame_ends;
        let txq = &mut st.txq;
        let mut outcome = None;
        port.mem.with_memory(&mut |mem| {
            outcome = Some(
                txq.process(&mut ring, &mem, scratch, TX_BUDGET, &mut |f: &[u8]| {
                    bytes.extend_from_slice(f);
                    ends.push(bytes.len());
                }),
            );
        });
        st.vf.set_tx_head(0, ring.head);
        let Some(outcome) = outcome else { return 0 };
        let c = &port.counters;
        bump(&c.tx_packets, outcome.stats.packets);
        bump(&c.tx_bytes, outcome.stats.bytes);
        bump(&c.tx_bad_descriptors, outcome.stats.bad_descriptors);
        if outcome.write_backs > 0 {
            let fx = st.vf.raise(IrqSource::Tx(0));
            port.defer_fire(fx.fire);
        }
        self.frame_ends.len()
    }

    fn switch(&mut self, ports: &[Arc<VfPort>], table: &SwitchTable, src: usize, frame: &[u8]) {
        let sender = &ports[src];
        let frame = match tx_check(table, src, frame) {
            Err(reason) => {
                sender.counters.drop(reason, false);
                return;
            }
            Ok(None) => frame,
            Ok(Some(tci)) => match write_vlan_tagged(frame, tci, &mut self.tagged) {
                Some(n) => &self.tagged[..n],
                None => {
                    sender
                        .counters
                        .drop(emu_nic_model::vmdq::DropReason::Oversize, false);
                    return;
                }
            },
        };
        rx_targets(table, Some(src), frame, &mut self.targets);
        if let Some(reason) = self.targets.drop {
            sender.counters.drop(reason, false);
        }
        for (p, reason) in self.targets.rejections() {
            if let Some(port) = ports.get(p) {
                port.counters.drop(reason, true);
            }
        }
        // No uplink yet: frames for the default port have nowhere to go.
        let dests = self.targets.ports;
        for p in dests.iter() {
            let (Some(port), Some(filter)) = (ports.get(p), table.port(p)) else {
                continue;
            };
            let vlan = rx_vlan_action(filter, frame);
            let body = match vlan {
                Some(_) => match write_vlan_stripped(frame, &mut self.stripped) {
                    Some(n) => &self.stripped[..n],
                    None => frame,
                },
                None => frame,
            };
            deliver(port, body, vlan);
        }
    }
}

/// Writes one frame into `port`'s RX queue 0.
fn deliver(port: &VfPort, frame: &[u8], vlan: Option<u16>) {
    let c = &port.counters;
    let mut guard = port.lock();
    let st = &mut *guard;
    let q = st.vf.rxq(0);
    if !port.is_active() || !q.enabled() || !st.vf.bus_master() {
        bump(&c.rx_drops, 1);
        bump(&c.rx_no_buffers, 1);
        return;
    }
    let mut ring = RingRegs {
        bal: q.bal,
        bah: q.bah,
        len: q.len,
        head: q.head,
        tail: q.tail,
    };
    let layout = RxLayout::from_srrctl(q.ctl);
    let meta = RxMeta {
        vlan,
        rss_hash: None,
    };
    let mut result = Err(RxDrop::BadRing);
    port.mem.with_memory(&mut |mem| {
        result = rx_write(&mut ring, layout, &mem, frame, meta);
    });
    st.vf.set_rx_head(0, ring.head);
    match result {
        Ok(_) => {
            bump(&c.rx_packets, 1);
            bump(&c.rx_bytes, frame.len() as u64);
            if frame.len() >= 6 {
                if frame[..6] == BROADCAST {
                    bump(&c.rx_broadcast, 1);
                } else if is_multicast(&[
                    frame[0], frame[1], frame[2], frame[3], frame[4], frame[5],
                ]) {
                    bump(&c.rx_multicast, 1);
                }
            }
            let fx = st.vf.raise(IrqSource::Rx(0));
            port.defer_fire(fx.fire);
        }
        Err(RxDrop::NoBuffers) => {
            bump(&c.rx_drops, 1);
            bump(&c.rx_no_buffers, 1);
        }
        Err(_) => {
            bump(&c.rx_drops, 1);
            bump(&c.rx_bad_ring, 1);
        }
    }
}

/// Nanoseconds one idle VF (attached, TX enabled, nothing queued) adds to a poll pass,
/// measured over `passes` passes of `vfs` idle VFs. For `emu-sriov-agent bench`.
pub fn idle_pass_cost(vfs: usize, passes: u32) -> f64 {
    use crate::port::{DmaMemory, IrqSink};
    use emu_nic_model::igbvf::vf::IgbVf;
    use emu_nic_model::mem::{GuestMemory, MemError};

    /// A VF with no DMA memory: an idle pass never reaches it.
    struct Idle;
    impl GuestMemory for Idle {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            Err(MemError::Unmapped {
                addr,
                len: buf.len(),
            })
        }
        fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
            Err(MemError::Unmapped {
                addr,
                len: data.len(),
            })
        }
    }
    impl DmaMemory for Idle {
        fn with_memory(&self, f: &mut dyn FnMut(&dyn GuestMemory)) {
            f(self);
        }
    }
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
            let p = VfPort::new(format!("idle{i}"), vf, Box::new(Idle), Box::new(NoIrq));
            p.set_active(true);
            Arc::new(p)
        })
        .collect();
    let shared = Shared {
        ports,
        table: RwLock::new(Arc::new(SwitchTable::new())),
        kicked: Mutex::new(false),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
        passes: AtomicU64::new(0),
        busy_passes: AtomicU64::new(0),
    };
    let mut w = Worker::new();
    let start = std::time::Instant::now();
    for _ in 0..passes {
        w.pass(&shared);
    }
    start.elapsed().as_nanos() as f64 / f64::from(passes.max(1)) / vfs.max(1) as f64
}
