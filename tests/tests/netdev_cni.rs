//! Netdev-mode VFs for ordinary pods: `emu-sriov-cni` driven as a container runtime drives it
//! (the reference `cnitool`, and the CNI environment protocol directly), against a real agent
//! with a `deviceType: netdev` PF, in network namespaces the test made (the agent's own "host"
//! namespace and one per pod). Needs root, iproute2, ping, and Go for the CNI tools
//! (tests/cluster/cnitool/build.sh). Addresses from 198.18.0.0/15 only; every ping is bounded
//! (count and per-reply deadline), the killed ADD's IPAM plugin sleeps at most 30 s.

use emu_sriov_tests::agent::agent_bin;
use emu_sriov_tests::cni::{ping, CniNode};
use emu_sriov_tests::netns::NetNs;
use emu_sriov_tests::proc::RunDir;
use serde_json::{json, Value};
use std::time::Duration;

/// A PF name unique to this process (TAP names are `<pf>v<index>`).
fn pf_name() -> String {
    format!("nd{}", std::process::id() % 100_000)
}

fn network(name: &str, dir: &std::path::Path, vf: &str, ip: &str, extra: Value) -> Value {
    let mut v = json!({
        "cniVersion": "1.1.0",
        "name": name,
        "type": "emu-sriov-cni",
        "deviceID": vf,
        "agentRunDir": dir.join("run"),
        "spoofchk": "on",
        "trust": "off",
        "link_state": "auto",
        "min_tx_rate": 0,
        "max_tx_rate": 0,
        "ipam": {"type": "static", "addresses": [{"address": ip}]},
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    v
}

#[test]
fn pods_get_netdev_vfs_switched_with_vmdq_rules() {
    let mut dir = RunDir::new("cni").expect("temp dir");
    let bin = agent_bin().expect("build emu-sriov-agent");
    let pf = pf_name();
    let mut node = CniNode::start(
        "cnih",
        dir.path(),
        &bin,
        &format!("pfs:\n  - {{name: {pf}, model: igb, vfs: 5, deviceType: netdev}}\n"),
    )
    .expect("agent with a netdev PF in its own namespace");
    let vf = |i: u8| format!("{pf}-vf{i}");
    let tap = |i: u8| format!("{pf}v{i}");
    for i in 0..5 {
        node.host
            .ip(&["link", "show", &tap(i)])
            .expect("the VF's TAP is in the agent's namespace");
    }

    // Two pods, one VF each, through cnitool (one network per pod: Multus hands each its
    // deviceID in the config the same way).
    let pod_a = NetNs::new("cnia").expect("pod a");
    let pod_b = NetNs::new("cnib").expect("pod b");
    let d = dir.path();
    node.write_network("na", &network("na", d, &vf(0), "198.18.40.1/24", json!({})))
        .unwrap();
    node.write_network("nb", &network("nb", d, &vf(1), "198.18.40.2/24", json!({})))
        .unwrap();
    let add_a = node.cnitool("add", "na", &pod_a, "net1");
    assert!(add_a.ok, "cnitool add a: {add_a:?}\n{}", node.log_tail());
    let r = add_a.json();
    assert_eq!(r["interfaces"][0]["name"], "net1", "{r}");
    assert_eq!(r["ips"][0]["address"], "198.18.40.1/24", "{r}");
    assert_eq!(r["interfaces"][0]["mac"], node.vf(&vf(0)).unwrap()["mac"]);
    let add_b = node.cnitool("add", "nb", &pod_b, "net1");
    assert!(add_b.ok, "cnitool add b: {add_b:?}");
    assert_eq!(node.vf_state(&vf(0)), "attached");
    assert!(
        node.host.ip(&["link", "show", &tap(0)]).is_err(),
        "moved out"
    );
    pod_a.ip(&["link", "show", "net1"]).expect("net1 in pod a");

    assert!(
        ping(&pod_a, "198.18.40.2", 3),
        "a → b through the switch\n{}",
        node.log_tail()
    );
    assert!(node.counter(&vf(0), "tx_packets") >= 3 && node.counter(&vf(1), "rx_packets") >= 3);

    // Anti-spoofing: pod a forges its source MAC; the switch drops and counts every frame.
    let drops0 = node.counter(&vf(0), "tx_drops");
    pod_a
        .ip(&["link", "set", "net1", "address", "02:00:00:00:99:99"])
        .unwrap();
    pod_a.ip(&["neigh", "flush", "dev", "net1"]).unwrap();
    assert!(
        !ping(&pod_a, "198.18.40.2", 2),
        "forged source MAC got through"
    );
    let dropped = node.counter(&vf(0), "tx_drops") - drops0;
    assert!(dropped >= 2, "anti-spoofing drops counted: {dropped}");
    let mac_a = node.vf(&vf(0)).unwrap()["mac"].as_str().unwrap().to_owned();
    pod_a
        .ip(&["link", "set", "net1", "address", &mac_a])
        .unwrap();
    assert!(ping(&pod_a, "198.18.40.2", 2), "the real MAC passes again");

    // VLAN networks: two pods on VLAN 100 talk; a pod on VLAN 200 in the same subnet is
    // isolated from them.
    let pods: Vec<NetNs> = ["cnic", "cnid", "cnie"]
        .iter()
        .map(|t| NetNs::new(t).expect("pod"))
        .collect();
    for (k, (vlan, ip)) in [
        (100, "198.18.41.3/24"),
        (100, "198.18.41.4/24"),
        (200, "198.18.41.5/24"),
    ]
    .iter()
    .enumerate()
    {
        let name = format!("nv{k}");
        let conf = network(
            &name,
            d,
            &vf(2 + k as u8),
            ip,
            json!({"vlan": vlan, "vlanQoS": 0}),
        );
        node.write_network(&name, &conf).unwrap();
        let out = node.cnitool("add", &name, &pods[k], "net1");
        assert!(out.ok, "add vlan pod {k}: {out:?}");
    }
    assert!(ping(&pods[0], "198.18.41.4", 2), "same VLAN");
    assert!(
        !ping(&pods[0], "198.18.41.5", 2),
        "VLAN 100 reached VLAN 200"
    );
    assert!(
        !ping(&pods[0], "198.18.40.2", 1),
        "VLAN 100 reached the untagged pods"
    );

    // The agent crashes and comes back: it finds the TAPs inside the pods again (by the netns
    // each claim recorded) and the pods keep talking.
    node.kill_agent();
    node.spawn_agent().expect("agent restart");
    assert_eq!(node.vf_state(&vf(0)), "attached", "claim restored");
    assert!(
        ping(&pod_a, "198.18.40.2", 2),
        "after an agent restart\n{}",
        node.log_tail()
    );

    // CHECK passes, then fails once the interface is removed behind the plugin's back.
    let chk = node.cnitool("check", "nb", &pod_b, "net1");
    assert!(chk.ok, "check b: {chk:?}");
    pod_b.ip(&["link", "del", "net1"]).unwrap();
    let chk = node.cnitool("check", "nb", &pod_b, "net1");
    assert!(!chk.ok, "check must fail without net1: {chk:?}");
    assert!(
        chk.stdout.contains("\"code\":101") || chk.stderr.contains("changed"),
        "{chk:?}"
    );
    // The agent notices the lost netdev and makes a new TAP at home.
    node.wait_for("TAP recreated", Duration::from_secs(6), || {
        node.host.ip(&["link", "show", &tap(1)]).is_ok()
    })
    .unwrap();

    // DEL gives every VF back (TAP home, free, counters zeroed); DEL again succeeds.
    for (net, pod) in [("na", &pod_a), ("nb", &pod_b)] {
        let del = node.cnitool("del", net, pod, "net1");
        assert!(del.ok, "del {net}: {del:?}");
    }
    for (k, pod) in pods.iter().enumerate() {
        let del = node.cnitool("del", &format!("nv{k}"), pod, "net1");
        assert!(del.ok, "del nv{k}: {del:?}");
    }
    for i in 0..5 {
        assert_eq!(node.vf_state(&vf(i)), "free", "{} after DEL", vf(i));
        node.host
            .ip(&["link", "show", &tap(i)])
            .expect("TAP back in the agent's namespace");
    }
    assert_eq!(node.counter(&vf(0), "tx_packets"), 0, "scrubbed");
    let again = node.plugin(
        "DEL",
        "cnitool-gone",
        &pod_a,
        "net1",
        &network("na", d, &vf(0), "198.18.40.1/24", json!({})),
    );
    assert!(again.ok, "a repeated DEL succeeds: {again:?}");
    let chk = node.plugin(
        "CHECK",
        "nobody",
        &pod_a,
        "net1",
        &network(
            "na",
            d,
            &vf(0),
            "198.18.40.1/24",
            json!({"prevResult": {"cniVersion": "1.1.0"}}),
        ),
    );
    assert!(!chk.ok && chk.json()["code"] == 100, "{chk:?}");
    dir.succeed();
}

#[test]
fn plugin_errors_follow_the_spec() {
    let mut dir = RunDir::new("cnie").expect("temp dir");
    let bin = agent_bin().expect("build emu-sriov-agent");
    let pf = pf_name();
    let node = CniNode::start(
        "cnieh",
        dir.path(),
        &bin,
        &format!("pfs:\n  - {{name: {pf}, model: igb, vfs: 1, deviceType: netdev}}\n"),
    )
    .expect("agent");
    let pod = NetNs::new("cniep").expect("pod");
    let d = dir.path();
    let good = network("ne", d, &format!("{pf}-vf0"), "198.18.42.1/24", json!({}));

    let v = node.plugin("VERSION", "", &pod, "", &json!({}));
    assert!(
        v.ok && v.json()["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("1.1.0"))),
        "{v:?}"
    );
    let st = node.plugin("STATUS", "", &pod, "", &good);
    assert!(st.ok, "STATUS with the agent up: {st:?}");
    let cases = [
        (
            json!({"cniVersion": "9.9.9", "name": "x", "type": "emu-sriov-cni"}),
            1,
        ),
        (
            network("ne", d, "nosuch-vf0", "198.18.42.1/24", json!({})),
            7,
        ),
        (
            network(
                "ne",
                d,
                &format!("{pf}-vf0"),
                "198.18.42.1/24",
                json!({"spoofchk": "maybe"}),
            ),
            7,
        ),
        (
            network(
                "ne",
                d,
                &format!("{pf}-vf0"),
                "198.18.42.1/24",
                json!({"vlan": 5000}),
            ),
            7,
        ),
        (
            network(
                "ne",
                d,
                &format!("{pf}-vf0"),
                "198.18.42.1/24",
                json!({"agentRunDir": "/nonexistent"}),
            ),
            11,
        ),
    ];
    for (conf, code) in cases {
        let out = node.plugin("ADD", "c1", &pod, "net1", &conf);
        assert!(!out.ok, "{conf} must fail");
        let j = out.json();
        assert_eq!(j["code"], code, "{conf}: {out:?}");
        assert!(j["msg"].as_str().is_some_and(|m| !m.is_empty()), "{out:?}");
        assert_eq!(
            node.vf_state(&format!("{pf}-vf0")),
            "free",
            "a failed ADD holds nothing"
        );
    }
    // A VF held by one container is refused to another (try again later).
    assert!(node.plugin("ADD", "c1", &pod, "net1", &good).ok);
    let pod2 = NetNs::new("cniep2").expect("pod 2");
    let busy = node.plugin("ADD", "c2", &pod2, "net1", &good);
    assert!(!busy.ok && busy.json()["code"] == 11, "{busy:?}");
    assert!(node.plugin("DEL", "c1", &pod, "net1", &good).ok);
    dir.succeed();
}

#[test]
fn a_killed_add_leaks_no_vf() {
    let mut dir = RunDir::new("cnik").expect("temp dir");
    let bin = agent_bin().expect("build emu-sriov-agent");
    let pf = pf_name();
    let node = CniNode::start(
        "cnikh",
        dir.path(),
        &bin,
        &format!("pfs:\n  - {{name: {pf}, model: igb, vfs: 1, deviceType: netdev}}\n"),
    )
    .expect("agent");
    // An IPAM plugin that hangs (bounded: 30 s), so that ADD is killed after it moved the TAP.
    let slow = node.cni_path.join("slow-ipam");
    std::fs::write(&slow, "#!/bin/sh\nsleep 30\n").unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let vf = format!("{pf}-vf0");
    let d = dir.path();
    let hanging = {
        let mut c = network("nk", d, &vf, "198.18.43.1/24", json!({}));
        c["ipam"] = json!({"type": "slow-ipam"});
        c
    };

    for round in ["del-after-crash", "netns-gone-without-del"] {
        let pod = NetNs::new(if round.starts_with("del") {
            "cnik1"
        } else {
            "cnik2"
        })
        .expect("pod");
        let mut child = node
            .plugin_command("ADD", round, &pod, "net1")
            .spawn()
            .expect("plugin");
        {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(hanging.to_string().as_bytes())
                .unwrap();
        }
        // The claim is recorded and the TAP moved into the pod before IPAM runs.
        node.wait_for("claim recorded", Duration::from_secs(10), || {
            node.vf_state(&vf) == "attached"
        })
        .unwrap();
        node.wait_for("TAP in the pod", Duration::from_secs(10), || {
            pod.ip(&["link", "show", "net1"]).is_ok()
        })
        .unwrap();
        child.kill().unwrap(); // the plugin's own PID (ip netns exec execs it)
        let _ = child.wait();
        assert_eq!(
            node.vf_state(&vf),
            "attached",
            "the crash left the claim behind"
        );
        if round.starts_with("del") {
            // The runtime calls DEL for the failed ADD: everything comes back.
            let del = node.plugin(
                "DEL",
                round,
                &pod,
                "net1",
                &network("nk", d, &vf, "198.18.43.1/24", json!({"ipam": null})),
            );
            assert!(del.ok, "{del:?}");
        } else {
            // No DEL ever comes, the pod's namespace goes away: the agent frees the VF.
            drop(pod);
            node.wait_for("VF freed by the agent", Duration::from_secs(8), || {
                node.vf_state(&vf) == "free"
            })
            .unwrap();
        }
        assert_eq!(node.vf_state(&vf), "free", "{round}");
        node.wait_for("TAP home", Duration::from_secs(6), || {
            node.host.ip(&["link", "show", &format!("{pf}v0")]).is_ok()
        })
        .unwrap();
    }
    // And the VF is as good as new.
    let pod = NetNs::new("cnik3").expect("pod");
    let ok = node.plugin(
        "ADD",
        "again",
        &pod,
        "net1",
        &network("nk", d, &vf, "198.18.43.1/24", json!({})),
    );
    assert!(ok.ok, "{ok:?}");
    assert!(
        node.plugin(
            "DEL",
            "again",
            &pod,
            "net1",
            &network("nk", d, &vf, "198.18.43.1/24", json!({}))
        )
        .ok
    );
    dir.succeed();
}

/// CNI GC (spec 1.1): the attachments of a network that the runtime no longer lists lose
/// their VFs (TAP home, VF free) and their IPAM allocations; the listed ones and other
/// networks' are untouched. cnitool's `gc` (no valid attachments) then collects the rest.
#[test]
fn gc_frees_the_attachments_the_runtime_no_longer_uses() {
    let mut dir = RunDir::new("cnig").expect("temp dir");
    let bin = agent_bin().expect("build emu-sriov-agent");
    let pf = pf_name();
    let node = CniNode::start(
        "cnigh",
        dir.path(),
        &bin,
        &format!("pfs:\n  - {{name: {pf}, model: igb, vfs: 3, deviceType: netdev}}\n"),
    )
    .expect("agent");
    let d = dir.path();
    let vf = |i: u8| format!("{pf}-vf{i}");
    let ipam_dir = d.join("ipam");
    let host_local = json!({"ipam": {"type": "host-local", "subnet": "198.18.46.0/24",
        "dataDir": ipam_dir}});
    // host-local keeps one file per address, named by the address, holding the container id.
    let leased = |container: &str| -> bool {
        std::fs::read_dir(ipam_dir.join("ng"))
            .map(|rd| {
                rd.flatten().any(|e| {
                    std::fs::read_to_string(e.path())
                        .is_ok_and(|t| t.lines().next() == Some(container))
                })
            })
            .unwrap_or(false)
    };
    let pods: Vec<NetNs> = (0..3)
        .map(|k| NetNs::new(&format!("cnig{k}")).expect("pod"))
        .collect();
    // c0 and c1 on network "ng", c2 on "other".
    for (k, (net, container)) in [("ng", "c0"), ("ng", "c1"), ("other", "c2")]
        .into_iter()
        .enumerate()
    {
        let conf = network(net, d, &vf(k as u8), "198.18.47.1/24", host_local.clone());
        let add = node.plugin("ADD", container, &pods[k], "net1", &conf);
        assert!(add.ok, "ADD {container}: {add:?}\n{}", node.log_tail());
    }
    assert!(leased("c0") && leased("c1"), "host-local leased both");

    // GC of "ng" with only c0 still valid: c1's VF and address go.
    let mut gc = network("ng", d, &vf(0), "198.18.47.1/24", host_local.clone());
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c0", "ifname": "net1"}]);
    let out = node.plugin("GC", "", &pods[0], "", &gc);
    assert!(out.ok, "GC: {out:?}\n{}", node.log_tail());
    assert_eq!(node.vf_state(&vf(1)), "free", "c1's VF collected");
    assert!(!leased("c1"), "c1's address released");
    node.host
        .ip(&["link", "show", &format!("{pf}v1")])
        .expect("c1's TAP back in the agent's namespace");
    assert!(
        pods[1].ip(&["link", "show", "net1"]).is_err(),
        "and gone from the pod"
    );
    assert_eq!(
        node.vf_state(&vf(0)),
        "attached",
        "the valid attachment stays"
    );
    assert!(leased("c0"), "with its address");
    assert!(pods[0].ip(&["link", "show", "net1"]).is_ok());
    assert_eq!(
        node.vf_state(&vf(2)),
        "attached",
        "another network is not GC's business"
    );

    // cnitool gc passes no valid attachments: everything of "ng" goes, "other" stays.
    node.write_network(
        "ng",
        &network("ng", d, &vf(0), "198.18.47.1/24", host_local),
    )
    .unwrap();
    let out = node.cnitool("gc", "ng", &pods[0], "net1");
    assert!(out.ok, "cnitool gc: {out:?}\n{}", node.log_tail());
    assert_eq!(node.vf_state(&vf(0)), "free", "c0 collected by cnitool gc");
    assert!(!leased("c0"));
    assert_eq!(node.vf_state(&vf(2)), "attached");
    let del = node.plugin(
        "DEL",
        "c2",
        &pods[2],
        "net1",
        &network("other", d, &vf(2), "198.18.47.1/24", json!({"ipam": null})),
    );
    assert!(del.ok, "{del:?}");
    dir.succeed();
}
