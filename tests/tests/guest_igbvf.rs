//! The real-driver end-to-end test: two TCG guests, each with one igbvf VF (8086:10CA) of the
//! same emulated PF, served by `emu-sriov-agent` over vfio-user; the guests' stock `igbvf` binds,
//! they ping each other through the agent's switch, and the agent's per-VF counters must match
//! the guests' interface statistics (guest-tests.md §6.1, §7, §8).
//!
//! Ignored by default (it boots two TCG guests, ~1 min, and builds the agent). CI and developers
//! run it explicitly, as root:
//!   cargo test -p emu-sriov-tests -- --include-ignored --nocapture
//! Once requested, a missing prerequisite (guest cache, QEMU without vfio-user-pci, agent build)
//! is a loud failure, never a skip. `EMU_SRIOV_AGENT_BIN` overrides the agent binary;
//! `EMU_SRIOV_RELEASE=1` builds and uses the release one.
//!
//! Counter rule (checked at the `down` barrier, when both guest interfaces are down so no frame
//! moves): per VF, agent `tx_packets` == guest `tx_packets` and agent `rx_packets` == guest
//! `rx_packets`, exactly. Bytes: asserted exactly, except that a difference of the same number of
//! bytes for every packet (e.g. 4 for an FCS counted on one side only) is reported, not failed.

use std::time::Duration;

use emu_sriov_tests::scenarios::{pick_vfs, run_and_assert, start_agent};
use emu_sriov_tests::{Harness, Topology};

#[test]
#[ignore = "boots two TCG guests against emu-sriov-agent; run with -- --include-ignored (as root)"]
fn two_guests_igbvf_vfs_of_one_pf() {
    let mut h = Harness::new("igbvf");
    let agent = start_agent(&mut h, &["igb:2"]);
    let vfs = pick_vfs(&h, &agent, &["0x10ca", "0x10ca"]);
    let topo = Topology::vf_pair(
        (vfs[0].socket.clone(), vfs[0].mac.clone()),
        (vfs[1].socket.clone(), vfs[1].mac.clone()),
    )
    .with_arg("vlan", 1);
    run_and_assert(h, agent, &topo, &vfs, Duration::from_secs(240));
}
