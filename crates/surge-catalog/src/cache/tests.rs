//! Read-cache behaviour on a real SQLite store, with paused tokio time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use surge_store::{CatalogStore, StoreOptions, ViewBatch, ViewPut};

use super::*;
use crate::views::View;

struct Fixture {
    store: Arc<dyn CatalogStore>,
    cache: ViewCache,
    snap: Snapshotter,
    totals: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    _dir: tempfile::TempDir,
    _guard: ::metrics::LocalRecorderGuard<'static>,
}

fn config() -> CacheConfig {
    CacheConfig {
        jitter_ratio: 0.0,
        ..CacheConfig::default()
    }
}

async fn fixture(config: CacheConfig) -> Fixture {
    let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
    let guard = ::metrics::set_default_local_recorder(recorder);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let store = surge_store::open(&url, &StoreOptions::default())
        .await
        .expect("open");
    let cache = ViewCache::new(store.clone(), config, 6);
    // Time moves only when a test advances it. A paused runtime would also jump its
    // clock whenever it is idle, e.g. while sqlx waits for its SQLite worker thread,
    // firing the pool's acquire timeout; one task that always yields keeps it busy.
    tokio::time::pause();
    tokio::spawn(async {
        loop {
            tokio::task::yield_now().await;
        }
    });
    Fixture {
        store,
        cache,
        snap: recorder.snapshotter(),
        totals: Default::default(),
        _dir: dir,
        _guard: guard,
    }
}

impl Fixture {
    async fn put_view(&self, key: &str, body: &'static [u8]) {
        let from = self.store.applied_position().await.expect("position");
        let view = View::build(Bytes::from_static(body), 6).to_stored();
        let batch = ViewBatch {
            from_position: from,
            to_position: from + 1,
            puts: vec![ViewPut {
                key: key.into(),
                view,
            }],
            deletes: vec![],
        };
        self.store.apply_views(&batch).await.expect("apply");
    }

    /// Folds a snapshot (which drains what it reads) into running totals, keyed by
    /// metric name, or name + `op` label for histograms (sample counts).
    fn totals(&self) -> std::collections::HashMap<String, u64> {
        let mut totals = self.totals.lock().expect("totals lock");
        for (k, _, _, v) in self.snap.snapshot().into_vec() {
            let (name, n) = match v {
                DebugValue::Counter(c) => (k.key().name().to_owned(), c),
                DebugValue::Histogram(h) => {
                    let op = k
                        .key()
                        .labels()
                        .find(|l| l.key() == "op")
                        .map(|l| l.value().to_owned());
                    (
                        format!("{}:{}", k.key().name(), op.unwrap_or_default()),
                        h.len() as u64,
                    )
                }
                DebugValue::Gauge(_) => continue,
            };
            *totals.entry(name).or_default() += n;
        }
        totals.clone()
    }

    fn counter(&self, name: &str) -> u64 {
        self.totals().get(name).copied().unwrap_or(0)
    }

    fn store_reads(&self) -> u64 {
        self.counter("surge_store_operation_duration_seconds:get_view")
    }
}

fn body(e: &Entry) -> Bytes {
    e.view
        .as_ref()
        .map(|v| v.identity.clone())
        .unwrap_or_default()
}

/// The real store, with view reads held until the test opens the gate.
struct Gated {
    inner: Arc<dyn CatalogStore>,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl CatalogStore for Gated {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn put_products(
        &self,
        p: &[surge_store::ProductWrite],
    ) -> surge_store::Result<Vec<surge_store::WriteReceipt>> {
        self.inner.put_products(p).await
    }
    async fn delete_product(&self, id: &str) -> surge_store::Result<bool> {
        self.inner.delete_product(id).await
    }
    async fn get_product(
        &self,
        id: &str,
    ) -> surge_store::Result<Option<surge_store::ProductRecord>> {
        self.inner.get_product(id).await
    }
    async fn upsert_offers(&self, o: &[surge_store::Offer]) -> surge_store::Result<u64> {
        self.inner.upsert_offers(o).await
    }
    async fn offers_for(&self, id: &str, m: &str) -> surge_store::Result<Vec<surge_store::Offer>> {
        self.inner.offers_for(id, m).await
    }
    async fn offers_page(
        &self,
        after: Option<&surge_store::Offer>,
        limit: u32,
    ) -> surge_store::Result<Vec<surge_store::Offer>> {
        self.inner.offers_page(after, limit).await
    }
    async fn outbox_head(&self) -> surge_store::Result<i64> {
        self.inner.outbox_head().await
    }
    async fn read_outbox(
        &self,
        after: i64,
        limit: u32,
    ) -> surge_store::Result<Vec<surge_store::OutboxEntry>> {
        self.inner.read_outbox(after, limit).await
    }
    async fn applied_position(&self) -> surge_store::Result<i64> {
        self.inner.applied_position().await
    }
    async fn apply_views(&self, b: &ViewBatch) -> surge_store::Result<()> {
        self.inner.apply_views(b).await
    }
    async fn prune_outbox(&self, up_to: i64, max_rows: u32) -> surge_store::Result<u64> {
        self.inner.prune_outbox(up_to, max_rows).await
    }
    async fn get_view(&self, key: &str) -> surge_store::Result<Option<surge_store::StoredView>> {
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|_| surge_store::StoreError::Closed)?;
        self.inner.get_view(key).await
    }
    async fn counts(&self) -> surge_store::Result<(i64, i64, i64)> {
        self.inner.counts().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

#[tokio::test]
async fn concurrent_misses_load_once() {
    let f = fixture(config()).await;
    f.put_view("k", b"hello").await;
    let gated = Arc::new(Gated {
        inner: f.store.clone(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let cache = ViewCache::new(gated.clone(), config(), 6);
    let gets = tokio::spawn({
        let cache = cache.clone();
        async move { futures_util::future::join_all((0..50).map(|_| cache.get("k"))).await }
    });
    // Wait until all 50 have missed and wait on the one load, then let it through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.counter(metrics::MISSES_TOTAL) < 50 {
        assert!(tokio::time::Instant::now() < deadline, "gets never started");
        tokio::task::yield_now().await;
    }
    gated.gate.add_permits(50);
    for g in gets.await.expect("join") {
        assert_eq!(body(&g.expect("get")), "hello");
    }
    assert_eq!(
        f.store_reads(),
        1,
        "one store read for 50 concurrent misses"
    );
    assert_eq!(f.counter(metrics::COALESCED_TOTAL), 49);
}

#[tokio::test]
async fn stale_window_serves_and_refreshes_once() {
    let f = fixture(config()).await;
    f.put_view("k", b"v1").await;
    assert_eq!(body(&f.cache.get("k").await.expect("get")), "v1");
    f.put_view("k", b"v2").await; // written behind the cache's back (no write-through)
    tokio::time::advance(Duration::from_secs(44)).await;
    assert_eq!(
        body(&f.cache.get("k").await.expect("get")),
        "v1",
        "still fresh"
    );
    tokio::time::advance(Duration::from_secs(2)).await; // 46 s: inside the last 15 s
    for _ in 0..10 {
        assert_eq!(
            body(&f.cache.get("k").await.expect("get")),
            "v1",
            "stale is served"
        );
    }
    assert_eq!(
        f.counter(metrics::REFRESHES_TOTAL),
        1,
        "exactly one background refresh"
    );
    // Let the refresh finish, then the new bytes are served fresh.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while body(&f.cache.get("k").await.expect("get")) != "v2" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "refresh never landed"
        );
        tokio::task::yield_now().await;
    }
    assert!(f.counter(metrics::STALE_TOTAL) >= 10);
}

#[tokio::test]
async fn unavailable_store_serves_stale_and_counts_it() {
    let f = fixture(config()).await;
    f.put_view("hot", b"bytes").await;
    f.cache.get("hot").await.expect("warm");
    f.store.close().await;
    tokio::time::advance(Duration::from_secs(61)).await; // past the whole life
    for _ in 0..3 {
        assert_eq!(
            body(&f.cache.get("hot").await.expect("stale-if-error")),
            "bytes"
        );
        tokio::time::advance(Duration::from_secs(6)).await; // past the error backoff
    }
    assert!(f.counter(metrics::STALE_IF_ERROR_TOTAL) >= 3);
    // A key that was never cached has nothing to fall back on.
    assert!(f.cache.get("cold").await.is_err());
}

#[tokio::test]
async fn absent_keys_are_remembered_briefly() {
    let f = fixture(config()).await;
    assert!(f.cache.get("nope").await.expect("get").view.is_none());
    assert!(f.cache.get("nope").await.expect("get").view.is_none());
    assert_eq!(f.store_reads(), 1);
    f.put_view("nope", b"now here").await;
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(body(&f.cache.get("nope").await.expect("get")), "now here");
}

#[tokio::test]
async fn write_through_replaces_present_entries_only() {
    let f = fixture(config()).await;
    f.put_view("k", b"old").await;
    f.cache.get("k").await.expect("warm");
    let ticket = f.cache.begin_write(["k", "other"].into_iter());
    f.cache
        .write_through("k".into(), Some(View::build(Bytes::from_static(b"new"), 6)));
    f.cache.write_through(
        "other".into(),
        Some(View::build(Bytes::from_static(b"x"), 6)),
    );
    drop(ticket);
    assert_eq!(body(&f.cache.get("k").await.expect("get")), "new");
    assert_eq!(f.cache.len(), 1, "absent keys are not inserted");
    f.cache.write_through("k".into(), None);
    assert!(
        f.cache.get("k").await.expect("get").view.is_none(),
        "deletion is visible at once"
    );
}

#[tokio::test]
async fn the_budget_is_bytes() {
    let cfg = CacheConfig {
        max_bytes: 1024 * 1024,
        ..config()
    };
    let f = fixture(cfg).await;
    static BIG: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    for i in 0..40 {
        f.put_view(&format!("k{i}"), &BIG).await;
        f.cache.get(&format!("k{i}")).await.expect("get");
    }
    assert!(
        f.cache.weight() <= 1024 * 1024,
        "weight {} over budget",
        f.cache.weight()
    );
    assert!(f.counter(metrics::EVICTED_BYTES_TOTAL) > 0);
}

#[tokio::test]
async fn jitter_spreads_the_expiries_of_entries_loaded_together() {
    // Life 60 s ± 10 %: the fresh part ends between 39 s and 51 s after loading.
    let f = fixture(CacheConfig::default()).await;
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    for k in &keys {
        f.put_view(k, b"v").await;
        f.cache.get(k).await.expect("load");
    }
    tokio::time::advance(Duration::from_secs(45)).await;
    for k in &keys {
        f.cache.get(k).await.expect("get");
    }
    let (fresh, stale) = (
        f.counter(metrics::HITS_TOTAL),
        f.counter(metrics::STALE_TOTAL),
    );
    assert_eq!(fresh + stale, 50);
    assert!(
        fresh > 0 && stale > 0,
        "all 50 entries aged in step: {fresh} fresh, {stale} stale"
    );
}
