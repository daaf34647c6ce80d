//! Mixed models on one node: `emu-sriov-agent run --pf avf:1 --pf igb:1`; guest a gets the iavf
//! VF (8086:1889, stock `iavf`), guest b the igbvf VF (8086:10CA, stock `igbvf`). The node-level
//! L2 segment joins the PFs, so they must ping each other. `/init` runs in `emu.mode=basic`
//! (tools, enumeration, driver, mac, link, ping, msix, dmesg); agent counters must equal the
//! guests' (README "Counter rule").
//!
//! Ignored by default; run as root:
//!   cargo test -p emu-sriov-tests --test guest_mixed -- --include-ignored --nocapture
//! Until the agent serves AVF it fails with "agent rejected --pf avf:1 --pf igb:1: …".

use std::time::Duration;

use emu_sriov_tests::scenarios::{pick_vfs, run_and_assert, start_agent};
use emu_sriov_tests::{GuestSpec, Harness, Topology, VfModel, IAVF_QUEUES};

#[test]
#[ignore = "boots two TCG guests against emu-sriov-agent; run with -- --include-ignored (as root)"]
fn iavf_and_igbvf_guests_on_one_node() {
    let mut h = Harness::new("mixed");
    let agent = start_agent(&mut h, &["avf:1", "igb:1"]);
    let vfs = pick_vfs(
        &h,
        &agent,
        &[VfModel::Iavf.device_id(), VfModel::Igbvf.device_id()],
    );
    let vf = |i: usize| (vfs[i].socket.clone(), vfs[i].mac.clone());
    let topo = Topology {
        guests: vec![
            GuestSpec::vf("a", VfModel::Iavf, "198.18.0.1/24", "198.18.0.2", vf(0))
                .with_arg("queues", IAVF_QUEUES),
            GuestSpec::vf("b", VfModel::Igbvf, "198.18.0.2/24", "198.18.0.1", vf(1)),
        ],
    }
    .with_arg("mode", "basic");
    run_and_assert(h, agent, &topo, &vfs, Duration::from_secs(240));
}
