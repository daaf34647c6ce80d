//! Throughput benchmark for the perf work (guest-tests.md §5: compare side by side only). In ONE
//! run, four TCG guests with the same kernel and initramfs: a, b on two igbvf VFs of our agent
//! (`--pf igb:2`), c, d on QEMU's own igb joined by `-netdev stream` (the reference). `/init`
//! runs in `emu.mode=throughput`: link, ping, then the pairs take turns (host barriers), ours,
//! qemu, ours, qemu, each turn one bounded `iperf3 -c <peer> -t 5 -J` (client a/c, server b/d
//! with `iperf3 -s -1`), printed as one `EMU-IPERF` line. The host prints a table (scenario,
//! round, sender/receiver Mbit/s) and the ratio of the medians ours / QEMU.
//!
//! A benchmark, not a gate: it asserts only that every run completed (rc 0, no iperf3 error)
//! and moved more than 0 bytes; never a speed. Ignored by default; run as root:
//!   cargo test -p emu-sriov-tests --test guest_throughput -- --include-ignored --nocapture
//! It always measures the release agent (QEMU's igb is optimized C; a debug agent measured
//! 0.3x where the release one measures ~1.4x); `EMU_SRIOV_AGENT_BIN` still overrides.

use std::time::Duration;

use serde_json::Value;

use emu_sriov_tests::scenarios::{pick_vfs, start_release_agent};
use emu_sriov_tests::{GuestSpec, Harness, Topology, VfModel};

const ROUNDS: u32 = 2;

struct Run {
    scen: String,
    round: u32,
    sent_bps: f64,
    recv_bps: f64,
    bytes: u64,
    retransmits: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `scen=ours round=1 rc=0 {json}` -> a run, or why not.
fn parse_iperf(line: &str) -> Result<Run, String> {
    let mut rest = line;
    let mut kv = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let (w, r) = rest.split_once(' ').unwrap_or((rest, ""));
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("bad EMU-IPERF line: {line:.200}"))?;
        kv.insert(k.to_string(), v.to_string());
        rest = r;
    }
    let rc = &kv["rc"];
    let j: Value = serde_json::from_str(rest.trim())
        .map_err(|e| format!("EMU-IPERF JSON ({e}), rc={rc}: {:.300}", rest))?;
    if let Some(err) = j.get("error") {
        return Err(format!("iperf3 error (rc={rc}): {err}"));
    }
    if rc != "0" {
        return Err(format!("iperf3 rc={rc}"));
    }
    let end = &j["end"];
    let f = |sec: &str, k: &str| end[sec][k].as_f64();
    Ok(Run {
        scen: kv["scen"].clone(),
        round: kv["round"].parse().map_err(|e| format!("round: {e}"))?,
        sent_bps: f("sum_sent", "bits_per_second").ok_or("no end.sum_sent.bits_per_second")?,
        recv_bps: f("sum_received", "bits_per_second")
            .ok_or("no end.sum_received.bits_per_second")?,
        bytes: end["sum_received"]["bytes"]
            .as_u64()
            .ok_or("no end.sum_received.bytes")?,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

#[test]
#[ignore = "boots four TCG guests (agent igbvf + QEMU igb); run with -- --include-ignored (as root)"]
fn throughput_ours_vs_qemu_igb() {
    let mut h = Harness::new("tput");
    let mut agent = start_release_agent(&mut h, &["igb:2"]);
    let id = VfModel::Igbvf.device_id();
    let vfs = pick_vfs(&h, &agent, &[id, id]);
    let vf = |i: usize| (vfs[i].socket.clone(), vfs[i].mac.clone());
    let mut qemu = Topology::qemu_igb_pair(h.dir().join("l2.sock")).guests;
    for (g, (name, ip, peer)) in qemu.iter_mut().zip([
        ("c", "198.18.0.3/24", "198.18.0.4"),
        ("d", "198.18.0.4/24", "198.18.0.3"),
    ]) {
        g.name = name.into();
        g.ip = ip.into();
        g.peer = peer.into();
    }
    let [c, d]: [GuestSpec; 2] = qemu.try_into().expect("two reference guests");
    let topo = Topology {
        guests: vec![
            GuestSpec::vf("a", VfModel::Igbvf, "198.18.0.1/24", "198.18.0.2", vf(0))
                .with_arg("scen", "ours")
                .with_arg("iperf", "client"),
            GuestSpec::vf("b", VfModel::Igbvf, "198.18.0.2/24", "198.18.0.1", vf(1))
                .with_arg("scen", "ours")
                .with_arg("iperf", "server"),
            c.with_arg("scen", "qemu").with_arg("iperf", "client"),
            d.with_arg("scen", "qemu").with_arg("iperf", "server"),
        ],
    }
    .with_arg("mode", "throughput")
    .with_arg("scens", "ours,qemu")
    .with_arg("rounds", ROUNDS);
    let initrd = h.initramfs(&topo);
    let reports = h.run_guests(&topo, &initrd, Duration::from_secs(420), &mut |_| {
        agent.alive()
    });
    h.assert_all_passed(&topo, &reports);

    let mut runs = Vec::new();
    let mut problems = Vec::new();
    for r in &reports {
        for l in r.lines("EMU-IPERF") {
            match parse_iperf(l) {
                Ok(run) if run.bytes > 0 => runs.push(run),
                Ok(run) => problems.push(format!(
                    "guest {}: {} round {} moved 0 bytes",
                    r.name, run.scen, run.round
                )),
                Err(e) => problems.push(format!("guest {}: {e}", r.name)),
            }
        }
    }
    for scen in ["ours", "qemu"] {
        let n = runs.iter().filter(|r| r.scen == scen).count();
        if n != ROUNDS as usize {
            problems.push(format!("{scen}: {n} completed runs, want {ROUNDS}"));
        }
    }
    runs.sort_by_key(|r| (r.round, r.scen != "ours"));
    eprintln!("\nthroughput (TCG guests, iperf3 -t 5, 1 TCP stream; not representative of the");
    eprintln!("dataplane, compare side by side only):");
    eprintln!(
        "  {:<10} {:>5} {:>12} {:>12} {:>10} {:>7}",
        "scenario", "round", "sender Mb/s", "recv Mb/s", "MiB", "retr"
    );
    for r in &runs {
        eprintln!(
            "  {:<10} {:>5} {:>12.1} {:>12.1} {:>10.1} {:>7}",
            if r.scen == "ours" {
                "ours-igbvf"
            } else {
                "qemu-igb"
            },
            r.round,
            r.sent_bps / 1e6,
            r.recv_bps / 1e6,
            r.bytes as f64 / (1 << 20) as f64,
            r.retransmits
        );
    }
    let med = |scen: &str| {
        median(
            runs.iter()
                .filter(|r| r.scen == scen)
                .map(|r| r.recv_bps)
                .collect(),
        )
    };
    let (ours, q) = (med("ours"), med("qemu"));
    eprintln!(
        "  median receiver: ours {:.1} Mbit/s, qemu igb {:.1} Mbit/s, ratio ours/qemu {:.2}\n",
        ours / 1e6,
        q / 1e6,
        ours / q
    );
    h.ensure(problems.is_empty(), || {
        format!("throughput runs incomplete:\n  {}", problems.join("\n  "))
    });
    drop(agent);
    h.finish();
}
