//! End to end on a real one-node cluster (tests/cluster/up.sh: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, containerd + runc, kubelet): the chart installs the
//! operator and the agent from images packed here; a VfPool makes the real kubelet advertise
//! `emu.sriov/vf`; pods get VFs (socket, env), pass frames between two VFs through the agent's
//! switch with the userspace igbvf driver, give the VF back when deleted, churn on one VF
//! without a refused admission; helm upgrade keeps a running pod's VF; helm uninstall leaves no
//! CRs, no sockets and nothing advertised.
//!
//! #[ignore]d in a plain `cargo test` (it starts a whole cluster, ~1-2 min with the programs
//! cached; needs root, rustc and the Go-built programs of tests/cluster/build.sh);
//! tests/run-all.sh runs it explicitly. EMU_E2E_REUSE_CLUSTER=1 tests against a running
//! cluster (up.sh) instead of starting one; EMU_E2E_KEEP_CLUSTER=1 leaves the one it started.

use std::time::{Duration, Instant};

use emu_sriov_tests::cluster::{LocalCluster, NODE};

const NS: &str = "emu-sriov";
const RELEASE: &str = "emu";
const POD_IMAGE: &str = "docker.io/emu-sriov/vf-pod:dev";

fn chart_args(c: &LocalCluster) -> Vec<String> {
    c.chart_args(NS)
}

fn helm(c: &LocalCluster, args: &[String]) -> Result<String, String> {
    c.helm(args)
}

fn jsonpath(c: &LocalCluster, args: &[&str], path: &str) -> String {
    c.jsonpath(args, path)
}

fn allocatable(c: &LocalCluster) -> String {
    jsonpath(
        c,
        &["get", "node", NODE],
        r"{.status.allocatable.emu\.sriov/vf}",
    )
}

fn pool_allocated(c: &LocalCluster, pool: &str) -> String {
    jsonpath(c, &["get", "vfpool", pool], "{.status.vfsAllocated}")
}

fn vf_pod(name: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: emu-vf-pod}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: vf
    image: {POD_IMAGE}
    imagePullPolicy: Never
    args: [{}]
    resources:
      limits: {{emu.sriov/vf: 1}}
"#,
        args.join(", ")
    )
}

fn pod_log(c: &LocalCluster, name: &str) -> String {
    c.kubectl(&["-n", "default", "logs", name])
        .unwrap_or_default()
}

/// Waits until pod `default/name` runs.
fn wait_running(c: &LocalCluster, name: &str, timeout: Duration) -> Duration {
    c.wait_pod_running("default", name, timeout)
}

fn wait_log(c: &LocalCluster, name: &str, needle: &str, timeout: Duration) -> String {
    match c.wait_for(
        &format!("`{needle}` in pod {name}'s log"),
        timeout,
        Duration::from_millis(200),
        || {
            let log = pod_log(c, name);
            (log.contains(needle) || log.contains("error ")).then_some(log)
        },
    ) {
        Ok((log, _)) if log.contains(needle) => log,
        Ok((log, _)) => panic!("pod {name} failed:\n{log}"),
        Err(e) => panic!("{e}; log:\n{}", pod_log(c, name)),
    }
}

fn delete_pods(c: &LocalCluster, names: &[&str], wait: bool) {
    let mut a = vec!["-n", "default", "delete", "pod", "--ignore-not-found"];
    a.extend_from_slice(names);
    if !wait {
        a.push("--wait=false");
    }
    c.kubectl(&a).expect("delete pods");
}

#[test]
#[ignore = "starts a whole cluster (needs root and tests/cluster/build.sh); run by tests/run-all.sh"]
fn chart_on_a_real_cluster() {
    let t_all = Instant::now();
    let c = LocalCluster::up().expect("local cluster");
    eprintln!(
        "e2e: cluster up in {:.1} s (state {})",
        c.startup.as_secs_f64(),
        c.dir().display()
    );

    // Images from this workspace's binaries (debug builds: the ones `cargo test` made).
    let t = Instant::now();
    c.import_chart_images().expect("chart images");
    let pod_bin = env!("CARGO_BIN_EXE_emu-vf-pod");
    let f = |src: &std::path::Path, dst: &str| format!("{}:{dst}", src.display());
    let pb = f(std::path::Path::new(pod_bin), "/usr/bin/emu-vf-pod");
    c.import_image(
        POD_IMAGE,
        &[
            "--file",
            &pb,
            "--strip",
            "--with-libs",
            "--entrypoint",
            "/usr/bin/emu-vf-pod",
        ],
    )
    .expect("pod image");
    eprintln!(
        "e2e: 4 images packed and imported in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // helm install → operator Ready, agent Running.
    let t = Instant::now();
    if let Err(e) = c.helm_install(RELEASE, NS, &[]) {
        panic!("{e}");
    }
    let ready = jsonpath(
        &c,
        &["-n", NS, "get", "deploy", "emu-emu-sriov-operator"],
        "{.status.readyReplicas}",
    );
    assert_eq!(ready, "1", "operator Deployment ready replicas");
    let agent_phase = jsonpath(
        &c,
        &[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=agent",
        ],
        "{.items[*].status.phase}",
    );
    assert_eq!(agent_phase, "Running", "agent pod phase");
    eprintln!(
        "e2e: helm install → operator Ready, agent Running in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // A VfPool → the real kubelet advertises emu.sriov/vf.
    let t = Instant::now();
    c.apply(
        "apiVersion: emu.sriov/v1alpha1\nkind: VfPool\nmetadata: {name: e2e}\nspec: {model: igbvf, vfsPerPf: 4}\n",
    )
    .expect("VfPool");
    let (_, took) = c
        .wait_for(
            "node allocatable emu.sriov/vf: 4",
            Duration::from_secs(90),
            Duration::from_millis(100),
            || (allocatable(&c) == "4").then_some(()),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}; allocatable {:?}\nnodestate:\n{}\nagent:\n{}",
                allocatable(&c),
                c.kubectl(&["get", "nodestates", "-o", "yaml"])
                    .unwrap_or_default(),
                c.kubectl(&[
                    "-n",
                    NS,
                    "logs",
                    "-l",
                    "app.kubernetes.io/component=agent",
                    "--tail",
                    "40"
                ])
                .unwrap_or_default()
            )
        });
    eprintln!(
        "e2e: VfPool applied → allocatable emu.sriov/vf: 4 in {:.2} s",
        took.as_secs_f64()
    );
    let _ = t;
    // The agents' admission policy: the agent's service account without its pod's node
    // binding (impersonated here) may not write the node's NodeState status; the real agent
    // (bound token) does, which the pool status below depends on.
    let policies = c
        .kubectl(&["get", "validatingadmissionpolicies", "-o", "name"])
        .unwrap_or_default();
    assert!(
        policies.contains("emu-emu-sriov-agent-own-node"),
        "the agents' policy is installed: {policies}"
    );
    let agent_sa = format!("--as=system:serviceaccount:{NS}:emu-emu-sriov-agent");
    let denied = c.kubectl(&[
        "patch",
        "nodestate",
        NODE,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{}}"#,
        "--dry-run=server",
        &agent_sa,
    ]);
    match denied {
        Err(e) => assert!(
            e.contains("may write only the status of its own node"),
            "unexpected refusal: {e}"
        ),
        Ok(out) => panic!("an unbound agent identity wrote the NodeState status: {out}"),
    }
    eprintln!("e2e: the agents' admission policy refuses an agent identity not bound to the node");

    // Two pods, one VF each: socket and env inside, frames from one VF to the other.
    let t = Instant::now();
    c.apply(&vf_pod("rx", &["recv", "500", "60"]))
        .expect("rx pod");
    let started = wait_running(&c, "rx", Duration::from_secs(60));
    eprintln!(
        "e2e: pod with a VF Running in {:.2} s",
        started.as_secs_f64()
    );
    let log = wait_log(&c, "rx", "mac ", Duration::from_secs(30));
    assert!(
        log.contains("env EMU_SRIOV_VF_VF="),
        "VF env var in the pod:\n{log}"
    );
    assert!(
        log.contains("env EMU_SRIOV_VF_VF_INFO="),
        "VF info env var in the pod:\n{log}"
    );
    let sock = log
        .lines()
        .find_map(|l| l.strip_prefix("socket "))
        .unwrap_or_else(|| panic!("no socket in the pod:\n{log}"));
    assert!(
        sock.starts_with("/var/run/emu-sriov/") && sock.ends_with("/vf.sock"),
        "socket path {sock}"
    );
    let mac = log
        .lines()
        .find_map(|l| l.strip_prefix("mac "))
        .expect("rx MAC")
        .trim()
        .to_owned();
    c.apply(&vf_pod("tx", &["send", &mac, "500", "60"]))
        .expect("tx pod");
    wait_running(&c, "tx", Duration::from_secs(60));
    wait_log(&c, "rx", "received 500", Duration::from_secs(60));
    eprintln!(
        "e2e: 500 frames pod tx → pod rx through the agent's switch ({:.1} s from the first pod)",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        c.wait_for(
            "vfsAllocated 2",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || { (pool_allocated(&c, "e2e") == "2").then_some(()) }
        )
        .map(|_| ()),
        Ok(()),
        "the pool reports both VFs allocated"
    );

    // Deleting the pods gives the VFs back.
    let t = Instant::now();
    delete_pods(&c, &["rx", "tx"], true);
    c.wait_for(
        "vfsAllocated 0",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || (pool_allocated(&c, "e2e") == "0").then_some(()),
    )
    .expect("VFs returned after the pods were deleted");
    eprintln!(
        "e2e: pods deleted → VFs free again in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // Churn on one VF: the pool shrinks to one VF; delete + create at once, 20 times.
    c.kubectl(&[
        "patch",
        "vfpool",
        "e2e",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"vfsPerPf":1}}"#,
    ])
    .expect("shrink the pool");
    c.wait_for(
        "allocatable 1",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || (allocatable(&c) == "1").then_some(()),
    )
    .expect("allocatable 1 after shrinking");
    let t = Instant::now();
    let mut prev: Option<String> = None;
    for i in 0..20 {
        let name = format!("churn-{i}");
        if let Some(p) = &prev {
            delete_pods(&c, &[p.as_str()], false);
        }
        c.apply(&vf_pod(&name, &["info"])).expect("churn pod");
        wait_running(&c, &name, Duration::from_secs(90));
        wait_log(&c, &name, "ready", Duration::from_secs(30));
        prev = Some(name);
    }
    eprintln!(
        "e2e: 20 pods churned on one VF, every one admitted, in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The kubelet's choice is authoritative: the agent never refused an Allocate for a VF it
    // still counted as held (it asks pod-resources again and scrubs first).
    let agent_log = c
        .kubectl(&[
            "-n",
            NS,
            "logs",
            "-l",
            "app.kubernetes.io/component=agent",
            "--tail",
            "-1",
        ])
        .expect("agent log");
    let refused = agent_log
        .lines()
        .filter(|l| l.contains("Allocate refused"))
        .count();
    let allocated = agent_log
        .lines()
        .filter(|l| l.contains(" allocated"))
        .count();
    let scrubbed = agent_log
        .lines()
        .filter(|l| l.contains("released VF scrubbed"))
        .count();
    eprintln!("e2e: agent log: {allocated} Allocate answers, {scrubbed} released VFs scrubbed, {refused} refusals");
    assert_eq!(refused, 0, "the agent refused Allocate calls:\n{agent_log}");
    assert!(
        allocated >= 20,
        "20 churn Allocates in the agent's log:\n{agent_log}"
    );

    // helm upgrade keeps the running pod's VF.
    let last = prev.expect("a churn pod");
    let before = pod_log(&c, &last);
    let mut args: Vec<String> = vec!["upgrade".into(), RELEASE.into()];
    args.extend(chart_args(&c));
    args.extend(
        [
            "--set",
            "agent.logLevel=debug",
            "--wait",
            "--timeout",
            "180s",
        ]
        .map(String::from),
    );
    helm(&c, &args).expect("helm upgrade");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        jsonpath(
            &c,
            &["-n", "default", "get", "pod", &last],
            "{.status.phase}"
        ),
        "Running",
        "pod after the upgrade"
    );
    assert_eq!(
        pool_allocated(&c, "e2e"),
        "1",
        "the pod keeps its VF across the upgrade"
    );
    let sock = before
        .lines()
        .find_map(|l| l.strip_prefix("socket /var/run/emu-sriov/"))
        .and_then(|s| s.split('/').next())
        .expect("churn pod's VF")
        .to_owned();
    assert!(
        c.dir()
            .join("emu-sriov/vfs")
            .join(&sock)
            .join("vf.sock")
            .exists(),
        "VF {sock}'s socket after the upgrade"
    );
    eprintln!("e2e: helm upgrade (agent restarted) kept pod {last}'s VF {sock}");
    delete_pods(&c, &[last.as_str()], true);

    // helm uninstall: no CRs, no sockets, nothing advertised.
    let t = Instant::now();
    helm(
        &c,
        &[
            "uninstall",
            RELEASE,
            "--namespace",
            NS,
            "--wait",
            "--timeout",
            "180s",
        ]
        .map(String::from),
    )
    .expect("helm uninstall");
    for kind in ["vfpools", "nodestates", "vfnetworks"] {
        let left = c
            .kubectl(&["get", kind, "-A", "-o", "name"])
            .expect("list CRs");
        assert_eq!(left.trim(), "", "{kind} left after uninstall");
    }
    c.wait_for(
        "allocatable 0",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || matches!(allocatable(&c).as_str(), "0" | "").then_some(()),
    )
    .expect("nothing advertised after uninstall");
    let plugin_socks: Vec<_> = std::fs::read_dir("/var/lib/kubelet/device-plugins")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n != "kubelet.sock" && n != "kubelet_internal_checkpoint" && n != "DEPRECATION"
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        plugin_socks.is_empty(),
        "device-plugin sockets left: {plugin_socks:?}"
    );
    let vf_socks: Vec<_> = walk_sockets(&c.dir().join("emu-sriov"));
    assert!(vf_socks.is_empty(), "VF sockets left: {vf_socks:?}");
    eprintln!(
        "e2e: helm uninstall → no CRs, no sockets, allocatable 0 in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    eprintln!("e2e: total {:.1} s", t_all.elapsed().as_secs_f64());
}

fn walk_sockets(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::FileTypeExt as _;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            out.extend(walk_sockets(&e.path()));
        } else if ft.is_socket() {
            out.push(e.path());
        }
    }
    out
}
