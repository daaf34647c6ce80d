//! A guest pings the host through the agent's TAP uplink (guest-tests.md §6.3): the agent runs
//! with `--uplink tap:<unique>`; the test moves that TAP into a network namespace it made and
//! gives it 198.18.1.1/24 there (never an address in the root namespace). Two TCG guests on
//! igbvf VFs of one PF (198.18.1.10, .11) run the basic checks; guest `a` also gets
//! `emu.hostip=198.18.1.1` and must pass the `host` check (3/3 echoes through the switch's
//! default port). The counter rule (agent vs guest, per VF) still holds: frames to and from the
//! uplink count on the VF like any other. The namespace is deleted on every exit.
//!
//! Ignored by default like the other guest tests; run as root:
//!   cargo test -p emu-sriov-tests --test guest_uplink -- --include-ignored --nocapture

use std::time::Duration;

use emu_sriov_tests::netns::{unique_ifname, wait_link, NetNs};
use emu_sriov_tests::scenarios::{pick_vfs, run_and_assert, start_agent_with};
use emu_sriov_tests::{Harness, Topology};

#[test]
#[ignore = "boots two TCG guests against emu-sriov-agent with a TAP uplink; run with -- --include-ignored (as root)"]
fn guest_pings_the_host_through_the_tap_uplink() {
    let mut h = Harness::new("uplink");
    // Declared before the agent: dropped after it (the TAP goes with the agent first).
    let ns = h.check("ip netns add", NetNs::new("gup"));
    let tap = unique_ifname("g");
    let uplink = format!("tap:{tap}");
    let agent = start_agent_with(&mut h, &["igb:2"], &["--uplink", &uplink]);
    h.check("the agent's TAP", wait_link(&tap, Duration::from_secs(5)));
    h.check("TAP into the namespace", ns.adopt(&tap, "198.18.1.1/24"));
    let vfs = pick_vfs(&h, &agent, &["0x10ca", "0x10ca"]);
    let mut topo = Topology::vf_pair(
        (vfs[0].socket.clone(), vfs[0].mac.clone()),
        (vfs[1].socket.clone(), vfs[1].mac.clone()),
    );
    for (g, (ip, peer)) in topo.guests.iter_mut().zip([
        ("198.18.1.10/24", "198.18.1.11"),
        ("198.18.1.11/24", "198.18.1.10"),
    ]) {
        g.ip = ip.into();
        g.peer = peer.into();
        *g = g.clone().with_arg("mode", "basic");
    }
    topo.guests[0] = topo.guests[0].clone().with_arg("hostip", "198.18.1.1");
    let reports = run_and_assert(h, agent, &topo, &vfs, Duration::from_secs(240));
    let host = reports[0]
        .checks
        .iter()
        .find(|c| c.name == "host")
        .map(|c| format!("{c:?}"));
    println!("guest a host check: {host:?}");
    drop(ns);
}
