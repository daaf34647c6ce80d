//! Hostile vfio-user clients against the real agent binary: malformed framing on one VF's
//! socket must leave the agent up, that VF usable by the next (well-behaved) client, and every
//! other VF unaffected — even while a stalled client sits on the first one.
//!
//! Runs in plain `cargo test` (no guest needed; it starts `emu-sriov-agent run`).

use emu_sriov_tests::agent::{agent_bin, Agent};
use emu_sriov_tests::proc::RunDir;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const VENDOR_INTEL: u16 = 0x8086;
const DEVICE_IGBVF: u16 = 0x10CA;
const CONFIG_REGION: u32 = 7;

fn header(id: u16, cmd: u16, size: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&id.to_le_bytes());
    h.extend_from_slice(&cmd.to_le_bytes());
    h.extend_from_slice(&size.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

/// A well-behaved client: VERSION, device info, region info, then the PCI ids from config
/// space through REGION_READ.
fn probe_ids(sock: &Path) -> Result<(u16, u16), String> {
    let mut c =
        vfio_user::Client::new(sock).map_err(|e| format!("connect {}: {e}", sock.display()))?;
    let mut ids = [0u8; 4];
    c.region_read(CONFIG_REGION, 0, &mut ids)
        .map_err(|e| format!("config read on {}: {e}", sock.display()))?;
    Ok((
        u16::from_le_bytes([ids[0], ids[1]]),
        u16::from_le_bytes([ids[2], ids[3]]),
    ))
}

fn send_and_close(sock: &Path, bytes: &[u8]) {
    let mut s = UnixStream::connect(sock).expect("connect to the VF socket");
    // The server may close first (that is the point); ignore write errors.
    let _ = s.write_all(bytes);
    let _ = s.flush();
    drop(s);
}

#[test]
fn malformed_clients_affect_only_their_vf_and_the_agent_stays_up() {
    let mut dir = RunDir::new("hostile").expect("temp dir");
    let bin = agent_bin().expect("build emu-sriov-agent");
    let mut agent =
        Agent::start(&bin, dir.path(), "igb:2", Duration::from_secs(30)).expect("agent starts");
    let vfs = agent.vfs().expect("list");
    let (vf0, vf1) = (vfs[0].socket.clone(), vfs[1].socket.clone());

    let mut unknown = header(1, 200, 16 + 32);
    unknown.extend_from_slice(&[0xAB; 32]);
    let mut bad_version = header(0, 1, 16 + 4 + 7);
    bad_version.extend_from_slice(&[0, 0, 0, 0]);
    bad_version.extend_from_slice(b"{\"x\":");
    bad_version.extend_from_slice(&[0xff, 0xfe]);
    let mut random = vec![0u8; 4096];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated header", vec![1, 0, 1, 0, 0x40]),
        ("size below the header", header(0, 1, 8)),
        ("size far above the limit", header(0, 10, u32::MAX)),
        ("payload shorter than size, then disconnect", {
            let mut m = header(0, 1, 16 + 100);
            m.extend_from_slice(&[0; 10]);
            m
        }),
        ("unknown command with payload", unknown),
        ("VERSION with broken JSON and no NUL", bad_version),
        ("4 KiB of random bytes", random),
    ];
    for (name, bytes) in &cases {
        send_and_close(&vf0, bytes);
        agent
            .alive()
            .unwrap_or_else(|e| panic!("agent died after '{name}': {e}"));
        assert_eq!(
            probe_ids(&vf0).unwrap_or_else(|e| panic!("vf0 unusable after '{name}': {e}")),
            (VENDOR_INTEL, DEVICE_IGBVF),
            "after '{name}'"
        );
    }

    // A client that stalls in the middle of a message holds only its own VF.
    let mut stalled = UnixStream::connect(&vf0).expect("connect vf0");
    stalled
        .write_all(&header(7, 1, 16 + 64)[..16])
        .expect("write a partial message");
    assert_eq!(
        probe_ids(&vf1).expect("vf1 serves while vf0 is stalled"),
        (VENDOR_INTEL, DEVICE_IGBVF)
    );
    agent.list().expect("list answers while vf0 is stalled");
    drop(stalled);
    assert_eq!(
        probe_ids(&vf0).expect("vf0 after the stalled client left"),
        (VENDOR_INTEL, DEVICE_IGBVF)
    );

    agent.alive().expect("agent still running at the end");
    let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(
        log.contains("protocol error"),
        "the agent logs the protocol errors it survived; log:\n{log}"
    );
    assert!(
        !log.contains("panicked"),
        "no panic in the agent log:\n{log}"
    );
    dir.succeed();
}
