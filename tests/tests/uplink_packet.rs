//! The agent's AF_PACKET uplink without a guest (guest-tests.md §6.3, as `uplink_tap.rs`): each
//! test makes a veth pair `emu<x>pN`/`emu<x>qN`, keeps the `p` end in the root namespace (up,
//! IPv6 off, no address) and moves the `q` end into a network namespace it made
//! (`198.18.1.1/24` there). The agent runs with `--uplink packet:emu<x>pN` and one userspace
//! igbvf driver attaches to vf0.
//! - ARP: vf0 sends ARP requests for 198.18.1.1 from 198.18.1.10; the namespace's kernel must
//!   answer through the veth, the AF_PACKET socket and the switch; the uplink counters must show
//!   both directions, and vf0 must never get its own request back through the uplink.
//! - VLAN: a VLAN-100 frame and then an untagged frame, both to vf0's MAC, sent from the
//!   namespace end. The kernel moves a received 802.1Q tag out of the frame before packet
//!   sockets see it; the uplink must put it back, so the switch drops the tagged frame (vf0
//!   filters no VLAN 100) and delivers only the untagged one.
//!
//! Needs root (veth, netns, CAP_NET_RAW). Bounded: at most 50 requests over at most 10 s, 5 s
//! for the VLAN frames. The veth and the namespace are deleted on every exit.

use emu_dataplane::{PacketUplink, Uplink};
use emu_sriov_tests::agent::{agent_bin, Agent};
use emu_sriov_tests::arp::{arp_reply_from_host, arp_request};
use emu_sriov_tests::netns::{unique_ifname, NetNs, Veth};
use emu_sriov_tests::proc::RunDir;
use emu_vf_driver::client::{attach, AttachedVf};
use std::time::{Duration, Instant};

/// IEEE 802 local experimental EtherType, for the VLAN test's marker frames.
const ETHERTYPE_MARKER: u16 = 0x88b5;
const MARKER: &[u8] = b"emu-sriov uplink_packet";

/// A 60-byte (64 with the tag) frame `src` → `dst` carrying [`MARKER`] and `seq`, tagged with
/// VLAN `vid` if given.
fn marker_frame(dst: [u8; 6], src: [u8; 6], vid: Option<u16>, seq: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(vid) = vid {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ETHERTYPE_MARKER.to_be_bytes());
    f.extend_from_slice(MARKER);
    f.push(seq);
    f.resize(if vid.is_some() { 64 } else { 60 }, 0);
    f
}

/// The `seq` of a marker frame, tagged or not (wherever the VF left the tag).
fn marker_seq(frame: &[u8]) -> Option<u8> {
    let at = frame.windows(MARKER.len()).position(|w| w == MARKER)?;
    frame.get(at + MARKER.len()).copied()
}

fn counter(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

fn parse_mac(s: &str) -> [u8; 6] {
    let b: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex MAC"))
        .collect();
    b.try_into().unwrap_or_else(|_| panic!("not a MAC: {s}"))
}

/// What vf0 received during the ARP test.
struct ArpRx {
    mac: [u8; 6],
    /// The first ARP reply from 198.18.1.1: the MAC it announces.
    reply: Option<[u8; 6]>,
    /// Frames from our own MAC: the uplink reading back what it sent (must stay 0).
    echoes: u32,
}

impl ArpRx {
    fn see(&mut self, f: &[u8]) {
        if f.len() >= 12 && f[6..12] == self.mac {
            self.echoes += 1;
        }
        if self.reply.is_none() {
            self.reply = arp_reply_from_host(f, self.mac);
        }
    }
}

/// One RX pass on `vf`: hands every received frame to `f`.
fn poll(vf: &mut AttachedVf, buf: &mut [u8], f: &mut dyn FnMut(&[u8])) {
    let mem = vf.mem.lock();
    vf.driver.reclaim(&mem).expect("reclaim");
    vf.driver.poll_rx(&mem, buf, f).expect("rx");
}

/// The namespace, the veth, the agent on its root end and vf0 attached. Fields drop in order:
/// vf0, the agent (and its socket), the veth, the namespace, then the run directory.
struct Rig {
    vf: AttachedVf,
    agent: Agent,
    veth: Veth,
    ns: NetNs,
    dir: RunDir,
    /// vf0's MAC.
    mac: [u8; 6],
    /// The MAC of the namespace's veth end.
    ns_mac: [u8; 6],
}

impl Rig {
    /// `tag`: one letter, distinct per test (names the veth, the namespace and the run dir).
    fn new(tag: &str) -> Rig {
        let dir = RunDir::new(&format!("uplinkp{tag}")).expect("temp dir");
        let bin = agent_bin().expect("build emu-sriov-agent");
        let ns = NetNs::new(&format!("up{tag}")).expect("ip netns add (run as root)");
        let veth = Veth::new(
            &unique_ifname(&format!("{tag}p")),
            &unique_ifname(&format!("{tag}q")),
        )
        .expect("ip link add … type veth (run as root)");
        ns.adopt(veth.peer(), "198.18.1.1/24")
            .expect("veth peer into the namespace");
        let ns_mac = ns
            .ip(&["-br", "link", "show", "dev", veth.peer()])
            .expect("ip link show")
            .split_whitespace()
            .nth(2)
            .map(parse_mac)
            .expect("ip -br link shows the MAC");

        let uplink = format!("packet:{}", veth.name());
        let agent = Agent::start_with(
            &bin,
            dir.path(),
            &["--pf", "igb:2", "--uplink", &uplink],
            Duration::from_secs(30),
        )
        .expect("agent with an AF_PACKET uplink");
        let up0 = agent
            .uplink()
            .expect("list")
            .expect("list shows the uplink");
        assert_eq!(up0.get("name").and_then(|v| v.as_str()), Some(veth.name()));
        assert_eq!(up0.get("kind").and_then(|v| v.as_str()), Some("packet"));

        let vfs = agent.vfs().expect("list");
        let vf = attach(&vfs[0].socket, 256).expect("attach vf0");
        let mac = vf.driver.mac();
        Rig {
            vf,
            agent,
            veth,
            ns,
            dir,
            mac,
            ns_mac,
        }
    }

    fn uplink(&self) -> serde_json::Value {
        self.agent.uplink().expect("list").expect("uplink")
    }

    /// Removes everything, keeping nothing (the run succeeded).
    fn succeed(mut self) {
        self.dir.succeed();
    }
}

fn fmt_mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn vf_arps_the_netns_host_through_the_packet_uplink() {
    let t0 = Instant::now();
    let mut rig = Rig::new("v");
    let mac = rig.mac;
    let req = arp_request(mac);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0u32;
    let mut rx = ArpRx {
        mac,
        reply: None,
        echoes: 0,
    };
    let mut buf = [0u8; 2048];
    while rx.reply.is_none() && sent < 50 && Instant::now() < deadline {
        {
            let mem = rig.vf.mem.lock();
            if rig.vf.driver.queue_tx(&mem, &req).expect("queue") {
                sent += 1;
            }
            rig.vf.driver.flush();
        }
        let wait_until = Instant::now() + Duration::from_millis(200);
        while rx.reply.is_none() && Instant::now() < wait_until {
            poll(&mut rig.vf, &mut buf, &mut |f| rx.see(f));
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // A little longer, so that an echo of the last request would have arrived too.
    let drain_until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < drain_until {
        poll(&mut rig.vf, &mut buf, &mut |f| rx.see(f));
        std::thread::sleep(Duration::from_millis(5));
    }
    let ArpRx { reply, echoes, .. } = rx;
    let reply = reply.unwrap_or_else(|| {
        panic!(
            "no ARP reply from 198.18.1.1 after {sent} requests; uplink: {:?}; agent.log: {}",
            rig.agent.uplink(),
            emu_sriov_tests::proc::tail(&rig.agent.log, 10)
        )
    });
    assert_eq!(
        reply, rig.ns_mac,
        "the reply names the namespace's veth end"
    );
    println!(
        "ARP 198.18.1.1 is-at {} after {sent} request(s)",
        fmt_mac(&reply)
    );
    assert_eq!(
        echoes, 0,
        "vf0 received {echoes} of its own frames back through the AF_PACKET uplink"
    );

    let up = rig.uplink();
    println!("uplink counters: {up}");
    // Every request leaves once (broadcast: the default port); only the namespace's replies come
    // back (at most one per request: IPv6 is off on both ends and the root end has no address).
    assert_eq!(counter(&up, "tx_packets"), u64::from(sent), "{up}");
    assert!(counter(&up, "rx_packets") >= 1, "{up}");
    assert!(counter(&up, "rx_packets") <= u64::from(sent), "{up}");
    assert_eq!(counter(&up, "rx_unmatched"), 0, "{up}");
    assert_eq!(counter(&up, "tx_errors"), 0, "{up}");
    assert_eq!(counter(&up, "rx_errors"), 0, "{up}");
    let list = rig.agent.vfs().expect("list");
    assert!(list[0].counter("rx_packets").unwrap() >= 1);
    // The namespace answers vf0 by unicast; a broadcast from the uplink would reach vf1's pool
    // too, but vf1 is not attached: a drop there, never a delivery.
    assert_eq!(list[1].counter("rx_packets").unwrap(), 0);

    rig.succeed();
    println!("uplink_packet (ARP): {:.1?}", t0.elapsed());
}

#[test]
fn vlan_tags_from_the_packet_uplink_reach_the_switch() {
    let t0 = Instant::now();
    let mut rig = Rig::new("w");
    let (mac, ns_mac) = (rig.mac, rig.ns_mac);
    let tagged = marker_frame(mac, ns_mac, Some(100), 1);
    let untagged = marker_frame(mac, ns_mac, None, 2);

    let up0 = rig.uplink();
    let vf0_before = rig.agent.vfs().expect("list")[0].clone();
    let peer = rig.veth.peer().to_string();
    rig.ns
        .run_in(|| -> std::io::Result<()> {
            let mut sock = PacketUplink::open(&peer)?;
            sock.send(&tagged)?;
            sock.send(&untagged)
        })
        .expect("a thread in the namespace")
        .expect("send from the namespace's veth end");

    // The untagged frame comes second: once it is in, the tagged one has been switched too.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    while !seen.contains(&2) && Instant::now() < deadline {
        poll(&mut rig.vf, &mut buf, &mut |f| {
            if let Some(seq) = marker_seq(f) {
                println!("vf0 got marker {seq}: {} bytes", f.len());
                seen.push(seq);
            }
        });
        std::thread::sleep(Duration::from_millis(5));
    }
    let up = rig.uplink();
    println!("uplink counters: {up}");
    assert!(
        seen.contains(&2),
        "the untagged frame never reached vf0 (saw {seen:?}); uplink: {up}; agent.log: {}",
        emu_sriov_tests::proc::tail(&rig.agent.log, 10)
    );
    assert!(
        !seen.contains(&1),
        "vf0 filters no VLAN but got the VLAN-100 frame: the uplink lost its tag"
    );
    assert_eq!(
        counter(&up, "rx_packets") - counter(&up0, "rx_packets"),
        2,
        "{up}"
    );
    // 64 + 60: the tagged frame is read with its 4-byte tag back in place.
    assert_eq!(
        counter(&up, "rx_bytes") - counter(&up0, "rx_bytes"),
        (tagged.len() + untagged.len()) as u64,
        "{up}"
    );
    assert_eq!(counter(&up, "rx_errors"), 0, "{up}");
    let vf0 = rig.agent.vfs().expect("list")[0].clone();
    assert_eq!(
        vf0.counter("rx_drops").unwrap() - vf0_before.counter("rx_drops").unwrap(),
        1,
        "the VLAN-100 frame is vf0's one drop (VLAN filter): {}",
        vf0.counters
    );

    rig.succeed();
    println!("uplink_packet (VLAN): {:.1?}", t0.elapsed());
}
