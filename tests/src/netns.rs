//! A network namespace the test owns (guest-tests.md §6.3): the host end of an uplink TAP lives
//! here, never in the root namespace. Dropping the guard deletes the namespace (and with it any
//! address the test gave the TAP). Only 198.18.0.0/15 addresses are ever assigned.

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

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}
