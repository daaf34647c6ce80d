//! `emu-sriov-agent run`: restore the state kept in the run dir, start the node, the control
//! socket and (with `--metrics-addr`) the metrics endpoint, print where the VFs are, wait for SIGINT/SIGTERM, shut down and log the
//! final counters.
//!
//! The control plane (metrics endpoint, device plugin) shares one tokio runtime, as in cluster
//! mode; the dataplane keeps its own std threads and the control socket its std thread.

use anyhow::Context;
use emu_sriov_agent::config::AgentConfig;
use emu_sriov_agent::metrics::MetricsServer;
use emu_sriov_agent::node::Node;
use emu_sriov_agent::plugin::{plugin_config, NodeInventory, PluginPaths};
use emu_sriov_agent::{access, banner, control, naming, state, sys};
use std::net::SocketAddr;
use std::sync::Arc;

/// A netdev refusal as the control socket sends it: the whole cause chain, the CNI code.
fn refusal(e: emu_sriov_agent::netdev::NetdevError) -> (String, u32) {
    let code = e.cni_code();
    (format!("{:#}", anyhow::Error::new(e)), code)
}

pub fn run(
    mut config: AgentConfig,
    plugin: Option<PluginPaths>,
    metrics_addr: Option<SocketAddr>,
) -> anyhow::Result<()> {
    sys::block_termination_signals().context("cannot set up signal handling")?;
    // Nothing the agent creates is anyone else's until `access` says so.
    sys::set_umask(0o077);
    // A second agent on the same run dir must not rewrite the first one's state.
    let control_path = naming::control_socket_path(&config.run_dir);
    control::refuse_if_running(&control_path)?;
    access::prepare_run_dir(&config.run_dir, config.shares_sockets())?;
    // Before any socket is served: the MACs guests will see are on disk.
    state::restore(&mut config)?;
    let node = Node::start(&config)?;
    // One runtime for the whole control plane; none when nothing asks for one.
    let runtime = (metrics_addr.is_some() || plugin.is_some())
        .then(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("control-plane")
                .enable_all()
                .build()
        })
        .transpose()
        .context("cannot start the control-plane runtime")?;
    let n = node.clone();
    let status: control::StatusFn = Arc::new(move || n.status());
    let n = node.clone();
    let netdev: control::NetdevFn = Arc::new(move |req| n.netdev_request(req).map_err(refusal));
    let control_server = control::ControlServer::start_with(&control_path, status, Some(netdev))
        .with_context(|| format!("cannot open the control socket {}", control_path.display()))?;
    let metrics = match metrics_addr
        .zip(runtime.as_ref())
        .map(|(addr, rt)| MetricsServer::for_node_on(rt.handle(), addr, node.clone()))
        .transpose()
    {
        Ok(metrics) => metrics,
        Err(e) => {
            // Nothing was advertised yet: take the node down before reporting.
            control_server.shutdown();
            node.shutdown();
            return Err(e.into());
        }
    };

    let ready = node.status();
    banner::print_ready(&config, &ready.vfs);
    tracing::info!(vfs = ready.vfs.len(), run_dir = %config.run_dir.display(), "agent ready");

    // After the node is up: a VF is never advertised before its server is.
    let plugins = match (plugin, runtime.as_ref()) {
        (Some(paths), Some(rt)) => {
            let inventory = Arc::new(NodeInventory::new(node.clone(), &config));
            Some(emu_device_plugin::DevicePlugins::start_on(
                rt.handle(),
                plugin_config(&config, paths),
                inventory,
            ))
        }
        _ => None,
    };

    let sig = sys::wait_termination_signal();
    tracing::info!(signal = sig, "shutting down");
    if let Some(p) = plugins {
        if let Err(e) = p.shutdown() {
            tracing::warn!(error = %e, "device plugin ended with an error");
        }
    }
    if let Some(m) = metrics {
        m.shutdown();
    }
    if let Some(rt) = runtime {
        rt.shutdown_timeout(std::time::Duration::from_secs(5));
    }
    control_server.shutdown();
    let summary = node.shutdown();
    for s in &summary.vfs {
        tracing::info!(
            vf = %s.id,
            tx_packets = s.counters.tx_packets,
            rx_packets = s.counters.rx_packets,
            tx_drops = s.counters.tx_drops,
            rx_drops = s.counters.rx_drops,
            "final counters"
        );
    }
    Ok(())
}
