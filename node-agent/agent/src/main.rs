//! `emu-sriov-agent`: command line → validated config → run.

mod cli;
mod run;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, OutputFormat};
use emu_sriov_agent::config::AgentConfig;
use emu_sriov_agent::{banner, control, status};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref(), "info");
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line: what failed, then why.
            eprintln!("emu-sriov-agent: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; stdout is for command output. `--log-level` wins over `RUST_LOG`.
fn init_logging(level: Option<&str>, default_level: &str) {
    let filter = level
        .map(EnvFilter::try_new)
        .or_else(|| std::env::var("RUST_LOG").ok().map(EnvFilter::try_new))
        .and_then(Result::ok)
        .unwrap_or_else(|| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) if args.cluster_mode() => {
            let options = emu_sriov_agent::cluster::ClusterOptions::try_from(&args)?;
            emu_sriov_agent::cluster::run(options)
        }
        Command::Run(args) => {
            let config = AgentConfig::try_from(&args)?;
            tracing::info!(
                node = %config.node_name,
                run_dir = %config.run_dir.display(),
                pfs = config.pfs.len(),
                vfs = config.vfs().count(),
                "configuration loaded"
            );
            run::run(config, args.plugin_paths(), args.metrics_addr)
        }
        Command::List(args) => {
            let run_dir = cli::run_dir_or_default(args.run_dir.as_deref())?;
            let status = control::query(&run_dir)?;
            match args.output {
                OutputFormat::Table => print!("{}", status::render_table(&status)),
                OutputFormat::Json => {
                    println!(
                        "{}",
                        serde_json::to_string(&status).context("encoding the status")?
                    )
                }
            }
            Ok(())
        }
        Command::QemuArgs(args) => {
            let run_dir = cli::run_dir_or_default(args.run_dir.as_deref())?;
            let status = control::query(&run_dir)?;
            let Some(vf) = status.vfs.iter().find(|vf| vf.id == args.vf_id) else {
                let ids: Vec<&str> = status.vfs.iter().map(|vf| vf.id.as_str()).collect();
                anyhow::bail!(
                    "no VF `{}` in the agent with run dir {}: known VFs are {}",
                    args.vf_id,
                    run_dir.display(),
                    ids.join(", ")
                );
            };
            println!("{}", banner::qemu_device_arg(&vf.socket));
            Ok(())
        }
    }
}
