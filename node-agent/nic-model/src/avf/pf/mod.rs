//! The PF side of virtchnl: what a real PF driver (i40e, DPDK `i40e_pf.c`) answers to the stock
//! `iavf` (devices.md §3.4, §3.5, §3.7). One [`AvfPf`] serves up to [`MAX_VFS`] VFs; the
//! per-VF queue/IRQ/RSS configuration lives in the caller's [`VsiState`], the PF-only state
//! (version, granted caps, MAC and VLAN filters, promiscuous flags, stats base) here.
//!
//! Pure: [`AvfPf::handle`] takes one request and returns a [`Handled`] telling the caller what
//! to do (post the reply, run the reset sequence, refresh the switch filter from
//! [`AvfPf::pool_filter`], reload queues, post LINK_CHANGE). It never panics on guest input.
//!
//! # Decisions
//!
//! - **Validation order**: unimplemented or not-granted opcode → `NOT_SUPPORTED` (−64); length
//!   not exactly what `virtchnl_vc_validate_vf_msg` requires (including its "one element
//!   included" sizes: CONFIG_VSI_QUEUES is 72 + 64n, IRQ_MAP 14 + 12n, ETH_ADDR 12 + 8n,
//!   VLAN 6 + 2n, RSS key/LUT 5 + n) or a zero element count → `ERR_PARAM` (−5); any op but
//!   VERSION/GET_VF_RESOURCES/RESET_VF before GET_VF_RESOURCES → `ERR_PARAM` (i40e's
//!   VF_STATE_ACTIVE); then per-field checks → `ERR_PARAM`. Policy refusals (untrusted
//!   promiscuous mode, an untrusted MAC change) → `NOT_SUPPORTED`; filter table full →
//!   `ERR_NO_MEMORY` (−18). Every request is fully validated before anything changes, so an
//!   error reply always means "nothing changed".
//! - **VERSION**: the PF speaks 1.1. A 1.0 VF gets {1, 0} back (i40e: "1.0 VFs … will cry") and
//!   must then send GET_VF_RESOURCES without payload; it is granted `L2 | RSS_REG | VLAN` as
//!   i40e does for legacy VFs. Any other VF gets {1, 1}. A VF that never sent VERSION counts as
//!   1.0 (i40e's zeroed `vf_ver`).
//! - **Caps granted** (GET_VF_RESOURCES, ∩ requested): `L2` always; `RSS_PF` (else `RSS_REG`
//!   if asked, the register path of `vf.rs`); `VLAN` unless the VF has a port VLAN (then VLAN
//!   ops answer NOT_SUPPORTED and iavf offers no VLAN features); `RX_POLLING` (DPDK's PF grants
//!   it; it changes nothing for us); `ADV_LINK_SPEED` (LINK_CHANGE then carries Mbps, see
//!   [`AvfPf::link_event`]). Nothing else: VLAN_V2, RX_FLEX_DESC, ADV_RSS, FDIR, PTP, ADQ,
//!   USO, ENCAP, REQ_QUEUES, WB_ON_ITR, CRC stay off and their ops get NOT_SUPPORTED.
//! - **Resources**: `num_queue_pairs` = the admin value (0 → 4, clamped to 16), max_vectors =
//!   pairs + 1, max_mtu 9000, RSS key 52, LUT 64, vsi_type 6, vsi_id = [`VSI_ID_BASE`] + VF
//!   index, the admin MAC (zero → iavf picks a random one and adds it as its primary).
//! - **Queues**: queue ids < pairs, txq/rxq ids equal and on the VF's VSI; ring_len 0 (leave
//!   unconfigured) or a multiple of 32 in 64..=8160; ring base 128-byte aligned; RX
//!   databuffer_size 128..=16256 (stored rounded down to 128 like the queue context), max_pkt_size
//!   64..=9728; header split refused; an enabled queue cannot be reconfigured (disable it first).
//!   ENABLE needs configured queues. Vector ids < pairs + 1, queue maps only name queues < pairs,
//!   ITR index ≤ 3, at most pairs + 1 maps.
//! - **MAC filters**: exact unicast and multicast (no hashing). Broadcast/zero addresses are
//!   refused. An **untrusted** VF whose admin MAC is set may not add another unicast address
//!   (i40e "VF attempting to override administratively set MAC address"; iavf turns it into
//!   EACCES) and deleting its admin MAC is acknowledged but ignored (i40e); it may hold at most
//!   18 exact filters in all (I40E_VC_MAX_MAC_ADDR_PER_VF), i.e. its MAC + 17 multicast. A
//!   trusted VF may hold [`TRUSTED_MAX_MAC_FILTERS`]. A PRIMARY (or, while none is known, a
//!   legacy-typed) unicast add becomes the default MAC, which survives RESET_VF.
//! - **VLAN**: VID 0 is always a member; untrusted VFs may add 16 VLANs, trusted any.
//! - **Promiscuous**: only trusted VFs; an untrusted VF asking for any flag gets NOT_SUPPORTED
//!   (i40e lies with success; the issue wants the refusal visible). Clearing is always fine.
//! - **RSS**: key must be 52 bytes, LUT 64 entries each < pairs; HENA is masked to the caps
//!   ([`DEFAULT_RSS_HENA`]); HFUNC accepts Toeplitz only.
//! - **Stats**: GET_STATS reports the dataplane counters minus a base taken at the first
//!   GET_STATS after creation or reset (i40e's stat offsets), so they restart at zero.
//! - **RESET_VF** gets no reply: the caller runs the reset sequence (RSTAT, AQ registers) and
//!   [`AvfPf::vf_reset`] is already done by `handle`.

mod virtchnl;

#[cfg(test)]
mod tests;

use emu_nic_defs::avf_virtchnl::*;

use super::state::{IrqMap, RxQueueCfg, TxQueueCfg, VsiState, MAX_QUEUE_PAIRS, MAX_VECTORS};
use super::state::{RSS_KEY_SIZE, RSS_LUT_SIZE};
use crate::vmdq::{MacAddr, MtaSet, PoolFilter, VlanSet, DEFAULT_MAX_FRAME, ETH_FCS_LEN};
use virtchnl::{u16_at, u32_at, u64_at};

/// VFs one PF can carve.
pub const MAX_VFS: usize = 64;
/// Queue pairs when the admin asks for 0.
pub const DEFAULT_QUEUE_PAIRS: u16 = 4;
/// GET_VF_RESOURCES `max_mtu`. Current iavf reads it as the largest *frame* (it subtracts
/// LIBETH_RX_LL_LEN = 26 for header, two VLAN tags and FCS), so 9000 would cap the MTU at
/// 8974 and `ip link set mtu 9000` fails; 9728 (the largest single-descriptor frame, the
/// `max_pkt_size` limit we accept) allows MTU 9702.
pub const MAX_MTU: u16 = 9728;
/// vsi_id of VF `i` is `VSI_ID_BASE + i`.
pub const VSI_ID_BASE: u16 = 16;
/// Exact MAC filters (unicast + multicast) a trusted VF may hold.
pub const TRUSTED_MAX_MAC_FILTERS: usize = 64;
/// Caps this PF grants when asked (plus L2 always, and RSS_REG as a fallback for RSS_PF).
pub const GRANTABLE_CAPS: u32 = VIRTCHNL_VF_OFFLOAD_L2
    | VIRTCHNL_VF_OFFLOAD_RSS_PF
    | VIRTCHNL_VF_OFFLOAD_VLAN
    | VIRTCHNL_VF_OFFLOAD_RX_POLLING
    | VIRTCHNL_VF_CAP_ADV_LINK_SPEED;
/// What i40e assumes a 1.0 VF (no caps in GET_VF_RESOURCES) wants.
const LEGACY_VF_CAPS: u32 =
    VIRTCHNL_VF_OFFLOAD_L2 | VIRTCHNL_VF_OFFLOAD_RSS_REG | VIRTCHNL_VF_OFFLOAD_VLAN;

/// Agent-side configuration of one VF (what `ip link set … vf N` sets on a real PF).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AvfVfAdmin {
    /// Administratively set MAC; all-zero: none (the VF picks one).
    pub mac: MacAddr,
    pub trusted: bool,
    pub spoofchk: bool,
    pub port_vlan: Option<u16>,
    /// Queue pairs; 0 → [`DEFAULT_QUEUE_PAIRS`], more than 16 → 16.
    pub queue_pairs: u16,
}

impl AvfVfAdmin {
    fn pairs(&self) -> u16 {
        match self.queue_pairs {
            0 => DEFAULT_QUEUE_PAIRS,
            n => n.min(MAX_QUEUE_PAIRS as u16),
        }
    }
    fn has_admin_mac(&self) -> bool {
        self.mac != [0; 6]
    }
}

/// The dataplane's counters for one VF, reported by GET_STATS as `virtchnl_eth_stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VfStats {
    pub rx_bytes: u64,
    pub rx_unicast: u64,
    pub rx_multicast: u64,
    pub rx_broadcast: u64,
    pub rx_discards: u64,
    pub rx_unknown_protocol: u64,
    pub tx_bytes: u64,
    pub tx_unicast: u64,
    pub tx_multicast: u64,
    pub tx_broadcast: u64,
    pub tx_discards: u64,
    pub tx_errors: u64,
}

impl VfStats {
    /// In `virtchnl_eth_stats` order.
    fn fields(&self) -> [u64; 12] {
        [
            self.rx_bytes,
            self.rx_unicast,
            self.rx_multicast,
            self.rx_broadcast,
            self.rx_discards,
            self.rx_unknown_protocol,
            self.tx_bytes,
            self.tx_unicast,
            self.tx_multicast,
            self.tx_broadcast,
            self.tx_discards,
            self.tx_errors,
        ]
    }
}

/// What the caller must do after [`AvfPf::handle`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handled {
    /// VIRTCHNL_STATUS_* for the reply's cookie_low.
    pub status: i32,
    /// Post a reply (false only for RESET_VF).
    pub reply: bool,
    /// RESET_VF: run the VF reset sequence (RSTAT INPROGRESS → COMPLETED → VFACTIVE, clear the
    /// AQ registers, stop queues). PF-side state and `vsi` are already reset.
    pub reset_vf: bool,
    /// The switch filter changed: re-read [`AvfPf::pool_filter`].
    pub filters_changed: bool,
    /// Queue, IRQ or RSS configuration in `vsi` changed.
    pub queues_changed: bool,
    /// Post EVENT LINK_CHANGE (link up) right after this reply (ENABLE_QUEUES).
    pub link_event_after: bool,
}

impl Handled {
    fn ok() -> Self {
        Handled {
            status: VIRTCHNL_STATUS_SUCCESS,
            reply: true,
            ..Handled::default()
        }
    }
    fn error(status: i32) -> Self {
        Handled {
            status,
            reply: true,
            ..Handled::default()
        }
    }
    fn filters(mut self) -> Self {
        self.filters_changed = true;
        self
    }
    fn queues(mut self) -> Self {
        self.queues_changed = true;
        self
    }
}

/// Why a request was refused; [`VcError::status`] is the virtchnl status of the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VcError {
    #[error("no VF {0}")]
    NoSuchVf(usize),
    #[error("opcode {0} is not implemented or not granted")]
    NotSupported(u32),
    #[error("opcode {op}: {len}-byte message, {expected} bytes expected")]
    BadLength {
        op: u32,
        len: usize,
        expected: usize,
    },
    #[error("opcode {0}: empty element list")]
    EmptyList(u32),
    #[error("request before GET_VF_RESOURCES")]
    NotActive,
    #[error("vsi_id {0} is not this VF's")]
    BadVsi(u16),
    #[error("queue {0} out of range or repeated")]
    BadQueue(u32),
    #[error("queue {0} is enabled")]
    QueueEnabled(u16),
    #[error("queue {0} is not configured")]
    QueueNotConfigured(u16),
    #[error("bad ring length {0}")]
    BadRingLen(u32),
    #[error("misaligned ring base {0:#x}")]
    BadRingBase(u64),
    #[error("bad RX buffer size {0}")]
    BadBufSize(u32),
    #[error("bad max packet size {0}")]
    BadPktSize(u32),
    #[error("header split is not supported")]
    HeaderSplit,
    #[error("vector {0} out of range")]
    BadVector(u16),
    #[error("too many vector maps: {0}")]
    TooManyMaps(usize),
    #[error("bad ITR index {0}")]
    BadItr(u16),
    #[error("empty queue selection")]
    NoQueues,
    #[error("bad MAC address {0:02x?}")]
    BadMac(MacAddr),
    #[error("bad MAC address type {0}")]
    BadMacType(u8),
    #[error("untrusted VF may not change its administratively set MAC")]
    MacNotPermitted,
    #[error("MAC filter table full")]
    TooManyMacs,
    #[error("bad VLAN id {0}")]
    BadVlan(u16),
    #[error("VLAN filter table full")]
    TooManyVlans,
    #[error("promiscuous mode needs a trusted VF")]
    NotTrusted,
    #[error("bad promiscuous flags {0:#x}")]
    BadPromiscFlags(u16),
    #[error("bad RSS key length {0}")]
    BadKeyLen(u16),
    #[error("bad RSS LUT size {0}")]
    BadLutLen(u16),
    #[error("RSS LUT entry {0} names no queue")]
    BadLutEntry(u8),
    #[error("RSS hash function {0} is not supported")]
    BadHfunc(u16),
}

impl VcError {
    /// The virtchnl status this error is answered with.
    pub fn status(&self) -> i32 {
        match self {
            VcError::NoSuchVf(_) => VIRTCHNL_STATUS_ERR_INVALID_VF_ID,
            VcError::NotSupported(_)
            | VcError::MacNotPermitted
            | VcError::NotTrusted
            | VcError::BadHfunc(_) => VIRTCHNL_STATUS_ERR_NOT_SUPPORTED,
            VcError::TooManyMacs | VcError::TooManyVlans => VIRTCHNL_STATUS_ERR_NO_MEMORY,
            _ => VIRTCHNL_STATUS_ERR_PARAM,
        }
    }
}

/// PF-side state of one VF.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VfPf {
    admin: AvfVfAdmin,
    /// The version the VF sent in VERSION.
    version: Option<(u32, u32)>,
    /// GET_VF_RESOURCES answered (i40e VF_STATE_ACTIVE).
    active: bool,
    caps: u32,
    /// The VF's current primary MAC (may be zero while unknown).
    default_mac: MacAddr,
    /// Exact unicast filters.
    uc: Vec<MacAddr>,
    /// Exact multicast filters.
    mc: Vec<MacAddr>,
    vlans: VlanSet,
    uc_promisc: bool,
    mc_promisc: bool,
    /// Counters at the first GET_STATS after creation or reset.
    stats_base: Option<VfStats>,
    /// The PF's limit on received frames (FCS included); kept across resets.
    max_frame_cap: Option<u32>,
}

impl VfPf {
    fn new(admin: AvfVfAdmin) -> Self {
        let mut st = VfPf {
            admin,
            version: None,
            active: false,
            caps: 0,
            default_mac: admin.mac,
            uc: Vec::new(),
            mc: Vec::new(),
            vlans: VlanSet::EMPTY,
            uc_promisc: false,
            mc_promisc: false,
            stats_base: None,
            max_frame_cap: None,
        };
        st.reset();
        st
    }

    /// RESET_VF: forget everything the VF negotiated, keep its default MAC filter.
    fn reset(&mut self) {
        self.version = None;
        self.active = false;
        self.caps = 0;
        self.uc.clear();
        if self.default_mac != [0; 6] {
            self.uc.push(self.default_mac);
        }
        self.mc.clear();
        self.vlans = VlanSet::EMPTY;
        self.uc_promisc = false;
        self.mc_promisc = false;
        self.stats_base = None;
    }

    fn v11(&self) -> bool {
        matches!(self.version, Some((major, minor)) if major > 1 || (major == 1 && minor >= 1))
    }

    fn can_change_mac(&self) -> bool {
        self.admin.trusted || !self.admin.has_admin_mac()
    }
}

/// The virtchnl PF of one emulated AVF port (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvfPf {
    vfs: Vec<VfPf>,
}

fn vsi_id(vf: usize) -> u16 {
    VSI_ID_BASE.wrapping_add(vf as u16)
}

fn is_multicast(mac: &MacAddr) -> bool {
    mac[0] & 1 != 0
}

/// A bitmap names only queues below `pairs`.
fn queues_in_range(map: u32, pairs: u16) -> bool {
    map.checked_shr(u32::from(pairs)).unwrap_or(0) == 0
}

fn ring_len_ok(len: u32) -> bool {
    len == 0 || ((RING_LEN_MIN..=RING_LEN_MAX).contains(&len) && len & (RING_LEN_MULTIPLE - 1) == 0)
}

impl AvfPf {
    /// One PF serving `vfs` (at most [`MAX_VFS`]; any beyond are ignored).
    pub fn new(vfs: &[AvfVfAdmin]) -> Self {
        AvfPf {
            vfs: vfs.iter().take(MAX_VFS).map(|a| VfPf::new(*a)).collect(),
        }
    }

    pub fn num_vfs(&self) -> usize {
        self.vfs.len()
    }

    /// The vsi_id VF `vf` must use in its messages.
    pub fn vsi_id(&self, vf: usize) -> u16 {
        vsi_id(vf)
    }

    /// The caps granted to VF `vf` by its last GET_VF_RESOURCES (0 before).
    pub fn granted_caps(&self, vf: usize) -> Option<u32> {
        self.vfs.get(vf).map(|s| s.caps)
    }

    /// The LINK_CHANGE event payload for VF `vf`, in the format its granted caps call for.
    pub fn link_event(&self, vf: usize, up: bool, speed_mbps: u32) -> Option<[u8; 16]> {
        let st = self.vfs.get(vf)?;
        Some(link_change_event(
            up,
            speed_mbps,
            st.caps & VIRTCHNL_VF_CAP_ADV_LINK_SPEED != 0,
        ))
    }

    /// Handles one virtchnl request from VF `vf` (its VSI state is `vsi`), writing the reply
    /// payload into `reply` (cleared first). Never panics.
    pub fn handle(
        &mut self,
        vf: usize,
        vsi: &mut VsiState,
        opcode: u32,
        msg: &[u8],
        stats: &VfStats,
        reply: &mut Vec<u8>,
    ) -> Handled {
        reply.clear();
        match self.dispatch(vf, vsi, opcode, msg, stats, reply) {
            Ok(h) => h,
            Err(e) => {
                reply.clear();
                Handled::error(e.status())
            }
        }
    }

    /// The agent changes VF `vf`'s administrative settings (`ip link set PF vf N …`); false
    /// for an unknown VF. Queue pairs stay as created (they size the VF's BAR and vectors).
    /// Takes effect at once: the next [`AvfPf::pool_filter`] applies port VLAN, spoof check
    /// and trust (promiscuous modes need trust); a new MAC replaces the default MAC filter.
    pub fn set_admin(&mut self, vf: usize, admin: AvfVfAdmin) -> bool {
        let Some(st) = self.vfs.get_mut(vf) else {
            return false;
        };
        if admin.mac != st.admin.mac {
            let old = st.default_mac;
            st.uc.retain(|m| *m != old);
            st.default_mac = admin.mac;
            if admin.mac != [0; 6] && !st.uc.contains(&admin.mac) {
                st.uc.insert(0, admin.mac);
            }
        }
        st.admin = AvfVfAdmin {
            queue_pairs: st.admin.queue_pairs,
            ..admin
        };
        true
    }

    /// Limits the frames VF `vf` receives to `cap` bytes (FCS included), as a PF's own MTU
    /// bounds its VFs'; `None` lifts the limit. False for an unknown VF.
    pub fn set_max_frame_cap(&mut self, vf: usize, cap: Option<u32>) -> bool {
        let Some(st) = self.vfs.get_mut(vf) else {
            return false;
        };
        st.max_frame_cap = cap;
        true
    }

    /// RESET_VF or FLR: drop filters except the default MAC, forget negotiation, `vsi.reset()`.
    pub fn vf_reset(&mut self, vf: usize, vsi: &mut VsiState) {
        if let Some(st) = self.vfs.get_mut(vf) {
            st.reset();
            vsi.reset();
        }
    }

    /// The VMDq filter VF `vf` should have, from its filters and `vsi`.
    pub fn pool_filter(&self, vf: usize, vsi: &VsiState) -> Option<PoolFilter> {
        let st = self.vfs.get(vf)?;
        let pairs = usize::from(vsi.num_pairs).min(MAX_QUEUE_PAIRS);
        let mut vlans = st.vlans;
        vlans.insert(0);
        let max_pkt = vsi.rx[..pairs]
            .iter()
            .filter(|q| q.ring_len != 0)
            .map(|q| q.max_pkt_size)
            .max();
        Some(PoolFilter {
            macs: st.uc.clone(),
            mc_hashes: MtaSet::EMPTY,
            mc_addrs: st.mc.clone(),
            vlans,
            port_vlan: st.admin.port_vlan,
            accept_untagged: st.admin.port_vlan.is_none(),
            broadcast: true,
            uc_promisc: st.admin.trusted && st.uc_promisc,
            mc_promisc: st.admin.trusted && st.mc_promisc,
            strip_vlan: vsi.vlan_strip,
            max_frame: {
                let asked = max_pkt.map_or(DEFAULT_MAX_FRAME, |m| m + ETH_FCS_LEN as u32);
                st.max_frame_cap.map_or(asked, |c| asked.min(c))
            },
            spoofchk: st.admin.spoofchk,
            rx_enabled: vsi.rx[..pairs].iter().any(|q| q.enabled),
            tx_enabled: vsi.tx[..pairs].iter().any(|q| q.enabled),
        })
    }

    fn dispatch(
        &mut self,
        vf: usize,
        vsi: &mut VsiState,
        op: u32,
        msg: &[u8],
        stats: &VfStats,
        reply: &mut Vec<u8>,
    ) -> Result<Handled, VcError> {
        let st = self.vfs.get_mut(vf).ok_or(VcError::NoSuchVf(vf))?;
        let my_vsi = vsi_id(vf);

        // 1. Implemented and granted?
        let needed = match op {
            VIRTCHNL_OP_ADD_VLAN
            | VIRTCHNL_OP_DEL_VLAN
            | VIRTCHNL_OP_ENABLE_VLAN_STRIPPING
            | VIRTCHNL_OP_DISABLE_VLAN_STRIPPING => VIRTCHNL_VF_OFFLOAD_VLAN,
            VIRTCHNL_OP_CONFIG_RSS_KEY
            | VIRTCHNL_OP_CONFIG_RSS_LUT
            | VIRTCHNL_OP_GET_RSS_HENA_CAPS
            | VIRTCHNL_OP_SET_RSS_HENA
            | VIRTCHNL_OP_CONFIG_RSS_HFUNC => VIRTCHNL_VF_OFFLOAD_RSS_PF,
            _ => 0,
        };
        if st.caps & needed != needed {
            return Err(VcError::NotSupported(op));
        }
        // 2. Exact length, as virtchnl_vc_validate_vf_msg.
        let (expected, empty) =
            virtchnl::expected_len(op, msg, st.v11()).ok_or(VcError::NotSupported(op))?;
        if msg.len() != expected {
            return Err(VcError::BadLength {
                op,
                len: msg.len(),
                expected,
            });
        }
        if empty {
            return Err(VcError::EmptyList(op));
        }
        // 3. Negotiation state.
        if !matches!(
            op,
            VIRTCHNL_OP_VERSION | VIRTCHNL_OP_RESET_VF | VIRTCHNL_OP_GET_VF_RESOURCES
        ) && !st.active
        {
            return Err(VcError::NotActive);
        }
        // Every message but these starts with the VSI id.
        if !matches!(
            op,
            VIRTCHNL_OP_VERSION
                | VIRTCHNL_OP_RESET_VF
                | VIRTCHNL_OP_GET_VF_RESOURCES
                | VIRTCHNL_OP_CONFIG_IRQ_MAP
                | VIRTCHNL_OP_GET_RSS_HENA_CAPS
                | VIRTCHNL_OP_SET_RSS_HENA
                | VIRTCHNL_OP_ENABLE_VLAN_STRIPPING
                | VIRTCHNL_OP_DISABLE_VLAN_STRIPPING
        ) {
            let id = u16_at(msg, 0).unwrap_or(u16::MAX);
            if id != my_vsi {
                return Err(VcError::BadVsi(id));
            }
        }
        let pairs = vsi.num_pairs.min(MAX_QUEUE_PAIRS as u16);

        match op {
            VIRTCHNL_OP_RESET_VF => {
                // The API version survives a VF reset (i40e keeps vf_ver): iavf's reset task
                // goes straight to GET_VF_RESOURCES (IAVF_FLAG_AQ_GET_CONFIG), no VERSION.
                let version = st.version;
                st.reset();
                st.version = version;
                vsi.reset();
                Ok(Handled {
                    status: VIRTCHNL_STATUS_SUCCESS,
                    reply: false,
                    reset_vf: true,
                    filters_changed: true,
                    queues_changed: true,
                    link_event_after: false,
                })
            }
            VIRTCHNL_OP_VERSION => {
                let major = u32_at(msg, 0).unwrap_or(0);
                let minor = u32_at(msg, 4).unwrap_or(0);
                st.version = Some((major, minor));
                let reply_minor = if major == 1 && minor == 0 {
                    VIRTCHNL_VERSION_MINOR_NO_VF_CAPS
                } else {
                    VIRTCHNL_VERSION_MINOR
                };
                reply.extend_from_slice(&VIRTCHNL_VERSION_MAJOR.to_le_bytes());
                reply.extend_from_slice(&reply_minor.to_le_bytes());
                Ok(Handled::ok())
            }
            VIRTCHNL_OP_GET_VF_RESOURCES => {
                let wanted = if st.v11() {
                    u32_at(msg, 0).unwrap_or(0)
                } else {
                    LEGACY_VF_CAPS
                };
                let mut grantable = GRANTABLE_CAPS;
                if st.admin.port_vlan.is_some() {
                    grantable &= !VIRTCHNL_VF_OFFLOAD_VLAN;
                }
                let mut caps = VIRTCHNL_VF_OFFLOAD_L2 | (wanted & grantable);
                if wanted & VIRTCHNL_VF_OFFLOAD_RSS_PF == 0
                    && wanted & VIRTCHNL_VF_OFFLOAD_RSS_REG != 0
                {
                    caps |= VIRTCHNL_VF_OFFLOAD_RSS_REG;
                }
                let pairs = st.admin.pairs();
                st.caps = caps;
                st.active = true;
                vsi.num_pairs = pairs;
                virtchnl::put_vf_resource(
                    reply,
                    pairs,
                    pairs + 1,
                    MAX_MTU,
                    caps,
                    RSS_KEY_SIZE as u32,
                    RSS_LUT_SIZE as u32,
                    my_vsi,
                    st.default_mac,
                );
                Ok(Handled::ok().queues())
            }
            VIRTCHNL_OP_CONFIG_VSI_QUEUES => config_vsi_queues(vsi, my_vsi, pairs, msg),
            VIRTCHNL_OP_CONFIG_IRQ_MAP => config_irq_map(vsi, my_vsi, pairs, msg),
            VIRTCHNL_OP_ENABLE_QUEUES | VIRTCHNL_OP_DISABLE_QUEUES => {
                let rx = u32_at(msg, 4).unwrap_or(u32::MAX);
                let tx = u32_at(msg, 8).unwrap_or(u32::MAX);
                if rx == 0 && tx == 0 {
                    return Err(VcError::NoQueues);
                }
                for map in [rx, tx] {
                    if !queues_in_range(map, pairs) {
                        return Err(VcError::BadQueue(map));
                    }
                }
                let enable = op == VIRTCHNL_OP_ENABLE_QUEUES;
                let sel = |map: u32| (0..pairs).filter(move |q| map & (1 << q) != 0);
                if enable {
                    for q in sel(rx) {
                        if vsi.rx[usize::from(q)].ring_len == 0 {
                            return Err(VcError::QueueNotConfigured(q));
                        }
                    }
                    for q in sel(tx) {
                        if vsi.tx[usize::from(q)].ring_len == 0 {
                            return Err(VcError::QueueNotConfigured(q));
                        }
                    }
                }
                for q in sel(rx) {
                    vsi.rx[usize::from(q)].enabled = enable;
                }
                for q in sel(tx) {
                    vsi.tx[usize::from(q)].enabled = enable;
                }
                let mut h = Handled::ok().queues().filters();
                h.link_event_after = enable;
                Ok(h)
            }
            VIRTCHNL_OP_ADD_ETH_ADDR => add_eth_addr(st, msg),
            VIRTCHNL_OP_DEL_ETH_ADDR => del_eth_addr(st, msg),
            VIRTCHNL_OP_ADD_VLAN | VIRTCHNL_OP_DEL_VLAN => {
                let n = usize::from(u16_at(msg, 2).unwrap_or(0));
                let mut vlans = st.vlans;
                for i in 0..n {
                    let vid = u16_at(msg, 4 + 2 * i).unwrap_or(u16::MAX);
                    if vid > 4095 {
                        return Err(VcError::BadVlan(vid));
                    }
                    // VID 0 is always a member (added by the PF), never a filter of its own.
                    if vid == 0 {
                        continue;
                    }
                    if op == VIRTCHNL_OP_ADD_VLAN {
                        vlans.insert(vid);
                    } else {
                        vlans.remove(vid);
                    }
                }
                if !st.admin.trusted && vlans.len() > UNTRUSTED_MAX_VLANS {
                    return Err(VcError::TooManyVlans);
                }
                st.vlans = vlans;
                Ok(Handled::ok().filters())
            }
            VIRTCHNL_OP_ENABLE_VLAN_STRIPPING | VIRTCHNL_OP_DISABLE_VLAN_STRIPPING => {
                vsi.vlan_strip = op == VIRTCHNL_OP_ENABLE_VLAN_STRIPPING;
                Ok(Handled::ok().filters())
            }
            VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE => {
                let flags = u16_at(msg, 2).unwrap_or(u16::MAX);
                if flags & !(FLAG_VF_UNICAST_PROMISC | FLAG_VF_MULTICAST_PROMISC) != 0 {
                    return Err(VcError::BadPromiscFlags(flags));
                }
                if flags != 0 && !st.admin.trusted {
                    return Err(VcError::NotTrusted);
                }
                st.uc_promisc = flags & FLAG_VF_UNICAST_PROMISC != 0;
                st.mc_promisc = flags & FLAG_VF_MULTICAST_PROMISC != 0;
                Ok(Handled::ok().filters())
            }
            VIRTCHNL_OP_GET_STATS => {
                let base = *st.stats_base.get_or_insert(*stats);
                for (cur, base) in stats.fields().into_iter().zip(base.fields()) {
                    // A counter below its base was reset by the dataplane: report it as is.
                    let v = cur.checked_sub(base).unwrap_or(cur);
                    reply.extend_from_slice(&v.to_le_bytes());
                }
                Ok(Handled::ok())
            }
            VIRTCHNL_OP_CONFIG_RSS_KEY => {
                let n = u16_at(msg, 2).unwrap_or(0);
                let key = msg
                    .get(VIRTCHNL_RSS_KEY_HDR_LEN..VIRTCHNL_RSS_KEY_HDR_LEN + RSS_KEY_SIZE)
                    .filter(|_| usize::from(n) == RSS_KEY_SIZE)
                    .ok_or(VcError::BadKeyLen(n))?;
                vsi.rss.key.copy_from_slice(key);
                Ok(Handled::ok().queues())
            }
            VIRTCHNL_OP_CONFIG_RSS_LUT => {
                let n = u16_at(msg, 2).unwrap_or(0);
                let lut = msg
                    .get(VIRTCHNL_RSS_LUT_HDR_LEN..VIRTCHNL_RSS_LUT_HDR_LEN + RSS_LUT_SIZE)
                    .filter(|_| usize::from(n) == RSS_LUT_SIZE)
                    .ok_or(VcError::BadLutLen(n))?;
                if let Some(bad) = lut.iter().find(|e| u16::from(**e) >= pairs) {
                    return Err(VcError::BadLutEntry(*bad));
                }
                vsi.rss.lut.copy_from_slice(lut);
                Ok(Handled::ok().queues())
            }
            VIRTCHNL_OP_GET_RSS_HENA_CAPS => {
                reply.extend_from_slice(&DEFAULT_RSS_HENA.to_le_bytes());
                Ok(Handled::ok())
            }
            VIRTCHNL_OP_SET_RSS_HENA => {
                vsi.rss.hena = u64_at(msg, 0).unwrap_or(0) & DEFAULT_RSS_HENA;
                Ok(Handled::ok().queues())
            }
            VIRTCHNL_OP_CONFIG_RSS_HFUNC => {
                let alg = u16_at(msg, 2).unwrap_or(u16::MAX);
                if alg != VIRTCHNL_RSS_ALG_TOEPLITZ_ASYMMETRIC {
                    return Err(VcError::BadHfunc(alg));
                }
                Ok(Handled::ok())
            }
            _ => Err(VcError::NotSupported(op)),
        }
    }
}

fn config_vsi_queues(
    vsi: &mut VsiState,
    my_vsi: u16,
    pairs: u16,
    msg: &[u8],
) -> Result<Handled, VcError> {
    let n = usize::from(u16_at(msg, 2).unwrap_or(0));
    if n > usize::from(pairs) {
        return Err(VcError::BadQueue(n as u32));
    }
    let mut seen = 0u32;
    let mut staged = [(0usize, TxQueueCfg::default(), RxQueueCfg::default()); MAX_QUEUE_PAIRS];
    for (i, slot) in staged.iter_mut().enumerate().take(n) {
        let (tx, rx) = virtchnl::queue_pair(msg, i).ok_or(VcError::BadQueue(i as u32))?;
        for id in [tx.vsi_id, rx.vsi_id] {
            if id != my_vsi {
                return Err(VcError::BadVsi(id));
            }
        }
        let q = tx.queue_id;
        if rx.queue_id != q || q >= pairs || seen & (1 << q) != 0 {
            return Err(VcError::BadQueue(u32::from(rx.queue_id.max(q))));
        }
        seen |= 1 << q;
        let qi = usize::from(q);
        if vsi.tx[qi].enabled || vsi.rx[qi].enabled {
            return Err(VcError::QueueEnabled(q));
        }
        for (len, base) in [
            (tx.ring_len, tx.dma_ring_addr),
            (rx.ring_len, rx.dma_ring_addr),
        ] {
            if !ring_len_ok(len) {
                return Err(VcError::BadRingLen(len));
            }
            if len != 0 && base % RING_BASE_ALIGN != 0 {
                return Err(VcError::BadRingBase(base));
            }
        }
        let mut rxc = RxQueueCfg::default();
        if rx.ring_len != 0 {
            if rx.splithdr_enabled != 0 {
                return Err(VcError::HeaderSplit);
            }
            if !(RX_DATABUFFER_UNIT..=RX_MAX_DATABUFFER).contains(&rx.databuffer_size) {
                return Err(VcError::BadBufSize(rx.databuffer_size));
            }
            if !(RX_MIN_PKT_SIZE..=RX_MAX_PKT_SIZE).contains(&rx.max_pkt_size) {
                return Err(VcError::BadPktSize(rx.max_pkt_size));
            }
            rxc = RxQueueCfg {
                ring_base: rx.dma_ring_addr,
                ring_len: rx.ring_len,
                // The queue context holds the size in 128-byte units.
                buf_size: rx.databuffer_size & !(RX_DATABUFFER_UNIT - 1),
                max_pkt_size: rx.max_pkt_size,
                ..RxQueueCfg::default()
            };
        }
        let txc = if tx.ring_len != 0 {
            TxQueueCfg {
                ring_base: tx.dma_ring_addr,
                ring_len: tx.ring_len,
                ..TxQueueCfg::default()
            }
        } else {
            TxQueueCfg::default()
        };
        *slot = (qi, txc, rxc);
    }
    for (qi, txc, rxc) in staged.iter().take(n) {
        if let (Some(t), Some(r)) = (vsi.tx.get_mut(*qi), vsi.rx.get_mut(*qi)) {
            *t = *txc;
            *r = *rxc;
        }
    }
    Ok(Handled::ok().queues().filters())
}

fn config_irq_map(
    vsi: &mut VsiState,
    my_vsi: u16,
    pairs: u16,
    msg: &[u8],
) -> Result<Handled, VcError> {
    let n = usize::from(u16_at(msg, 0).unwrap_or(0));
    let vectors = usize::from(pairs) + 1;
    if n > vectors {
        return Err(VcError::TooManyMaps(n));
    }
    let mut irq: IrqMap = vsi.irq;
    for i in 0..n {
        let m = virtchnl::vector_map(msg, i).ok_or(VcError::TooManyMaps(n))?;
        if m.vsi_id != my_vsi {
            return Err(VcError::BadVsi(m.vsi_id));
        }
        let v = usize::from(m.vector_id);
        if v >= vectors || v >= MAX_VECTORS {
            return Err(VcError::BadVector(m.vector_id));
        }
        for map in [m.rxq_map, m.txq_map] {
            if !queues_in_range(u32::from(map), pairs) {
                return Err(VcError::BadQueue(u32::from(map)));
            }
        }
        for itr in [m.rxitr_idx, m.txitr_idx] {
            if itr > ITR_IDX_MAX {
                return Err(VcError::BadItr(itr));
            }
        }
        irq.rxq_map[v] = m.rxq_map;
        irq.txq_map[v] = m.txq_map;
        irq.rx_itr_idx[v] = m.rxitr_idx as u8;
        irq.tx_itr_idx[v] = m.txitr_idx as u8;
    }
    vsi.irq = irq;
    Ok(Handled::ok().queues())
}

fn add_eth_addr(st: &mut VfPf, msg: &[u8]) -> Result<Handled, VcError> {
    let n = usize::from(u16_at(msg, 2).unwrap_or(0));
    let (mut uc, mut mc, mut default_mac) = (st.uc.clone(), st.mc.clone(), st.default_mac);
    for i in 0..n {
        let (mac, ty) = virtchnl::ether_addr(msg, i).ok_or(VcError::BadMac([0; 6]))?;
        if mac == [0; 6] || mac == [0xff; 6] {
            return Err(VcError::BadMac(mac));
        }
        if ty > VIRTCHNL_ETHER_ADDR_EXTRA {
            return Err(VcError::BadMacType(ty));
        }
        if is_multicast(&mac) {
            if !mc.contains(&mac) {
                mc.push(mac);
            }
            continue;
        }
        if !st.can_change_mac() && mac != st.admin.mac {
            return Err(VcError::MacNotPermitted);
        }
        if !uc.contains(&mac) {
            uc.push(mac);
        }
        if ty == VIRTCHNL_ETHER_ADDR_PRIMARY
            || (ty == VIRTCHNL_ETHER_ADDR_LEGACY && default_mac == [0; 6])
        {
            default_mac = mac;
        }
    }
    let max = if st.admin.trusted {
        TRUSTED_MAX_MAC_FILTERS
    } else {
        UNTRUSTED_MAX_MAC_FILTERS
    };
    if uc.len() + mc.len() > max {
        return Err(VcError::TooManyMacs);
    }
    // The primary goes first in the switch's list.
    if let Some(p) = uc.iter().position(|m| *m == default_mac) {
        uc[..=p].rotate_right(1);
    }
    st.uc = uc;
    st.mc = mc;
    st.default_mac = default_mac;
    Ok(Handled::ok().filters())
}

fn del_eth_addr(st: &mut VfPf, msg: &[u8]) -> Result<Handled, VcError> {
    let n = usize::from(u16_at(msg, 2).unwrap_or(0));
    let (mut uc, mut mc) = (st.uc.clone(), st.mc.clone());
    for i in 0..n {
        let (mac, ty) = virtchnl::ether_addr(msg, i).ok_or(VcError::BadMac([0; 6]))?;
        if mac == [0; 6] || mac == [0xff; 6] {
            return Err(VcError::BadMac(mac));
        }
        if ty > VIRTCHNL_ETHER_ADDR_EXTRA {
            return Err(VcError::BadMacType(ty));
        }
        // i40e: an untrusted VF cannot remove its administratively set MAC; acknowledged.
        if mac == st.default_mac && !st.can_change_mac() {
            continue;
        }
        uc.retain(|m| *m != mac);
        mc.retain(|m| *m != mac);
    }
    st.uc = uc;
    st.mc = mc;
    Ok(Handled::ok().filters())
}

/// The `virtchnl_pf_event` payload of a LINK_CHANGE event: with `adv_link_speed` (the VF was
/// granted ADV_LINK_SPEED) the speed is in Mbps, else the nearest legacy speed enum at or below.
pub fn link_change_event(up: bool, speed_mbps: u32, adv_link_speed: bool) -> [u8; 16] {
    let speed = if adv_link_speed {
        speed_mbps
    } else {
        match speed_mbps {
            40_000.. => VIRTCHNL_LINK_SPEED_40GB,
            25_000.. => VIRTCHNL_LINK_SPEED_25GB,
            20_000.. => VIRTCHNL_LINK_SPEED_20GB,
            10_000.. => VIRTCHNL_LINK_SPEED_10GB,
            5_000.. => VIRTCHNL_LINK_SPEED_5GB,
            2_500.. => VIRTCHNL_LINK_SPEED_2_5GB,
            1_000.. => VIRTCHNL_LINK_SPEED_1GB,
            100.. => VIRTCHNL_LINK_SPEED_100MB,
            _ => VIRTCHNL_LINK_SPEED_UNKNOWN,
        }
    };
    let mut b = [0u8; 16];
    b[PF_EVENT_EVENT..][..4].copy_from_slice(&VIRTCHNL_EVENT_LINK_CHANGE.to_le_bytes());
    b[PF_EVENT_LINK_SPEED..][..4].copy_from_slice(&speed.to_le_bytes());
    b[PF_EVENT_LINK_STATUS] = u8::from(up);
    b[PF_EVENT_SEVERITY..][..4].copy_from_slice(&PF_EVENT_SEVERITY_INFO.to_le_bytes());
    b
}
