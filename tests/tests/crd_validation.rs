//! Every CEL rule (`x-kubernetes-validations`) of emu-sriov's CRDs, checked by the real
//! kube-apiserver: one object it accepts and one it rejects, with the rule's message.
//! Server-side dry-run creates: nothing is stored.

use emu_sriov_tests::k8s::{self, ControlPlane};
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{json, Value};

async fn client() -> Client {
    let client = ControlPlane::shared().client();
    k8s::install_crds(&client, emu_sriov_crds::crds())
        .await
        .expect("CRDs install");
    client
}

/// Dry-run creates `spec` as a `kind`; Ok or the API server's message.
async fn try_create(client: &Client, kind: &str, spec: Value) -> Result<(), String> {
    let (plural, namespaced) = match kind {
        "VfPool" => ("vfpools", false),
        "NodeState" => ("nodestates", false),
        "VfNetwork" => ("vfnetworks", true),
        other => panic!("unknown kind {other}"),
    };
    let gvk = GroupVersionKind::gvk("emu.sriov", "v1alpha1", kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<DynamicObject> = if namespaced {
        Api::namespaced_with(client.clone(), "default", &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "emu.sriov/v1alpha1",
        "kind": kind,
        "metadata": {"name": "cel-check"},
        "spec": spec,
    }))
    .expect("object");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&pp, &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(e.message),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// `good` is accepted; `bad` is rejected with a message containing `message`.
async fn rule(client: &Client, kind: &str, good: Value, bad: Value, message: &str) {
    if let Err(e) = try_create(client, kind, good.clone()).await {
        panic!("{kind} {good} should be accepted, got: {e}");
    }
    match try_create(client, kind, bad.clone()).await {
        Ok(()) => panic!("{kind} {bad} should be rejected ({message})"),
        Err(e) => assert!(
            e.contains(message),
            "{kind} {bad}: rejected, but the message\n  {e}\ndoes not contain\n  {message}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vfpool_rules() {
    let c = client().await;
    rule(
        &c,
        "VfPool",
        json!({"model": "igbvf", "vfsPerPf": 7}),
        json!({"model": "igbvf", "vfsPerPf": 8}),
        "vfsPerPf: an igbvf PF (Intel 82576) carries at most 7 VFs",
    )
    .await;
    rule(
        &c,
        "VfPool",
        json!({"model": "iavf", "queuePairs": 4}),
        json!({"model": "igbvf", "queuePairs": 4}),
        "queuePairs: igbvf VFs have exactly one queue pair",
    )
    .await;
    rule(
        &c,
        "VfPool",
        json!({"model": "iavf", "pfsPerNode": 4, "vfsPerPf": 64}),
        json!({"model": "iavf", "pfsPerNode": 5, "vfsPerPf": 64}),
        "pfsPerNode * vfsPerPf: one pool's switch holds at most 256 VF ports per node",
    )
    .await;
    rule(
        &c,
        "VfPool",
        json!({"model": "igbvf", "deviceType": "netdev"}),
        json!({"model": "iavf", "deviceType": "netdev"}),
        "deviceType: netdev (TAP-backed VFs for the emu-sriov CNI plugin) is driven through the igb PF model",
    )
    .await;
    rule(
        &c,
        "VfPool",
        json!({"model": "igbvf", "dataplane": {"mode": "poll", "cores": [1]}}),
        json!({"model": "igbvf", "dataplane": {"mode": "poll"}}),
        "dataplane.cores: poll mode busy-polls dedicated cores",
    )
    .await;
    rule(
        &c,
        "VfPool",
        json!({"model": "igbvf", "resourceName": "emu.sriov/vf-fast"}),
        json!({"model": "igbvf", "resourceName": "vf-fast"}),
        "resourceName: write it as <domain>/<name>",
    )
    .await;
    rule(
        &c,
        "VfPool",
        json!({"model": "igbvf", "uplink": {"type": "tap", "name": "emu0"}}),
        json!({"model": "igbvf", "uplink": {"type": "tap", "name": "eth/0"}}),
        "uplink.name: an interface name has 1 to 15 characters",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vfpool_schema_ranges_and_enums_are_enforced_too() {
    let c = client().await;
    for (bad, field) in [
        (json!({"model": "e1000"}), "spec.model"),
        (json!({"model": "iavf", "vfsPerPf": 65}), "spec.vfsPerPf"),
        (json!({"model": "igbvf", "vlan": 4095}), "spec.vlan"),
        (json!({"model": "igbvf", "priority": 100}), "spec.priority"),
    ] {
        let e = try_create(&c, "VfPool", bad.clone())
            .await
            .expect_err("rejected");
        assert!(e.contains(field), "{bad}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodestate_rules() {
    let c = client().await;
    let pool = |name: &str, pf: &str| {
        json!({"name": name, "generation": 1, "model": "igbvf", "resourceName": "emu.sriov/vf",
               "pfs": [{"name": pf, "vfs": 2}]})
    };
    rule(
        &c,
        "NodeState",
        json!({"pools": [pool("a", "igb0"), pool("b", "igb1")]}),
        json!({"pools": [pool("a", "igb0"), pool("a", "igb1")]}),
        "pools: each VfPool appears once per node",
    )
    .await;
    rule(
        &c,
        "NodeState",
        json!({"pools": [pool("a", "igb0")]}),
        json!({"pools": [pool("a", "Igb-0")]}),
        "pfs[].name: 1 to 12 lower-case letters and digits",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vfnetwork_rules() {
    let c = client().await;
    rule(
        &c,
        "VfNetwork",
        json!({"resourceName": "emu.sriov/vf", "vlan": 10, "vlanQoS": 5}),
        json!({"resourceName": "emu.sriov/vf", "vlanQoS": 5}),
        "vlanQoS: a priority needs a VLAN tag to travel in",
    )
    .await;
    rule(
        &c,
        "VfNetwork",
        json!({"resourceName": "emu.sriov/vf", "minTxRateMbps": 100, "maxTxRateMbps": 200}),
        json!({"resourceName": "emu.sriov/vf", "minTxRateMbps": 300, "maxTxRateMbps": 200}),
        "minTxRateMbps: the guaranteed rate cannot exceed maxTxRateMbps",
    )
    .await;
    rule(
        &c,
        "VfNetwork",
        json!({"resourceName": "emu.sriov/vf"}),
        json!({"resourceName": "emu.sriov"}),
        "resourceName: write it as <domain>/<name>, the resourceName of a VfPool",
    )
    .await;
    rule(
        &c,
        "VfNetwork",
        json!({"resourceName": "emu.sriov/vf", "networkNamespace": "tenant-a"}),
        json!({"resourceName": "emu.sriov/vf", "networkNamespace": "Tenant_A"}),
        "networkNamespace: a namespace name",
    )
    .await;
}
