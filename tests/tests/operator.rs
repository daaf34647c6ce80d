//! The operator against a real kube-apiserver + etcd (tests/cluster), as a real process:
//! placement by selector, relabels and priority; VfNetwork → NAD; a restart that writes
//! nothing; leader election with fail-over.
//!
//! The tests share one API server and run one at a time (they measure the operator's writes,
//! which another test's objects would disturb); each removes what it created.

use emu_sriov_crds::{
    NetworkAttachmentDefinition, NodeState, VfNetwork, VfPool, RESOURCE_NAME_ANNOTATION,
};
use emu_sriov_tests::agent::{agent_bin, Agent};
use emu_sriov_tests::k8s::{self, eventually, ControlPlane};
use emu_sriov_tests::operator::Operator;
use emu_sriov_tests::proc::RunDir;
use emu_sriov_tests::simagent;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn setup(tag: &str) -> (&'static ControlPlane, Client, RunDir) {
    let cp = ControlPlane::shared();
    let client = cp.client();
    let mut crds = emu_sriov_crds::crds();
    crds.push(k8s::nad_crd());
    k8s::install_crds(&client, crds)
        .await
        .expect("CRDs install");
    (cp, client, RunDir::new(tag).expect("run dir"))
}

fn pool(name: &str, body: Value) -> VfPool {
    let mut v = json!({
        "apiVersion": "emu.sriov/v1alpha1",
        "kind": "VfPool",
        "metadata": {"name": name},
        "spec": body,
    });
    // Defaults the API server would fill are filled by serde here as well.
    serde_json::from_value(v.take()).expect("a valid VfPool")
}

async fn node_state(client: &Client, name: &str) -> Option<NodeState> {
    Api::<NodeState>::all(client.clone())
        .get_opt(name)
        .await
        .expect("get NodeState")
}

fn pools_of(ns: &NodeState) -> Vec<(String, Vec<(String, u32)>)> {
    ns.spec
        .pools
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.pfs.iter().map(|pf| (pf.name.clone(), pf.vfs)).collect(),
            )
        })
        .collect()
}

async fn set_labels(client: &Client, node: &str, labels: Value) {
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .expect("relabel node");
}

async fn cleanup(client: &Client, pools: &[&str], nodes: &[&str]) {
    let dp = DeleteParams::default();
    for p in pools {
        let _ = Api::<VfPool>::all(client.clone()).delete(p, &dp).await;
    }
    for n in nodes {
        let _ = Api::<Node>::all(client.clone()).delete(n, &dp).await;
        let _ = Api::<NodeState>::all(client.clone()).delete(n, &dp).await;
    }
}

fn condition<'a>(
    conds: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conds.iter().find(|c| c.type_ == t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_place_node_states_by_selector_and_follow_relabels_and_priority() {
    let _serial = SERIAL.lock().await;
    let (cp, client, mut dir) = setup("op-place").await;
    let (a, b) = ("place-a", "place-b");
    cleanup(&client, &["place", "prio-low", "prio-high"], &[a, b]).await;
    k8s::create_node(&client, a, &[("emu.test/place", "on")])
        .await
        .expect("create node");
    k8s::create_node(&client, b, &[])
        .await
        .expect("create node");
    let _op = Operator::start(
        cp.kubeconfig_path(),
        "place",
        dir.path(),
        &["--lease-namespace", "default", "--lease-name", "op-place"],
    )
    .expect("operator starts");

    let pools = Api::<VfPool>::all(client.clone());
    pools
        .create(
            &PostParams::default(),
            &pool(
                "place",
                json!({"model": "igbvf", "vfsPerPf": 3,
                       "nodeSelector": {"matchLabels": {"emu.test/place": "on"}}}),
            ),
        )
        .await
        .expect("create pool");

    // Only the matching node gets a NodeState, owned by its Node.
    let ns_a = eventually("NodeState place-a", Duration::from_secs(20), || async {
        node_state(&client, a).await
    })
    .await;
    assert_eq!(
        pools_of(&ns_a),
        [("place".to_owned(), vec![("igb0".to_owned(), 3)])]
    );
    let owner = &ns_a.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", a));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        node_state(&client, b).await.is_none(),
        "place-b does not match"
    );

    // Relabel: the pool moves from a to b. a's NodeState is emptied, then deleted (no agent
    // runs anything there).
    set_labels(&client, a, json!({"emu.test/place": null})).await;
    set_labels(&client, b, json!({"emu.test/place": "on"})).await;
    let ns_b = eventually("NodeState place-b", Duration::from_secs(20), || async {
        node_state(&client, b).await
    })
    .await;
    assert_eq!(pools_of(&ns_b)[0].0, "place");
    eventually(
        "place-a's NodeState deleted",
        Duration::from_secs(20),
        || async { node_state(&client, a).await.is_none().then_some(()) },
    )
    .await;

    // Status: one matched node, not ready until its agent reports.
    let st = eventually("pool status", Duration::from_secs(20), || async {
        let p = pools.get("place").await.ok()?;
        p.status.filter(|s| s.matched_nodes == 1)
    })
    .await;
    assert_eq!(st.ready_nodes, 0);
    let ready = condition(&st.conditions, "Ready").expect("Ready condition");
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("waiting for place-b"),
        "{}",
        ready.message
    );
    // A (simulated) agent reports the spec applied: the pool becomes Ready.
    let states = Api::<NodeState>::all(client.clone());
    simagent::report(&states, &ns_b)
        .await
        .expect("agent status");
    let st = eventually("pool ready", Duration::from_secs(20), || async {
        let p = pools.get("place").await.ok()?;
        p.status.filter(|s| s.ready_nodes == 1)
    })
    .await;
    assert_eq!(st.vfs_total, 3);

    // Two pools for one resource on node b: the lower priority value serves it.
    for (name, prio, model) in [("prio-low", 50, "igbvf"), ("prio-high", 10, "iavf")] {
        pools
            .create(
                &PostParams::default(),
                &pool(
                    name,
                    json!({"model": model, "priority": prio, "vfsPerPf": 2,
                           "resourceName": "emu.sriov/vf-prio",
                           "nodeSelector": {"matchLabels": {"emu.test/place": "on"}}}),
                ),
            )
            .await
            .expect("create pool");
    }
    let ns_b = eventually("prio-high on place-b", Duration::from_secs(20), || async {
        let ns = node_state(&client, b).await?;
        ns.spec
            .pools
            .iter()
            .any(|p| p.name == "prio-high")
            .then_some(ns)
    })
    .await;
    let names: Vec<String> = pools_of(&ns_b).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["place", "prio-high"], "prio-low is overridden");
    assert_eq!(pools_of(&ns_b)[1].1, [("avf0".to_owned(), 2)]);
    let low = eventually("prio-low Overlap", Duration::from_secs(20), || async {
        let p = pools.get("prio-low").await.ok()?;
        let s = p.status?;
        condition(&s.conditions, "Overlap").cloned()
    })
    .await;
    assert!(
        low.message
            .contains("pool prio-high serves emu.sriov/vf-prio on place-b"),
        "{}",
        low.message
    );

    // Raising prio-low above prio-high swaps them; PF names of the loser are freed.
    pools
        .patch(
            "prio-low",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"priority": 1}})),
        )
        .await
        .expect("patch priority");
    let ns_b = eventually("prio-low wins", Duration::from_secs(20), || async {
        let ns = node_state(&client, b).await?;
        ns.spec
            .pools
            .iter()
            .any(|p| p.name == "prio-low")
            .then_some(ns)
    })
    .await;
    let names: Vec<String> = pools_of(&ns_b).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["place", "prio-low"]);
    // igb0 belongs to pool place; prio-low gets the next igb name.
    assert_eq!(pools_of(&ns_b)[1].1, [("igb1".to_owned(), 2)]);

    cleanup(&client, &["place", "prio-low", "prio-high"], &[a, b]).await;
    dir.succeed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vfnetwork_creates_updates_and_deletes_its_network_attachment_definition() {
    let _serial = SERIAL.lock().await;
    let (cp, client, mut dir) = setup("op-net").await;
    let ns = k8s::create_namespace(&client, "vfnet")
        .await
        .expect("create namespace");
    let other = k8s::create_namespace(&client, "vfnet-target")
        .await
        .expect("create namespace");
    let _op = Operator::start(
        cp.kubeconfig_path(),
        "net",
        dir.path(),
        &["--lease-namespace", "default", "--lease-name", "op-net"],
    )
    .expect("operator starts");
    let nets = Api::<VfNetwork>::namespaced(client.clone(), &ns);
    let nads = Api::<NetworkAttachmentDefinition>::namespaced(client.clone(), &ns);
    let net: VfNetwork = serde_json::from_value(json!({
        "apiVersion": "emu.sriov/v1alpha1", "kind": "VfNetwork",
        "metadata": {"name": "blue", "namespace": ns},
        "spec": {"resourceName": "emu.sriov/vf", "vlan": 100,
                 "ipam": "{\"type\": \"host-local\", \"subnet\": \"198.18.10.0/24\"}"}
    }))
    .expect("VfNetwork");
    nets.create(&PostParams::default(), &net)
        .await
        .expect("create VfNetwork");

    let config = |nad: &NetworkAttachmentDefinition| -> Value {
        serde_json::from_str(nad.spec.config.as_deref().unwrap_or("{}")).expect("config JSON")
    };
    let nad = eventually("NAD blue", Duration::from_secs(20), || async {
        nads.get_opt("blue").await.ok().flatten()
    })
    .await;
    assert_eq!(
        nad.annotations()
            .get(RESOURCE_NAME_ANNOTATION)
            .map(String::as_str),
        Some("emu.sriov/vf")
    );
    let c = config(&nad);
    assert_eq!(
        (c["type"].as_str(), c["vlan"].as_u64()),
        (Some("emu-sriov-cni"), Some(100))
    );
    assert_eq!(c["ipam"]["subnet"], "198.18.10.0/24");

    // Update: the NAD follows.
    nets.patch(
        "blue",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"vlan": 200}})),
    )
    .await
    .expect("patch");
    eventually("NAD vlan 200", Duration::from_secs(20), || async {
        let nad = nads.get_opt("blue").await.ok().flatten()?;
        (config(&nad)["vlan"] == 200).then_some(())
    })
    .await;

    // Bad IPAM the API cannot check: a condition says what to write; the NAD stays as it was.
    nets.patch(
        "blue",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"vlan": 300, "ipam": "{type: host-local"}})),
    )
    .await
    .expect("patch");
    let ready = eventually(
        "Ready=False InvalidSpec",
        Duration::from_secs(20),
        || async {
            let n = nets.get("blue").await.ok()?;
            let s = n.status?;
            condition(&s.conditions, "Ready")
                .filter(|c| c.reason == "InvalidSpec")
                .cloned()
        },
    )
    .await;
    assert!(
        ready.message.contains("ipam is not valid JSON"),
        "{}",
        ready.message
    );
    let nad = nads.get("blue").await.expect("NAD still there");
    assert_eq!(config(&nad)["vlan"], 200, "the last good NAD is kept");

    // A network rendered into another namespace; deleting it removes that NAD too.
    let red: VfNetwork = serde_json::from_value(json!({
        "apiVersion": "emu.sriov/v1alpha1", "kind": "VfNetwork",
        "metadata": {"name": "red", "namespace": ns},
        "spec": {"resourceName": "emu.sriov/vf", "networkNamespace": other}
    }))
    .expect("VfNetwork");
    nets.create(&PostParams::default(), &red)
        .await
        .expect("create red");
    let other_nads = Api::<NetworkAttachmentDefinition>::namespaced(client.clone(), &other);
    eventually(
        "NAD red in the target namespace",
        Duration::from_secs(20),
        || async { other_nads.get_opt("red").await.ok().flatten() },
    )
    .await;
    for (api, name) in [(&other_nads, "red"), (&nads, "blue")] {
        nets.delete(name, &DeleteParams::default())
            .await
            .expect("delete VfNetwork");
        eventually(
            &format!("NAD {name} deleted"),
            Duration::from_secs(20),
            || async {
                api.get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    }
    eventually(
        "VfNetworks gone (finalizer removed)",
        Duration::from_secs(20),
        || async {
            nets.list(&Default::default())
                .await
                .ok()
                .filter(|l| l.items.is_empty())
                .map(|_| ())
        },
    )
    .await;
    dir.succeed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_converges_with_zero_writes() {
    let _serial = SERIAL.lock().await;
    let (cp, client, mut dir) = setup("op-restart").await;
    let nodes = ["restart-1", "restart-2", "restart-3"];
    cleanup(&client, &["restart"], &nodes).await;
    for n in nodes {
        k8s::create_node(&client, n, &[("emu.test/restart", "on")])
            .await
            .expect("create node");
    }
    let ns = k8s::create_namespace(&client, "restart")
        .await
        .expect("create namespace");
    let lease = ["--lease-namespace", "default", "--lease-name", "op-restart"];
    let mut first = Operator::start(cp.kubeconfig_path(), "restart-1", dir.path(), &lease)
        .expect("operator starts");
    Api::<VfPool>::all(client.clone())
        .create(
            &PostParams::default(),
            &pool(
                "restart",
                json!({"model": "iavf", "vfsPerPf": 8, "queuePairs": 4,
                       "nodeSelector": {"matchLabels": {"emu.test/restart": "on"}}}),
            ),
        )
        .await
        .expect("create pool");
    let net: VfNetwork = serde_json::from_value(json!({
        "apiVersion": "emu.sriov/v1alpha1", "kind": "VfNetwork",
        "metadata": {"name": "green", "namespace": ns},
        "spec": {"resourceName": "emu.sriov/vf", "vlan": 7}
    }))
    .expect("VfNetwork");
    Api::<VfNetwork>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &net)
        .await
        .expect("create network");

    // Simulated agents report; the pool becomes ready on all three nodes.
    let states = Api::<NodeState>::all(client.clone());
    for n in nodes {
        let ns = eventually(
            &format!("NodeState {n}"),
            Duration::from_secs(20),
            || async { node_state(&client, n).await },
        )
        .await;
        simagent::report(&states, &ns).await.expect("agent status");
    }
    eventually("pool ready on 3 nodes", Duration::from_secs(30), || async {
        let p = Api::<VfPool>::all(client.clone())
            .get("restart")
            .await
            .ok()?;
        p.status.filter(|s| s.ready_nodes == 3).map(|_| ())
    })
    .await;
    // Settled: no write for 3 s.
    let mut last = first.writes();
    let mut quiet_since = Instant::now();
    eventually(
        "the first operator to settle",
        Duration::from_secs(30),
        || {
            let w = first.writes();
            if w != last {
                last = w;
                quiet_since = Instant::now();
            }
            let settled = quiet_since.elapsed() > Duration::from_secs(3);
            async move { settled.then_some(()) }
        },
    )
    .await;
    let writes_first = first.writes();
    first.stop();

    let second = Operator::start(cp.kubeconfig_path(), "restart-2", dir.path(), &lease)
        .expect("operator restarts");
    eventually(
        "the restarted operator to lead",
        Duration::from_secs(30),
        || {
            let leading = second.is_leader();
            async move { leading.then_some(()) }
        },
    )
    .await;
    // Let it sync its caches and reconcile every object.
    eventually(
        "reconciles of every controller",
        Duration::from_secs(30),
        || {
            let r = second
                .metric("emu_sriov_operator_reconciles_total")
                .unwrap_or(0.0);
            async move { (r >= (nodes.len() + 2) as f64).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconciles = second
        .metric("emu_sriov_operator_reconciles_total")
        .unwrap_or(0.0);
    eprintln!(
        "first operator: {writes_first} writes to converge; restarted operator: {} reconciles, {} writes",
        reconciles,
        second.writes()
    );
    assert_eq!(
        second.writes(),
        0,
        "a restart on a converged cluster writes nothing; log:\n{}",
        second.log_tail(40)
    );
    drop(second);
    let _ = Api::<VfNetwork>::namespaced(client.clone(), &ns)
        .delete("green", &DeleteParams::default())
        .await;
    cleanup(&client, &["restart"], &nodes).await;
    dir.succeed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_the_other_takes_over_within_the_lease() {
    let _serial = SERIAL.lock().await;
    let (cp, _client, mut dir) = setup("op-leader").await;
    const LEASE_S: u64 = 6;
    let args = [
        "--lease-namespace",
        "default",
        "--lease-name",
        "op-leader",
        "--lease-duration",
        "6",
    ];
    let mut a =
        Operator::start(cp.kubeconfig_path(), "replica-a", dir.path(), &args).expect("replica a");
    let mut b =
        Operator::start(cp.kubeconfig_path(), "replica-b", dir.path(), &args).expect("replica b");
    eventually("one leader", Duration::from_secs(3 * LEASE_S), || {
        let n = [a.is_leader(), b.is_leader()]
            .iter()
            .filter(|l| **l)
            .count();
        async move { (n == 1).then_some(()) }
    })
    .await;
    // Stays one leader for a while (no flapping, never two).
    for _ in 0..10 {
        let n = [a.is_leader(), b.is_leader()]
            .iter()
            .filter(|l| **l)
            .count();
        assert_eq!(n, 1, "exactly one replica leads");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (leader, standby) = if a.is_leader() {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    assert!(standby.wait_http("/readyz", Duration::from_secs(5)).is_ok());
    leader.kill(); // SIGKILL: the lease is not released, it must expire
    let killed = Instant::now();
    eventually(
        "the standby to lead",
        Duration::from_secs(3 * LEASE_S),
        || {
            let leading = standby.is_leader();
            async move { leading.then_some(()) }
        },
    )
    .await;
    let took = killed.elapsed();
    eprintln!("fail-over took {took:?} (lease duration {LEASE_S} s)");
    assert!(
        took <= Duration::from_secs(LEASE_S) + Duration::from_millis(500),
        "the standby took over after {took:?}, more than the {LEASE_S} s lease; log:\n{}",
        standby.log_tail(30)
    );
    dir.succeed();
}

/// The whole cluster half with real processes: a VfPool → the operator renders the node's
/// NodeState → a real agent in cluster mode serves the VFs (sockets on disk) and reports →
/// the pool is Ready with the agent's VF count. Also prints `kubectl get vfpools,nodestates`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_runs_on_a_real_agent_and_becomes_ready() {
    let _serial = SERIAL.lock().await;
    let (cp, client, mut dir) = setup("op-e2e").await;
    let node = "e2e-node";
    cleanup(&client, &["e2e"], &[node]).await;
    k8s::create_node(&client, node, &[("emu.test/e2e", "on")])
        .await
        .expect("create node");
    let _op = Operator::start(
        cp.kubeconfig_path(),
        "e2e",
        dir.path(),
        &["--lease-namespace", "default", "--lease-name", "op-e2e"],
    )
    .expect("operator starts");
    let kc = cp.kubeconfig_path().display().to_string();
    let bin = agent_bin().expect("agent binary");
    let agent = Agent::start_cluster(
        &bin,
        dir.path(),
        &["--kubeconfig", &kc, "--node-name", node],
        Duration::from_secs(60),
    )
    .expect("agent starts");

    let pools = Api::<VfPool>::all(client.clone());
    pools
        .create(
            &PostParams::default(),
            &pool(
                "e2e",
                json!({"model": "igbvf", "vfsPerPf": 3,
                       "nodeSelector": {"matchLabels": {"emu.test/e2e": "on"}}}),
            ),
        )
        .await
        .expect("create pool");
    let st = eventually(
        "pool e2e ready on the real agent",
        Duration::from_secs(60),
        || async {
            let p = pools.get("e2e").await.ok()?;
            p.status.filter(|s| s.ready_nodes == 1)
        },
    )
    .await;
    assert_eq!(
        (st.matched_nodes, st.vfs_total, st.vfs_allocated),
        (1, 3, 0)
    );
    let ns = node_state(&client, node).await.expect("NodeState");
    let status = ns.status.expect("agent status");
    assert_eq!(status.vfs.len(), 3);
    for vf in &status.vfs {
        assert!(
            std::path::Path::new(&vf.socket).exists(),
            "{}: socket {} exists",
            vf.id,
            vf.socket
        );
        assert!(vf.socket.starts_with(&agent.run_dir.display().to_string()));
    }
    let listed: Vec<String> = agent
        .vfs()
        .expect("list")
        .iter()
        .map(|v| v.id.clone())
        .collect();
    let reported: Vec<String> = status.vfs.iter().map(|v| v.id.clone()).collect();
    assert_eq!(listed, reported, "status lists what the agent serves");

    let out = cp.kubectl(["get", "vfpools,nodestates"]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("$ kubectl get vfpools,nodestates\n{text}");
    assert!(text.contains("vfpool.emu.sriov/e2e"), "{text}");
    assert!(text.contains("nodestate.emu.sriov/e2e-node"), "{text}");
    assert!(text.contains("Succeeded"), "{text}");

    // The pool goes: the agent removes its VFs and the operator deletes the NodeState.
    pools
        .delete("e2e", &DeleteParams::default())
        .await
        .expect("delete pool");
    eventually(
        "NodeState deleted after the agent wound down",
        Duration::from_secs(60),
        || async { node_state(&client, node).await.is_none().then_some(()) },
    )
    .await;
    assert!(
        agent.vfs().expect("list").is_empty(),
        "no VF left on the agent"
    );
    drop(agent);
    cleanup(&client, &["e2e"], &[node]).await;
    dir.succeed();
}
