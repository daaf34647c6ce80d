//! Writes the seed corpora under `fuzz/seeds/<target>/`: small, valid inputs for each target
//! (a vfio-user handshake, a mailbox reset, a virtchnl negotiation, a TX ring with TSO, ...)
//! from which libFuzzer starts. Run from the repository root:
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds`. The output is checked in.

use emu_nic_defs::avf_virtchnl::*;
use emu_nic_defs::igb_desc::{rx as igb_rx, tx as igb_tx};
use emu_nic_defs::{avf, igbvf as r};
use emu_nic_model::avf::adminq::AqDesc;
use emu_sriov_fuzz::{put_u32s, MEM_BASE};
use emu_vfio_server::region;
use emu_vfio_server::wire::{cmd, Header, HEADER_SIZE};
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let seeds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("vfio_messages", "handshake", vfio_handshake()),
        ("vfio_messages", "mailbox_reset", vfio_mailbox()),
        ("vfio_messages", "queues_irqs", vfio_queues()),
        ("igbvf_registers", "mailbox_reset_set_mac", igbvf_mailbox()),
        ("igbvf_registers", "tx_queue", igbvf_tx_queue()),
        ("igb_mailbox", "reset_then_config", igb_mailbox()),
        ("avf_registers", "adminq_iavf_open", avf_adminq()),
        ("avf_virtchnl", "negotiate", avf_virtchnl()),
        ("tx_rings", "igbvf_tso", tx_igbvf_tso()),
        ("tx_rings", "avf_tso", tx_avf_tso()),
        ("rx_rings", "igbvf_one_buffer", rx_igbvf()),
        ("rx_rings", "avf", rx_avf()),
        (
            "config",
            "readme_example",
            README_CONFIG.as_bytes().to_vec(),
        ),
        (
            "config",
            "two_pfs_uplink",
            TWO_PFS_CONFIG.as_bytes().to_vec(),
        ),
    ];
    for (target, name, bytes) in seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create seed dir");
        std::fs::write(dir.join(name), &bytes).expect("write seed");
        println!("{target}/{name}: {} bytes", bytes.len());
    }
}

// --- vfio-user message streams

struct Stream {
    out: Vec<u8>,
    id: u16,
}

impl Stream {
    fn new() -> Self {
        let mut s = Stream {
            out: Vec::new(),
            id: 0,
        };
        let mut v = vec![0, 0, 0, 0];
        v.extend_from_slice(
            b"{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":1048576}}\0",
        );
        s.msg(cmd::VERSION, &v);
        s
    }
    fn msg(&mut self, command: u16, payload: &[u8]) -> &mut Self {
        let h = Header {
            msg_id: self.id,
            command,
            size: (HEADER_SIZE + payload.len()) as u32,
            flags: 0,
            error: 0,
        };
        self.id += 1;
        self.out.extend_from_slice(&h.to_bytes());
        self.out.extend_from_slice(payload);
        self
    }
    fn read(&mut self, region: u32, offset: u64, count: u32) -> &mut Self {
        let mut p = Vec::new();
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&region.to_le_bytes());
        p.extend_from_slice(&count.to_le_bytes());
        self.msg(cmd::REGION_READ, &p)
    }
    fn write32(&mut self, region: u32, offset: u64, value: u32) -> &mut Self {
        let mut p = Vec::new();
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&region.to_le_bytes());
        p.extend_from_slice(&4u32.to_le_bytes());
        p.extend_from_slice(&value.to_le_bytes());
        self.msg(cmd::REGION_WRITE, &p)
    }
    fn bar0(&mut self, offset: u32, value: u32) -> &mut Self {
        self.write32(region::BAR0, u64::from(offset), value)
    }
}

fn words(w: &[u32]) -> Vec<u8> {
    let mut v = Vec::new();
    put_u32s(&mut v, w);
    v
}

fn vfio_handshake() -> Vec<u8> {
    let mut s = Stream::new();
    s.msg(cmd::DEVICE_GET_INFO, &words(&[16, 0, 0, 0]));
    for index in [region::BAR0, region::BAR3, region::CONFIG] {
        s.msg(
            cmd::DEVICE_GET_REGION_INFO,
            &words(&[32, 0, index, 0, 0, 0, 0, 0]),
        );
    }
    s.msg(cmd::DEVICE_GET_IRQ_INFO, &words(&[16, 0, 2, 0]));
    s.read(region::CONFIG, 0, 64)
        .read(region::BAR0, u64::from(r::STATUS), 4);
    s.out
}

fn vfio_mailbox() -> Vec<u8> {
    let mut s = Stream::new();
    // Bus master on, then the igbvf probe: VF_RESET over the mailbox, read the reply, ACK.
    s.write32(region::CONFIG, 4, 0x0000_0006);
    s.bar0(r::VMBMEM, r::MSG_VF_RESET)
        .bar0(r::V2PMAILBOX, r::V2P_REQ);
    s.read(region::BAR0, u64::from(r::V2PMAILBOX), 4);
    for i in 0..3 {
        s.read(region::BAR0, u64::from(r::VMBMEM + 4 * i), 4);
    }
    s.bar0(r::V2PMAILBOX, r::V2P_ACK);
    s.bar0(r::VMBMEM, r::MSG_SET_MAC_ADDR)
        .bar0(r::VMBMEM + 4, 0x0000_0002)
        .bar0(r::VMBMEM + 8, 0x1000)
        .bar0(r::V2PMAILBOX, r::V2P_REQ);
    s.read(region::BAR0, u64::from(r::VMBMEM), 4);
    s.msg(cmd::DEVICE_RESET, &[]);
    s.out
}

fn vfio_queues() -> Vec<u8> {
    let mut s = Stream::new();
    s.bar0(r::TDBAL0, 0x10_0000)
        .bar0(r::TDLEN0, 1024)
        .bar0(r::TXDCTL0, r::XDCTL_ENABLE)
        .bar0(r::TDT0, 2)
        .bar0(r::RDBAL0, 0x20_0000)
        .bar0(r::RDLEN0, 1024)
        .bar0(r::RXDCTL0, r::XDCTL_ENABLE)
        .bar0(r::RDT0, 63)
        .bar0(r::EIMS, 7)
        .bar0(r::EITR0, 488);
    // SET_IRQS: MSI-X, action trigger, data none, no vectors (no fds in a byte stream).
    s.msg(cmd::DEVICE_SET_IRQS, &words(&[20, 1 | 1 << 5, 2, 0, 0]));
    // DMA_UNMAP of a range never mapped.
    let mut p = words(&[32, 0]);
    p.extend_from_slice(&0x10_0000u64.to_le_bytes());
    p.extend_from_slice(&0x1000u64.to_le_bytes());
    p.extend_from_slice(&0u64.to_le_bytes());
    s.msg(cmd::DMA_UNMAP, &p);
    s.read(region::BAR0, u64::from(r::TDH0), 4);
    s.out
}

// --- igbvf registers and the igb mailbox

/// Register-target ops (see `igbvf_registers.rs`).
struct Ops(Vec<u8>);

impl Ops {
    fn read(&mut self, off: u32) -> &mut Self {
        self.0.push(0);
        self.0.extend_from_slice(&(off as u16).to_le_bytes());
        self
    }
    fn write(&mut self, off: u32, v: u32) -> &mut Self {
        self.0.push(1);
        self.0.extend_from_slice(&(off as u16).to_le_bytes());
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn mailbox(&mut self, msg: &[u32]) -> &mut Self {
        self.0.push(4);
        self.0.push(msg.len() as u8);
        put_u32s(&mut self.0, msg);
        self.0.push(0);
        self
    }
    /// Framed with the op-stream length, followed by guest memory.
    fn with_memory(&self, mem: &[u8]) -> Vec<u8> {
        let mut v = (self.0.len() as u16).to_le_bytes().to_vec();
        v.extend_from_slice(&self.0);
        v.extend_from_slice(mem);
        v
    }
}

fn igbvf_mailbox() -> Vec<u8> {
    let mut o = Ops(Vec::new());
    o.read(r::V2PMAILBOX)
        .mailbox(&[r::MSG_VF_RESET])
        .read(r::V2PMAILBOX)
        .read(r::VMBMEM)
        .write(r::V2PMAILBOX, r::V2P_ACK)
        .mailbox(&[r::MSG_SET_MAC_ADDR, 0x0000_0002, 0x1000])
        .mailbox(&[r::MSG_SET_MULTICAST | 2 << r::MSGINFO_SHIFT, 0x0123_0456])
        .mailbox(&[r::MSG_SET_VLAN | 1 << r::MSGINFO_SHIFT, 100])
        .mailbox(&[r::MSG_SET_LPE, 9018])
        .write(r::EIMS, 7)
        .write(r::CTRL, r::CTRL_RST)
        .read(r::V2PMAILBOX);
    o.with_memory(&[])
}

/// An igbvf TX ring at MEM_BASE: a TSO context, then one data descriptor holding a TCP/IPv4
/// frame of 54 header bytes and 1000 payload bytes at MEM_BASE + 0x1000.
fn igbvf_tso_ring() -> Vec<u8> {
    let mut mem = vec![0u8; 0x1000];
    let ctx = [
        20 | 14 << igb_tx::MACLEN_SHIFT,
        0,
        igb_tx::DTYP_CTXT | igb_tx::DCMD_DEXT | igb_tx::TUCMD_IPV4 | igb_tx::TUCMD_L4T_TCP,
        20 << igb_tx::L4LEN_SHIFT | 100 << igb_tx::MSS_SHIFT,
    ];
    mem[..16].copy_from_slice(&words(&ctx));
    let len = 54 + 1000u32;
    let addr = MEM_BASE + 0x1000;
    let data = [
        addr as u32,
        (addr >> 32) as u32,
        len | igb_tx::DTYP_DATA
            | igb_tx::DCMD_DEXT
            | igb_tx::DCMD_EOP
            | igb_tx::DCMD_IFCS
            | igb_tx::DCMD_RS
            | igb_tx::DCMD_TSE,
        (len - 54) << igb_tx::PAYLEN_SHIFT | igb_tx::POPTS_TXSM | igb_tx::POPTS_IXSM,
    ];
    mem[16..32].copy_from_slice(&words(&data));
    mem.extend_from_slice(&tcp_frame(1000));
    mem
}

fn igbvf_tx_queue() -> Vec<u8> {
    let mut o = Ops(Vec::new());
    o.write(r::TDBAL0, MEM_BASE as u32)
        .write(r::TDLEN0, 128)
        .write(r::TXDCTL0, r::XDCTL_ENABLE)
        .write(r::TDT0, 2);
    // Op 7, queue 0, sub-op 2: a dataplane TX pass with budget 64.
    o.0.extend_from_slice(&[7, 0, 2, 64]);
    o.read(r::TDH0);
    o.with_memory(&igbvf_tso_ring())
}

fn igb_mailbox() -> Vec<u8> {
    fn msg(v: &mut Vec<u8>, vf: u8, m: &[u32]) {
        v.push(vf);
        v.push(m.len() as u8);
        put_u32s(v, m);
    }
    let mut v = Vec::new();
    for vf in 0..3 {
        msg(&mut v, vf, &[r::MSG_VF_RESET]);
        msg(
            &mut v,
            vf,
            &[r::MSG_SET_MAC_ADDR, 0x0000_0002, 0x2000 | u32::from(vf)],
        );
        msg(
            &mut v,
            vf,
            &[r::MSG_SET_MULTICAST | 3 << r::MSGINFO_SHIFT, 0x0001_0002, 3],
        );
        msg(&mut v, vf, &[r::MSG_SET_VLAN | 1 << r::MSGINFO_SHIFT, 100]);
        msg(&mut v, vf, &[r::MSG_SET_LPE, 9018]);
        msg(&mut v, vf, &[r::MSG_SET_PROMISC | 1 << r::MSGINFO_SHIFT]);
    }
    msg(&mut v, 7, &[r::MSG_VF_RESET]);
    v.push(0x80);
    msg(&mut v, 0, &[r::MSG_SET_MAC_ADDR, 0x0000_0002, 0x2000]);
    v
}

// --- AVF: AdminQ and virtchnl

/// virtchnl request bodies of an iavf probe and open.
fn virtchnl_requests() -> Vec<(u32, Vec<u8>)> {
    let vsi = 16u16;
    let mut qcfg = Vec::new();
    qcfg.extend_from_slice(&vsi.to_le_bytes());
    qcfg.extend_from_slice(&1u16.to_le_bytes());
    qcfg.extend_from_slice(&[0; 4]);
    // txq: vsi, queue 0, 64 descriptors, headwb 0, ring, headwb addr.
    qcfg.extend_from_slice(&vsi.to_le_bytes());
    qcfg.extend_from_slice(&0u16.to_le_bytes());
    qcfg.extend_from_slice(&64u16.to_le_bytes());
    qcfg.extend_from_slice(&0u16.to_le_bytes());
    qcfg.extend_from_slice(&(MEM_BASE + 0x4000).to_le_bytes());
    qcfg.extend_from_slice(&0u64.to_le_bytes());
    // rxq: vsi, queue 0, 64 descriptors, hdr 0, rsvd, 2048-byte buffers, max 1522, crc, rxdid,
    // pad, ring, split pos, pad.
    qcfg.extend_from_slice(&vsi.to_le_bytes());
    qcfg.extend_from_slice(&0u16.to_le_bytes());
    qcfg.extend_from_slice(&64u32.to_le_bytes());
    qcfg.extend_from_slice(&[0; 4]);
    qcfg.extend_from_slice(&2048u32.to_le_bytes());
    qcfg.extend_from_slice(&1522u32.to_le_bytes());
    qcfg.extend_from_slice(&[0; 4]);
    qcfg.extend_from_slice(&(MEM_BASE + 0x6000).to_le_bytes());
    qcfg.extend_from_slice(&[0; 8]);
    assert_eq!(qcfg.len(), VIRTCHNL_VSI_QUEUE_CONFIG_INFO_LEN);

    // One vector (1) serving RX and TX queue 0.
    let mut irq = 1u16.to_le_bytes().to_vec();
    for v in [vsi, 1, 1, 1, 0, 1] {
        irq.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(irq.len(), VIRTCHNL_IRQ_MAP_INFO_LEN);

    let mut queues = vsi.to_le_bytes().to_vec();
    queues.extend_from_slice(&[0; 2]);
    queues.extend_from_slice(&words(&[1, 1]));

    let mut mac = vsi.to_le_bytes().to_vec();
    mac.extend_from_slice(&1u16.to_le_bytes());
    mac.extend_from_slice(&[0x02, 0, 0, 0, 9, 9, 0, 0]);

    let mut vlan = vsi.to_le_bytes().to_vec();
    vlan.extend_from_slice(&1u16.to_le_bytes());
    vlan.extend_from_slice(&100u16.to_le_bytes());

    // virtchnl's list messages are "one-element" structs plus n elements: with n = 1 the
    // body carries one element's worth of trailing padding (virtchnl_vc_validate_vf_msg).
    let pad = |mut body: Vec<u8>, elem: usize| {
        body.resize(body.len() + elem, 0);
        body
    };
    vec![
        (VIRTCHNL_OP_VERSION, words(&[1, 1])),
        (VIRTCHNL_OP_GET_VF_RESOURCES, words(&[0x000b_00a9])),
        (
            VIRTCHNL_OP_CONFIG_VSI_QUEUES,
            pad(qcfg, VIRTCHNL_QUEUE_PAIR_INFO_LEN),
        ),
        (
            VIRTCHNL_OP_CONFIG_IRQ_MAP,
            pad(irq, VIRTCHNL_VECTOR_MAP_LEN),
        ),
        (VIRTCHNL_OP_ADD_ETH_ADDR, pad(mac, VIRTCHNL_ETHER_ADDR_LEN)),
        (VIRTCHNL_OP_ADD_VLAN, pad(vlan, 2)),
        (VIRTCHNL_OP_ENABLE_QUEUES, queues.clone()),
        (VIRTCHNL_OP_GET_STATS, queues),
        (VIRTCHNL_OP_RESET_VF, Vec::new()),
    ]
}

fn avf_virtchnl() -> Vec<u8> {
    let mut v = Vec::new();
    for (op, body) in virtchnl_requests() {
        v.push(0);
        v.push(op as u8);
        v.extend_from_slice(&(body.len() as u16).to_le_bytes());
        v.extend_from_slice(&body);
    }
    v
}

fn avf_adminq() -> Vec<u8> {
    // Guest memory: ATQ (16 descriptors) at +0, ARQ (16) at +0x400, ATQ buffers at +0x1000
    // (0x100 apart), ARQ buffers at +0x2000 (0x200 apart), the TX ring CONFIG_VSI_QUEUES
    // sets up at +0x4000 with one frame at +0x4800, the RX ring at +0x6000 with buffers at
    // +0x7000.
    let mut mem = vec![0u8; 0x8000];
    let reqs = virtchnl_requests();
    // Everything but the final RESET_VF.
    let reqs = &reqs[..reqs.len() - 1];
    for (i, (op, body)) in reqs.iter().enumerate() {
        let buf = 0x1000 + 0x100 * i;
        mem[buf..buf + body.len()].copy_from_slice(body);
        let d = AqDesc {
            flags: AQ_FLAG_BUF | AQ_FLAG_RD,
            opcode: AQ_OPC_SEND_MSG_TO_PF,
            datalen: body.len() as u16,
            cookie_high: *op,
            addr_high: ((MEM_BASE + buf as u64) >> 32) as u32,
            addr_low: (MEM_BASE + buf as u64) as u32,
            ..AqDesc::default()
        };
        mem[32 * i..32 * i + 32].copy_from_slice(&d.to_bytes());
    }
    for i in 0..16 {
        let buf = MEM_BASE + 0x2000 + 0x200 * i as u64;
        let d = AqDesc {
            flags: AQ_FLAG_BUF,
            datalen: 0x200,
            addr_high: (buf >> 32) as u32,
            addr_low: buf as u32,
            ..AqDesc::default()
        };
        mem[0x400 + 32 * i..0x400 + 32 * i + 32].copy_from_slice(&d.to_bytes());
    }
    // TX descriptor 0: one 154-byte frame, EOP|RS.
    let frame = tcp_frame(100);
    mem[0x4800..0x4800 + frame.len()].copy_from_slice(&frame);
    let qw1 = avf::tx::DTYPE_DATA
        | (avf::tx::CMD_EOP | avf::tx::CMD_RS) << avf::tx::CMD_SHIFT
        | (frame.len() as u64) << avf::tx::BUF_SZ_SHIFT;
    mem[0x4000..0x4008].copy_from_slice(&(MEM_BASE + 0x4800).to_le_bytes());
    mem[0x4008..0x4010].copy_from_slice(&qw1.to_le_bytes());
    // RX descriptors 0 and 1 with 2 KiB buffers.
    for i in 0..2u64 {
        let at = 0x6000 + 32 * i as usize;
        mem[at..at + 8].copy_from_slice(&(MEM_BASE + 0x7000 + 2048 * i).to_le_bytes());
    }
    let mut o = Ops(Vec::new());
    o.write(avf::VF_ARQBAL1, (MEM_BASE + 0x400) as u32)
        .write(avf::VF_ARQBAH1, 0)
        .write(avf::VF_ARQLEN1, avf::AQ_LEN_ENABLE | 16)
        .write(avf::VF_ARQT1, 15)
        .write(avf::VF_ATQBAL1, MEM_BASE as u32)
        .write(avf::VF_ATQBAH1, 0)
        .write(avf::VF_ATQLEN1, avf::AQ_LEN_ENABLE | 16)
        .write(avf::VF_ATQT1, reqs.len() as u32)
        .read(avf::VF_ATQH1)
        .read(avf::VF_ARQH1)
        .write(avf::VFINT_DYN_CTL01, avf::DYN_CTL_INTENA)
        .read(avf::VFINT_ICR01)
        .read(avf::VFGEN_RSTAT)
        .write(avf::QTX_TAIL1, 1)
        .write(avf::QRX_TAIL1, 2);
    // A dataplane pass on queue pair 0: TX (budget 64), then a 60-byte frame to RX.
    o.0.extend_from_slice(&[6, 0, 64, 60, 0]);
    o.0.extend_from_slice(&tcp_frame(6));
    o.with_memory(&mem)
}

// --- rings

/// Ethernet + IPv4 + TCP (no options) + `payload` bytes, lengths filled in.
fn tcp_frame(payload: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + 20 + payload) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[
        0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend((0..payload).map(|i| (i % 251) as u8));
    f
}

/// Ring registers as `tx_rings`/`rx_rings` read them: base at MEM_BASE + 0, len, head, tail
/// (all "small").
fn ring_regs(mode: u8, len: u16, head: u16, tail: u16) -> Vec<u8> {
    let mut v = vec![mode, 1, 0, 0];
    for x in [len, head, tail] {
        v.push(1);
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

fn tx_igbvf_tso() -> Vec<u8> {
    let mut v = ring_regs(0, 128, 0, 2);
    v.push(64);
    v.extend_from_slice(&igbvf_tso_ring());
    v
}

fn tx_avf_tso() -> Vec<u8> {
    use avf::tx as t;
    let mut mem = vec![0u8; 0x1000];
    let ctx = t::DTYPE_CONTEXT
        | t::CTX_CMD_TSO << t::CTX_CMD_SHIFT
        | 1000 << t::CTX_TSO_LEN_SHIFT
        | 100 << t::CTX_MSS_SHIFT;
    mem[8..16].copy_from_slice(&ctx.to_le_bytes());
    let addr = MEM_BASE + 0x1000;
    let offsets = (14 / 2) << t::OFFSET_MACLEN_SHIFT
        | (20 / 4) << t::OFFSET_IPLEN_SHIFT
        | (20 / 4) << t::OFFSET_L4LEN_SHIFT;
    let cmd = t::CMD_EOP | t::CMD_RS | t::CMD_ICRC | t::CMD_IIPT_IPV4_CSUM | t::CMD_L4T_TCP;
    let data = t::DTYPE_DATA
        | cmd << t::CMD_SHIFT
        | offsets << t::OFFSET_SHIFT
        | (54 + 1000) << t::BUF_SZ_SHIFT;
    mem[16..24].copy_from_slice(&addr.to_le_bytes());
    mem[24..32].copy_from_slice(&data.to_le_bytes());
    mem.extend_from_slice(&tcp_frame(1000));
    let mut v = ring_regs(1, 64, 0, 2);
    v.push(64);
    v.extend_from_slice(&mem);
    v
}

fn rx_frames(v: &mut Vec<u8>) {
    let frames = [tcp_frame(6), tcp_frame(1460)];
    v.push(frames.len() as u8);
    for f in frames {
        v.extend_from_slice(&(f.len() as u16).to_le_bytes());
        v.extend_from_slice(&f);
    }
}

fn rx_igbvf() -> Vec<u8> {
    // Burst path (mode 1 << 1), 8 descriptors with 2 KiB buffers at MEM_BASE + 0x1000.
    let mut v = ring_regs(2, 128, 0, 7);
    let srrctl = igb_rx::SRRCTL_DESCTYPE_ADV_ONEBUF | 2;
    v.extend_from_slice(&srrctl.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&[1, 100, 0, 1, 0x78, 0x56, 0x34, 0x12, 0]);
    rx_frames(&mut v);
    let mut mem = vec![0u8; 128];
    for i in 0..8u64 {
        let buf = MEM_BASE + 0x1000 + 2048 * i;
        mem[16 * i as usize..][..8].copy_from_slice(&buf.to_le_bytes());
    }
    v.extend_from_slice(&mem);
    v
}

fn rx_avf() -> Vec<u8> {
    let mut v = ring_regs(1, 8, 0, 7);
    v.extend_from_slice(&2048u32.to_le_bytes());
    v.extend_from_slice(&9728u32.to_le_bytes());
    v.extend_from_slice(&[1, 100, 0, 1, 0x78, 0x56, 0x34, 0x12, 26]);
    rx_frames(&mut v);
    let mut mem = vec![0u8; 8 * 32];
    for i in 0..8u64 {
        let buf = MEM_BASE + 0x1000 + 2048 * i;
        mem[32 * i as usize..][..8].copy_from_slice(&buf.to_le_bytes());
    }
    v.extend_from_slice(&mem);
    v
}

// --- config

/// The example from the top-level README.
const README_CONFIG: &str = r#"runDir: /tmp/emu
pfs:
  - model: igb
    vfs: 2
    vf:
      - index: 0
        mac: "02:00:00:00:00:10"
        vlan: 100          # port VLAN: inserted on TX, stripped on RX
        rateMbps: 500      # transmit rate limit
dataplane:
  mode: adaptive           # or `poll` with `cores: [2, 3]` (one pinned thread per core)
"#;

const TWO_PFS_CONFIG: &str = r#"nodeName: node-a
runDir: /tmp/emu
pfs:
  - model: igb
    name: igb0
    vfs: 2
  - model: avf
    vfs: 2
    queuePairs: 4
    resourceName: emu.sriov/vf-fast
    vf:
      - index: 1
        trust: true
        spoofchk: false
uplink:
  type: tap
  name: emu0
dataplane:
  mode: poll
  cores: [0]
"#;
