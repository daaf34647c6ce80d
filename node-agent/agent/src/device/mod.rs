//! Glue between the vfio-user server, the device models and the dataplane: one [`ServedVf`]
//! per VF. What every VF does alike lives here once (bounds and width checks, config space,
//! BAR3, DEVICE_RESET, attach and detach); what a model does differently (its BAR0 registers,
//! its control channel to the PF model, its region layout) is its [`ModelGlue`], one file per
//! model: [`igbvf`] (mailbox to the igb PF model), [`avf`] (AdminQ and virtchnl).

pub mod avf;
pub mod igbvf;
pub mod regions;

use emu_dataplane::engine::DataplaneControl;
use emu_dataplane::VfPort;
use emu_vfio_server::{region, AccessError, DeviceSpec, LogBudget, VfioDevice};
use regions::{check, check_registers, no_region, CONFIG_SIZE};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use avf::{AvfGlue, AvfPfShared};
pub use igbvf::{IgbvfGlue, PfShared};

/// An igbvf VF served over vfio-user.
pub type IgbVfDevice = ServedVf<IgbvfGlue>;
/// An AVF VF served over vfio-user.
pub type AvfVfDevice = ServedVf<AvfGlue>;

/// What the node needs from any VF device besides the vfio-user callbacks.
pub trait NodeDevice: VfioDevice {
    fn port(&self) -> &Arc<VfPort>;
    /// A client is connected.
    fn attached(&self) -> bool;
    /// Back to the just-created state for the next user (the client is already gone).
    fn scrub(&self);
    /// Periodic PF duties (every [`crate::node::CTS_PING_PERIOD`]).
    fn tick(&self);
    /// Changes the VF's PF-side settings (`ip link set PF vf N …`) and republishes its switch
    /// filter: port VLAN, spoof check, trust and the frame cap apply to the next frame, with or without a
    /// client; a new MAC reaches the guest at its next VF reset.
    fn set_admin(&self, admin: AdminSettings);
}

/// The PF-side settings of one VF that the agent may change at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminSettings {
    pub mac: [u8; 6],
    pub port_vlan: Option<u16>,
    pub spoofchk: bool,
    pub trusted: bool,
    /// Largest frame (FCS included) the VF receives, whatever its driver asks for; `None`:
    /// what its driver asks for.
    pub max_frame: Option<u32>,
}

/// What every VF device holds, whatever its model.
pub struct VfCore {
    pub port: Arc<VfPort>,
    /// The VF's index under its PF.
    pub vf_index: usize,
    pub dataplane: DataplaneControl,
    pub attached: AtomicBool,
    /// Log lines the guest or client can trigger at will (resets, attach/detach).
    pub log: LogBudget,
}

impl VfCore {
    pub fn new(port: Arc<VfPort>, vf_index: usize, dataplane: DataplaneControl) -> Self {
        VfCore {
            port,
            vf_index,
            dataplane,
            attached: AtomicBool::new(false),
            log: LogBudget::new(),
        }
    }

    /// Replaces switch port `port`'s filter (a VF's pool changed).
    pub fn publish_filter(&self, port: usize, filter: Option<emu_nic_model::vmdq::PoolFilter>) {
        self.dataplane.update(|t| {
            if let Err(e) = t.set_port(port, filter) {
                tracing::error!(vf = %self.port.id, error = %e, "cannot publish pool filter");
            }
        });
    }
}

/// What a VF model adds to the common glue. Register accesses arrive checked (in bounds of
/// [`BAR0_SIZE`](Self::BAR0_SIZE), aligned 32 or 64 bits).
pub trait ModelGlue: Send + Sync + 'static {
    const BAR0_SIZE: u64;
    const BAR3_SIZE: u64;
    /// The vfio-user regions and interrupts of the VF.
    fn spec(&self) -> DeviceSpec;
    fn bar0_read(&self, core: &VfCore, offset: u64, data: &mut [u8]);
    fn bar0_write(&self, core: &VfCore, offset: u64, data: &[u8]);
    /// Back to the power-on state (DEVICE_RESET, scrub): registers, TX state and the PF's
    /// view of the VF.
    fn power_on(&self, core: &VfCore);
    /// Zeroes what the model counts beyond the port's counters (scrub).
    fn clear_counters(&self) {}
    /// Periodic PF duties while a client is attached.
    fn tick(&self, _core: &VfCore) {}
    fn set_admin(&self, core: &VfCore, admin: AdminSettings);
}

/// One VF served over vfio-user: the common glue around its model.
pub struct ServedVf<M> {
    pub core: VfCore,
    pub model: M,
}

impl<M: ModelGlue> ServedVf<M> {
    pub fn new(core: VfCore, model: M) -> Self {
        ServedVf { core, model }
    }

    /// Returns the VF to its just-created state for its next user: registers at power-on,
    /// pool filters closed (the VF gets its MAC back at its next VF reset), counters zeroed.
    /// The caller disconnects the client first.
    pub fn scrub(&self) {
        self.model.power_on(&self.core);
        self.core.port.counters.reset();
        self.model.clear_counters();
    }
}

impl<M: ModelGlue> NodeDevice for ServedVf<M> {
    fn port(&self) -> &Arc<VfPort> {
        &self.core.port
    }
    fn attached(&self) -> bool {
        self.core.attached.load(Ordering::Acquire)
    }
    fn scrub(&self) {
        ServedVf::scrub(self);
    }
    fn tick(&self) {
        if self.attached() {
            self.model.tick(&self.core);
        }
    }
    fn set_admin(&self, admin: AdminSettings) {
        self.model.set_admin(&self.core, admin);
    }
}

impl<M: ModelGlue> VfioDevice for ServedVf<M> {
    fn spec(&self) -> DeviceSpec {
        self.model.spec()
    }

    fn region_read(&self, region: u32, offset: u64, data: &mut [u8]) -> Result<(), AccessError> {
        match region {
            region::CONFIG => {
                check(region, offset, data.len(), CONFIG_SIZE)?;
                if let Some(f) = self.core.port.lock().pci() {
                    f.config_read(offset, data);
                }
                Ok(())
            }
            region::BAR0 => {
                check_registers(region, offset, data.len(), M::BAR0_SIZE)?;
                self.model.bar0_read(&self.core, offset, data);
                Ok(())
            }
            region::BAR3 => {
                // The MSI-X table is emulated by QEMU; PBA reads are forwarded: report
                // nothing pending (devices.md §1.4).
                check(region, offset, data.len(), M::BAR3_SIZE)?;
                data.fill(0);
                Ok(())
            }
            _ => Err(no_region(region, offset, data.len())),
        }
    }

    fn region_write(&self, region: u32, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        match region {
            region::CONFIG => {
                check(region, offset, data.len(), CONFIG_SIZE)?;
                if let Some(f) = self.core.port.lock().pci() {
                    f.config_write(offset, data);
                }
                // Bus mastering may just have been enabled.
                self.core.dataplane.kick();
                Ok(())
            }
            region::BAR0 => {
                check_registers(region, offset, data.len(), M::BAR0_SIZE)?;
                self.model.bar0_write(&self.core, offset, data);
                Ok(())
            }
            region::BAR3 => check(region, offset, data.len(), M::BAR3_SIZE),
            _ => Err(no_region(region, offset, data.len())),
        }
    }

    fn reset(&self) {
        self.model.power_on(&self.core);
        if let Some(suppressed) = self.core.log.take() {
            tracing::info!(vf = %self.core.port.id, suppressed, "device reset (DEVICE_RESET)");
        }
    }

    fn client_connected(&self) {
        self.core.attached.store(true, Ordering::Release);
        self.core.port.set_active(true);
        if let Some(suppressed) = self.core.log.take() {
            tracing::info!(vf = %self.core.port.id, suppressed, "client attached");
        }
    }

    fn client_disconnected(&self) {
        self.core.port.set_active(false);
        self.core.attached.store(false, Ordering::Release);
        if let Some(suppressed) = self.core.log.take() {
            tracing::info!(vf = %self.core.port.id, suppressed, "client detached; device state kept");
        }
    }
}

/// The 32-bit register words of a checked BAR access, with their offsets.
pub(crate) fn words(offset: u64, data: &[u8]) -> impl Iterator<Item = (u64, u32)> + '_ {
    data.chunks_exact(4).enumerate().map(move |(i, c)| {
        (
            offset + 4 * i as u64,
            u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        )
    })
}
