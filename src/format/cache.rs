//! A bounded cache of parsed templates. Templates repeat and args change, so a template
//! is parsed once per thread and reused. Bounded in entries and in bytes, so a stream of
//! unique templates (every message verbatim-distinct) costs a fixed amount of memory.
//!
//! Thread-local on purpose: formatting is synchronous and runs on one thread from start to
//! finish, so there is no lock on the hot path and nothing shared to leave half-updated.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// Default bound on cached templates per thread and style.
pub const DEFAULT_MAX_ENTRIES: usize = 1024;
/// Default bound on the bytes (template text + parsed form) cached per thread and style.
pub const DEFAULT_MAX_BYTES: usize = 4 << 20;
/// Templates longer than this are parsed every time rather than cached: they are rare and
/// would crowd out the ones that repeat.
pub const MAX_CACHED_TEMPLATE_BYTES: usize = 4 << 10;

/// A FIFO-evicting map from (template, field limit) to its parsed form.
#[derive(Debug)]
pub struct TemplateCache<K, T> {
    map: HashMap<K, (Arc<T>, usize), KeyedState>,
    order: VecDeque<K>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<K: Hash + Eq + Clone, T> TemplateCache<K, T> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        TemplateCache {
            map: HashMap::with_hasher(KeyedState::new()),
            order: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<Arc<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_ref(key).map(Arc::clone)
    }

    /// The cached value, borrowed: a hit costs no reference count.
    pub fn get_ref<Q>(&self, key: &Q) -> Option<&Arc<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|(t, _)| t)
    }

    /// Inserts `value` costing `bytes`, evicting the oldest entries to stay in bounds.
    /// Values that alone exceed the byte bound are not cached.
    pub fn insert(&mut self, key: K, value: Arc<T>, bytes: usize) {
        if bytes > self.max_bytes || self.max_entries == 0 || self.map.contains_key(&key) {
            return;
        }
        while self.map.len() >= self.max_entries || self.bytes + bytes > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, b)) = self.map.remove(&old) {
                self.bytes -= b;
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, (value, bytes));
        self.bytes += bytes;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes accounted to the cached entries.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Hashes the cache keys: a multiply-fold hash over 16-byte blocks under random keys.
/// std's SipHash was a fifth of a cached render; this costs a few multiplies per template.
/// The keys are drawn from std's `RandomState`, so colliding templates cannot be prepared
/// in advance, and the cache is bounded in entries anyway: a collision costs probes, never
/// memory.
#[derive(Clone, Debug)]
pub struct KeyedState {
    seed: u64,
    key: u64,
}

impl KeyedState {
    pub fn new() -> KeyedState {
        let s = RandomState::new();
        KeyedState {
            seed: s.hash_one(0u8),
            key: s.hash_one(1u8),
        }
    }
}

impl Default for KeyedState {
    fn default() -> Self {
        KeyedState::new()
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;

    #[inline]
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            acc: self.seed,
            key: self.key,
        }
    }
}

/// The hasher of [`KeyedState`].
#[derive(Clone, Debug)]
pub struct KeyedHasher {
    acc: u64,
    key: u64,
}

/// An odd constant with well-spread bits (the fractional part of pi).
const SPREAD: u64 = 0x243f_6a88_85a3_08d3;

/// The high and low halves of the full product, folded: every input bit reaches the result.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for KeyedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // The length goes in first, so the overlapping reads below cannot make two keys of
        // different lengths alike.
        let len = bytes.len();
        let mut acc = fold_mul(self.acc ^ len as u64, SPREAD);
        if len > 16 {
            let mut at = 0;
            while at + 16 < len {
                acc = self.mix(acc, word(bytes, at), word(bytes, at + 8));
                at += 16;
            }
            // The last 16 bytes, overlapping the block before when the length is uneven.
            acc = self.mix(acc, word(bytes, len - 16), word(bytes, len - 8));
        } else if len >= 8 {
            acc = self.mix(acc, word(bytes, 0), word(bytes, len - 8));
        } else if len >= 4 {
            acc = self.mix(acc, half_word(bytes, 0), half_word(bytes, len - 4));
        } else if len > 0 {
            let lo = u64::from(bytes[0]) | u64::from(bytes[len / 2]) << 8;
            acc = self.mix(acc, lo, u64::from(bytes[len - 1]));
        }
        self.acc = acc;
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.acc = fold_mul(self.acc ^ u64::from(i), self.key ^ SPREAD);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold_mul(self.acc, self.key.rotate_left(32) | 1)
    }
}

impl KeyedHasher {
    #[inline]
    fn mix(&self, acc: u64, a: u64, b: u64) -> u64 {
        fold_mul(a ^ acc, b ^ self.key)
    }
}

/// The 4 bytes of `bytes` at `at`, little-endian (the caller keeps them in range).
#[inline]
fn half_word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    if let Some(b) = bytes.get(at..at + 4) {
        w.copy_from_slice(b);
    }
    u64::from(u32::from_le_bytes(w))
}

/// The 8 bytes of `bytes` at `at`, little-endian (the caller keeps them in range).
#[inline]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(b) = bytes.get(at..at + 8) {
        w.copy_from_slice(b);
    }
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_evicts_oldest_when_entries_are_full() {
        let mut c = TemplateCache::new(2, 1000);
        c.insert("a", Arc::new(1), 10);
        c.insert("b", Arc::new(2), 10);
        c.insert("c", Arc::new(3), 10);
        assert_eq!(c.len(), 2);
        assert!(c.get(&"a").is_none());
        assert_eq!(c.get(&"c").as_deref(), Some(&3));
    }

    #[test]
    fn cache_stays_under_its_byte_bound() {
        let mut c = TemplateCache::new(100, 100);
        for i in 0..50 {
            c.insert(i, Arc::new(i), 30);
            assert!(c.bytes() <= 100);
        }
        c.insert(1000, Arc::new(0), 101);
        assert!(
            c.get(&1000).is_none(),
            "an entry bigger than the bound is not cached"
        );
    }

    #[test]
    fn keyed_hash_tells_apart_keys_that_differ_in_one_place_or_length() {
        let state = KeyedState::new();
        let keys = [
            "",
            "\0",
            "a",
            "a\0",
            "user %s logged in from %s",
            "user %s logged in from %d",
        ];
        let hashes: std::collections::HashSet<u64> =
            keys.iter().map(|k| state.hash_one(k)).collect();
        assert_eq!(hashes.len(), keys.len());
        for len in 1..40 {
            let key = "x".repeat(len);
            for at in 0..len {
                let mut other = key.clone();
                other.replace_range(at..at + 1, "y");
                assert_ne!(state.hash_one(&key), state.hash_one(&other), "{len} {at}");
            }
        }
    }
}
