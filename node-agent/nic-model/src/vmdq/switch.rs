//! Per-frame switching decisions (devices.md §4.2). Hot path: no allocation, no panics on any
//! input.

use super::frame::{is_multicast, mta_hash, L2Header, BROADCAST, VLAN_VID_MASK};
use super::{DropReason, PoolFilter, PortSet, SwitchTable, DROP_REASONS};

/// Where one frame goes (output of [`rx_targets`]); caller-owned and reused across frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxTargets {
    /// Pools that receive the frame. Never contains the source port.
    pub ports: PortSet,
    /// Also forward the frame to [`SwitchTable::default_port`] (uplink/PF), unfiltered.
    pub to_default: bool,
    /// The frame as a whole had no destination: [`DropReason::Runt`] when unparsable,
    /// [`DropReason::NoMatch`] when no pool was addressed and there is no default port to take
    /// it. `None` whenever any pool was addressed, even if all of them rejected it (see
    /// `rejected`).
    pub drop: Option<DropReason>,
    /// Pools that were addressed but refused the frame, per reason (indexed by
    /// [`DropReason::index`]): count them on the pool's RX drop counters.
    pub rejected: [PortSet; DROP_REASONS],
    /// Some pool is in `rejected` (lets the hot path skip scanning and clearing it).
    pub any_rejected: bool,
}

impl RxTargets {
    /// An empty result.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resets to empty without reallocating anything (the rejection sets only when used).
    pub fn clear(&mut self) {
        self.ports.clear();
        self.to_default = false;
        self.drop = None;
        if self.any_rejected {
            self.rejected = Default::default();
            self.any_rejected = false;
        }
    }

    /// Pools that refused the frame for `reason`.
    pub fn rejected(&self, reason: DropReason) -> &PortSet {
        &self.rejected[reason.index()]
    }

    /// Every (pool, reason) rejection.
    pub fn rejections(&self) -> impl Iterator<Item = (usize, DropReason)> + '_ {
        let reasons: &[DropReason] = if self.any_rejected {
            &DropReason::ALL
        } else {
            &[]
        };
        reasons
            .iter()
            .flat_map(move |r| self.rejected[r.index()].iter().map(move |p| (p, *r)))
    }

    fn reject(&mut self, port: usize, reason: DropReason) {
        self.rejected[reason.index()].insert(port);
        self.any_rejected = true;
    }
}

/// TX gate and anti-spoof for one frame sent by pool `src` (devices.md §4.2 TX 1–3).
///
/// Returns the TCI to insert before switching: the pool's port VLAN (VMVIR), or `None`.
///
/// Rules:
/// - The port must have a filter ([`DropReason::NoPort`]) with `tx_enabled`
///   ([`DropReason::TxDisabled`], VFTE).
/// - The frame must hold an Ethernet header and any 802.1Q tag it announces
///   ([`DropReason::Runt`]).
/// - With `spoofchk` (DTXSWC MAC_SPOOF/VLAN_SPOOF; QEMU does not enforce it, we do, §4.4):
///   - the source MAC must be one of `macs` ([`DropReason::MacSpoof`]);
///   - with a port VLAN the frame must be untagged, since the switch inserts the tag itself;
///     without one, a tagged frame's VID must be in `vlans` (VID 0, priority tags, included)
///     ([`DropReason::VlanSpoof`]). Untagged frames always pass the VLAN check.
///
/// Without `spoofchk`, a tagged frame from a port-VLAN pool still gets the port VLAN inserted as
/// the outer tag (VMVIR VLANA_DEFAULT "always insert").
///
/// # Errors
/// The [`DropReason`] for which the whole frame is refused; the caller counts it on `src`
/// (and raises a spoof event for `MacSpoof`/`VlanSpoof`, WVBR).
pub fn tx_check(table: &SwitchTable, src: usize, frame: &[u8]) -> Result<Option<u16>, DropReason> {
    let f = table.port(src).ok_or(DropReason::NoPort)?;
    if !f.tx_enabled {
        return Err(DropReason::TxDisabled);
    }
    let h = L2Header::parse(frame)?;
    tx_check_header(table, src, &h)
}

/// [`tx_check`] for a frame whose header the caller already parsed (the hot path parses
/// each frame once); same rules, same results.
pub fn tx_check_header(
    table: &SwitchTable,
    src: usize,
    h: &L2Header,
) -> Result<Option<u16>, DropReason> {
    let f = table.port(src).ok_or(DropReason::NoPort)?;
    if !f.tx_enabled {
        return Err(DropReason::TxDisabled);
    }
    if f.spoofchk {
        if !f.macs.contains(&h.src) {
            return Err(DropReason::MacSpoof);
        }
        let vlan_ok = match (f.port_vlan, h.vid()) {
            (_, None) => true,
            (Some(_), Some(_)) => false,
            (None, Some(vid)) => f.vlans.contains(vid),
        };
        if !vlan_ok {
            return Err(DropReason::VlanSpoof);
        }
    }
    Ok(f.port_vlan)
}

/// Whether pool filter `f` accepts a frame with outer VLAN ID `vid` (`None` = untagged),
/// devices.md §4.2 RX 4.
///
/// - Port VLAN set: only frames tagged with that VID (compared on VID bits only). Untagged frames
///   and other VIDs are refused whatever `accept_untagged` and `vlans` say, so a port-VLAN pool
///   stays isolated in its VLAN. (§4.2 literally reads "untagged needs aupe or a port VLAN"; we
///   read the port VLAN as the pool's only VLAN instead: igb clears AUPE when it sets VMVIR,
///   `igb_set_vmolr(…, !vlan)`, and QEMU requires AUPE for untagged frames.)
/// - Otherwise: tagged frames need their VID in `vlans`; untagged frames need
///   `accept_untagged` (AUPE).
pub fn vlan_accepts(f: &PoolFilter, vid: Option<u16>) -> bool {
    match (f.port_vlan, vid) {
        (Some(pv), Some(v)) => (pv & VLAN_VID_MASK) == (v & VLAN_VID_MASK),
        (Some(_), None) => false,
        (None, Some(v)) => f.vlans.contains(v),
        (None, None) => f.accept_untagged,
    }
}

/// The RX decision for one frame on the switch (devices.md §4.2 RX 1–5 and TX 4; QEMU
/// `igb_receive_assign` order: address match, then VLAN filter, then VFRE and RLPML).
///
/// `frame` already carries any port VLAN of its sender. `src` is the sending port (never
/// delivered to: no reflection), or `None` for a frame that belongs to no port.
///
/// Address stage — which pools are *addressed*:
/// - **Broadcast** (ff:ff:ff:ff:ff:ff) → pools with `broadcast` (BAM).
/// - **Multicast** → pools whose `mc_hashes` hold [`mta_hash`] of the destination, or whose
///   `mc_addrs` hold it, plus `mc_promisc` pools. Per-pool sets: no leak through a shared MTA
///   (§4.4).
/// - **Unicast** → the pools with the destination among their `macs`. If there is none, the
///   `uc_promisc` pools and the default port.
///
/// Default port: it gets broadcast and multicast sent by any other port, and unicast that
/// matched no pool's `macs` (a local exact match keeps unicast off the uplink, QEMU
/// `external_tx`). Promiscuous pools are listeners and do not keep unknown unicast from the
/// uplink. If the default port itself has a filter and is addressed, its filter decides
/// instead (it appears in `ports` or `rejected`, never twice).
///
/// Loopback: when [`SwitchTable::loopback`] is off, frames from a pool other than the default
/// port are not switched locally at all; everything goes to the default port (QEMU
/// `igb_tx_pkt_switch` loops back only with DTXSWC.LOOPBACK_EN).
///
/// Filter stage — each addressed pool other than `src`, in this order:
/// `!rx_enabled` → [`DropReason::RxDisabled`]; VLAN ([`vlan_accepts`]) →
/// [`DropReason::VlanFilter`]; `len + FCS > max_frame` → [`DropReason::Oversize`]. A refusal
/// never redirects the frame to the default port.
pub fn rx_targets(table: &SwitchTable, src: Option<usize>, frame: &[u8], out: &mut RxTargets) {
    match L2Header::parse(frame) {
        Ok(h) => rx_targets_header(table, src, &h, frame.len(), out),
        Err(reason) => {
            out.clear();
            out.drop = Some(reason);
        }
    }
}

/// [`rx_targets`] for a frame of `len` bytes whose header the caller already parsed; same
/// rules, same results.
pub fn rx_targets_header(
    table: &SwitchTable,
    src: Option<usize>,
    h: &L2Header,
    len: usize,
    out: &mut RxTargets,
) {
    out.clear();
    let default = table.default_port().filter(|d| Some(*d) != src);
    let from_pool = src.is_some() && src != table.default_port();

    let (addressed, leaves) = if from_pool && !table.loopback() {
        (PortSet::EMPTY, true)
    } else if h.dst == BROADCAST {
        (*table.broadcast_ports(), true)
    } else if is_multicast(&h.dst) {
        (multicast_listeners(table, h), true)
    } else {
        let exact = table.lookup_mac(&h.dst);
        if exact.is_empty() {
            (*table.uc_promisc_ports(), true)
        } else {
            (exact, false)
        }
    };

    let vid = h.vid();
    let mut default_addressed = false;
    for p in addressed.iter() {
        if Some(p) == src {
            continue;
        }
        let Some(f) = table.port(p) else { continue };
        default_addressed |= Some(p) == default;
        if !f.rx_enabled {
            out.reject(p, DropReason::RxDisabled);
        } else if !vlan_accepts(f, vid) {
            out.reject(p, DropReason::VlanFilter);
        } else if f.is_oversize(len) {
            out.reject(p, DropReason::Oversize);
        } else {
            out.ports.insert(p);
        }
    }
    out.to_default = leaves && default.is_some() && !default_addressed;
    if out.ports.is_empty() && !out.to_default && !out.any_rejected {
        out.drop = Some(DropReason::NoMatch);
    }
}

fn multicast_listeners(table: &SwitchTable, h: &L2Header) -> PortSet {
    let hash = mta_hash(&h.dst);
    let mut set = PortSet::EMPTY;
    for p in table.multicast_ports().iter() {
        if let Some(f) = table.port(p) {
            if f.mc_promisc || f.mc_hashes.contains(hash) || f.mc_addrs.contains(&h.dst) {
                set.insert(p);
            }
        }
    }
    set
}

/// Per-destination VLAN handling on delivery (devices.md §4.2 RX 6): the TCI to strip from the
/// frame and report in the RX descriptor (VP + vlan field), or `None` to deliver it unchanged.
///
/// Strips when the frame is tagged and the pool has `strip_vlan` (STRVLAN) or a port VLAN (VMVIR:
/// the port VLAN is always removed on RX). Untagged and unparsable frames are never stripped.
/// For a port VLAN the TCI is still reported; igbvf only uses a reported VID that is in its own
/// active set (`igbvf_receive_skb`), so the port VLAN stays invisible to the guest.
pub fn rx_vlan_action(filter: &PoolFilter, frame: &[u8]) -> Option<u16> {
    if !(filter.strip_vlan || filter.port_vlan.is_some()) {
        return None;
    }
    L2Header::parse(frame).ok()?.tci
}
