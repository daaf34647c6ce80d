//! The agent's control socket, `RUN_DIR/control.sock`: how `emu-sriov-agent list` asks a
//! running agent for its VFs.
//!
//! Protocol: one request line, one answer line, then the server closes the connection.
//! Request `{"cmd":"list"}\n`; answer the [`AgentStatus`] JSON, or `{"error":"..."}` for an
//! unknown command or malformed input. `{"cmd":"netdev","netdev":{...}}` is `emu-sriov-cni`
//! asking about netdev-mode VFs ([`crate::netdev::proto`]); a refusal may carry a CNI error
//! `code`. Requests are bounded to [`MAX_REQUEST`] bytes and
//! [`IO_TIMEOUT`]; a client that misbehaves loses its own connection, nothing else.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::naming;
use crate::netdev::proto::{NetdevAnswer, NetdevRequest};
use crate::status::AgentStatus;

/// Mode of the control socket: only the agent's user may ask it.
pub const CONTROL_SOCKET_MODE: u32 = 0o600;

/// Longest request line the server reads.
pub const MAX_REQUEST: u64 = 4096;
/// Longest answer line the client reads (a full node's status is a few KiB).
const MAX_RESPONSE: u64 = 16 << 20;
/// Per-connection read and write timeout, on both sides.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop checks for shutdown.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Produces the current status; called once per `list` request, on the control thread.
pub type StatusFn = Arc<dyn Fn() -> AgentStatus + Send + Sync>;

/// Serves one netdev request; a refusal is (message, CNI error code).
pub type NetdevFn =
    Arc<dyn Fn(&NetdevRequest) -> Result<NetdevAnswer, (String, u32)> + Send + Sync>;

/// Errors of the control server and client.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no agent is running with run dir {} ({} at {}): start one with `emu-sriov-agent run --run-dir {}`",
        run_dir.display(), reason.as_str(), socket.display(), run_dir.display()
    )]
    NoAgent {
        run_dir: PathBuf,
        socket: PathBuf,
        reason: NoAgentReason,
    },
    #[error("could not connect to the agent's control socket {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not talk to the agent on {}: is it overloaded or stuck? check its log", socket.display())]
    Exchange {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the agent on {} sent an answer this client cannot read: are the agent and this command the same version?", socket.display())]
    Decode {
        socket: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the agent on {} refused the request: {message}", socket.display())]
    Refused { socket: PathBuf, message: String },
    #[error(
        "another agent is already serving {}: stop it, or give this one another --run-dir",
        socket.display()
    )]
    AlreadyRunning { socket: PathBuf },
    #[error("{} exists and is not a socket: remove it, or use another --run-dir", path.display())]
    NotASocket { path: PathBuf },
    #[error("could not prepare {} for the control socket", path.display())]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not listen on control socket {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not start the control socket thread")]
    Spawn(#[source] io::Error),
}

/// Why the client concluded that no agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAgentReason {
    /// The socket file does not exist.
    Missing,
    /// The socket file exists but nobody listens (an agent died without cleaning up).
    Stale,
}

impl NoAgentReason {
    fn as_str(self) -> &'static str {
        match self {
            NoAgentReason::Missing => "no control socket",
            NoAgentReason::Stale => "stale control socket, nobody listening",
        }
    }
}

/// A request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Answer with the [`AgentStatus`].
    List,
    /// A netdev-mode VF request from `emu-sriov-cni` (payload in the line's `netdev`).
    Netdev,
}

/// A request line on the wire: `{"cmd":"list"}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestLine {
    cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    netdev: Option<NetdevRequest>,
}

impl Request {
    /// Every command, for error messages.
    const ALL: &'static [Request] = &[Request::List, Request::Netdev];

    fn cmd(self) -> &'static str {
        match self {
            Request::List => "list",
            Request::Netdev => "netdev",
        }
    }

    /// The request as one line, newline included.
    fn to_line(self) -> String {
        let line = RequestLine {
            cmd: self.cmd().to_owned(),
            netdev: None,
        };
        let json = serde_json::to_string(&line)
            .unwrap_or_else(|_| unreachable!("a string field always encodes"));
        json + "\n"
    }

    /// Parses a request line; the error is the text to answer with.
    fn parse(line: &[u8]) -> Result<(Request, Option<NetdevRequest>), String> {
        let supported = || {
            Self::ALL
                .iter()
                .map(|r| r.cmd())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let RequestLine { cmd, netdev } = serde_json::from_slice(line).map_err(|e| {
            format!("malformed request ({e}): send one JSON line such as {{\"cmd\":\"list\"}}")
        })?;
        Self::ALL
            .iter()
            .copied()
            .find(|r| r.cmd() == cmd)
            .ok_or_else(|| {
                format!(
                    "unknown command `{cmd}`: supported commands are {}",
                    supported()
                )
            })
            .map(|r| (r, netdev))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ErrorAnswer {
    error: String,
    /// A CNI error code, for refusals of netdev requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<u32>,
}

/// The control socket server: a thread answering requests until [`ControlServer::shutdown`]
/// or drop, which also removes the socket file.
pub struct ControlServer {
    path: PathBuf,
    /// (dev, ino) of the socket file we bound, so that we never delete someone else's.
    identity: (u64, u64),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `path` (creating its directory; replacing a stale socket, refusing a live one)
    /// and serves requests on a new thread, answering `list` with `status()`.
    pub fn start(path: &Path, status: StatusFn) -> Result<ControlServer, ControlError> {
        Self::start_with(path, status, None)
    }

    /// [`ControlServer::start`] that also answers netdev requests with `netdev`.
    pub fn start_with(
        path: &Path,
        status: StatusFn,
        netdev: Option<NetdevFn>,
    ) -> Result<ControlServer, ControlError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|source| ControlError::Prepare {
                path: dir.to_owned(),
                source,
            })?;
        }
        remove_stale_socket(path)?;
        let listener = UnixListener::bind(path).map_err(|source| ControlError::Bind {
            path: path.to_owned(),
            source,
        })?;
        let prepare = |source| ControlError::Prepare {
            path: path.to_owned(),
            source,
        };
        listener.set_nonblocking(true).map_err(prepare)?;
        // Root-only (the agent's user): `list` shows every tenant's VF, MAC and counters.
        fs::set_permissions(path, fs::Permissions::from_mode(CONTROL_SOCKET_MODE))
            .map_err(prepare)?;
        let meta = fs::symlink_metadata(path).map_err(prepare)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("control".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || serve(listener, &stop, &status, netdev.as_ref())
            })
            .map_err(ControlError::Spawn)?;
        tracing::info!(socket = %path.display(), "control socket listening");
        Ok(ControlServer {
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving, waits for the thread, and removes the socket file.
    pub fn shutdown(mut self) {
        self.stop_and_clean();
    }

    fn stop_and_clean(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Relaxed);
        if thread.join().is_err() {
            tracing::error!(socket = %self.path.display(), "control socket thread panicked");
        }
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.identity)
            .unwrap_or(false);
        if ours {
            if let Err(error) = fs::remove_file(&self.path) {
                tracing::warn!(socket = %self.path.display(), %error, "could not remove control socket");
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_and_clean();
    }
}

/// Fails with [`ControlError::AlreadyRunning`] when an agent answers on `path`: call before
/// touching a run dir (its state file, its sockets) that may belong to a running agent.
pub fn refuse_if_running(path: &Path) -> Result<(), ControlError> {
    match UnixStream::connect(path) {
        Ok(_) => Err(ControlError::AlreadyRunning {
            socket: path.to_owned(),
        }),
        Err(_) => Ok(()),
    }
}

/// Removes `path` if it is a socket nobody listens on; errors if an agent answers there or
/// the path is something else.
fn remove_stale_socket(path: &Path) -> Result<(), ControlError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ControlError::Prepare {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_owned(),
        });
    }
    if UnixStream::connect(path).is_ok() {
        return Err(ControlError::AlreadyRunning {
            socket: path.to_owned(),
        });
    }
    tracing::info!(socket = %path.display(), "removing stale control socket");
    fs::remove_file(path).map_err(|source| ControlError::Prepare {
        path: path.to_owned(),
        source,
    })
}

fn serve(listener: UnixListener, stop: &AtomicBool, status: &StatusFn, netdev: Option<&NetdevFn>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(error) = handle(stream, status, netdev) {
                    tracing::debug!(%error, "control connection failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL_INTERVAL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                // E.g. EMFILE: back off instead of spinning, keep serving.
                tracing::warn!(%error, "control socket accept failed");
                thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// Serves one connection: one request line, one answer line.
fn handle(stream: UnixStream, status: &StatusFn, netdev: Option<&NetdevFn>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = Vec::new();
    BufReader::new((&stream).take(MAX_REQUEST + 1)).read_until(b'\n', &mut line)?;
    let answer = if line.len() as u64 > MAX_REQUEST {
        error_line(&format!("request longer than {MAX_REQUEST} bytes"))
    } else {
        answer(&line, status, netdev)
    };
    (&stream).write_all(answer.as_bytes())
}

fn answer(line: &[u8], status: &StatusFn, netdev: Option<&NetdevFn>) -> String {
    let (request, payload) = match Request::parse(line) {
        Ok(request) => request,
        Err(message) => return error_line(&message),
    };
    match request {
        Request::Netdev => {
            let (Some(handler), Some(req)) = (netdev, payload) else {
                return error_line(
                    "netdev: send {\"cmd\":\"netdev\",\"netdev\":{...}} to an agent that serves netdev VFs",
                );
            };
            match panic::catch_unwind(AssertUnwindSafe(|| handler(&req))) {
                Ok(Ok(a)) => match serde_json::to_string(&a) {
                    Ok(json) => json + "\n",
                    Err(e) => error_line(&format!("could not encode the answer: {e}")),
                },
                Ok(Err((message, code))) => coded_error_line(&message, code),
                Err(_) => {
                    error_line("internal error while serving a netdev request; see the agent's log")
                }
            }
        }
        Request::List => {
            // The status function is the agent's; a bug there must not kill this thread.
            match panic::catch_unwind(AssertUnwindSafe(|| status())) {
                Ok(status) => match serde_json::to_string(&status) {
                    Ok(json) => json + "\n",
                    Err(e) => error_line(&format!("could not encode the status: {e}")),
                },
                Err(_) => {
                    error_line("internal error while collecting the status; see the agent's log")
                }
            }
        }
    }
}

fn coded_error_line(message: &str, code: u32) -> String {
    let json = serde_json::to_string(&ErrorAnswer {
        error: message.to_owned(),
        code: Some(code),
    })
    .unwrap_or_else(|_| r#"{"error":"internal error"}"#.to_owned());
    json + "\n"
}

fn error_line(message: &str) -> String {
    let json = serde_json::to_string(&ErrorAnswer {
        error: message.to_owned(),
        code: None,
    })
    .unwrap_or_else(|_| r#"{"error":"internal error"}"#.to_owned());
    json + "\n"
}

/// Asks the agent running with `run_dir` for its status.
pub fn query(run_dir: &Path) -> Result<AgentStatus, ControlError> {
    let socket = naming::control_socket_path(run_dir);
    let stream = UnixStream::connect(&socket).map_err(|source| {
        let reason = match source.kind() {
            io::ErrorKind::NotFound => Some(NoAgentReason::Missing),
            io::ErrorKind::ConnectionRefused => Some(NoAgentReason::Stale),
            _ => None,
        };
        match reason {
            Some(reason) => ControlError::NoAgent {
                run_dir: run_dir.to_owned(),
                socket: socket.clone(),
                reason,
            },
            None => ControlError::Connect {
                socket: socket.clone(),
                source,
            },
        }
    })?;
    let exchange = |source| ControlError::Exchange {
        socket: socket.clone(),
        source,
    };
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(exchange)?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(exchange)?;
    (&stream)
        .write_all(Request::List.to_line().as_bytes())
        .map_err(exchange)?;
    let mut line = Vec::new();
    BufReader::new((&stream).take(MAX_RESPONSE))
        .read_until(b'\n', &mut line)
        .map_err(exchange)?;
    let decode = |source| ControlError::Decode {
        socket: socket.clone(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(&line).map_err(decode)?;
    if let Ok(ErrorAnswer { error, .. }) = serde_json::from_value::<ErrorAnswer>(value.clone()) {
        return Err(ControlError::Refused {
            socket: socket.clone(),
            message: error,
        });
    }
    serde_json::from_value(value).map_err(decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::sample;

    fn temp_run_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("emu-sriov-ctl-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn raw(socket: &Path, bytes: &[u8]) -> String {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer).unwrap();
        answer
    }

    #[test]
    fn round_trip_and_malformed_requests() {
        let dir = temp_run_dir("rt");
        let socket = naming::control_socket_path(&dir);
        let server = ControlServer::start(&socket, Arc::new(sample)).unwrap();
        assert_eq!(query(&dir).unwrap(), sample());

        let cases: &[(&[u8], &str)] = &[
            (b"hello\n", "malformed request"),
            (b"{\"cmd\":\"list\",\"x\":1}\n", "malformed request"),
            (b"\n", "malformed request"),
            (b"[1,2]", "malformed request"),
            (
                b"{\"cmd\":\"reboot\"}\n",
                "unknown command `reboot`: supported commands are list, netdev",
            ),
        ];
        for (bad, expected) in cases {
            let answer = raw(&socket, bad);
            let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
            assert!(v["error"].as_str().unwrap().contains(expected), "{answer}");
        }
        assert_eq!(
            raw(&socket, b"{\"cmd\":\"list\"}\n"),
            serde_json::to_string(&sample()).unwrap() + "\n"
        );
        let long = vec![b'x'; MAX_REQUEST as usize + 10];
        assert!(raw(&socket, &long).contains("longer than"));

        // Still serving after all that.
        assert_eq!(query(&dir).unwrap(), sample());
        let mode = fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, CONTROL_SOCKET_MODE);
        server.shutdown();
        assert!(!socket.exists(), "socket file left behind");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_panicking_status_fn_gets_an_error_answer() {
        let dir = temp_run_dir("panic");
        let socket = naming::control_socket_path(&dir);
        let _server = ControlServer::start(&socket, Arc::new(|| panic!("boom"))).unwrap();
        let e = query(&dir).unwrap_err();
        assert!(matches!(e, ControlError::Refused { .. }), "{e}");
        assert!(e.to_string().contains("internal error"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_agent_error_says_what_to_do() {
        let dir = temp_run_dir("none");
        let e = query(&dir).unwrap_err().to_string();
        let d = dir.display();
        assert_eq!(
            e,
            format!(
                "no agent is running with run dir {d} (no control socket at {d}/control.sock): \
                 start one with `emu-sriov-agent run --run-dir {d}`"
            )
        );
    }

    #[test]
    fn refuses_live_socket_and_replaces_stale_one() {
        let dir = temp_run_dir("live");
        let socket = naming::control_socket_path(&dir);
        let first = ControlServer::start(&socket, Arc::new(AgentStatus::default)).unwrap();
        let e = ControlServer::start(&socket, Arc::new(AgentStatus::default))
            .err()
            .unwrap();
        assert!(matches!(e, ControlError::AlreadyRunning { .. }), "{e}");
        drop(first);

        // A socket file nobody listens on, as a crashed agent leaves behind.
        drop(UnixListener::bind(&socket).unwrap());
        assert!(matches!(
            query(&dir).unwrap_err(),
            ControlError::NoAgent {
                reason: NoAgentReason::Stale,
                ..
            }
        ));
        let second = ControlServer::start(&socket, Arc::new(AgentStatus::default)).unwrap();
        assert_eq!(query(&dir).unwrap(), AgentStatus::default());
        drop(second);

        fs::write(&socket, b"not a socket").unwrap();
        let e = ControlServer::start(&socket, Arc::new(AgentStatus::default))
            .err()
            .unwrap();
        assert!(matches!(e, ControlError::NotASocket { .. }), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
