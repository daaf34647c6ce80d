//! The dataplane with and without its shortcut for repeated plain decisions must deliver the
//! same frames, byte for byte, with the same counters.

use super::*;
use crate::port::IrqSink;
use emu_guest_mem::{fd as fdutil, DmaTable};
use emu_nic_defs::igb_desc::rx::SRRCTL_DESCTYPE_ADV_ONEBUF;
use emu_nic_defs::igb_desc::tx as txd;
use emu_nic_defs::igbvf as r;
use emu_nic_model::igbvf::vf::IgbVf;
use emu_nic_model::mem::GuestMemory;
use emu_nic_model::pci::PciFunction;
use emu_nic_model::vmdq::PoolFilter;

struct NoIrq;
impl IrqSink for NoIrq {
    fn fire(&self, _: u32) -> bool {
        true
    }
}

const PORTS: usize = 4;
const RING: u64 = 256;
const MEM: u64 = 2 << 20;
const TX_RING: u64 = 0;
const RX_RING: u64 = 0x1000;
const TX_BUFS: u64 = 0x2000;
const RX_BUFS: u64 = TX_BUFS + RING * 2048;

fn mac(p: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, p as u8]
}

/// A port with its own guest memory, TX and RX rings of RING descriptors, every RX buffer
/// posted.
fn port(p: usize) -> Arc<VfPort> {
    let mem = Arc::new(DmaTable::new());
    let fd = fdutil::memfd("engine-test", MEM).unwrap();
    mem.map(0, MEM, 0, 3, Some(fd)).unwrap();
    {
        let g = mem.lock();
        for i in 0..RING {
            g.write_u64(RX_RING + 16 * i, RX_BUFS + 2048 * i).unwrap();
            g.write_u64(RX_RING + 16 * i + 8, 0).unwrap();
        }
    }
    let mut vf = IgbVf::new();
    vf.config_write(4, &[0x6, 0]);
    for (reg, v) in [
        (r::TDBAL0, TX_RING as u32),
        (r::TDLEN0, (RING * 16) as u32),
        (r::TXDCTL0, r::XDCTL_ENABLE),
        (r::RDBAL0, RX_RING as u32),
        (r::RDLEN0, (RING * 16) as u32),
        (r::SRRCTL0, SRRCTL_DESCTYPE_ADV_ONEBUF | 2),
        (r::RXDCTL0, r::XDCTL_ENABLE),
        (r::RDT0, (RING - 1) as u32),
    ] {
        let _ = vf.bar0_write(u64::from(reg), v);
    }
    let port = VfPort::new(format!("p{p}"), vf, mem, Box::new(NoIrq));
    port.set_active(true);
    Arc::new(port)
}

/// Ports 0..PORTS with open pools; port 3 strips tags and belongs to VLAN 5 too, port 2 has a
/// port VLAN (7); port 1 takes at most 300-byte frames.
fn table() -> SwitchTable {
    let mut t = SwitchTable::new();
    for p in 0..PORTS {
        let mut f = PoolFilter {
            macs: vec![mac(p)],
            vlans: [0].into_iter().collect(),
            accept_untagged: true,
            broadcast: true,
            spoofchk: true,
            rx_enabled: true,
            tx_enabled: true,
            ..PoolFilter::closed()
        };
        match p {
            1 => f.max_frame = 304,
            2 => f.port_vlan = Some(7),
            3 => {
                f.strip_vlan = true;
                f.vlans.insert(5);
            }
            _ => {}
        }
        t.set_port(p, Some(f)).unwrap();
    }
    t.set_loopback(true);
    t
}

/// A frame from port 0 as the random plan says (mostly runs of one header).
fn frame(rng: &mut u64, last: &mut Vec<u8>) -> Vec<u8> {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    if !last.is_empty() && next() % 4 != 0 {
        // The same header again, another length.
        let mut f = last[..16].to_vec();
        f.resize(60 + (next() % 600) as usize, 0x5a);
        return f;
    }
    let dst = match next() % 6 {
        0 => [0xff; 6],
        1 => [0x01, 0, 0x5e, 0, 0, 1],
        2 => [0x02, 0, 0, 0, 0, 9], // nobody
        k => mac(1 + (k as usize % 3)),
    };
    let src = if next() % 10 == 0 { mac(9) } else { mac(0) };
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    match next() % 4 {
        0 => f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]),
        1 => f.extend_from_slice(&[0x81, 0x00, 0x00, 0x00, 0x08, 0x00]),
        _ => f.extend_from_slice(&[0x08, 0x00]),
    }
    f.resize(60 + (next() % 600) as usize, 0xa5);
    *last = f.clone();
    f
}

/// Sends `frames` from port 0 in bursts of `burst` and runs a pass after each; returns every
/// port's RX ring and buffers and its counters.
fn run(frames: &[Vec<u8>], burst: usize, reuse: bool) -> Vec<(Vec<u8>, String)> {
    let ports: Vec<Arc<VfPort>> = (0..PORTS).map(port).collect();
    let shared = Shared::new(ports.clone(), table(), None);
    let mut w = Worker::new(0, 1);
    w.reuse_decisions = reuse;
    let mut tail = 0u64;
    for chunk in frames.chunks(burst) {
        {
            let g = ports[0].mem.lock();
            for f in chunk {
                let i = tail % RING;
                g.write(TX_BUFS + 2048 * i, f).unwrap();
                let cmd = txd::DTYP_DATA | txd::DCMD_DEXT | txd::DCMD_EOP | txd::DCMD_RS;
                g.write_u64(TX_RING + 16 * i, TX_BUFS + 2048 * i).unwrap();
                g.write_u32(TX_RING + 16 * i + 8, cmd | f.len() as u32)
                    .unwrap();
                g.write_u32(TX_RING + 16 * i + 12, 0).unwrap();
                tail += 1;
            }
        }
        let _ = ports[0]
            .lock()
            .igb()
            .unwrap()
            .vf
            .bar0_write(u64::from(r::TDT0), (tail % RING) as u32);
        w.pass(&shared);
        // Receivers re-post what they got, as a driver would.
        for p in &ports {
            let mut st = p.lock();
            let vf = &mut st.igb().unwrap().vf;
            let head = vf.rxq(0).head;
            let _ = vf.bar0_write(
                u64::from(r::RDT0),
                ((u64::from(head) + RING - 1) % RING) as u32,
            );
        }
    }
    ports
        .iter()
        .map(|p| {
            let mut m = vec![0u8; (RX_BUFS + RING * 2048) as usize];
            p.mem.lock().read(0, &mut m).unwrap();
            (m, format!("{:?}", p.counters.snapshot()))
        })
        .collect()
}

#[test]
fn reusing_plain_decisions_delivers_exactly_what_the_full_switch_delivers() {
    let mut rng = 0x1234_5678_9abc_def1u64;
    for round in 0..12 {
        let mut last = Vec::new();
        let frames: Vec<Vec<u8>> = (0..400).map(|_| frame(&mut rng, &mut last)).collect();
        let burst = [1, 7, 64, 200][round % 4];
        let fast = run(&frames, burst, true);
        let full = run(&frames, burst, false);
        for (p, (a, b)) in fast.iter().zip(&full).enumerate() {
            assert_eq!(a.1, b.1, "round {round}: port {p} counters");
            assert!(a.0 == b.0, "round {round}: port {p} memory differs");
        }
        let delivered: Vec<&str> = fast.iter().map(|x| x.1.as_str()).collect();
        assert!(
            delivered
                .iter()
                .skip(1)
                .any(|c| !c.contains("rx_packets: 0,")),
            "round {round}: something must arrive"
        );
    }
}
