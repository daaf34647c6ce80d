//! Editing the libvirt domain virt-launcher is about to define, pure: bytes in, bytes out.
//!
//! libvirt has no vfio-user host device, so each VF goes in as a `-device vfio-user-pci` QEMU
//! argument under `<qemu:commandline>`, and guest RAM is made a shared memfd so that QEMU can
//! hand its fds to the agent (nutanix/libvfio-user `docs/libvirt.md`; design kubernetes.md §5.4).
//!
//! The domain is streamed event by event and written back as read, so everything the hook does
//! not touch stays byte for byte as it was (attribute order, quoting, whitespace, comments).
//! Only three places change: the root gains `xmlns:qemu` (unless the QEMU namespace is already
//! bound), `<memoryBacking>` gains `<source type="memfd"/>` and `<access mode="shared"/>` (or is
//! added), and `<qemu:commandline>` gains one `-device` pair per VF (or is added).

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};
use serde::Serialize;

/// libvirt's QEMU passthrough namespace.
pub const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// One VF to attach: the socket path as the compute container (where QEMU runs) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfAttachment {
    /// The VF id (device plugin id) or, for a network binding, the network name; names the
    /// QEMU device `emu-sriov-<n>` and error messages.
    pub name: String,
    /// `/var/run/emu-sriov/<id>/vf.sock` in the compute container.
    pub socket: String,
}

/// Why the domain was left alone.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("the domain XML is not well-formed near byte {pos}; the hook only edits the XML virt-launcher generates")]
    Parse {
        pos: u64,
        #[source]
        source: quick_xml::Error,
    },
    #[error("the domain XML's root element is <{0}>, not <domain>")]
    NotADomain(String),
    #[error("the domain XML ends before </domain>")]
    Truncated,
    #[error("the domain binds prefix `{prefix}` to {uri}, not {QEMU_NS}; the hook cannot add <{prefix}:commandline> safely: rename that prefix")]
    QemuPrefixTaken { prefix: String, uri: String },
    #[error("<memoryBacking><source type=\"{0}\"/> cannot be shared with the emu-sriov agent (vfio-user needs memfd or file-backed guest RAM); remove that memory source from the VMI")]
    UnsharableSource(String),
    #[error("<memoryBacking><access mode=\"{0}\"/> keeps guest RAM private, but vfio-user needs it shared; remove that access mode from the VMI")]
    PrivateAccess(String),
    #[error("<numa><cell memAccess=\"private\"> keeps that NUMA cell's RAM private, but vfio-user needs all guest RAM shared; drop memAccess from the VMI's NUMA cells")]
    PrivateNumaCell,
    #[error("an attribute of <{element}> is malformed")]
    Attribute {
        element: String,
        #[source]
        source: quick_xml::events::attributes::AttrError,
    },
    #[error("writing the edited domain XML")]
    Write(#[source] std::io::Error),
}

/// The `-device` JSON for one VF. Only the JSON form works: `socket` is a QAPI struct
/// (guest-tests.md §4). `rombar: 0`: the VF has no option ROM.
pub fn device_json(index: usize, vf: &VfAttachment) -> String {
    #[derive(Serialize)]
    struct Socket<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        path: &'a str,
    }
    #[derive(Serialize)]
    struct Device<'a> {
        driver: &'a str,
        id: String,
        socket: Socket<'a>,
        rombar: u32,
    }
    let d = Device {
        driver: "vfio-user-pci",
        id: format!("emu-sriov-{index}"),
        socket: Socket {
            kind: "unix",
            path: &vf.socket,
        },
        rombar: 0,
    };
    // A struct of strings and integers always serializes.
    serde_json::to_string(&d).unwrap_or_default()
}

/// Is `arg` (a `<qemu:arg value>`) a vfio-user-pci device on `socket`?
fn is_device_on(arg: &str, socket: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(arg).is_ok_and(|v| {
        v.get("driver").and_then(|d| d.as_str()) == Some("vfio-user-pci")
            && v.pointer("/socket/path").and_then(|p| p.as_str()) == Some(socket)
    })
}

fn attr(e: &BytesStart<'_>, key: &[u8]) -> Result<Option<String>, DomainError> {
    for a in e.attributes() {
        let a = a.map_err(|source| DomainError::Attribute {
            element: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
            source,
        })?;
        if a.key.as_ref() == key {
            return Ok(Some(
                a.unescape_value()
                    .map(|v| v.into_owned())
                    .unwrap_or_else(|_| String::from_utf8_lossy(&a.value).into_owned()),
            ));
        }
    }
    Ok(None)
}

/// What `<memoryBacking>` already holds.
#[derive(Default)]
struct Backing {
    has_source: bool,
    has_access: bool,
}

/// Where the streaming edit stands.
#[derive(PartialEq, Eq)]
enum Section {
    Other,
    MemoryBacking,
    Commandline,
}

struct Editor<'a> {
    vfs: &'a [VfAttachment],
    w: Writer<Vec<u8>>,
    /// The prefix bound to [`QEMU_NS`] on `<domain>`.
    qemu_prefix: String,
    /// Indentation of `<domain>`'s children (from the document), for what the hook adds.
    indent: String,
    backing_seen: bool,
    commandline_seen: bool,
    backing: Backing,
    /// `<qemu:arg value>`s already in the commandline.
    existing_args: Vec<String>,
}

impl Editor<'_> {
    fn write(&mut self, ev: Event<'_>) -> Result<(), DomainError> {
        self.w
            .write_event(ev)
            .map_err(|e| DomainError::Write(std::io::Error::other(e)))
    }

    fn newline(&mut self, depth: usize) -> Result<(), DomainError> {
        let s = format!("\n{}", self.indent.repeat(depth));
        self.write(Event::Text(BytesText::from_escaped(s)))
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> Result<(), DomainError> {
        let mut e = BytesStart::new(name);
        for a in attrs {
            e.push_attribute(*a);
        }
        self.write(Event::Empty(e))
    }

    /// The children `<memoryBacking>` lacks, each on its own line at `depth`.
    fn backing_children(&mut self, depth: usize) -> Result<(), DomainError> {
        if !self.backing.has_source {
            self.newline(depth)?;
            self.empty("source", &[("type", "memfd")])?;
        }
        if !self.backing.has_access {
            self.newline(depth)?;
            self.empty("access", &[("mode", "shared")])?;
        }
        Ok(())
    }

    /// One `-device` pair per VF not already on the commandline.
    fn commandline_args(&mut self, depth: usize) -> Result<(), DomainError> {
        let arg = format!("{}:arg", self.qemu_prefix);
        for (i, vf) in self.vfs.iter().enumerate() {
            if self
                .existing_args
                .iter()
                .any(|a| is_device_on(a, &vf.socket))
            {
                continue;
            }
            let json = device_json(i, vf);
            self.newline(depth)?;
            self.empty(&arg, &[("value", "-device")])?;
            self.newline(depth)?;
            self.empty(&arg, &[("value", json.as_str())])?;
        }
        Ok(())
    }

    /// Before `</domain>`: whatever section did not exist yet.
    fn missing_sections(&mut self) -> Result<(), DomainError> {
        if !self.backing_seen {
            self.newline(1)?;
            self.write(Event::Start(BytesStart::new("memoryBacking")))?;
            self.backing_children(2)?;
            self.newline(1)?;
            self.write(Event::End(BytesEnd::new("memoryBacking")))?;
        }
        if !self.commandline_seen && !self.vfs.is_empty() {
            let name = format!("{}:commandline", self.qemu_prefix);
            self.newline(1)?;
            self.write(Event::Start(BytesStart::new(name.as_str())))?;
            self.commandline_args(2)?;
            self.newline(1)?;
            self.write(Event::End(BytesEnd::new(name.as_str())))?;
        }
        Ok(())
    }
}

/// The `xmlns:<prefix>` declarations of `e`: `(prefix, uri)`.
fn ns_decls(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, DomainError> {
    let mut v = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|source| DomainError::Attribute {
            element: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
            source,
        })?;
        if let Some(p) = a.key.as_ref().strip_prefix(b"xmlns:") {
            v.push((
                String::from_utf8_lossy(p).into_owned(),
                String::from_utf8_lossy(&a.value).into_owned(),
            ));
        }
    }
    Ok(v)
}

/// Edits `xml` (a KubeVirt domain) to attach `vfs`: shared memfd guest RAM (hugepages and
/// everything else in `<memoryBacking>` kept) and one `vfio-user-pci` per VF. With no VFs the
/// domain comes back unchanged.
pub fn attach_vfs(xml: &[u8], vfs: &[VfAttachment]) -> Result<Vec<u8>, DomainError> {
    if vfs.is_empty() {
        return Ok(xml.to_vec());
    }
    let mut r = Reader::from_reader(xml);
    r.config_mut().trim_text(false);
    let mut ed = Editor {
        vfs,
        w: Writer::new(Vec::with_capacity(xml.len() + 1024)),
        qemu_prefix: "qemu".into(),
        indent: "  ".into(),
        backing_seen: false,
        commandline_seen: false,
        backing: Backing::default(),
        existing_args: Vec::new(),
    };
    let mut depth = 0usize;
    let mut section = Section::Other;
    let mut closed = false;
    let mut first_text = true;
    // A whitespace-only text run is held back: what the hook adds before a closing tag goes
    // before the whitespace that indents that tag, so the document keeps its layout.
    let mut pending: Option<Vec<u8>> = None;
    loop {
        let pos = r.buffer_position();
        let ev = r
            .read_event()
            .map_err(|source| DomainError::Parse { pos, source })?;
        if let Event::Text(ref t) = ev {
            if t.iter().all(|b| b.is_ascii_whitespace()) {
                if depth == 1 && first_text {
                    first_text = false;
                    let raw = String::from_utf8_lossy(t.as_ref()).into_owned();
                    if let Some(ind) = raw.rsplit('\n').next() {
                        if !ind.is_empty() && ind.chars().all(|c| c == ' ' || c == '\t') {
                            ed.indent = ind.to_owned();
                        }
                    }
                }
                pending
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(t.as_ref());
                continue;
            }
        }
        if let Event::End(_) = ev {
            depth = depth.saturating_sub(1);
            match depth {
                0 => {
                    ed.missing_sections()?;
                    closed = true;
                }
                1 if section == Section::MemoryBacking => {
                    ed.backing_children(2)?;
                    section = Section::Other;
                }
                1 if section == Section::Commandline => {
                    ed.commandline_args(2)?;
                    section = Section::Other;
                }
                _ => {}
            }
        }
        if let Some(ws) = pending.take() {
            ed.write(Event::Text(BytesText::from_escaped(
                String::from_utf8_lossy(&ws).into_owned(),
            )))?;
        }
        match ev {
            Event::Eof => break,
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if depth == 0 {
                    if name != "domain" {
                        return Err(DomainError::NotADomain(name));
                    }
                    let decls = ns_decls(e)?;
                    let mut root = e.to_owned();
                    if let Some((p, _)) = decls.iter().find(|(_, u)| u == QEMU_NS) {
                        ed.qemu_prefix = p.clone();
                    } else if let Some((p, u)) = decls.iter().find(|(p, _)| p == "qemu") {
                        return Err(DomainError::QemuPrefixTaken {
                            prefix: p.clone(),
                            uri: u.clone(),
                        });
                    } else {
                        root.push_attribute(("xmlns:qemu", QEMU_NS));
                    }
                    if empty {
                        return Err(DomainError::Truncated);
                    }
                    ed.write(Event::Start(root))?;
                    depth = 1;
                    continue;
                }
                if name.ends_with("cell") && attr(e, b"memAccess")?.as_deref() == Some("private") {
                    return Err(DomainError::PrivateNumaCell);
                }
                let cmdline = format!("{}:commandline", ed.qemu_prefix);
                if depth == 1 && name == "memoryBacking" {
                    ed.backing_seen = true;
                    section = Section::MemoryBacking;
                    if empty {
                        ed.write(Event::Start(e.to_owned()))?;
                        ed.backing_children(2)?;
                        ed.newline(1)?;
                        ed.write(Event::End(BytesEnd::new("memoryBacking")))?;
                        section = Section::Other;
                        continue;
                    }
                } else if depth == 1 && name == cmdline {
                    ed.commandline_seen = true;
                    section = Section::Commandline;
                    if empty {
                        ed.write(Event::Start(e.to_owned()))?;
                        ed.commandline_args(2)?;
                        ed.newline(1)?;
                        ed.write(Event::End(BytesEnd::new(cmdline.as_str())))?;
                        section = Section::Other;
                        continue;
                    }
                } else if depth == 2 && section == Section::MemoryBacking {
                    match name.as_str() {
                        "source" => {
                            ed.backing.has_source = true;
                            let t = attr(e, b"type")?.unwrap_or_default();
                            if t != "memfd" && t != "file" {
                                return Err(DomainError::UnsharableSource(t));
                            }
                        }
                        "access" => {
                            ed.backing.has_access = true;
                            let m = attr(e, b"mode")?.unwrap_or_default();
                            if m != "shared" {
                                return Err(DomainError::PrivateAccess(m));
                            }
                        }
                        _ => {}
                    }
                } else if depth == 2
                    && section == Section::Commandline
                    && name == format!("{}:arg", ed.qemu_prefix)
                {
                    if let Some(v) = attr(e, b"value")? {
                        ed.existing_args.push(v);
                    }
                }
                ed.write(ev.borrow())?;
                if !empty {
                    depth += 1;
                }
            }
            other => ed.write(other)?,
        }
    }
    if !closed {
        return Err(DomainError::Truncated);
    }
    Ok(ed.w.into_inner())
}
