//! `emu-sriov-cni`: the CNI plugin binary. A container runtime runs it with the CNI
//! environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH) and the network
//! configuration on stdin; see the library for what each command does.
//!
//! Run by hand (no CNI_COMMAND): `emu-sriov-cni install DIR` copies the plugin into a node's
//! CNI bin dir; `--help` says so.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

const USAGE: &str = "\
emu-sriov-cni: the CNI plugin for emu-sriov netdev VFs.

A container runtime (or Multus) runs it with CNI_COMMAND=ADD|DEL|CHECK|STATUS|GC|VERSION and the
network configuration (a NAD that a VfNetwork renders) on stdin.

By hand:
  emu-sriov-cni install DIR   copy this binary to DIR/emu-sriov-cni (atomically), e.g. the node's
                              /opt/cni/bin; the agent DaemonSet's init container does this
  emu-sriov-cni --help        this text
";

fn main() -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_none() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["install", dir] => {
                let installed = std::env::current_exe().and_then(|exe| {
                    emu_sriov_cni::install::install(&exe, std::path::Path::new(dir))
                });
                return match installed {
                    Ok(path) => {
                        println!("emu-sriov-cni: installed {}", path.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("emu-sriov-cni: error: cannot install into {dir}: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            ["--help" | "-h" | "help"] => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            [] => {}
            _ => {
                eprint!("emu-sriov-cni: unknown arguments {args:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let env = emu_sriov_cni::conf::Env::from_env();
    let mut stdin = Vec::new();
    if env.command != "VERSION" {
        let _ = std::io::stdin().take(1 << 20).read_to_end(&mut stdin);
    }
    // Errors carry the configuration's cniVersion when it can be read.
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "1.1.0".to_owned());
    let mut out = std::io::stdout();
    match emu_sriov_cni::plugin::run(&env, &stdin) {
        Ok(text) => {
            if !text.is_empty() {
                let _ = writeln!(out, "{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            eprintln!("emu-sriov-cni: {} {}: {e}", env.command, env.if_name);
            ExitCode::FAILURE
        }
    }
}
