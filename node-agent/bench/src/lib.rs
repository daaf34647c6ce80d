//! `emu-sriov-bench`: the dataplane measured with synthetic guests.
//!
//! Each scenario starts a real node (PF models, vfio-user servers, dataplane thread) in a
//! temporary run dir and attaches one userspace igbvf driver per VF over its socket, exactly
//! as a VM would: queue pages mapped, DMA memory shared, control registers trapped. VF 2k sends
//! to VF 2k+1. The drivers run on this thread (polling, no interrupts; kept off the last core),
//! the dataplane on its own pinned to the last core; the machine's two cores are both busy,
//! which is the setup PERFORMANCE.md asks for.
//!
//! A copy-only reference runs in the same process: one thread that reads a TX descriptor,
//! copies the frame into another memory's RX buffer and writes the RX descriptor back through
//! the same guest-memory layer, with no switching — how close the switch gets to the limit.
//! Figures are medians over `runs` repetitions; never use them as assertions.

use emu_guest_mem::{fd as fdutil, DmaTable};
use emu_nic_model::mem::GuestMemory;
use emu_sriov_agent::config::{ConfigFile, HostDefaults, NicModel};
use emu_sriov_agent::node::Node;
use emu_vf_driver::client::{attach, AttachedVf};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub vf_counts: Vec<usize>,
    pub frame_sizes: Vec<usize>,
    pub runs: usize,
    pub duration: Duration,
    pub ring_size: u32,
    /// Count the dataplane's instructions per packet under callgrind for every scenario.
    pub instructions: bool,
    /// Frames the callgrind probe moves per scenario.
    pub probe_packets: u64,
}

impl Default for BenchPlan {
    fn default() -> Self {
        BenchPlan {
            vf_counts: vec![2, 8, 64],
            frame_sizes: vec![64, 1500],
            runs: 5,
            duration: Duration::from_millis(500),
            ring_size: 512,
            instructions: false,
            probe_packets: 100_000,
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub packets: u64,
    pub mpps: f64,
    pub gbps: f64,
    pub ns_per_packet: f64,
    /// Median over runs; `runs` holds each run's Mpps.
    pub runs_mpps: Vec<f64>,
    pub traps_per_1000: f64,
    pub interrupts_per_1000: f64,
    /// Mpps of this row divided by the copy-only reference of the same frame size.
    pub ratio_to_reference: Option<f64>,
    /// Dataplane instructions per packet (callgrind, single-threaded probe), when asked.
    pub instructions_per_packet: Option<f64>,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
    pub latency_note: String,
    pub idle_vf_ns_per_pass: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot prepare the bench run dir {path}")]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bench config: {0}")]
    Config(String),
    #[error("cannot start the node: {0}")]
    Node(String),
    #[error("cannot attach synthetic driver to {vf}: {why}")]
    Attach { vf: String, why: String },
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("instruction count: {0}")]
    Callgrind(String),
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

struct Rig {
    node: std::sync::Arc<Node>,
    vfs: Vec<AttachedVf>,
    ids: Vec<String>,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The core every scenario pins its busy-polling dataplane thread to: the last one. Counted
/// once, before [`keep_off_dataplane_core`] narrows this thread's CPU set (which is what
/// `available_parallelism` reports).
fn dataplane_core() -> usize {
    static CORE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORE.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) - 1)
}

/// Keeps this thread (the synthetic guests, the reference loop) on the other cores. Left to
/// the scheduler, it may land on the dataplane's core when the machine is busy, and then the
/// two time-share one core in multi-millisecond slices while the other core runs something
/// else: the figures collapse by orders of magnitude. With a single core nothing is pinned.
fn keep_off_dataplane_core() {
    let others: Vec<usize> = (0..dataplane_core()).collect();
    if others.is_empty() {
        return;
    }
    if let Err(e) = emu_dataplane::pin_current_thread(&others) {
        eprintln!("bench: warning: cannot keep the synthetic guests off the dataplane core: {e}");
    }
}

fn rig(n: usize, ring: u32) -> Result<Rig, BenchError> {
    rig_with(n, ring, false)
}

fn rig_with(n: usize, ring: u32, stepped: bool) -> Result<Rig, BenchError> {
    let dir = std::env::temp_dir().join(format!("emu-bench-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::RunDir {
        path: dir.clone(),
        source,
    })?;
    let max = NicModel::Igb.max_vfs() as usize;
    let mut pfs = Vec::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(max);
        pfs.push((NicModel::Igb, k as u8));
        left -= k;
    }
    let mut file = ConfigFile::builtin();
    file.set_pfs(pfs);
    let mut config = file
        .validate_with(&HostDefaults {
            node_name: Some("bench".into()),
            run_dir: dir.clone(),
        })
        .map_err(|e| BenchError::Config(e.to_string()))?;
    // The production mode: one busy-polling dataplane thread on the last core; the synthetic
    // guests run on this thread.
    config.dataplane.mode = emu_sriov_agent::config::DataplaneMode::Poll;
    config.dataplane.cores = vec![dataplane_core()];
    let node = if stepped {
        Node::start_stepped(&config)
    } else {
        Node::start(&config)
    }
    .map_err(|e| BenchError::Node(e.to_string()))?;
    let status = node.status();
    let mut vfs = Vec::new();
    let mut ids = Vec::new();
    for v in &status.vfs {
        let a = attach(&v.socket, ring).map_err(|e| BenchError::Attach {
            vf: v.id.clone(),
            why: e.to_string(),
        })?;
        vfs.push(a);
        ids.push(v.id.clone());
    }
    Ok(Rig {
        node,
        vfs,
        ids,
        _dir: TempDir(dir),
    })
}

fn frame_to(dst: [u8; 6], src: [u8; 6], size: usize) -> Vec<u8> {
    let mut f = vec![0u8; size.max(60)];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88B5u16.to_be_bytes());
    f
}

/// Fills every sender's TX buffers with a frame to its partner; RS every 32 descriptors.
fn prepare_pairs(rig: &mut Rig, size: usize) -> Result<(), BenchError> {
    for p in 0..rig.vfs.len() / 2 {
        let dst = rig.vfs[2 * p + 1].driver.mac();
        let src = rig.vfs[2 * p].driver.mac();
        let a = &rig.vfs[2 * p];
        a.driver
            .fill_tx_buffers(&a.mem.lock(), &frame_to(dst, src, size))
            .map_err(|e| BenchError::Memory(e.to_string()))?;
    }
    for v in &mut rig.vfs {
        v.driver.set_rs_interval(32);
    }
    Ok(())
}

/// One sender step: reclaim what was sent, queue frames into every free descriptor, ring
/// the doorbell once.
fn fill_sender(a: &mut AttachedVf, size: usize) -> Result<(), BenchError> {
    let mem_err = |e: emu_vf_driver::DriverError| BenchError::Memory(e.to_string());
    let mem = a.mem.lock();
    a.driver.reclaim(&mem).map_err(mem_err)?;
    a.driver
        .queue_tx_burst(&mem, size, u32::MAX)
        .map_err(mem_err)?;
    a.driver.flush();
    Ok(())
}

/// One receiver step: count the frames that arrived and re-post their buffers.
fn drain_receiver(b: &mut AttachedVf) -> Result<u64, BenchError> {
    let mem = b.mem.lock();
    let n = b
        .driver
        .poll_rx(&mem, &mut [], &mut |_| {})
        .map_err(|e| BenchError::Memory(e.to_string()))?;
    Ok(u64::from(n))
}

/// Runs the pairs for `dur`; returns frames received.
fn pump(rig: &mut Rig, size: usize, dur: Duration) -> Result<u64, BenchError> {
    let end = Instant::now() + dur;
    let mut received = 0u64;
    while Instant::now() < end {
        for pair in rig.vfs.chunks_mut(2) {
            let [a, b] = pair else { continue };
            fill_sender(a, size)?;
            received += drain_receiver(b)?;
        }
    }
    Ok(received)
}

fn traps_and_irqs(node: &Node) -> (u64, u64) {
    node.status().vfs.iter().fold((0, 0), |(t, i), v| {
        (t + v.counters.traps, i + v.counters.interrupts)
    })
}

fn throughput(plan: &BenchPlan, n: usize, size: usize) -> Result<Row, BenchError> {
    let mut rig = rig(n, plan.ring_size)?;
    prepare_pairs(&mut rig, size)?;
    // Warm-up, then measured runs.
    pump(&mut rig, size, Duration::from_millis(100))?;
    let mut runs = Vec::new();
    let mut total = 0;
    let (t0, i0) = traps_and_irqs(&rig.node);
    let (p0, b0) = rig.node.dataplane_passes();
    for _ in 0..plan.runs {
        let start = Instant::now();
        let got = pump(&mut rig, size, plan.duration)?;
        let secs = start.elapsed().as_secs_f64();
        if got == 0 {
            for (k, v) in rig.vfs.iter().enumerate() {
                eprintln!(
                    "bench: stalled run; VF {k}: {}",
                    v.driver.ring_state(&v.mem.lock())
                );
            }
            for (id, c) in rig.node.counter_snapshots() {
                eprintln!("bench: stalled run; {id} counters {c:?}");
            }
            eprintln!(
                "bench: stalled run; dataplane passes {:?}",
                rig.node.dataplane_passes()
            );
        }
        total += got;
        runs.push(got as f64 / secs / 1e6);
    }
    let (t1, i1) = traps_and_irqs(&rig.node);
    let (p1, b1) = rig.node.dataplane_passes();
    let (passes, busy) = (p1 - p0, b1 - b0);
    if total == 0 {
        for (id, c) in rig.node.counter_snapshots() {
            eprintln!("bench: warning: nothing arrived; {id} counters {c:?}");
        }
    }
    let ids = rig.ids.len();
    rig.node.shutdown();
    let mpps = median(&mut runs.clone());
    let per_k = |d: u64| {
        if total == 0 {
            0.0
        } else {
            d as f64 * 1000.0 / total as f64
        }
    };
    Ok(Row {
        scenario: format!("VF→VF {size} B, {ids} VFs ({} pairs)", ids / 2),
        packets: total,
        mpps,
        gbps: mpps * 1e6 * size as f64 * 8.0 / 1e9,
        ns_per_packet: if mpps > 0.0 { 1e3 / mpps } else { 0.0 },
        runs_mpps: runs,
        traps_per_1000: per_k(t1 - t0),
        interrupts_per_1000: per_k(i1 - i0),
        ratio_to_reference: None,
        instructions_per_packet: None,
        note: format!(
            "polling drivers, 1 busy-polling dataplane thread; {:.0}% of its passes found \
             work, {:.1} frames per busy pass",
            if passes > 0 {
                busy as f64 * 100.0 / passes as f64
            } else {
                0.0
            },
            if busy > 0 {
                total as f64 / busy as f64
            } else {
                0.0
            }
        ),
    })
}

/// The copy-only reference: descriptor read, frame copy, descriptor write-back, through the
/// same guest-memory layer, no switch, one thread.
fn reference(plan: &BenchPlan, size: usize) -> Result<Row, BenchError> {
    let ring = plan.ring_size as u64;
    let bytes = (ring * 16 + ring * 2048).next_multiple_of(4096);
    let mk = || -> Result<DmaTable, BenchError> {
        let fd =
            fdutil::memfd("bench-ref", bytes).map_err(|e| BenchError::Memory(e.to_string()))?;
        let t = DmaTable::new();
        t.map(0, bytes, 0, 3, Some(fd))
            .map_err(|e| BenchError::Memory(e.to_string()))?;
        Ok(t)
    };
    let (src, dst) = (mk()?, mk()?);
    let m = |e: emu_nic_model::mem::MemError| BenchError::Memory(e.to_string());
    let mut runs = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; size];
    for _ in 0..plan.runs {
        let (s, d) = (src.lock(), dst.lock());
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < plan.duration {
            for _ in 0..256 {
                let i = n % ring;
                let mut desc = [0u8; 16];
                s.read(i * 16, &mut desc).map_err(m)?;
                s.read(ring * 16 + i * 2048, &mut buf).map_err(m)?;
                d.write(ring * 16 + i * 2048, &buf).map_err(m)?;
                let mut wb = [0u8; 16];
                wb[8] = 1;
                wb[12..14].copy_from_slice(&(size as u16).to_le_bytes());
                d.write(i * 16, &wb).map_err(m)?;
                s.write(i * 16 + 12, &[1, 0, 0, 0]).map_err(m)?;
                n += 1;
            }
        }
        total += n;
        runs.push(n as f64 / start.elapsed().as_secs_f64() / 1e6);
    }
    let mpps = median(&mut runs.clone());
    Ok(Row {
        scenario: format!("copy-only reference {size} B"),
        packets: total,
        mpps,
        gbps: mpps * 1e6 * size as f64 * 8.0 / 1e9,
        ns_per_packet: if mpps > 0.0 { 1e3 / mpps } else { 0.0 },
        runs_mpps: runs,
        traps_per_1000: 0.0,
        interrupts_per_1000: 0.0,
        ratio_to_reference: Some(1.0),
        instructions_per_packet: None,
        note: "desc read + copy + desc write, same memory layer, no switch".into(),
    })
}

/// One-way latency VF→VF at ~10% of `max_mpps`: frames carry their send time.
fn latency(plan: &BenchPlan, max_mpps: f64) -> Result<(f64, f64, String), BenchError> {
    let mut rig = rig(2, plan.ring_size)?;
    let (dst, src) = (rig.vfs[1].driver.mac(), rig.vfs[0].driver.mac());
    let base = frame_to(dst, src, 64);
    let rate = (max_mpps * 0.1 * 1e6).max(1000.0);
    let gap = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let mut samples = Vec::with_capacity(20_000);
    let mut next = Instant::now();
    let end = Instant::now() + plan.duration * 2;
    let mut buf = [0u8; 64];
    let m = |e: emu_vf_driver::DriverError| BenchError::Memory(e.to_string());
    while Instant::now() < end && samples.len() < 200_000 {
        if Instant::now() >= next {
            next += gap;
            let mut f = base.clone();
            let ns = t0.elapsed().as_nanos() as u64;
            f[14..22].copy_from_slice(&ns.to_le_bytes());
            let a = &mut rig.vfs[0];
            let mem = a.mem.lock();
            a.driver.reclaim(&mem).map_err(m)?;
            a.driver.queue_tx(&mem, &f).map_err(m)?;
            a.driver.flush();
        }
        let b = &mut rig.vfs[1];
        let mem = b.mem.lock();
        b.driver
            .poll_rx(&mem, &mut buf, &mut |f| {
                if f.len() >= 22 {
                    let mut x = [0u8; 8];
                    x.copy_from_slice(&f[14..22]);
                    let sent = u64::from_le_bytes(x);
                    let now = t0.elapsed().as_nanos() as u64;
                    samples.push(now.saturating_sub(sent) as f64 / 1e3);
                }
            })
            .map_err(m)?;
    }
    rig.node.shutdown();
    let mut s = samples.clone();
    s.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        s.get(((s.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok((
        pick(0.5),
        pick(0.99),
        format!(
            "{} samples at {:.0} kpps, sender and receiver polling on one thread",
            s.len(),
            rate / 1e3
        ),
    ))
}

/// The deterministic probe `bench --instructions` runs under callgrind: a node whose
/// dataplane has no thread ([`Node::start_stepped`]); this one thread alternates between the
/// synthetic drivers and one dataplane pass until `packets` frames have crossed. Returns the
/// frames received.
pub fn stepped_probe(vfs: usize, size: usize, packets: u64) -> Result<u64, BenchError> {
    let mut rig = rig_with(vfs, BenchPlan::default().ring_size, true)?;
    prepare_pairs(&mut rig, size)?;
    let mut received = 0u64;
    let mut idle = 0u32;
    while received < packets {
        for pair in rig.vfs.chunks_mut(2) {
            let [a, _] = pair else { continue };
            fill_sender(a, size)?;
        }
        let moved = rig.node.step_dataplane();
        for pair in rig.vfs.chunks_mut(2) {
            let [_, b] = pair else { continue };
            received += drain_receiver(b)?;
        }
        // A thousand passes in a row that move nothing mean the rings are stuck: report it
        // rather than spin forever.
        idle = if moved == 0 { idle + 1 } else { 0 };
        if idle > 1000 {
            return Err(BenchError::Memory(format!(
                "the stepped dataplane stopped moving frames after {received}"
            )));
        }
    }
    rig.node.shutdown();
    Ok(received)
}

/// Runs [`stepped_probe`] under `valgrind --tool=callgrind`, counting only the instructions
/// of dataplane passes, and returns instructions per packet.
pub fn instructions_per_packet(vfs: usize, size: usize, packets: u64) -> Result<f64, BenchError> {
    let exe = std::env::current_exe().map_err(|e| BenchError::Callgrind(e.to_string()))?;
    let out = std::env::temp_dir().join(format!(
        "emu-bench-callgrind-{}-{vfs}-{size}.out",
        std::process::id()
    ));
    let run = std::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--toggle-collect=*Dataplane::step")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&exe)
        .args(["--log-level", "warn", "--probe"])
        .arg(format!("{vfs}:{size}:{packets}"))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            BenchError::Callgrind(format!(
                "cannot run valgrind ({e}); install it (apt install valgrind) or leave out --instructions"
            ))
        })?;
    let text = std::fs::read_to_string(&out);
    let _ = std::fs::remove_file(&out);
    if !run.status.success() {
        let err = String::from_utf8_lossy(&run.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(BenchError::Callgrind(format!(
            "valgrind exited with {}: {}",
            run.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let moved: u64 = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("probe-packets "))
        .find_map(|n| n.trim().parse().ok())
        .ok_or_else(|| BenchError::Callgrind("the probe printed no packet count".into()))?;
    let text = text.map_err(|e| BenchError::Callgrind(format!("no callgrind output: {e}")))?;
    let total: u64 = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .find_map(|n| n.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| BenchError::Callgrind("callgrind output has no totals line".into()))?;
    if moved == 0 {
        return Err(BenchError::Callgrind("the probe moved no packets".into()));
    }
    Ok(total as f64 / moved as f64)
}

/// Runs the whole plan, printing progress to stderr.
pub fn run(plan: &BenchPlan) -> Result<Report, BenchError> {
    keep_off_dataplane_core();
    let mut rows = Vec::new();
    let mut refs = std::collections::HashMap::new();
    for &size in &plan.frame_sizes {
        eprintln!("bench: copy-only reference, {size} B");
        let r = reference(plan, size)?;
        refs.insert(size, r.mpps);
        rows.push(r);
    }
    for &n in &plan.vf_counts {
        for &size in &plan.frame_sizes {
            eprintln!("bench: VF→VF {size} B with {n} VFs ({} runs)", plan.runs);
            let mut r = throughput(plan, n, size)?;
            r.ratio_to_reference = refs.get(&size).filter(|&&x| x > 0.0).map(|x| r.mpps / x);
            if plan.instructions {
                eprintln!("bench: instructions per packet under callgrind, {size} B with {n} VFs");
                r.instructions_per_packet =
                    Some(instructions_per_packet(n, size, plan.probe_packets.max(1))?);
            }
            rows.push(r);
        }
    }
    let max64 = rows
        .iter()
        .filter(|r| r.scenario.starts_with("VF→VF 64 B, 2 VFs"))
        .map(|r| r.mpps)
        .next()
        .unwrap_or(1.0);
    eprintln!("bench: latency at 10% load");
    let (p50, p99, note) = latency(plan, max64)?;
    eprintln!("bench: idle VF cost");
    let idle = emu_dataplane::engine::idle_pass_cost(64, 20_000);
    Ok(Report {
        rows,
        latency_p50_us: Some(p50),
        latency_p99_us: Some(p99),
        latency_note: note,
        idle_vf_ns_per_pass: Some(idle),
    })
}

/// The report as a table for people.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<40} {:>10} {:>8} {:>8} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "SCENARIO",
        "PACKETS",
        "MPPS",
        "GBIT/S",
        "NS/PKT",
        "INSTR/PKT",
        "TRAPS/1K",
        "IRQS/1K",
        "VS REF"
    );
    for r in &report.rows {
        let _ = writeln!(
            s,
            "{:<40} {:>10} {:>8.2} {:>8.2} {:>9.1} {:>10} {:>10.3} {:>9.3} {:>9}",
            r.scenario,
            r.packets,
            r.mpps,
            r.gbps,
            r.ns_per_packet,
            r.instructions_per_packet
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "-".into()),
            r.traps_per_1000,
            r.interrupts_per_1000,
            r.ratio_to_reference
                .map(|x| format!("{:.0}%", x * 100.0))
                .unwrap_or_else(|| "-".into()),
        );
    }
    for r in report.rows.iter().filter(|r| !r.note.is_empty()) {
        let _ = writeln!(s, "  {}: {}", r.scenario, r.note);
    }
    if let (Some(p50), Some(p99)) = (report.latency_p50_us, report.latency_p99_us) {
        let _ = writeln!(
            s,
            "latency VF→VF 64 B at 10% load: p50 {p50:.2} µs, p99 {p99:.2} µs ({})",
            report.latency_note
        );
    }
    if let Some(idle) = report.idle_vf_ns_per_pass {
        let _ = writeln!(
            s,
            "idle VF in the poll loop: {idle:.1} ns per pass (64 idle VFs)"
        );
    }
    s
}
