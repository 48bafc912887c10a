//! Cached objects in memory, within a byte budget: a weighted `quick_cache`
//! (sharded, S3-FIFO eviction, no background threads), each entry weighed by its
//! body, headers and key.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use http_cache_semantics::CachePolicy;
use prometheus::IntCounter;

use super::stale::StaleWindows;

/// Bytes counted for an entry beyond its body, headers and key: the policy, the
/// `Arc` and the map slot.
const ENTRY_OVERHEAD: u64 = 512;
/// Typical object size, only for sizing the map up front.
const TYPICAL_OBJECT: u64 = 16 * 1024;

/// One cached response: what RFC 9111 needs to reuse it, and its body.
#[derive(Debug)]
pub struct Entry {
    pub policy: CachePolicy,
    pub body: Bytes,
    /// Bytes of the stored response headers, for the weight.
    pub header_bytes: usize,
    /// When it stops being fresh; how long it may then still be served stale.
    pub stale_at: SystemTime,
    pub windows: StaleWindows,
    /// Sent with the ETag on revalidation.
    pub last_modified: Option<axum::http::HeaderValue>,
    /// A fresh hit's headers, ready for requests without directives of their own.
    pub ready: Option<super::hit::Ready>,
}

/// The object store.
pub struct Store {
    cache: quick_cache::sync::Cache<
        String,
        Arc<Entry>,
        Weigher,
        quick_cache::DefaultHashBuilder,
        Evictions,
    >,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("objects", &self.cache.len())
            .field("bytes", &self.cache.weight())
            .finish()
    }
}

impl Store {
    /// A store holding at most `budget` bytes, counting what it evicts in
    /// `evictions`.
    pub fn new(budget: u64, evictions: IntCounter) -> Self {
        let items = usize::try_from((budget / TYPICAL_OBJECT).max(16)).unwrap_or(usize::MAX);
        Self {
            cache: quick_cache::sync::Cache::with(
                items,
                budget,
                Weigher,
                quick_cache::DefaultHashBuilder::default(),
                Evictions(evictions),
            ),
        }
    }

    /// Objects stored.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Bytes stored, as weighed.
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }

    /// The entry under `key`, if any.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.cache.get(key)
    }

    /// Stores (or replaces) an entry; one heavier than the store can hold is
    /// dropped by the cache itself.
    pub fn insert(&self, key: String, entry: Arc<Entry>) {
        self.cache.insert(key, entry);
    }

    /// Forgets an entry.
    pub fn remove(&self, key: &str) {
        self.cache.remove(key);
    }

    /// Forgets every entry whose key `keep` refuses. Visits the whole store, one
    /// shard at a time: not for the request path.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.cache.retain(|key, _| keep(key));
    }
}

/// Counts entries pushed out to make room.
#[derive(Debug, Clone)]
struct Evictions(IntCounter);

impl quick_cache::Lifecycle<String, Arc<Entry>> for Evictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _: &mut Self::RequestState, _: String, _: Arc<Entry>) {
        self.0.inc();
    }
}

/// Weighs an entry by what it holds in memory.
#[derive(Debug, Clone)]
struct Weigher;

impl quick_cache::Weighter<String, Arc<Entry>> for Weigher {
    fn weight(&self, key: &String, entry: &Arc<Entry>) -> u64 {
        ENTRY_OVERHEAD + (key.len() + entry.header_bytes + entry.body.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: usize) -> Arc<Entry> {
        let request = axum::http::Request::new(());
        let response = axum::http::Response::new(());
        Arc::new(Entry {
            policy: CachePolicy::new(&request, &response),
            body: Bytes::from(vec![0; bytes]),
            header_bytes: 0,
            stale_at: SystemTime::now(),
            windows: StaleWindows::default(),
            last_modified: None,
            ready: None,
        })
    }

    #[test]
    fn stays_within_the_budget() {
        let budget = 64 * 1024;
        let evictions = IntCounter::new("evictions", "evictions").expect("counter");
        let store = Store::new(budget, evictions.clone());
        for i in 0..100 {
            store.insert(format!("k{i}"), entry(4096));
        }
        assert!(store.weight() <= budget, "{store:?}");
        assert!(store.len() < 100, "{store:?}");
        assert!(!store.cache.is_empty(), "{store:?}");
        assert_eq!(evictions.get(), 100 - store.len() as u64, "{store:?}");
    }
}
