//! One end-to-end run: environment, run directory, guests, barriers, failure reports, timings
//! (guest-tests.md §8, §9).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::agent::VfInfo;
use crate::console::{Check, Console, Marker};
use crate::env::GuestEnv;
use crate::initramfs::build_initramfs_with_tools;
use crate::proc::{tail, RunDir};
use crate::qemu::Qemu;
use crate::topology::{GuestSpec, Topology, GUEST_MEM_MB};

/// Root tools every test image carries (`tools` check; `rss`, throughput use iperf3).
pub const GUEST_TOOLS: &[&str] = &["ethtool", "iperf3"];

/// Lines of each log printed on failure.
const TAIL_LINES: usize = 60;

/// What one guest reported.
#[derive(Debug, Clone)]
pub struct GuestReport {
    /// Guest name (`a`, `b`).
    pub name: String,
    /// Every `EMU-CHECK`, in order.
    pub checks: Vec<Check>,
    /// `EMU-STAT` (tx_packets, tx_bytes, rx_packets, rx_bytes).
    pub stat: Option<BTreeMap<String, u64>>,
    /// `(pass, fail)` from `EMU-DONE`.
    pub done: Option<(u32, u32)>,
    /// Host wall time from QEMU start to `EMU-DONE`.
    pub boot_to_done: Option<Duration>,
    /// Guest uptime at `EMU-DONE`.
    pub uptime_done: Option<f64>,
    /// Barrier names the guest announced, in order.
    pub syncs: Vec<String>,
    /// Other marker lines `(tag, rest)` (`EMU-IPERF`, `EMU-IRQ`, …), in order.
    pub other: Vec<(String, String)>,
}

impl GuestReport {
    /// The rest of every `tag` line (e.g. `"EMU-IPERF"`), in order.
    pub fn lines(&self, tag: &str) -> Vec<&str> {
        self.other
            .iter()
            .filter(|(t, _)| t == tag)
            .map(|(_, r)| r.as_str())
            .collect()
    }

    /// An `EMU-STAT` value.
    pub fn stat(&self, key: &str) -> Result<u64, String> {
        self.stat
            .as_ref()
            .and_then(|s| s.get(key).copied())
            .ok_or_else(|| format!("guest {}: no EMU-STAT {key}", self.name))
    }
}

/// Starts one guest some other way than `qemu-system-x86_64` from the harness (e.g. through
/// libvirt): given the guest, the initramfs and the kernel command line, returns a command whose
/// stdout is the guest's serial console and whose stdin reaches it, and which exits when the
/// guest is gone (guest-tests.md §3 `/init` contract unchanged).
pub type Launcher = Box<dyn FnMut(&GuestSpec, &Path, &str) -> Result<Command, String>>;

/// One test run: the guest environment, a private directory and the logs to show on failure.
pub struct Harness {
    /// The cached QEMU root and kernel.
    pub env: GuestEnv,
    launcher: Option<Launcher>,
    logs: Vec<(String, PathBuf)>,
    timings: Vec<(String, Duration)>,
    started: Instant,
    // Declared last: dropped after everything else of the run (guards live in the caller and in
    // `run_guests`, which end before the harness).
    dir: RunDir,
}

impl Harness {
    /// Prepares the guest environment (fails loudly if anything is missing) and a run directory.
    pub fn new(tag: &str) -> Harness {
        let started = Instant::now();
        let env = GuestEnv::prepare().unwrap_or_else(|e| {
            panic!("guest test prerequisites missing (never skipped once requested): {e}")
        });
        let dir = RunDir::new(tag).unwrap_or_else(|e| panic!("cannot create run directory: {e}"));
        eprintln!("run directory: {}", dir.path().display());
        let mut h = Harness {
            env,
            launcher: None,
            logs: Vec::new(),
            timings: Vec::new(),
            started,
            dir,
        };
        h.timings.push(("prepare".into(), started.elapsed()));
        h
    }

    /// Starts guests with `launcher` instead of QEMU directly.
    pub fn set_launcher(&mut self, launcher: Launcher) {
        self.launcher = Some(launcher);
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Registers a log whose tail is printed on failure.
    pub fn add_log(&mut self, label: &str, path: PathBuf) {
        self.logs.push((label.to_string(), path));
    }

    /// Records a timing line for the summary.
    pub fn record(&mut self, label: &str, d: Duration) {
        self.timings.push((label.to_string(), d));
    }

    /// Runs `f`, recording how long it took.
    pub fn timed<T>(&mut self, label: &str, f: impl FnOnce(&mut Harness) -> T) -> T {
        let t = Instant::now();
        let r = f(self);
        self.record(label, t.elapsed());
        r
    }

    /// Prints the tail of every registered log, then panics with `msg`. The run directory is kept.
    pub fn fail(&self, msg: &str) -> ! {
        for (label, path) in &self.logs {
            eprintln!(
                "----- {label}: {} (last {TAIL_LINES} lines) -----\n{}",
                path.display(),
                tail(path, TAIL_LINES)
            );
        }
        eprintln!(
            "----- end of logs; run directory {} -----",
            self.dir().display()
        );
        panic!("{msg}");
    }

    /// `fail(msg)` unless `cond`.
    pub fn ensure(&self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            self.fail(&msg());
        }
    }

    /// Unwraps `r` or fails with its error and `what`.
    pub fn check<T>(&self, what: &str, r: Result<T, String>) -> T {
        r.unwrap_or_else(|e| self.fail(&format!("{what}: {e}")))
    }

    /// Builds the initramfs for `topo` into the run directory.
    pub fn initramfs(&mut self, topo: &Topology) -> PathBuf {
        let t = Instant::now();
        let r = build_initramfs_with_tools(
            &self.env,
            self.dir.path(),
            &topo.modules(),
            &[],
            GUEST_TOOLS,
        );
        self.record("initramfs", t.elapsed());
        self.check("building the initramfs", r)
    }

    /// Boots every guest of `topo` (in order, each once its device is ready), drives the
    /// barriers and collects the reports. `on_barrier(name)` runs when every guest still running
    /// waits at barrier `name`, before they are released (e.g. to read agent counters at `down`).
    /// Fails (with logs) on a deadline, a QEMU that exits before `EMU-DONE`, or a hook error.
    pub fn run_guests(
        &mut self,
        topo: &Topology,
        initrd: &Path,
        deadline: Duration,
        on_barrier: &mut dyn FnMut(&str) -> Result<(), String>,
    ) -> Vec<GuestReport> {
        for g in &topo.guests {
            let dir = self.dir.path().to_path_buf();
            self.add_log(
                &format!("guest {} console", g.name),
                dir.join(format!("{}.console.log", g.name)),
            );
            self.add_log(
                &format!("guest {} QEMU stderr", g.name),
                dir.join(format!("{}.qemu.log", g.name)),
            );
        }
        match self.drive(topo, initrd, deadline, on_barrier) {
            Ok(r) => r,
            Err(e) => self.fail(&e),
        }
    }

    fn drive(
        &mut self,
        topo: &Topology,
        initrd: &Path,
        deadline: Duration,
        on_barrier: &mut dyn FnMut(&str) -> Result<(), String>,
    ) -> Result<Vec<GuestReport>, String> {
        let start = Instant::now();
        let end = start + deadline;
        // The guest gives up a little before the host does, so that it still reports.
        let guest_timeout = deadline.as_secs().saturating_sub(20).max(30);
        let mut qemus: Vec<Qemu> = Vec::new();
        let mut consoles: Vec<Console> = Vec::new();
        for g in &topo.guests {
            while !g.device.ready() {
                if Instant::now() >= start + Duration::from_secs(15) {
                    return Err(format!(
                        "guest {}: device not ready: {:?}",
                        g.name, g.device
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // iavf uses min(queue pairs, online CPUs) queues: a guest that must show N
            // channels needs N vCPUs.
            let smp = g
                .args
                .iter()
                .find(|(k, _)| k == "queues")
                .map_or_else(|| "1".to_owned(), |(_, v)| v.clone());
            let append = g.append(guest_timeout);
            let cmd = if let Some(launch) = self.launcher.as_mut() {
                launch(g, initrd, &append)?
            } else {
                let mut cmd = self.env.qemu_command();
                cmd.args(["-accel", "tcg", "-m"])
                    .arg(GUEST_MEM_MB.to_string())
                    .args([
                        "-smp",
                        smp.as_str(),
                        "-nographic",
                        "-no-reboot",
                        "-nic",
                        "none",
                    ])
                    .args(g.device.qemu_args())
                    .arg("-kernel")
                    .arg(self.env.kernel())
                    .arg("-initrd")
                    .arg(initrd)
                    .arg("-append")
                    .arg(&append);
                cmd
            };
            let q = Qemu::spawn(&g.name, cmd, self.dir.path())?;
            consoles.push(Console::new(q.console_log.clone()));
            qemus.push(q);
        }

        let n = qemus.len();
        let mut pending: Vec<Vec<String>> = vec![Vec::new(); n];
        let mut done_at: Vec<Option<Duration>> = vec![None; n];
        loop {
            for i in 0..n {
                for m in consoles[i].poll() {
                    match m {
                        Marker::Sync { name, .. } => pending[i].push(name),
                        Marker::Done { .. } => done_at[i] = Some(qemus[i].started.elapsed()),
                        Marker::Check(c) if !c.pass => {
                            eprintln!("guest {}: FAIL {} {}", qemus[i].name, c.name, c.detail)
                        }
                        _ => {}
                    }
                }
                if done_at[i].is_none() {
                    if let Some(st) = qemus[i].exited() {
                        consoles[i].poll();
                        if consoles[i].done.is_none() {
                            return Err(format!(
                                "QEMU {} exited ({st}) before EMU-DONE",
                                qemus[i].name
                            ));
                        }
                        done_at[i] = Some(qemus[i].started.elapsed());
                    }
                }
            }
            let live: Vec<usize> = (0..n).filter(|&i| done_at[i].is_none()).collect();
            if live.is_empty() {
                break;
            }
            if live.iter().all(|&i| !pending[i].is_empty()) {
                let name = pending[live[0]][0].clone();
                let names: Vec<&str> = live.iter().map(|&i| pending[i][0].as_str()).collect();
                if names.iter().any(|x| *x != name) {
                    eprintln!("barrier mismatch (releasing all): {names:?}");
                }
                on_barrier(&name).map_err(|e| format!("at barrier {name}: {e}"))?;
                for &i in &live {
                    pending[i].remove(0);
                    qemus[i].send_line("go")?;
                }
                eprintln!(
                    "barrier {name} released at {:.1}s",
                    start.elapsed().as_secs_f64()
                );
            }
            if Instant::now() >= end {
                let waiting: Vec<String> = (0..n)
                    .map(|i| {
                        format!(
                            "{}: done={} waiting={:?}",
                            qemus[i].name,
                            done_at[i].is_some(),
                            pending[i]
                        )
                    })
                    .collect();
                return Err(format!(
                    "deadline of {deadline:?} passed ({})",
                    waiting.join("; ")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for q in &mut qemus {
            if q.wait_exit(Duration::from_secs(15)).is_none() {
                eprintln!(
                    "QEMU {} still running 15 s after EMU-DONE; stopping it",
                    q.name
                );
            }
            q.stop();
        }
        let reports: Vec<GuestReport> = consoles
            .into_iter()
            .zip(&qemus)
            .zip(done_at)
            .map(|((c, q), d)| GuestReport {
                name: q.name.clone(),
                checks: c.checks,
                stat: c.stat,
                done: c.done.map(|(p, f, _)| (p, f)),
                boot_to_done: d,
                uptime_done: c.done.and_then(|(_, _, u)| u),
                syncs: c.syncs,
                other: c.other,
            })
            .collect();
        for r in &reports {
            if let Some(d) = r.boot_to_done {
                self.record(&format!("guest {} boot→done", r.name), d);
            }
        }
        self.record("guests (wall)", start.elapsed());
        Ok(reports)
    }

    /// Every guest printed `EMU-DONE fail=0`, each expected check exactly PASSed, nothing failed.
    pub fn assert_all_passed(&self, topo: &Topology, reports: &[GuestReport]) {
        let mut problems = Vec::new();
        for (g, r) in topo.guests.iter().zip(reports) {
            for c in &r.checks {
                eprintln!(
                    "guest {} EMU-CHECK {} {} {}",
                    r.name,
                    c.name,
                    if c.pass { "PASS" } else { "FAIL" },
                    c.detail
                );
                if !c.pass {
                    problems.push(format!("guest {}: {} FAIL {}", r.name, c.name, c.detail));
                }
            }
            for want in g.expected_checks() {
                if !r.checks.iter().any(|c| c.name == want) {
                    problems.push(format!("guest {}: check {want} never reported", r.name));
                }
            }
            match r.done {
                None => problems.push(format!("guest {}: no EMU-DONE", r.name)),
                Some((p, f)) => {
                    if f != 0 || p as usize != r.checks.len() {
                        problems.push(format!(
                            "guest {}: EMU-DONE pass={p} fail={f} ({} check lines)",
                            r.name,
                            r.checks.len()
                        ));
                    }
                }
            }
        }
        if !problems.is_empty() {
            self.fail(&format!(
                "guest checks failed:\n  {}",
                problems.join("\n  ")
            ));
        }
    }

    /// Prints the timing summary and removes the run directory.
    pub fn finish(mut self) {
        self.record("total", self.started.elapsed());
        eprintln!("timing summary:");
        for (label, d) in &self.timings {
            eprintln!("  {label:<24} {:>7.2} s", d.as_secs_f64());
        }
        self.dir.succeed();
    }
}

/// The counter rule (README "Counter rule"): per VF, agent `tx_packets`/`rx_packets` equal the
/// guest's exactly; bytes too, except a constant per-packet difference, or exactly 4 bytes per
/// VLAN-tagged frame of that direction (`vlan_*_packets` in `EMU-STAT`); those are reported, not
/// failed.
/// `reports[i]` is compared with `vfs[i]`. Returns the problems (empty when all agree).
pub fn compare_counters(reports: &[GuestReport], vfs: &[&VfInfo]) -> Vec<String> {
    let mut problems = Vec::new();
    for (r, vf) in reports.iter().zip(vfs) {
        let mut guest = BTreeMap::new();
        for k in ["tx_packets", "tx_bytes", "rx_packets", "rx_bytes"] {
            match r.stat(k) {
                Ok(v) => {
                    guest.insert(k, v);
                }
                Err(e) => problems.push(e),
            }
        }
        eprintln!(
            "guest {} / {}: guest {guest:?}; agent {}",
            r.name, vf.id, vf.counters
        );
        if guest.len() != 4 {
            continue;
        }
        for dir in ["tx", "rx"] {
            let (pk, bk) = (format!("{dir}_packets"), format!("{dir}_bytes"));
            let (ap, ab) = match (vf.counter(&pk), vf.counter(&bk)) {
                (Ok(p), Ok(b)) => (p, b),
                (Err(e), _) | (_, Err(e)) => {
                    problems.push(format!("{}: {e}", vf.id));
                    continue;
                }
            };
            let (gp, gb) = (guest[pk.as_str()], guest[bk.as_str()]);
            if vf.model == "iavf" {
                // iavf's interface statistics are the agent's own counters, fetched with
                // VIRTCHNL_OP_GET_STATS every 2 s and based at the VF's last reset (MTU change):
                // they can only trail the agent's totals.
                if gp > ap || gb > ab {
                    problems.push(format!(
                        "{}: iavf {pk}/{bk} guest {gp}/{gb} vs agent {ap}/{ab} (want guest <= agent)",
                        vf.id
                    ));
                }
                continue;
            }
            if gp != ap {
                problems.push(format!("{}: {pk} guest {gp} != agent {ap}", vf.id));
            } else if gb != ab {
                let diff = ab as i64 - gb as i64;
                let tagged = r.stat(&format!("vlan_{dir}_packets")).unwrap_or(0) as i64;
                if tagged > 0 && diff.abs() == 4 * tagged {
                    eprintln!(
                        "NOTE {}: {bk} agent {ab} vs guest {gb}: 4 bytes for each of the {tagged} \
                         VLAN-tagged frames (tag inserted/stripped by the device, counted on one \
                         side only; reported, not failed)",
                        vf.id
                    );
                } else if gp > 0 && diff % gp as i64 == 0 {
                    eprintln!(
                        "NOTE {}: {bk} agent {ab} vs guest {gb}: {} bytes per packet \
                         (constant; reported, not failed)",
                        vf.id,
                        diff / gp as i64
                    );
                } else {
                    problems.push(format!(
                        "{}: {bk} guest {gb} != agent {ab} (diff {diff} over {gp} packets; \
                         not a per-packet constant, e.g. short-frame padding to 60 counted on \
                         one side only)",
                        vf.id
                    ));
                }
            }
        }
    }
    problems
}
