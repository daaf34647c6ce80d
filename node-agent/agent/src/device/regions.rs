//! What every emulated VF shares in its vfio-user region layout: BAR0 (registers, with
//! sparse-mmap areas), BAR3 (MSI-X; QEMU emulates the table and forwards PBA reads), the
//! config space; and the bounds and width checks for trapped accesses.

use emu_vfio_server::{irq_index, region, AccessError, DeviceSpec, RegionSpec};
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Size of a VF's config space region.
pub const CONFIG_SIZE: u64 = emu_nic_defs::pci::CONFIG_SIZE as u64;

/// The region layout of a VF: BAR0 of `bar0_size` with `mapped` areas served from
/// `bar0_fd`, BAR3 of `bar3_size`, config space, and `msix_vectors` MSI-X vectors.
pub fn vf_spec(
    bar0_size: u64,
    mapped: &[(u64, u64)],
    bar0_fd: Option<Arc<OwnedFd>>,
    bar3_size: u64,
    msix_vectors: u32,
) -> DeviceSpec {
    let rw = |size| RegionSpec {
        size,
        readable: true,
        writable: true,
        ..RegionSpec::default()
    };
    let mut regions = vec![RegionSpec::default(); region::COUNT as usize];
    regions[region::BAR0 as usize] = RegionSpec {
        sparse_mmap: if bar0_fd.is_some() {
            mapped.to_vec()
        } else {
            Vec::new()
        },
        mmap_fd: bar0_fd,
        ..rw(bar0_size)
    };
    regions[region::BAR3 as usize] = rw(bar3_size);
    regions[region::CONFIG as usize] = rw(CONFIG_SIZE);
    let mut irq_counts = [0; irq_index::COUNT as usize];
    irq_counts[irq_index::MSIX as usize] = msix_vectors;
    DeviceSpec {
        regions,
        irq_counts,
    }
}

/// `offset..offset+len` must lie inside a region of `size` bytes.
pub fn check(region: u32, offset: u64, len: usize, size: u64) -> Result<(), AccessError> {
    match offset.checked_add(len as u64) {
        Some(e) if e <= size => Ok(()),
        _ => Err(AccessError::OutOfBounds {
            region,
            offset,
            len,
        }),
    }
}

/// Register BARs take aligned 32-bit accesses (an aligned 64-bit one is split in two).
pub fn check_registers(region: u32, offset: u64, len: usize, size: u64) -> Result<(), AccessError> {
    check(region, offset, len, size)?;
    if !offset.is_multiple_of(4) || (len != 4 && len != 8) {
        return Err(AccessError::BadWidth {
            region,
            offset,
            len,
        });
    }
    Ok(())
}

/// Any region a VF does not implement.
pub fn no_region(region: u32, offset: u64, len: usize) -> AccessError {
    AccessError::OutOfBounds {
        region,
        offset,
        len,
    }
}
