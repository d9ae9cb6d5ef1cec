//! Metric names and handles of the read cache. Handles are resolved once, so the hot
//! path increments an atomic instead of looking a name up.

use metrics::{Counter, Gauge, counter, gauge};

/// Counter: reads answered from a fresh entry.
pub const HITS_TOTAL: &str = "surge_cache_hits_total";
/// Counter: reads that found no entry.
pub const MISSES_TOTAL: &str = "surge_cache_misses_total";
/// Counter: reads answered from an entry in its stale window.
pub const STALE_TOTAL: &str = "surge_cache_stale_total";
/// Counter: reads answered from a stale entry because the store failed.
pub const STALE_IF_ERROR_TOTAL: &str = "surge_cache_stale_if_error_total";
/// Counter: misses that waited for another caller's load instead of loading.
pub const COALESCED_TOTAL: &str = "surge_cache_coalesced_total";
/// Counter: background refreshes started.
pub const REFRESHES_TOTAL: &str = "surge_cache_refreshes_total";
/// Counter: reads that found an expired entry and reloaded it.
pub const EXPIRED_TOTAL: &str = "surge_cache_expired_total";
/// Counter: bytes evicted to stay under the budget.
pub const EVICTED_BYTES_TOTAL: &str = "surge_cache_evicted_bytes_total";
/// Gauge: bytes held.
pub const WEIGHT_BYTES: &str = "surge_cache_weight_bytes";
/// Gauge: entries held.
pub const ENTRIES: &str = "surge_cache_entries";

pub(crate) struct CacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub stale: Counter,
    pub stale_if_error: Counter,
    pub coalesced: Counter,
    pub refreshes: Counter,
    pub expired: Counter,
    pub evicted_bytes: Counter,
    pub weight_bytes: Gauge,
    pub entries: Gauge,
}

impl CacheMetrics {
    pub fn new() -> Self {
        CacheMetrics {
            hits: counter!(HITS_TOTAL),
            misses: counter!(MISSES_TOTAL),
            stale: counter!(STALE_TOTAL),
            stale_if_error: counter!(STALE_IF_ERROR_TOTAL),
            coalesced: counter!(COALESCED_TOTAL),
            refreshes: counter!(REFRESHES_TOTAL),
            expired: counter!(EXPIRED_TOTAL),
            evicted_bytes: counter!(EVICTED_BYTES_TOTAL),
            weight_bytes: gauge!(WEIGHT_BYTES),
            entries: gauge!(ENTRIES),
        }
    }
}
