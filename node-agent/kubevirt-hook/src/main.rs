//! `emu-sriov-kubevirt-hook`: the KubeVirt hook sidecar (`serve`, what the sidecar image runs)
//! and the same edit offline (`edit`, to see what a domain becomes).

use anyhow::Context;
use clap::{Parser, Subcommand};
use emu_sriov_kubevirt_hook::hook::error_chain;
use emu_sriov_kubevirt_hook::server::{serve, HOOK_SOCKET_DIR};
use emu_sriov_kubevirt_hook::service::Hook;
use emu_sriov_kubevirt_hook::{on_define_domain, HookConfig, SocketCheck};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "KubeVirt hook sidecar: attaches the emu-sriov VFs a virt-launcher pod was given to \
             its domain as vfio-user-pci devices (shared memfd RAM, <qemu:commandline>)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
}

#[derive(clap::Args)]
struct Common {
    /// Name reported to virt-launcher (Info) and the socket's file name.
    #[arg(long, default_value = "emu-sriov")]
    name: String,
    /// Network binding plugin name VMI interfaces use (`binding: {name}`); KubeVirt sets
    /// NETWORK_BINDING_PLUGIN_NAME for binding sidecars.
    #[arg(long, env = "NETWORK_BINDING_PLUGIN_NAME", default_value = "emu-sriov")]
    binding: String,
    /// KubeVirt network-info (downward API, `downwardAPI: device-info`); read when present.
    #[arg(long, default_value = "/etc/podinfo/network-info")]
    network_info: PathBuf,
    /// Check that each VF's socket exists before answering: off (the sidecar cannot see the
    /// compute container's mounts), container (the /var/run/emu-sriov path), host (the node
    /// path from the device plugin env).
    #[arg(long, value_enum, default_value = "off")]
    check_sockets: SocketCheck,
}

impl Common {
    fn config(self) -> HookConfig {
        HookConfig {
            name: self.name,
            binding: self.binding,
            network_info: Some(self.network_info),
            env: std::env::vars().collect(),
            check_sockets: self.check_sockets,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve KubeVirt's hook API on <socket-dir>/<name>.sock until Shutdown or SIGTERM.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Where virt-launcher looks for hook sockets.
        #[arg(long, default_value = HOOK_SOCKET_DIR)]
        socket_dir: PathBuf,
    },
    /// Print the domain OnDefineDomain would return for a domain XML and a VMI JSON file.
    Edit {
        #[command(flatten)]
        common: Common,
        /// The libvirt domain XML (as virt-launcher would send it).
        #[arg(long)]
        domain: PathBuf,
        /// The VirtualMachineInstance, JSON.
        #[arg(long)]
        vmi: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log_level))
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Edit {
            common,
            domain,
            vmi,
        } => {
            let d =
                std::fs::read(&domain).with_context(|| format!("reading {}", domain.display()))?;
            let v = std::fs::read(&vmi).with_context(|| format!("reading {}", vmi.display()))?;
            match on_define_domain(&common.config(), &d, &v) {
                Ok((xml, _)) => {
                    use std::io::Write;
                    std::io::stdout().write_all(&xml)?;
                    Ok(())
                }
                Err(e) => anyhow::bail!("{}", error_chain(&e)),
            }
        }
        Cmd::Serve { common, socket_dir } => {
            let path = socket_dir.join(format!("{}.sock", common.name));
            let hook = Hook::new(common.config());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let stop = async {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .ok();
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {},
                        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
                    }
                };
                serve(hook, &path, stop).await
            })
            .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))
        }
    }
}
