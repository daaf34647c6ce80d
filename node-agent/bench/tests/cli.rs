//! `emu-sriov-bench` as a user runs it: the JSON report's shape and its instruction
//! counts from callgrind (valgrind is a CI dependency, installed by tests/run-all.sh).

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_emu-sriov-bench"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run emu-sriov-bench")
}

#[test]
fn bench_json_has_every_figure_and_callgrind_counts() {
    let out = bench(&[
        "--vfs",
        "2",
        "--sizes",
        "64",
        "--runs",
        "1",
        "--duration-ms",
        "50",
        "--instructions",
        "--instruction-frames",
        "3000",
        "--output",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("bench --output json prints JSON");
    let rows = report["rows"].as_array().expect("rows");
    let reference = &rows[0];
    assert!(reference["scenario"]
        .as_str()
        .unwrap()
        .contains("reference"));
    assert!(reference["mpps"].as_f64().unwrap() > 0.0);
    let vf = rows
        .iter()
        .find(|r| {
            r["scenario"]
                .as_str()
                .unwrap()
                .starts_with("VF→VF 64 B, 2 VFs")
        })
        .expect("the 2-VF row");
    assert!(vf["packets"].as_u64().unwrap() > 0, "frames crossed: {vf}");
    assert_eq!(vf["traps_per_1000"].as_f64(), Some(0.0), "no traps: {vf}");
    assert!(vf["ratio_to_reference"].as_f64().unwrap() > 0.0);
    // Callgrind counted the dataplane passes of the stepped probe: a debug build runs many
    // more instructions than a release one, but never fewer than a switch needs, and a
    // count stuck at the whole program (collection never toggled) would be far larger.
    let ipp = vf["instructions_per_packet"]
        .as_f64()
        .expect("instructions_per_packet with --instructions");
    assert!(
        (100.0..200_000.0).contains(&ipp),
        "instructions/packet {ipp}"
    );
    assert!(report["latency_p50_us"].as_f64().unwrap() > 0.0);
    assert!(report["idle_vf_ns_per_pass"].as_f64().unwrap() > 0.0);
}

#[test]
fn probe_moves_at_least_the_frames_asked_for() {
    let out = bench(&["--probe", "2:64:5000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let moved: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("probe-packets "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no probe-packets line in {text}"));
    // Whole ring batches cross, so a little more than asked.
    assert!((5000..5000 + 1024).contains(&moved), "{moved}");
    let bad = bench(&["--probe", "two:64"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("VFS:SIZE:PACKETS"));
}
