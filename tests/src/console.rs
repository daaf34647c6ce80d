//! Tails a guest's console log and parses the `/init` markers (guest-tests.md §3, init.sh header):
//! `EMU-CHECK`, `EMU-SYNC`, `EMU-STAT`, `EMU-DONE`. Lines have `\r` stripped and markers are
//! matched unanchored (SeaBIOS escape codes, echoed input).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// One `EMU-CHECK <name> PASS|FAIL <detail>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Check name (e.g. `ping`).
    pub name: String,
    /// PASS?
    pub pass: bool,
    /// The rest of the line.
    pub detail: String,
}

/// A parsed marker.
#[derive(Debug, Clone, PartialEq)]
pub enum Marker {
    /// `EMU-CHECK`.
    Check(Check),
    /// `EMU-SYNC <name> t=<uptime>`: the guest waits for a line on its console.
    Sync {
        /// Barrier name.
        name: String,
        /// Guest uptime (s) when it arrived.
        uptime: Option<f64>,
    },
    /// `EMU-STAT k=v ...` (interface statistics).
    Stat(BTreeMap<String, u64>),
    /// `EMU-DONE pass=N fail=M`.
    Done {
        /// Passed checks.
        pass: u32,
        /// Failed checks.
        fail: u32,
        /// Guest uptime (s).
        uptime: Option<f64>,
    },
    /// Any other `EMU-<TAG> rest` line (`EMU-IPERF`, `EMU-IRQ`, `EMU-BOOT`, …), rest verbatim.
    Other {
        /// The tag, e.g. `EMU-IPERF`.
        tag: String,
        /// The rest of the line, trimmed.
        rest: String,
    },
}

/// Parses one console line (already without `\r`).
pub fn parse_line(line: &str) -> Option<Marker> {
    let at = line.find("EMU-")?;
    let mut words = line[at..].split_whitespace();
    let tag = words.next()?;
    let kv = |w: &str| -> Option<(String, String)> {
        let (k, v) = w.split_once('=')?;
        Some((k.to_string(), v.to_string()))
    };
    match tag {
        "EMU-CHECK" => {
            let name = words.next()?.to_string();
            let pass = match words.next()? {
                "PASS" => true,
                "FAIL" => false,
                _ => return None,
            };
            let detail = words.collect::<Vec<_>>().join(" ");
            Some(Marker::Check(Check { name, pass, detail }))
        }
        "EMU-SYNC" => {
            let name = words.next()?.to_string();
            let uptime = words
                .filter_map(kv)
                .find(|(k, _)| k == "t")
                .and_then(|(_, v)| v.parse().ok());
            Some(Marker::Sync { name, uptime })
        }
        "EMU-STAT" => {
            let map: BTreeMap<String, u64> = words
                .filter_map(kv)
                .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
                .collect();
            Some(Marker::Stat(map))
        }
        "EMU-DONE" => {
            let map: BTreeMap<String, String> = words.filter_map(kv).collect();
            Some(Marker::Done {
                pass: map.get("pass")?.parse().ok()?,
                fail: map.get("fail")?.parse().ok()?,
                uptime: map.get("t").and_then(|v| v.parse().ok()),
            })
        }
        _ if tag.len() > 4 => Some(Marker::Other {
            tag: tag.to_string(),
            rest: line[at + tag.len()..].trim().to_string(),
        }),
        _ => None,
    }
}

/// Incrementally reads a console log file and accumulates the markers seen so far.
pub struct Console {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// Every check line, in order.
    pub checks: Vec<Check>,
    /// Barrier names announced, in order.
    pub syncs: Vec<String>,
    /// The `EMU-STAT` values, once printed.
    pub stat: Option<BTreeMap<String, u64>>,
    /// `(pass, fail, uptime)` once `EMU-DONE` was printed.
    pub done: Option<(u32, u32, Option<f64>)>,
    /// Every other marker line as `(tag, rest)`, in order.
    pub other: Vec<(String, String)>,
}

impl Console {
    /// Watches `path` (which may not exist yet).
    pub fn new(path: PathBuf) -> Console {
        Console {
            path,
            offset: 0,
            partial: Vec::new(),
            checks: Vec::new(),
            syncs: Vec::new(),
            stat: None,
            done: None,
            other: Vec::new(),
        }
    }

    /// Reads what was appended since the last call; returns the new markers.
    pub fn poll(&mut self) -> Vec<Marker> {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(&self.path) {
            if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let _ = f.read_to_end(&mut buf);
            }
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut found = Vec::new();
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.partial.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&raw).replace(['\r', '\n'], "");
            if let Some(m) = parse_line(&line) {
                match &m {
                    Marker::Check(c) => self.checks.push(c.clone()),
                    Marker::Sync { name, .. } => self.syncs.push(name.clone()),
                    Marker::Stat(s) => self.stat = Some(s.clone()),
                    Marker::Done { pass, fail, uptime } => {
                        self.done = Some((*pass, *fail, *uptime))
                    }
                    Marker::Other { tag, rest } => self.other.push((tag.clone(), rest.clone())),
                }
                found.push(m);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_markers_unanchored() {
        assert_eq!(
            parse_line("\x1b[2J\x1bcEMU-CHECK ping PASS 198.18.0.2 3/3 (t=7.9)"),
            Some(Marker::Check(Check {
                name: "ping".into(),
                pass: true,
                detail: "198.18.0.2 3/3 (t=7.9)".into()
            }))
        );
        assert_eq!(
            parse_line("goEMU-SYNC checks t=20.55"),
            Some(Marker::Sync {
                name: "checks".into(),
                uptime: Some(20.55)
            })
        );
        let Some(Marker::Stat(s)) = parse_line("EMU-STAT tx_packets=12 tx_bytes=1000") else {
            panic!("stat not parsed");
        };
        assert_eq!(s["tx_packets"], 12);
        assert_eq!(
            parse_line("EMU-DONE pass=8 fail=0 t=30.1"),
            Some(Marker::Done {
                pass: 8,
                fail: 0,
                uptime: Some(30.1)
            })
        );
        assert_eq!(parse_line("EMU-CHECK x MAYBE"), None);
        assert_eq!(
            parse_line("xEMU-IPERF scen=ours round=1 rc=0 {\"a\": 1}"),
            Some(Marker::Other {
                tag: "EMU-IPERF".into(),
                rest: "scen=ours round=1 rc=0 {\"a\": 1}".into()
            })
        );
        assert_eq!(parse_line("plain line"), None);
    }
}
