//! Fixed-size bitsets used by the switch: ports (pools), MTA hashes and VLAN IDs.
//!
//! All of them are plain arrays of `u64` words, so they are `Copy`-cheap to clear, never
//! allocate, and out-of-range members are ignored rather than panicking (callers pass
//! guest-derived numbers through here).

use std::fmt;

use super::MAX_PORTS;

const PORT_WORDS: usize = MAX_PORTS / 64;

/// A set of switch ports (pool indexes `0..MAX_PORTS`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PortSet {
    words: [u64; PORT_WORDS],
}

impl PortSet {
    /// The empty set.
    pub const EMPTY: Self = Self {
        words: [0; PORT_WORDS],
    };

    /// Adds `p`; ports `>= MAX_PORTS` are ignored.
    pub fn insert(&mut self, p: usize) {
        if let Some(w) = self.words.get_mut(p / 64) {
            *w |= 1 << (p % 64);
        }
    }

    /// Removes `p`; ports `>= MAX_PORTS` are ignored.
    pub fn remove(&mut self, p: usize) {
        if let Some(w) = self.words.get_mut(p / 64) {
            *w &= !(1 << (p % 64));
        }
    }

    /// Whether `p` is a member; always false for ports `>= MAX_PORTS`.
    pub fn contains(&self, p: usize) -> bool {
        self.words
            .get(p / 64)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Removes every member.
    pub fn clear(&mut self) {
        self.words = [0; PORT_WORDS];
    }

    /// Adds every member of `other`.
    pub fn union_with(&mut self, other: &Self) {
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a |= b;
        }
    }

    /// Members in ascending order.
    pub fn iter(&self) -> PortIter {
        PortIter {
            words: self.words,
            word: 0,
        }
    }

    /// The only member when the set has exactly one (the unicast fast path).
    pub fn single(&self) -> Option<usize> {
        let mut found = None;
        for (i, &w) in self.words.iter().enumerate() {
            if w == 0 {
                continue;
            }
            if found.is_some() || w & (w - 1) != 0 {
                return None;
            }
            found = Some(i * 64 + w.trailing_zeros() as usize);
        }
        found
    }
}

/// Iterator over a [`PortSet`]'s members, ascending (a copy of the set, so no borrow).
#[derive(Clone, Debug)]
pub struct PortIter {
    words: [u64; PORT_WORDS],
    word: usize,
}

impl Iterator for PortIter {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while let Some(w) = self.words.get_mut(self.word) {
            if *w != 0 {
                let bit = w.trailing_zeros() as usize;
                *w &= *w - 1;
                return Some(self.word * 64 + bit);
            }
            self.word += 1;
        }
        None
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<usize> for PortSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut s = Self::EMPTY;
        for p in iter {
            s.insert(p);
        }
        s
    }
}

/// 4096 bits indexed by a 12-bit value; the storage behind [`MtaSet`] and [`VlanSet`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Bits4096([u64; 64]);

impl Bits4096 {
    const EMPTY: Self = Self([0; 64]);

    // Values are masked to 12 bits, matching how the hardware uses only VID b0-11 and the low
    // 12 bits of an MTA hash, so no guest value can index out of range.
    fn insert(&mut self, v: u16) {
        let v = usize::from(v & 0xfff);
        self.0[v / 64] |= 1 << (v % 64);
    }

    fn remove(&mut self, v: u16) {
        let v = usize::from(v & 0xfff);
        self.0[v / 64] &= !(1 << (v % 64));
    }

    fn contains(&self, v: u16) -> bool {
        let v = usize::from(v & 0xfff);
        self.0[v / 64] & (1 << (v % 64)) != 0
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0u16..4096).filter(|v| self.contains(*v))
    }
}

macro_rules! bits4096_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(Bits4096);

        impl $name {
            /// The empty set.
            pub const EMPTY: Self = Self(Bits4096::EMPTY);

            #[doc = concat!("Adds a ", $what, "; only its low 12 bits are used.")]
            pub fn insert(&mut self, v: u16) {
                self.0.insert(v)
            }

            #[doc = concat!("Removes a ", $what, "; only its low 12 bits are used.")]
            pub fn remove(&mut self, v: u16) {
                self.0.remove(v)
            }

            #[doc = concat!("Whether a ", $what, " is a member; only its low 12 bits are used.")]
            pub fn contains(&self, v: u16) -> bool {
                self.0.contains(v)
            }

            /// Whether the set has no member.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            /// Number of members.
            pub fn len(&self) -> usize {
                self.0.len()
            }

            /// Removes every member.
            pub fn clear(&mut self) {
                *self = Self::EMPTY;
            }

            /// Members in ascending order (control path: scans all 4096 values).
            pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
                self.0.iter()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::EMPTY
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_set().entries(self.iter()).finish()
            }
        }

        impl FromIterator<u16> for $name {
            fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
                let mut s = Self::EMPTY;
                for v in iter {
                    s.insert(v);
                }
                s
            }
        }
    };
}

bits4096_newtype!(
    /// A pool's multicast filter: the set of 12-bit MTA hashes (see [`super::mta_hash`]) that
    /// igbvf sent with SET_MULTICAST (devices.md §2.5). Per pool, unlike the 82576's global
    /// MTA, so one VF's groups do not leak into another's (devices.md §4.4).
    MtaSet,
    "12-bit MTA hash"
);

bits4096_newtype!(
    /// A pool's VLAN membership: the set of 12-bit VLAN IDs (the VLVF entries whose POOLSEL
    /// names this pool, devices.md §4.1).
    VlanSet,
    "VLAN ID"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_set_basics_and_out_of_range() {
        let mut s = PortSet::default();
        assert!(s.is_empty());
        for p in [0, 63, 64, 200, MAX_PORTS - 1] {
            s.insert(p);
        }
        s.insert(MAX_PORTS);
        s.insert(usize::MAX);
        assert!(!s.contains(MAX_PORTS));
        assert!(!s.contains(usize::MAX));
        assert_eq!(s.len(), 5);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![0, 63, 64, 200, MAX_PORTS - 1]
        );
        s.remove(63);
        s.remove(usize::MAX);
        assert!(!s.contains(63));
        assert_eq!(s.len(), 4);
        let mut t: PortSet = [1, 2].into_iter().collect();
        t.union_with(&s);
        assert_eq!(t.len(), 6);
        t.clear();
        assert!(t.is_empty());
    }

    #[test]
    fn bits4096_masks_to_12_bits() {
        let mut v = VlanSet::default();
        v.insert(0x1005); // only VID b0-11 count: 5
        assert!(v.contains(5));
        assert!(v.contains(0xf005));
        assert_eq!(v.len(), 1);
        v.insert(4095);
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![5, 4095]);
        v.remove(5);
        assert!(!v.contains(5));
        let m: MtaSet = [0x010, 0xfff].into_iter().collect();
        assert!(m.contains(0x010) && m.contains(0xfff) && !m.contains(0));
        assert_eq!(format!("{m:?}"), "{16, 4095}");
    }
}
