//! Netdev-mode VFs driven the way a container runtime drives a CNI plugin.
//!
//! [`CniNode`] is a "node" of its own: a network namespace the test made (the host side: the
//! agent and its TAPs live there, never in the root namespace), an `emu-sriov-agent` running in
//! it from a config with a `deviceType: netdev` PF, and a CNI_PATH with `emu-sriov-cni` and the
//! standard plugins (`host-local`, `static`, `bridge`) plus the reference `cnitool`, all built
//! by `tests/cluster/cnitool/build.sh` from their Go modules. Pods are [`NetNs`]es. Only
//! 198.18.0.0/15 addresses are used, and every traffic loop is bounded by the caller.

use crate::env::workspace_root;
use crate::netns::NetNs;
use crate::proc::{spawn_guarded, stop_child};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// [`crate::env::cargo_bin`]: builds `-p package` (release when asked), returns its path.
pub fn workspace_bin(package: &str, bin: &str, release: bool) -> Result<PathBuf, String> {
    crate::env::cargo_bin(package, bin, release)
}

/// The directory with `cnitool`, `host-local`, `static` and `bridge`: `EMU_CNI_BIN`, else what
/// `tests/cluster/cnitool/build.sh` builds (cached after the first run; needs Go).
pub fn cni_tools_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("EMU_CNI_BIN") {
        return Ok(PathBuf::from(d));
    }
    let script = workspace_root().join("tests/cluster/cnitool/build.sh");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(PathBuf::from(dir))
}

/// The outcome of one plugin run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The JSON on stdout (a result or an error).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or(Value::Null)
    }
}

/// An agent with netdev VFs in a namespace of its own, and the CNI tools to drive it.
pub struct CniNode {
    pub host: NetNs,
    pub run_dir: PathBuf,
    pub config: PathBuf,
    /// CNI_PATH: emu-sriov-cni and the standard plugins (symlinks), and any test plugin.
    pub cni_path: PathBuf,
    /// NETCONFPATH for cnitool.
    pub net_dir: PathBuf,
    pub tools: PathBuf,
    pub agent_bin: PathBuf,
    agent: Option<Child>,
    log: PathBuf,
}

impl CniNode {
    /// Starts an agent with `config_yaml` (its `runDir` is set here) in a new namespace.
    pub fn start(
        tag: &str,
        dir: &Path,
        agent_bin: &Path,
        config_yaml: &str,
    ) -> Result<CniNode, String> {
        let tools = cni_tools_dir()?;
        let cni = workspace_bin("emu-sriov-cni", "emu-sriov-cni", false)?;
        let host = NetNs::new(tag)?;
        let run_dir = dir.join("run");
        let cni_path = dir.join("cni-bin");
        let net_dir = dir.join("net.d");
        for d in [&cni_path, &net_dir] {
            std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        let link = |src: &Path, name: &str| {
            let dst = cni_path.join(name);
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(src, &dst)
                .map_err(|e| format!("symlink {}: {e}", dst.display()))
        };
        link(&cni, "emu-sriov-cni")?;
        for p in ["host-local", "static", "bridge"] {
            link(&tools.join(p), p)?;
        }
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "runDir: {}\nnodeName: {tag}\n{config_yaml}",
                run_dir.display()
            ),
        )
        .map_err(|e| format!("write {}: {e}", config.display()))?;
        let mut node = CniNode {
            host,
            run_dir,
            config,
            cni_path,
            net_dir,
            tools,
            agent_bin: agent_bin.to_owned(),
            agent: None,
            log: dir.join("agent.log"),
        };
        node.spawn_agent()?;
        Ok(node)
    }

    /// (Re)starts the agent and waits until `list` answers.
    pub fn spawn_agent(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = spawn_guarded(
            Command::new("ip")
                .args(["netns", "exec", self.host.name()])
                .arg(&self.agent_bin)
                .arg("run")
                .arg("--config")
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err),
        )
        .map_err(|e| format!("cannot start the agent: {e}"))?;
        self.agent = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if self.list().is_ok() {
                return Ok(());
            }
            if let Some(c) = &mut self.agent {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(format!(
                        "the agent exited ({st}):\n{}",
                        crate::proc::tail(&self.log, 20)
                    ));
                }
            }
            if Instant::now() > end {
                return Err(format!(
                    "the agent did not come up:\n{}",
                    crate::proc::tail(&self.log, 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the agent with SIGKILL (a crash: nothing is cleaned up).
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The agent's log, for failure messages.
    pub fn log_tail(&self) -> String {
        crate::proc::tail(&self.log, 30)
    }

    /// `list --output json`.
    pub fn list(&self) -> Result<Value, String> {
        let out = Command::new(&self.agent_bin)
            .args(["list", "--output", "json", "--run-dir"])
            .arg(&self.run_dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// VF `id` from `list`.
    pub fn vf(&self, id: &str) -> Result<Value, String> {
        self.list()?
            .get("vfs")
            .and_then(|v| v.as_array())
            .and_then(|a| a.iter().find(|v| v["id"] == id).cloned())
            .ok_or_else(|| format!("no VF {id} in list"))
    }

    /// VF `id`'s state (`free`/`attached`).
    pub fn vf_state(&self, id: &str) -> String {
        self.vf(id)
            .ok()
            .and_then(|v| v["state"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// VF `id`'s counter `name`.
    pub fn counter(&self, id: &str, name: &str) -> u64 {
        self.vf(id)
            .ok()
            .and_then(|v| v["counters"][name].as_u64())
            .unwrap_or(0)
    }

    /// Waits (bounded) until `cond` holds.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn() -> bool,
    ) -> Result<(), String> {
        let end = Instant::now() + timeout;
        while !cond() {
            if Instant::now() > end {
                return Err(format!(
                    "{what}: not within {timeout:?}\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The plugin's command as a runtime starts it (CNI environment, config on stdin), run in the
    /// host namespace; not waited for.
    pub fn plugin_command(
        &self,
        command: &str,
        container: &str,
        netns: &NetNs,
        if_name: &str,
    ) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.host.name()])
            .arg(self.cni_path.join("emu-sriov-cni"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", format!("/var/run/netns/{}", netns.name()))
            .env("CNI_IFNAME", if_name)
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs the plugin once with `conf` on stdin.
    pub fn plugin(
        &self,
        command: &str,
        container: &str,
        netns: &NetNs,
        if_name: &str,
        conf: &Value,
    ) -> Outcome {
        let mut cmd = self.plugin_command(command, container, netns, if_name);
        run_with_stdin(&mut cmd, conf.to_string().as_bytes())
    }

    /// Writes network `name`'s config (a single-plugin conf) for cnitool.
    pub fn write_network(&self, name: &str, conf: &Value) -> Result<(), String> {
        let p = self.net_dir.join(format!("{name}.conf"));
        std::fs::write(&p, conf.to_string()).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// `cnitool <command> <network> <netns path>` with CNI_IFNAME=`if_name`, in the host
    /// namespace.
    pub fn cnitool(&self, command: &str, network: &str, netns: &NetNs, if_name: &str) -> Outcome {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.host.name()])
            .arg(self.tools.join("cnitool"))
            .args([command, network])
            .arg(format!("/var/run/netns/{}", netns.name()))
            .env("NETCONFPATH", &self.net_dir)
            .env("CNI_PATH", &self.cni_path)
            .env("CNI_IFNAME", if_name)
            .stdin(Stdio::null());
        run_with_stdin(&mut cmd, b"")
    }
}

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Outcome {
    use std::io::Write as _;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                ok: false,
                stdout: String::new(),
                stderr: e.to_string(),
            }
        }
    };
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(input);
    }
    match child.wait_with_output() {
        Ok(o) => Outcome {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => Outcome {
            ok: false,
            stdout: String::new(),
            stderr: e.to_string(),
        },
    }
}

impl Drop for CniNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.agent.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
    }
}

/// `ping -c count` from `from` to `ip` (bounded: 0.2 s apart, 1 s deadline per reply).
pub fn ping(from: &NetNs, ip: &str, count: u32) -> bool {
    from.exec(&[
        "ping",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "1",
        "-q",
        ip,
    ])
    .is_ok()
}
