//! A benchmark, not a timed assertion: TCP throughput (iperf3, Debian's) between two "pods"
//! (network namespaces) through netdev-mode VFs — each pod's interface a TAP the release agent
//! switches with the VMDq rules — against the kernel's own path, two pods on a Linux bridge
//! through veth pairs (the standard `bridge` CNI plugin, the usual pod network). One run, both
//! measured back to back on the same machine; it prints a table with the ratio.
//!
//! Bounded: each iperf3 run lasts `EMU_NETDEV_IPERF_SECONDS` (default 5) with a hard timeout;
//! traffic only between the test's own namespaces, on 198.18.44.0/24 and 198.18.45.0/24.
//! Needs root, iperf3 (tests/run-all.sh installs it), Go for the CNI tools.

use emu_sriov_tests::cni::{ping, workspace_bin, CniNode};
use emu_sriov_tests::netns::NetNs;
use emu_sriov_tests::proc::RunDir;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

fn seconds() -> u32 {
    std::env::var("EMU_NETDEV_IPERF_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| (1..=30).contains(&s))
        .unwrap_or(5)
}

/// iperf3 from `client` to the server at `ip` in `server`: Gbit/s received.
fn iperf(server: &NetNs, client: &NetNs, ip: &str) -> Result<f64, String> {
    let t = seconds();
    let mut srv = Command::new("ip")
        .args([
            "netns",
            "exec",
            server.name(),
            "iperf3",
            "-s",
            "-1",
            "-B",
            ip,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3 -s: {e} (apt-get install iperf3)"))?;
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("timeout")
        .arg((t + 15).to_string())
        .args([
            "ip",
            "netns",
            "exec",
            client.name(),
            "iperf3",
            "-J",
            "-c",
            ip,
            "-t",
        ])
        .arg(t.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("iperf3 -c: {e}"))?;
    let _ = srv.kill(); // our own iperf3 server, if it is still there
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "iperf3 -J output: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| format!("no throughput in iperf3's report: {}", v["error"]))
}

#[test]
fn netdev_vfs_vs_linux_bridge_tcp_throughput() {
    let mut dir = RunDir::new("cnit").expect("temp dir");
    // The release agent: the comparison is about the product's dataplane, not debug builds.
    let bin = match std::env::var_os("EMU_SRIOV_AGENT_BIN") {
        Some(p) => p.into(),
        None => workspace_bin("emu-sriov-agent", "emu-sriov-agent", true).expect("release agent"),
    };
    let pf = format!("nt{}", std::process::id() % 100_000);
    let node = CniNode::start(
        "cnith",
        dir.path(),
        &bin,
        &format!("pfs:\n  - {{name: {pf}, model: igb, vfs: 2, deviceType: netdev}}\n"),
    )
    .expect("agent");
    let d = dir.path();

    // Netdev VFs.
    let (a, b) = (NetNs::new("cnita").unwrap(), NetNs::new("cnitb").unwrap());
    for (k, (pod, ip)) in [(&a, "198.18.44.1/24"), (&b, "198.18.44.2/24")]
        .iter()
        .enumerate()
    {
        let conf = json!({
            "cniVersion": "1.1.0", "name": "nt", "type": "emu-sriov-cni",
            "deviceID": format!("{pf}-vf{k}"), "agentRunDir": d.join("run"),
            "ipam": {"type": "static", "addresses": [{"address": ip}]},
        });
        let out = node.plugin("ADD", &format!("t{k}"), pod, "net1", &conf);
        assert!(out.ok, "{out:?}");
    }
    assert!(ping(&a, "198.18.44.2", 2), "netdev pods talk");
    let netdev = iperf(&b, &a, "198.18.44.2").expect("iperf3 over netdev VFs");

    // The baseline: a Linux bridge with veth pairs (the bridge CNI plugin, host-local IPAM),
    // in the same host namespace.
    let (c, e) = (NetNs::new("cnitc").unwrap(), NetNs::new("cnite").unwrap());
    let bridge = json!({
        "cniVersion": "1.1.0", "name": "br", "type": "bridge", "bridge": "emubr0",
        "ipam": {"type": "host-local", "subnet": "198.18.45.0/24",
                 "dataDir": d.join("ipam")},
    });
    let mut ips = Vec::new();
    for (k, pod) in [&c, &e].iter().enumerate() {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", node.host.name()])
            .arg(node.cni_path.join("bridge"))
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("b{k}"))
            .env("CNI_NETNS", format!("/var/run/netns/{}", pod.name()))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &node.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("bridge plugin");
        {
            use std::io::Write as _;
            let _ = child
                .stdin
                .take()
                .unwrap()
                .write_all(bridge.to_string().as_bytes());
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "bridge ADD: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ip = r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        ips.push(ip);
    }
    assert!(ping(&c, &ips[1], 2), "bridge pods talk");
    let bridged = iperf(&e, &c, &ips[1]).expect("iperf3 over the bridge");

    println!();
    println!(
        "TCP throughput between two pods (iperf3, {} s each, one stream)",
        seconds()
    );
    println!("{:<44} {:>10}", "path", "Gbit/s");
    println!(
        "{:<44} {:>10.2}",
        "netdev VFs (TAP ports, emu-sriov switch)", netdev
    );
    println!(
        "{:<44} {:>10.2}",
        "Linux bridge + veth pairs (bridge CNI)", bridged
    );
    println!(
        "{:<44} {:>10.3}",
        "ratio netdev / bridge",
        if bridged > 0.0 { netdev / bridged } else { 0.0 }
    );
    assert!(netdev > 0.0 && bridged > 0.0);
    dir.succeed();
}
