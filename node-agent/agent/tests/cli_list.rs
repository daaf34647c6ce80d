//! `emu-sriov-agent list` / `qemu-args` as a user runs them, against an in-process control
//! server (the device wiring is not needed to test the shell).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use emu_sriov_agent::config::{ConfigFile, HostDefaults};
use emu_sriov_agent::control::ControlServer;
use emu_sriov_agent::naming;
use emu_sriov_agent::status::{AgentStatus, ClientState};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_emu-sriov-agent"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run emu-sriov-agent")
}

fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("emu-sriov-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn status_for(dir: &Path) -> AgentStatus {
    let config = ConfigFile::builtin()
        .validate_with(&HostDefaults {
            node_name: Some("test-node".into()),
            run_dir: dir.to_owned(),
        })
        .unwrap();
    let mut status = AgentStatus::configured(&config);
    status.vfs[1].state = ClientState::Attached;
    status.vfs[1].counters.rx_packets = 42;
    status
}

#[test]
fn list_prints_table_and_json_of_a_running_agent() {
    let dir = run_dir("list");
    let expected = status_for(&dir);
    let served = expected.clone();
    let _server = ControlServer::start(
        &naming::control_socket_path(&dir),
        Arc::new(move || served.clone()),
    )
    .unwrap();
    let d = dir.to_str().unwrap();

    let out = agent(&["list", "--run-dir", d, "--output", "json"]);
    assert!(out.status.success(), "{out:?}");
    let parsed: AgentStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed, expected);

    let out = agent(&["list", "--run-dir", d]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    for col in [
        "ID", "PF", "MODEL", "PCI", "MAC", "STATE", "TX PKTS", "RX PKTS", "DROPS", "SOCKET",
    ] {
        assert!(lines[0].contains(col), "{table}");
    }
    assert!(
        lines[2].starts_with("igb0-vf1") && lines[2].contains("attached"),
        "{table}"
    );

    let out = agent(&["qemu-args", "--run-dir", d, "igb0-vf2"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "{{\"driver\":\"vfio-user-pci\",\"socket\":{{\"type\":\"unix\",\"path\":\"{d}/vfs/igb0-vf2/vf.sock\"}},\"rombar\":0}}\n"
        )
    );
    let out = agent(&["qemu-args", "--run-dir", d, "igb9-vf0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("known VFs are igb0-vf0, igb0-vf1"));
}

#[test]
fn list_without_agent_fails_with_advice() {
    let dir = run_dir("none");
    let d = dir.to_str().unwrap();
    let out = agent(&["list", "--run-dir", d]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "no agent is running with run dir {d} (no control socket at {d}/control.sock): \
             start one with `emu-sriov-agent run --run-dir {d}`"
        )),
        "{stderr}"
    );
}
