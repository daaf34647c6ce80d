//! The iavf end-to-end test: two TCG guests, each with one iavf VF (8086:1889) of one emulated
//! AVF PF, served by `emu-sriov-agent run --pf avf:2` (4 queue pairs per VF by default); the
//! guests' stock `iavf` (with `libeth`, `libie`) binds and, besides the igbvf checks, `/init`
//! asserts `channels` (`ethtool -l` combined == `emu.queues=4`), `rss` (a bounded
//! `iperf3 -P 4 -t 3` from a to b raises more than one `iavf-<if>-TxRx-<n>` vector on b) and
//! `vlan` (VLAN 100, 198.18.100.1 <-> .2, 3/3). The MTU-9000 check resets the VF (iavf does on
//! every MTU change). Agent counters must equal the guests' (README "Counter rule").
//!
//! Ignored by default; run as root:
//!   cargo test -p emu-sriov-tests --test guest_iavf -- --include-ignored --nocapture
//! Until the agent serves AVF it fails with "agent rejected --pf avf:2: …".

use std::time::Duration;

use emu_sriov_tests::scenarios::{pick_vfs, run_and_assert, start_agent};
use emu_sriov_tests::{Harness, Topology, VfModel};

#[test]
#[ignore = "boots two TCG guests against emu-sriov-agent; run with -- --include-ignored (as root)"]
fn two_guests_iavf_vfs_of_one_pf() {
    let mut h = Harness::new("iavf");
    let agent = start_agent(&mut h, &["avf:2"]);
    let id = VfModel::Iavf.device_id();
    let vfs = pick_vfs(&h, &agent, &[id, id]);
    for vf in &vfs {
        h.ensure(vf.model.is_empty() || vf.model == "iavf", || {
            format!("VF {} model {} (want iavf)", vf.id, vf.model)
        });
    }
    let topo = Topology::vf_pair_of(
        VfModel::Iavf,
        (vfs[0].socket.clone(), vfs[0].mac.clone()),
        (vfs[1].socket.clone(), vfs[1].mac.clone()),
    );
    let reports = run_and_assert(h, agent, &topo, &vfs, Duration::from_secs(300));
    for r in &reports {
        for l in r.lines("EMU-IRQ") {
            eprintln!("guest {} per-queue interrupt deltas: {l}", r.name);
        }
    }
}
