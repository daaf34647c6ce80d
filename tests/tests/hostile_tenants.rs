//! One tenant can never hurt another: hostile vfio-user clients against the real agent
//! binary, each next to a well-behaved flow between two other VFs that is measured before
//! and after the attack in the same test. In every case the agent stays up, only the
//! offending VF is affected (its client dropped and the VF reset, or the request refused),
//! and the other flow loses nothing.
//!
//! Plain `cargo test` (no guest): userspace igbvf drivers (`emu_vf_driver`) attach over
//! vfio-user as a VM's QEMU would.

use emu_nic_defs::igb_desc::tx as d;
use emu_nic_model::mem::GuestMemory;
use emu_sriov_tests::agent::{agent_bin, Agent, VfInfo};
use emu_sriov_tests::proc::RunDir;
use emu_sriov_tests::traffic::{Flow, RING};
use emu_vf_driver::client::{attach, attach_with, AttachedVf, DmaMemory, DMA_BASE};
use emu_vf_driver::Layout;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Frames of the bystander flow per measurement.
const FLOW_FRAMES: u64 = 2000;
const FLOW_DEADLINE: Duration = Duration::from_secs(30);

fn start(dir: &RunDir, extra: &[&str]) -> Agent {
    let bin = agent_bin().expect("build emu-sriov-agent");
    let mut args = vec!["--pf", "igb:4"];
    args.extend_from_slice(extra);
    Agent::start_with(&bin, dir.path(), &args, Duration::from_secs(30)).expect("agent starts")
}

fn vf(agent: &Agent, index: usize) -> VfInfo {
    agent
        .vfs()
        .expect("list")
        .into_iter()
        .nth(index)
        .expect("VF listed")
}

/// Waits (≤ 10 s) until `cond` holds for VF `index`'s `list` entry.
fn wait_vf(agent: &mut Agent, index: usize, what: &str, cond: impl Fn(&VfInfo) -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        agent.alive().expect("the agent must stay up");
        let v = vf(agent, index);
        if cond(&v) {
            return;
        }
        assert!(
            Instant::now() < end,
            "VF {index}: {what} did not happen: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The bystander: VF 2 → VF 3, measured once before the attack.
fn bystander(agent: &Agent) -> Flow {
    let mut f = Flow::new(&vf(agent, 2).socket, &vf(agent, 3).socket).expect("bystander");
    let t = f
        .pump(FLOW_FRAMES, FLOW_DEADLINE)
        .expect("bystander before");
    println!("bystander before: {FLOW_FRAMES} frames in {t:?}");
    f
}

/// After the attack: the agent is up, the bystander loses nothing, the offender's VF is
/// usable again by a well-behaved client, and no other VF saw a memory fault.
fn after_attack(agent: &mut Agent, flow: &mut Flow, case: &str) {
    agent.alive().expect("the agent must stay up");
    let t = flow
        .pump(FLOW_FRAMES, FLOW_DEADLINE)
        .unwrap_or_else(|e| panic!("{case}: bystander after the attack: {e}"));
    println!("{case}: bystander after: {FLOW_FRAMES} frames in {t:?}");
    assert_eq!(flow.sent, flow.received, "{case}: bystander lost frames");
    let mut again = Flow::between(
        attach(&vf(agent, 0).socket, RING).expect("re-attach VF 0"),
        attach(&vf(agent, 1).socket, RING).expect("attach VF 1"),
    );
    again
        .pump(200, FLOW_DEADLINE)
        .unwrap_or_else(|e| panic!("{case}: VF 0 after the attack: {e}"));
    for i in 1..4 {
        assert_eq!(
            vf(agent, i).counter("memory_faults").unwrap(),
            0,
            "{case}: VF {i} blamed"
        );
    }
    agent.alive().expect("the agent must stay up");
}

/// Queues `n` frames VF 0 → VF 1 without ringing the doorbell.
fn queue_frames(a: &mut AttachedVf, dst: [u8; 6], n: usize) {
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&a.driver.mac());
    frame[12..14].copy_from_slice(&0x88B5u16.to_be_bytes());
    let mem = a.mem.lock();
    for _ in 0..n {
        assert!(a.driver.queue_tx(&mem, &frame).expect("queue"));
    }
}

#[test]
fn a_client_shrinking_its_unsealed_memory_is_dropped_alone() {
    let mut dir = RunDir::new("shrink-unsealed").expect("temp dir");
    let mut agent = start(&dir, &["--allow-unsealed-memory"]);
    let mut flow = bystander(&agent);

    let mut a = attach_with(&vf(&agent, 0).socket, RING, DmaMemory::Unsealed).expect("attach");
    let dst = vf(&agent, 1).mac_bytes();
    queue_frames(&mut a, dst, 16);
    // Shrink the shared file to nothing, then ring the doorbell: the agent's next read of
    // the TX ring faults. Before the fix this killed the agent with SIGBUS.
    a.dma_file.set_len(0).expect("an unsealed memfd can shrink");
    a.driver.flush();
    wait_vf(&mut agent, 0, "memory fault recorded", |v| {
        v.counter("memory_faults").unwrap() == 1
    });
    wait_vf(&mut agent, 0, "client dropped", |v| v.state == "free");
    drop(a);
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("DMA memory faulted"), "no warning in the log");
    after_attack(&mut agent, &mut flow, "shrunk unsealed memory");
    dir.succeed();
}

#[test]
fn sealed_memory_cannot_shrink_and_unsealed_memory_is_refused() {
    let mut dir = RunDir::new("shrink-sealed").expect("temp dir");
    let mut agent = start(&dir, &[]);
    let mut flow = bystander(&agent);

    // Sealed (QEMU's memfd default): the client cannot shrink it, traffic goes on.
    {
        let a = attach(&vf(&agent, 0).socket, RING).expect("attach sealed");
        let b = attach(&vf(&agent, 1).socket, RING).expect("attach VF 1");
        let e = a.dma_file.set_len(0).expect_err("a sealed memfd shrank");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        let mut f = Flow::between(a, b);
        f.pump(500, FLOW_DEADLINE)
            .expect("sealed client's own traffic");
    }
    // Unsealed, agent default: the DMA_MAP is refused with a clear error and nothing of
    // that memory is ever touched (the client's TX frames never leave).
    {
        let mut a = attach_with(&vf(&agent, 0).socket, RING, DmaMemory::Unsealed).expect("attach");
        let tx_before = vf(&agent, 0).counter("tx_packets").unwrap();
        queue_frames(&mut a, vf(&agent, 1).mac_bytes(), 8);
        a.dma_file.set_len(0).expect("shrink");
        a.driver.flush();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(vf(&agent, 0).counter("tx_packets").unwrap(), tx_before);
        assert_eq!(vf(&agent, 0).counter("memory_faults").unwrap(), 0);
        let log = std::fs::read_to_string(&agent.log).unwrap();
        assert!(
            log.contains("not sealed against shrinking") && log.contains("memory-backend-memfd"),
            "the refusal should say what to do; agent.log:\n{log}"
        );
    }
    after_attack(&mut agent, &mut flow, "sealed / refused");
    dir.succeed();
}

#[test]
fn a_region_unmapped_while_its_queue_runs_hurts_only_that_vf() {
    let mut dir = RunDir::new("unmap-running").expect("temp dir");
    let mut agent = start(&dir, &[]);
    let mut flow = bystander(&agent);

    let a = attach(&vf(&agent, 0).socket, RING).expect("attach");
    let b = attach(&vf(&agent, 1).socket, RING).expect("attach VF 1");
    let mut f = Flow::between(a, b);
    f.pump(300, FLOW_DEADLINE).expect("VF 0 traffic before");
    // Unmap the rings' memory behind the device's back, then keep sending.
    let size = Layout::bytes(RING).next_multiple_of(4096);
    f.tx.driver
        .bar()
        .0
        .dma_unmap(DMA_BASE, size)
        .expect("DMA_UNMAP");
    let tx_before = vf(&agent, 0).counter("tx_packets").unwrap();
    queue_frames(&mut f.tx, f.rx.driver.mac(), 64);
    f.tx.driver.flush();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        vf(&agent, 0).counter("tx_packets").unwrap(),
        tx_before,
        "frames left a VF whose memory is unmapped"
    );
    drop(f);
    after_attack(&mut agent, &mut flow, "unmapped while running");
    dir.succeed();
}

/// A TSO request with MSS 1 (65 000 frames from one descriptor) is dropped and counted;
/// one with the smallest allowed MSS is segmented within the pass budget while the
/// bystander keeps its pace.
#[test]
fn tso_with_a_tiny_mss_cannot_stall_the_others() {
    let mut dir = RunDir::new("tso-mss1").expect("temp dir");
    let mut agent = start(&dir, &[]);
    let mut flow = bystander(&agent);

    let mut a = attach(&vf(&agent, 0).socket, RING).expect("attach");
    let dst = vf(&agent, 1).mac_bytes();
    let layout = a.driver.layout();
    // One 64 KiB TCP/IPv4 packet spanning the contiguous TX buffers.
    let len = 0xffff_usize;
    let buf = layout.tx_buf(0);
    let mut pkt = vec![0u8; len];
    pkt[..6].copy_from_slice(&dst);
    pkt[6..12].copy_from_slice(&a.driver.mac());
    pkt[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    pkt[14] = 0x45;
    pkt[22] = 64;
    pkt[23] = 6; // TCP
    pkt[46] = 0x50; // data offset 5 words
    pkt[47] = 0x18;
    {
        let mem = a.mem.lock();
        mem.write(buf, &pkt).expect("write the TSO packet");
    }
    let ctx = |mss: u32| -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0..4].copy_from_slice(&(14u32 << d::MACLEN_SHIFT | 20).to_le_bytes());
        let tucmd = d::TUCMD_IPV4 | d::TUCMD_L4T_TCP | d::DTYP_CTXT | d::DCMD_DEXT;
        c[8..12].copy_from_slice(&tucmd.to_le_bytes());
        c[12..16].copy_from_slice(&(mss << d::MSS_SHIFT | 20 << d::L4LEN_SHIFT).to_le_bytes());
        c
    };
    let data = {
        let mut x = [0u8; 16];
        x[0..8].copy_from_slice(&buf.to_le_bytes());
        let cmd = d::DTYP_DATA
            | d::DCMD_DEXT
            | d::DCMD_IFCS
            | d::DCMD_EOP
            | d::DCMD_RS
            | d::DCMD_TSE
            | len as u32;
        x[8..12].copy_from_slice(&cmd.to_le_bytes());
        let payload = (len - 54) as u32;
        x[12..16].copy_from_slice(&(payload << d::PAYLEN_SHIFT | d::POPTS_TXSM).to_le_bytes());
        x
    };
    let drops_before = vf(&agent, 0).counter("tx_bad_descriptors").unwrap();
    // MSS 1, sixty times over: every one dropped and counted.
    {
        let mem = a.mem.lock();
        for _ in 0..60 {
            assert!(a.driver.queue_tx_raw(&mem, &[ctx(1), data]).unwrap());
        }
    }
    a.driver.flush();
    wait_vf(&mut agent, 0, "60 TSO drops counted", |v| {
        v.counter("tx_bad_descriptors").unwrap() >= drops_before + 60
    });
    let t = flow
        .pump(FLOW_FRAMES, FLOW_DEADLINE)
        .expect("bystander during MSS 1");
    println!("bystander after 60 MSS-1 TSO packets: {FLOW_FRAMES} frames in {t:?}");
    // The smallest MSS allowed (64): ~1000 frames per packet, 60 packets queued. They are
    // segmented a budget at a time while the bystander runs next to them.
    let tx_before = vf(&agent, 0).counter("tx_packets").unwrap();
    {
        let mem = a.mem.lock();
        for _ in 0..60 {
            assert!(a.driver.queue_tx_raw(&mem, &[ctx(64), data]).unwrap());
        }
    }
    a.driver.flush();
    let t = flow
        .pump(FLOW_FRAMES, FLOW_DEADLINE)
        .expect("bystander during MSS 64");
    println!("bystander during 60 MSS-64 TSO packets: {FLOW_FRAMES} frames in {t:?}");
    wait_vf(&mut agent, 0, "TSO segments sent", |v| {
        v.counter("tx_packets").unwrap() > tx_before
    });
    drop(a);
    after_attack(&mut agent, &mut flow, "TSO with a tiny MSS");
    dir.succeed();
}

/// "eventfds" that are pipes, FIFOs, sockets or files are refused; the VF keeps working.
#[test]
fn bogus_eventfds_are_refused() {
    let mut dir = RunDir::new("bogus-eventfds").expect("temp dir");
    let mut agent = start(&dir, &[]);
    let mut flow = bystander(&agent);

    let mut a = attach(&vf(&agent, 0).socket, RING).expect("attach");
    let (pipe_r, pipe_w) = std::io::pipe().unwrap();
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let file = std::fs::File::create(dir.path().join("not-an-eventfd")).unwrap();
    let devnull = std::fs::File::open("/dev/null").unwrap();
    const MSIX: u32 = 2;
    const EVENTFD_TRIGGER: u32 = 1 << 2 | 1 << 5;
    for fd in [
        pipe_w.as_raw_fd(),
        pipe_r.as_raw_fd(),
        sock.as_raw_fd(),
        file.as_raw_fd(),
        devnull.as_raw_fd(),
    ] {
        a.driver
            .bar()
            .0
            .set_irqs(MSIX, EVENTFD_TRIGGER, 0, 1, &[fd])
            .expect("SET_IRQS round trip");
    }
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("not an eventfd"), "no refusal logged:\n{log}");
    // The VF itself still works.
    let b = attach(&vf(&agent, 1).socket, RING).expect("attach VF 1");
    let mut f = Flow::between(a, b);
    f.pump(300, FLOW_DEADLINE)
        .expect("VF 0 traffic after bogus eventfds");
    drop(f);
    after_attack(&mut agent, &mut flow, "bogus eventfds");
    dir.succeed();
}

/// A client SIGKILLed while its rings are live: the agent drops it, the VF is free for
/// the next client, the bystander is unaffected.
#[test]
fn a_client_killed_mid_transfer_affects_only_its_vf() {
    let mut dir = RunDir::new("killed-client").expect("temp dir");
    let mut agent = start(&dir, &[]);
    let mut flow = bystander(&agent);

    let dst = vf(&agent, 1).mac.clone();
    let mut child = Command::new(env!("CARGO_BIN_EXE_emu-test-sender"))
        .arg(&vf(&agent, 0).socket)
        .arg(&dst)
        .arg("60")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn emu-test-sender");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "attached");
    wait_vf(&mut agent, 0, "sender transmitting", |v| {
        v.counter("tx_packets").unwrap() > 1000
    });
    child.kill().unwrap();
    child.wait().unwrap();
    wait_vf(&mut agent, 0, "client dropped", |v| v.state == "free");
    after_attack(&mut agent, &mut flow, "client killed mid-transfer");
    dir.succeed();
}

/// A client reconnecting in a loop with garbage cannot flood the node's log: the lines it
/// triggers are cut to a budget per window (the rest counted as `suppressed`).
#[test]
fn a_reconnect_flood_cannot_flood_the_log() {
    let mut dir = RunDir::new("log-flood").expect("temp dir");
    let mut agent = start(&dir, &[]);
    let mut flow = bystander(&agent);
    let v0 = vf(&agent, 0);
    let lines = |agent: &Agent| {
        std::fs::read_to_string(&agent.log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&v0.id) || l.contains(&*v0.socket.to_string_lossy()))
            .count()
    };
    let before = lines(&agent);
    let t0 = Instant::now();
    let rounds = 500;
    for i in 0..rounds {
        let mut s = std::os::unix::net::UnixStream::connect(&v0.socket).expect("connect");
        // A bad header (size below 16) closes the connection with a protocol error.
        let _ = std::io::Write::write_all(
            &mut s,
            &[i as u8, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        let mut b = [0u8; 64];
        let _ = std::io::Read::read(&mut s, &mut b);
    }
    let took = t0.elapsed();
    let windows = took.as_secs() / 10 + 1;
    let logged = lines(&agent) - before;
    println!("{rounds} garbage connections in {took:?}: {logged} log lines for the VF");
    // Each connection would log at least 2 lines without the budget.
    assert!(
        logged as u64 <= 2 * 20 * windows + 4,
        "{logged} lines for {rounds} connections in {took:?}"
    );
    after_attack(&mut agent, &mut flow, "reconnect flood");
    dir.succeed();
}
