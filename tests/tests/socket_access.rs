//! Who may use which socket of a running agent: the run dir, control socket and state file
//! are the agent's alone; a VF socket is usable by its PF's `socketOwner` and nobody else.
//! Checked with stat and by connecting as other users (this test binary re-run under
//! another uid). Plain `cargo test`; the ownership part needs root and is skipped otherwise.

use emu_sriov_tests::agent::{agent_bin, Agent};
use emu_sriov_tests::proc::RunDir;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const READY: Duration = Duration::from_secs(30);
/// Set (to a socket path) in the re-run test binary: connect there and report.
const CONNECT_ENV: &str = "EMU_SRIOV_TEST_CONNECT";

/// (mode, uid, gid) of `path`, without following a link.
fn stat(path: &Path) -> (u32, u32, u32) {
    let m =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// (effective uid, effective gid) of this process.
fn me() -> (u32, u32) {
    // SAFETY: geteuid(2) and getegid(2) take no arguments and always succeed.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

fn is_root() -> bool {
    me().0 == 0
}

/// Whether uid:gid can connect (std drops root's supplementary groups when it sets the uid) to `socket`.
fn can_connect(uid: u32, gid: u32, socket: &Path) -> bool {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([
            "--exact",
            "connect_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CONNECT_ENV, socket)
        .uid(uid)
        .gid(gid)
        .output()
        .expect("re-run the test binary as another user");
    let text = String::from_utf8_lossy(&out.stdout);
    match (text.contains("CONNECT-OK"), text.contains("CONNECT-DENIED")) {
        (true, false) => true,
        (false, true) => false,
        _ => panic!(
            "helper as {uid}:{gid} gave no verdict: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Not a test of its own: the body of [`can_connect`]'s child. Without the variable it does
/// nothing.
#[test]
fn connect_helper() {
    let Some(path) = std::env::var_os(CONNECT_ENV) else {
        return;
    };
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(_) => println!("CONNECT-OK"),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            println!("CONNECT-DENIED")
        }
        Err(e) => println!("CONNECT-ERROR {e}"),
    }
}

#[test]
fn without_owner_everything_is_the_agents_alone() {
    let mut dir = RunDir::new("access-private").expect("temp dir");
    let bin = agent_bin().expect("build emu-sriov-agent");
    let agent = Agent::start_pfs(&bin, dir.path(), &["igb:1", "avf:1"], READY).expect("agent");
    let me = me();
    let run = &agent.run_dir;
    assert_eq!(stat(run), (0o700, me.0, me.1), "run dir");
    assert_eq!(stat(&run.join("vfs")), (0o700, me.0, me.1), "vfs/");
    assert_eq!(stat(&run.join("control.sock")).0, 0o600, "control.sock");
    assert_eq!(stat(&run.join("state.json")).0, 0o600, "state.json");
    for vf in agent.vfs().expect("list") {
        let vf_dir = vf.socket.parent().unwrap();
        assert_eq!(stat(vf_dir), (0o700, me.0, me.1), "{}", vf_dir.display());
        assert_eq!(
            stat(&vf.socket),
            (0o600, me.0, me.1),
            "{}",
            vf.socket.display()
        );
    }
    if is_root() {
        assert!(!can_connect(107, 107, &agent.vfs().unwrap()[0].socket));
    }
    dir.succeed();
}

#[test]
fn each_pf_socket_is_usable_by_its_owner_only() {
    if !is_root() {
        eprintln!("skipped: handing sockets to other users needs root");
        return;
    }
    let mut dir = RunDir::new("access-owner").expect("temp dir");
    let config = dir.path().join("agent.yaml");
    // Two tenants: igb0's sockets for 107:107 (the global owner), avf0's for 108:108.
    std::fs::write(
        &config,
        "socketOwner: {uid: 107, gid: 107}\n\
         pfs:\n  - {model: igb, vfs: 2}\n  - {model: avf, vfs: 1, socketOwner: {uid: 108, gid: 108}}\n",
    )
    .expect("write config");
    let bin = agent_bin().expect("build emu-sriov-agent");
    let agent = Agent::start_with(
        &bin,
        dir.path(),
        &["--config", config.to_str().unwrap()],
        READY,
    )
    .expect("agent");
    let run = &agent.run_dir;
    assert_eq!(stat(run), (0o711, 0, 0), "run dir");
    assert_eq!(stat(&run.join("vfs")), (0o711, 0, 0), "vfs/");
    assert_eq!(
        stat(&run.join("control.sock")),
        (0o600, 0, 0),
        "control.sock"
    );
    assert_eq!(stat(&run.join("state.json")), (0o600, 0, 0), "state.json");
    let vfs = agent.vfs().expect("list");
    for vf in &vfs {
        let owner = if vf.id.starts_with("avf0") { 108 } else { 107 };
        let vf_dir = vf.socket.parent().unwrap();
        assert_eq!(stat(vf_dir), (0o750, 0, owner), "{}", vf_dir.display());
        assert_eq!(
            stat(&vf.socket),
            (0o660, owner, owner),
            "{}",
            vf.socket.display()
        );
        assert!(
            can_connect(owner, owner, &vf.socket),
            "{} for its owner",
            vf.id
        );
        let other = if owner == 107 { 108 } else { 107 };
        assert!(
            !can_connect(other, other, &vf.socket),
            "{} for {other}",
            vf.id
        );
        assert!(
            !can_connect(4242, 4242, &vf.socket),
            "{} for a stranger",
            vf.id
        );
    }
    for uid in [107, 108] {
        assert!(
            !can_connect(uid, uid, &run.join("control.sock")),
            "control socket open to {uid}"
        );
    }
    dir.succeed();
}
