//! The agent's TAP uplink without a guest (guest-tests.md §6.3): the agent creates TAP `emuuN`
//! as its switch's default port; the test moves the TAP into a network namespace it made
//! (`198.18.1.1/24` there), attaches one userspace igbvf driver and sends an ARP request for
//! 198.18.1.1 from 198.18.1.10; the namespace's kernel must answer it through the TAP and the
//! switch, and the agent's uplink counters must show both frames. Needs root (TAP, netns).
//! Bounded: at most 50 requests over at most 10 s. The namespace is deleted on every exit.

use emu_sriov_tests::agent::{agent_bin, Agent};
use emu_sriov_tests::arp::{arp_reply_from_host, arp_request};
use emu_sriov_tests::netns::{unique_ifname, wait_link, NetNs};
use emu_sriov_tests::proc::RunDir;
use emu_vf_driver::client::attach;
use std::time::{Duration, Instant};

fn counter(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

#[test]
fn vf_arps_the_netns_host_through_the_tap_uplink() {
    let mut dir = RunDir::new("uplink").expect("temp dir");
    let bin = agent_bin().expect("build emu-sriov-agent");
    // Dropped last: the agent (and its TAP) goes first, then the namespace.
    let ns = NetNs::new("up").expect("ip netns add (run as root)");
    let tap = unique_ifname("u");
    let uplink = format!("tap:{tap}");
    let agent = Agent::start_with(
        &bin,
        dir.path(),
        &["--pf", "igb:2", "--uplink", &uplink],
        Duration::from_secs(30),
    )
    .expect("agent with a TAP uplink");
    wait_link(&tap, Duration::from_secs(5)).expect("the agent's TAP");
    ns.adopt(&tap, "198.18.1.1/24")
        .expect("TAP into the namespace");
    let ns_mac = ns
        .ip(&["-br", "link", "show", &tap])
        .expect("ip link show")
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_ascii_lowercase();

    let up0 = agent
        .uplink()
        .expect("list")
        .expect("list shows the uplink");
    assert_eq!(up0.get("name").and_then(|v| v.as_str()), Some(tap.as_str()));
    assert_eq!(up0.get("kind").and_then(|v| v.as_str()), Some("tap"));

    let vfs = agent.vfs().expect("list");
    let mut vf = attach(&vfs[0].socket, 256).expect("attach vf0");
    let mac = vf.driver.mac();
    let req = arp_request(mac);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0u32;
    let mut reply = None;
    let mut buf = [0u8; 2048];
    while reply.is_none() && sent < 50 && Instant::now() < deadline {
        {
            let mem = vf.mem.lock();
            if vf.driver.queue_tx(&mem, &req).expect("queue") {
                sent += 1;
            }
            vf.driver.flush();
        }
        let wait_until = Instant::now() + Duration::from_millis(200);
        while reply.is_none() && Instant::now() < wait_until {
            let mem = vf.mem.lock();
            vf.driver.reclaim(&mem).expect("reclaim");
            vf.driver
                .poll_rx(&mem, &mut buf, &mut |f| {
                    if reply.is_none() {
                        reply = arp_reply_from_host(f, mac);
                    }
                })
                .expect("rx");
            drop(mem);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let reply = reply.unwrap_or_else(|| {
        panic!(
            "no ARP reply from 198.18.1.1 after {sent} requests; uplink: {:?}; agent.log: {}",
            agent.uplink(),
            emu_sriov_tests::proc::tail(&agent.log, 10)
        )
    });
    let reply_mac = reply
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(reply_mac, ns_mac, "the reply names the namespace's TAP");
    println!("ARP 198.18.1.1 is-at {reply_mac} after {sent} request(s)");

    let up = agent.uplink().expect("list").expect("uplink");
    println!("uplink counters: {up}");
    assert!(counter(&up, "tx_packets") >= 1, "{up}");
    assert!(counter(&up, "rx_packets") >= 1, "{up}");
    assert_eq!(counter(&up, "tx_errors"), 0, "{up}");
    assert_eq!(counter(&up, "rx_errors"), 0, "{up}");
    let list = agent.vfs().expect("list");
    assert!(list[0].counter("rx_packets").unwrap() >= 1);
    // The broadcast request also reached the other VF's pool (loopback) — not attached, so it
    // counts as a drop there, never as a delivery.
    assert_eq!(list[1].counter("rx_packets").unwrap(), 0);

    drop(vf);
    drop(agent);
    drop(ns);
    dir.succeed();
}
