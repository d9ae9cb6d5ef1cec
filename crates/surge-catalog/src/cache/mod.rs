//! The read cache: ready-to-send views in memory, bounded by bytes.
//!
//! - A miss loads from the view store; concurrent misses for one key wait on a single
//!   load (quick_cache placeholders).
//! - Each entry lives `ttl` (± jitter, so a cache filled at start does not expire all at
//!   once). In the last `stale` part of its life a read still gets the cached bytes and
//!   starts exactly one background refresh. Past its life the next read reloads; if
//!   the store fails, the old entry is served (stale-if-error) and kept for
//!   `error_backoff` before the store is tried again.
//! - Unknown keys are cached as absent for `negative_ttl`, so 404 floods do not reach
//!   the store.
//! - The projector writes through ([`ViewCache::write_through`]): entries present are
//!   replaced at once, so an update is visible without waiting for a TTL.
//! - Product views are loaded from the view store. Offers views are not stored at all:
//!   a miss builds them from the offers table (one indexed read and a small document),
//!   which keeps an offer update to two row writes (the offer and its outbox entry).
//!
//! ## Why the epochs
//! A loader may read a view from the store just before the projector commits a newer
//! one, and insert it after the projector's write-through found no entry to replace;
//! the old bytes would then live for a whole TTL. Each key hashes to an epoch slot that
//! the projector makes odd before it commits and even after it has written through (a
//! seqlock). A load is kept only if its slot was even and unchanged around the store
//! read; otherwise it is retried.

mod config;
mod metrics;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, Weighter};
use surge_store::{CatalogStore, StoreError};
use tokio::time::Instant;

pub use config::CacheConfig;
use metrics::CacheMetrics;

use crate::views::render::offers_document;
use crate::views::{self, View};

const EPOCH_SLOTS: usize = 1 << 14;
const LOAD_ATTEMPTS: usize = 4;

/// One cached lookup: the view, or the knowledge that there is none.
#[derive(Debug)]
pub struct Entry {
    /// The view, `None` when the key does not exist.
    pub view: Option<View>,
    fresh_until: Instant,
    expires_at: Instant,
    refreshing: AtomicBool,
}

impl Entry {
    fn weight(&self, key: &str) -> u64 {
        (key.len() + self.view.as_ref().map_or(64, View::weight)) as u64
    }
}

#[derive(Clone)]
struct EntryWeighter;

impl Weighter<String, Arc<Entry>> for EntryWeighter {
    fn weight(&self, key: &String, val: &Arc<Entry>) -> u64 {
        val.weight(key)
    }
}

#[derive(Clone)]
struct EvictionCounter(::metrics::Counter);

impl Lifecycle<String, Arc<Entry>> for EvictionCounter {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), key: String, val: Arc<Entry>) {
        self.0.increment(val.weight(&key));
    }
}

type Inner = Cache<String, Arc<Entry>, EntryWeighter, RandomState, EvictionCounter>;

struct Shared {
    cache: Inner,
    store: Arc<dyn CatalogStore>,
    config: CacheConfig,
    gzip_level: u32,
    epochs: Box<[AtomicU64]>,
    hasher: RandomState,
    metrics: CacheMetrics,
}

/// A cheap, cloneable handle to the read cache.
#[derive(Clone)]
pub struct ViewCache {
    shared: Arc<Shared>,
}

impl ViewCache {
    /// A cache over `store`, sized and timed by `config`.
    pub fn new(store: Arc<dyn CatalogStore>, config: CacheConfig, gzip_level: u32) -> Self {
        let metrics = CacheMetrics::new();
        // quick_cache wants an item estimate; product views are ~25-30 KB in memory.
        let estimated_items = (config.max_bytes / 16_384).clamp(64, 10_000_000) as usize;
        let cache = Cache::with(
            estimated_items,
            config.max_bytes,
            EntryWeighter,
            RandomState::new(),
            EvictionCounter(metrics.evicted_bytes.clone()),
        );
        let epochs = (0..EPOCH_SLOTS).map(|_| AtomicU64::new(0)).collect();
        ViewCache {
            shared: Arc::new(Shared {
                cache,
                store,
                config,
                gzip_level,
                epochs,
                hasher: RandomState::new(),
                metrics,
            }),
        }
    }

    /// The entry for `key`: from memory when possible, else loaded once for all callers.
    pub async fn get(&self, key: &str) -> Result<Arc<Entry>, StoreError> {
        let s = &self.shared;
        let now = Instant::now();
        if let Some(entry) = s.cache.get(key) {
            if now < entry.fresh_until {
                s.metrics.hits.increment(1);
                return Ok(entry);
            }
            if now < entry.expires_at {
                s.metrics.stale.increment(1);
                self.refresh_in_background(key, &entry);
                return Ok(entry);
            }
            s.metrics.expired.increment(1);
            s.cache.remove_if(key, |v| Arc::ptr_eq(v, &entry));
            return self.load_coalesced(key, Some(entry)).await;
        }
        s.metrics.misses.increment(1);
        self.load_coalesced(key, None).await
    }

    async fn load_coalesced(
        &self,
        key: &str,
        old: Option<Arc<Entry>>,
    ) -> Result<Arc<Entry>, StoreError> {
        let s = &self.shared;
        match s.cache.get_value_or_guard_async(key).await {
            Ok(entry) => {
                s.metrics.coalesced.increment(1);
                Ok(entry)
            }
            Err(guard) => match self.load(key).await {
                Ok(entry) => {
                    let _ = guard.insert(entry.clone());
                    Ok(entry)
                }
                Err(e) => match old {
                    Some(old) if old.view.is_some() => {
                        s.metrics.stale_if_error.increment(1);
                        tracing::warn!(key, error = %e, "store failed; serving the stale entry");
                        let kept = Arc::new(Entry {
                            view: old.view.clone(),
                            fresh_until: Instant::now(),
                            expires_at: Instant::now() + s.config.error_backoff(),
                            refreshing: AtomicBool::new(true),
                        });
                        let _ = guard.insert(kept.clone());
                        Ok(kept)
                    }
                    _ => Err(e),
                },
            },
        }
    }

    fn refresh_in_background(&self, key: &str, entry: &Arc<Entry>) {
        if entry.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.metrics.refreshes.increment(1);
        let this = self.clone();
        let key = key.to_owned();
        let old = entry.clone();
        tokio::spawn(async move {
            match this.load(&key).await {
                Ok(fresh) => {
                    // Replace only the entry we refreshed: the projector may have
                    // written a newer one meanwhile.
                    let s = &this.shared;
                    if s.cache.get(&key).is_some_and(|cur| Arc::ptr_eq(&cur, &old)) {
                        s.cache.insert(key, fresh);
                    }
                }
                Err(e) => {
                    this.shared.metrics.stale_if_error.increment(1);
                    tracing::warn!(key, error = %e, "background refresh failed; keeping the stale entry");
                }
            }
        });
    }

    /// Reads `key` from the store, retrying while the projector is writing its slot.
    async fn load(&self, key: &str) -> Result<Arc<Entry>, StoreError> {
        let s = &self.shared;
        let slot = &s.epochs[self.slot(key)];
        for _ in 0..LOAD_ATTEMPTS {
            let before = slot.load(Ordering::Acquire);
            let view = self.read_view(key).await?;
            if before.is_multiple_of(2) && slot.load(Ordering::Acquire) == before {
                return Ok(self.make_entry(key, view, None));
            }
            tokio::task::yield_now().await;
        }
        // Writes keep racing this key: keep what we read only briefly.
        let view = self.read_view(key).await?;
        Ok(self.make_entry(key, view, Some(Duration::from_millis(500))))
    }

    /// Reads a view from its source: the offers table for offers keys, the view store
    /// for everything else.
    async fn read_view(&self, key: &str) -> Result<Option<View>, StoreError> {
        let s = &self.shared;
        if let Some((format, id, market)) = views::parse_offers_key(key) {
            let offers = s.store.offers_for(id, market).await?;
            return Ok((!offers.is_empty()).then(|| {
                View::build(
                    Bytes::from(offers_document(format, id, market, &offers)),
                    s.gzip_level,
                )
            }));
        }
        Ok(s.store
            .get_view(key)
            .await?
            .and_then(|sv| match View::from_stored(&sv) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::error!(key, error = %e, "unreadable stored view; treating as absent");
                    None
                }
            }))
    }

    fn make_entry(&self, key: &str, view: Option<View>, life: Option<Duration>) -> Arc<Entry> {
        let c = &self.shared.config;
        let now = Instant::now();
        let (fresh, total) = match (&view, life) {
            (_, Some(life)) => (life, life),
            (None, None) => (c.negative_ttl(), c.negative_ttl()),
            (Some(_), None) => {
                let ttl = c.ttl().mul_f64(1.0 + c.jitter_ratio * self.jitter(key));
                (ttl.saturating_sub(c.stale()), ttl)
            }
        };
        Arc::new(Entry {
            view,
            fresh_until: now + fresh,
            expires_at: now + total,
            refreshing: AtomicBool::new(false),
        })
    }

    /// A value in [-1, 1) from the key and the clock, spreading expiries.
    fn jitter(&self, key: &str) -> f64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), u64::from(nanos));
        (h >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    fn slot(&self, key: &str) -> usize {
        (self.shared.hasher.hash_one(key) as usize) % EPOCH_SLOTS
    }

    /// Projector side: marks `keys` as being written (call before committing).
    pub fn begin_write<'a>(&self, keys: impl Iterator<Item = &'a str>) -> WriteTicket {
        let mut slots: Vec<usize> = keys.map(|k| self.slot(k)).collect();
        slots.sort_unstable();
        slots.dedup();
        for &i in &slots {
            self.shared.epochs[i].fetch_add(1, Ordering::AcqRel);
        }
        WriteTicket {
            cache: self.clone(),
            slots,
        }
    }

    /// Projector side: after commit, replaces the entries present with the new views
    /// (`None`: the key no longer exists).
    pub fn write_through(&self, key: String, view: Option<View>) {
        let entry = self.make_entry(&key, view, None);
        let _ = self.shared.cache.replace(key, entry, false);
    }

    /// Whether `key` has an entry (fresh or not), without counting a read.
    pub fn contains(&self, key: &str) -> bool {
        self.shared.cache.contains_key(key)
    }

    /// Drops the entry of `key`, if any.
    pub fn forget(&self, key: &str) {
        self.shared.cache.remove(key);
    }

    /// Bytes held now.
    pub fn weight(&self) -> u64 {
        self.shared.cache.weight()
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shared.cache.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.shared.cache.is_empty()
    }

    /// Publishes the size gauges (called by the metrics endpoint).
    pub fn publish_gauges(&self) {
        self.shared.metrics.weight_bytes.set(self.weight() as f64);
        self.shared.metrics.entries.set(self.len() as f64);
    }
}

/// Slots marked by [`ViewCache::begin_write`]; dropping it (after the commit and the
/// write-through, or on failure) makes them even again.
pub struct WriteTicket {
    cache: ViewCache,
    slots: Vec<usize>,
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        for &i in &self.slots {
            self.cache.shared.epochs[i].fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests;
