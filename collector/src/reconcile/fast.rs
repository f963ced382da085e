//! Small helpers for the near-linear sweeps: a cheap hasher for the short
//! string ids used as keys (not DoS-resistant; the keys are our own data),
//! and grouping without one allocation per group.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The Fx hash (as in rustc), eight bytes at a time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fx(u64);

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// Items grouped by a string key, each group in input order, stored flat.
#[derive(Debug)]
pub(crate) struct Groups<'a, T> {
    group_of: FastMap<&'a str, usize>,
    /// Group `g` is `items[offsets[g]..offsets[g + 1]]`.
    offsets: Vec<usize>,
    items: Vec<T>,
}

impl<'a, T: Copy> Groups<'a, T> {
    /// `capacity`: about how many pairs there are.
    pub(crate) fn new(pairs: impl Iterator<Item = (&'a str, T)>, capacity: usize) -> Self {
        let mut group_of: FastMap<&'a str, usize> =
            FastMap::with_capacity_and_hasher(capacity, Default::default());
        let mut tagged: Vec<(usize, T)> = Vec::with_capacity(capacity);
        for (key, item) in pairs {
            let next = group_of.len();
            let g = *group_of.entry(key).or_insert(next);
            tagged.push((g, item));
        }
        // Stable: each group keeps the input order.
        tagged.sort_by_key(|&(g, _)| g);
        let mut offsets = vec![0; group_of.len() + 1];
        for &(g, _) in &tagged {
            offsets[g + 1] += 1;
        }
        for g in 0..group_of.len() {
            offsets[g + 1] += offsets[g];
        }
        Self {
            group_of,
            offsets,
            items: tagged.into_iter().map(|(_, t)| t).collect(),
        }
    }

    /// The items with `key`, in input order (empty when none).
    pub(crate) fn get(&self, key: &str) -> &[T] {
        match self.group_of.get(key) {
            Some(&g) => &self.items[self.offsets[g]..self.offsets[g + 1]],
            None => &[],
        }
    }
}
