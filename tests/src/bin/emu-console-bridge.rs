//! `emu-console-bridge SOCKET [TIMEOUT_S]`: a guest's serial console on a unix socket (libvirt
//! `<serial type="unix"><source mode="bind">`, KubeVirt's shape) as stdin/stdout, so the guest
//! harness drives a libvirt-started guest like one it started itself. Waits up to TIMEOUT_S
//! (default 30) for the socket, copies socket → stdout and stdin → socket, and exits 0 when the
//! socket closes (QEMU gone), 1 if it never connects.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: emu-console-bridge SOCKET [TIMEOUT_S]");
        std::process::exit(2);
    };
    let timeout = args.next().and_then(|t| t.parse().ok()).unwrap_or(30u64);
    let end = Instant::now() + Duration::from_secs(timeout);
    let sock = loop {
        match UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= end => {
                eprintln!("emu-console-bridge: cannot connect to {path} within {timeout}s: {e}");
                std::process::exit(1);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut to_guest = match sock.try_clone() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("emu-console-bridge: {e}");
            std::process::exit(1);
        }
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || to_guest.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut from_guest = sock;
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    while let Ok(n) = from_guest.read(&mut buf) {
        if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
            break;
        }
    }
}
