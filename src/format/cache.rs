//! A bounded cache of parsed templates. Templates repeat and args change, so a template
//! is parsed once per thread and reused. Bounded in entries and in bytes, so a stream of
//! unique templates (every message verbatim-distinct) costs a fixed amount of memory.
//!
//! Thread-local on purpose: formatting is synchronous and runs on one thread from start to
//! finish, so there is no lock on the hot path and nothing shared to leave half-updated.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
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
    map: HashMap<K, (Arc<T>, usize)>,
    order: VecDeque<K>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<K: Hash + Eq + Clone, T> TemplateCache<K, T> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        TemplateCache {
            map: HashMap::new(),
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
        self.map.get(key).map(|(t, _)| Arc::clone(t))
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
}
