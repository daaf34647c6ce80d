//! `emu-sriov-operator`: command line → client → leader election → controllers.

use anyhow::Context as _;
use clap::Parser;
use emu_sriov_operator::{controllers, leader, metrics, network};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Reconciles emu-sriov's custom resources: every VfPool into one NodeState per matching node
/// (what that node's emu-sriov-agent runs), VfPool status from the agents' reports, and every
/// VfNetwork into a Multus NetworkAttachmentDefinition.
///
/// Runs in-cluster (service account) or, with --kubeconfig, from anywhere. Several replicas
/// elect a leader on a coordination.k8s.io/v1 Lease; only the leader writes.
#[derive(Parser, Debug)]
#[command(name = "emu-sriov-operator", version, about, long_about)]
struct Cli {
    /// Kubeconfig file to use instead of the in-cluster service account (also: KUBECONFIG).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Address of /healthz, /readyz and /metrics (Prometheus).
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader among replicas (a Lease in --lease-namespace). Turn off only when
    /// exactly one replica runs.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease; default: the pod's namespace (POD_NAMESPACE), else
    /// `emu-sriov`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "emu-sriov")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "emu-sriov-operator")]
    lease_name: String,
    /// This replica's identity in the Lease; default: the pod name (POD_NAME), else the host
    /// name and process id.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a lease stays valid after its last renewal: a standby takes over at most this
    /// long after the leader dies.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// The agents' run dir (their `--run-dir`), written into every NAD a VfNetwork renders
    /// so that emu-sriov-cni finds the agent's control socket there. Leave it unset when the
    /// agents use the default, /run/emu-sriov.
    #[arg(long, value_name = "DIR")]
    agent_run_dir: Option<PathBuf>,
    /// Log filter (e.g. `info`, `emu_sriov_operator=debug`); default: RUST_LOG, else info.
    #[arg(long)]
    log_level: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = cli
        .log_level
        .as_deref()
        .map(EnvFilter::try_new)
        .or_else(|| std::env::var("RUST_LOG").ok().map(EnvFilter::try_new))
        .and_then(Result::ok)
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("emu-sriov-operator: error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emu-sriov-operator: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = client(cli.kubeconfig.as_deref()).await?;
    let metrics = metrics::Metrics::new();
    let bound = metrics::serve(cli.metrics_addr, metrics.clone())
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {}", cli.metrics_addr))?;
    tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics");
    let identity = cli.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "operator".into());
        format!("{host}-{}", std::process::id())
    });
    let nad = network::NadOptions {
        agent_run_dir: cli.agent_run_dir.as_ref().map(|d| d.display().to_string()),
    };
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
    };
    if cli.leader_elect {
        let duration = Duration::from_secs(cli.lease_duration.max(2));
        let cfg = leader::LeaderConfig {
            namespace: cli.lease_namespace,
            lease_name: cli.lease_name,
            identity,
            duration,
            grace: (duration / 3).max(Duration::from_secs(1)),
            nad,
        };
        leader::run(client, metrics, cfg, shutdown).await;
    } else {
        metrics.set_ready(true);
        metrics.leader.set(1);
        controllers::run(client, metrics, identity, nad, shutdown).await;
    }
    Ok(())
}

async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::incluster().context(
            "not running in a pod (no service account) and no --kubeconfig given: pass --kubeconfig PATH or set KUBECONFIG",
        )?,
    };
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}
