//! The offer feed: the stock the catalog's offers declare, applied to the inventory.
//!
//! The catalog writes an outbox entry for each (product, market) whose offers change.
//! The feed reads that outbox through the catalog's store trait (never its tables),
//! reads the current offers of each (product, market) it names, and hands the inventory
//! each offer's stock as the declared stock of SKU `<product>:<merchant>` in that
//! market, together with the outbox position it has now applied, in one transaction of
//! the inventory's own database. Declarations are absolute, so applying an entry twice
//! (after a crash, or by two nodes) changes nothing the second time; the position moves
//! by compare-and-set, so of two nodes reading the same entries only one applies them.
//!
//! ## Why it can resync
//! The projector prunes the outbox once it has applied it, and the feed may lag behind
//! (checkout was down, or started on a catalog that already had offers). When the
//! oldest entry the feed can read is not the one right after its position, entries it
//! never saw are gone: it then reads every offer of the catalog, page by page, and
//! declares each, before moving to the outbox head it read before the scan (entries
//! written during the scan are read again afterwards, which is harmless). On PostgreSQL
//! a rolled-back catalog write leaves a hole in the positions, which also looks like a
//! gap: that costs one resync, never a wrong level.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use surge_store::{CatalogStore, Declared, Offer, OutboxEntry, OutboxKind, StoreError};
use tokio::sync::watch;

use super::Inventory;
use crate::metrics;

/// The feed's name in the inventory's feed positions.
pub const FEED: &str = "catalog-offers";

/// The offer feed's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FeedConfig {
    /// Whether the catalog's offers feed the inventory. Default true. Off, stock comes
    /// only from `POST /admin/inventory/{sku}/{market}` restocks.
    pub enabled: bool,
    /// How often the catalog's outbox is looked at when the feed is caught up, in ms.
    /// Default 200.
    pub poll_ms: u64,
    /// Most outbox entries (and, in a resync, offers) applied in one transaction.
    /// Default 500.
    pub batch: u32,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            enabled: true,
            poll_ms: 200,
            batch: 500,
        }
    }
}

impl FeedConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_ms == 0 {
            return Err("checkout.inventory.feed.poll_ms must be > 0, got 0".into());
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(format!(
                "checkout.inventory.feed.batch must be 1..=10000, got {}",
                self.batch
            ));
        }
        Ok(())
    }
}

/// What one [`OfferFeed::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStep {
    /// Nothing new in the outbox.
    CaughtUp,
    /// Applied entries up to this position.
    Applied(i64),
    /// Found a gap and declared every offer of the catalog; now at this position.
    Resynced(i64),
    /// Another node moved the feed first: nothing applied here.
    Lost,
}

/// The feed from the catalog's offers to the inventory (cheap to clone).
#[derive(Clone)]
pub struct OfferFeed {
    catalog: Arc<dyn CatalogStore>,
    inventory: Inventory,
    config: FeedConfig,
}

impl OfferFeed {
    /// The feed from `catalog` to `inventory`.
    pub fn new(catalog: Arc<dyn CatalogStore>, inventory: Inventory, config: FeedConfig) -> Self {
        OfferFeed {
            catalog,
            inventory,
            config,
        }
    }

    /// Applies the next batch of the catalog's outbox (or resyncs, see the module docs).
    pub async fn step(&self) -> Result<FeedStep, StoreError> {
        let from = self.inventory.store().feed_position(FEED).await?;
        let entries = self.catalog.read_outbox(from, self.config.batch).await?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(FeedStep::CaughtUp);
        };
        if first.position > from + 1 {
            return self.resync(from).await;
        }
        let levels = self.levels(&entries).await?;
        let to = last.position;
        Ok(if self.inventory.declare(FEED, from, to, &levels).await? {
            ::metrics::gauge!(metrics::FEED_POSITION).set(to as f64);
            FeedStep::Applied(to)
        } else {
            FeedStep::Lost
        })
    }

    /// The current offers of every (product, market) the entries name.
    async fn levels(&self, entries: &[OutboxEntry]) -> Result<Vec<Declared>, StoreError> {
        let touched: BTreeSet<(&str, &str)> = entries
            .iter()
            .filter(|e| e.kind == OutboxKind::Offers)
            .filter_map(|e| Some((e.product_id.as_str(), e.market.as_deref()?)))
            .collect();
        let mut levels = Vec::new();
        for (product, market) in touched {
            let offers = self.catalog.offers_for(product, market).await?;
            levels.extend(offers.iter().map(declared));
        }
        Ok(levels)
    }

    /// Declares every offer of the catalog, then moves from `from` to the outbox head
    /// read before the scan.
    async fn resync(&self, from: i64) -> Result<FeedStep, StoreError> {
        ::metrics::counter!(metrics::FEED_RESYNCS_TOTAL).increment(1);
        let head = self.catalog.outbox_head().await?.max(from);
        tracing::info!(
            from,
            head,
            "the offer feed missed pruned outbox entries; declaring every offer again"
        );
        let mut after: Option<Offer> = None;
        loop {
            let page = self
                .catalog
                .offers_page(after.as_ref(), self.config.batch)
                .await?;
            let Some(last) = page.last() else { break };
            let levels: Vec<Declared> = page.iter().map(declared).collect();
            // A move from `from` to `from`: the levels land only while no other node
            // has moved the feed.
            if !self.inventory.declare(FEED, from, from, &levels).await? {
                return Ok(FeedStep::Lost);
            }
            after = Some(last.clone());
        }
        Ok(if self.inventory.declare(FEED, from, head, &[]).await? {
            ::metrics::gauge!(metrics::FEED_POSITION).set(head as f64);
            FeedStep::Resynced(head)
        } else {
            FeedStep::Lost
        })
    }

    /// Follows the catalog until `stop`: steps while there is work, then waits
    /// `poll_ms`; after a failure waits longer (doubling, up to 5 s).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.config.poll_ms);
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            let wait = match self.step().await {
                Ok(FeedStep::CaughtUp) => {
                    failures = 0;
                    poll
                }
                Ok(_) => {
                    failures = 0;
                    continue;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    ::metrics::counter!(metrics::FEED_FAILURES_TOTAL).increment(1);
                    tracing::warn!(error = %e, failures, "the offer feed failed; retrying");
                    (poll * 2u32.saturating_pow(failures.min(16))).min(Duration::from_secs(5))
                }
            };
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The declaration an offer makes.
fn declared(o: &Offer) -> Declared {
    Declared {
        sku: format!("{}:{}", o.product_id, o.merchant_id),
        market: o.market.clone(),
        units: o.stock.max(0),
    }
}
