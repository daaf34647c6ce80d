//! Register words the device shares with its client as plain memory (vfio-user sparse-mmap
//! areas). The guest stores to them without trapping; the device and the dataplane read and
//! write them atomically. Where they live (a memfd mapping in production, a boxed slice in
//! tests or when the page traps) is the caller's choice, so the models stay free of `unsafe`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub use emu_guest_mem::WordBacking;

#[derive(Debug)]
struct Owned(Box<[AtomicU32]>);

impl WordBacking for Owned {
    fn words(&self) -> &[AtomicU32] {
        &self.0
    }
}

/// A handle on a window of shared register words. Indexes out of range read as 0 and ignore
/// writes.
#[derive(Clone, Debug)]
pub struct SharedWords {
    backing: Arc<dyn WordBacking>,
    start: usize,
    len: usize,
}

/// No words (every load reads 0).
impl Default for SharedWords {
    fn default() -> Self {
        SharedWords::owned(0)
    }
}

impl SharedWords {
    /// `n` zeroed words in ordinary process memory.
    pub fn owned(n: usize) -> Self {
        let backing = Arc::new(Owned((0..n).map(|_| AtomicU32::new(0)).collect()));
        SharedWords {
            backing,
            start: 0,
            len: n,
        }
    }

    /// Words `[start, start + len)` of caller-provided memory (e.g. a memfd mapping offered
    /// to the client); clipped to what the backing holds.
    pub fn window(backing: Arc<dyn WordBacking>, start: usize, len: usize) -> Self {
        let total = backing.words().len();
        let start = start.min(total);
        let len = len.min(total - start);
        SharedWords {
            backing,
            start,
            len,
        }
    }

    /// The window as atomics, for callers that read several words at once.
    pub fn words(&self) -> &[AtomicU32] {
        self.backing
            .words()
            .get(self.start..self.start + self.len)
            .unwrap_or(&[])
    }

    /// Words `[start, start + len)` of this window, as a window of its own (clipped).
    pub fn sub(&self, start: usize, len: usize) -> SharedWords {
        let start = start.min(self.len);
        SharedWords {
            backing: self.backing.clone(),
            start: self.start + start,
            len: len.min(self.len - start),
        }
    }

    /// One window over `self` and `other` when both view the same memory: the window and
    /// where `self` and `other` start in it. Lets a reader load words of both with one
    /// [`words`](Self::words) call (a hot path's lock-free look at two register pages).
    pub fn span(&self, other: &SharedWords) -> Option<(SharedWords, usize, usize)> {
        if !Arc::ptr_eq(&self.backing, &other.backing) {
            return None;
        }
        let start = self.start.min(other.start);
        let end = (self.start + self.len).max(other.start + other.len);
        let joint = SharedWords {
            backing: self.backing.clone(),
            start,
            len: end - start,
        };
        Some((joint, self.start - start, other.start - start))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Acquire load: descriptor memory the client wrote before this word is visible after it.
    pub fn load(&self, i: usize) -> u32 {
        self.words().get(i).map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// Release store: everything written before is visible to a client that reads this word.
    pub fn store(&self, i: usize, v: u32) {
        if let Some(w) = self.words().get(i) {
            w.store(v, Ordering::Release);
        }
    }

    /// Atomically reads word `i` and leaves 0 in its place: consumes what the client stored
    /// into a write-only "event" register (e.g. a write-1-to-set mask register) since the last
    /// take. A store that races with the take is either returned now or left for the next one.
    pub fn take(&self, i: usize) -> u32 {
        self.words()
            .get(i)
            .map_or(0, |w| w.swap(0, Ordering::AcqRel))
    }

    /// Atomically ORs `v` into word `i` (a trapped write to an event register, merged with
    /// whatever the client stored there without trapping).
    pub fn or(&self, i: usize, v: u32) {
        if let Some(w) = self.words().get(i) {
            w.fetch_or(v, Ordering::AcqRel);
        }
    }

    /// Zeroes every word (reset).
    pub fn clear(&self) {
        for w in self.words() {
            w.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_is_harmless() {
        let w = SharedWords::owned(4);
        w.store(3, 7);
        w.store(4, 9);
        assert_eq!(w.load(3), 7);
        assert_eq!(w.load(4), 0);
        assert_eq!(w.load(usize::MAX), 0);
        w.clear();
        assert_eq!(w.load(3), 0);
    }

    #[test]
    fn take_consumes_and_or_merges() {
        let w = SharedWords::owned(2);
        w.store(0, 0b010);
        w.or(0, 0b100);
        assert_eq!(w.take(0), 0b110);
        assert_eq!(w.take(0), 0, "taken words read 0");
        assert_eq!(w.take(9), 0, "out of range");
        w.or(9, 1);
    }

    #[test]
    fn sub_windows_and_their_span() {
        let all = SharedWords::owned(8);
        let (a, b) = (all.sub(1, 2), all.sub(5, 10));
        assert_eq!((a.len(), b.len()), (2, 3), "clipped to the parent");
        b.store(0, 9);
        assert_eq!(all.load(5), 9);
        let (joint, at_a, at_b) = a.span(&b).expect("same memory");
        assert_eq!((joint.len(), at_a, at_b), (7, 0, 4));
        assert_eq!(joint.load(at_b), 9);
        assert!(a.span(&SharedWords::owned(8)).is_none(), "other memory");
    }

    #[test]
    fn window_is_clipped() {
        let all = SharedWords::owned(8);
        let win = SharedWords::window(all.backing.clone(), 6, 10);
        assert_eq!(win.len(), 2);
        win.store(1, 5);
        assert_eq!(all.load(7), 5);
        assert_eq!(SharedWords::window(all.backing.clone(), 100, 1).len(), 0);
    }
}
