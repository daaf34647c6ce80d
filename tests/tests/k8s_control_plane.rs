//! The Kubernetes control-plane harness (src/k8s.rs) against the real etcd and kube-apiserver of
//! the pinned release: it starts, serves that release, accepts our CRDs (schemas and CEL rules
//! within the server's cost budget) and the Network Plumbing WG's, enforces RBAC, and leaves no
//! process behind when dropped or when the test binary is killed.
//!
//! Needs the binaries of `tests/cluster/build.sh` (or `$EMU_K8S_BIN`); fails saying so without.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use emu_sriov_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec, VfPool};
use emu_sriov_tests::k8s::{self, ControlPlane};
use emu_sriov_tests::proc::spawn_guarded;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

/// The extra control planes these tests start run one at a time, after the shared one is up, so
/// that their startup times are not those of three servers fighting over two cores.
static EXTRA_START: Mutex<()> = Mutex::new(());

/// Set in the environment of the child test binary of `servers_die_with_a_killed_test_binary`.
const CHILD_ENV: &str = "EMU_K8S_TEST_CHILD";

#[tokio::test]
async fn shared_control_plane_serves_the_pinned_release() {
    let cp = ControlPlane::shared();
    eprintln!(
        "shared control plane: started in {:.2} s, {}, data {}",
        cp.startup_time().as_secs_f64(),
        cp.server_url(),
        cp.data_dir().display()
    );
    let pinned = k8s::pinned_version().expect("pinned release");
    let version = cp
        .client()
        .apiserver_version()
        .await
        .expect("GET /version as admin");
    assert_eq!(version.git_version, pinned, "{version:?}");

    let out = cp.kubectl(["version", "-o", "json"]);
    assert!(out.status.success(), "kubectl version: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("\"gitVersion\": \"{pinned}\"")),
        "{text}"
    );
}

#[tokio::test]
async fn our_crds_and_the_nad_crd_become_established() {
    let cp = ControlPlane::shared();
    let client = cp.client();
    let mut crds = emu_sriov_crds::crds();
    crds.push(k8s::nad_crd());
    let names: Vec<String> = crds
        .iter()
        .map(|c| c.metadata.name.clone().expect("CRD has a name"))
        .collect();
    let t0 = Instant::now();
    k8s::install_crds(&client, crds)
        .await
        .unwrap_or_else(|e| panic!("{}", k8s::error_chain(&e)));
    eprintln!(
        "{} CRDs applied and Established in {:.2} s",
        names.len(),
        t0.elapsed().as_secs_f64()
    );
    // Applying again is a no-op, not a conflict.
    k8s::install_crds(&client, emu_sriov_crds::crds())
        .await
        .unwrap_or_else(|e| panic!("re-apply: {}", k8s::error_chain(&e)));

    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in &names {
        let crd = api.get(name).await.expect("get CRD");
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} not Established");
    }

    // The CEL rules run: an igbvf pool with 8 VFs per PF gets the rule's own message.
    let pool: VfPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "emu.sriov/v1alpha1",
        "kind": "VfPool",
        "metadata": { "name": "cel-too-many-igbvf" },
        "spec": { "model": "igbvf", "vfsPerPf": 8 },
    }))
    .expect("a VfPool");
    match Api::<VfPool>::all(client.clone())
        .create(&PostParams::default(), &pool)
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status
                    .message
                    .contains("an igbvf PF (Intel 82576) carries at most 7 VFs"),
                "{}",
                status.message
            );
        }
        other => panic!("an igbvf pool with vfsPerPf 8: expected 422 Invalid, got {other:?}"),
    }

    // The operator's typed NetworkAttachmentDefinition round-trips through the WG's CRD.
    let ns = k8s::create_namespace(&client, "nad")
        .await
        .expect("namespace");
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client, &ns);
    let nad = NetworkAttachmentDefinition {
        metadata: ObjectMeta {
            name: Some("net-a".into()),
            ..ObjectMeta::default()
        },
        spec: NetworkAttachmentDefinitionSpec {
            config: Some(r#"{"cniVersion":"1.0.0","name":"net-a","type":"host-device"}"#.into()),
        },
    };
    nads.create(&PostParams::default(), &nad)
        .await
        .expect("create a NetworkAttachmentDefinition");
    let got = nads.get("net-a").await.expect("get it back");
    assert_eq!(got.spec, nad.spec);

    let out = cp.kubectl([
        "get",
        "network-attachment-definitions",
        "-n",
        &ns,
        "-o",
        "name",
    ]);
    assert!(out.status.success(), "kubectl get: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "networkattachmentdefinition.k8s.cni.cncf.io/net-a"
    );
}

#[tokio::test]
async fn a_rejected_crd_fails_with_the_servers_reason() {
    let client = ControlPlane::shared().client();
    let mut crd = k8s::nad_crd();
    // The server requires metadata.name == <plural>.<group>.
    crd.metadata.name = Some("misnamed.k8s.cni.cncf.io".into());
    let err = k8s::install_crds(&client, vec![crd])
        .await
        .expect_err("a misnamed CRD is rejected");
    let text = k8s::error_chain(&err);
    assert!(
        text.starts_with("applying CRD misnamed.k8s.cni.cncf.io\n  caused by: HTTP 422 Invalid: "),
        "{text}"
    );
    assert!(
        text.contains("must be spec.names.plural+\".\"+spec.group"),
        "{text}"
    );
}

#[tokio::test]
async fn rbac_denies_an_unprivileged_user() {
    let cp = ControlPlane::shared();
    let admin = cp.client();
    let node = k8s::create_node(&admin, "rbac-test-node", &[("emu.sriov/test", "rbac")])
        .await
        .expect("create Node as admin");
    assert_eq!(
        node.metadata
            .labels
            .unwrap_or_default()
            .get("emu.sriov/test"),
        Some(&"rbac".to_string())
    );
    let listed = Api::<Node>::all(admin)
        .list(&ListParams::default().labels("emu.sriov/test=rbac"))
        .await
        .expect("list Nodes as admin");
    assert_eq!(listed.items.len(), 1);

    let nobody = cp.user_client("nobody", &[]);
    match Api::<Node>::all(nobody).list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains("\"nobody\""), "{status:?}");
        }
        other => panic!("listing Nodes as nobody: expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn namespaces_are_unique_per_call() {
    let client = ControlPlane::shared().client();
    let a = k8s::create_namespace(&client, "Same_Prefix")
        .await
        .expect("first");
    let b = k8s::create_namespace(&client, "Same_Prefix")
        .await
        .expect("second");
    assert_ne!(a, b);
    assert!(a.starts_with("same-prefix-"), "{a}");
}

/// Whether the process `pid` is gone (or a zombie waiting for its new parent to reap it).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

fn wait_dead(pids: &[u32], within: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if pids.iter().all(|&p| is_dead(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn private_control_plane_stops_and_cleans_up_on_drop() {
    ControlPlane::shared();
    let _one_at_a_time = EXTRA_START.lock().unwrap_or_else(|e| e.into_inner());
    let cp = ControlPlane::start().unwrap_or_else(|e| panic!("{}", k8s::error_chain(&e)));
    eprintln!(
        "private control plane (the shared one idle): started in {:.2} s",
        cp.startup_time().as_secs_f64()
    );
    let pids = cp.pids();
    let dir = cp.data_dir().to_path_buf();
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver");
    assert!(pids.iter().all(|&p| !is_dead(p)), "both run");
    assert!(cp.kubeconfig_path().exists() && cp.apiserver_log().exists());
    drop(cp);
    assert!(
        pids.iter().all(|&p| is_dead(p)),
        "{pids:?} still run after drop"
    );
    assert!(!dir.exists(), "{} not removed", dir.display());
}

/// Runs this binary again as a child that starts a control plane and waits; kills the child with
/// SIGKILL (no unwinding, no exit handlers) and expects etcd and the API server to die with it.
#[test]
fn servers_die_with_a_killed_test_binary() {
    ControlPlane::shared();
    let _one_at_a_time = EXTRA_START.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().expect("path of this test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "killed_binary_child", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = spawn_guarded(&mut cmd).expect("run this test binary as a child");
    let stdout = child.stdout.take().expect("child stdout is piped");
    let mut report = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the child's stdout");
        if let Some(rest) = line.strip_prefix("EMU-K8S-CHILD ") {
            report = Some(rest.to_string());
            break;
        }
    }
    let _ = child.kill();
    let status = child.wait().expect("reap the child");
    let report = report.unwrap_or_else(|| panic!("the child exited ({status}) without reporting"));
    let mut words = report.split_whitespace();
    let dir = PathBuf::from(words.next().expect("data dir in the report"));
    let pids: Vec<u32> = words.map(|w| w.parse().expect("PID")).collect();
    assert_eq!(pids.len(), 2, "{report}");
    let gone = wait_dead(&pids, Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(gone, "{pids:?} outlived their killed test binary");
}

/// The child half of `servers_die_with_a_killed_test_binary`; does nothing in a normal run.
#[test]
fn killed_binary_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cp = ControlPlane::start().unwrap_or_else(|e| panic!("{}", k8s::error_chain(&e)));
    let pids: Vec<String> = cp.pids().iter().map(u32::to_string).collect();
    println!(
        "EMU-K8S-CHILD {} {}",
        cp.data_dir().display(),
        pids.join(" ")
    );
    // The parent kills this process now; stop waiting if it never does.
    std::thread::sleep(Duration::from_secs(120));
    std::mem::forget(cp);
}
