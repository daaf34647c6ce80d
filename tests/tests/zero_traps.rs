//! Steady-state traffic between two VFs makes no trapped register access: two userspace igbvf
//! drivers (`emu-vf-driver`) attach over vfio-user exactly as a VM would, the queue pages are
//! mapped, and 20 000 frames cross the agent's switch while the server's trap counter stands
//! still. Plain `cargo test` (no guest).

use emu_sriov_tests::agent::{agent_bin, Agent};
use emu_sriov_tests::proc::RunDir;
use emu_vf_driver::client::attach;
use std::time::{Duration, Instant};

const FRAMES: u64 = 20_000;
const BATCH: u32 = 32;
const WINDOW: u64 = 128;

fn traps(agent: &Agent, id: &str) -> u64 {
    agent
        .vf(id)
        .expect("VF listed")
        .counter("traps")
        .expect("traps counter")
}

#[test]
fn steady_vf_to_vf_transfer_makes_no_traps() {
    let mut dir = RunDir::new("traps").expect("temp dir");
    let bin = agent_bin().expect("build emu-sriov-agent");
    let agent = Agent::start(&bin, dir.path(), "igb:2", Duration::from_secs(30)).expect("agent");
    let vfs = agent.vfs().expect("list");
    let mut a = attach(&vfs[0].socket, 256).expect("attach vf0");
    let mut b = attach(&vfs[1].socket, 256).expect("attach vf1");

    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&b.driver.mac());
    frame[6..12].copy_from_slice(&a.driver.mac());
    frame[12..14].copy_from_slice(&0x88B5u16.to_be_bytes()); // IEEE local experimental

    // Warm up: the first frames prove the path works before counting.
    let mut received = 0u64;
    let mut sent = 0u64;
    let pump = |a: &mut emu_vf_driver::client::AttachedVf,
                b: &mut emu_vf_driver::client::AttachedVf,
                target: u64,
                sent: &mut u64,
                received: &mut u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while *received < target {
            assert!(
                Instant::now() < deadline,
                "only {received}/{target} frames arrived"
            );
            {
                let mem = a.mem.lock();
                // A window smaller than the receiver's ring: no frame is ever dropped for lack
                // of RX buffers, so every frame sent must arrive.
                for _ in 0..BATCH {
                    if *sent >= target
                        || *sent - *received >= WINDOW
                        || !a.driver.queue_tx(&mem, &frame).expect("queue")
                    {
                        break;
                    }
                    *sent += 1;
                }
                a.driver.flush();
                a.driver.reclaim(&mem).expect("reclaim");
            }
            let mem = b.mem.lock();
            *received += u64::from(b.driver.poll_rx(&mem, &mut [], &mut |_| {}).expect("rx"));
        }
    };
    pump(&mut a, &mut b, 100, &mut sent, &mut received);

    let (ta, tb) = (traps(&agent, &vfs[0].id), traps(&agent, &vfs[1].id));
    pump(&mut a, &mut b, 100 + FRAMES, &mut sent, &mut received);
    let (ta2, tb2) = (traps(&agent, &vfs[0].id), traps(&agent, &vfs[1].id));
    println!(
        "{FRAMES} frames vf0→vf1: traps vf0 {ta}→{ta2}, vf1 {tb}→{tb2} ({:.3} per 1000 packets)",
        ((ta2 - ta) + (tb2 - tb)) as f64 * 1000.0 / FRAMES as f64
    );
    assert_eq!(ta2 - ta, 0, "sender trapped during the steady transfer");
    assert_eq!(tb2 - tb, 0, "receiver trapped during the steady transfer");

    let list = agent.vfs().expect("list");
    assert!(list[0].counter("tx_packets").unwrap() >= 100 + FRAMES);
    assert_eq!(list[1].counter("rx_packets").unwrap(), received);
    dir.succeed();
}
