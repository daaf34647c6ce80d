//! Interrupt eventfds a client hands over (vfio-user SET_IRQS binds them); the dataplane
//! raises vector `i` with [`IrqSet::fire`], straight from its poll loop.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::fd;

/// Per-vector MSI-X eventfds of one VF. Shared between the server thread (binds) and the
/// dataplane (fires).
#[derive(Debug)]
pub struct IrqSet {
    vectors: RwLock<Vec<Option<OwnedFd>>>,
    fired: Vec<AtomicU64>,
}

impl IrqSet {
    /// An empty set for `msix_vectors` vectors.
    pub fn new(msix_vectors: u32) -> IrqSet {
        let n = msix_vectors as usize;
        IrqSet {
            vectors: RwLock::new((0..n).map(|_| None).collect()),
            fired: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Vec<Option<OwnedFd>>> {
        self.vectors.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vec<Option<OwnedFd>>> {
        self.vectors.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of vectors.
    pub fn len(&self) -> u32 {
        self.fired.len() as u32
    }

    /// True when the set has no vectors at all.
    pub fn is_empty(&self) -> bool {
        self.fired.is_empty()
    }

    /// Raises `vector`: adds 1 to its eventfd. False if the vector is out of range, unbound,
    /// or the write failed. Never blocks (the fd is made non-blocking when bound), never
    /// allocates.
    pub fn fire(&self, vector: u32) -> bool {
        let v = self.read();
        let Some(Some(fd)) = v.get(vector as usize) else {
            return false;
        };
        if fd::eventfd_write(fd.as_fd(), 1).is_err() {
            return false;
        }
        if let Some(c) = self.fired.get(vector as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// How often `vector` was fired successfully (0 when out of range).
    pub fn fired(&self, vector: u32) -> u64 {
        self.fired
            .get(vector as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Whether `vector` has an eventfd.
    pub fn is_bound(&self, vector: u32) -> bool {
        matches!(self.read().get(vector as usize), Some(Some(_)))
    }

    /// Binds `fds` to vectors `start..start+fds.len()`; `None` entries unbind. The caller
    /// has checked the range; out-of-range entries are dropped (closed).
    pub fn bind(&self, start: u32, fds: Vec<Option<OwnedFd>>) {
        for fd in fds.iter().flatten() {
            // A blocking eventfd (or a full pipe posing as one) must never stall `fire`.
            // O_NONBLOCK is shared with the client's copy; QEMU's notifiers are already
            // non-blocking, so this changes nothing for it.
            if let Err(e) = fd::set_nonblocking(fd.as_fd()) {
                tracing::warn!(error = %e, "could not make an MSI-X eventfd non-blocking");
            }
        }
        let mut v = self.write();
        for (i, fd) in fds.into_iter().enumerate() {
            let Some(slot) = (start as usize)
                .checked_add(i)
                .and_then(|idx| v.get_mut(idx))
            else {
                break;
            };
            *slot = fd;
        }
    }

    /// Unbinds every vector (SET_IRQS disable, client disconnect).
    pub fn clear(&self) {
        let old: Vec<Option<OwnedFd>> = {
            let mut v = self.write();
            v.iter_mut().map(Option::take).collect()
        };
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_unbound_out_of_range_and_bound() {
        let s = IrqSet::new(3);
        assert!(!s.fire(0));
        assert!(!s.fire(3));
        assert!(!s.fire(u32::MAX));
        let e = fd::eventfd().unwrap();
        let e2 = e.try_clone().unwrap();
        s.bind(1, vec![Some(e)]);
        assert!(s.is_bound(1));
        assert!(s.fire(1) && s.fire(1));
        assert_eq!(fd::eventfd_read(e2.as_fd()).unwrap(), 2);
        assert_eq!(s.fired(1), 2);
        assert_eq!(s.fired(0), 0);
        assert_eq!(s.fired(99), 0);
        s.bind(1, vec![None]);
        assert!(!s.fire(1));
        // Binding beyond the end drops the extra fds instead of panicking.
        s.bind(
            2,
            vec![Some(fd::eventfd().unwrap()), Some(fd::eventfd().unwrap())],
        );
        assert!(s.is_bound(2));
        s.clear();
        assert!(!s.is_bound(2));
    }
}
