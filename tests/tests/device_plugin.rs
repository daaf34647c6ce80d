//! Device plugin against the fake kubelet (real gRPC over unix sockets), plus the real agent
//! binary for id/MAC stability across restarts.

use emu_device_plugin::api::v1beta1::{
    ContainerPreferredAllocationRequest, Empty, ListAndWatchResponse, PreferredAllocationRequest,
};
use emu_device_plugin::api::{HEALTHY, UNHEALTHY};
use emu_device_plugin::{run, DevicePluginConfig, DevicePluginRunner};
use emu_sriov_tests::fake_kubelet::{alloc, health, FakeInventory, FakeKubelet};
use emu_sriov_tests::{agent_bin, Agent, RunDir};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Code, Streaming};

const VF: &str = "emu.sriov/vf";
const FAST: &str = "emu.sriov/vf-fast";
const VF_SOCK: &str = "emu-sriov-vf.sock";
const FAST_SOCK: &str = "emu-sriov-vf-fast.sock";

struct Setup {
    dir: RunDir,
    kubelet: FakeKubelet,
    inv: Arc<FakeInventory>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), emu_device_plugin::PluginError>>>,
}

impl Setup {
    async fn new(tag: &str) -> Setup {
        let dir = RunDir::new(tag).unwrap();
        let p = dir.path().to_owned();
        let kubelet = FakeKubelet::start(&p.join("dp"), &p.join("pr/kubelet.sock")).unwrap();
        let inv = FakeInventory::new(&p.join("run"), &[("igb0", 4, VF), ("igb1", 2, FAST)]);
        let config = DevicePluginConfig {
            device_plugin_dir: p.join("dp"),
            pod_resources_socket: p.join("pr/kubelet.sock"),
            cdi_dir: Some(p.join("cdi")),
            resources: vec![VF.into(), FAST.into()],
            inventory_poll: Duration::from_millis(50),
            kubelet_watch: Duration::from_millis(50),
            pod_resources_poll: Duration::from_millis(100),
            release_grace: Duration::from_secs(30),
        };
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(run(config, inv.clone(), async {
            let _ = rx.await;
        }));
        kubelet
            .wait_registrations(2, Duration::from_secs(5))
            .await
            .unwrap();
        Setup {
            dir,
            kubelet,
            inv,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    async fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        assert!(
            !self.kubelet.dir.join(VF_SOCK).exists(),
            "our socket is removed on shutdown"
        );
        self.dir.succeed();
    }
}

/// Next stream message satisfying `pred`, within `timeout`.
async fn next_matching(
    s: &mut Streaming<ListAndWatchResponse>,
    timeout: Duration,
    pred: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::time::timeout_at(end, s.message())
            .await
            .expect("no matching ListAndWatch update in time")
            .unwrap()
            .expect("stream ended");
        let h = health(&msg);
        if pred(&h) {
            return h;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_each_resource() {
    let s = Setup::new("dp-reg").await;
    let regs = s.kubelet.registrations();
    let mut got: Vec<(String, String)> = regs
        .iter()
        .map(|r| (r.request.resource_name.clone(), r.request.endpoint.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (VF.to_string(), VF_SOCK.to_string()),
            (FAST.to_string(), FAST_SOCK.to_string())
        ]
    );
    for r in &regs {
        assert_eq!(r.request.version, "v1beta1");
        let o = r.request.options.unwrap();
        assert!(o.get_preferred_allocation_available && !o.pre_start_required);
    }
    let mut c = s.kubelet.plugin_client(VF_SOCK).await.unwrap();
    let o = c
        .get_device_plugin_options(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(o.get_preferred_allocation_available);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_list_and_watch() {
    let s = Setup::new("dp-law").await;
    let mut c = s.kubelet.plugin_client(VF_SOCK).await.unwrap();
    let mut st = c.list_and_watch(Empty {}).await.unwrap().into_inner();
    let h = health(&st.message().await.unwrap().unwrap());
    let want: BTreeMap<String, String> = (0..4)
        .map(|i| (format!("igb0-vf{i}"), HEALTHY.to_string()))
        .collect();
    assert_eq!(h, want);
    let mut c = s.kubelet.plugin_client(FAST_SOCK).await.unwrap();
    let mut st = c.list_and_watch(Empty {}).await.unwrap().into_inner();
    let h = health(&st.message().await.unwrap().unwrap());
    assert_eq!(h.keys().collect::<Vec<_>>(), ["igb1-vf0", "igb1-vf1"]);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_mounts_env_annotations_cdi() {
    let s = Setup::new("dp-alloc").await;
    let p = s.path();
    let mut c = s.kubelet.plugin_client(VF_SOCK).await.unwrap();
    let resp = c
        .allocate(alloc(&["igb0-vf1", "igb0-vf2"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.container_responses.len(), 1);
    let r = &resp.container_responses[0];
    let mounts: Vec<(String, String, bool)> = r
        .mounts
        .iter()
        .map(|m| (m.container_path.clone(), m.host_path.clone(), m.read_only))
        .collect();
    let host = |id: &str| p.join("run/vfs").join(id).display().to_string();
    assert_eq!(
        mounts,
        [
            (
                "/var/run/emu-sriov/igb0-vf1".to_string(),
                host("igb0-vf1"),
                false
            ),
            (
                "/var/run/emu-sriov/igb0-vf2".to_string(),
                host("igb0-vf2"),
                false
            ),
            (
                "/var/run/emu-sriov/by-index/vf/0".to_string(),
                host("igb0-vf1"),
                false
            ),
            (
                "/var/run/emu-sriov/by-index/vf/1".to_string(),
                host("igb0-vf2"),
                false
            ),
        ]
    );
    assert!(r.devices.is_empty());
    assert_eq!(r.envs["EMU_SRIOV_VF_VF"], "igb0-vf1,igb0-vf2");
    let info: serde_json::Value = serde_json::from_str(&r.envs["EMU_SRIOV_VF_VF_INFO"]).unwrap();
    assert_eq!(
        info["igb0-vf1"]["socket"],
        "/var/run/emu-sriov/igb0-vf1/vf.sock"
    );
    assert_eq!(info["igb0-vf1"]["mac"], "02:00:00:00:00:02");
    assert_eq!(info["igb0-vf2"]["model"], "igbvf");
    assert_eq!(info["igb0-vf2"]["vendor_id"], "0x8086");
    assert_eq!(info["igb0-vf2"]["device_id"], "0x10ca");
    assert_eq!(info["igb0-vf2"]["pf"], "igb0");
    let ann: serde_json::Value = serde_json::from_str(&r.annotations["emu.sriov/vfs-vf"]).unwrap();
    assert_eq!(ann, info);
    let cdi: Vec<&str> = r.cdi_devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(cdi, ["emu.sriov/vf=igb0-vf1", "emu.sriov/vf=igb0-vf2"]);

    // The CDI spec files.
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("cdi/emu.sriov-vf.json")).unwrap()).unwrap();
    assert_eq!(spec["cdiVersion"], "0.4.0");
    assert_eq!(spec["kind"], "emu.sriov/vf");
    let devs = spec["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 4);
    assert_eq!(devs[1]["name"], "igb0-vf1");
    let m = &devs[1]["containerEdits"]["mounts"][0];
    assert_eq!(m["hostPath"], host("igb0-vf1"));
    assert_eq!(m["containerPath"], "/var/run/emu-sriov/igb0-vf1");
    assert_eq!(m["type"], "bind");
    assert_eq!(
        devs[1]["containerEdits"]["env"][0],
        "EMU_SRIOV_VF_VF_IGB0_VF1_SOCKET=/var/run/emu-sriov/igb0-vf1/vf.sock"
    );
    let fast: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("cdi/emu.sriov-vf_vf-fast.json")).unwrap())
            .unwrap();
    assert_eq!(fast["devices"].as_array().unwrap().len(), 2);
    assert!(!p.join("cdi/.emu.sriov-vf.json.tmp").exists());
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_taken_ids_are_refused() {
    let s = Setup::new("dp-inval").await;
    let mut c = s.kubelet.plugin_client(VF_SOCK).await.unwrap();
    let e = c.allocate(alloc(&["nope"])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("unknown VF id nope for resource emu.sriov/vf")
            && e.message()
                .contains("known: igb0-vf0, igb0-vf1, igb0-vf2, igb0-vf3"),
        "{}",
        e.message()
    );
    // A VF of another resource is unknown here.
    let e = c.allocate(alloc(&["igb1-vf0"])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    c.allocate(alloc(&["igb0-vf0"])).await.unwrap();
    // The fake pod-resources lists it: still taken after the last-chance check.
    s.kubelet.set_pods(&[("p", VF, &["igb0-vf0"])]);
    let e = c
        .allocate(alloc(&["igb0-vf3", "igb0-vf0"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("VF igb0-vf0 is already allocated"),
        "{}",
        e.message()
    );
    // All or nothing: vf3 is still free.
    c.allocate(alloc(&["igb0-vf3"])).await.unwrap();
    // Unhealthy VFs are refused.
    s.inv.set_healthy("igb0-vf2", false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = c.allocate(alloc(&["igb0-vf2"])).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("not healthy"), "{}", e.message());
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_restart_reregisters_within_2s() {
    let mut s = Setup::new("dp-restart").await;
    let before = s.kubelet.registrations().len();
    let t0 = s.kubelet.restart().unwrap();
    assert!(!s.kubelet.dir.join(VF_SOCK).exists());
    let regs = s
        .kubelet
        .wait_registrations(before + 2, Duration::from_secs(2))
        .await
        .unwrap();
    let took = regs
        .iter()
        .skip(before)
        .map(|r| r.at.duration_since(t0))
        .max()
        .unwrap();
    eprintln!("re-registration took {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Served again on a fresh socket.
    let mut c = s.kubelet.plugin_client(VF_SOCK).await.unwrap();
    let mut st = c.list_and_watch(Empty {}).await.unwrap().into_inner();
    assert_eq!(health(&st.message().await.unwrap().unwrap()).len(), 4);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_and_back_is_streamed() {
    let s = Setup::new("dp-health").await;
    let mut c = s.kubelet.plugin_client(VF_SOCK).await.unwrap();
    let mut st = c.list_and_watch(Empty {}).await.unwrap().into_inner();
    st.message().await.unwrap().unwrap();
    let t0 = Instant::now();
    s.inv.set_healthy("igb0-vf3", false);
    let h = next_matching(&mut st, Duration::from_secs(2), |h| {
        h.get("igb0-vf3").map(String::as_str) == Some(UNHEALTHY)
    })
    .await;
    assert_eq!(h["igb0-vf0"], HEALTHY);
    eprintln!("unhealthy streamed after {:?}", t0.elapsed());
    s.inv.set_healthy("igb0-vf3", true);
    next_matching(&mut st, Duration::from_secs(2), |h| {
        h.values().all(|v| v == HEALTHY)
    })
    .await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_scrubs_then_readvertises() {
    let s = Setup::new("dp-release").await;
    let mut c = s.kubelet.plugin_client(VF_SOCK).await.unwrap();
    let mut st = c.list_and_watch(Empty {}).await.unwrap().into_inner();
    st.message().await.unwrap().unwrap();
    c.allocate(alloc(&["igb0-vf1"])).await.unwrap();
    s.kubelet.set_pods(&[("pod-a", VF, &["igb0-vf1"])]);
    // Let the plugin see it in use, then delete the pod.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.inv.scrubbed().is_empty());
    let e = c.allocate(alloc(&["igb0-vf1"])).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    s.kubelet.set_pods(&[]);
    let end = Instant::now() + Duration::from_secs(2);
    while s.inv.scrubbed().is_empty() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.inv.scrubbed(), ["igb0-vf1"]);
    // It was never advertised Unhealthy on the way (a kubelet admitting the next pod at once
    // must find it healthy): no update with an Unhealthy VF is streamed.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), st.message())
            .await
            .map_or(true, |m| m
                .ok()
                .flatten()
                .is_none_or(|r| r.devices.iter().all(|d| d.health == HEALTHY))),
        "a released VF stays Healthy while it is scrubbed"
    );
    // Free again.
    c.allocate(alloc(&["igb0-vf1"])).await.unwrap();
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_allocation_honours_must_include_and_locality() {
    let s = Setup::new("dp-pref").await;
    let mut c = s.kubelet.plugin_client(VF_SOCK).await.unwrap();
    let req = |avail: &[&str], must: &[&str], n: i32| PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: avail.iter().map(|s| s.to_string()).collect(),
            must_include_device_i_ds: must.iter().map(|s| s.to_string()).collect(),
            allocation_size: n,
        }],
    };
    let all = ["igb0-vf3", "igb0-vf2", "igb0-vf1", "igb0-vf0"];
    let r = c
        .get_preferred_allocation(req(&all, &["igb0-vf1"], 2))
        .await
        .unwrap()
        .into_inner();
    // vf1 and vf3 share dataplane core 1 in the fake inventory.
    assert_eq!(
        r.container_responses[0].device_i_ds,
        ["igb0-vf1", "igb0-vf3"]
    );
    let r = c
        .get_preferred_allocation(req(&all, &[], 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.container_responses[0].device_i_ds,
        ["igb0-vf0", "igb0-vf2", "igb0-vf1"]
    );
    s.finish().await;
}

/// Resources follow `PluginHandle::set_resources`: a new one is served and registered, a
/// withdrawn one's server stops (its stream ends, its socket goes); VFs the inventory drops
/// leave ListAndWatch; `held` reports allocations until pod-resources says they are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_follow_the_agent_and_held_is_reported() {
    let mut dir = RunDir::new("dp-dyn").unwrap();
    let p = dir.path().to_owned();
    let kubelet = FakeKubelet::start(&p.join("dp"), &p.join("pr/kubelet.sock")).unwrap();
    let inv = FakeInventory::new(&p.join("run"), &[("igb0", 2, VF), ("igb1", 2, FAST)]);
    let config = DevicePluginConfig {
        device_plugin_dir: p.join("dp"),
        pod_resources_socket: p.join("pr/kubelet.sock"),
        cdi_dir: Some(p.join("cdi")),
        resources: Vec::new(),
        inventory_poll: Duration::from_millis(50),
        kubelet_watch: Duration::from_millis(50),
        pod_resources_poll: Duration::from_millis(100),
        release_grace: Duration::from_secs(30),
    };
    let runner = DevicePluginRunner::new(config, inv.clone());
    let handle = runner.handle();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async {
        let _ = rx.await;
    }));
    // Nothing to serve yet.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(kubelet.registrations().is_empty());
    handle.set_resources([VF.to_string()].into());
    kubelet
        .wait_registrations(1, Duration::from_secs(2))
        .await
        .unwrap();
    let mut c = kubelet.plugin_client(VF_SOCK).await.unwrap();
    let mut st = c.list_and_watch(Empty {}).await.unwrap().into_inner();
    next_matching(&mut st, Duration::from_secs(2), |h| h.len() == 2).await;

    handle.set_resources([VF.to_string(), FAST.to_string()].into());
    let regs = kubelet
        .wait_registrations(2, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(regs[1].request.resource_name, FAST);
    let mut cf = kubelet.plugin_client(FAST_SOCK).await.unwrap();
    let mut sf = cf.list_and_watch(Empty {}).await.unwrap().into_inner();
    let h = next_matching(&mut sf, Duration::from_secs(2), |h| h.len() == 2).await;
    assert_eq!(h.keys().collect::<Vec<_>>(), ["igb1-vf0", "igb1-vf1"]);
    assert!(p.join("cdi/emu.sriov-vf_vf-fast.json").exists());

    // Allocation is reported as held until pod-resources has seen it go.
    let mut held = handle.watch_held();
    c.allocate(alloc(&["igb0-vf1"])).await.unwrap();
    assert_eq!(handle.held(), ["igb0-vf1".to_string()].into());
    kubelet.set_pods(&[("pod-a", VF, &["igb0-vf1"])]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    kubelet.set_pods(&[]);
    tokio::time::timeout(Duration::from_secs(3), async {
        while !held.borrow_and_update().is_empty() {
            held.changed().await.unwrap();
        }
    })
    .await
    .expect("release reported");
    assert_eq!(inv.scrubbed(), ["igb0-vf1"]);

    // A VF the inventory drops leaves the list; after refresh it cannot be allocated.
    inv.remove("igb0-vf0");
    handle.refresh();
    let e = c.allocate(alloc(&["igb0-vf0"])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let h = next_matching(&mut st, Duration::from_secs(2), |h| h.len() == 1).await;
    assert_eq!(h.keys().collect::<Vec<_>>(), ["igb0-vf1"]);

    // Withdrawing a resource: stream ends, socket and CDI spec removed.
    handle.set_resources([FAST.to_string()].into());
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match st.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the withdrawn resource's stream ended");
    assert!(!kubelet.dir.join(VF_SOCK).exists());
    assert!(kubelet.dir.join(FAST_SOCK).exists());
    assert!(!p.join("cdi/emu.sriov-vf.json").exists());

    let _ = tx.send(());
    task.await.unwrap().unwrap();
    assert!(!kubelet.dir.join(FAST_SOCK).exists());
    dir.succeed();
}

/// The real agent, run twice on the same run dir: same VF ids, MACs and socket paths.
#[test]
fn agent_restart_keeps_ids_and_macs() {
    let bin = agent_bin().unwrap();
    let mut dir = RunDir::new("dp-agent").unwrap();
    let snapshot = |agent: &Agent| {
        agent
            .vfs()
            .unwrap()
            .into_iter()
            .map(|v| (v.id, v.mac, v.socket))
            .collect::<Vec<_>>()
    };
    let a = Agent::start(&bin, dir.path(), "igb:3", Duration::from_secs(30)).unwrap();
    let first = snapshot(&a);
    drop(a);
    let a = Agent::start(&bin, dir.path(), "igb:3", Duration::from_secs(30)).unwrap();
    let second = snapshot(&a);
    drop(a);
    assert_eq!(first.len(), 3);
    assert_eq!(first, second);
    for (id, _, socket) in &first {
        assert!(
            socket.ends_with(format!("vfs/{id}/vf.sock")),
            "{}",
            socket.display()
        );
    }
    dir.succeed();
}
