//! The real agent in cluster mode (`run --kubeconfig … --node-name …`) against a real
//! kube-apiserver + etcd (tests/cluster) and the fake kubelet (real device-plugin gRPC over unix
//! sockets): it runs what its NodeState asks for, grows without disturbing VFs in use, keeps an
//! allocated VF it was asked to remove until the kubelet releases it, reports all of it in the
//! NodeState status (and writes nothing when nothing changed), and survives a NodeState it
//! cannot apply.
//!
//! Needs the binaries of `tests/cluster/build.sh` (or `$EMU_K8S_BIN`); fails saying so without.

use emu_device_plugin::api::v1beta1::{Empty, ListAndWatchResponse};
use emu_device_plugin::api::{HEALTHY, UNHEALTHY};
use emu_sriov_crds::{
    conditions, NodePf, NodePool, NodeState, NodeStateSpec, NodeStateStatus, SyncStatus, VfModel,
};
use emu_sriov_tests::fake_kubelet::{alloc, health, FakeKubelet};
use emu_sriov_tests::k8s::{self, eventually, ControlPlane};
use emu_sriov_tests::traffic::Flow;
use emu_sriov_tests::{agent_bin, Agent, RunDir};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tonic::Streaming;

const VF: &str = "emu.sriov/vf";
const VF_SOCK: &str = "emu-sriov-vf.sock";
const WAIT: Duration = Duration::from_secs(20);

/// The tests share one API server; each uses its own node name, and they run one at a time
/// (two agents and the API server on two cores make timings noisy).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pool(name: &str, generation: i64, pfs: &[(&str, u32)]) -> NodePool {
    NodePool {
        name: name.into(),
        generation,
        model: VfModel::Igbvf,
        queue_pairs: 1,
        resource_name: VF.into(),
        device_type: Default::default(),
        vf: Default::default(),
        dataplane: Default::default(),
        uplink: None,
        socket_owner: None,
        pfs: pfs
            .iter()
            .map(|(n, v)| NodePf {
                name: (*n).into(),
                vfs: *v,
            })
            .collect(),
    }
}

async fn create(api: &Api<NodeState>, node: &str, pools: Vec<NodePool>) -> NodeState {
    let ns = NodeState {
        metadata: ObjectMeta {
            name: Some(node.into()),
            ..ObjectMeta::default()
        },
        spec: NodeStateSpec { pools },
        status: None,
    };
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create NodeState {node}: {e}"))
}

/// Replaces the spec's pools (a merge patch of `spec`, as an operator's apply would).
async fn set_pools(api: &Api<NodeState>, node: &str, pools: Vec<NodePool>) -> i64 {
    let ns = api
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "pools": pools } })),
        )
        .await
        .unwrap_or_else(|e| panic!("patch NodeState {node}: {e}"));
    ns.metadata.generation.expect("generation")
}

/// The status once it reports generation `gen` and satisfies `pred`.
async fn status_where(
    api: &Api<NodeState>,
    node: &str,
    gen: i64,
    what: &str,
    pred: impl Fn(&NodeStateStatus) -> bool,
) -> NodeStateStatus {
    eventually(what, WAIT, || async {
        let ns = api.get(node).await.ok()?;
        let st = ns.status?;
        (st.observed_generation == Some(gen) && pred(&st)).then_some(st)
    })
    .await
}

fn condition<'a>(st: &'a NodeStateStatus, ty: &str) -> (&'a str, &'a str) {
    st.conditions
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| (c.status.as_str(), c.message.as_str()))
        .unwrap_or(("missing", ""))
}

fn ids(st: &NodeStateStatus) -> Vec<&str> {
    st.vfs.iter().map(|v| v.id.as_str()).collect()
}

/// Next ListAndWatch list satisfying `pred`.
async fn next_list(
    s: &mut Streaming<ListAndWatchResponse>,
    what: &str,
    pred: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(end, s.message())
            .await
            .unwrap_or_else(|_| panic!("no ListAndWatch update with {what} in time"))
            .expect("ListAndWatch stream failed")
            .expect("ListAndWatch stream ended");
        let h = health(&msg);
        if pred(&h) {
            return h;
        }
    }
}

fn start_agent(dir: &Path, cp: &ControlPlane, node: &str, plugin: bool) -> Agent {
    let bin = agent_bin().expect("agent binary");
    let kc = cp.kubeconfig_path().display().to_string();
    let dp = dir.join("dp").display().to_string();
    let pr = dir.join("pr/kubelet.sock").display().to_string();
    let mut args = vec!["--kubeconfig", &kc, "--node-name", node];
    if plugin {
        args.extend([
            "--device-plugin",
            "--device-plugin-dir",
            &dp,
            "--pod-resources-socket",
            &pr,
        ]);
    }
    Agent::start_cluster(&bin, dir, &args, Duration::from_secs(60)).expect("agent starts")
}

/// Spec applied and reported; growing a PF serves new VFs (sockets, ListAndWatch) while traffic
/// between two VFs in use goes on untouched; shrinking under an allocated VF keeps it
/// (`pendingRemoval`, advertised Unhealthy) until the kubelet releases it; a resync with
/// nothing new writes no status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grows_and_shrinks_without_a_drain() {
    let _serial = SERIAL.lock().await;
    let cp = ControlPlane::shared();
    let client = cp.client();
    k8s::install_crds(&client, emu_sriov_crds::crds())
        .await
        .expect("install CRDs");
    let node = format!("acm-grow-{}", std::process::id());
    let api: Api<NodeState> = Api::all(client.clone());
    let ns = create(&api, &node, vec![pool("p1", 1, &[("igb0", 2)])]).await;
    let gen = ns.metadata.generation.expect("generation");

    let mut dir = RunDir::new("acm").unwrap();
    let p = dir.path().to_owned();
    let kubelet = FakeKubelet::start(&p.join("dp"), &p.join("pr/kubelet.sock")).unwrap();
    let agent = start_agent(&p, cp, &node, true);

    // 1. The spec runs and the status lists it, with the MACs `list` shows.
    let st = status_where(&api, &node, gen, "2 VFs reported", |s| {
        s.vfs_total == 2 && s.sync_status == Some(SyncStatus::Succeeded)
    })
    .await;
    assert_eq!(ids(&st), ["igb0-vf0", "igb0-vf1"]);
    assert_eq!(condition(&st, conditions::READY).0, "True");
    let listed = agent.vfs().unwrap();
    for (v, l) in st.vfs.iter().zip(&listed) {
        assert_eq!(
            (v.id.as_str(), v.mac.as_str()),
            (l.id.as_str(), l.mac.as_str())
        );
        assert!(Path::new(&v.socket).exists(), "{}", v.socket);
        assert!(v.mac.starts_with("02:") && v.resource_name == VF && v.pool == "p1");
    }
    assert_eq!(st.pools[0].generation, 1);

    // 2. The device plugin serves the pool's resource.
    let regs = kubelet.wait_registrations(1, WAIT).await.unwrap();
    assert_eq!(regs[0].request.resource_name, VF);
    let mut c = kubelet.plugin_client(VF_SOCK).await.unwrap();
    let mut law = c.list_and_watch(Empty {}).await.unwrap().into_inner();
    next_list(&mut law, "2 healthy VFs", |h| {
        h.len() == 2 && h.values().all(|v| v == HEALTHY)
    })
    .await;

    // 3. Traffic between the two VFs, then grow igb0 to 4 VFs: the new ones appear while the
    //    flow keeps going on the same attachments (no reset, counters not zeroed).
    let sockets: Vec<_> = listed.iter().map(|v| v.socket.clone()).collect();
    let mut flow = tokio::task::block_in_place(|| Flow::new(&sockets[0], &sockets[1]))
        .expect("attach vf0 and vf1");
    tokio::task::block_in_place(|| flow.pump(2000, WAIT)).expect("traffic before growing");
    let gen = set_pools(&api, &node, vec![pool("p1", 2, &[("igb0", 4)])]).await;
    next_list(&mut law, "4 healthy VFs", |h| {
        h.len() == 4 && h.values().all(|v| v == HEALTHY)
    })
    .await;
    tokio::task::block_in_place(|| flow.pump(2000, WAIT)).expect("traffic after growing");
    let st = status_where(&api, &node, gen, "4 VFs reported", |s| {
        s.vfs_total == 4 && s.pools[0].generation == 2
    })
    .await;
    assert_eq!(ids(&st), ["igb0-vf0", "igb0-vf1", "igb0-vf2", "igb0-vf3"]);
    for v in &st.vfs {
        assert!(Path::new(&v.socket).exists(), "{}", v.socket);
    }
    let vf0 = agent.vf("igb0-vf0").unwrap();
    assert_eq!(vf0.state, "attached");
    assert!(
        vf0.counter("tx_packets").unwrap() >= 4000,
        "vf0's counters were not reset: {:?}",
        vf0.counters
    );

    // 4. A pod gets igb0-vf3.
    c.allocate(alloc(&["igb0-vf3"]))
        .await
        .expect("Allocate vf3");
    kubelet.set_pods(&[("pod-a", VF, &["igb0-vf3"])]);
    status_where(&api, &node, gen, "vf3 allocated", |s| {
        s.vfs_allocated == 1 && s.vfs.iter().any(|v| v.id == "igb0-vf3" && v.allocated)
    })
    .await;
    // Let the plugin's pod-resources poll (every second) see the pod: an allocation never
    // seen there is only released after a 30 s grace (a pod that failed admission).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // 5. Shrink to 2: vf2 (free) goes at once; vf3 (allocated) stays, pending removal and
    //    advertised Unhealthy so that no new pod gets it.
    let vf2_socket = st.vfs[2].socket.clone();
    let vf3_socket = st.vfs[3].socket.clone();
    let gen = set_pools(&api, &node, vec![pool("p1", 3, &[("igb0", 2)])]).await;
    let h = next_list(&mut law, "vf2 withdrawn, vf3 held back", |h| {
        h.len() == 3 && h.get("igb0-vf3").map(String::as_str) == Some(UNHEALTHY)
    })
    .await;
    assert_eq!(h["igb0-vf0"], HEALTHY);
    let st = status_where(&api, &node, gen, "vf3 pending removal", |s| {
        s.vfs_total == 3 && s.sync_status == Some(SyncStatus::InProgress)
    })
    .await;
    assert!(!Path::new(&vf2_socket).exists(), "vf2's socket is gone");
    assert!(Path::new(&vf3_socket).exists(), "vf3 still serves its pod");
    let vf3 = st.vfs.iter().find(|v| v.id == "igb0-vf3").unwrap();
    assert!(vf3.pending_removal && vf3.allocated);
    let (pending, msg) = condition(&st, conditions::PENDING);
    assert_eq!(pending, "True");
    assert!(msg.contains("igb0-vf3"), "{msg}");
    assert_eq!(condition(&st, conditions::READY).0, "False");
    assert!(st.pools[0]
        .pending
        .as_deref()
        .unwrap_or("")
        .contains("pending removal"));
    // The kubelet's Allocate is refused for the withdrawn VF.
    assert!(c.allocate(alloc(&["igb0-vf2"])).await.is_err());

    // 6. The pod goes: vf3 is scrubbed, then removed; everything settles.
    kubelet.set_pods(&[]);
    let st = status_where(&api, &node, gen, "vf3 removed after release", |s| {
        s.vfs_total == 2 && s.sync_status == Some(SyncStatus::Succeeded)
    })
    .await;
    assert_eq!(ids(&st), ["igb0-vf0", "igb0-vf1"]);
    assert!(!Path::new(&vf3_socket).exists(), "vf3's socket is gone");
    assert_eq!(condition(&st, conditions::READY).0, "True");
    assert_eq!(condition(&st, conditions::PENDING).0, "False");
    assert_eq!(st.pools[0].generation, 3);
    next_list(&mut law, "vf3 withdrawn", |h| h.len() == 2).await;
    tokio::task::block_in_place(|| flow.pump(2000, WAIT)).expect("traffic after shrinking");

    // 7. Nothing changes: no status write across more than one resync period.
    let rv = api.get(&node).await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let again = api.get(&node).await.unwrap();
    assert_eq!(
        again.metadata.resource_version, rv,
        "a no-op resync wrote the status"
    );

    drop(flow);
    drop(agent);
    api.delete(&node, &Default::default()).await.ok();
    dir.succeed();
}

/// A NodeState the agent cannot apply is reported (Degraded, with what to fix) and never
/// crashes the agent; a missing one runs nothing until it appears; a restart keeps MACs and
/// writes nothing; a removed pool's VFs go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_node_state_is_reported_not_fatal() {
    let _serial = SERIAL.lock().await;
    let cp = ControlPlane::shared();
    let client = cp.client();
    k8s::install_crds(&client, emu_sriov_crds::crds())
        .await
        .expect("install CRDs");
    let node = format!("acm-bad-{}", std::process::id());
    let api: Api<NodeState> = Api::all(client.clone());

    let mut dir = RunDir::new("acm-bad").unwrap();
    let mut agent = start_agent(dir.path(), cp, &node, false);
    // No NodeState: nothing runs, the agent lives.
    tokio::time::sleep(Duration::from_secs(1)).await;
    agent.alive().expect("agent alive without a NodeState");
    assert!(agent.vfs().unwrap().is_empty());

    // More VFs than an igbvf PF has, and a core this machine does not give the agent.
    let mut bad = pool("bad", 1, &[("igb5", 9)]);
    bad.dataplane.cores = vec![4000];
    let ns = create(&api, &node, vec![bad, pool("good", 1, &[("igb6", 1)])]).await;
    let gen = ns.metadata.generation.unwrap();
    let st = status_where(&api, &node, gen, "Degraded reported", |s| {
        s.sync_status == Some(SyncStatus::Failed)
    })
    .await;
    let (degraded, msg) = condition(&st, conditions::DEGRADED);
    assert_eq!(degraded, "True");
    for needle in ["pool bad", "igbvf PF carries at most 7", "CPU 4000"] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    assert_eq!(st.last_sync_error.as_deref(), Some(msg));
    // The valid pool runs anyway.
    assert_eq!(ids(&st), ["igb6-vf0"]);
    agent.alive().expect("agent alive with a bad pool");

    // Fixed: Ready; then the pool removed: its VF goes.
    let gen = set_pools(&api, &node, vec![pool("good", 1, &[("igb6", 1)])]).await;
    let st = status_where(&api, &node, gen, "Ready after the fix", |s| {
        s.sync_status == Some(SyncStatus::Succeeded)
    })
    .await;
    assert_eq!(condition(&st, conditions::DEGRADED).0, "False");
    let socket = st.vfs[0].socket.clone();

    // A restart keeps the VF's id, MAC and socket (RUN_DIR/state.json) and writes no status.
    let rv = api.get(&node).await.unwrap().metadata.resource_version;
    agent
        .stop_with(libc::SIGTERM, Duration::from_secs(10))
        .expect("agent stops");
    assert!(!Path::new(&socket).exists());
    agent
        .restart(Duration::from_secs(60))
        .expect("agent restarts");
    let vf = eventually("the VF back after the restart", WAIT, || async {
        agent.vfs().ok()?.into_iter().next()
    })
    .await;
    assert_eq!(
        (
            vf.id.as_str(),
            vf.mac.as_str(),
            vf.socket.display().to_string()
        ),
        (
            st.vfs[0].id.as_str(),
            st.vfs[0].mac.as_str(),
            socket.clone()
        )
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        api.get(&node).await.unwrap().metadata.resource_version,
        rv,
        "the restarted agent rewrote an unchanged status"
    );
    let gen = set_pools(&api, &node, vec![]).await;
    status_where(&api, &node, gen, "no VFs", |s| s.vfs_total == 0).await;
    assert!(!Path::new(&socket).exists());
    agent.alive().expect("agent alive");
    assert!(agent.vfs().unwrap().is_empty());

    drop(agent);
    api.delete(&node, &Default::default()).await.ok();
    dir.succeed();
}
