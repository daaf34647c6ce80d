//! A per-VF transmit rate limit holds: a userspace driver on VF 0 (limited to 100 Mbit/s in the
//! agent's config) sends 1500-byte frames to VF 1 as fast as it can for 2 s; the rate VF 1
//! receives is within 10% of the limit, while the unlimited direction is far faster.
//! Plain `cargo test` (no guest).

use emu_sriov_tests::agent::{agent_bin, Agent};
use emu_sriov_tests::proc::RunDir;
use emu_vf_driver::client::{attach, AttachedVf};
use std::time::{Duration, Instant};

const LIMIT_MBPS: f64 = 100.0;
const FRAME: usize = 1500;

/// Sends from `a` to `b` for `dur`; returns bits per second received by `b`.
fn blast(a: &mut AttachedVf, b: &mut AttachedVf, dur: Duration) -> f64 {
    let mut frame = vec![0u8; FRAME];
    frame[..6].copy_from_slice(&b.driver.mac());
    frame[6..12].copy_from_slice(&a.driver.mac());
    frame[12..14].copy_from_slice(&0x88B5u16.to_be_bytes());
    a.driver
        .fill_tx_buffers(&a.mem.lock(), &frame)
        .expect("fill buffers");
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < dur {
        {
            let mem = a.mem.lock();
            a.driver.reclaim(&mem).expect("reclaim");
            while a.driver.tx_free() > 0 {
                if !a.driver.queue_tx_with(&mem, FRAME, None).expect("queue") {
                    break;
                }
            }
            a.driver.flush();
        }
        let mem = b.mem.lock();
        bytes +=
            u64::from(b.driver.poll_rx(&mem, &mut [], &mut |_| {}).expect("rx")) * FRAME as u64;
    }
    bytes as f64 * 8.0 / start.elapsed().as_secs_f64()
}

#[test]
fn transmit_rate_limit_within_ten_percent() {
    let mut dir = RunDir::new("rate").expect("temp dir");
    let bin = agent_bin().expect("build emu-sriov-agent");
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "pfs:\n  - model: igb\n    vfs: 2\n    vf:\n      - index: 0\n        rateMbps: {}\n",
            LIMIT_MBPS as u32
        ),
    )
    .expect("write config");
    let config = config.to_string_lossy().into_owned();
    let agent = Agent::start_with(
        &bin,
        dir.path(),
        &["--config", &config],
        Duration::from_secs(30),
    )
    .expect("agent");
    let vfs = agent.vfs().expect("list");
    let mut a = attach(&vfs[0].socket, 256).expect("attach vf0");
    let mut b = attach(&vfs[1].socket, 256).expect("attach vf1");

    // Warm up the bucket's steady state, then measure.
    blast(&mut a, &mut b, Duration::from_millis(300));
    let limited = blast(&mut a, &mut b, Duration::from_secs(2)) / 1e6;
    let unlimited = blast(&mut b, &mut a, Duration::from_millis(500)) / 1e6;
    println!("vf0 (limit {LIMIT_MBPS} Mbit/s) → vf1: {limited:.1} Mbit/s; vf1 (no limit) → vf0: {unlimited:.1} Mbit/s");
    assert!(
        (limited - LIMIT_MBPS).abs() <= LIMIT_MBPS * 0.10,
        "limited direction ran at {limited:.1} Mbit/s, want {LIMIT_MBPS} ± 10%"
    );
    assert!(
        unlimited > LIMIT_MBPS * 2.0,
        "the unlimited direction should not be capped: {unlimited:.1} Mbit/s"
    );
    dir.succeed();
}
