//! A userspace igbvf client that attaches to one VF and sends frames until it is killed or
//! its time is up: the "client killed mid-transfer" and soak tests run it as a child
//! process so that they can SIGKILL it while its rings are live.
//!
//! Usage: emu-test-sender SOCKET DST_MAC SECONDS
//! Prints `attached` once the VF is up, then `sent N` every second.

use emu_vf_driver::client::attach;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(sock), Some(dst), Some(secs)) = (
        args.get(1).map(PathBuf::from),
        args.get(2).and_then(|s| parse_mac(s)),
        args.get(3).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: emu-test-sender SOCKET DST_MAC SECONDS");
        std::process::exit(2);
    };
    let mut vf = match attach(&sock, 256) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("emu-test-sender: attach {}: {e}", sock.display());
            std::process::exit(1);
        }
    };
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&vf.driver.mac());
    frame[12..14].copy_from_slice(&0x88B5u16.to_be_bytes());
    println!("attached");
    let _ = std::io::stdout().flush();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut next_report = Instant::now() + Duration::from_secs(1);
    let mut sent = 0u64;
    while Instant::now() < end {
        {
            let mem = vf.mem.lock();
            for _ in 0..32 {
                match vf.driver.queue_tx(&mem, &frame) {
                    Ok(true) => sent += 1,
                    _ => break,
                }
            }
            vf.driver.flush();
            let _ = vf.driver.reclaim(&mem);
        }
        // Bounded rate: about 100k frames/s at most, leaving the machine to the others.
        std::thread::sleep(Duration::from_micros(300));
        if Instant::now() >= next_report {
            println!("sent {sent}");
            let _ = std::io::stdout().flush();
            next_report += Duration::from_secs(1);
        }
    }
    println!("done {sent}");
}
