//! Per-VF AVF state shared by the register model (`vf`), the AdminQ/virtchnl PF (`adminq`,
//! `pf`) and the dataplane. Plain data: every field is guest-influenced and must be validated
//! by whoever sets it; readers must still never index with it unchecked.

/// iavf supports up to 16 queue pairs on a VF; base mode uses 4.
pub const MAX_QUEUE_PAIRS: usize = 16;
/// Vector 0 (misc/AdminQ) plus one per queue pair.
pub const MAX_VECTORS: usize = MAX_QUEUE_PAIRS + 1;
/// RSS key and LUT sizes reported in GET_VF_RESOURCES (devices.md §3.7).
pub const RSS_KEY_SIZE: usize = 52;
pub const RSS_LUT_SIZE: usize = 64;

/// AdminQ registers (VF_ATQ*/VF_ARQ*), exactly as the guest wrote them, except heads, which
/// the device advances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AqRegs {
    pub atq_bal: u32,
    pub atq_bah: u32,
    /// LEN b0–9, VFE b28, OVFL b29, CRIT b30, ENABLE b31.
    pub atq_len: u32,
    pub atq_head: u32,
    pub atq_tail: u32,
    pub arq_bal: u32,
    pub arq_bah: u32,
    pub arq_len: u32,
    pub arq_head: u32,
    pub arq_tail: u32,
}

/// A TX queue as CONFIG_VSI_QUEUES configured it, plus the device-owned head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxQueueCfg {
    pub ring_base: u64,
    /// Ring length in descriptors (0 = not configured).
    pub ring_len: u32,
    pub enabled: bool,
    /// Next descriptor the device will process.
    pub head: u32,
    /// QTX_TAIL1(q) as last written by the guest.
    pub tail: u32,
}

/// An RX queue as CONFIG_VSI_QUEUES configured it, plus the device-owned head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxQueueCfg {
    pub ring_base: u64,
    /// Ring length in descriptors (0 = not configured).
    pub ring_len: u32,
    /// Bytes per data buffer (databuffer_size).
    pub buf_size: u32,
    /// Largest frame the VF accepts (max_pkt_size).
    pub max_pkt_size: u32,
    pub enabled: bool,
    /// Next descriptor the device will fill.
    pub head: u32,
    /// QRX_TAIL1(q) as last written by the guest.
    pub tail: u32,
}

/// CONFIG_IRQ_MAP: which queues each vector serves, and their ITR indexes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IrqMap {
    /// Bit q set: RX queue q raises this vector.
    pub rxq_map: [u16; MAX_VECTORS],
    /// Bit q set: TX queue q raises this vector.
    pub txq_map: [u16; MAX_VECTORS],
    pub rx_itr_idx: [u8; MAX_VECTORS],
    pub tx_itr_idx: [u8; MAX_VECTORS],
}

impl IrqMap {
    /// The vector RX queue `q` raises (the lowest mapped one), if any.
    pub fn rx_vector(&self, q: usize) -> Option<usize> {
        (q < MAX_QUEUE_PAIRS).then(|| self.rxq_map.iter().position(|m| m & (1 << q) != 0))?
    }
    /// The vector TX queue `q` raises, if any.
    pub fn tx_vector(&self, q: usize) -> Option<usize> {
        (q < MAX_QUEUE_PAIRS).then(|| self.txq_map.iter().position(|m| m & (1 << q) != 0))?
    }
}

/// RSS configuration (VIRTCHNL_OP_CONFIG_RSS_KEY/LUT, SET_RSS_HENA, or VFQF_* registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssCfg {
    pub key: [u8; RSS_KEY_SIZE],
    pub lut: [u8; RSS_LUT_SIZE],
    /// Hash-enable bits by packet classifier type (i40e PCTYPE numbering).
    pub hena: u64,
}

impl Default for RssCfg {
    fn default() -> Self {
        // Key and LUT start at zero, so everything lands on queue 0 until configured.
        RssCfg {
            key: [0; RSS_KEY_SIZE],
            lut: [0; RSS_LUT_SIZE],
            hena: 0,
        }
    }
}

/// Everything virtchnl configures on one VF's VSI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VsiState {
    /// Queue pairs granted in GET_VF_RESOURCES.
    pub num_pairs: u16,
    pub tx: [TxQueueCfg; MAX_QUEUE_PAIRS],
    pub rx: [RxQueueCfg; MAX_QUEUE_PAIRS],
    pub irq: IrqMap,
    pub rss: RssCfg,
    /// VLAN stripping enabled (ENABLE/DISABLE_VLAN_STRIPPING).
    pub vlan_strip: bool,
}

impl VsiState {
    /// Forget all virtchnl configuration (RESET_VF), keeping the granted pair count.
    pub fn reset(&mut self) {
        let pairs = self.num_pairs;
        *self = VsiState::default();
        self.num_pairs = pairs;
    }
}
