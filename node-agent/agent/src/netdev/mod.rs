//! Netdev-mode VFs (`deviceType: netdev`): each VF's switch port is a kernel TAP that
//! `emu-sriov-cni` moves into a pod's network namespace, so that an ordinary container gets an
//! SR-IOV-like interface governed by the same VMDq rules as a VM's VF.
//!
//! **The VF.** The VF lives in the igb PF model like any other: its MAC, port VLAN (+QoS),
//! spoof check, trust and frame cap are the PF's `VfAdmin` for that pool, and the pool is opened
//! the way igbvf opens it — a VF_RESET mailbox exchange (then SET_LPE for a jumbo MTU and
//! SET_PROMISC multicast, which an untrusted igb VF may ask for: the kernel's multicast groups,
//! IPv6 neighbour discovery among them, are not known up front). So `ip link set PF vf N …`
//! semantics and anti-spoofing are the PF model's, not a second implementation. The rate limit is
//! the port's token bucket.
//!
//! **The TAP.** Named `<pf>v<index>` (`igb0v0`) in the agent's network namespace,
//! `IFF_TAP|IFF_NO_PI`, **persistent**: it outlives the agent's fd. The agent keeps the fd across
//! the move into a pod (a TAP fd stays valid when its netdev changes namespace), so the
//! dataplane never notices the move.
//!
//! **Claims.** Which pod holds which VF is recorded in `RUN_DIR/netdev/<vf>.json` *before* the
//! plugin touches the netdev (container id, ifName, the pod's netns path, the network's settings).
//! A plugin killed half-way therefore leaks nothing: the runtime's next DEL finds the claim, and
//! if no DEL ever comes the agent drops a claim whose netns is gone ([`NetdevVf::tick`]).
//!
//! **Agent restarts.** TUNSETIFF by name only finds a netdev in the namespace the
//! `/dev/net/tun` fd was opened in. So a restarted agent reads each claim and re-attaches to the
//! TAP *inside the recorded netns* (a helper thread joins it, opens `/dev/net/tun` there and
//! attaches by the pod-side name, then by the host name in case the plugin died before renaming
//! it); without a claim, or when the netns is gone, it attaches (or creates) the TAP at home.
//! We chose recording the netns over an fd-holder process: the netns path is what the runtime
//! hands every CNI call anyway, it needs no second process to keep alive, and a netns that is gone
//! took the TAP with it (a TAP is destroyed with its namespace), which the agent then recreates.
//!
//! **Lost netdevs.** A TAP is destroyed with its namespace, or when someone deletes it; its fd
//! then fails with `EBADFD`. The dataplane marks the port lost and stops it; [`NetdevVf::tick`]
//! creates a fresh TAP at home. Release also makes sure the TAP is home: if the plugin could not
//! move it back, the agent destroys it (non-persistent, last fd closed) and creates a new one.

pub mod claims;
pub mod proto;

use crate::config::VfConfig;
use crate::device::regions::no_region;
use crate::device::{AdminSettings, NodeDevice, PfShared};
use crate::mac;
use claims::Claim;
use emu_dataplane::engine::DataplaneControl;
use emu_dataplane::tap_port;
use emu_dataplane::VfPort;
use emu_nic_defs::igbvf as r;
use emu_nic_model::igb_pf::VfAdmin;
use emu_vfio_server::{AccessError, DeviceSpec, RegionSpec, VfioDevice};
use proto::{NetdevAnswer, NetdevRequest, NetdevSettings};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The MTU a netdev VF gets when neither the network nor the pool sets one.
pub const DEFAULT_MTU: u32 = 1500;
/// Ethernet header, one VLAN tag and the FCS on top of the MTU (igbvf's SET_LPE size).
const FRAME_OVERHEAD: u32 = 14 + 4 + 4;
/// The largest MTU the 82576 model takes (9216-byte frames).
pub const MAX_MTU: u32 = 9216 - FRAME_OVERHEAD;

/// Why a netdev request was refused. [`NetdevError::cni_code`] maps each to the CNI error code
/// the plugin reports.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("no netdev VF `{0}` on this node (is deviceID a VF of a netdev pool? `emu-sriov-agent list` shows them)")]
    UnknownVf(String),
    #[error("VF `{vf}` is held by container {owner} ({if_name}): the device plugin gave it to two pods, or a DEL is missing")]
    Busy {
        vf: String,
        owner: String,
        if_name: String,
    },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("MAC {0} is already used by another VF on this node")]
    MacInUse(String),
    #[error("cannot record the claim in {}", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create or attach TAP `{name}`")]
    Tap {
        name: String,
        #[source]
        source: io::Error,
    },
}

impl NetdevError {
    /// The CNI error code (spec "Error" section): 7 invalid network config, 11 try again
    /// later, 5 I/O failure.
    pub fn cni_code(&self) -> u32 {
        match self {
            NetdevError::UnknownVf(_) | NetdevError::Invalid { .. } => 7,
            NetdevError::MacInUse(_) => 7,
            NetdevError::Busy { .. } => 11,
            NetdevError::Record { .. } | NetdevError::Tap { .. } => 5,
        }
    }
}

/// What the VF carries now (the pool's settings, overridden by the claim's network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Effective {
    mac: [u8; 6],
    mtu: u32,
}

struct Inner {
    /// The pool's settings for the VF (`None`: the slot is not served).
    base: Option<VfConfig>,
    claim: Option<Claim>,
    effective: Effective,
}

/// One netdev-mode VF: its switch port (a TAP port), its pool in the igb PF model, its claim.
pub struct NetdevVf {
    pub port: Arc<VfPort>,
    pub vf_index: usize,
    pub pf: Arc<PfShared>,
    pub dataplane: DataplaneControl,
    /// The TAP's name in the agent's namespace.
    pub host_name: String,
    /// `RUN_DIR/netdev`.
    claims_dir: PathBuf,
    inner: Mutex<Inner>,
}

/// The TAP name of VF `index` of PF `pf` in the agent's namespace: `igb0v0` (PF names have at
/// most 12 characters and igb PFs at most 7 VFs, so this fits IFNAMSIZ).
pub fn host_ifname(pf: &str, index: u8) -> String {
    format!("{pf}v{index}")
}

impl NetdevVf {
    pub fn new(
        port: Arc<VfPort>,
        vf_index: usize,
        pf: Arc<PfShared>,
        dataplane: DataplaneControl,
        host_name: String,
        run_dir: &Path,
    ) -> Self {
        NetdevVf {
            port,
            vf_index,
            pf,
            dataplane,
            host_name,
            claims_dir: claims::dir(run_dir),
            inner: Mutex::new(Inner {
                base: None,
                claim: None,
                effective: Effective {
                    mac: [0; 6],
                    mtu: DEFAULT_MTU,
                },
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn id(&self) -> &str {
        &self.port.id
    }

    /// Serves the VF with the pool's settings `base`: finds its TAP again (inside the netns a
    /// remembered claim names, else at home; creating it if needed) and applies the claim's or
    /// the pool's settings.
    pub fn start(&self, base: &VfConfig) -> Result<(), NetdevError> {
        let mut inner = self.lock();
        inner.base = Some(base.clone());
        let remembered = claims::load(&self.claims_dir, self.id());
        let (fd, placed) = self.find_tap(remembered.as_ref())?;
        self.attach(fd);
        inner.claim = match remembered {
            Some(c) if placed || Path::new(&c.netns).exists() => {
                tracing::info!(vf = %self.id(), container = %c.container_id, netns = %c.netns, found_in_pod = placed, "netdev VF claim restored");
                Some(c)
            }
            Some(c) => {
                tracing::info!(vf = %self.id(), container = %c.container_id, netns = %c.netns, "the netns of a remembered claim is gone: VF freed");
                claims::remove(&self.claims_dir, self.id());
                None
            }
            None => None,
        };
        self.apply(&mut inner);
        Ok(())
    }

    /// Stops serving the VF for good: claim forgotten, TAP destroyed.
    pub fn stop(&self) {
        let mut inner = self.lock();
        inner.base = None;
        inner.claim = None;
        claims::remove(&self.claims_dir, self.id());
        self.apply(&mut inner);
        if let Some(fd) = self.port.lock().tap().and_then(|t| t.detach()) {
            if let Err(e) = tap_port::release_tap(fd) {
                tracing::warn!(vf = %self.id(), error = %e, "cannot make the TAP non-persistent; it stays");
            }
        }
    }

    /// Handles one request from the plugin. `mac_in_use` says whether another VF of the node
    /// carries a MAC.
    pub fn handle(
        &self,
        req: &NetdevRequest,
        mac_in_use: &dyn Fn(&[u8; 6]) -> bool,
    ) -> Result<NetdevAnswer, NetdevError> {
        match req.op {
            proto::NetdevOp::Claim => self.claim(req, mac_in_use),
            proto::NetdevOp::Release => self.release(&req.container_id, &req.if_name),
            proto::NetdevOp::Check => Ok(self.check(&req.container_id, &req.if_name)),
            proto::NetdevOp::Gc => {
                let collected = self.collect(req.network.as_deref().unwrap_or(""), &req.valid)?;
                Ok(NetdevAnswer {
                    collected: collected.into_iter().collect(),
                    ..NetdevAnswer::default()
                })
            }
        }
    }

    /// CNI GC: frees this VF if a claim of `network` holds it for an attachment not in
    /// `valid`; returns what it freed.
    fn collect(
        &self,
        network: &str,
        valid: &[proto::Attachment],
    ) -> Result<Option<proto::Collected>, NetdevError> {
        let mut inner = self.lock();
        let Some(c) = &inner.claim else {
            return Ok(None);
        };
        if network.is_empty()
            || c.network != network
            || valid
                .iter()
                .any(|a| a.container_id == c.container_id && a.if_name == c.if_name)
        {
            return Ok(None);
        }
        let collected = proto::Collected {
            vf: self.id().to_owned(),
            container_id: c.container_id.clone(),
            if_name: c.if_name.clone(),
        };
        tracing::info!(vf = %self.id(), container = %collected.container_id, network, "netdev claim garbage-collected (CNI GC)");
        self.free(&mut inner)?;
        Ok(Some(collected))
    }

    /// Whether (container, ifName) holds this VF.
    pub fn held_by(&self, container_id: &str, if_name: &str) -> bool {
        self.lock()
            .claim
            .as_ref()
            .is_some_and(|c| c.container_id == container_id && c.if_name == if_name)
    }

    fn claim(
        &self,
        req: &NetdevRequest,
        mac_in_use: &dyn Fn(&[u8; 6]) -> bool,
    ) -> Result<NetdevAnswer, NetdevError> {
        let mut inner = self.lock();
        if let Some(c) = &inner.claim {
            if c.container_id == req.container_id && c.if_name == req.if_name {
                return Ok(self.answer(&inner));
            }
            return Err(NetdevError::Busy {
                vf: self.id().to_owned(),
                owner: c.container_id.clone(),
                if_name: c.if_name.clone(),
            });
        }
        let netns =
            req.netns
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| NetdevError::Invalid {
                    field: "netns",
                    message: "a claim needs the pod's network namespace (CNI_NETNS)".into(),
                })?;
        validate(&req.settings, mac_in_use, inner.effective.mac)?;
        // The TAP must be home and alive before the plugin moves it.
        if !self.tap_home() {
            self.replace_tap()?;
        }
        let claim = Claim {
            vf: self.id().to_owned(),
            container_id: req.container_id.clone(),
            if_name: req.if_name.clone(),
            netns,
            settings: req.settings.clone(),
            network: req.network.clone().unwrap_or_default(),
        };
        claims::store(&self.claims_dir, &claim).map_err(|source| NetdevError::Record {
            path: claims::path(&self.claims_dir, self.id()),
            source,
        })?;
        tracing::info!(vf = %self.id(), container = %claim.container_id, if_name = %claim.if_name, netns = %claim.netns, "netdev VF claimed");
        inner.claim = Some(claim);
        self.apply(&mut inner);
        Ok(self.answer(&inner))
    }

    fn release(&self, container_id: &str, if_name: &str) -> Result<NetdevAnswer, NetdevError> {
        let mut inner = self.lock();
        match &inner.claim {
            Some(c) if c.container_id == container_id && c.if_name == if_name => {}
            _ => return Ok(NetdevAnswer::default()),
        }
        let answer = self.answer(&inner);
        self.free(&mut inner)?;
        Ok(answer)
    }

    /// Drops the claim, brings the TAP home (recreating it if the plugin could not) and
    /// closes the pool; counters start from zero for the next user.
    fn free(&self, inner: &mut Inner) -> Result<(), NetdevError> {
        if let Some(c) = inner.claim.take() {
            tracing::info!(vf = %self.id(), container = %c.container_id, "netdev VF released");
        }
        claims::remove(&self.claims_dir, self.id());
        self.apply(inner);
        if !self.tap_home() {
            self.replace_tap()?;
        }
        self.port.counters.reset();
        Ok(())
    }

    fn check(&self, container_id: &str, if_name: &str) -> NetdevAnswer {
        let inner = self.lock();
        match &inner.claim {
            Some(c) if c.container_id == container_id && c.if_name == if_name => {
                self.answer(&inner)
            }
            _ => NetdevAnswer::default(),
        }
    }

    fn answer(&self, inner: &Inner) -> NetdevAnswer {
        let Some(c) = &inner.claim else {
            return NetdevAnswer::default();
        };
        NetdevAnswer {
            vf: self.id().to_owned(),
            host_name: self.host_name.clone(),
            mac: mac::format_mac(&inner.effective.mac),
            mtu: inner.effective.mtu,
            netns: c.netns.clone(),
            if_name: c.if_name.clone(),
            current_name: self.current_name(),
            collected: Vec::new(),
        }
    }

    /// The TAP's current name; `None` when its netdev is gone.
    fn current_name(&self) -> Option<String> {
        let mut g = self.port.lock();
        let st = g.tap()?;
        if st.is_lost() {
            return None;
        }
        tap_port::tap_name(st.fd()?).ok()
    }

    /// Whether the TAP is alive, in the agent's namespace, under its host name.
    fn tap_home(&self) -> bool {
        self.current_name().as_deref() == Some(self.host_name.as_str())
            && tap_port::if_index(&self.host_name).is_ok()
    }

    /// Destroys the current TAP wherever it is and creates a fresh one at home.
    fn replace_tap(&self) -> Result<(), NetdevError> {
        if let Some(fd) = self.port.lock().tap().and_then(|t| t.detach()) {
            // Non-persistent and closed: the kernel unregisters it, in whatever namespace.
            let _ = tap_port::release_tap(fd);
        }
        let (fd, _) =
            tap_port::open_tap(&self.host_name, true).map_err(|source| NetdevError::Tap {
                name: self.host_name.clone(),
                source,
            })?;
        self.attach(fd);
        tracing::info!(vf = %self.id(), tap = %self.host_name, "TAP (re)created in the agent's namespace");
        Ok(())
    }

    fn attach(&self, fd: OwnedFd) {
        if let Some(st) = self.port.lock().tap() {
            st.attach(fd);
        }
    }

    /// The TAP: inside the claim's netns (by pod-side name, then host name) when there is a
    /// claim, else (or when not found there) at home. `true` when found in the pod.
    fn find_tap(&self, claim: Option<&Claim>) -> Result<(OwnedFd, bool), NetdevError> {
        if let Some(c) = claim.filter(|c| Path::new(&c.netns).exists()) {
            let names = [c.if_name.clone(), self.host_name.clone()];
            let found = crate::sys::in_netns(Path::new(&c.netns), move || {
                for n in &names {
                    if tap_port::if_index(n).is_ok() {
                        return tap_port::open_tap(n, true).map(|(fd, _)| fd);
                    }
                }
                Err(io::ErrorKind::NotFound.into())
            });
            match found {
                Ok(fd) => return Ok((fd, true)),
                Err(e) => {
                    tracing::info!(vf = %self.id(), netns = %c.netns, error = %e, "TAP not found in the claim's netns; looking at home")
                }
            }
        }
        let (fd, _) =
            tap_port::open_tap(&self.host_name, true).map_err(|source| NetdevError::Tap {
                name: self.host_name.clone(),
                source,
            })?;
        Ok((fd, false))
    }

    /// Puts the VF's settings into the PF model and the switch: the claim's network over the
    /// pool's, pool opened (VF_RESET handshake) while claimed, closed otherwise.
    fn apply(&self, inner: &mut Inner) {
        let i = self.vf_index;
        let Some(base) = inner.base.clone() else {
            let mut pf = self.pf.model.lock().unwrap_or_else(|p| p.into_inner());
            pf.vf_reset(i);
            self.republish(&pf);
            self.port.set_active(false);
            return;
        };
        let none = NetdevSettings::default();
        let s = inner.claim.as_ref().map_or(&none, |c| &c.settings);
        let mac = s
            .mac
            .as_deref()
            .and_then(mac::parse_mac)
            .unwrap_or(base.mac);
        let port_vlan = match s.vlan {
            Some(0) => None,
            Some(v) => Some(v | (u16::from(s.vlan_qos.unwrap_or(0) & 7) << 13)),
            None => base.port_vlan,
        };
        let rate = match s.max_tx_rate {
            Some(0) => None,
            Some(r) => Some(r),
            None => base.rate_mbps,
        };
        let mtu = s.mtu.or(base.mtu).unwrap_or(DEFAULT_MTU);
        let link_up = s.link_state.as_deref() != Some("disable");
        let claimed = inner.claim.is_some();
        {
            let mut pf = self.pf.model.lock().unwrap_or_else(|p| p.into_inner());
            pf.set_admin(
                i,
                VfAdmin {
                    mac,
                    port_vlan,
                    spoofchk: s.spoofchk.unwrap_or(base.spoofchk),
                    trusted: s.trust.unwrap_or(base.trusted),
                },
            );
            pf.set_max_frame_cap(i, Some(mtu + FRAME_OVERHEAD));
            pf.vf_reset(i);
            if claimed && link_up {
                // What igbvf does when its interface comes up.
                let mut msg = [0u32; r::VMBMEM_WORDS];
                msg[0] = r::MSG_VF_RESET;
                let _ = pf.handle(i, &msg);
                if mtu > DEFAULT_MTU {
                    msg[0] = r::MSG_SET_LPE;
                    msg[1] = mtu + FRAME_OVERHEAD;
                    let _ = pf.handle(i, &msg);
                }
                msg[0] = r::MSG_SET_PROMISC | (r::PROMISC_MULTICAST << r::MSGINFO_SHIFT);
                msg[1] = 0;
                let _ = pf.handle(i, &msg);
            }
            self.republish(&pf);
        }
        self.port
            .set_rate_limit(rate.map_or(0, |m| u64::from(m) * 1_000_000));
        if let Some(st) = self.port.lock().tap() {
            st.keep_tags = port_vlan.is_none();
        }
        self.port.set_active(claimed && link_up);
        self.dataplane.kick();
        inner.effective = Effective { mac, mtu };
    }

    fn republish(&self, pf: &emu_nic_model::igb_pf::IgbPf) {
        let port = self.pf.ports[self.vf_index];
        let filter = pf.pool_filter(self.vf_index);
        self.dataplane.update(|t| {
            if let Err(e) = t.set_port(port, filter) {
                tracing::error!(vf = %self.port.id, error = %e, "cannot publish pool filter");
            }
        });
    }

    /// Health duties (every [`crate::node::CTS_PING_PERIOD`]): a TAP whose netdev is gone is
    /// recreated at home; a claim whose netns is gone (the pod went away without a DEL, or a
    /// plugin died mid-ADD and no DEL came) is dropped.
    fn health(&self) {
        let mut inner = self.lock();
        if inner.base.is_none() {
            return;
        }
        let stale = inner
            .claim
            .as_ref()
            .is_some_and(|c| !Path::new(&c.netns).exists());
        if stale {
            tracing::info!(vf = %self.id(), "the claim's netns is gone: freeing the VF");
            if let Err(e) = self.free(&mut inner) {
                tracing::warn!(vf = %self.id(), error = %e, "cannot free the VF");
            }
            return;
        }
        if self.current_name().is_none() {
            tracing::info!(vf = %self.id(), "the VF's netdev is gone");
            if let Err(e) = self.replace_tap() {
                tracing::warn!(vf = %self.id(), error = %e, "cannot recreate the TAP");
                return;
            }
            // Claimed: the pod lost its interface (deleted behind the plugin's back); the VF
            // stays the pod's until DEL, idle at home.
            self.apply(&mut inner);
            if inner.claim.is_some() {
                self.port.set_active(false);
            }
        }
    }
}

fn validate(
    s: &NetdevSettings,
    mac_in_use: &dyn Fn(&[u8; 6]) -> bool,
    own: [u8; 6],
) -> Result<(), NetdevError> {
    let bad = |field, message: String| Err(NetdevError::Invalid { field, message });
    if let Some(text) = &s.mac {
        let Some(m) = mac::parse_mac(text).filter(|m| m[0] & 1 == 0 && *m != [0; 6]) else {
            return bad("mac", format!("`{text}` is not a unicast MAC"));
        };
        if m != own && mac_in_use(&m) {
            return Err(NetdevError::MacInUse(text.clone()));
        }
    }
    if s.vlan.is_some_and(|v| v > 4094) {
        return bad("vlan", format!("{} is not 0..=4094", s.vlan.unwrap_or(0)));
    }
    if s.vlan_qos.is_some_and(|q| q > 7) {
        return bad("vlanQoS", "takes 0..=7".into());
    }
    if s.vlan_qos.is_some_and(|q| q > 0) && s.vlan.unwrap_or(0) == 0 {
        return bad("vlanQoS", "needs a vlan".into());
    }
    if let Some(l) = &s.link_state {
        if !["auto", "enable", "disable"].contains(&l.as_str()) {
            return bad("link_state", format!("`{l}`: use auto, enable or disable"));
        }
    }
    if s.min_tx_rate.is_some_and(|m| m > 0) {
        return bad(
            "min_tx_rate",
            "a guaranteed minimum rate is not emulated: leave it 0".into(),
        );
    }
    if let (Some(max), Some(min)) = (s.max_tx_rate, s.min_tx_rate) {
        if max > 0 && min > max {
            return bad("min_tx_rate", "exceeds max_tx_rate".into());
        }
    }
    if s.mtu.is_some_and(|m| !(68..=MAX_MTU).contains(&m)) {
        return bad("mtu", format!("takes 68..={MAX_MTU}"));
    }
    Ok(())
}

impl NodeDevice for NetdevVf {
    fn port(&self) -> &Arc<VfPort> {
        &self.port
    }
    /// Claimed by a pod.
    fn attached(&self) -> bool {
        self.lock().claim.is_some()
    }
    /// The device plugin released the VF: whatever pod held it is gone.
    fn scrub(&self) {
        let mut inner = self.lock();
        if let Err(e) = self.free(&mut inner) {
            tracing::warn!(vf = %self.id(), error = %e, "cannot scrub the netdev VF");
        }
    }
    fn tick(&self) {
        self.health();
    }
    fn set_admin(&self, a: AdminSettings) {
        let mut inner = self.lock();
        if let Some(b) = inner.base.as_mut() {
            b.mac = a.mac;
            b.port_vlan = a.port_vlan;
            b.spoofchk = a.spoofchk;
            b.trusted = a.trusted;
            b.mtu = a.max_frame.map(|f| f.saturating_sub(FRAME_OVERHEAD));
        }
        self.apply(&mut inner);
    }
}

/// A netdev VF has no vfio-user side: it is never served on a socket, and a client that somehow
/// reached it would find no regions.
impl VfioDevice for NetdevVf {
    fn spec(&self) -> DeviceSpec {
        DeviceSpec {
            regions: vec![RegionSpec::default(); emu_vfio_server::region::COUNT as usize],
            irq_counts: [0; emu_vfio_server::irq_index::COUNT as usize],
        }
    }
    fn region_read(&self, region: u32, offset: u64, data: &mut [u8]) -> Result<(), AccessError> {
        Err(no_region(region, offset, data.len()))
    }
    fn region_write(&self, region: u32, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        Err(no_region(region, offset, data.len()))
    }
    fn reset(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_before_anything_is_touched() {
        let free = |_: &[u8; 6]| false;
        let taken = |_: &[u8; 6]| true;
        let own = [2, 0, 0, 0, 0, 1];
        let ok = NetdevSettings {
            mac: Some("02:00:00:00:00:09".into()),
            vlan: Some(100),
            vlan_qos: Some(3),
            max_tx_rate: Some(100),
            mtu: Some(9000),
            link_state: Some("enable".into()),
            ..Default::default()
        };
        assert!(validate(&ok, &free, own).is_ok());
        assert!(matches!(
            validate(&ok, &taken, own),
            Err(NetdevError::MacInUse(_))
        ));
        let own_mac = NetdevSettings {
            mac: Some("02:00:00:00:00:01".into()),
            ..Default::default()
        };
        assert!(validate(&own_mac, &taken, own).is_ok(), "its own MAC");
        for bad in [
            NetdevSettings {
                mac: Some("01:00:5e:00:00:01".into()),
                ..Default::default()
            },
            NetdevSettings {
                vlan: Some(4095),
                ..Default::default()
            },
            NetdevSettings {
                vlan_qos: Some(2),
                ..Default::default()
            },
            NetdevSettings {
                link_state: Some("up".into()),
                ..Default::default()
            },
            NetdevSettings {
                min_tx_rate: Some(10),
                ..Default::default()
            },
            NetdevSettings {
                mtu: Some(20),
                ..Default::default()
            },
        ] {
            let e = validate(&bad, &free, own).unwrap_err();
            assert_eq!(e.cni_code(), 7, "{e}");
        }
    }

    #[test]
    fn host_names_fit_ifnamsiz() {
        assert_eq!(host_ifname("igb0", 3), "igb0v3");
        assert!(host_ifname("abcdefghijkl", 6).len() <= 15);
    }
}
