//! VMDq switching through the real dataplane, with userspace igbvf drivers attached over
//! vfio-user to three VFs of one PF: unicast reaches only its owner, broadcast is replicated
//! to every other pool, spoofed source MACs and unknown unicast are dropped and counted.
//! (The per-rule decision logic, VLANs and multicast hashes included, is unit-tested in
//! `emu_nic_model::vmdq`; this checks that the dataplane applies it.) Plain `cargo test`.

use emu_sriov_tests::agent::{agent_bin, Agent};
use emu_sriov_tests::proc::RunDir;
use emu_vf_driver::client::{attach, AttachedVf};
use std::time::{Duration, Instant};

const N: u64 = 50;

fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88B5u16.to_be_bytes());
    f
}

fn send(v: &mut AttachedVf, f: &[u8], n: u64) {
    let mut sent = 0;
    let end = Instant::now() + Duration::from_secs(10);
    while sent < n {
        assert!(Instant::now() < end, "could not queue {n} frames");
        let mem = v.mem.lock();
        v.driver.reclaim(&mem).expect("reclaim");
        if v.driver.queue_tx(&mem, f).expect("queue") {
            sent += 1;
        }
        v.driver.flush();
    }
}

/// Frames each VF receives within `settle`.
fn drain(vfs: &mut [AttachedVf], settle: Duration) -> Vec<u64> {
    let mut got = vec![0u64; vfs.len()];
    let end = Instant::now() + settle;
    while Instant::now() < end {
        for (i, v) in vfs.iter_mut().enumerate() {
            let mem = v.mem.lock();
            got[i] += u64::from(v.driver.poll_rx(&mem, &mut [], &mut |_| {}).expect("rx"));
        }
    }
    got
}

#[test]
fn unicast_broadcast_antispoof_and_unknown_unicast() {
    let mut dir = RunDir::new("switch").expect("temp dir");
    let bin = agent_bin().expect("build emu-sriov-agent");
    let agent = Agent::start(&bin, dir.path(), "igb:3", Duration::from_secs(30)).expect("agent");
    let listed = agent.vfs().expect("list");
    let mut vfs: Vec<AttachedVf> = listed
        .iter()
        .map(|v| attach(&v.socket, 256).expect("attach"))
        .collect();
    let mac: Vec<[u8; 6]> = vfs.iter().map(|v| v.driver.mac()).collect();
    let settle = Duration::from_millis(300);
    drain(&mut vfs, settle);

    // Unicast VF0 → VF1: only VF1.
    let f = frame(mac[1], mac[0]);
    send(&mut vfs[0], &f, N);
    assert_eq!(drain(&mut vfs, settle), vec![0, N, 0], "unicast to VF1");

    // Broadcast from VF0: every other pool (BAM), never back to the sender.
    let f = frame([0xFF; 6], mac[0]);
    send(&mut vfs[0], &f, N);
    assert_eq!(
        drain(&mut vfs, settle),
        vec![0, N, N],
        "broadcast replication"
    );

    // Anti-spoofing: VF0 claims VF2's MAC as its source: dropped at VF0's TX.
    let drops_before = agent.vfs().expect("list")[0].counter("tx_drops").unwrap();
    let f = frame(mac[1], mac[2]);
    send(&mut vfs[0], &f, N);
    assert_eq!(
        drain(&mut vfs, settle),
        vec![0, 0, 0],
        "spoofed frames delivered"
    );
    let drops = agent.vfs().expect("list")[0].counter("tx_drops").unwrap() - drops_before;
    assert_eq!(drops, N, "spoofed frames counted as VF0 tx drops");

    // Unknown unicast with no uplink: nobody receives it (no flooding between VFs).
    let f = frame([0x02, 0xEE, 0, 0, 0, 1], mac[0]);
    send(&mut vfs[0], &f, N);
    assert_eq!(
        drain(&mut vfs, settle),
        vec![0, 0, 0],
        "unknown unicast delivered"
    );

    agent.vfs().expect("agent still answers");
    dir.succeed();
}
