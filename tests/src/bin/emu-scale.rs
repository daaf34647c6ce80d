//! `emu-scale`: the operator at scale against a real kube-apiserver + etcd.
//!
//! Creates `--nodes` Node objects, starts the real operator, applies one VfPool that gives
//! every node `--vfs` VFs (iavf PFs of up to 64 VFs), lets simulated agents report status as
//! real ones would (tests/src/simagent.rs), and prints how long the cluster took to converge
//! and how many API writes it cost per object; then restarts the operator on the converged
//! cluster (a full no-op resync) and prints its writes (the goal: zero).
//!
//! Usage (a private API server is started and removed; the Kubernetes binaries come from
//! tests/cluster/build.sh):
//!   cargo build --release -p emu-sriov-operator
//!   EMU_SRIOV_OPERATOR_BIN=target/release/emu-sriov-operator \
//!     cargo run --release -p emu-sriov-tests --bin emu-scale -- --nodes 100 --vfs 64

use emu_sriov_crds::{NodeState, VfPool};
use emu_sriov_tests::k8s::{self, ControlPlane};
use emu_sriov_tests::operator::Operator;
use emu_sriov_tests::proc::RunDir;
use emu_sriov_tests::simagent;
use futures::{StreamExt, TryStreamExt};
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    nodes: usize,
    vfs: u32,
    timeout: Duration,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        nodes: 100,
        vfs: 64,
        timeout: Duration::from_secs(300),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--nodes" => {
                a.nodes = value("--nodes")?
                    .parse()
                    .map_err(|e| format!("--nodes: {e}"))?
            }
            "--vfs" => a.vfs = value("--vfs")?.parse().map_err(|e| format!("--vfs: {e}"))?,
            "--timeout-s" => {
                a.timeout = Duration::from_secs(
                    value("--timeout-s")?
                        .parse()
                        .map_err(|e| format!("--timeout-s: {e}"))?,
                )
            }
            "-h" | "--help" => {
                println!("usage: emu-scale [--nodes N (100)] [--vfs VFS_PER_NODE (64)] [--timeout-s S (300)]\n\nStarts a private kube-apiserver + etcd, N Node objects, the operator and simulated\nagents; prints time to converge, API writes per object, and the writes of a restarted\noperator on the converged cluster (goal: 0). EMU_SRIOV_OPERATOR_BIN picks the operator\nbinary (default: a debug build of this checkout).");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}: see --help")),
        }
    }
    if a.vfs == 0 || a.vfs > 256 {
        return Err("--vfs takes 1 to 256 VFs per node".into());
    }
    Ok(a)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("emu-scale: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("emu-scale: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let dir = RunDir::new("scale")?;
    eprintln!("emu-scale: starting a private kube-apiserver + etcd");
    let cp = ControlPlane::start().map_err(|e| e.to_string())?;
    eprintln!("emu-scale: control plane up in {:?}", cp.startup_time());
    let client = cp.client();
    k8s::install_crds(&client, emu_sriov_crds::crds())
        .await
        .map_err(|e| e.to_string())?;

    let t = Instant::now();
    futures::stream::iter(0..args.nodes)
        .map(|i| {
            let client = client.clone();
            async move {
                let name = format!("scale-{i:03}");
                k8s::create_node(&client, &name, &[("emu.test/scale", "on")])
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!(
        "emu-scale: {} Node objects in {:?}",
        args.nodes,
        t.elapsed()
    );

    // Simulated agents: report each NodeState's spec as applied, as soon as it changes.
    let agent_writes = Arc::new(AtomicU64::new(0));
    let agents = {
        let api = Api::<NodeState>::all(client.clone());
        let writes = agent_writes.clone();
        tokio::spawn(async move {
            let stream = watcher(api.clone(), watcher::Config::default()).applied_objects();
            stream
                .for_each_concurrent(16, |ev| {
                    let api = api.clone();
                    let writes = writes.clone();
                    async move {
                        if let Ok(ns) = ev {
                            if let Ok(true) = simagent::report(&api, &ns).await {
                                writes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
                .await
        })
    };

    // EMU_SCALE_LOG=info shows the operator's progress in its log (kept on failure).
    let log_level = std::env::var("EMU_SCALE_LOG").unwrap_or_else(|_| "warn".into());
    let op = Operator::start(
        cp.kubeconfig_path(),
        "scale",
        dir.path(),
        &["--lease-namespace", "default", "--log-level", &log_level],
    )?;
    let per_pf = args.vfs.min(64);
    let pfs = args.vfs.div_ceil(per_pf);
    let pool: VfPool = serde_json::from_value(json!({
        "apiVersion": "emu.sriov/v1alpha1", "kind": "VfPool",
        "metadata": {"name": "scale"},
        "spec": {"model": "iavf", "pfsPerNode": pfs, "vfsPerPf": per_pf,
                 "nodeSelector": {"matchLabels": {"emu.test/scale": "on"}}}
    }))
    .map_err(|e| e.to_string())?;
    let pools = Api::<VfPool>::all(client.clone());
    let start = Instant::now();
    pools
        .create(&PostParams::default(), &pool)
        .await
        .map_err(|e| format!("creating the pool: {e}"))?;

    let states = Api::<NodeState>::all(client.clone());
    let mut specs_done = None;
    let ready_at = loop {
        if start.elapsed() > args.timeout {
            let made = states
                .list_metadata(&Default::default())
                .await
                .map(|l| l.items.len().to_string())
                .unwrap_or_else(|e| format!("unknown ({e})"));
            let status = pools.get("scale").await.map(|p| format!("{:?}", p.status));
            return Err(format!(
                "not converged after {:?}: {made} NodeStates, pool status {status:?}, operator writes {}; operator log (EMU_SCALE_LOG=info for more):\n{}",
                args.timeout,
                op.writes(),
                op.log_tail(30)
            ));
        }
        if specs_done.is_none() {
            let n = states
                .list_metadata(&Default::default())
                .await
                .map(|l| l.items.len())
                .unwrap_or(0);
            if n >= args.nodes {
                specs_done = Some(start.elapsed());
            }
        }
        let ready = pools
            .get("scale")
            .await
            .ok()
            .and_then(|p| p.status)
            .is_some_and(|s| s.ready_nodes as usize == args.nodes);
        if ready {
            break start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let total_vfs = args.nodes as u64 * u64::from(pfs * per_pf);
    // Settle: let trailing status writes land.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let op_writes = op.writes();
    let objects = args.nodes as u64 + 1;
    drop(op);

    eprintln!("emu-scale: converged; restarting the operator on the converged cluster");
    let agent_before = agent_writes.load(Ordering::Relaxed);
    let again = Operator::start(
        cp.kubeconfig_path(),
        "scale-resync",
        dir.path(),
        &["--lease-namespace", "default", "--log-level", &log_level],
    )?;
    let resync_start = Instant::now();
    while !again.is_leader() && resync_start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wanted = (args.nodes + 1) as f64;
    while again
        .metric("emu_sriov_operator_reconciles_total")
        .unwrap_or(0.0)
        < wanted
        && resync_start.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resync_took = resync_start.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resync_reconciles = again
        .metric("emu_sriov_operator_reconciles_total")
        .unwrap_or(0.0);
    let resync_writes = again.writes();
    let agent_resync = agent_writes.load(Ordering::Relaxed) - agent_before;
    agents.abort();

    println!();
    println!(
        "emu-scale: {} nodes x {} VFs ({} VFs), one VfPool, real kube-apiserver {}",
        args.nodes,
        pfs * per_pf,
        total_vfs,
        k8s::pinned_version().unwrap_or_default()
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| NodeStates created (pool applied → last NodeState) | {:.2} s |",
        specs_done.unwrap_or(ready_at).as_secs_f64()
    );
    println!(
        "| converged (pool applied → status readyNodes = {}) | {:.2} s |",
        args.nodes,
        ready_at.as_secs_f64()
    );
    println!("| operator API writes to converge | {op_writes} |");
    println!(
        "| operator API writes per object ({objects} objects: NodeStates + pool) | {:.2} |",
        op_writes as f64 / objects as f64
    );
    println!("| simulated agent status writes | {agent_before} |");
    println!(
        "| restarted operator: time to lead and reconcile every object | {:.2} s |",
        resync_took.as_secs_f64()
    );
    println!("| restarted operator: reconciles | {resync_reconciles} |");
    println!("| restarted operator: API writes (no-op resync) | {resync_writes} |");
    println!("| simulated agents: writes during the resync | {agent_resync} |");
    drop(again);
    let mut dir = dir;
    dir.succeed();
    Ok(())
}
