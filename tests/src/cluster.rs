//! The local one-node cluster (tests/cluster/up.sh, down.sh) for end-to-end tests: a real
//! control plane, containerd and kubelet on this machine. [`LocalCluster::up`] starts it (or
//! reuses a running one with `EMU_E2E_REUSE_CLUSTER=1`), [`Drop`] stops it again with
//! `down.sh --purge` (unless `EMU_E2E_KEEP_CLUSTER=1`; after a failure without --purge, so
//! that the logs stay). Commands run with the cluster's environment (KUBECONFIG, containerd socket, the
//! cached binaries first on PATH) and a timeout each.
//!
//! Images are packed from this workspace's binaries with tests/cluster/image.sh and imported
//! with `ctr -n k8s.io images import` (no registry, no engine).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::workspace_root;

/// The cluster's state dir unless `EMU_CLUSTER_DIR` says otherwise (as up.sh).
pub const DEFAULT_DIR: &str = "/var/lib/emu-sriov-cluster";
/// The node the kubelet registers (as up.sh).
pub const NODE: &str = "emu-node";
/// The chart's images as `charts/emu-sriov/ci/local-cluster-values.yaml` names them.
pub const OPERATOR_IMAGE: &str = "docker.io/emu-sriov/operator:dev";
pub const AGENT_IMAGE: &str = "docker.io/emu-sriov/agent:dev";
pub const KUBECTL_IMAGE: &str = "docker.io/emu-sriov/kubectl:v1.36.3";

/// A running local cluster.
pub struct LocalCluster {
    dir: PathBuf,
    bin: PathBuf,
    /// Started by us (and so stopped by us on drop).
    owned: bool,
    /// How long up.sh took (zero when reused).
    pub startup: Duration,
}

/// The output of a finished command.
#[derive(Debug)]
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl LocalCluster {
    /// Starts the cluster with up.sh (minutes the first time: it builds the programs), or
    /// reuses the one running in the state dir when `EMU_E2E_REUSE_CLUSTER=1`.
    pub fn up() -> Result<LocalCluster, String> {
        let root = workspace_root();
        let dir = PathBuf::from(
            std::env::var("EMU_CLUSTER_DIR").unwrap_or_else(|_| DEFAULT_DIR.to_owned()),
        );
        let bin = PathBuf::from(
            run_plain(
                Command::new(root.join("tests/cluster/build.sh")).arg("--print-dir"),
                Duration::from_secs(60),
            )?
            .trim(),
        );
        let reuse = std::env::var("EMU_E2E_REUSE_CLUSTER").is_ok_and(|v| v == "1");
        let kubelet_alive = std::fs::read_to_string(dir.join("pids/kubelet.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            // SAFETY: kill with signal 0 only checks that the process exists.
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if kubelet_alive {
            if !reuse {
                return Err(format!(
                    "a local cluster already runs from {} (stop it with tests/cluster/down.sh, or \
                     set EMU_E2E_REUSE_CLUSTER=1 to test against it)",
                    dir.display()
                ));
            }
            return Ok(LocalCluster {
                dir,
                bin,
                owned: false,
                startup: Duration::ZERO,
            });
        }
        if dir.join("etcd").exists() {
            // A failed run keeps its state (etcd, images, logs) for inspection; a new run starts
            // from a clean slate, or it would find the old run's Helm release and pods.
            eprintln!(
                "e2e: removing the state a previous run left in {} (down.sh --purge)",
                dir.display()
            );
            run_plain(
                Command::new(root.join("tests/cluster/down.sh"))
                    .arg("--purge")
                    .env("EMU_CLUSTER_DIR", &dir),
                Duration::from_secs(120),
            )?;
        }
        let t0 = Instant::now();
        let mut cmd = Command::new(root.join("tests/cluster/up.sh"));
        cmd.env("EMU_CLUSTER_DIR", &dir);
        // up.sh prints its progress; show it with the test's output.
        let status = cmd
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run tests/cluster/up.sh: {e}"))?;
        let cluster = LocalCluster {
            dir,
            bin,
            owned: true,
            startup: t0.elapsed(),
        };
        if !status.success() {
            return Err(format!(
                "tests/cluster/up.sh failed ({status}); its output is above, logs in {}/logs",
                cluster.dir.display()
            ));
        }
        Ok(cluster)
    }

    /// The state dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The cached Kubernetes programs (kubectl, helm, ctr, ...).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A command for `program` (a cached binary or a script path) with the cluster's env.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env("KUBECONFIG", self.kubeconfig())
            .env("CONTAINERD_ADDRESS", self.dir.join("run/containerd.sock"))
            .env("CONTAINERD_NAMESPACE", "k8s.io")
            .env("EMU_CLUSTER_DIR", &self.dir)
            .current_dir(workspace_root())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `program args` with the cluster's env, at most `timeout`.
    pub fn run(&self, program: &str, args: &[&str], timeout: Duration) -> Out {
        let mut cmd = self.command(self.bin.join(program));
        if !self.bin.join(program).exists() {
            cmd = self.command(program);
        }
        cmd.args(args);
        run_out(&mut cmd, timeout).unwrap_or_else(|e| Out {
            ok: false,
            stdout: String::new(),
            stderr: e,
        })
    }

    /// `kubectl ARGS` (30 s at most); stdout, or the error with stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = self.run("kubectl", args, Duration::from_secs(30));
        if out.ok {
            Ok(out.stdout)
        } else {
            Err(format!("kubectl {}: {}", args.join(" "), out.stderr.trim()))
        }
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<String, String> {
        let mut cmd = self.command(self.bin.join("kubectl"));
        cmd.args(["apply", "-f", "-"]);
        let out = run_with_stdin(&mut cmd, yaml, Duration::from_secs(30))?;
        if out.ok {
            Ok(out.stdout)
        } else {
            Err(format!("kubectl apply: {}", out.stderr.trim()))
        }
    }

    /// Packs an image from host files with tests/cluster/image.sh and imports it.
    pub fn import_image(&self, name: &str, pack_args: &[&str]) -> Result<(), String> {
        let tar = self
            .dir
            .join("images")
            .join(format!("{}.tar", name.replace(['/', ':'], "_")));
        let tar_s = tar.to_string_lossy().into_owned();
        let mut args = vec!["--name", name, "--out", tar_s.as_str()];
        args.extend_from_slice(pack_args);
        let out = self.run(
            &workspace_root()
                .join("tests/cluster/image.sh")
                .to_string_lossy(),
            &args,
            Duration::from_secs(120),
        );
        if !out.ok {
            return Err(format!("image.sh {name}: {}", out.stderr.trim()));
        }
        let out = self.run(
            "ctr",
            &["images", "import", tar_s.as_str()],
            Duration::from_secs(120),
        );
        if !out.ok {
            return Err(format!("ctr images import {name}: {}", out.stderr.trim()));
        }
        Ok(())
    }

    /// The chart's images from this workspace's binaries (the debug builds `cargo test` made,
    /// built if missing), packed and imported: [`OPERATOR_IMAGE`], [`AGENT_IMAGE`] (the agent
    /// and emu-sriov-cni, which the netdev chart's init container installs) and
    /// [`KUBECTL_IMAGE`] (the uninstall hook's). Returns the agent binary's host path.
    pub fn import_chart_images(&self) -> Result<PathBuf, String> {
        use crate::operator::workspace_bin;
        let operator = workspace_bin("emu-sriov-operator", "emu-sriov-operator")?;
        let agent = workspace_bin("emu-sriov-agent", "emu-sriov-agent")?;
        let cni = workspace_bin("emu-sriov-cni", "emu-sriov-cni")?;
        let f = |src: &Path, dst: &str| format!("{}:{dst}", src.display());
        let op = f(&operator, "/usr/bin/emu-sriov-operator");
        let user = "65532:65532";
        let entry = "/usr/bin/emu-sriov-operator";
        let args = [
            "--file",
            &op,
            "--strip",
            "--with-libs",
            "--entrypoint",
            entry,
            "--user",
            user,
        ];
        self.import_image(OPERATOR_IMAGE, &args)?;
        let (ag, cn) = (
            f(&agent, "/usr/bin/emu-sriov-agent"),
            f(&cni, "/usr/bin/emu-sriov-cni"),
        );
        let entry = "/usr/bin/emu-sriov-agent";
        let args = [
            "--file",
            &ag,
            "--file",
            &cn,
            "--strip",
            "--with-libs",
            "--entrypoint",
            entry,
        ];
        self.import_image(AGENT_IMAGE, &args)?;
        let kc = f(&self.bin.join("kubectl"), "/usr/bin/kubectl");
        self.import_image(
            KUBECTL_IMAGE,
            &["--file", &kc, "--entrypoint", "/usr/bin/kubectl"],
        )?;
        Ok(agent)
    }

    /// Polls `f` every `every` until it returns `Some` or `timeout` passes.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> Result<(T, Duration), String> {
        let t0 = Instant::now();
        loop {
            if let Some(v) = f() {
                return Ok((v, t0.elapsed()));
            }
            if t0.elapsed() >= timeout {
                return Err(format!("timed out after {timeout:?} waiting for {what}"));
            }
            std::thread::sleep(every);
        }
    }

    /// `helm ARGS` (5 min at most); stdout, or the error with stderr and stdout.
    pub fn helm(&self, args: &[String]) -> Result<String, String> {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run("helm", &a, Duration::from_secs(300));
        if out.ok {
            Ok(out.stdout)
        } else {
            Err(format!(
                "helm {}: {}\n{}",
                a.join(" "),
                out.stderr,
                out.stdout
            ))
        }
    }

    /// The chart and its values for this cluster: `charts/emu-sriov --namespace NS` with
    /// `ci/local-cluster-values.yaml`, no example pool (tests make their own), and the
    /// kubelet, run and CDI dirs under this cluster's state dir. Append the command's own
    /// flags.
    pub fn chart_args(&self, namespace: &str) -> Vec<String> {
        let d = self.dir.display();
        [
            "charts/emu-sriov".to_owned(),
            "--namespace".into(),
            namespace.into(),
            "-f".into(),
            "charts/emu-sriov/ci/local-cluster-values.yaml".into(),
            "--set".into(),
            "vfPools=null".into(),
            "--set".into(),
            format!("agent.kubeletDir={d}/kubelet"),
            "--set".into(),
            format!("agent.runDir={d}/emu-sriov"),
            "--set".into(),
            format!("agent.cdi.dir={d}/cdi"),
        ]
        .into()
    }

    /// `helm install RELEASE <chart_args> EXTRA --create-namespace --wait`; on failure the
    /// error carries the namespace's pods.
    pub fn helm_install(
        &self,
        release: &str,
        namespace: &str,
        extra: &[String],
    ) -> Result<(), String> {
        let mut args = vec!["install".to_owned(), release.to_owned()];
        args.extend(self.chart_args(namespace));
        args.extend_from_slice(extra);
        args.extend(["--create-namespace", "--wait", "--timeout", "180s"].map(String::from));
        self.helm(&args).map(|_| ()).map_err(|e| {
            let pods = self
                .kubectl(&["-n", namespace, "get", "pods", "-o", "wide"])
                .unwrap_or_default();
            format!("{e}\n{pods}")
        })
    }

    /// `kubectl ARGS -o jsonpath=PATH`; empty when kubectl fails.
    pub fn jsonpath(&self, args: &[&str], path: &str) -> String {
        let p = format!("jsonpath={path}");
        let mut a = args.to_vec();
        a.extend_from_slice(&["-o", &p]);
        self.kubectl(&a).unwrap_or_default()
    }

    /// Waits until pod `ns/name` runs and returns how long that took; panics with the pod's
    /// status (and the kubelet's log) when it failed or timed out instead.
    pub fn wait_pod_running(&self, ns: &str, name: &str, timeout: Duration) -> Duration {
        let r = self.wait_for(
            &format!("pod {ns}/{name} Running"),
            timeout,
            Duration::from_millis(100),
            || match self
                .jsonpath(&["-n", ns, "get", "pod", name], "{.status.phase}")
                .as_str()
            {
                "Running" => Some(Ok(())),
                "Failed" | "Succeeded" => Some(Err(self
                    .kubectl(&["-n", ns, "get", "pod", name, "-o", "yaml"])
                    .unwrap_or_default())),
                _ => None,
            },
        );
        match r {
            Ok((Ok(()), t)) => t,
            Ok((Err(status), _)) => panic!("pod {ns}/{name} did not run:\n{status}"),
            Err(e) => panic!(
                "{e}\n{}\nkubelet:\n{}",
                self.kubectl(&["-n", ns, "describe", "pod", name])
                    .unwrap_or_default(),
                self.log_tail("kubelet", 30)
            ),
        }
    }

    /// The tail of one of the cluster's logs (kubelet, containerd, ...).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if !self.owned || std::env::var("EMU_E2E_KEEP_CLUSTER").is_ok_and(|v| v == "1") {
            return;
        }
        // --purge: the state dir (etcd, images, logs: ~1 GB) goes too; a later run starts
        // fresh. After a failure the state (logs) stays for a look.
        let mut cmd = Command::new(workspace_root().join("tests/cluster/down.sh"));
        if std::thread::panicking() {
            eprintln!(
                "test failed: the cluster's logs stay in {}/logs (tests/cluster/down.sh --purge removes them)",
                self.dir.display()
            );
        } else {
            cmd.arg("--purge");
        }
        cmd.env("EMU_CLUSTER_DIR", &self.dir).stdin(Stdio::null());
        match run_out(&mut cmd, Duration::from_secs(180)) {
            Ok(out) => {
                eprint!("{}", out.stdout);
                if !out.ok {
                    eprintln!("tests/cluster/down.sh failed: {}", out.stderr);
                }
            }
            Err(e) => eprintln!("tests/cluster/down.sh: {e}"),
        }
    }
}

fn run_plain(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let out = run_out(cmd, timeout)?;
    if out.ok {
        Ok(out.stdout)
    } else {
        Err(format!("{cmd:?}: {}", out.stderr.trim()))
    }
}

/// Runs `cmd` to completion, killing it after `timeout`.
pub fn run_out(cmd: &mut Command, timeout: Duration) -> Result<Out, String> {
    run_with_stdin(cmd, "", timeout)
}

fn run_with_stdin(cmd: &mut Command, input: &str, timeout: Duration) -> Result<Out, String> {
    use std::io::{Read as _, Write as _};
    let mut child = crate::proc::spawn_guarded(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let t0 = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if t0.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    match status {
        Some(st) => Ok(Out {
            ok: st.success(),
            stdout,
            stderr,
        }),
        None => Ok(Out {
            ok: false,
            stdout,
            stderr: format!("timed out after {timeout:?}; stderr: {stderr}"),
        }),
    }
}
