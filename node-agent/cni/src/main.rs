//! `emu-sriov-cni`: the CNI plugin binary. A container runtime runs it with the CNI
//! environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH) and the network
//! configuration on stdin; see the library for what each command does.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

fn main() -> ExitCode {
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
