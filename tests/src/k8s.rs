//! A real Kubernetes control plane for tests: etcd and kube-apiserver of the release pinned in
//! `tests/cluster/go.mod`, built by `tests/cluster/build.sh` and started with envtest's flag set
//! (shared/design/kubernetes.md §6.3). Never a fake: what a test sees is what a cluster does,
//! CRD schema validation, CEL rules, server-side apply and RBAC included.
//!
//! - [`ControlPlane::shared`]: one per test binary, started on first use. Its processes die with
//!   the test process, however it ends: they are spawned with `PR_SET_PDEATHSIG` from one thread
//!   that lives as long as the process (the signal follows the *thread* that forked). Its data
//!   directory is removed at a normal exit; one that a killed run left behind is removed by the
//!   next start.
//! - [`ControlPlane::start`]: a private one, stopped and removed on drop (kept, with its logs,
//!   when the dropping thread panics).
//!
//! Only the API server runs: no controller-manager (nothing garbage-collects, namespaces never
//! finish terminating), no scheduler, no kubelet ([`create_node`] makes the Node object only).
//! Tests share the shared instance, so each one works in its own namespace
//! ([`create_namespace`]) and names cluster-scoped objects uniquely.
//!
//! ```no_run
//! # async fn example() {
//! use emu_sriov_tests::k8s::{self, ControlPlane};
//! let cp = ControlPlane::shared();
//! let client = cp.client(); // inside the test's own tokio runtime
//! k8s::install_crds(&client, emu_sriov_crds::crds()).await.expect("install CRDs");
//! let ns = k8s::create_namespace(&client, "my-test").await.expect("namespace");
//! # }
//! ```

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::runtime::wait::{await_condition, conditions};
use kube::Client;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::env::workspace_root;
use crate::proc::{spawn_guarded, tail};

/// Field manager of the harness's server-side applies.
pub const FIELD_MANAGER: &str = "emu-sriov-tests";
/// The Service ClusterIP range: from 198.18.0.0/15 like every other test address (envtest's
/// 10.0.0.0/24 could be a real network here).
pub const SERVICE_CLUSTER_IP_RANGE: &str = "198.19.128.0/24";
/// Label on every namespace [`create_namespace`] makes.
pub const NAMESPACE_LABEL: &str = "emu.sriov/test-namespace";

/// How long etcd and then the API server may take to come up (a cold start on 2 busy cores
/// takes seconds; this is for machines that are far busier).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Free ports are picked by binding port 0 and closing it; another process may take one before
/// our server binds it, and then the start is retried with new ports.
const START_ATTEMPTS: u32 = 3;
/// How long a CRD may take to become Established.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Data directories are `$TMPDIR/emu-k8s-<pid>-<n>-<nanos>`.
const DIR_PREFIX: &str = "emu-k8s-";
/// Log lines quoted in a startup error.
const LOG_TAIL_LINES: usize = 40;

const ETCD: &str = "etcd";
const APISERVER: &str = "kube-apiserver";
const KUBECTL: &str = "kubectl";

/// What can go wrong setting up or talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `$EMU_K8S_BIN` or the build cache lacks a program.
    #[error(
        "Kubernetes binaries missing in {}: {missing}; build them with tests/cluster/build.sh \
         (needs Go, preinstalled on the dev machines; several minutes cold) or point EMU_K8S_BIN \
         at a directory holding etcd, kube-apiserver and kubectl",
        dir.display()
    )]
    MissingBinaries { dir: PathBuf, missing: String },
    /// `tests/cluster/build.sh --print-dir` did not run or failed.
    #[error("locating the Kubernetes binaries with {}: {detail}", script.display())]
    LocateBinaries { script: PathBuf, detail: String },
    /// `tests/cluster/go.mod` has no `k8s.io/kubernetes vX.Y.Z` requirement.
    #[error("reading the pinned Kubernetes release from {}: {detail}", path.display())]
    PinnedVersion { path: PathBuf, detail: String },
    /// A file or directory operation.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Generating a key or certificate.
    #[error("generating the {what}")]
    Certificate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    /// No free local port.
    #[error("finding a free 127.0.0.1 port")]
    FreePort(#[source] io::Error),
    /// Spawning etcd or the API server.
    #[error("starting {name} ({})", bin.display())]
    Spawn {
        name: &'static str,
        bin: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A server process exited while starting.
    #[error("{name} exited during startup ({status}); its log {} ends with:\n{tail}", log.display())]
    Exited {
        name: &'static str,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    /// A server process did not become ready in time.
    #[error(
        "{name} not ready after {} s (last check: {last}); its log {} ends with:\n{tail}",
        waited.as_secs(), log.display()
    )]
    NotReady {
        name: &'static str,
        waited: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },
    /// The startup thread or runtime failed.
    #[error("control-plane startup: {0}")]
    Startup(String),
    /// Loading a kubeconfig this harness wrote.
    #[error("loading kubeconfig {}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    /// [`ControlPlane::client`] outside a tokio runtime.
    #[error(
        "a kube::Client belongs to the tokio runtime that builds it: call client() inside the \
         test's runtime (#[tokio::test] or Runtime::block_on)"
    )]
    NoRuntime,
    /// Building a kube client.
    #[error("building a kube client for {}", kubeconfig.display())]
    Client {
        kubeconfig: PathBuf,
        #[source]
        source: kube::Error,
    },
    /// An API call.
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Waiting for a condition on an object.
    #[error("{what}")]
    Wait {
        what: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// A condition was not reached in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// An object lacks a field the harness needs.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
        move |source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    fn cert(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> Error {
        let what = what.into();
        move |source| Error::Certificate { what, source }
    }

    /// A server lost the race for one of its ports (see [`START_ATTEMPTS`]).
    fn is_port_clash(&self) -> bool {
        matches!(self, Error::Exited { tail, .. } if tail.contains("address already in use"))
    }
}

/// `err` and its chain of sources, one per line, for panic messages. An API error shows as the
/// server's code, reason and message; a cause whose text is already shown is left out.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    fn describe(err: &(dyn std::error::Error + 'static)) -> String {
        match err.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(status)) => {
                format!("HTTP {} {}: {}", status.code, status.reason, status.message)
            }
            _ => err.to_string(),
        }
    }
    let mut text = describe(err);
    let mut source = err.source();
    while let Some(cause) = source {
        let line = describe(cause);
        if !text.contains(&line) {
            text.push_str("\n  caused by: ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// The directory holding `etcd`, `kube-apiserver` and `kubectl`: `$EMU_K8S_BIN`, or the cache
/// `tests/cluster/build.sh --print-dir` names. Fails, saying how to build them, when one is
/// missing.
pub fn bin_dir() -> Result<PathBuf, Error> {
    let dir = match std::env::var_os("EMU_K8S_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = workspace_root().join("tests/cluster/build.sh");
            let locate = |detail: String| Error::LocateBinaries {
                script: script.clone(),
                detail,
            };
            let out = Command::new(&script)
                .arg("--print-dir")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| locate(e.to_string()))?;
            if !out.status.success() {
                return Err(locate(format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if printed.is_empty() {
                return Err(locate("it printed nothing".into()));
            }
            PathBuf::from(printed)
        }
    };
    let missing: Vec<&str> = [ETCD, APISERVER, KUBECTL]
        .into_iter()
        .filter(|prog| !is_executable(&dir.join(prog)))
        .collect();
    if missing.is_empty() {
        Ok(dir)
    } else {
        Err(Error::MissingBinaries {
            dir,
            missing: missing.join(", "),
        })
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The Kubernetes release `tests/cluster/go.mod` pins (`v1.36.3`): what `/version` must report.
pub fn pinned_version() -> Result<String, Error> {
    let path = workspace_root().join("tests/cluster/go.mod");
    let text = fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
    text.lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("k8s.io/kubernetes"), Some(v)) if v.starts_with('v') => Some(v.to_string()),
                _ => None,
            }
        })
        .ok_or_else(|| Error::PinnedVersion {
            path,
            detail: "no `k8s.io/kubernetes vX.Y.Z` line".into(),
        })
}

/// A running etcd + kube-apiserver pair and the credentials to use it.
pub struct ControlPlane {
    dir: PathBuf,
    bins: PathBuf,
    port: u16,
    kubeconfig: PathBuf,
    pki: Pki,
    /// etcd first, then the API server; emptied when stopped.
    procs: Mutex<Vec<Proc>>,
    startup: Duration,
}

/// One server process and its log.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// The control plane of this test binary, started by the first caller (the others wait);
    /// panics, with the reason and the log tails, if it cannot start (every later caller gets
    /// the same message without another attempt).
    pub fn shared() -> &'static ControlPlane {
        let started = SHARED.get_or_init(|| {
            let cp = ControlPlane::start().map_err(|e| error_chain(&e))?;
            // SAFETY: atexit(3) only records the function pointer. `stop_shared_at_exit` is a
            // plain `extern "C" fn` without captured state and never panics, so nothing unwinds
            // into libc's exit path.
            if unsafe { libc::atexit(stop_shared_at_exit) } != 0 {
                eprintln!(
                    "emu-k8s: atexit failed; {} stays behind (the next start removes it)",
                    cp.dir.display()
                );
            }
            Ok(cp)
        });
        match started {
            Ok(cp) => cp,
            Err(msg) => panic!("the shared Kubernetes control plane did not start: {msg}"),
        }
    }

    /// A private control plane, stopped and removed when dropped. Prints its startup time.
    pub fn start() -> Result<ControlPlane, Error> {
        remove_stale_dirs();
        let t0 = Instant::now();
        let bins = bin_dir()?;
        let dir = new_data_dir()?;
        // On its own thread: the readiness check runs a tokio runtime, which cannot start inside
        // a caller that is already in one (a #[tokio::test]).
        let mut cp = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("emu-k8s-start".into())
                .spawn_scoped(s, || ControlPlane::launch(dir, bins))
                .map_err(|e| Error::Startup(format!("spawning the startup thread: {e}")))?
                .join()
                .map_err(|_| Error::Startup("the startup thread panicked".into()))?
        })?;
        cp.startup = t0.elapsed();
        eprintln!(
            "emu-k8s: control plane up in {:.2} s at {} (data {})",
            cp.startup.as_secs_f64(),
            cp.server_url(),
            cp.dir.display()
        );
        Ok(cp)
    }

    fn launch(dir: PathBuf, bins: PathBuf) -> Result<ControlPlane, Error> {
        let pki = Pki::generate(&dir)?;
        let mut attempt = 1;
        loop {
            match boot(&dir, &bins, &pki) {
                Ok((port, procs)) => {
                    return Ok(ControlPlane {
                        kubeconfig: dir.join("kubeconfig"),
                        dir,
                        bins,
                        port,
                        pki,
                        procs: Mutex::new(procs),
                        startup: Duration::ZERO,
                    })
                }
                Err(e) if e.is_port_clash() && attempt < START_ATTEMPTS => {
                    eprintln!("emu-k8s: a port was taken meanwhile, retrying: {e}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Time from [`ControlPlane::start`] to a ready API server (binary lookup, keys, both
    /// processes, `/readyz`).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// This instance's data directory (keys, kubeconfigs, etcd data, logs).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig (CN=admin, O=system:masters; client certificate files).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA that signed the serving and client certificates (and that the API server trusts
    /// for client certificates).
    pub fn ca_path(&self) -> &Path {
        &self.pki.ca_crt
    }

    /// The API server's log file.
    pub fn apiserver_log(&self) -> PathBuf {
        self.dir.join(format!("{APISERVER}.log"))
    }

    /// etcd's log file.
    pub fn etcd_log(&self) -> PathBuf {
        self.dir.join(format!("{ETCD}.log"))
    }

    /// The PIDs of etcd and the API server (empty once stopped).
    pub fn pids(&self) -> Vec<u32> {
        self.lock_procs().iter().map(|p| p.child.id()).collect()
    }

    /// An admin client, built in (and tied to) the caller's tokio runtime: call it inside each
    /// `#[tokio::test]`, never keep one across runtimes. Panics with the reason if it cannot.
    pub fn client(&self) -> Client {
        client_from_kubeconfig(&self.kubeconfig).unwrap_or_else(|e| {
            panic!(
                "admin client for {}: {}",
                self.server_url(),
                error_chain(&e)
            )
        })
    }

    /// A client authenticated as `user` in `groups` by a certificate from the cluster CA; RBAC
    /// gives it no rights until a test binds some. Same runtime rule as [`ControlPlane::client`].
    pub fn user_client(&self, user: &str, groups: &[&str]) -> Client {
        self.user_kubeconfig(user, groups)
            .and_then(|path| client_from_kubeconfig(&path))
            .unwrap_or_else(|e| panic!("client for user {user}: {}", error_chain(&e)))
    }

    /// Writes a kubeconfig for `user` in `groups` (see [`ControlPlane::user_client`]), e.g. for
    /// `kubectl --kubeconfig`.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf, Error> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let stem = format!("user-{n}");
        let (crt, key) = self.pki.client_cert(&self.dir, &stem, user, groups)?;
        let path = self.dir.join(format!("kubeconfig-{stem}"));
        write_kubeconfig(
            &path,
            &self.server_url(),
            &self.pki.ca_crt,
            user,
            &crt,
            &key,
        )?;
        Ok(path)
    }

    /// Runs the built `kubectl` with the admin kubeconfig and `args`; panics only if kubectl
    /// cannot be run at all (the exit status is the caller's to check).
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let bin = self.bins.join(KUBECTL);
        Command::new(&bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            // Discovery cache in the data dir, not in $HOME/.kube.
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
    }

    fn lock_procs(&self) -> MutexGuard<'_, Vec<Proc>> {
        // A panic while holding the lock leaves the list intact.
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills the API server, then etcd, and reaps both. Never panics (runs at exit).
    fn stop(&self) {
        let mut procs = self.lock_procs();
        while let Some(mut p) = procs.pop() {
            // SIGKILL to this PID only; it is ours and not reaped yet, so it was not recycled.
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "emu-k8s: control plane stopped; data kept for inspection: {} (logs {}, {})",
                self.dir.display(),
                self.apiserver_log().display(),
                self.etcd_log().display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("emu-k8s: removing {}: {e}", self.dir.display());
        }
    }
}

/// Stops the shared control plane and removes its data when the test binary exits normally
/// (statics are never dropped). A killed binary's servers die by `PR_SET_PDEATHSIG` instead.
extern "C" fn stop_shared_at_exit() {
    if let Some(Ok(cp)) = SHARED.get() {
        cp.stop();
        let _ = fs::remove_dir_all(&cp.dir);
    }
}

/// Picks ports, starts etcd and then the API server, and waits until it is ready. Kills what it
/// started when it fails.
fn boot(dir: &Path, bins: &Path, pki: &Pki) -> Result<(u16, Vec<Proc>), Error> {
    let [etcd_port, peer_port, port] = free_ports()?;
    let mut procs = ProcGuard(Vec::new());

    let etcd_data = dir.join("etcd");
    if etcd_data.exists() {
        // Left by an attempt that lost a port race.
        fs::remove_dir_all(&etcd_data).map_err(Error::io("removing", &etcd_data))?;
    }
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut etcd = Command::new(bins.join(ETCD));
    etcd.arg("--name=emu-test")
        .arg(arg("--data-dir", &etcd_data))
        .arg(format!("--listen-client-urls={etcd_url}"))
        .arg(format!("--advertise-client-urls={etcd_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=emu-test={peer_url}"))
        // Test data: durability is worth nothing, fsync latency a lot.
        .arg("--unsafe-no-fsync=true")
        .arg("--log-level=warn");
    procs.0.push(spawn_server(ETCD, etcd, dir)?);
    wait_listening(&mut procs.0, etcd_port)?;

    let kubeconfig = dir.join("kubeconfig");
    let server = format!("https://127.0.0.1:{port}");
    write_kubeconfig(
        &kubeconfig,
        &server,
        &pki.ca_crt,
        "admin",
        &pki.admin_crt,
        &pki.admin_key,
    )?;
    let mut apiserver = Command::new(bins.join(APISERVER));
    apiserver
        .arg(format!("--etcd-servers={etcd_url}"))
        .arg(arg("--cert-dir", &dir.join("apiserver-certs")))
        .arg(arg("--tls-cert-file", &pki.serving_crt))
        .arg(arg("--tls-private-key-file", &pki.serving_key))
        .arg(format!("--secure-port={port}"))
        .arg("--bind-address=127.0.0.1")
        // Without it the server looks for a default route's address, which a test machine may
        // not have.
        .arg("--advertise-address=127.0.0.1")
        .arg(format!(
            "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
        ))
        .arg("--allow-privileged=true")
        // No controller-manager mints ServiceAccount tokens, so the admission plugin that wants
        // them would reject every pod.
        .arg("--disable-admission-plugins=ServiceAccount")
        .arg("--authorization-mode=RBAC")
        .arg(arg("--client-ca-file", &pki.ca_crt))
        .arg(format!("--service-account-issuer={server}/"))
        .arg(arg("--service-account-key-file", &pki.sa_pub))
        .arg(arg("--service-account-signing-key-file", &pki.sa_key));
    procs.0.push(spawn_server(APISERVER, apiserver, dir)?);
    wait_ready(&mut procs.0, &kubeconfig)?;

    Ok((port, std::mem::take(&mut procs.0)))
}

/// `--name=<path>` (a path may not be UTF-8, so not through `format!`).
fn arg(name: &str, path: &Path) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(name);
    s.push("=");
    s.push(path);
    s
}

/// Kills the processes it holds when dropped (a failed start).
struct ProcGuard(Vec<Proc>);

impl Drop for ProcGuard {
    fn drop(&mut self) {
        while let Some(mut p) = self.0.pop() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// Three distinct free ports on 127.0.0.1 (held open together so they differ).
fn free_ports() -> Result<[u16; 3], Error> {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(Error::FreePort);
    let listeners = [bind()?, bind()?, bind()?];
    let mut ports = [0u16; 3];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr().map_err(Error::FreePort)?.port();
    }
    Ok(ports)
}

/// Spawns a server with stdout and stderr to `<dir>/<name>.log`, from the spawner thread.
fn spawn_server(name: &'static str, mut cmd: Command, dir: &Path) -> Result<Proc, Error> {
    let log = dir.join(format!("{name}.log"));
    let file = fs::File::create(&log).map_err(Error::io("creating", &log))?;
    let stderr = file.try_clone().map_err(Error::io("duplicating", &log))?;
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr);
    let bin = PathBuf::from(cmd.get_program());
    let child = spawn_on_keeper_thread(cmd).map_err(|source| Error::Spawn { name, bin, source })?;
    Ok(Proc { name, child, log })
}

/// A command for the spawner thread and where to send the child back.
struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Spawns `cmd` from one thread that lives as long as the process, with `PR_SET_PDEATHSIG` =
/// SIGKILL. The kernel sends that signal when the thread that forked exits, not the process: a
/// child spawned from a test thread would die with that test, one spawned here dies exactly when
/// the test binary does (normal exit, panic=abort, SIGKILL alike).
fn spawn_on_keeper_thread(cmd: Command) -> io::Result<Child> {
    static KEEPER: OnceLock<io::Result<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("emu-k8s-spawner".into())
            .spawn(move || {
                // Ends only when every sender is gone, and the static one never is.
                for mut req in rx {
                    let _ = req.reply.send(spawn_guarded(&mut req.cmd));
                }
            })
            .map(|_| tx)
    });
    let keeper = keeper
        .as_ref()
        .map_err(|e| io::Error::other(format!("starting the spawner thread: {e}")))?;
    let (reply, answer) = mpsc::channel();
    keeper
        .send(SpawnRequest { cmd, reply })
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the spawner thread dropped the request"))?
}

/// The error for a server that exited, if one did.
fn check_alive(procs: &mut [Proc]) -> Result<(), Error> {
    for p in procs.iter_mut() {
        if let Ok(Some(status)) = p.child.try_wait() {
            return Err(Error::Exited {
                name: p.name,
                status,
                tail: tail(&p.log, LOG_TAIL_LINES),
                log: p.log.clone(),
            });
        }
    }
    Ok(())
}

/// Waits until etcd (the last of `procs`) accepts connections on `port`.
fn wait_listening(procs: &mut [Proc], port: u16) -> Result<(), Error> {
    let t0 = Instant::now();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut last = String::from("no attempt");
    while t0.elapsed() < START_TIMEOUT {
        check_alive(procs)?;
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("connect {addr}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let p = procs
        .last()
        .ok_or_else(|| Error::Startup("no process to wait for".into()))?;
    Err(Error::NotReady {
        name: p.name,
        waited: t0.elapsed(),
        last,
        log: p.log.clone(),
        tail: tail(&p.log, LOG_TAIL_LINES),
    })
}

/// Polls `GET /readyz` as admin until it answers `ok`, failing early if a server exits.
fn wait_ready(procs: &mut [Proc], kubeconfig: &Path) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Startup(format!("building the readiness runtime: {e}")))?;
    let t0 = Instant::now();
    rt.block_on(async {
        let client = client_from_kubeconfig(kubeconfig)?;
        let mut last = String::from("no answer yet");
        while t0.elapsed() < START_TIMEOUT {
            check_alive(procs)?;
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::Startup(format!("building GET /readyz: {e}")))?;
            match tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await {
                Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
                Ok(Ok(body)) => last = format!("/readyz: {body}"),
                Ok(Err(e)) => last = format!("/readyz: {}", error_chain(&e)),
                Err(_) => last = "/readyz: no answer in 5 s".into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let p = procs
            .last()
            .ok_or_else(|| Error::Startup("no process to wait for".into()))?;
        Err(Error::NotReady {
            name: p.name,
            waited: t0.elapsed(),
            last,
            log: p.log.clone(),
            tail: tail(&p.log, LOG_TAIL_LINES),
        })
    })
}

/// A client from a kubeconfig this harness wrote; needs a tokio runtime (the client spawns its
/// request buffer there).
fn client_from_kubeconfig(path: &Path) -> Result<Client, Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::NoRuntime);
    }
    let kc_err = |source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(kc_err)?;
    // from_custom_kubeconfig is async only in signature: with file credentials it never awaits
    // anything, so it is driven right here, even inside the caller's runtime.
    let mut config = futures::executor::block_on(kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &KubeConfigOptions::default(),
    ))
    .map_err(kc_err)?;
    // The server is on 127.0.0.1: never through $HTTPS_PROXY.
    config.proxy_url = None;
    Client::try_from(config).map_err(|source| Error::Client {
        kubeconfig: path.to_path_buf(),
        source,
    })
}

/// Writes a kubeconfig (JSON, which kubectl and kube read as YAML) with one cluster, one user
/// authenticated by a client certificate, and one context.
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    crt: &Path,
    key: &Path,
) -> Result<(), Error> {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "emu-test",
            "cluster": { "server": server, "certificate-authority": ca.to_string_lossy() },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate": crt.to_string_lossy(),
                "client-key": key.to_string_lossy(),
            },
        }],
        "contexts": [{
            "name": "emu-test",
            "context": { "cluster": "emu-test", "user": user, "namespace": "default" },
        }],
        "current-context": "emu-test",
    });
    let text = serde_json::to_string_pretty(&doc)
        .map_err(|e| Error::Startup(format!("serializing a kubeconfig: {e}")))?;
    write_file(path, text.as_bytes(), 0o600)
}

/// The test PKI: one CA for serving and client certificates, and the ServiceAccount token key.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_crt: PathBuf,
    serving_crt: PathBuf,
    serving_key: PathBuf,
    admin_crt: PathBuf,
    admin_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

impl Pki {
    /// Generates every key (ECDSA P-256) and certificate into `dir`.
    fn generate(dir: &Path) -> Result<Pki, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("emu-sriov-test-ca", &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(Error::cert("CA key"))?;
        let ca =
            CertifiedIssuer::self_signed(params, key).map_err(Error::cert("CA certificate"))?;
        let ca_crt = dir.join("ca.crt");
        write_file(&ca_crt, ca.pem().as_bytes(), 0o644)?;

        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
            .map_err(Error::cert("serving certificate names"))?;
        params.distinguished_name = dn(APISERVER, &[]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (serving_crt, serving_key) = issue(&ca, dir, APISERVER, params)?;

        let sa = KeyPair::generate().map_err(Error::cert("ServiceAccount signing key"))?;
        let sa_key = dir.join("sa.key");
        write_file(&sa_key, sa.serialize_pem().as_bytes(), 0o600)?;
        let sa_pub = dir.join("sa.pub");
        write_file(&sa_pub, sa.public_key_pem().as_bytes(), 0o644)?;

        let mut pki = Pki {
            ca,
            ca_crt,
            serving_crt,
            serving_key,
            admin_crt: PathBuf::new(),
            admin_key: PathBuf::new(),
            sa_key,
            sa_pub,
        };
        (pki.admin_crt, pki.admin_key) =
            pki.client_cert(dir, "admin", "admin", &["system:masters"])?;
        Ok(pki)
    }

    /// A client certificate for `user` (CN) in `groups` (O), as `<dir>/<stem>.{crt,key}`.
    fn client_cert(
        &self,
        dir: &Path,
        stem: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<(PathBuf, PathBuf), Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(user, groups);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        issue(&self.ca, dir, stem, params)
    }
}

/// CN=`cn`, one O= per entry of `orgs` (Kubernetes reads O as groups).
fn dn(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn
}

/// Signs `params` with a new key by `ca`; writes `<dir>/<stem>.crt` and `.key`.
fn issue(
    ca: &CertifiedIssuer<'static, KeyPair>,
    dir: &Path,
    stem: &str,
    params: CertificateParams,
) -> Result<(PathBuf, PathBuf), Error> {
    let key = KeyPair::generate().map_err(Error::cert(format!("{stem} key")))?;
    let cert = params
        .signed_by(&key, ca)
        .map_err(Error::cert(format!("{stem} certificate")))?;
    let crt_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    write_file(&crt_path, cert.pem().as_bytes(), 0o644)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    Ok((crt_path, key_path))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(Error::io("writing", path))
}

/// A new, private (0700: it holds keys) `$TMPDIR/emu-k8s-<pid>-<n>-<nanos>`.
fn new_data_dir() -> Result<PathBuf, Error> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}-{nanos:x}", std::process::id()));
    DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(Error::io("creating", &path))?;
    Ok(path)
}

/// Removes data directories whose test process is gone (a killed run skips its exit cleanup).
fn remove_stale_dirs() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => eprintln!("emu-k8s: removed stale {}", entry.path().display()),
                Err(e) => eprintln!("emu-k8s: removing stale {}: {e}", entry.path().display()),
            }
        }
    }
}

/// Server-side applies `crds` (as [`FIELD_MANAGER`], forcing conflicts) and waits until each is
/// Established, i.e. its API is served. A CRD the server rejects (schema, CEL cost budget) fails
/// with the server's message.
pub async fn install_crds(
    client: &Client,
    crds: Vec<CustomResourceDefinition>,
) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::with_capacity(crds.len());
    for crd in &crds {
        let name = crd
            .metadata
            .name
            .clone()
            .ok_or_else(|| Error::Invalid("a CRD without metadata.name".into()))?;
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .map_err(|source| Error::Api {
                what: format!("applying CRD {name}"),
                source,
            })?;
        names.push(name);
    }
    for name in &names {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout(ESTABLISH_TIMEOUT, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(Error::Wait {
                    what: format!("waiting for CRD {name} to be Established"),
                    source,
                })
            }
            Err(_) => {
                let conditions = match api.get(name).await {
                    Ok(crd) => serde_json::to_string(
                        &crd.status.and_then(|s| s.conditions).unwrap_or_default(),
                    )
                    .unwrap_or_default(),
                    Err(e) => format!("<get failed: {e}>"),
                };
                return Err(Error::Timeout(format!(
                    "CRD {name} not Established after {} s; conditions: {conditions}",
                    ESTABLISH_TIMEOUT.as_secs()
                )));
            }
        }
    }
    Ok(())
}

/// Creates a namespace named `<prefix>-<5 random characters>` (the server picks the suffix, so
/// names never collide) and returns its name. `prefix` is made a valid DNS label (lowercase,
/// other characters to `-`, at most 57 characters). Namespaces are never deleted: without a
/// controller-manager they would stay Terminating anyway, and they go with the control plane.
pub async fn create_namespace(client: &Client, prefix: &str) -> Result<String, Error> {
    let ns = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", dns_label_prefix(prefix))),
            labels: Some([(NAMESPACE_LABEL.to_string(), "true".to_string())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let created = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(|source| Error::Api {
            what: format!("creating a namespace named {prefix}-*"),
            source,
        })?;
    created
        .metadata
        .name
        .ok_or_else(|| Error::Invalid("the server returned a namespace without a name".into()))
}

/// `prefix` as the start of a DNS label: lowercase alphanumerics and `-`, starting and ending
/// with an alphanumeric, at most 57 characters (the server appends `-` and 5 characters).
fn dns_label_prefix(prefix: &str) -> String {
    let mapped: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let mut label: String = mapped.trim_matches('-').chars().take(57).collect();
    while label.ends_with('-') {
        label.pop();
    }
    if label.is_empty() {
        "test".into()
    } else {
        label
    }
}

/// Creates a Node object `name` with `labels` (the API object only: no kubelet heartbeats it,
/// nothing runs there). Node names are cluster-wide: give each test its own.
pub async fn create_node(
    client: &Client,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<Node, Error> {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .map_err(|source| Error::Api {
            what: format!("creating Node {name}"),
            source,
        })
}

/// The Network Plumbing WG's CRD as vendored in `tests/cluster/crds/` (header names the
/// upstream commit).
const NAD_CRD_YAML: &str =
    include_str!("../cluster/crds/network-attachment-definitions.k8s.cni.cncf.io.yaml");

/// The NetworkAttachmentDefinition CRD (`k8s.cni.cncf.io/v1`) that Multus installs in a real
/// cluster, without the empty `status` stanza the upstream file carries.
pub fn nad_crd() -> CustomResourceDefinition {
    let mut crd: CustomResourceDefinition = serde_yaml::from_str(NAD_CRD_YAML).expect(
        "tests/cluster/crds/network-attachment-definitions.k8s.cni.cncf.io.yaml is a \
         CustomResourceDefinition",
    );
    crd.status = None;
    crd
}

/// Polls `check` every 100 ms until it returns Some, or panics after `timeout` saying what it
/// waited for (tests against the API server wait for controllers to converge).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nad_crd_parses() {
        let crd = nad_crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("network-attachment-definitions.k8s.cni.cncf.io")
        );
        assert_eq!(crd.spec.group, "k8s.cni.cncf.io");
        assert_eq!(crd.spec.names.kind, "NetworkAttachmentDefinition");
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1");
    }

    #[test]
    fn namespace_prefixes_are_dns_labels() {
        assert_eq!(
            dns_label_prefix("k8s_control_plane::rbac"),
            "k8s-control-plane--rbac"
        );
        assert_eq!(dns_label_prefix("--Pool-A--"), "pool-a");
        assert_eq!(dns_label_prefix("!!!"), "test");
        let long = dns_label_prefix(&"a-".repeat(60));
        assert!(long.len() <= 57 && !long.ends_with('-'), "{long}");
    }

    #[test]
    fn pinned_version_is_read_from_go_mod() {
        let v = pinned_version().expect("tests/cluster/go.mod pins k8s.io/kubernetes");
        assert!(v.starts_with("v1."), "{v}");
    }
}
