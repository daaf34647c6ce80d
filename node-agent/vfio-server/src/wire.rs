//! vfio-user wire format: the 16-byte header and the command payloads, parsed length-first
//! from untrusted bytes. All integers are little-endian (the protocol is host-endian and
//! only x86-64/aarch64 LE hosts are supported).

/// Header size in bytes.
pub const HEADER_SIZE: usize = 16;
/// Largest region/DMA data transfer we accept (and announce as `max_data_xfer_size`).
pub const MAX_DATA_XFER: u32 = 1 << 20;
/// Largest message (header included) we read: the largest data transfer plus room for any
/// command struct. Anything larger means the framing cannot be trusted.
pub const MAX_MESSAGE_SIZE: u32 = MAX_DATA_XFER + 4096;
/// Page sizes we support for DMA (`pgsizes`).
pub const PGSIZES: u64 = 4096;
/// Most simultaneous DMA maps (`max_dma_maps`): what the DMA table holds.
pub const MAX_DMA_MAPS: u32 = emu_guest_mem::MAX_DMA_MAPS;

/// Command numbers (`command` in the header).
pub mod cmd {
    pub const VERSION: u16 = 1;
    pub const DMA_MAP: u16 = 2;
    pub const DMA_UNMAP: u16 = 3;
    pub const DEVICE_GET_INFO: u16 = 4;
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    pub const DEVICE_GET_REGION_IO_FDS: u16 = 6;
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    pub const DEVICE_SET_IRQS: u16 = 8;
    pub const REGION_READ: u16 = 9;
    pub const REGION_WRITE: u16 = 10;
    pub const DMA_READ: u16 = 11;
    pub const DMA_WRITE: u16 = 12;
    pub const DEVICE_RESET: u16 = 13;
    pub const DIRTY_PAGES: u16 = 14;
    pub const REGION_WRITE_MULTI: u16 = 15;
}

/// Header `flags` bits.
pub mod flags {
    pub const TYPE_MASK: u32 = 0xf;
    pub const TYPE_COMMAND: u32 = 0;
    pub const TYPE_REPLY: u32 = 1;
    pub const NO_REPLY: u32 = 0x10;
    pub const ERROR: u32 = 0x20;
}

/// vfio ioctl-struct flag values used in payloads.
pub mod vfio {
    pub const DEVICE_FLAGS_RESET: u32 = 1 << 0;
    pub const DEVICE_FLAGS_PCI: u32 = 1 << 1;
    pub const REGION_INFO_FLAG_READ: u32 = 1 << 0;
    pub const REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
    pub const REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
    pub const REGION_INFO_FLAG_CAPS: u32 = 1 << 3;
    pub const REGION_INFO_CAP_SPARSE_MMAP: u16 = 1;
    pub const IRQ_INFO_EVENTFD: u32 = 1 << 0;
    pub const IRQ_INFO_MASKABLE: u32 = 1 << 1;
    pub const IRQ_SET_DATA_NONE: u32 = 1 << 0;
    pub const IRQ_SET_DATA_BOOL: u32 = 1 << 1;
    pub const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
    pub const IRQ_SET_ACTION_MASK: u32 = 1 << 3;
    pub const IRQ_SET_ACTION_UNMASK: u32 = 1 << 4;
    pub const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;
    pub const IRQ_SET_DATA_TYPE_MASK: u32 = 0x7;
    pub const IRQ_SET_ACTION_TYPE_MASK: u32 = 0x38;
    pub const DMA_MAP_FLAG_READ: u32 = emu_guest_mem::DMA_MAP_FLAG_READ;
    pub const DMA_MAP_FLAG_WRITE: u32 = emu_guest_mem::DMA_MAP_FLAG_WRITE;
    pub const DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1 << 0;
    pub const DMA_UNMAP_FLAG_ALL: u32 = 1 << 1;
}

/// Why a payload was refused. Each maps to the errno of the error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{what} payload is {got} bytes, needs at least {need}")]
    Truncated {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("{what} argsz {argsz} is invalid (minimum {min}, payload {payload})")]
    BadArgsz {
        what: &'static str,
        argsz: u32,
        min: usize,
        payload: usize,
    },
    #[error("VERSION capabilities are not NUL-terminated")]
    VersionNoNul,
    #[error("VERSION capabilities are not UTF-8")]
    VersionNotUtf8,
    #[error("VERSION capabilities are not valid JSON: {0}")]
    VersionJson(String),
    #[error("VERSION capability {0} is malformed")]
    VersionCap(&'static str),
    #[error("VERSION major {0} is not supported (only 0)")]
    VersionMajor(u16),
}

impl WireError {
    pub fn errno(&self) -> i32 {
        match self {
            WireError::VersionMajor(_) => libc::ENOTSUP,
            _ => libc::EINVAL,
        }
    }
}

/// The message header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub msg_id: u16,
    pub command: u16,
    /// Whole message size, header included.
    pub size: u32,
    pub flags: u32,
    pub error: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Header {
        Header {
            msg_id: u16::from_le_bytes([b[0], b[1]]),
            command: u16::from_le_bytes([b[2], b[3]]),
            size: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            flags: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            error: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    pub fn to_bytes(self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..2].copy_from_slice(&self.msg_id.to_le_bytes());
        b[2..4].copy_from_slice(&self.command.to_le_bytes());
        b[4..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.error.to_le_bytes());
        b
    }

    /// Payload length, or `None` when `size` cannot be trusted (< 16 or > max).
    pub fn payload_len(&self) -> Option<usize> {
        if self.size < HEADER_SIZE as u32 || self.size > MAX_MESSAGE_SIZE {
            return None;
        }
        Some(self.size as usize - HEADER_SIZE)
    }

    pub fn no_reply(&self) -> bool {
        self.flags & flags::NO_REPLY != 0
    }

    pub fn msg_type(&self) -> u32 {
        self.flags & flags::TYPE_MASK
    }
}

/// Length-checked little-endian reader over a payload.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, b: &'a [u8], need: usize) -> Result<Self, WireError> {
        if b.len() < need {
            return Err(WireError::Truncated {
                what,
                need,
                got: b.len(),
            });
        }
        Ok(Reader { b, pos: 0 })
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        // The constructor checked the total length; `get` keeps this panic-free anyway.
        if let Some(s) = self.b.get(self.pos..self.pos + N) {
            out.copy_from_slice(s);
        }
        self.pos += N;
        out
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
}

fn check_argsz(
    what: &'static str,
    argsz: u32,
    min: usize,
    payload: usize,
) -> Result<(), WireError> {
    if (argsz as usize) < min {
        return Err(WireError::BadArgsz {
            what,
            argsz,
            min,
            payload,
        });
    }
    Ok(())
}

/// Client capabilities from VERSION (absent ones are `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCaps {
    pub max_msg_fds: Option<u64>,
    pub max_data_xfer_size: Option<u64>,
}

/// VERSION request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
    pub caps: ClientCaps,
}

impl Version {
    pub fn parse(p: &[u8]) -> Result<Version, WireError> {
        let mut r = Reader::new("VERSION", p, 4)?;
        let major = r.u16();
        let minor = r.u16();
        if major != 0 {
            return Err(WireError::VersionMajor(major));
        }
        let json = p.get(4..).unwrap_or(&[]);
        let caps = if json.is_empty() {
            // The JSON is optional; defaults apply.
            ClientCaps::default()
        } else {
            parse_caps(json)?
        };
        Ok(Version { major, minor, caps })
    }
}

fn parse_caps(json: &[u8]) -> Result<ClientCaps, WireError> {
    let Some((&0, body)) = json.split_last() else {
        return Err(WireError::VersionNoNul);
    };
    let s = std::str::from_utf8(body).map_err(|_| WireError::VersionNotUtf8)?;
    // The error names the kind and position only: serde's message can quote the client's
    // text, which does not belong in our logs.
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| {
        WireError::VersionJson(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let top = v.as_object().ok_or(WireError::VersionCap("(top level)"))?;
    let mut caps = ClientCaps::default();
    let Some(c) = top.get("capabilities") else {
        return Ok(caps);
    };
    let c = c.as_object().ok_or(WireError::VersionCap("capabilities"))?;
    let num = |key: &'static str| -> Result<Option<u64>, WireError> {
        match c.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or(WireError::VersionCap(key)),
        }
    };
    caps.max_msg_fds = num("max_msg_fds")?;
    caps.max_data_xfer_size = num("max_data_xfer_size")?;
    if caps.max_data_xfer_size == Some(0) {
        return Err(WireError::VersionCap("max_data_xfer_size"));
    }
    Ok(caps)
}

/// Our VERSION reply payload: major/minor 0.0 plus NUL-terminated JSON caps.
pub fn version_reply(max_data_xfer: u32) -> Vec<u8> {
    let caps = serde_json::json!({
        "capabilities": {
            "max_msg_fds": crate::sys::MAX_FDS,
            "max_data_xfer_size": max_data_xfer,
            "pgsizes": PGSIZES,
            "max_dma_maps": MAX_DMA_MAPS,
        }
    });
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(caps.to_string().as_bytes());
    out.push(0);
    out
}

/// DMA_MAP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub offset: u64,
    pub address: u64,
    pub size: u64,
}

impl DmaMap {
    pub const LEN: usize = 32;
    pub fn parse(p: &[u8]) -> Result<DmaMap, WireError> {
        let mut r = Reader::new("DMA_MAP", p, Self::LEN)?;
        let m = DmaMap {
            argsz: r.u32(),
            flags: r.u32(),
            offset: r.u64(),
            address: r.u64(),
            size: r.u64(),
        };
        check_argsz("DMA_MAP", m.argsz, Self::LEN, p.len())?;
        Ok(m)
    }
}

/// DMA_UNMAP request (and reply, echoed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub address: u64,
    pub size: u64,
}

impl DmaUnmap {
    pub const LEN: usize = 24;
    pub fn parse(p: &[u8]) -> Result<DmaUnmap, WireError> {
        let mut r = Reader::new("DMA_UNMAP", p, Self::LEN)?;
        let m = DmaUnmap {
            argsz: r.u32(),
            flags: r.u32(),
            address: r.u64(),
            size: r.u64(),
        };
        check_argsz("DMA_UNMAP", m.argsz, Self::LEN, p.len())?;
        Ok(m)
    }
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(Self::LEN as u32).to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.address.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
    }
}

/// DEVICE_GET_INFO request: only argsz matters.
pub fn parse_device_get_info(p: &[u8]) -> Result<u32, WireError> {
    let mut r = Reader::new("DEVICE_GET_INFO", p, 16)?;
    let argsz = r.u32();
    check_argsz("DEVICE_GET_INFO", argsz, 16, p.len())?;
    Ok(argsz)
}

/// DEVICE_GET_REGION_INFO request: argsz and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfoReq {
    pub argsz: u32,
    pub index: u32,
}

/// Size of `struct vfio_region_info`.
pub const REGION_INFO_LEN: usize = 32;

impl RegionInfoReq {
    pub fn parse(p: &[u8]) -> Result<RegionInfoReq, WireError> {
        let mut r = Reader::new("DEVICE_GET_REGION_INFO", p, REGION_INFO_LEN)?;
        let argsz = r.u32();
        let _flags = r.u32();
        let index = r.u32();
        check_argsz("DEVICE_GET_REGION_INFO", argsz, REGION_INFO_LEN, p.len())?;
        Ok(RegionInfoReq { argsz, index })
    }
}

/// DEVICE_GET_IRQ_INFO request: argsz and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqInfoReq {
    pub argsz: u32,
    pub index: u32,
}

impl IrqInfoReq {
    pub const LEN: usize = 16;
    pub fn parse(p: &[u8]) -> Result<IrqInfoReq, WireError> {
        let mut r = Reader::new("DEVICE_GET_IRQ_INFO", p, Self::LEN)?;
        let argsz = r.u32();
        let _flags = r.u32();
        let index = r.u32();
        check_argsz("DEVICE_GET_IRQ_INFO", argsz, Self::LEN, p.len())?;
        Ok(IrqInfoReq { argsz, index })
    }
}

/// DEVICE_SET_IRQS request; `data` is the payload after the struct, limited to argsz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetIrqs<'a> {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
    pub data: &'a [u8],
}

impl<'a> SetIrqs<'a> {
    pub const LEN: usize = 20;
    pub fn parse(p: &'a [u8]) -> Result<SetIrqs<'a>, WireError> {
        let mut r = Reader::new("DEVICE_SET_IRQS", p, Self::LEN)?;
        let argsz = r.u32();
        let flags = r.u32();
        let index = r.u32();
        let start = r.u32();
        let count = r.u32();
        if (argsz as usize) < Self::LEN || argsz as usize > p.len() {
            return Err(WireError::BadArgsz {
                what: "DEVICE_SET_IRQS",
                argsz,
                min: Self::LEN,
                payload: p.len(),
            });
        }
        let data = p.get(Self::LEN..argsz as usize).unwrap_or(&[]);
        Ok(SetIrqs {
            argsz,
            flags,
            index,
            start,
            count,
            data,
        })
    }
}

/// REGION_READ / REGION_WRITE request; `data` is whatever follows the struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionAccess<'a> {
    pub offset: u64,
    pub region: u32,
    pub count: u32,
    pub data: &'a [u8],
}

impl<'a> RegionAccess<'a> {
    pub const LEN: usize = 16;
    pub fn parse(what: &'static str, p: &'a [u8]) -> Result<RegionAccess<'a>, WireError> {
        let mut r = Reader::new(what, p, Self::LEN)?;
        Ok(RegionAccess {
            offset: r.u64(),
            region: r.u32(),
            count: r.u32(),
            data: p.get(Self::LEN..).unwrap_or(&[]),
        })
    }
    pub fn write_head(offset: u64, region: u32, count: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&region.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_size_limits() {
        let h = Header {
            msg_id: 7,
            command: cmd::REGION_READ,
            size: 32,
            flags: flags::NO_REPLY,
            error: 0,
        };
        assert_eq!(Header::parse(&h.to_bytes()), h);
        assert_eq!(h.payload_len(), Some(16));
        assert!(h.no_reply());
        for bad in [0, 15, MAX_MESSAGE_SIZE + 1, u32::MAX] {
            assert_eq!(Header { size: bad, ..h }.payload_len(), None);
        }
        assert_eq!(Header { size: 16, ..h }.payload_len(), Some(0));
    }

    #[test]
    fn version_parsing() {
        let mut p = vec![0, 0, 1, 0];
        p.extend_from_slice(br#"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":4096}}"#);
        p.push(0);
        let v = Version::parse(&p).unwrap();
        assert_eq!(v.caps.max_msg_fds, Some(16));
        assert_eq!(v.caps.max_data_xfer_size, Some(4096));
        // No JSON at all: defaults.
        assert_eq!(
            Version::parse(&[0, 0, 0, 0]).unwrap().caps,
            ClientCaps::default()
        );
        // Too short, no NUL, non-UTF-8, invalid JSON, wrong types, major 1.
        assert!(matches!(
            Version::parse(&[0, 0]),
            Err(WireError::Truncated { .. })
        ));
        assert_eq!(Version::parse(b"\0\0\0\0{}"), Err(WireError::VersionNoNul));
        assert_eq!(
            Version::parse(b"\0\0\0\0\xff\xfe\0"),
            Err(WireError::VersionNotUtf8)
        );
        assert!(matches!(
            Version::parse(b"\0\0\0\0{\0"),
            Err(WireError::VersionJson(_))
        ));
        assert!(matches!(
            Version::parse(b"\0\0\0\0[1]\0"),
            Err(WireError::VersionCap(_))
        ));
        assert!(matches!(
            Version::parse(b"\0\0\0\0{\"capabilities\":{\"max_msg_fds\":-1}}\0"),
            Err(WireError::VersionCap("max_msg_fds"))
        ));
        assert_eq!(
            Version::parse(&[1, 0, 0, 0]),
            Err(WireError::VersionMajor(1))
        );
    }

    #[test]
    fn version_reply_is_nul_terminated_json() {
        let r = version_reply(4096);
        assert_eq!(&r[..4], &[0, 0, 0, 0]);
        assert_eq!(*r.last().unwrap(), 0);
        let v: serde_json::Value = serde_json::from_slice(&r[4..r.len() - 1]).unwrap();
        assert_eq!(v["capabilities"]["max_msg_fds"], 16);
        assert_eq!(v["capabilities"]["max_data_xfer_size"], 4096);
        assert_eq!(v["capabilities"]["pgsizes"], 4096);
        assert!(v["capabilities"].get("write_multiple").is_none());
    }

    #[test]
    fn struct_parsers_check_length_then_argsz() {
        assert!(matches!(
            DmaMap::parse(&[0; 31]),
            Err(WireError::Truncated { .. })
        ));
        let mut p = [0u8; 32];
        assert!(matches!(DmaMap::parse(&p), Err(WireError::BadArgsz { .. })));
        p[0] = 32;
        assert!(DmaMap::parse(&p).is_ok());
        let mut s = [0u8; 20];
        s[0] = 21; // argsz beyond the payload
        assert!(matches!(
            SetIrqs::parse(&s),
            Err(WireError::BadArgsz { .. })
        ));
        s[0] = 20;
        assert_eq!(SetIrqs::parse(&s).unwrap().data, &[] as &[u8]);
        assert!(RegionAccess::parse("REGION_READ", &[0; 15]).is_err());
        assert!(RegionInfoReq::parse(&[0; 31]).is_err());
        assert!(IrqInfoReq::parse(&[16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_ok());
        assert!(parse_device_get_info(&[8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
