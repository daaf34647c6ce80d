//! Transmit offloads applied to an assembled frame held in a caller-provided buffer:
//! IPv4 header checksum, TCP/UDP checksum, SCTP CRC32c, TCP segmentation and VLAN insertion.
//!
//! The checksums follow hardware semantics rather than recomputing from parsed headers:
//! the device sums what lies in the frame, **including** the value the driver seeded into the
//! checksum field, and stores the complement. Linux seeds the L4 field with the pseudo-header
//! sum (CHECKSUM_PARTIAL; under TSO the pseudo-header without the length) and the IPv4 field with
//! a value that cancels whatever lies between the IP header and IPLEN (GSO_PARTIAL). Doing the
//! same makes tunnels (HW_CSUM with the inner L4 at MACLEN+IPLEN) and GSO_PARTIAL correct
//! without this code ever parsing an outer header.
//!
//! Buffers carry [`HEADROOM`] spare bytes in front of the frame so that an 802.1Q tag can be
//! inserted by moving only the 12 MAC address bytes.

use super::frames::{TxScratch, TxSink, TxStats, MAX_TX_FRAME};
use super::wire::{
    ETHERTYPE_VLAN, IPV4_MIN_HLEN, IPV6_HLEN, TCP_FLAG_CWR, TCP_FLAG_FIN, TCP_FLAG_PSH,
    TCP_MIN_HLEN,
};

/// Spare bytes before the frame in every TX buffer: room for one 802.1Q tag.
pub(crate) const HEADROOM: usize = 4;
/// Ethernet header length without tags; also the smallest frame we emit.
pub(crate) const ETH_HLEN: usize = 14;
/// Smallest MSS either model segments by. A guest controls the MSS, and one 64 KiB TSO
/// packet at MSS 1 would be 65 000 frames of work (and memory) for the dataplane; at 64 it
/// is about a thousand (`MAX_TX_PACKET / MIN_TSO_MSS`). Linux never asks for less: iavf refuses a smaller gso_size in
/// `iavf_features_check`, and TCP's own floor (`tcp_min_snd_mss`, 48 bytes of payload plus
/// options) only goes below it on links with an MTU near the IPv4 minimum.
pub const MIN_TSO_MSS: usize = 64;

/// The L4 type a context descriptor asks checksums for (igbvf TUCMD.L4T, AVF CMD.L4T).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum L4Type {
    #[default]
    Udp,
    Tcp,
    Sctp,
    Reserved,
}

impl L4Type {
    /// Offset of the checksum field inside the L4 header and its width.
    fn csum_field(self) -> Option<(usize, usize)> {
        match self {
            L4Type::Udp => Some((6, 2)),
            L4Type::Tcp => Some((16, 2)),
            L4Type::Sctp => Some((8, 4)),
            L4Type::Reserved => None,
        }
    }
}

/// A decoded TX context: where the headers lie and what TSO uses, whichever model's
/// descriptors it came from (igbvf: the advanced context descriptor; AVF: the data
/// descriptor's offsets and the context descriptor's MSS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TxContext {
    pub vlan: u16,
    pub maclen: usize,
    pub iplen: usize,
    pub ipv4: bool,
    pub l4: L4Type,
    pub l4len: usize,
    pub mss: usize,
}

impl TxContext {
    /// Offset of the L4 header.
    fn l4_start(&self) -> usize {
        self.maclen + self.iplen
    }
}

/// Offload requests of one packet (from its first data descriptor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Offloads {
    pub ixsm: bool,
    pub txsm: bool,
    pub tse: bool,
    pub vle: bool,
}

/// The context and frame disagree: a header would lie outside the frame, a length is
/// impossible, or TSO was asked of something that is not TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Ones-complement sum of `data` as big-endian 16-bit words (odd tail padded with zero),
/// not yet folded. A u64 cannot overflow for any slice that fits in memory.
pub(crate) fn sum16(data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    let mut s: u64 = 0;
    for c in &mut chunks {
        s += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        s += u64::from(*last) << 8;
    }
    s
}

/// Folds a ones-complement accumulator into 16 bits.
pub(crate) fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    // Fits after folding.
    s as u16
}

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32C: [u32; 256] = crc32c_table();

/// CRC32c (Castagnoli) as SCTP uses it: reflected, initial and final XOR all-ones.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

fn put_be16(frame: &mut [u8], at: usize, v: u16) -> Result<(), Malformed> {
    frame
        .get_mut(at..at + 2)
        .ok_or(Malformed)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

fn get_be16(frame: &[u8], at: usize) -> Result<u16, Malformed> {
    let b = frame.get(at..at + 2).ok_or(Malformed)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

/// IXSM: IPv4 header checksum over the IPLEN bytes at MACLEN, including the seeded field.
/// Ignored for IPv6 contexts (there is no IPv6 header checksum).
pub(crate) fn insert_ipv4_checksum(frame: &mut [u8], ctx: &TxContext) -> Result<(), Malformed> {
    if !ctx.ipv4 {
        return Ok(());
    }
    if ctx.maclen < ETH_HLEN || ctx.iplen < IPV4_MIN_HLEN {
        return Err(Malformed);
    }
    let hdr = frame.get(ctx.maclen..ctx.l4_start()).ok_or(Malformed)?;
    let c = !fold(sum16(hdr));
    put_be16(frame, ctx.maclen + 10, c)
}

/// TXSM without TSO: L4 checksum from MACLEN+IPLEN to the end of the frame.
pub(crate) fn insert_l4_checksum(frame: &mut [u8], ctx: &TxContext) -> Result<(), Malformed> {
    let (field, width) = ctx.l4.csum_field().ok_or(Malformed)?;
    let start = ctx.l4_start();
    if ctx.maclen < ETH_HLEN || start + field + width > frame.len() {
        return Err(Malformed);
    }
    if ctx.l4 == L4Type::Sctp {
        frame[start + field..start + field + 4].fill(0);
        let crc = crc32c(&frame[start..]);
        // SCTP stores the CRC in little-endian byte order (RFC 3309 / Linux sctp_compute_cksum).
        frame[start + field..start + field + 4].copy_from_slice(&crc.to_le_bytes());
        return Ok(());
    }
    let mut c = !fold(sum16(&frame[start..]));
    if ctx.l4 == L4Type::Udp && c == 0 {
        // A zero UDP checksum means "none"; send the equivalent all-ones.
        c = 0xffff;
    }
    put_be16(frame, start + field, c)
}

/// Moves the MAC addresses into the headroom and writes an 802.1Q tag after them.
/// `buf[HEADROOM..HEADROOM + len]` is the frame; returns the tagged frame.
pub(crate) fn tag_frame(buf: &mut [u8], len: usize, vlan: u16) -> Option<&[u8]> {
    if len < 12 || buf.len() < HEADROOM + len {
        return None;
    }
    buf.copy_within(HEADROOM..HEADROOM + 12, 0);
    buf[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    buf[14..16].copy_from_slice(&vlan.to_be_bytes());
    buf.get(..HEADROOM + len)
}

/// What a TSO run produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TsoResult {
    pub segments: u64,
    pub bytes: u64,
}

/// Splits `pkt` (headers then payload) into MSS-sized TCP segments built one at a time in
/// `seg` (with [`HEADROOM`]) and hands each wire frame to `emit`.
///
/// Per segment, the IP header at MACLEN gets its length fixed (IPv4 total length and ID + n,
/// IPv4 checksum recomputed when IXSM is set; IPv6 payload length), and the TCP header at
/// MACLEN+IPLEN gets seq + offset, FIN/PSH only on the last segment, CWR only on the first,
/// and its checksum (seed + segment L4 length, as the 82576 does). Whatever lies between the
/// IP header and IPLEN (GSO_PARTIAL tunnel headers, inner IP) is copied untouched.
///
/// Every check happens before the first segment is emitted: a malformed request emits nothing.
pub(crate) fn segment(
    pkt: &[u8],
    ctx: &TxContext,
    off: Offloads,
    seg: &mut [u8],
    emit: &mut dyn FnMut(&[u8]),
) -> Result<TsoResult, Malformed> {
    let min_iplen = if ctx.ipv4 { IPV4_MIN_HLEN } else { IPV6_HLEN };
    let hdr_len = ctx.l4_start() + ctx.l4len;
    let cap = seg.len().saturating_sub(HEADROOM);
    if ctx.l4 != L4Type::Tcp
        || ctx.mss < MIN_TSO_MSS
        || ctx.maclen < ETH_HLEN
        || ctx.iplen < min_iplen
        || ctx.l4len < TCP_MIN_HLEN
        || hdr_len >= pkt.len()
        || hdr_len + ctx.mss > cap
    {
        return Err(Malformed);
    }
    let ip = ctx.maclen;
    let l4 = ctx.l4_start();
    let ip_id = if ctx.ipv4 { get_be16(pkt, ip + 4)? } else { 0 };
    let seq0 = {
        let b = pkt.get(l4 + 4..l4 + 8).ok_or(Malformed)?;
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    };
    let flags0 = *pkt.get(l4 + 13).ok_or(Malformed)?;
    let payload = &pkt[hdr_len..];
    let nsegs = payload.len().div_ceil(ctx.mss);

    let mut res = TsoResult::default();
    for (n, chunk) in payload.chunks(ctx.mss).enumerate() {
        let len = hdr_len + chunk.len();
        let frame = &mut seg[HEADROOM..HEADROOM + len];
        frame[..hdr_len].copy_from_slice(&pkt[..hdr_len]);
        frame[hdr_len..].copy_from_slice(chunk);

        // Bounded by the segment buffer (≤ 64 KiB) and the packet length (≤ 64 KiB).
        let ip_total = len - ip;
        if ctx.ipv4 {
            put_be16(frame, ip + 2, ip_total as u16)?;
            put_be16(frame, ip + 4, ip_id.wrapping_add(n as u16))?;
            if off.ixsm {
                insert_ipv4_checksum(frame, ctx)?;
            }
        } else {
            put_be16(frame, ip + 4, (ip_total - IPV6_HLEN) as u16)?;
        }

        let offset = (n * ctx.mss) as u32;
        frame[l4 + 4..l4 + 8].copy_from_slice(&seq0.wrapping_add(offset).to_be_bytes());
        let mut flags = flags0;
        if n + 1 != nsegs {
            flags &= !(TCP_FLAG_FIN | TCP_FLAG_PSH);
        }
        if n != 0 {
            flags &= !TCP_FLAG_CWR;
        }
        frame[l4 + 13] = flags;
        // The driver seeded the field with the pseudo-header sum without the length; add
        // this segment's TCP length and complement.
        let tcp_len = (len - l4) as u64;
        let c = !fold(sum16(&frame[l4..]) + tcp_len);
        put_be16(frame, l4 + 16, c)?;

        let wire = emit_frame(seg, len, off.vle.then_some(ctx.vlan)).ok_or(Malformed)?;
        res.bytes += wire.len() as u64;
        res.segments += 1;
        emit(wire);
    }
    Ok(res)
}

/// The wire frame in `buf` (frame at `HEADROOM..HEADROOM+len`), tagged when `vlan` is set.
pub(crate) fn emit_frame(buf: &mut [u8], len: usize, vlan: Option<u16>) -> Option<&[u8]> {
    match vlan {
        Some(v) => tag_frame(buf, len, v),
        None => buf.get(HEADROOM..HEADROOM + len),
    }
}

/// Applies the offloads `off` asks for to the `len`-byte packet assembled in `scratch.frame`
/// and hands the resulting frame(s) to `sink`, counting them in `stats`. False when the
/// request does not fit the packet (a runt, a frame over [`MAX_TX_FRAME`] without TSO, headers
/// outside the frame, an MSS below [`MIN_TSO_MSS`]): the caller drops it.
pub(crate) fn send(
    ctx: &TxContext,
    off: Offloads,
    len: usize,
    scratch: &mut TxScratch,
    stats: &mut TxStats,
    sink: &mut impl TxSink,
) -> bool {
    if len < ETH_HLEN {
        return false;
    }
    if off.tse {
        let Some(pkt) = scratch.frame.get(HEADROOM..HEADROOM + len) else {
            return false;
        };
        return match segment(pkt, ctx, off, &mut scratch.seg, &mut |f: &[u8]| {
            sink.emit(f)
        }) {
            Ok(r) => {
                stats.packets += r.segments;
                stats.tso_segments += r.segments;
                stats.bytes += r.bytes;
                true
            }
            Err(_) => false,
        };
    }
    if len > MAX_TX_FRAME {
        return false;
    }
    let Some(frame) = scratch.frame.get_mut(HEADROOM..HEADROOM + len) else {
        return false;
    };
    if off.ixsm && insert_ipv4_checksum(frame, ctx).is_err() {
        return false;
    }
    if off.txsm && insert_l4_checksum(frame, ctx).is_err() {
        return false;
    }
    let Some(wire) = emit_frame(&mut scratch.frame, len, off.vle.then_some(ctx.vlan)) else {
        return false;
    };
    stats.packets += 1;
    stats.bytes += wire.len() as u64;
    sink.emit(wire);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn ones_complement_sum_folds() {
        // RFC 1071 example.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum16(&data)), 0xddf2);
        assert_eq!(fold(sum16(&[0xff])), 0xff00);
    }

    #[test]
    fn checksum_requests_outside_frame_are_rejected() {
        let mut f = [0u8; 40];
        let ctx = TxContext {
            maclen: 127,
            iplen: 511,
            ipv4: true,
            l4: L4Type::Tcp,
            ..Default::default()
        };
        assert_eq!(insert_ipv4_checksum(&mut f, &ctx), Err(Malformed));
        assert_eq!(insert_l4_checksum(&mut f, &ctx), Err(Malformed));
        assert_eq!(f, [0u8; 40]);
    }
}
