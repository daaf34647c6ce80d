//! Helpers shared by the fuzz targets: a cursor over the fuzz input that never fails (an
//! exhausted input reads as zeroes) and guest memory filled from the input.

use emu_nic_model::igbvf::rings::RingRegs;
use emu_nic_model::mem::{GuestMemory, VecMemory};

/// Guest address of the memory the ring targets build (descriptors and buffers point here).
pub const MEM_BASE: u64 = 0x10_0000;
/// Size of that memory: big enough for a ring and a few buffers, small enough to stay cheap.
pub const MEM_SIZE: usize = 64 * 1024;

/// Reads fields from the fuzz input front to back; past the end every field is 0.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }
    /// Whatever is left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let got = self.bytes(N);
        b[..got.len()].copy_from_slice(got);
        b
    }
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// [`MEM_SIZE`] bytes of guest memory at [`MEM_BASE`], starting with `contents` (the rest
/// zero).
pub fn guest_memory(contents: &[u8]) -> VecMemory {
    let mem = VecMemory::new(MEM_BASE, MEM_SIZE);
    let n = contents.len().min(MEM_SIZE);
    // In range by construction.
    let _ = mem.write(MEM_BASE, &contents[..n]);
    mem
}

/// A guest address: mostly inside [`guest_memory`] (so that descriptors are found), sometimes
/// anywhere (so that bounds checks are exercised). Takes 1 + 2 or 1 + 8 bytes.
pub fn guest_addr(input: &mut Input<'_>) -> u64 {
    if input.u8() & 0x7 == 0 {
        input.u64()
    } else {
        MEM_BASE + u64::from(input.u16())
    }
}

/// Appends little-endian words, for seed encoders.
pub fn put_u32s(out: &mut Vec<u8>, words: &[u32]) {
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

/// Administrative settings of the igb VFs the targets build: one plain VF, one with an
/// assigned MAC and a port VLAN (spoof-checked), one trusted.
pub fn igb_admins() -> Vec<emu_nic_model::igb_pf::VfAdmin> {
    use emu_nic_model::igb_pf::VfAdmin;
    vec![
        VfAdmin {
            mac: [0x02, 0, 0, 0, 0, 0x10],
            port_vlan: None,
            spoofchk: false,
            trusted: false,
        },
        VfAdmin {
            mac: [0x02, 0, 0, 0, 0, 0x11],
            port_vlan: Some(100),
            spoofchk: true,
            trusted: false,
        },
        VfAdmin {
            mac: [0x02, 0, 0, 0, 0, 0x12],
            port_vlan: None,
            spoofchk: false,
            trusted: true,
        },
    ]
}

/// Administrative settings of the AVF VFs the targets build: a plain VF (the VF picks its
/// MAC, 4 queue pairs), one with an assigned MAC and a port VLAN, one trusted with 16 pairs.
pub fn avf_admins() -> Vec<emu_nic_model::avf::pf::AvfVfAdmin> {
    use emu_nic_model::avf::pf::AvfVfAdmin;
    vec![
        AvfVfAdmin::default(),
        AvfVfAdmin {
            mac: [0x02, 0, 0, 0, 1, 0x11],
            trusted: false,
            spoofchk: true,
            port_vlan: Some(100),
            queue_pairs: 2,
        },
        AvfVfAdmin {
            mac: [0x02, 0, 0, 0, 1, 0x12],
            trusted: true,
            spoofchk: false,
            port_vlan: None,
            queue_pairs: 16,
        },
    ]
}

/// A ring register value: mostly small (in or near a ring that fits [`guest_memory`]),
/// sometimes any `u32` (huge, past the ring, not a multiple of anything).
pub fn ring_value(input: &mut Input<'_>) -> u32 {
    if input.u8() & 0x7 == 0 {
        input.u32()
    } else {
        u32::from(input.u16())
    }
}

/// A ring from the input: its base address and length, head and tail registers.
#[derive(Debug, Clone, Copy)]
pub struct Ring {
    pub base: u64,
    pub len: u32,
    pub head: u32,
    pub tail: u32,
}

impl Ring {
    pub fn read(input: &mut Input<'_>) -> Ring {
        let base = guest_addr(input);
        let len = ring_value(input);
        let head = ring_value(input);
        let tail = ring_value(input);
        Ring {
            base,
            len,
            head,
            tail,
        }
    }

    /// The same ring as igbvf ring registers (TDBAL/TDBAH/TDLEN/TDH/TDT or the RX ones).
    pub fn igbvf(&self) -> RingRegs {
        RingRegs {
            bal: self.base as u32,
            bah: (self.base >> 32) as u32,
            len: self.len,
            head: self.head,
            tail: self.tail,
        }
    }
}
