//! Test helpers: a guest memory with a canary pattern, descriptor writers, packet builders
//! and checksum verifiers.

use super::offload::{fold, sum16};
use crate::mem::{GuestMemory, VecMemory};

pub const MEM_BASE: u64 = 0x10_0000;
pub const MEM_SIZE: usize = 1 << 20;
pub const RING_BASE: u64 = MEM_BASE;
pub const BUF_BASE: u64 = MEM_BASE + 0x2_0000;

/// A deterministic PRNG (xorshift64*).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Guest memory pre-filled with a byte pattern, so that unexpected writes show.
pub fn canary_mem() -> VecMemory {
    let m = VecMemory::new(MEM_BASE, MEM_SIZE);
    let pattern: Vec<u8> = (0..MEM_SIZE).map(|i| (i * 7 + 0x5a) as u8).collect();
    m.write(MEM_BASE, &pattern).unwrap();
    m
}

pub fn snapshot(m: &VecMemory) -> Vec<u8> {
    let mut v = vec![0; MEM_SIZE];
    m.read(MEM_BASE, &mut v).unwrap();
    v
}

/// Asserts that every byte differing between `before` and now lies in one of `allowed`
/// (guest address ranges).
pub fn assert_only_changed(m: &VecMemory, before: &[u8], allowed: &[(u64, usize)]) {
    let now = snapshot(m);
    if now == before {
        return;
    }
    for (i, (a, b)) in before.iter().zip(now.iter()).enumerate() {
        if a != b {
            let addr = MEM_BASE + i as u64;
            assert!(
                allowed
                    .iter()
                    .any(|&(s, l)| addr >= s && addr - s < l as u64),
                "byte at {addr:#x} changed outside the allowed ranges"
            );
        }
    }
}

pub fn write_tx_data(m: &VecMemory, idx: u32, addr: u64, cmd_type_len: u32, olinfo: u32) {
    let d = RING_BASE + u64::from(idx) * 16;
    m.write_u64(d, addr).unwrap();
    m.write_u32(d + 8, cmd_type_len).unwrap();
    m.write_u32(d + 12, olinfo).unwrap();
}

pub fn write_tx_ctx(m: &VecMemory, idx: u32, vlan_macip_lens: u32, tucmd: u32, mss_l4len: u32) {
    let d = RING_BASE + u64::from(idx) * 16;
    m.write_u32(d, vlan_macip_lens).unwrap();
    m.write_u32(d + 4, 0).unwrap();
    m.write_u32(d + 8, tucmd | 0x2020_0000).unwrap();
    m.write_u32(d + 12, mss_l4len).unwrap();
}

pub fn write_rx_desc(m: &VecMemory, idx: u32, pkt: u64, hdr: u64) {
    let d = RING_BASE + u64::from(idx) * 16;
    m.write_u64(d, pkt).unwrap();
    m.write_u64(d + 8, hdr).unwrap();
}

pub fn read_desc(m: &VecMemory, idx: u32) -> [u8; 16] {
    let mut b = [0; 16];
    m.read(RING_BASE + u64::from(idx) * 16, &mut b).unwrap();
    b
}

pub const SRC_IP: [u8; 4] = [10, 0, 0, 1];
pub const DST_IP: [u8; 4] = [10, 0, 0, 2];

fn eth(f: &mut Vec<u8>, ethertype: u16) {
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&ethertype.to_be_bytes());
}

fn payload(len: usize) -> impl Iterator<Item = u8> {
    (0..len).map(|i| (i % 251) as u8)
}

/// Ethernet + IPv4 + L4 header (`proto`: 6 TCP with 12 option bytes, 17 UDP, 132 SCTP) +
/// payload, with lengths filled in and checksums zero.
pub fn ipv4_frame(proto: u8, payload_len: usize) -> Vec<u8> {
    let l4len = match proto {
        6 => 32,
        17 => 8,
        _ => 12,
    };
    let mut f = Vec::new();
    eth(&mut f, 0x0800);
    let tot = (20 + l4len + payload_len) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&tot.to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&SRC_IP);
    f.extend_from_slice(&DST_IP);
    push_l4(&mut f, proto, payload_len);
    f.extend(payload(payload_len));
    f
}

/// Ethernet + IPv6 + TCP (32-byte header) + payload.
pub fn ipv6_tcp_frame(payload_len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    eth(&mut f, 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((32 + payload_len) as u16).to_be_bytes());
    f.extend_from_slice(&[6, 64]);
    f.extend_from_slice(&[0xfd; 16]);
    f.extend_from_slice(&[0xfe; 16]);
    push_l4(&mut f, 6, payload_len);
    f.extend(payload(payload_len));
    f
}

fn push_l4(f: &mut Vec<u8>, proto: u8, payload_len: usize) {
    match proto {
        6 => {
            f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
            f.extend_from_slice(&0x1000_0000u32.to_be_bytes());
            f.extend_from_slice(&7u32.to_be_bytes());
            // doff 8, flags CWR|PSH|ACK|FIN.
            f.extend_from_slice(&[0x80, 0x80 | 0x18 | 0x01, 0xff, 0xff, 0, 0, 0, 0]);
            f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        }
        17 => {
            f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
            f.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        }
        _ => {
            f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
        }
    }
}

/// Pseudo-header sum for IPv4 (length excluded when `len` is None).
pub fn pseudo_v4(f: &[u8], proto: u8, len: Option<usize>) -> u64 {
    let mut s = sum16(&f[26..34]) + u64::from(proto);
    if let Some(l) = len {
        s += l as u64;
    }
    s
}

pub fn pseudo_v6(f: &[u8], proto: u8, len: Option<usize>) -> u64 {
    let mut s = sum16(&f[22..54]) + u64::from(proto);
    if let Some(l) = len {
        s += l as u64;
    }
    s
}

/// Seeds the L4 checksum field the way Linux does for CHECKSUM_PARTIAL (`with_len`) or TSO.
pub fn seed_l4(f: &mut [u8], at: usize, pseudo: u64) {
    f[at..at + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
}

pub fn ipv4_header_ok(f: &[u8], ip: usize) -> bool {
    fold(sum16(&f[ip..ip + 20])) == 0xffff
}

/// Verifies a TCP or UDP checksum over `f[l4..]` with the IPv4 pseudo-header at `ip`.
pub fn l4_v4_ok(f: &[u8], ip: usize, l4: usize, proto: u8) -> bool {
    let len = f.len() - l4;
    let s = sum16(&f[ip + 12..ip + 20]) + u64::from(proto) + len as u64 + sum16(&f[l4..]);
    fold(s) == 0xffff
}

pub fn l4_v6_ok(f: &[u8], ip: usize, l4: usize, proto: u8) -> bool {
    let len = f.len() - l4;
    let s = sum16(&f[ip + 8..ip + 40]) + u64::from(proto) + len as u64 + sum16(&f[l4..]);
    fold(s) == 0xffff
}

/// A view of a memory whose descriptor rings (everything below BUF_BASE) refuse writes: the
/// guest made a ring read-only.
pub struct ReadOnlyRing<'a>(pub &'a VecMemory);

impl GuestMemory for ReadOnlyRing<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), crate::mem::MemError> {
        self.0.read(addr, buf)
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), crate::mem::MemError> {
        if addr < BUF_BASE {
            return Err(crate::mem::MemError::Denied {
                addr,
                len: data.len(),
                access: "write",
            });
        }
        self.0.write(addr, data)
    }
}
