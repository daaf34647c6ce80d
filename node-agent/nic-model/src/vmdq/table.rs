//! The switch table: every port's [`PoolFilter`] plus lookup indexes, built on the control path
//! and read on the hot path.

use super::frame::is_valid_unicast;
use super::{MacAddr, PoolFilter, PortSet, VmdqError, MAX_PORTS};

/// A snapshot of all ports of one switching domain. The control path edits a copy and swaps it
/// in whole; the hot path only reads it. Every setter rebuilds the indexes, so lookups never
/// scan filters they cannot match.
#[derive(Clone, Debug, Default)]
pub struct SwitchTable {
    /// Filters indexed by port; `None` = no pool on that port (receives nothing).
    ports: Vec<Option<PoolFilter>>,
    /// Exact unicast MAC (as [`mac_key`]) → ports (RAL/RAH with POOLSEL), sorted for binary
    /// search.
    mac_index: Vec<(u64, PortSet)>,
    /// Ports with a filter.
    configured: PortSet,
    /// Ports with BAM.
    broadcast: PortSet,
    /// Ports with ROPE.
    uc_promisc: PortSet,
    /// Ports that want some multicast (MPME, hashes or exact addresses).
    multicast: PortSet,
    /// Where traffic leaves the local pools (uplink/PF): unmatched unicast, and a copy of
    /// broadcast/multicast sent by a local pool. `None` = drop such traffic.
    default_port: Option<usize>,
    /// DTXSWC.LOOPBACK_EN: local pool-to-pool switching of frames a pool transmits.
    loopback: bool,
}

impl SwitchTable {
    /// An empty table: no ports, no default port, loopback off (DTXSWC reset value).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets or removes the filter of `port` and rebuilds the indexes.
    ///
    /// # Errors
    /// [`VmdqError::PortOutOfRange`] when `port >= MAX_PORTS`; the table is unchanged.
    pub fn set_port(&mut self, port: usize, filter: Option<PoolFilter>) -> Result<(), VmdqError> {
        if port >= MAX_PORTS {
            return Err(VmdqError::PortOutOfRange { port });
        }
        if self.ports.len() <= port {
            if filter.is_none() {
                return Ok(());
            }
            self.ports.resize(port + 1, None);
        }
        self.ports[port] = filter;
        while self.ports.last().is_some_and(Option::is_none) {
            self.ports.pop();
        }
        self.rebuild();
        Ok(())
    }

    /// The filter of `port`, if one is set.
    pub fn port(&self, port: usize) -> Option<&PoolFilter> {
        self.ports.get(port).and_then(Option::as_ref)
    }

    /// Ports that have a filter.
    pub fn configured_ports(&self) -> &PortSet {
        &self.configured
    }

    /// The default port (uplink/PF), if any.
    pub fn default_port(&self) -> Option<usize> {
        self.default_port
    }

    /// Sets the default port (VT_CTL.DEF_PL; `None` is DIS_DEF_PL).
    ///
    /// # Errors
    /// [`VmdqError::PortOutOfRange`] when the port is `>= MAX_PORTS`; the table is unchanged.
    pub fn set_default_port(&mut self, port: Option<usize>) -> Result<(), VmdqError> {
        if let Some(p) = port.filter(|p| *p >= MAX_PORTS) {
            return Err(VmdqError::PortOutOfRange { port: p });
        }
        self.default_port = port;
        Ok(())
    }

    /// DTXSWC.LOOPBACK_EN.
    pub fn loopback(&self) -> bool {
        self.loopback
    }

    /// Sets DTXSWC.LOOPBACK_EN.
    pub fn set_loopback(&mut self, on: bool) {
        self.loopback = on;
    }

    /// Ports whose exact unicast filters hold `mac` (empty set when none). Binary search, no
    /// allocation.
    pub fn lookup_mac(&self, mac: &MacAddr) -> PortSet {
        let key = mac_key(mac);
        match self.mac_index.binary_search_by(|(m, _)| m.cmp(&key)) {
            Ok(i) => self.mac_index[i].1,
            Err(_) => PortSet::EMPTY,
        }
    }

    pub(crate) fn broadcast_ports(&self) -> &PortSet {
        &self.broadcast
    }

    pub(crate) fn uc_promisc_ports(&self) -> &PortSet {
        &self.uc_promisc
    }

    pub(crate) fn multicast_ports(&self) -> &PortSet {
        &self.multicast
    }

    fn rebuild(&mut self) {
        self.mac_index.clear();
        self.configured.clear();
        self.broadcast.clear();
        self.uc_promisc.clear();
        self.multicast.clear();
        for (port, f) in self.ports.iter().enumerate() {
            let Some(f) = f else { continue };
            self.configured.insert(port);
            if f.broadcast {
                self.broadcast.insert(port);
            }
            if f.uc_promisc {
                self.uc_promisc.insert(port);
            }
            if f.wants_multicast() {
                self.multicast.insert(port);
            }
            for mac in f.macs.iter().filter(|m| is_valid_unicast(m)) {
                self.mac_index
                    .push((mac_key(mac), PortSet::from_iter([port])));
            }
        }
        // Merge duplicates (one MAC on several pools: RAH POOLSEL with several bits).
        self.mac_index.sort_unstable_by_key(|e| e.0);
        self.mac_index.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1.union_with(&later.1);
                true
            } else {
                false
            }
        });
    }
}

/// A MAC as one integer (big-endian, so keys sort like the addresses): one compare per probe.
pub(crate) fn mac_key(mac: &MacAddr) -> u64 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(mac);
    u64::from_be_bytes(b)
}
