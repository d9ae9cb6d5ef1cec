//! The projector: tails the outbox in order and turns each change into views.
//!
//! One step reads up to `batch_size` entries after the applied position, reads the
//! current state of every product / (product, market) they name (so an entry applied
//! twice, or two entries for one product, cost one rebuild and no double effect),
//! renders every format in both encodings on the blocking pool, and commits the product
//! views with the new position in one transaction. Only then does it write through to
//! the read cache. Offers views are not stored (the cache builds them from the offers
//! table on a miss); the projector writes them through to the cache only, at once.
//!
//! A step that changes no stored view (offer updates, the high-frequency path) does not
//! wait for the single writer: its position is committed in the background, at most
//! [`COMMIT_EVERY`] later or after [`COMMIT_AFTER_ENTRIES`] entries, so offer updates
//! become visible without queueing behind other writes. After a crash such entries are
//! applied again, which rebuilds offers views from the committed offers table: the same
//! result, no double effect. Steps that change stored views commit views and position in
//! one transaction before writing through. A restart resumes from the stored position:
//! nothing is lost, nothing is applied twice.

mod config;
mod metrics;

pub use metrics::{HEAD_POSITION, LAG_ENTRIES};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use surge_store::{CatalogStore, OutboxKind, StoreError, ViewBatch, ViewPut};
use tokio::sync::{Notify, watch};

pub use config::ProjectorConfig;

use crate::cache::ViewCache;
use crate::views::render::{self, ViewChange};
use crate::views::{self, Format, offers_key, product_key};

/// Source reads in flight at once during a step.
const READ_CONCURRENCY: usize = 8;

/// Outbox rows deleted per pruning pass (and entries applied between passes).
const PRUNE_ROWS: u32 = 10_000;

/// The longest a position that changed no stored view waits to be committed.
pub const COMMIT_EVERY: Duration = Duration::from_millis(250);

/// Entries after which a pending position is committed however recent the last commit.
pub const COMMIT_AFTER_ENTRIES: i64 = 5_000;

/// Progress of the projector, shared with the read API (`/readyz`, admin status).
#[derive(Debug, Default)]
pub struct ProjectorStatus {
    applied: AtomicI64,
    head_at_start: AtomicI64,
    caught_up: AtomicBool,
}

impl ProjectorStatus {
    /// The last applied outbox position.
    pub fn applied(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Whether the projector has applied everything that was in the outbox at start.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }
}

/// A cheap handle to wake the projector after a write.
#[derive(Clone, Default)]
pub struct Nudge(Arc<Notify>);

impl Nudge {
    /// Tells the projector there is new work.
    pub fn nudge(&self) {
        self.0.notify_one();
    }
}

/// The projector task.
pub struct Projector {
    store: Arc<dyn CatalogStore>,
    cache: Option<ViewCache>,
    config: ProjectorConfig,
    status: Arc<ProjectorStatus>,
    nudge: Nudge,
    commits: tokio::sync::Mutex<Commits>,
}

/// The stored position, which trails `status.applied` while a commit is pending.
struct Commits {
    committed: i64,
    at: Instant,
    in_flight: Option<tokio::task::JoinHandle<Result<i64, StoreError>>>,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Outbox entries applied.
    pub entries: usize,
    /// Views written or deleted.
    pub views: usize,
}

impl Projector {
    /// A projector over `store` that writes through to `cache` (none in a projector-only
    /// process). Reads the applied position and the outbox head to know when it has
    /// caught up.
    pub async fn new(
        store: Arc<dyn CatalogStore>,
        cache: Option<ViewCache>,
        config: ProjectorConfig,
    ) -> Result<Self, StoreError> {
        let applied = store.applied_position().await?;
        let head = store.outbox_head().await?;
        let status = Arc::new(ProjectorStatus::default());
        status.applied.store(applied, Ordering::Release);
        status.head_at_start.store(head, Ordering::Release);
        status.caught_up.store(applied >= head, Ordering::Release);
        metrics::publish_positions(applied, head);
        Ok(Projector {
            store,
            cache,
            config,
            status,
            nudge: Nudge::default(),
            commits: tokio::sync::Mutex::new(Commits {
                committed: applied,
                at: Instant::now(),
                in_flight: None,
            }),
        })
    }

    /// The shared status.
    pub fn status(&self) -> Arc<ProjectorStatus> {
        self.status.clone()
    }

    /// A handle that wakes this projector.
    pub fn nudge(&self) -> Nudge {
        self.nudge.clone()
    }

    /// Runs until `shutdown` turns true, waking on a nudge or every poll interval.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        let mut pruned_at = 0i64;
        loop {
            if *shutdown.borrow() {
                if let Err(e) = self.flush().await {
                    tracing::warn!(error = %e, "could not commit the last applied position; the entries after the stored one will be applied again at start");
                }
                return;
            }
            let stepped = match self.step().await {
                Ok(step) if step.entries > 0 => Ok(step),
                // Idle: a pending position is committed in the background once due (the
                // idle loop comes back here at least every poll interval).
                Ok(step) => {
                    let mut commits = self.commits.lock().await;
                    let applied = self.status.applied();
                    self.commit_later(&mut commits, applied)
                        .await
                        .map(|()| step)
                }
                Err(e) => Err(e),
            };
            match stepped {
                Ok(step) if step.entries > 0 => {
                    failures = 0;
                    let committed = self.commits.lock().await.committed;
                    if committed - pruned_at >= i64::from(PRUNE_ROWS) {
                        self.prune(committed).await;
                        pruned_at = committed;
                    }
                    continue;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    metrics::failure();
                    tracing::warn!(error = %e, failures, "projector step failed; retrying");
                    if let StoreError::PositionConflict { found, .. } = e {
                        self.commits.lock().await.committed = found;
                        self.status.applied.store(found, Ordering::Release);
                    }
                }
            }
            let wait = if failures == 0 {
                self.config.poll_interval()
            } else {
                Duration::from_millis(100 * u64::from(failures.min(50)))
            };
            tokio::select! {
                _ = self.nudge.0.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Deletes applied entries older than the retention (a bounded amount per call).
    async fn prune(&self, applied: i64) {
        let keep = i64::try_from(self.config.outbox_retain_entries).unwrap_or(i64::MAX);
        let up_to = applied.saturating_sub(keep);
        if up_to <= 0 {
            return;
        }
        match self.store.prune_outbox(up_to, PRUNE_ROWS).await {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, up_to, "pruned the outbox"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox pruning failed; will retry"),
        }
    }

    /// Applies everything up to the current outbox head and commits the position, then
    /// returns.
    pub async fn catch_up(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let step = self.step().await?;
            if step.entries == 0 {
                self.flush().await?;
                return Ok(total);
            }
            total += step.entries as u64;
        }
    }

    /// Commits the applied position if it is ahead of the stored one (and waits for a
    /// background commit). Call before stopping a projector driven by [`Projector::step`].
    pub async fn flush(&self) -> Result<(), StoreError> {
        let mut commits = self.commits.lock().await;
        Self::settle(&mut commits).await?;
        let applied = self.status.applied();
        if applied > commits.committed {
            let batch = ViewBatch {
                from_position: commits.committed,
                to_position: applied,
                ..ViewBatch::default()
            };
            self.store.apply_views(&batch).await?;
            commits.committed = applied;
            commits.at = Instant::now();
        }
        Ok(())
    }

    /// Waits for the background commit, if any, and records its outcome.
    async fn settle(commits: &mut Commits) -> Result<(), StoreError> {
        let Some(task) = commits.in_flight.take() else {
            return Ok(());
        };
        match task.await {
            Ok(Ok(to)) => {
                commits.committed = to;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Starts a background commit of `to` if one is due and none is running.
    async fn commit_later(&self, commits: &mut Commits, to: i64) -> Result<(), StoreError> {
        if commits.in_flight.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        Self::settle(commits).await?; // finished: records its outcome without waiting
        let due =
            commits.at.elapsed() >= COMMIT_EVERY || to - commits.committed >= COMMIT_AFTER_ENTRIES;
        if !due || to <= commits.committed {
            return Ok(());
        }
        let batch = ViewBatch {
            from_position: commits.committed,
            to_position: to,
            ..ViewBatch::default()
        };
        let store = self.store.clone();
        commits.at = Instant::now();
        commits.in_flight = Some(tokio::spawn(async move {
            store.apply_views(&batch).await.map(|()| batch.to_position)
        }));
        Ok(())
    }

    /// Applies one batch of outbox entries.
    pub async fn step(&self) -> Result<Step, StoreError> {
        let started = Instant::now();
        let from = self.status.applied();
        let entries = self.store.read_outbox(from, self.config.batch_size).await?;
        let Some(last) = entries.last() else {
            self.mark_caught_up(from);
            metrics::idle();
            return Ok(Step {
                entries: 0,
                views: 0,
            });
        };
        let to = last.position;
        let oldest_ms = entries[0].created_at_ms;

        let mut products = BTreeSet::new();
        let mut offers = BTreeSet::new();
        for e in &entries {
            match (e.kind, &e.market) {
                (OutboxKind::Product | OutboxKind::ProductDeleted, _) => {
                    products.insert(e.product_id.clone());
                }
                (OutboxKind::Offers, Some(market)) => {
                    offers.insert((e.product_id.clone(), market.clone()));
                }
                (OutboxKind::Offers, None) => {
                    tracing::error!(
                        position = e.position,
                        "offers entry without market; skipped"
                    );
                }
            }
        }

        // Source reads go to the reader pool, several at a time.
        let store = &self.store;
        let product_state: Vec<(String, Option<Bytes>)> = stream::iter(products)
            .map(|id| async move {
                let body = store.get_product(&id).await?.map(|r| r.body);
                Ok::<_, StoreError>((id, body))
            })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        // One ticket marks every key this step may write (see the cache's epochs). It is
        // taken before deciding which offers views to rebuild, so a load racing that
        // decision either retries or is dropped below.
        let ticket = self.cache.as_ref().map(|c| {
            let keys: Vec<String> = product_state
                .iter()
                .flat_map(|(id, _)| Format::ALL.map(|f| product_key(f, id)))
                .chain(
                    offers
                        .iter()
                        .flat_map(|(id, m)| Format::ALL.map(|f| offers_key(f, id, m))),
                )
                .collect();
            c.begin_write(keys.iter().map(String::as_str))
        });
        // Offers views live only in the read cache: rebuild the ones it holds; the rest
        // are built from the offers table when first read.
        let mut skipped = Vec::new();
        match &self.cache {
            None => offers.clear(),
            Some(cache) => offers.retain(|(id, market)| {
                let keys = Format::ALL.map(|f| offers_key(f, id, market));
                let cached = keys.iter().any(|k| cache.contains(k));
                if !cached {
                    skipped.extend(keys);
                }
                cached
            }),
        }
        let offer_state: Vec<(String, String, Vec<surge_store::Offer>)> = stream::iter(offers)
            .map(|(id, market)| async move {
                let list = store.offers_for(&id, &market).await?;
                Ok::<_, StoreError>((id, market, list))
            })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;

        let changes = self.render(product_state, offer_state).await;
        let mut batch = ViewBatch {
            to_position: to,
            ..ViewBatch::default()
        };
        for (key, view) in &changes {
            if !views::is_stored(key) {
                continue;
            }
            match view {
                Some(v) => batch.puts.push(ViewPut {
                    key: key.clone(),
                    view: v.to_stored(),
                }),
                None => batch.deletes.push(key.clone()),
            }
        }
        let views = changes.len();
        let mut commits = self.commits.lock().await;
        if batch.puts.is_empty() && batch.deletes.is_empty() {
            // Only offers views (cache-only, built from committed rows): visible now, the
            // position follows in the background.
            self.write_through(changes, &skipped);
            self.commit_later(&mut commits, to).await?;
        } else {
            Self::settle(&mut commits).await?;
            batch.from_position = commits.committed;
            self.store.apply_views(&batch).await?;
            commits.committed = to;
            commits.at = Instant::now();
            self.write_through(changes, &skipped);
        }
        drop(commits);
        drop(ticket);

        self.status.applied.store(to, Ordering::Release);
        self.mark_caught_up(to);
        metrics::applied(
            entries.len(),
            views,
            started.elapsed(),
            lag_seconds(oldest_ms),
            to,
        );
        Ok(Step {
            entries: entries.len(),
            views,
        })
    }

    fn write_through(&self, changes: Vec<ViewChange>, skipped: &[String]) {
        if let Some(cache) = &self.cache {
            for (key, view) in changes {
                cache.write_through(key, view);
            }
            // A load that passed its epoch check just before the ticket may have put an
            // old offers view in after the presence check: drop it (a read rebuilds it).
            for key in skipped {
                cache.forget(key);
            }
        }
    }

    async fn render(
        &self,
        products: Vec<(String, Option<Bytes>)>,
        offers: Vec<(String, String, Vec<surge_store::Offer>)>,
    ) -> Vec<ViewChange> {
        let level = self.config.gzip_level;
        // Compression dominates a step: spread it over the blocking pool, one chunk per core.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .max(1);
        let chunk = products.len().div_ceil(workers).max(1);
        let mut tasks = Vec::new();
        let mut products = products;
        while !products.is_empty() {
            let rest = products.split_off(chunk.min(products.len()));
            let mine = std::mem::replace(&mut products, rest);
            tasks.push(tokio::task::spawn_blocking(move || {
                mine.iter()
                    .flat_map(|(id, body)| render::product_views(id, body.as_ref(), level))
                    .collect::<Vec<_>>()
            }));
        }
        tasks.push(tokio::task::spawn_blocking(move || {
            offers
                .iter()
                .flat_map(|(id, market, list)| render::offers_views(id, market, list, level))
                .collect::<Vec<_>>()
        }));
        let mut out = Vec::new();
        for t in tasks {
            match t.await {
                Ok(v) => out.extend(v),
                // A panic while rendering is a bug; surface it rather than skip views.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        out
    }

    fn mark_caught_up(&self, applied: i64) {
        if !self.status.caught_up() && applied >= self.status.head_at_start.load(Ordering::Acquire)
        {
            self.status.caught_up.store(true, Ordering::Release);
            tracing::info!(position = applied, "projector caught up with the outbox");
        }
    }
}

fn lag_seconds(created_at_ms: i64) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    (now - created_at_ms).max(0) as f64 / 1000.0
}
