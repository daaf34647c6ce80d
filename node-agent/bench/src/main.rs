//! `emu-sriov-bench`: the dataplane measured with synthetic guests (see the library docs).
//! Kept out of the agent binary: production nodes do not link the userspace driver.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

const AFTER_HELP: &str = "Examples:
  cargo run --release -p emu-sriov-bench
  cargo run --release -p emu-sriov-bench -- --vfs 2 --sizes 64 --instructions
  emu-sriov-bench --vfs 2 --sizes 64 --runs 5 --output json";

/// Measure the dataplane with synthetic guests and print a table (or JSON).
///
/// Each scenario starts its own node in a temporary directory and attaches one userspace
/// igbvf driver per VF over vfio-user (queue pages mapped, DMA memory shared), VF 2k
/// sending to VF 2k+1. Also measured in the same run: a copy-only reference loop (the
/// "VS REF" column), one-way latency at 10% load, and the cost of an idle VF per poll
/// pass. Build with --release; figures vary with machine load, compare within one run.
#[derive(Debug, Clone, Parser)]
#[command(name = "emu-sriov-bench", version, after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Log filter for stderr, e.g. `info`. [default: $RUST_LOG, else `warn`: the bench
    /// starts and stops many nodes, whose lifecycle logs would drown its progress]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// VF counts to measure (comma-separated; pairs send to each other).
    #[arg(long, value_delimiter = ',', default_values_t = vec![2usize, 8, 64])]
    pub vfs: Vec<usize>,
    /// Frame sizes in bytes (comma-separated, 60..=2048).
    #[arg(long, value_delimiter = ',', default_values_t = vec![64usize, 1500])]
    pub sizes: Vec<usize>,
    /// Repetitions per scenario; the table shows the median.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Length of each repetition in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub duration_ms: u64,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Also count the dataplane's instructions per packet with `valgrind --tool=callgrind`
    /// (the stable figure to track over time; adds about a minute per scenario). Needs
    /// valgrind, and a build without AVX-512 (the default target; not target-cpu=native).
    #[arg(long)]
    pub instructions: bool,
    /// Frames the --instructions probe moves per scenario (the count is per frame, so more
    /// frames only average longer).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub instruction_frames: u64,
    /// Internal: the single-threaded run that --instructions measures (VFS:SIZE:PACKETS).
    #[arg(long, hide = true, value_name = "VFS:SIZE:PACKETS")]
    pub probe: Option<String>,
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns, for people.
    Table,
    /// The report as JSON, for scripts.
    Json,
}

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    init_logging(args.log_level.as_deref());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("emu-sriov-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; stdout is for the report. `--log-level` wins over `RUST_LOG`.
fn init_logging(level: Option<&str>) {
    let filter = level
        .map(EnvFilter::try_new)
        .or_else(|| std::env::var("RUST_LOG").ok().map(EnvFilter::try_new))
        .and_then(Result::ok)
        .unwrap_or_else(|| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(spec) = &args.probe {
        let parts: Vec<u64> = spec.split(':').filter_map(|x| x.parse().ok()).collect();
        let [vfs, size, packets] = parts[..] else {
            anyhow::bail!("--probe takes VFS:SIZE:PACKETS, e.g. 2:64:200000");
        };
        let got = emu_sriov_bench::stepped_probe(vfs as usize, size as usize, packets)?;
        println!("probe-packets {got}");
        return Ok(());
    }
    if args.vfs.iter().any(|&n| n < 2 || n % 2 != 0) {
        anyhow::bail!("--vfs takes even counts of at least 2 (VFs send in pairs)");
    }
    if args.sizes.iter().any(|&s| !(60..=2048).contains(&s)) {
        anyhow::bail!("--sizes takes frame sizes from 60 to 2048 bytes");
    }
    let plan = emu_sriov_bench::BenchPlan {
        vf_counts: args.vfs,
        frame_sizes: args.sizes,
        runs: args.runs.max(1),
        duration: std::time::Duration::from_millis(args.duration_ms.max(10)),
        instructions: args.instructions,
        probe_packets: args.instruction_frames.max(1),
        ..Default::default()
    };
    let report = emu_sriov_bench::run(&plan)?;
    match args.output {
        OutputFormat::Table => print!("{}", emu_sriov_bench::render(&report)),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        ),
    }
    Ok(())
}
