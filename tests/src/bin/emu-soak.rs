//! Soak run: the agent under steady traffic on most VFs, attach/detach cycles on two, and a
//! hostile client looping through every attack of `tests/tests/hostile_tenants.rs` on
//! another, for as long as asked. Every `--sample-secs` it prints the agent's RSS, open
//! fds, threads, and the traffic and drop totals; at the end it checks that fds and threads
//! are flat, RSS stayed within bounds, and the steady flows lost nothing.
//!
//! Usage (as root or not; the agent runs in a temporary directory):
//!   cargo run --release -p emu-sriov-tests --bin emu-soak -- --minutes 30
//!
//! Exit status 0 when every check held, 1 otherwise (the table says which).

use emu_sriov_tests::agent::{agent_bin_for, Agent, VfInfo};
use emu_sriov_tests::proc::RunDir;
use emu_sriov_tests::traffic::{Flow, RING};
use emu_vf_driver::client::{attach, attach_with, AttachedVf, DmaMemory, DMA_BASE};
use emu_vf_driver::Layout;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Steady flows (tx index, rx index) over the 14 VFs of `--pf igb:7 --pf igb:7`.
const STEADY: [(usize, usize); 5] = [(0, 1), (2, 3), (4, 5), (10, 11), (12, 13)];
/// Attached and detached every round, as a pair.
const CYCLED: (usize, usize) = (6, 7);
/// The hostile client's VF, and the VF its frames go to.
const HOSTILE: usize = 8;
const HOSTILE_PEER: usize = 9;
const FRAMES_PER_ROUND: u64 = 256;
const DEADLINE: Duration = Duration::from_secs(20);

struct Args {
    minutes: f64,
    sample_secs: u64,
    release: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        minutes: 30.0,
        sample_secs: 30,
        release: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--minutes" => {
                a.minutes = value("--minutes")?
                    .parse()
                    .map_err(|e| format!("--minutes: {e}"))?
            }
            "--sample-secs" => {
                a.sample_secs = value("--sample-secs")?
                    .parse()
                    .map_err(|e| format!("--sample-secs: {e}"))?
            }
            "--debug-agent" => a.release = false,
            "-h" | "--help" => {
                println!(
                    "emu-soak [--minutes N (30)] [--sample-secs S (30)] [--debug-agent]\n\n\
                     Runs emu-sriov-agent (release build unless --debug-agent) with two igb PFs\n\
                     of 7 VFs: 5 steady flows between 10 VFs, one pair attached and detached\n\
                     every round, one VF under a looping hostile client (shrunk memory, garbage\n\
                     messages, bogus eventfds, TSO with MSS 1, DMA unmapped under a running\n\
                     queue, a client SIGKILLed mid-transfer). Prints RSS, fds, threads, frames\n\
                     and drops every S seconds and checks that they stay flat."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    Ok(a)
}

/// VmRSS (KiB) and Threads of a process, from /proc.
fn proc_status(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

#[derive(Clone, Copy)]
struct Sample {
    secs: u64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    steady_frames: u64,
    steady_lost: u64,
    cycles: u64,
    attacks: u64,
    drops: u64,
    memory_faults: u64,
}

/// The hostile client's repertoire, one attack per round in turn.
struct Hostile {
    socket: PathBuf,
    peer_mac: [u8; 6],
    peer_mac_text: String,
    sender: PathBuf,
    round: u64,
}

impl Hostile {
    fn attack(&mut self) -> Result<(), String> {
        self.round += 1;
        match self.round % 6 {
            0 => self.shrink_memory(),
            1 => self.garbage(),
            2 => self.bogus_eventfds(),
            3 => self.tso_mss_1(),
            4 => self.unmap_running(),
            _ => self.killed_mid_transfer(),
        }
    }

    fn attach(&self, memory: DmaMemory) -> Result<AttachedVf, String> {
        attach_with(&self.socket, RING, memory).map_err(|e| format!("hostile attach: {e}"))
    }

    fn queue(&self, a: &mut AttachedVf, n: usize) -> Result<(), String> {
        let mut frame = [0u8; 60];
        frame[..6].copy_from_slice(&self.peer_mac);
        frame[6..12].copy_from_slice(&a.driver.mac());
        frame[12..14].copy_from_slice(&0x88B5u16.to_be_bytes());
        let mem = a.mem.lock();
        for _ in 0..n {
            a.driver
                .queue_tx(&mem, &frame)
                .map_err(|e| format!("hostile queue: {e}"))?;
        }
        Ok(())
    }

    fn shrink_memory(&self) -> Result<(), String> {
        let mut a = self.attach(DmaMemory::Unsealed)?;
        self.queue(&mut a, 8)?;
        a.dma_file.set_len(0).map_err(|e| format!("shrink: {e}"))?;
        a.driver.flush();
        std::thread::sleep(Duration::from_millis(50));
        Ok(())
    }

    fn garbage(&self) -> Result<(), String> {
        let mut s = UnixStream::connect(&self.socket).map_err(|e| format!("connect: {e}"))?;
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ self.round;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = s.write_all(&bytes);
        Ok(())
    }

    fn bogus_eventfds(&self) -> Result<(), String> {
        let mut a = self.attach(DmaMemory::Sealed)?;
        let (r, w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        for fd in [r.as_raw_fd(), w.as_raw_fd()] {
            // MSI-X, DATA_EVENTFD | ACTION_TRIGGER.
            let _ = a.driver.bar().0.set_irqs(2, 1 << 2 | 1 << 5, 0, 1, &[fd]);
        }
        Ok(())
    }

    fn tso_mss_1(&self) -> Result<(), String> {
        let mut a = self.attach(DmaMemory::Sealed)?;
        let buf = a.driver.layout().tx_buf(0);
        let mut ctx = [0u8; 16];
        ctx[0..4].copy_from_slice(&(14u32 << 9 | 20).to_le_bytes());
        ctx[8..12].copy_from_slice(&(0x0000_0c00u32 | 0x2020_0000).to_le_bytes());
        ctx[12..16].copy_from_slice(&(1u32 << 16 | 20 << 8).to_le_bytes());
        let mut data = [0u8; 16];
        data[0..8].copy_from_slice(&buf.to_le_bytes());
        data[8..12].copy_from_slice(&(0xab30_0000u32 | 0xffff).to_le_bytes());
        data[12..16].copy_from_slice(&((0xffffu32 - 54) << 14 | 0x200).to_le_bytes());
        {
            let mem = a.mem.lock();
            for _ in 0..16 {
                let _ = a.driver.queue_tx_raw(&mem, &[ctx, data]);
            }
        }
        a.driver.flush();
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }

    fn unmap_running(&self) -> Result<(), String> {
        let mut a = self.attach(DmaMemory::Sealed)?;
        self.queue(&mut a, 32)?;
        a.driver.flush();
        let size = Layout::bytes(RING).next_multiple_of(4096);
        let _ = a.driver.bar().0.dma_unmap(DMA_BASE, size);
        self.queue(&mut a, 32)?;
        a.driver.flush();
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }

    fn killed_mid_transfer(&self) -> Result<(), String> {
        let mut child = Command::new(&self.sender)
            .arg(&self.socket)
            .arg(&self.peer_mac_text)
            .arg("30")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.sender.display()))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        std::thread::sleep(Duration::from_millis(100));
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }
}

fn drain(rx: &mut AttachedVf) {
    let mem = rx.mem.lock();
    let _ = rx.driver.poll_rx(&mem, &mut [], &mut |_| {});
}

fn run(args: &Args) -> Result<bool, String> {
    let dir = RunDir::new("soak")?;
    let bin = agent_bin_for(args.release)?;
    let mut agent = Agent::start_with(
        &bin,
        dir.path(),
        &["--pf", "igb:7", "--pf", "igb:7", "--allow-unsealed-memory"],
        Duration::from_secs(60),
    )?;
    let pid = agent.pid().ok_or("agent has no pid")?;
    let vfs: Vec<VfInfo> = agent.vfs()?;
    if vfs.len() != 14 {
        return Err(format!("expected 14 VFs, the agent lists {}", vfs.len()));
    }
    let sock = |i: usize| vfs[i].socket.clone();
    let mut steady = STEADY
        .iter()
        .map(|&(t, r)| Flow::new(&sock(t), &sock(r)))
        .collect::<Result<Vec<_>, _>>()?;
    // The hostile VF's peer is attached so its frames have somewhere to go.
    let mut peer = attach(&sock(HOSTILE_PEER), RING).map_err(|e| format!("peer: {e}"))?;
    let sender = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("emu-test-sender");
    if !sender.is_file() {
        return Err(format!(
            "{} is missing: build it with `cargo build -p emu-sriov-tests --bins`",
            sender.display()
        ));
    }
    let mut hostile = Hostile {
        socket: sock(HOSTILE),
        peer_mac: vfs[HOSTILE_PEER].mac_bytes(),
        peer_mac_text: vfs[HOSTILE_PEER].mac.clone(),
        sender,
        round: 0,
    };

    println!(
        "soak: agent pid {pid} ({}), {} minutes, a sample every {} s; run dir {}",
        bin.display(),
        args.minutes,
        args.sample_secs,
        dir.path().display()
    );
    println!(
        "{:>6} {:>9} {:>5} {:>7} {:>12} {:>6} {:>7} {:>8} {:>9} {:>7}",
        "SECS",
        "RSS_KIB",
        "FDS",
        "THREADS",
        "STEADY_PKTS",
        "LOST",
        "CYCLES",
        "ATTACKS",
        "DROPS",
        "MEMFLT"
    );
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(args.minutes * 60.0);
    let mut next_sample = t0;
    let mut samples: Vec<Sample> = Vec::new();
    let (mut cycles, mut attacks) = (0u64, 0u64);
    let mut errors: Vec<String> = Vec::new();
    loop {
        let now = Instant::now();
        if now >= next_sample || now >= end {
            agent.alive()?;
            let (rss_kib, threads) = proc_status(pid);
            let list = agent.vfs()?;
            let total = |name: &str| {
                list.iter()
                    .map(|v| v.counter(name).unwrap_or(0))
                    .sum::<u64>()
            };
            let s = Sample {
                secs: t0.elapsed().as_secs(),
                rss_kib,
                fds: open_fds(pid),
                threads,
                steady_frames: steady.iter().map(|f| f.received).sum(),
                steady_lost: steady.iter().map(|f| f.sent - f.received).sum(),
                cycles,
                attacks,
                drops: total("tx_drops") + total("rx_drops") + total("tx_bad_descriptors"),
                memory_faults: total("memory_faults"),
            };
            println!(
                "{:>6} {:>9} {:>5} {:>7} {:>12} {:>6} {:>7} {:>8} {:>9} {:>7}",
                s.secs,
                s.rss_kib,
                s.fds,
                s.threads,
                s.steady_frames,
                s.steady_lost,
                s.cycles,
                s.attacks,
                s.drops,
                s.memory_faults
            );
            let _ = std::io::stdout().flush();
            samples.push(s);
            if now >= end {
                break;
            }
            next_sample += Duration::from_secs(args.sample_secs);
        }
        for f in steady.iter_mut() {
            if let Err(e) = f.pump(FRAMES_PER_ROUND, DEADLINE) {
                errors.push(format!("steady flow: {e}"));
            }
        }
        // Attach, pass traffic, detach.
        match Flow::new(&sock(CYCLED.0), &sock(CYCLED.1)) {
            Ok(mut f) => match f.pump(64, DEADLINE) {
                Ok(_) => cycles += 1,
                Err(e) => {
                    let counters = |i: usize| {
                        agent
                            .vfs()
                            .ok()
                            .and_then(|l| l.get(i).map(|v| v.counters.to_string()))
                            .unwrap_or_default()
                    };
                    let mac = |v: &AttachedVf| {
                        let m = v.driver.mac();
                        format!(
                            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                            m[0], m[1], m[2], m[3], m[4], m[5]
                        )
                    };
                    let msg = format!(
                        "cycled pair at {} s, cycle {cycles}: {e}; driver MACs tx {} rx {} \
                         (agent: {} {}); tx ring {}; rx ring {}; agent counters tx {} rx {}",
                        t0.elapsed().as_secs(),
                        mac(&f.tx),
                        mac(&f.rx),
                        vfs[CYCLED.0].mac,
                        vfs[CYCLED.1].mac,
                        f.tx.driver.ring_state(&f.tx.mem.lock()),
                        f.rx.driver.ring_state(&f.rx.mem.lock()),
                        counters(CYCLED.0),
                        counters(CYCLED.1)
                    );
                    println!("  error: {msg}");
                    errors.push(msg);
                }
            },
            Err(e) => errors.push(format!("cycled pair attach: {e}")),
        }
        if let Err(e) = hostile.attack() {
            errors.push(format!("hostile round {}: {e}", hostile.round));
        }
        attacks += 1;
        drain(&mut peer);
        if errors.len() > 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(steady);
    drop(peer);

    // Flat: after the first minute's warm-up, fds and threads return to their level and RSS
    // grows by less than 16 MiB.
    let warm = samples
        .iter()
        .find(|s| s.secs >= 60)
        .or(samples.first())
        .copied()
        .ok_or("no samples")?;
    let last = *samples.last().ok_or("no samples")?;
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let mut ok = errors.is_empty();
    let check = |name: &str, good: bool, detail: String| {
        println!("  {} {name}: {detail}", if good { "ok  " } else { "FAIL" });
        good
    };
    println!("\nsoak summary ({} s):", last.secs);
    ok &= check(
        "fds flat",
        last.fds <= warm.fds + 2,
        format!("{} after warm-up, {} at the end", warm.fds, last.fds),
    );
    ok &= check(
        "threads flat",
        last.threads <= warm.threads,
        format!(
            "{} after warm-up, {} at the end",
            warm.threads, last.threads
        ),
    );
    ok &= check(
        "RSS bounded",
        max_rss <= warm.rss_kib + 16 * 1024,
        format!(
            "{} KiB after warm-up, max {} KiB, {} KiB at the end",
            warm.rss_kib, max_rss, last.rss_kib
        ),
    );
    ok &= check(
        "steady flows lost nothing",
        last.steady_lost == 0,
        format!(
            "{} frames received, {} lost",
            last.steady_frames, last.steady_lost
        ),
    );
    ok &= check(
        "attach/detach cycles",
        last.cycles >= 100 || args.minutes < 5.0,
        format!("{} cycles", last.cycles),
    );
    ok &= check(
        "hostile rounds",
        true,
        format!(
            "{} attacks, {} memory faults recovered",
            last.attacks, last.memory_faults
        ),
    );
    ok &= check(
        "agent alive",
        agent.alive().is_ok(),
        "after the last round".into(),
    );
    for e in &errors {
        println!("  error: {e}");
    }
    if ok {
        let mut dir = dir;
        dir.succeed();
    }
    Ok(ok)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("emu-soak: {e}");
            std::process::exit(2);
        }
    };
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("emu-soak: {e}");
            std::process::exit(1);
        }
    }
}
