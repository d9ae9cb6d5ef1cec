//! The inventory service: the authority for what can be sold. It owns the inventory
//! store (stock counters and holds) and remembers which SKUs are sold out, so a rush on
//! a sold-out SKU is answered from memory without a database round trip.
//!
//! The sold-out memory is a hint, never the authority: a SKU is marked when a hold did
//! not fit and the store then reported nothing available; it is forgotten on any
//! release or restock through this service and after `sold_out_ttl_ms` (which bounds
//! how long a release on another node goes unseen). A wrong "available" hint only costs
//! a database round trip; a stale "sold out" costs at most one TTL of refusals.
//!
//! Stock comes from the catalog's offers through the [`feed`], and from restocks.

pub mod feed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use surge_store::{Declared, HoldLine, HoldOutcome, InventoryStore, StockLevel, StoreError};
use tokio::time::Instant;

use crate::config::InventoryConfig;
use crate::metrics;

/// The inventory service (cheap to clone).
#[derive(Clone)]
pub struct Inventory {
    store: Arc<dyn InventoryStore>,
    sold_out: SoldOut,
}

/// Which SKUs are sold out, remembered for a while (cheap to clone: clones share it).
/// The hint that answers a rush on a sold-out SKU without a round trip, to the
/// database here or to the inventory service from orders when it runs elsewhere.
#[derive(Clone)]
pub struct SoldOut {
    /// Marks by [`key`] of (SKU, market), with when they lapse.
    marks: Arc<Mutex<HashMap<u64, Instant>>>,
    ttl: Duration,
}

/// The sold-out map's key: a 64-bit hash of (SKU, market), so the check on every
/// checkout line allocates nothing. A collision could only refuse a SKU for one TTL.
fn key(sku: &str, market: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(
        sku.as_bytes(),
        xxhash_rust::xxh3::xxh3_64(market.as_bytes()),
    )
}

/// Most SKUs remembered as sold out; beyond it the oldest marks are dropped.
const MAX_SOLD_OUT: usize = 100_000;

impl SoldOut {
    /// An empty memory whose marks last `ttl`.
    pub fn new(ttl: Duration) -> Self {
        SoldOut {
            marks: Arc::default(),
            ttl,
        }
    }

    /// Whether `sku` is known to be sold out in `market`.
    pub fn contains(&self, sku: &str, market: &str) -> bool {
        let now = Instant::now();
        let map = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key(sku, market)).is_some_and(|until| *until > now)
    }

    /// Remembers `sku` as sold out in `market` for one TTL.
    pub fn mark(&self, sku: &str, market: &str) {
        let now = Instant::now();
        let mut map = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SOLD_OUT {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_SOLD_OUT {
                map.clear();
            }
        }
        map.insert(key(sku, market), now + self.ttl);
    }

    /// Forgets the marks of these (SKU, market) pairs.
    pub fn forget<'a>(&self, keys: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut map = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return;
        }
        for (sku, market) in keys {
            map.remove(&key(sku, market));
        }
    }
}

impl Inventory {
    /// The service over `store`.
    pub fn new(store: Arc<dyn InventoryStore>, config: &InventoryConfig) -> Self {
        Inventory {
            store,
            sold_out: SoldOut::new(Duration::from_millis(config.sold_out_ttl_ms)),
        }
    }

    /// The store (for the feed, the relay and tests).
    pub fn store(&self) -> &Arc<dyn InventoryStore> {
        &self.store
    }

    /// Whether `sku` is known to be sold out in `market` (from memory only).
    pub fn is_sold_out(&self, sku: &str, market: &str) -> bool {
        self.sold_out.contains(sku, market)
    }

    fn mark(&self, sku: &str, market: &str) {
        self.sold_out.mark(sku, market);
    }

    fn forget<'a>(&self, keys: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.sold_out.forget(keys);
    }

    /// Holds every line for `order_id` until `expires_at_ms`, all or nothing. A line
    /// on a SKU known to be sold out is refused without asking the store.
    pub async fn hold(
        &self,
        order_id: &str,
        lines: &[HoldLine],
        expires_at_ms: i64,
    ) -> Result<HoldOutcome, StoreError> {
        if let Some(l) = lines.iter().find(|l| self.is_sold_out(&l.sku, &l.market)) {
            ::metrics::counter!(metrics::SOLD_OUT_FROM_MEMORY_TOTAL).increment(1);
            return Ok(HoldOutcome::OutOfStock {
                sku: l.sku.clone(),
                market: l.market.clone(),
            });
        }
        let outcome = self.store.hold(order_id, lines, expires_at_ms).await?;
        if let HoldOutcome::OutOfStock { sku, market } = &outcome
            && let Ok(Some(level)) = self.store.stock(sku, market).await
            && level.available == 0
        {
            self.mark(sku, market);
        }
        Ok(outcome)
    }

    /// Gives the order's held units back (idempotent). Returns the units released.
    pub async fn release(&self, order_id: &str, lines: &[HoldLine]) -> Result<i64, StoreError> {
        let units = self.store.release(order_id).await?;
        if units > 0 {
            self.forget(lines.iter().map(|l| (l.sku.as_str(), l.market.as_str())));
        }
        Ok(units)
    }

    /// Turns the order's held units into sold ones (idempotent). Returns the units sold.
    pub async fn commit(&self, order_id: &str) -> Result<i64, StoreError> {
        self.store.commit(order_id).await
    }

    /// Adds units to what is available.
    pub async fn restock(
        &self,
        sku: &str,
        market: &str,
        units: i64,
    ) -> Result<StockLevel, StoreError> {
        let level = self.store.restock(sku, market, units).await?;
        self.forget([(sku, market)]);
        Ok(level)
    }

    /// Applies declared stock levels and moves the feed `feed` from `from` to `to` (see
    /// [`InventoryStore::declare`]); forgets the sold-out marks of the SKUs declared.
    pub async fn declare(
        &self,
        feed: &str,
        from: i64,
        to: i64,
        levels: &[Declared],
    ) -> Result<bool, StoreError> {
        let applied = self.store.declare(feed, from, to, levels).await?;
        if applied {
            self.forget(levels.iter().map(|l| (l.sku.as_str(), l.market.as_str())));
        }
        Ok(applied)
    }

    /// The counters of one SKU in one market.
    pub async fn stock(&self, sku: &str, market: &str) -> Result<Option<StockLevel>, StoreError> {
        self.store.stock(sku, market).await
    }
}

/// Most `StockChanged` events deleted by one upkeep pass.
const PRUNE_BATCH: u32 = 5_000;

impl Inventory {
    /// Deletes `StockChanged` events older than `retention_ms` (at most a batch).
    /// Returns how many went.
    pub async fn prune_events(&self, now_ms: i64, retention_ms: i64) -> Result<u64, StoreError> {
        self.store
            .prune_events(now_ms.saturating_sub(retention_ms), PRUNE_BATCH)
            .await
    }

    /// The service's own upkeep until `stop` turns true: every `every`, deletes
    /// `StockChanged` events past `retention_ms`. It runs wherever the inventory service
    /// does (with orders or on its own).
    pub async fn upkeep(
        self,
        retention_ms: i64,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            match self
                .prune_events(surge_http::envelope::now_ms(), retention_ms)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(
                    pruned = n,
                    "deleted StockChanged events past their retention"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot prune the inventory outbox"),
            }
        }
    }
}
