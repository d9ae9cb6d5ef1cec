//! Storage for checkout's inventory service: stock per (SKU, market) and the holds
//! orders place on it.
//!
//! Stock is three counters per (SKU, market): `available`, `held` and `sold`. Every
//! operation moves units between them inside one transaction, so
//! `available + held + sold` only ever changes by a restock. The same SQL runs on SQLite
//! and PostgreSQL:
//! - [`InventoryStore::hold`] first inserts the order's hold rows
//!   (`ON CONFLICT DO NOTHING`: a second hold of the same order — a saga step re-run after
//!   a crash — finds them and changes nothing), then takes each line with a conditional
//!   decrement (`UPDATE … SET available = available - qty WHERE available >= qty`), which
//!   cannot oversell however many holds run at once. A line that does not fit rolls the
//!   whole hold back.
//! - [`InventoryStore::release`] and [`InventoryStore::commit`] move the order's hold rows
//!   out of `held` with one conditional update and adjust the counters for the rows it
//!   returns (the ones that update won), so running either twice (or both at once) moves
//!   every unit once.
//! - [`InventoryStore::declare`] applies the stock the catalog's offers declare: a
//!   change from `d` to `d'` adds `d' - d` units to `available`. A decrease larger than
//!   what is available empties `available` and records the rest as `owed`; units that
//!   come back later (a release, a restock, a higher declaration) pay what is owed before
//!   they can be held again, so the shop never sells more than was declared and
//!   restocked: `available + held + sold - owed = declared + restocked`.
//!
//! ## `StockChanged` events
//! Every write that changes a (SKU, market)'s counters appends a `StockChanged` event to
//! the inventory outbox in the same transaction: the counters after the change, what
//! caused it (`held`, `sold`, `released`, `declared`, `restocked`) and the order, if any
//! ([`InventoryStore::events`] reads them by position; the events of one write, such as
//! the lines of one hold, may come in any order among themselves). A write re-run after
//! a crash changes nothing, so it appends nothing. On SQLite the event is read from the
//! row just written; on PostgreSQL, where a write's statements are parts of one `WITH`
//! on one snapshot, from the rows the counter update returns. Positions commit in order:
//! SQLite has one writer, and on PostgreSQL the store's group writer takes an advisory
//! lock with each batch's `BEGIN` ([`PG_BATCH_BEGIN`]).

use async_trait::async_trait;
use sqlx::{Postgres, Row, Sqlite};

use crate::group::{Pace, Step, chain};
use crate::metrics::record;
use crate::sql::{SqlStore, now_ms, prune_outbox};
use crate::{Result, StoreError};

/// The counters of one (SKU, market).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StockLevel {
    /// Units that can be held.
    pub available: i64,
    /// Units held by orders not yet confirmed.
    pub held: i64,
    /// Units sold.
    pub sold: i64,
    /// The stock the catalog's offer declares now (0 when no offer ever did).
    pub declared: i64,
    /// Units taken away by a lower declaration that were not available (held or sold
    /// at the time): units coming back pay these first.
    pub owed: i64,
}

impl StockLevel {
    /// `available + held + sold - owed`: changes only with a restock or a new
    /// declaration (it equals `declared` plus every restock).
    pub fn total(&self) -> i64 {
        self.available + self.held + self.sold - self.owed
    }
}

/// The stock an offer of the catalog declares for one (SKU, market).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The SKU (`<product id>:<merchant id>`).
    pub sku: String,
    /// The market.
    pub market: String,
    /// Units the offer declares (>= 0).
    pub units: i64,
}

/// Columns of [`StockLevel`], in the order [`level`] reads them.
const LEVEL_COLUMNS: &str = "available, held, sold, declared, owed";

/// Reads a [`StockLevel`] from a row of [`LEVEL_COLUMNS`].
fn level<R: Row>(row: &R) -> Result<StockLevel>
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let get = |i: usize| row.try_get::<i64, _>(i).map_err(StoreError::from_sqlx);
    Ok(StockLevel {
        available: get(0)?,
        held: get(1)?,
        sold: get(2)?,
        declared: get(3)?,
        owed: get(4)?,
    })
}

/// Applies a declaration: `excluded.declared` is the new one, `stock.declared` the old.
/// An increase pays what is owed first; a decrease takes what is available and owes
/// the rest. (CASE rather than GREATEST/MAX: the same text on both dialects.)
const DECLARE: &str = "INSERT INTO stock (sku, market, available, held, sold, declared, owed) \
     VALUES ($1, $2, $3, 0, 0, $3, 0) ON CONFLICT (sku, market) DO UPDATE SET \
     available = CASE \
       WHEN excluded.declared - stock.declared >= stock.owed \
         THEN stock.available + excluded.declared - stock.declared - stock.owed \
       WHEN excluded.declared - stock.declared >= 0 THEN stock.available \
       WHEN stock.available + excluded.declared - stock.declared >= 0 \
         THEN stock.available + excluded.declared - stock.declared \
       ELSE 0 END, \
     owed = CASE \
       WHEN excluded.declared - stock.declared >= stock.owed THEN 0 \
       WHEN excluded.declared - stock.declared >= 0 \
         THEN stock.owed - (excluded.declared - stock.declared) \
       WHEN stock.available + excluded.declared - stock.declared >= 0 THEN stock.owed \
       ELSE stock.owed - (stock.available + excluded.declared - stock.declared) END, \
     declared = excluded.declared \
     WHERE stock.declared <> excluded.declared";

/// How the PostgreSQL group writer starts a batch: with the inventory outbox lock.
pub(crate) const PG_BATCH_BEGIN: &str = "BEGIN; SELECT pg_advisory_xact_lock(7368213)";

/// The stock row as a counter update returns it (for the event that follows).
macro_rules! stock_row {
    () => {
        "sku, market, available, held, sold, declared, owed"
    };
}

/// Appends a `StockChanged` event with the counters of the stock row ($4, $5) read
/// from `$from`; `$1` the cause, `$2` the order (or NULL), `$3` the time.
macro_rules! stock_event {
    ($from:literal) => {
        concat!(
            "INSERT INTO inventory_outbox (",
            stock_row!(),
            ", cause, order_id, created_at_ms) SELECT ",
            stock_row!(),
            ", $1, $2, $3 FROM ",
            $from,
            " WHERE sku = $4 AND market = $5"
        )
    };
}

/// The event of the `stock` row as it is now.
const STOCK_EVENT: &str = stock_event!("stock");

/// The same as a part of a PostgreSQL `WITH` (see [`chain`]), right after the counter
/// update, whose returned row it reads (a sibling part would see the row as it was).
const STOCK_EVENT_AFTER: &str = stock_event!("{prev}");

/// Creates a feed's position at 0 unless it exists.
const NEW_FEED: &str =
    "INSERT INTO feed_positions (name, position) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING";

/// Moves a feed's position from `$2` to `$3`; no row when it was not at `$2`.
const MOVE_FEED: &str =
    "UPDATE feed_positions SET position = $3 WHERE name = $1 AND position = $2 RETURNING 1";

/// A `StockChanged` event read back from the inventory outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockEvent {
    /// Position in the outbox (increasing).
    pub position: i64,
    /// The SKU.
    pub sku: String,
    /// The market.
    pub market: String,
    /// The counters right after the change.
    pub level: StockLevel,
    /// What changed them: `held`, `sold`, `released`, `declared` or `restocked`.
    pub cause: String,
    /// The order behind a `held`, `sold` or `released` change.
    pub order_id: Option<String>,
    /// Written at, ms since the epoch.
    pub created_at_ms: i64,
}

impl StockEvent {
    /// The event's id, unique and stable: consumers dedupe on it.
    pub fn event_id(&self) -> String {
        format!("stock:{}", self.position)
    }
}

/// One line of a hold (also the wire form of a line between checkout's services).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldLine {
    /// The SKU.
    pub sku: String,
    /// The market, e.g. `DE`.
    pub market: String,
    /// Units, > 0.
    pub qty: i64,
}

/// What a hold did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Every line is held (now, or by an earlier run of the same hold).
    Held,
    /// This line does not fit: nothing was held.
    OutOfStock {
        /// The SKU.
        sku: String,
        /// The market.
        market: String,
    },
    /// The order's holds were already released or sold: nothing changed.
    Settled,
}

/// The inventory store.
#[async_trait]
pub trait InventoryStore: Send + Sync + 'static {
    /// A short name for logs and metrics (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Adds `units` (> 0), creating the row on first use. They pay what is owed first;
    /// the rest becomes available.
    async fn restock(&self, sku: &str, market: &str, units: i64) -> Result<StockLevel>;

    /// Holds every line for `order_id` until `expires_at_ms`, all or nothing.
    async fn hold(
        &self,
        order_id: &str,
        lines: &[HoldLine],
        expires_at_ms: i64,
    ) -> Result<HoldOutcome>;

    /// Gives the order's held units back. Returns how many units this call released
    /// (0 when there was nothing held: already released, sold, or never held).
    async fn release(&self, order_id: &str) -> Result<i64>;

    /// Turns the order's held units into sold ones. Returns how many units this call
    /// sold (0 when nothing was held).
    async fn commit(&self, order_id: &str) -> Result<i64>;

    /// Orders with units still held past `now_ms`, at most `limit`.
    async fn expired_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<String>>;

    /// The counters of one (SKU, market).
    async fn stock(&self, sku: &str, market: &str) -> Result<Option<StockLevel>>;

    /// Applies declared stock levels (see the module docs) and moves the feed `feed`
    /// from position `from` to `to`, in one transaction. Returns `false`, changing
    /// nothing, when the feed is not at `from` (another node moved it first). A feed
    /// never seen is at 0.
    async fn declare(&self, feed: &str, from: i64, to: i64, levels: &[Declared]) -> Result<bool>;

    /// `StockChanged` events after position `after`, oldest first, at most `limit`.
    async fn events(&self, after: i64, limit: u32) -> Result<Vec<StockEvent>>;

    /// Deletes up to `limit` events written before `before_ms`; returns how many.
    async fn prune_events(&self, before_ms: i64, limit: u32) -> Result<u64>;

    /// Where the feed `feed` stands (0 when it never moved).
    async fn feed_position(&self, feed: &str) -> Result<i64>;

    /// Closes the connections.
    async fn close(&self);
}

/// Inserts a hold row unless the order holds that line already; returns a row when it did.
const INSERT_HOLD: &str = "INSERT INTO holds (order_id, sku, market, qty, state, expires_at_ms, created_at_ms) \
     VALUES ($1, $2, $3, $4, 'held', $5, $6) ON CONFLICT DO NOTHING RETURNING 1";

/// Moves units from available to held if they are there; returns the row when it did.
const TAKE_STOCK: &str = concat!(
    "UPDATE stock SET available = available - $1, held = held + $1 \
     WHERE sku = $2 AND market = $3 AND available >= $1 RETURNING ",
    stock_row!()
);

/// Moves sold units out of `held` (`$1` units of `$2`, `$3`).
const SELL_HELD: &str = concat!(
    "UPDATE stock SET held = held - $1, sold = sold + $1 WHERE sku = $2 AND market = $3 RETURNING ",
    stock_row!()
);

/// Gives released units back; they pay what is owed first.
const RELEASE_HELD: &str = concat!(
    "UPDATE stock SET held = held - $1, \
     available = available + CASE WHEN owed >= $1 THEN 0 ELSE $1 - owed END, \
     owed = CASE WHEN owed >= $1 THEN owed - $1 ELSE 0 END \
     WHERE sku = $2 AND market = $3 RETURNING ",
    stock_row!()
);

/// Binds the arguments of [`STOCK_EVENT`] (or [`STOCK_EVENT_AFTER`]).
fn bind_event<'q, DB: sqlx::Database>(
    q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    cause: &'static str,
    order_id: Option<&'q str>,
    at: i64,
    sku: &'q str,
    market: &'q str,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(cause).bind(order_id).bind(at).bind(sku).bind(market)
}

/// `$event_after` is the event statement that follows a counter update in one
/// [`chain`]: [`STOCK_EVENT`] on SQLite (its statements run in order),
/// [`STOCK_EVENT_AFTER`] on PostgreSQL.
macro_rules! inventory_store {
    ($db:ty, $name:literal, $event_after:expr) => {
        impl SqlStore<$db> {
            /// Moves the order's `held` rows to `to`, adjusting the counters for each
            /// row this call moved. Returns the units moved.
            async fn settle(&self, order_id: &str, to: &'static str) -> Result<i64> {
                let at = now_ms();
                self.write((order_id.to_owned(), to, at), |(order_id, to, at), conn, _| {
                    Box::pin(Self::settle_in(conn, order_id, to, *at))
                })
                .await
            }

            async fn settle_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                order_id: &str,
                to: &'static str,
                at: i64,
            ) -> Result<Step<i64>> {
                // Moves every held row at once; the rows it returns are the ones this call
                // moved (a concurrent settle of the same order moves each row once).
                let mut rows: Vec<(String, String, i64)> = sqlx::query_as(
                    "UPDATE holds SET state = $1 WHERE order_id = $2 AND state = 'held' RETURNING sku, market, qty",
                )
                .bind(to)
                .bind(order_id)
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::from_sqlx)?;
                // Counters in one order everywhere, so two settles never deadlock on them.
                rows.sort_unstable();
                // Each counter update with its event, in one round trip (built once).
                static SETTLE: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
                    [SELL_HELD, RELEASE_HELD].map(|update| chain::<$db, _>(&[update, $event_after], &[]))
                });
                let sql = if to == "sold" { &SETTLE[0] } else { &SETTLE[1] };
                let mut moved = 0;
                for (sku, market, qty) in &rows {
                    let q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(*qty)
                        .bind(sku.as_str())
                        .bind(market.as_str());
                    bind_event(q, to, Some(order_id), at, sku, market)
                        .execute(&mut *conn)
                        .await
                        .map_err(StoreError::from_sqlx)?;
                    moved += qty;
                }
                Ok(Step::Keep(moved))
            }

            /// The statements of [`InventoryStore::hold`]; undoes its inserts unless every
            /// line was held.
            async fn hold_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                order_id: &str,
                lines: &[HoldLine],
                expires_at_ms: i64,
                at: i64,
                pace: Pace,
            ) -> Result<Step<HoldOutcome>> {
                if pace == Pace::Fast {
                    // Every line at once, betting that each is new and fits: then the
                    // insert and the take of each line return one row each (its event
                    // none).
                    let texts: Vec<&str> = lines
                        .iter()
                        .flat_map(|_| [INSERT_HOLD, TAKE_STOCK, $event_after])
                        .collect();
                    let counted: Vec<usize> = (0..lines.len()).flat_map(|i| [3 * i, 3 * i + 1]).collect();
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(chain::<$db, _>(&texts, &counted)));
                    for line in lines {
                        q = q
                            .bind(order_id)
                            .bind(line.sku.as_str())
                            .bind(line.market.as_str())
                            .bind(line.qty)
                            .bind(expires_at_ms)
                            .bind(at)
                            .bind(line.qty)
                            .bind(line.sku.as_str())
                            .bind(line.market.as_str());
                        q = bind_event(q, "held", Some(order_id), at, &line.sku, &line.market);
                    }
                    let rows = q.fetch_all(&mut *conn).await.map_err(StoreError::from_sqlx)?;
                    // Lost the bet: undo, and run again step by step.
                    return Ok(if rows.len() == 2 * lines.len() {
                        Step::Keep(HoldOutcome::Held)
                    } else {
                        Step::Undo(HoldOutcome::Held)
                    });
                }
                for (i, line) in lines.iter().enumerate() {
                    let fresh = sqlx::query(INSERT_HOLD)
                    .bind(order_id)
                    .bind(line.sku.as_str())
                    .bind(line.market.as_str())
                    .bind(line.qty)
                    .bind(expires_at_ms)
                    .bind(at)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    if fresh.is_none() {
                        // The same hold ran before: report what became of it. The rows of
                        // the lines before this one are this call's own (it undoes them),
                        // so they do not count.
                        let held: Vec<(String, String)> = sqlx::query_as(
                            "SELECT sku, market FROM holds WHERE order_id = $1 AND state = 'held'",
                        )
                        .bind(order_id)
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(StoreError::from_sqlx)?;
                        let mine = &lines[..i];
                        let earlier = held.iter().any(|(sku, market)| {
                            !mine.iter().any(|l| l.sku == *sku && l.market == *market)
                        });
                        return Ok(Step::Undo(if earlier { HoldOutcome::Held } else { HoldOutcome::Settled }));
                    }
                    let took = sqlx::query(TAKE_STOCK)
                    .bind(line.qty)
                    .bind(line.sku.as_str())
                    .bind(line.market.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    if took.is_none() {
                        return Ok(Step::Undo(HoldOutcome::OutOfStock {
                            sku: line.sku.clone(),
                            market: line.market.clone(),
                        }));
                    }
                    bind_event(sqlx::query(STOCK_EVENT), "held", Some(order_id), at, &line.sku, &line.market)
                        .execute(&mut *conn)
                        .await
                        .map_err(StoreError::from_sqlx)?;
                }
                Ok(Step::Keep(HoldOutcome::Held))
            }
        }

        #[async_trait]
        impl InventoryStore for SqlStore<$db> {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn restock(&self, sku: &str, market: &str, units: i64) -> Result<StockLevel> {
                let started = std::time::Instant::now();
                let r = async {
                    if units <= 0 {
                        return Err(StoreError::Config(format!("restock of {units} units")));
                    }
                    let data = (sku.to_owned(), market.to_owned(), units, now_ms());
                    self.write(data, |(sku, market, units, at), conn, _| Box::pin(async move {
                        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "INSERT INTO stock (sku, market, available, held, sold, declared, owed) \
                             VALUES ($1, $2, $3, 0, 0, 0, 0) ON CONFLICT (sku, market) DO UPDATE SET \
                             available = stock.available + CASE WHEN stock.owed >= excluded.available \
                               THEN 0 ELSE excluded.available - stock.owed END, \
                             owed = CASE WHEN stock.owed >= excluded.available \
                               THEN stock.owed - excluded.available ELSE 0 END \
                             RETURNING {LEVEL_COLUMNS}"
                        )))
                        .bind(sku.as_str())
                        .bind(market.as_str())
                        .bind(*units)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(StoreError::from_sqlx)?;
                        bind_event(sqlx::query(STOCK_EVENT), "restocked", None, *at, sku, market)
                            .execute(&mut *conn)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                        level(&row).map(Step::Keep)
                    }))
                    .await
                }
                .await;
                record($name, "restock", started, &r);
                r
            }

            async fn hold(
                &self,
                order_id: &str,
                lines: &[HoldLine],
                expires_at_ms: i64,
            ) -> Result<HoldOutcome> {
                let started = std::time::Instant::now();
                let at = now_ms();
                let r = async {
                    if let Some(l) = lines.iter().find(|l| l.qty <= 0) {
                        return Err(StoreError::Config(format!("hold of {} units of {}", l.qty, l.sku)));
                    }
                    let mut seen = std::collections::HashSet::new();
                    if let Some(l) = lines.iter().find(|l| !seen.insert((&l.sku, &l.market))) {
                        return Err(StoreError::Config(format!(
                            "{} in {} appears twice in one hold",
                            l.sku, l.market
                        )));
                    }
                    let data = (order_id.to_owned(), lines.to_vec(), expires_at_ms, at);
                    self.write(data, |(order_id, lines, expires_at_ms, at), conn, pace| {
                        Box::pin(Self::hold_in(conn, order_id, lines, *expires_at_ms, *at, pace))
                    })
                    .await
                }
                .await;
                record($name, "hold", started, &r);
                r
            }

            async fn release(&self, order_id: &str) -> Result<i64> {
                let started = std::time::Instant::now();
                let r = self.settle(order_id, "released").await;
                record($name, "release", started, &r);
                r
            }

            async fn commit(&self, order_id: &str) -> Result<i64> {
                let started = std::time::Instant::now();
                let r = self.settle(order_id, "sold").await;
                record($name, "commit_holds", started, &r);
                r
            }

            async fn expired_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<String>> {
                let started = std::time::Instant::now();
                let r = sqlx::query_scalar::<_, String>(
                    "SELECT DISTINCT order_id FROM holds WHERE state = 'held' AND expires_at_ms <= $1 \
                     ORDER BY order_id LIMIT $2",
                )
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(StoreError::from_sqlx);
                record($name, "expired_holds", started, &r);
                r
            }

            async fn stock(&self, sku: &str, market: &str) -> Result<Option<StockLevel>> {
                let started = std::time::Instant::now();
                let r = async {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {LEVEL_COLUMNS} FROM stock WHERE sku = $1 AND market = $2"
                    )))
                    .bind(sku)
                    .bind(market)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    row.map(|row| level(&row)).transpose()
                }
                .await;
                record($name, "stock", started, &r);
                r
            }

            async fn declare(&self, feed: &str, from: i64, to: i64, levels: &[Declared]) -> Result<bool> {
                let started = std::time::Instant::now();
                let r = async {
                    if let Some(l) = levels.iter().find(|l| l.units < 0) {
                        return Err(StoreError::Config(format!(
                            "declared stock of {} in {} is {} units",
                            l.sku, l.market, l.units
                        )));
                    }
                    let data = (feed.to_owned(), from, to, levels.to_vec(), now_ms());
                    self.write(data, |(feed, from, to, levels, at), conn, _| {
                        Box::pin(async move {
                            sqlx::query(NEW_FEED)
                                .bind(feed.as_str())
                                .execute(&mut *conn)
                                .await
                                .map_err(StoreError::from_sqlx)?;
                            let moved = sqlx::query(MOVE_FEED)
                                .bind(feed.as_str())
                                .bind(*from)
                                .bind(*to)
                                .fetch_optional(&mut *conn)
                                .await
                                .map_err(StoreError::from_sqlx)?;
                            if moved.is_none() {
                                return Ok(Step::Undo(false));
                            }
                            for l in levels {
                                let changed = sqlx::query(DECLARE)
                                    .bind(l.sku.as_str())
                                    .bind(l.market.as_str())
                                    .bind(l.units)
                                    .execute(&mut *conn)
                                    .await
                                    .map_err(StoreError::from_sqlx)?
                                    .rows_affected();
                                if changed > 0 {
                                    bind_event(sqlx::query(STOCK_EVENT), "declared", None, *at, &l.sku, &l.market)
                                        .execute(&mut *conn)
                                        .await
                                        .map_err(StoreError::from_sqlx)?;
                                }
                            }
                            Ok(Step::Keep(true))
                        })
                    })
                    .await
                }
                .await;
                record($name, "declare", started, &r);
                r
            }

            async fn events(&self, after: i64, limit: u32) -> Result<Vec<StockEvent>> {
                let started = std::time::Instant::now();
                let r = async {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {LEVEL_COLUMNS}, position, sku, market, cause, order_id, created_at_ms \
                         FROM inventory_outbox WHERE position > $1 ORDER BY position LIMIT $2"
                    )))
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                    rows.iter()
                        .map(|row| {
                            Ok(StockEvent {
                                level: level(row)?,
                                position: row.try_get(5).map_err(get)?,
                                sku: row.try_get(6).map_err(get)?,
                                market: row.try_get(7).map_err(get)?,
                                cause: row.try_get(8).map_err(get)?,
                                order_id: row.try_get(9).map_err(get)?,
                                created_at_ms: row.try_get(10).map_err(get)?,
                            })
                        })
                        .collect()
                }
                .await;
                record($name, "stock_events", started, &r);
                r
            }

            async fn prune_events(&self, before_ms: i64, limit: u32) -> Result<u64> {
                let started = std::time::Instant::now();
                let r = self
                    .write_one((before_ms, limit), |(before_ms, limit), conn| Box::pin(async move {
                        prune_outbox!(&mut *conn, "inventory_outbox", *before_ms, *limit)
                    }))
                    .await;
                record($name, "prune_stock_events", started, &r);
                r
            }

            async fn feed_position(&self, feed: &str) -> Result<i64> {
                let started = std::time::Instant::now();
                let r = sqlx::query_scalar::<_, i64>("SELECT position FROM feed_positions WHERE name = $1")
                    .bind(feed)
                    .fetch_optional(&self.reader)
                    .await
                    .map(|p| p.unwrap_or(0))
                    .map_err(StoreError::from_sqlx);
                record($name, "feed_position", started, &r);
                r
            }

            async fn close(&self) {
                self.shut().await;
            }
        }
    };
}

inventory_store!(Sqlite, "sqlite", STOCK_EVENT);
inventory_store!(Postgres, "postgres", STOCK_EVENT_AFTER);
