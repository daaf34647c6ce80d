//! Netdev VFs through Multus on a real one-node cluster (tests/cluster/up.sh): Multus' thin
//! plugin, built from its Go module and imported as a local image (tests/cluster/multus/), is
//! the node's CNI; the chart installs the operator and a netdev-mode agent (which puts
//! emu-sriov-cni on the node); a netdev VfPool and a VfNetwork (→ NAD) later, two pods that
//! name the network in `k8s.v1.cni.cncf.io/networks` and request the pool's resource get their
//! VF's TAP as `net1` with an address from the network's IPAM, and ping each other through the
//! agent's switch (the VFs' counters move). The agent pod is restarted under the pods: it finds
//! the TAPs inside their namespaces again and the ping still goes through. Deleting the pods
//! returns the VFs (TAPs back in the host's namespace, pool free); helm uninstall removes the
//! pool and with it the TAPs, and Multus' removal leaves the node's CNI config as it was.
//!
//! #[ignore]d in a plain `cargo test` (a whole cluster, ~2 min with the programs cached; root);
//! tests/run-all.sh runs it after the chart e2e. EMU_E2E_REUSE_CLUSTER=1 / EMU_E2E_KEEP_CLUSTER=1
//! as in cluster_e2e.rs.

use std::time::{Duration, Instant};

use emu_sriov_tests::cluster::{LocalCluster, NODE};
use serde_json::Value;

const NS: &str = "emu-sriov";
const RELEASE: &str = "emu";
const NET_POD_IMAGE: &str = "docker.io/emu-sriov/net-pod:dev";
const RESOURCE: &str = "emu.sriov/netdev";
const SUBNET_PREFIX: &str = "198.18.20.";

/// The VFs as the agent's control socket lists them (`emu-sriov-agent list -o json`).
fn agent_vfs(c: &LocalCluster, agent: &std::path::Path) -> Vec<Value> {
    agent_vfs_try(c, agent).expect("emu-sriov-agent list -o json answers")
}

fn counter(vf: &Value, name: &str) -> u64 {
    vf["counters"][name].as_u64().unwrap_or(0)
}

/// The pod's `net1` entry of Multus' network-status annotation.
fn net1_status(c: &LocalCluster, pod: &str) -> Option<Value> {
    let text = c.jsonpath(
        &["-n", "default", "get", "pod", pod],
        r"{.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}",
    );
    let list: Vec<Value> = serde_json::from_str(&text).ok()?;
    list.into_iter().find(|n| n["interface"] == "net1")
}

fn net_pod(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  annotations: {{k8s.v1.cni.cncf.io/networks: net1}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {NET_POD_IMAGE}
    imagePullPolicy: Never
    args: [infinity]
    resources:
      limits: {{{RESOURCE}: 1}}
"#
    )
}

/// `ping -c COUNT` from `pod`'s net1 to `ip`; the output, or why it failed.
fn ping(c: &LocalCluster, pod: &str, ip: &str, count: u32) -> Result<String, String> {
    let n = count.to_string();
    let out = c.run(
        "kubectl",
        &[
            "-n", "default", "exec", pod, "--", "ping", "-c", &n, "-i", "0.2", "-W", "2", "-I",
            "net1", ip,
        ],
        Duration::from_secs(30),
    );
    if out.ok {
        Ok(out.stdout)
    } else {
        Err(format!("{}\n{}", out.stdout, out.stderr))
    }
}

/// `kubectl -n emu-sriov get pods -l <the agent's> -o jsonpath=PATH`.
fn agent_pods(c: &LocalCluster, path: &str) -> String {
    c.jsonpath(
        &[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=agent",
        ],
        path,
    )
}

fn host_has_link(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
#[ignore = "starts a whole cluster (needs root and tests/cluster/build.sh); run by tests/run-all.sh"]
fn multus_netdev_on_a_real_cluster() {
    let t_all = Instant::now();
    let c = LocalCluster::up().expect("local cluster");
    let d = c.dir().display().to_string();
    eprintln!("multus: cluster up in {:.1} s", c.startup.as_secs_f64());

    // Multus: built from its Go module, packed and imported, the thin DaemonSet applied.
    let t = Instant::now();
    let out = c.run(
        "tests/cluster/multus/install.sh",
        &[],
        Duration::from_secs(600),
    );
    assert!(out.ok, "multus/install.sh:\n{}\n{}", out.stdout, out.stderr);
    let conf = c.dir().join("cni/net.d/00-multus.conflist");
    let conf_text = std::fs::read_to_string(&conf).expect("Multus' config");
    assert!(
        conf_text.contains("\"type\": \"multus\"") && conf_text.contains("emu-pods"),
        "Multus leads the CNI config and delegates to the cluster network:\n{conf_text}"
    );
    eprintln!(
        "multus: Multus installed (thin plugin, local image) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Images of this workspace's binaries: the agent image carries emu-sriov-cni.
    let t = Instant::now();
    let agent = c.import_chart_images().expect("chart images");
    // The pods: Debian's ping (and sleep as the main process) with their libraries.
    c.import_image(
        NET_POD_IMAGE,
        &[
            "--file",
            "/usr/bin/ping:/usr/bin/ping",
            "--file",
            "/usr/bin/sleep:/usr/bin/sleep",
            "--with-libs",
            "--entrypoint",
            "/usr/bin/sleep",
        ],
    )
    .expect("net pod image");
    eprintln!(
        "multus: 4 images packed and imported in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The chart with netdev VFs on: a privileged agent that installs emu-sriov-cni next to
    // Multus and sees the pods' network namespaces.
    let t = Instant::now();
    let netns_dir = format!("{d}/containerd/state/io.containerd.grpc.v1.cri/netns");
    let netdev = [
        "agent.netdev.enabled=true".to_owned(),
        format!("agent.netdev.cniBinDir={d}/cni/bin"),
        format!("agent.netdev.netnsDir={netns_dir}"),
    ];
    let sets: Vec<String> = netdev
        .into_iter()
        .flat_map(|v| ["--set".to_owned(), v])
        .collect();
    if let Err(e) = c.helm_install(RELEASE, NS, &sets) {
        panic!("{e}");
    }
    assert!(
        c.dir().join("cni/bin/emu-sriov-cni").exists(),
        "the agent's init container installed emu-sriov-cni into the node's CNI bin dir"
    );
    eprintln!(
        "multus: helm install (netdev agent) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // A netdev pool and a network for it.
    let t = Instant::now();
    c.apply(&format!(
        r#"apiVersion: emu.sriov/v1alpha1
kind: VfPool
metadata: {{name: netdev}}
spec: {{model: igbvf, vfsPerPf: 2, deviceType: netdev, resourceName: {RESOURCE}}}
---
apiVersion: emu.sriov/v1alpha1
kind: VfNetwork
metadata: {{name: net1, namespace: default}}
spec:
  resourceName: {RESOURCE}
  ipam: '{{"type": "host-local", "subnet": "{SUBNET_PREFIX}0/24", "dataDir": "{d}/cni/ipam-net1"}}'
"#
    ))
    .expect("VfPool and VfNetwork");
    let alloc_path = format!(r"{{.status.allocatable.{}}}", RESOURCE.replace('.', r"\."));
    c.wait_for(
        "allocatable emu.sriov/netdev: 2 and the NAD",
        Duration::from_secs(90),
        Duration::from_millis(100),
        || {
            (c.jsonpath(&["get", "node", NODE], &alloc_path) == "2"
                && c.kubectl(&["-n", "default", "get", "net-attach-def", "net1"])
                    .is_ok())
            .then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nvfnetwork:\n{}\noperator:\n{}",
            c.kubectl(&["get", "vfnetwork", "-A", "-o", "yaml"])
                .unwrap_or_default(),
            c.kubectl(&[
                "-n",
                NS,
                "logs",
                "deploy/emu-emu-sriov-operator",
                "--tail",
                "20"
            ])
            .unwrap_or_default()
        )
    });
    let nad = c.jsonpath(
        &["-n", "default", "get", "net-attach-def", "net1"],
        "{.spec.config}",
    );
    let nad: Value = serde_json::from_str(&nad).expect("NAD config JSON");
    assert_eq!(nad["type"], "emu-sriov-cni");
    assert_eq!(
        nad["agentRunDir"].as_str(),
        Some(format!("{d}/emu-sriov").as_str()),
        "the NAD tells the plugin where this chart's agents listen"
    );
    let vfs = agent_vfs(&c, &agent);
    assert_eq!(vfs.len(), 2, "two netdev VFs: {vfs:?}");
    let taps: Vec<String> = vfs
        .iter()
        .map(|v| {
            v["netdev"]
                .as_str()
                .expect("netdev VF has a TAP")
                .to_owned()
        })
        .collect();
    assert!(
        taps.iter().all(|t| host_has_link(t)),
        "free netdev VFs' TAPs sit in the host's namespace: {taps:?}"
    );
    eprintln!(
        "multus: netdev VfPool + VfNetwork → allocatable {RESOURCE}: 2 and NAD default/net1 in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // Two pods on the network: Multus hands each its VF (deviceID from pod-resources) to
    // emu-sriov-cni, which moves the TAP in as net1.
    let t = Instant::now();
    c.apply(&net_pod("net-a")).expect("pod net-a");
    c.apply(&net_pod("net-b")).expect("pod net-b");
    c.wait_pod_running("default", "net-a", Duration::from_secs(60));
    c.wait_pod_running("default", "net-b", Duration::from_secs(60));
    eprintln!(
        "multus: two pods with the network annotation Running in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let status_a = net1_status(&c, "net-a").expect("net-a's network-status has net1");
    let status_b = net1_status(&c, "net-b").expect("net-b's network-status has net1");
    let ip = |s: &Value| s["ips"][0].as_str().unwrap_or_default().to_owned();
    let (ip_a, ip_b) = (ip(&status_a), ip(&status_b));
    assert!(
        ip_a.starts_with(SUBNET_PREFIX) && ip_b.starts_with(SUBNET_PREFIX) && ip_a != ip_b,
        "addresses from the network's IPAM: {status_a} {status_b}"
    );
    let vfs = agent_vfs(&c, &agent);
    let macs: Vec<&str> = vfs.iter().filter_map(|v| v["mac"].as_str()).collect();
    for s in [&status_a, &status_b] {
        assert!(
            macs.contains(&s["mac"].as_str().unwrap_or_default()),
            "the pod's net1 carries a VF's MAC: {s} vs {macs:?}"
        );
    }
    assert!(
        taps.iter().all(|t| !host_has_link(t)),
        "both TAPs moved out of the host's namespace"
    );
    assert_eq!(
        c.jsonpath(&["get", "vfpool", "netdev"], "{.status.vfsAllocated}"),
        "2"
    );

    // Ping through the agent's switch: the VFs' counters move with it.
    let before: u64 = vfs.iter().map(|v| counter(v, "rx_packets")).sum();
    let out = ping(&c, "net-a", &ip_b, 5).unwrap_or_else(|e| panic!("ping net-a → net-b: {e}"));
    assert!(
        out.contains(" 0% packet loss"),
        "ping net-a → net-b:\n{out}"
    );
    let after: u64 = agent_vfs(&c, &agent)
        .iter()
        .map(|v| counter(v, "rx_packets"))
        .sum();
    assert!(
        after >= before + 10,
        "5 echo requests and 5 replies crossed the agent's switch (rx_packets {before} → {after})"
    );
    eprintln!(
        "multus: net-a {ip_a} → net-b {ip_b}: 5/5 pings through the switch (VF rx_packets {before} → {after})"
    );

    // The agent pod restarts under the pods: it finds the TAPs inside their namespaces again.
    let t = Instant::now();
    let old_agent = agent_pods(&c, "{.items[0].metadata.name}");
    c.kubectl(&["-n", NS, "delete", "pod", &old_agent])
        .expect("delete the agent pod");
    c.wait_for(
        "a new agent pod Running and both VFs served",
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            let names = agent_pods(&c, "{.items[*].metadata.name} {.items[*].status.phase}");
            (!names.contains(&old_agent)
                && names.ends_with(" Running")
                && agent_vfs_try(&c, &agent).is_some_and(|v| v.len() == 2))
            .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.wait_for(
        "ping after the agent's restart",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            ping(&c, "net-b", &ip_a, 3)
                .ok()
                .filter(|o| o.contains(" 0% packet loss"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", ping(&c, "net-b", &ip_a, 3)));
    assert!(
        taps.iter().all(|t| !host_has_link(t)),
        "the restarted agent left the TAPs in the pods"
    );
    eprintln!(
        "multus: agent pod restarted; net-b → net-a pings again {:.1} s after the delete",
        t.elapsed().as_secs_f64()
    );

    // Deleting the pods returns the VFs: TAPs home, pool free.
    let t = Instant::now();
    c.kubectl(&["-n", "default", "delete", "pod", "net-a", "net-b"])
        .expect("delete pods");
    c.wait_for(
        "VFs free, TAPs home",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            (c.jsonpath(&["get", "vfpool", "netdev"], "{.status.vfsAllocated}") == "0"
                && taps.iter().all(|t| host_has_link(t)))
            .then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: vfsAllocated {:?}, VFs {:?}",
            c.jsonpath(&["get", "vfpool", "netdev"], "{.status.vfsAllocated}"),
            agent_vfs(&c, &agent)
        )
    });
    eprintln!(
        "multus: pods deleted → VFs free and TAPs back home in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // Uninstall: the chart, then Multus; the node's CNI config is the cluster's own again.
    c.helm(
        &[
            "uninstall",
            RELEASE,
            "--namespace",
            NS,
            "--wait",
            "--timeout",
            "120s",
        ]
        .map(String::from),
    )
    .expect("helm uninstall");
    c.wait_for(
        "the netdev VFs' TAPs gone with their pool",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || taps.iter().all(|t| !host_has_link(t)).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {taps:?} still on the host"));
    let out = c.run(
        "tests/cluster/multus/install.sh",
        &["--uninstall"],
        Duration::from_secs(180),
    );
    assert!(out.ok, "multus uninstall:\n{}\n{}", out.stdout, out.stderr);
    assert!(!conf.exists(), "Multus removed its config");
    eprintln!(
        "multus: all passed in {:.1} s",
        t_all.elapsed().as_secs_f64()
    );
}

/// The VFs as the agent's control socket lists them, or `None` while it does not answer.
fn agent_vfs_try(c: &LocalCluster, agent: &std::path::Path) -> Option<Vec<Value>> {
    let run_dir = c.dir().join("emu-sriov");
    let out = c.run(
        &agent.to_string_lossy(),
        &[
            "list",
            "-o",
            "json",
            "--run-dir",
            &run_dir.to_string_lossy(),
        ],
        Duration::from_secs(10),
    );
    if !out.ok {
        return None;
    }
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    v["vfs"].as_array().cloned()
}
