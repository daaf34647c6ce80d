//! Reference run: the same guests, `/init` and checks as `guest_igbvf.rs`, but each guest has
//! QEMU's own emulated igb (8086:10C9, driver `igb`) and the two are joined by a
//! `-netdev stream` UNIX socket (guest-tests.md §6.2). No agent, no counter assertions, MAC not
//! asserted. It validates the harness end to end and is the baseline for performance comparisons.
//!
//! Ignored by default (boots two TCG guests, ~40 s); run it with
//! `cargo test -p emu-sriov-tests --test guest_qemu_igb -- --include-ignored --nocapture`
//! as root. Once requested, a missing prerequisite is a failure, never a skip.

use std::time::Duration;

use emu_sriov_tests::{Harness, Topology};

#[test]
#[ignore = "boots two TCG guests; run with -- --include-ignored (as root)"]
fn two_guests_qemu_igb_reference() {
    let mut h = Harness::new("igb");
    let topo = Topology::qemu_igb_pair(h.dir().join("l2.sock")).with_arg("vlan", 1);
    let initrd = h.initramfs(&topo);
    let reports = h.run_guests(&topo, &initrd, Duration::from_secs(240), &mut |_| Ok(()));
    h.assert_all_passed(&topo, &reports);
    for r in &reports {
        eprintln!(
            "guest {}: {:?} (guest uptime at done {:?} s)",
            r.name, r.stat, r.uptime_done
        );
    }
    h.finish();
}
