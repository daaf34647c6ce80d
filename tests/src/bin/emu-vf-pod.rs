//! The program of the end-to-end test's pods (tests/tests/cluster_e2e.rs): it finds the VF the
//! device plugin gave the container and drives it with the userspace igbvf driver.
//!
//! Usage:
//!   emu-vf-pod info                  print `ready`, then sleep
//!   emu-vf-pod recv N SECONDS        attach, print `mac XX:..`, count frames of EtherType
//!                                    0x88B5 until N arrived (`received N`, exit 0) or time is up
//!                                    (exit 1); then sleep
//!   emu-vf-pod send MAC N SECONDS    attach, send N frames to MAC (bounded rate), print `sent N`,
//!                                    then sleep
//! Every mode first prints the VF env vars (`env K=V`) and sockets (`socket PATH`).
//! "Sleep" lasts until SIGTERM (the pod is deleted) so that the pod's logs stay readable.
//! The VF: the only directory under /var/run/emu-sriov (the device plugin's mount) holding a
//! socket; its id and details are also in $EMU_SRIOV_VF_VF and $EMU_SRIOV_VF_VF_INFO.

use emu_vf_driver::client::{attach, AttachedVf};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ROOT: &str = "/var/run/emu-sriov";
const ETHERTYPE: u16 = 0x88B5;

fn say(msg: &str) {
    println!("{msg}");
    let _ = std::io::stdout().flush();
}

fn fail(msg: &str) -> ! {
    eprintln!("emu-vf-pod: {msg}");
    say(&format!("error {msg}"));
    sleep_forever()
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The VF sockets mounted into this container: ROOT/<id>/<file>.sock.
fn sockets() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(ROOT) else {
        return out;
    };
    for d in dirs.flatten() {
        if let Ok(files) = std::fs::read_dir(d.path()) {
            for f in files.flatten() {
                if f.path().extension().is_some_and(|e| e == "sock") {
                    out.push(f.path());
                }
            }
        }
    }
    out.sort();
    out
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

fn attach_one() -> AttachedVf {
    let socks = sockets();
    let [sock] = socks.as_slice() else {
        fail(&format!(
            "expected one VF socket under {ROOT}, found {socks:?}"
        ));
    };
    match attach(sock, 256) {
        Ok(vf) => {
            say(&format!("mac {}", mac_str(vf.driver.mac())));
            vf
        }
        Err(e) => fail(&format!("attach {}: {e}", sock.display())),
    }
}

fn recv(n: u64, secs: u64) {
    let mut vf = attach_one();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut got = 0u64;
    let mut buf = [0u8; 64];
    while got < n && Instant::now() < end {
        let mem = vf.mem.lock();
        let polled = vf.driver.poll_rx(&mem, &mut buf, &mut |f| {
            if f.len() >= 14 && u16::from_be_bytes([f[12], f[13]]) == ETHERTYPE {
                got += 1;
            }
        });
        drop(mem);
        match polled {
            Ok(0) => std::thread::sleep(Duration::from_millis(1)),
            Ok(_) => {}
            Err(e) => fail(&format!("rx: {e}")),
        }
    }
    if got >= n {
        say(&format!("received {got}"));
    } else {
        fail(&format!("only {got} of {n} frames arrived in {secs} s"));
    }
}

fn send(dst: [u8; 6], n: u64, secs: u64) {
    let mut vf = attach_one();
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&vf.driver.mac());
    frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    let end = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u64;
    while sent < n && Instant::now() < end {
        {
            let mem = vf.mem.lock();
            for _ in 0..16 {
                if sent >= n {
                    break;
                }
                match vf.driver.queue_tx(&mem, &frame) {
                    Ok(true) => sent += 1,
                    Ok(false) => break,
                    Err(e) => fail(&format!("tx: {e}")),
                }
            }
            vf.driver.flush();
            if let Err(e) = vf.driver.reclaim(&mem) {
                fail(&format!("reclaim: {e}"));
            }
        }
        // Bounded rate (≤ ~16k frames/s): the receiver polls every millisecond at most.
        std::thread::sleep(Duration::from_millis(1));
    }
    say(&format!("sent {sent}"));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok());
    // Every mode first shows what the device plugin gave the container.
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("EMU_SRIOV_VF"))
        .collect();
    env.sort();
    for (k, v) in env {
        say(&format!("env {k}={v}"));
    }
    for s in sockets() {
        say(&format!("socket {}", s.display()));
    }
    match args.get(1).map(String::as_str) {
        Some("info") => say("ready"),
        Some("recv") => match (num(2), num(3)) {
            (Some(n), Some(secs)) => recv(n, secs),
            _ => fail("usage: emu-vf-pod recv N SECONDS"),
        },
        Some("send") => match (args.get(2).and_then(|s| parse_mac(s)), num(3), num(4)) {
            (Some(mac), Some(n), Some(secs)) => send(mac, n, secs),
            _ => fail("usage: emu-vf-pod send MAC N SECONDS"),
        },
        _ => {
            eprintln!("usage: emu-vf-pod info | recv N SECONDS | send MAC N SECONDS");
            std::process::exit(2);
        }
    }
    sleep_forever()
}
