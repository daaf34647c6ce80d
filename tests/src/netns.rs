//! A network namespace the test owns (guest-tests.md §6.3): the host end of an uplink TAP (or of
//! a veth pair) lives here, never in the root namespace. Dropping the guard deletes the namespace
//! (and with it any address the test gave the TAP). Only 198.18.0.0/15 addresses are ever
//! assigned. [`Veth`] is a veth pair whose root-namespace end is deleted on drop.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A namespace made with `ip netns add`; deleted on drop.
pub struct NetNs {
    name: String,
}

fn run_ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A TAP name unique to this process and `tag` (at most 15 characters).
pub fn unique_ifname(tag: &str) -> String {
    let name = format!("emu{tag}{}", std::process::id() % 100_000);
    name.chars().take(15).collect()
}

/// Waits until interface `name` exists in the root namespace.
pub fn wait_link(name: &str, timeout: Duration) -> Result<(), String> {
    let end = Instant::now() + timeout;
    while !Path::new("/sys/class/net").join(name).exists() {
        if Instant::now() >= end {
            return Err(format!(
                "interface {name} did not appear within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl NetNs {
    /// `ip netns add emu-<tag>-<pid>`; IPv6 off inside (only ARP and IPv4 move, so counters
    /// stay deterministic).
    pub fn new(tag: &str) -> Result<NetNs, String> {
        let name = format!("emu-{tag}-{}", std::process::id());
        let _ = run_ip(&["netns", "del", &name]); // a leftover of a killed run
        run_ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        for key in ["all", "default"] {
            ns.exec(&[
                "sh",
                "-c",
                &format!("echo 1 > /proc/sys/net/ipv6/conf/{key}/disable_ipv6"),
            ])?;
        }
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_ip(&all)
    }

    /// `ip netns exec <ns> ARGS`.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run_ip(&all)
    }

    /// Runs `f` on a thread of its own that has entered this namespace (setns(2) moves only that
    /// thread; it ends with `f`), e.g. to open a socket on an interface that lives here.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        let path = Path::new("/var/run/netns").join(&self.name);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns(2) takes an fd that `file` keeps open for the call and a flag; it
                // changes only the calling thread's network namespace, and that thread is ours.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(format!("setns into {}: {e}", path.display()));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| format!("the thread in namespace {} panicked", self.name))?
        })
    }

    /// Moves interface `ifname` from the root namespace into this one, gives it `cidr`
    /// (198.18.0.0/15 only) and brings it up.
    pub fn adopt(&self, ifname: &str, cidr: &str) -> Result<(), String> {
        if !cidr.starts_with("198.18.") && !cidr.starts_with("198.19.") {
            return Err(format!(
                "{cidr}: test addresses come from 198.18.0.0/15 only"
            ));
        }
        run_ip(&["link", "set", ifname, "netns", &self.name])?;
        let _ = self.exec(&[
            "sh",
            "-c",
            &format!("echo 1 > /proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        ]);
        self.ip(&["addr", "add", cidr, "dev", ifname])?;
        self.ip(&["link", "set", ifname, "up"])?;
        Ok(())
    }
}

/// A veth pair made with `ip link add NAME type veth peer name PEER`; dropping the guard deletes
/// NAME (the root-namespace end), which deletes the pair wherever PEER has moved to.
pub struct Veth {
    name: String,
    peer: String,
}

impl Veth {
    /// Creates the pair, with IPv6 off on NAME (it stays in the root namespace without an
    /// address, so the root namespace's kernel sends nothing through it) and NAME up; PEER is
    /// left down in the root namespace for [`NetNs::adopt`].
    pub fn new(name: &str, peer: &str) -> Result<Veth, String> {
        let _ = run_ip(&["link", "del", name]); // a leftover of a killed run
        run_ip(&["link", "add", name, "type", "veth", "peer", "name", peer])?;
        let veth = Veth {
            name: name.to_string(),
            peer: peer.to_string(),
        };
        // Absent when the kernel has no IPv6: then there is nothing to turn off.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        run_ip(&["link", "set", name, "up"])?;
        Ok(veth)
    }

    /// The root-namespace end.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The other end (for [`NetNs::adopt`]).
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.name).exists() {
            if let Err(e) = run_ip(&["link", "del", &self.name]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}
