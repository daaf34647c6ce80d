//! The agent restarts (SIGTERM, SIGKILL, SIGKILL mid-traffic, a corrupt or outdated state
//! file, a changed config) on the same run dir: VF ids, MACs and socket paths stay; userspace
//! igbvf drivers (`emu-vf-driver`) that attach again to the same sockets pass traffic again,
//! every frame counted. Plain `cargo test` (no guest).

use emu_sriov_tests::agent::{agent_bin, Agent};
use emu_sriov_tests::proc::RunDir;
use emu_sriov_tests::traffic::{self, RING};
use emu_vf_driver::client::{attach, AttachedVf};
use emu_vf_driver::Bar0 as _;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PFS: &[&str] = &["igb:2", "avf:2"];
const READY: Duration = Duration::from_secs(30);

const FRAMES: u64 = 5_000;

/// What must survive a restart: (id, MAC, socket) per VF.
type Identity = Vec<(String, String, PathBuf)>;

fn identity(agent: &Agent) -> Identity {
    agent
        .vfs()
        .expect("list")
        .into_iter()
        .map(|v| (v.id, v.mac, v.socket))
        .collect()
}

fn start(tag: &str, args: &[&str]) -> (RunDir, Agent) {
    let dir = RunDir::new(tag).expect("temp dir");
    let bin = agent_bin().expect("build emu-sriov-agent");
    let agent = Agent::start_with(&bin, dir.path(), args, READY).expect("agent");
    (dir, agent)
}

fn pf_args() -> Vec<&'static str> {
    PFS.iter().flat_map(|pf| ["--pf", *pf]).collect()
}

/// The socket of VF `id`.
fn socket(ids: &Identity, id: &str) -> PathBuf {
    ids.iter()
        .find(|(i, _, _)| i == id)
        .unwrap_or_else(|| panic!("no VF {id} in {ids:?}"))
        .2
        .clone()
}

/// The two igbvf clients, attached (again) to the agent's igb0-vf0 and igb0-vf1.
fn attach_pair(ids: &Identity) -> (AttachedVf, AttachedVf) {
    let a = attach(&socket(ids, "igb0-vf0"), RING).expect("attach igb0-vf0");
    let b = attach(&socket(ids, "igb0-vf1"), RING).expect("attach igb0-vf1");
    (a, b)
}

/// Sends `frames` frames a → b (`traffic::transfer`: fewer in flight than the RX ring holds) and checks that exactly
/// `frames` arrive (and nothing else) within 30 s.
fn transfer(a: &mut AttachedVf, b: &mut AttachedVf, frames: u64) {
    traffic::transfer(a, b, frames, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    // Nothing beyond what was sent shows up late.
    std::thread::sleep(Duration::from_millis(50));
    let mem = b.mem.lock();
    let late = b.driver.poll_rx(&mem, &mut [], &mut |_| {}).expect("rx");
    assert_eq!(late, 0, "frames beyond the {frames} sent arrived");
}

fn counter(agent: &Agent, id: &str, name: &str) -> u64 {
    agent
        .vf(id)
        .expect("VF listed")
        .counter(name)
        .expect("counter")
}

fn state(run_dir: &Path) -> Value {
    let text = std::fs::read_to_string(run_dir.join("state.json")).expect("read state.json");
    serde_json::from_str(&text).expect("state.json is JSON")
}

/// state.json holds exactly what `list` shows: version 1, each VF's id, MAC and socket.
fn assert_state_matches(agent: &Agent, ids: &Identity) {
    let st = state(&agent.run_dir);
    assert_eq!(st["version"], 1, "{st}");
    let recorded: Identity = st["vfs"]
        .as_array()
        .expect("vfs array")
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_owned(),
                v["mac"].as_str().unwrap().to_owned(),
                PathBuf::from(v["socket"].as_str().unwrap()),
            )
        })
        .collect();
    let mut listed = ids.clone();
    listed.sort();
    let mut recorded = recorded;
    recorded.sort();
    assert_eq!(recorded, listed, "state.json vs list");
}

fn log_text(agent: &Agent) -> String {
    std::fs::read_to_string(&agent.log).expect("agent log")
}

/// Stops with `signal`, restarts; returns (time to exit, time from restart to ready).
fn bounce(agent: &mut Agent, signal: i32) -> (Duration, Duration) {
    let t0 = Instant::now();
    let status = agent
        .stop_with(signal, Duration::from_secs(10))
        .expect("stop");
    let stopped = t0.elapsed();
    if signal == libc::SIGTERM {
        assert!(status.success(), "SIGTERM exit: {status}");
    }
    let t1 = Instant::now();
    agent.restart(READY).expect("restart");
    (stopped, t1.elapsed())
}

#[test]
fn sigterm_restart_keeps_ids_macs_sockets_and_traffic_resumes() {
    let (mut dir, mut agent) = start("restart-term", &pf_args());
    let before = identity(&agent);
    assert_eq!(before.len(), 4);
    assert_state_matches(&agent, &before);
    let (mut a, mut b) = attach_pair(&before);
    transfer(&mut a, &mut b, FRAMES);
    assert_eq!(counter(&agent, "igb0-vf1", "rx_packets"), FRAMES);

    // A second agent on the same run dir (another config) is refused before it touches the
    // first one's state.
    let recorded = std::fs::read(agent.run_dir.join("state.json")).expect("state.json");
    let second = std::process::Command::new(agent_bin().expect("agent binary"))
        .args([
            "run",
            "--pf",
            "igb:1",
            "--node-name",
            "intruder",
            "--run-dir",
        ])
        .arg(&agent.run_dir)
        .output()
        .expect("run a second agent");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && stderr.contains("already serving"),
        "second agent: {} {stderr}",
        second.status
    );
    assert_eq!(
        std::fs::read(agent.run_dir.join("state.json")).expect("state.json"),
        recorded,
        "the second agent rewrote state.json"
    );
    assert_eq!(identity(&agent), before);

    // Clients still attached while the agent stops.
    let (stopped, ready) = bounce(&mut agent, libc::SIGTERM);
    drop((a, b));
    let after = identity(&agent);
    assert_eq!(after, before, "ids, MACs or sockets changed across SIGTERM");
    assert_state_matches(&agent, &after);
    assert!(
        log_text(&agent).contains("state file matches the configuration"),
        "no state log line"
    );

    let (mut a, mut b) = attach_pair(&after);
    transfer(&mut a, &mut b, FRAMES);
    transfer(&mut b, &mut a, FRAMES);
    assert_eq!(counter(&agent, "igb0-vf1", "rx_packets"), FRAMES);
    assert_eq!(counter(&agent, "igb0-vf0", "rx_packets"), FRAMES);
    println!("SIGTERM: exited in {stopped:?}, ready again {ready:?} after restart");
    dir.succeed();
}

#[test]
fn sigkill_restart_replaces_stale_sockets_and_traffic_resumes() {
    let (mut dir, mut agent) = start("restart-kill", &pf_args());
    let before = identity(&agent);
    let (mut a, mut b) = attach_pair(&before);
    transfer(&mut a, &mut b, 1000);
    drop((a, b));

    // Idle SIGKILL: the sockets stay behind, nobody listening.
    let (_, ready) = bounce(&mut agent, libc::SIGKILL);
    assert_eq!(identity(&agent), before, "changed across SIGKILL");
    let log = log_text(&agent);
    assert!(
        log.contains("removing stale vfio-user socket"),
        "stale sockets not replaced"
    );
    assert!(log.contains("removing stale control socket"), "{log}");
    let (mut a, mut b) = attach_pair(&before);
    transfer(&mut a, &mut b, FRAMES);
    println!("SIGKILL idle: ready again {ready:?} after restart");

    // SIGKILL while a client is attached and sending: frames in flight are lost with the
    // agent; the client's own memory stays valid, and it can attach again.
    let f = traffic::frame(&b, &a);
    let pid = agent.pid().expect("running");
    let mut queued = 0u64;
    let mut killed_at = None;
    for round in 0..200u32 {
        {
            let mem = a.mem.lock();
            while a.driver.queue_tx(&mem, &f).expect("queue") {
                queued += 1;
            }
            a.driver.flush();
            let _ = a.driver.reclaim(&mem);
        }
        {
            let mem = b.mem.lock();
            let _ = b.driver.poll_rx(&mem, &mut [], &mut |_| {});
        }
        if round == 20 {
            agent
                .stop_with(libc::SIGKILL, Duration::from_secs(10))
                .expect("SIGKILL");
            killed_at = Some(queued);
        }
    }
    assert!(
        killed_at.is_some_and(|q| q > 0),
        "nothing was sent before the kill"
    );
    // Trapped register accesses of the orphaned client fail softly (all-ones), no hang.
    assert_eq!(a.driver.bar().read32(0x0008), u32::MAX);
    drop((a, b));
    let t = Instant::now();
    agent
        .restart(READY)
        .expect("restart after SIGKILL mid-traffic");
    let ready = t.elapsed();
    assert_ne!(agent.pid(), Some(pid));
    assert_eq!(
        identity(&agent),
        before,
        "changed across SIGKILL mid-traffic"
    );
    let (mut a, mut b) = attach_pair(&before);
    transfer(&mut a, &mut b, FRAMES);
    transfer(&mut b, &mut a, FRAMES);
    assert_eq!(counter(&agent, "igb0-vf1", "rx_packets"), FRAMES);
    assert_eq!(counter(&agent, "igb0-vf0", "rx_packets"), FRAMES);
    println!(
        "SIGKILL mid-traffic ({} frames queued before the kill): ready again {ready:?} after restart",
        killed_at.unwrap_or(0)
    );
    dir.succeed();
}

#[test]
fn unusable_state_file_is_reported_and_replaced() {
    let (mut dir, mut agent) = start("restart-corrupt", &pf_args());
    let before = identity(&agent);
    let path = agent.run_dir.join("state.json");
    let cases: &[(&[u8], &str)] = &[
        (
            b"{\"version\":1,\"nodeName\":\"x\",\"vfs\":[{\"id\":",
            "not a state file",
        ),
        (b"\x00\x01binary garbage\xff", "not a state file"),
        (b"{\"version\":99}", "schema version 99"),
    ];
    for (bytes, why) in cases {
        agent
            .stop_with(libc::SIGTERM, Duration::from_secs(10))
            .expect("stop");
        std::fs::write(&path, bytes).expect("corrupt state.json");
        let log_before = log_text(&agent).len();
        agent
            .restart(READY)
            .expect("agent starts despite the state file");
        let log = log_text(&agent);
        let new = &log[log_before..];
        assert!(
            new.contains("WARN") && new.contains("unusable state file") && new.contains(why),
            "no clear warning for {why}: {new}"
        );
        // Same node name: the MACs come out as on the first start.
        let now = identity(&agent);
        assert_eq!(now, before);
        assert_state_matches(&agent, &now);
    }
    let (mut a, mut b) = attach_pair(&before);
    transfer(&mut a, &mut b, 1000);
    dir.succeed();
}

#[test]
fn changed_config_keeps_surviving_vfs_macs_even_under_a_new_node_name() {
    let mut args = vec!["--node-name", "node-a"];
    args.extend(pf_args());
    let (mut dir, mut agent) = start("restart-config", &args);
    let before = identity(&agent);
    agent
        .stop_with(libc::SIGTERM, Duration::from_secs(10))
        .expect("stop");
    // igb0 loses a VF, avf0 gains one, and the node is renamed (which changes derived MACs).
    agent
        .restart_with(
            &["--node-name", "node-b", "--pf", "igb:1", "--pf", "avf:3"],
            READY,
        )
        .expect("restart with a new config");
    let after = identity(&agent);
    let ids: Vec<&str> = after.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, ["igb0-vf0", "avf0-vf0", "avf0-vf1", "avf0-vf2"]);
    for kept in ["igb0-vf0", "avf0-vf0", "avf0-vf1"] {
        let old = before.iter().find(|v| v.0 == kept).unwrap();
        let new = after.iter().find(|v| v.0 == kept).unwrap();
        assert_eq!(old, new, "{kept} changed");
    }
    let macs: std::collections::HashSet<&str> = after.iter().map(|v| v.1.as_str()).collect();
    assert_eq!(macs.len(), 4, "MACs not unique: {after:?}");
    assert_state_matches(&agent, &after);
    let log = log_text(&agent);
    let line = log
        .lines()
        .find(|l| l.contains("reconciled"))
        .unwrap_or_else(|| panic!("no reconcile log line: {log}"));
    assert!(
        line.contains("dropped=igb0-vf1") && line.contains("added=avf0-vf2"),
        "{line}"
    );
    dir.succeed();
}
