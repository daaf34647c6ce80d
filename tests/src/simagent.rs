//! A simulated node agent for operator tests and the scale run: it reads a node's NodeState
//! and writes the status a real agent would report once it runs the spec (every VF healthy
//! and free), without running any VF. The real agent's own behaviour is tested with the real
//! agent (tests/tests/agent_cluster_mode.rs).

use emu_sriov_crds::{
    NodeState, NodeStateStatus, PoolRunStatus, SyncStatus, VfHealth, VfRunStatus, AGENT_MANAGER,
};
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

/// The status an agent that applied `ns.spec` completely would report.
pub fn converged_status(ns: &NodeState) -> NodeStateStatus {
    let node = ns.metadata.name.clone().unwrap_or_default();
    let mut vfs = Vec::new();
    let mut pools = Vec::new();
    for p in &ns.spec.pools {
        let mut count = 0;
        for pf in &p.pfs {
            for i in 0..pf.vfs {
                count += 1;
                let id = format!("{}-vf{i}", pf.name);
                vfs.push(VfRunStatus {
                    mac: fake_mac(&node, &id),
                    socket: format!("/run/emu-sriov/vfs/{id}/vf.sock"),
                    id,
                    pool: p.name.clone(),
                    pf: pf.name.clone(),
                    resource_name: p.resource_name.clone(),
                    allocated: false,
                    health: VfHealth::Healthy,
                    pending_removal: false,
                });
            }
        }
        pools.push(PoolRunStatus {
            name: p.name.clone(),
            generation: p.generation,
            vfs: count,
            allocated: 0,
            pending: None,
        });
    }
    vfs.sort_by(|a, b| a.id.cmp(&b.id));
    NodeStateStatus {
        observed_generation: ns.metadata.generation,
        sync_status: Some(SyncStatus::Succeeded),
        last_sync_error: None,
        vfs_total: vfs.len() as u32,
        vfs_allocated: 0,
        pools,
        vfs,
        conditions: Vec::new(),
    }
}

/// Writes [`converged_status`] if the status differs; returns whether it wrote.
pub async fn report(api: &Api<NodeState>, ns: &NodeState) -> Result<bool, kube::Error> {
    let status = converged_status(ns);
    if ns.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let body = json!({
        "apiVersion": "emu.sriov/v1alpha1",
        "kind": "NodeState",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(AGENT_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(true)
}

/// A stable, locally administered MAC for a simulated VF.
fn fake_mac(node: &str, id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0]).chain(id.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}
