//! Whole-test flows shared by the guest tests: agent VFs attached to guests, every check
//! asserted, agent counters compared with the guests' (guest-tests.md §6.1, §8).

use std::time::{Duration, Instant};

use crate::agent::{agent_bin, agent_bin_for, Agent, VfInfo};
use crate::harness::{compare_counters, GuestReport, Harness};
use crate::topology::Topology;

/// Builds (or finds) the agent and starts it with `--pf` per entry of `pfs`. A start-up exit
/// fails with `agent rejected --pf <pfs>: …`.
pub fn start_agent(h: &mut Harness, pfs: &[&str]) -> Agent {
    start_agent_with(h, pfs, &[])
}

/// [`start_agent`] with the release agent whatever `EMU_SRIOV_RELEASE` says: benchmarks
/// compare it with QEMU's optimized device models, so a debug build would measure the
/// compiler settings.
pub fn start_release_agent(h: &mut Harness, pfs: &[&str]) -> Agent {
    let bin = h.timed("agent build", |h| {
        h.check("agent binary (release)", agent_bin_for(true))
    });
    start_agent_bin(h, bin, pfs, &[])
}

/// [`start_agent`] with more `run` arguments (e.g. `["--uplink", "tap:emu0"]`).
pub fn start_agent_with(h: &mut Harness, pfs: &[&str], extra: &[&str]) -> Agent {
    let bin = h.timed("agent build", |h| h.check("agent binary", agent_bin()));
    start_agent_bin(h, bin, pfs, extra)
}

fn start_agent_bin(
    h: &mut Harness,
    bin: std::path::PathBuf,
    pfs: &[&str],
    extra: &[&str],
) -> Agent {
    let dir = h.dir().to_path_buf();
    h.add_log("agent", dir.join("agent.log"));
    let t = Instant::now();
    let mut what = pfs
        .iter()
        .map(|p| format!("--pf {p}"))
        .collect::<Vec<_>>()
        .join(" ");
    for a in extra {
        what.push(' ');
        what.push_str(a);
    }
    let mut args: Vec<&str> = pfs.iter().flat_map(|pf| ["--pf", pf]).collect();
    args.extend_from_slice(extra);
    let agent = match Agent::start_with(&bin, &dir, &args, Duration::from_secs(30)) {
        Ok(a) => a,
        Err(e) if e.starts_with("agent exited during start-up") => {
            h.fail(&format!("agent rejected {what}: {e}"))
        }
        Err(e) => h.fail(&format!("agent did not come up with {what}: {e}")),
    };
    h.record("agent start", t.elapsed());
    agent
}

/// Lists the agent's VFs, prints them and fails unless `want` (device ids, in index order, e.g.
/// `["0x1889", "0x1889"]`) are all present (matched by device id, first unused VF each).
pub fn pick_vfs(h: &Harness, agent: &Agent, want: &[&str]) -> Vec<VfInfo> {
    let vfs = h.check("agent list", agent.vfs());
    for vf in &vfs {
        eprintln!(
            "agent VF {} index={} model={} mac={} device={} state={} socket={}",
            vf.id,
            vf.index,
            vf.model,
            vf.mac,
            vf.device_id,
            vf.state,
            vf.socket.display()
        );
    }
    let mut used = vec![false; vfs.len()];
    let mut out = Vec::new();
    for w in want {
        match (0..vfs.len()).find(|&i| !used[i] && vfs[i].device_id == *w) {
            Some(i) => {
                used[i] = true;
                out.push(vfs[i].clone());
            }
            None => h.fail(&format!(
                "agent lists no (further) VF with device_id {w}; want {want:?}, have {:?}",
                vfs.iter().map(|v| &v.device_id).collect::<Vec<_>>()
            )),
        }
    }
    out
}

/// Boots `topo` (guest i on `vfs[i]`), asserts every check PASSed, every VF was `attached` at the
/// `checks` barrier, and the counter rule at the `down` barrier. Consumes the agent (stopped at
/// the end) and finishes the harness.
pub fn run_and_assert(
    mut h: Harness,
    mut agent: Agent,
    topo: &Topology,
    vfs: &[VfInfo],
    deadline: Duration,
) -> Vec<GuestReport> {
    let initrd = h.initramfs(topo);
    let n = vfs.len();
    let ids: Vec<String> = vfs.iter().map(|v| v.id.clone()).collect();
    let by_id = |all: Vec<VfInfo>| -> Vec<VfInfo> {
        ids.iter()
            .filter_map(|id| all.iter().find(|v| &v.id == id).cloned())
            .collect()
    };
    let mut states: Vec<String> = Vec::new();
    let mut at_down: Option<Vec<VfInfo>> = None;
    let reports = h.run_guests(topo, &initrd, deadline, &mut |barrier| {
        agent.alive()?;
        match barrier {
            "checks" => {
                states = by_id(agent.vfs()?)
                    .iter()
                    .map(|v| v.state.clone())
                    .collect()
            }
            "down" => at_down = Some(by_id(agent.vfs()?)),
            _ => {}
        }
        Ok(())
    });
    h.assert_all_passed(topo, &reports);
    h.ensure(
        states.len() == n && states.iter().all(|s| s == "attached"),
        || format!("VF states while the guests ran: {states:?} (want all attached)"),
    );
    let at_down = at_down.unwrap_or_else(|| h.fail("the `down` barrier never happened"));
    h.ensure(at_down.len() == n, || {
        format!("agent lost VFs: {} of {n} at `down`", at_down.len())
    });
    let problems = compare_counters(&reports, &at_down.iter().collect::<Vec<_>>());
    h.ensure(problems.is_empty(), || {
        format!(
            "agent counters disagree with the guests:\n  {}",
            problems.join("\n  ")
        )
    });
    drop(agent);
    h.finish();
    reports
}
