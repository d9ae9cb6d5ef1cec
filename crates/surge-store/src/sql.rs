//! The SQL implementation of [`CatalogStore`], compiled once per dialect.
//!
//! SQLite and PostgreSQL share every query: both accept `$n` placeholders,
//! `ON CONFLICT … DO UPDATE` and `RETURNING`. What differs is passed into the
//! [`sql_store!`] macro: the DDL, and how writers serialise their outbox inserts.
//!
//! ## Why writers serialise outbox inserts
//! The projector reads the outbox by position and remembers the highest position it
//! applied. If two transactions could commit out of position order, the projector could
//! read position 10 while 9 is still uncommitted and then skip 9 forever. SQLite has a
//! single writer connection, so commit order is position order. On PostgreSQL each
//! writer takes a transaction-scoped advisory lock just before inserting its outbox
//! rows (after its own row writes), which makes commit order equal position order while
//! keeping the lock short.

// The per-dialect lock statement is a literal that is empty for SQLite.
#![allow(clippy::const_is_empty)]

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, Postgres};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Database, Pool, Row, Sqlite};

use crate::checkpoint::Checkpointer;
use crate::group::{Batching, GroupWriter, Grouped};
use crate::metrics::record;
use crate::migrations::{CREATE_MIGRATIONS_TABLE, Component, MIGRATIONS};
use crate::{
    CatalogStore, Offer, OutboxEntry, OutboxKind, ProductRecord, ProductWrite, Result, StoreError,
    StoredView, ViewBatch, WriteReceipt,
};

/// Tuning of the store connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreOptions {
    /// SQLite `synchronous` pragma: `full` (default: a 2xx survives power loss),
    /// `normal` (survives a process crash, not power loss) or `off`.
    pub sqlite_synchronous: String,
    /// Maximum connections for reads (SQLite) or in total (PostgreSQL).
    pub max_connections: u32,
    /// How long to wait for a connection or a lock, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// PostgreSQL only: a schema to create and use (isolates tests and tenants).
    pub pg_schema: Option<String>,
    /// SQLite only: page cache of the writer connection, in MiB. The offer upserts
    /// touch random pages of the offers table; a cache that holds it keeps the writer
    /// fast when the OS drops the file from its page cache. Counts towards RSS.
    pub sqlite_writer_cache_mb: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sqlite_synchronous: "full".into(),
            max_connections: 8,
            acquire_timeout_ms: 5_000,
            pg_schema: None,
            sqlite_writer_cache_mb: 64,
        }
    }
}

/// A SQL-backed [`CatalogStore`] on database `DB`.
pub struct SqlStore<DB: Database> {
    /// Connections that write (SQLite: exactly one).
    pub(crate) writer: Pool<DB>,
    /// Connections that read.
    pub(crate) reader: Pool<DB>,
    /// SQLite only: the thread that checkpoints the WAL off the writer's path.
    checkpointer: Option<Checkpointer>,
    /// Checkout's stores: the writer that batches this store's writes into group
    /// commits.
    pub(crate) group: Option<GroupWriter<DB>>,
    /// The schema components this store holds (and migrates).
    components: &'static [Component],
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Rows per multi-row statement: well under SQLite's 32,766 and PostgreSQL's 65,535
/// bind parameters for the widest row (7 columns).
const ROWS_PER_STATEMENT: usize = 200;

/// `head` followed by `rows` groups of `width` placeholders and `tail`: numbered
/// (`($1, $2), ($3, $4)`) for PostgreSQL, anonymous (`(?, ?), (?, ?)`) for SQLite, whose
/// driver looks every numbered parameter up by name (a linear scan each, quadratic for
/// a wide statement). The text holds placeholders only, never a value.
fn multi_row(
    numbered: bool,
    head: &str,
    rows: usize,
    width: usize,
    tail: &str,
) -> sqlx::AssertSqlSafe<String> {
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * width * 6);
    sql.push_str(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { " (" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            if numbered {
                sql.push('$');
                sql.push_str(&(r * width + c + 1).to_string());
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(tail);
    sqlx::AssertSqlSafe(sql)
}

/// A store opened on one of the two backends.
enum Opened {
    Sqlite(SqlStore<Sqlite>),
    Postgres(SqlStore<Postgres>),
}

/// Opens `url` with the schema `components` migrated.
async fn open_components(
    url: &str,
    options: &StoreOptions,
    components: &'static [Component],
) -> Result<Opened> {
    check_url(url)?;
    if url.starts_with("sqlite:") {
        Ok(Opened::Sqlite(
            SqlStore::<Sqlite>::open_sqlite(url, options, components).await?,
        ))
    } else {
        Ok(Opened::Postgres(
            SqlStore::<Postgres>::open_postgres(url, options, components).await?,
        ))
    }
}

/// Deletes, on `$conn`, the oldest `$limit` entries of the outbox table `$table` (a
/// literal; it has `position` and `created_at_ms`) among which those older than
/// `$before_ms`: bounded work per call even when nothing is due. Evaluates to the
/// number of entries deleted.
macro_rules! prune_outbox {
    ($conn:expr, $table:literal, $before_ms:expr, $limit:expr) => {
        sqlx::query(concat!(
            "DELETE FROM ",
            $table,
            " WHERE position IN (SELECT position FROM (SELECT position, created_at_ms FROM ",
            $table,
            " ORDER BY position LIMIT $2) AS oldest WHERE created_at_ms < $1)"
        ))
        .bind($before_ms)
        .bind(i64::from($limit))
        .execute($conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(StoreError::from_sqlx)
    };
}
pub(crate) use prune_outbox;

/// An [`Opened`] store as the trait object the caller returns.
macro_rules! as_dyn {
    ($opened:expr) => {
        match $opened {
            Opened::Sqlite(s) => Arc::new(s),
            Opened::Postgres(s) => Arc::new(s),
        }
    };
}

/// Opens the catalog store at `url` (`sqlite://PATH` or `postgres://…`) and applies
/// the catalog's migrations.
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn CatalogStore>> {
    Ok(as_dyn!(
        open_components(url, options, &[Component::Catalog]).await?
    ))
}

/// Opens the identity store at `url` (`sqlite://PATH` or `postgres://…`) and applies
/// the identity migrations. It may share a PostgreSQL database with the catalog; on
/// SQLite it is its own file, so logins never queue behind catalog writes.
pub async fn open_identity(
    url: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn crate::IdentityStore>> {
    Ok(as_dyn!(
        open_components(url, options, &[Component::Identity]).await?
    ))
}

/// Opens checkout's inventory store at `url` (`sqlite://PATH` or `postgres://…`) and
/// applies the inventory migrations. In all-in-one mode it is its own SQLite file: the
/// inventory service owns its database and never reads another service's tables.
pub async fn open_inventory(
    url: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn crate::InventoryStore>> {
    Ok(as_dyn!(
        open_components(url, options, &[Component::Inventory]).await?
    ))
}

/// Opens checkout's orders store at `url` (`sqlite://PATH` or `postgres://…`) and applies
/// the orders migrations: orders with their saga state, the saga log, idempotency keys,
/// the checkout outbox. Its own SQLite file in all-in-one mode.
pub async fn open_orders(url: &str, options: &StoreOptions) -> Result<Arc<dyn crate::OrdersStore>> {
    Ok(as_dyn!(
        open_components(url, options, &[Component::Orders]).await?
    ))
}

/// Opens checkout's payments store at `url` (`sqlite://PATH` or `postgres://…`) and
/// applies the payments migrations. Like inventory, the payments service owns its
/// database: in all-in-one mode its own SQLite file.
pub async fn open_payments(
    url: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn crate::PaymentsStore>> {
    Ok(as_dyn!(
        open_components(url, options, &[Component::Payments]).await?
    ))
}

fn check_url(url: &str) -> Result<()> {
    if url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "store URL must start with sqlite:// or postgres://, got {url:?}"
        )))
    }
}

impl<DB: Database> SqlStore<DB> {
    /// Stops the group writer and the checkpointer, and closes both pools.
    pub(crate) async fn shut(&self) {
        if let Some(g) = &self.group {
            g.stop().await;
        }
        if let Some(c) = &self.checkpointer {
            c.stop().await;
        }
        self.writer.close().await;
        self.reader.close().await;
    }
}

impl SqlStore<Sqlite> {
    pub(crate) async fn open_sqlite(
        url: &str,
        options: &StoreOptions,
        components: &'static [Component],
    ) -> Result<Self> {
        let synchronous = match options.sqlite_synchronous.as_str() {
            "full" => SqliteSynchronous::Full,
            "normal" => SqliteSynchronous::Normal,
            "off" => SqliteSynchronous::Off,
            other => {
                return Err(StoreError::Config(format!(
                    "store.sqlite_synchronous must be full, normal or off, got {other:?}"
                )));
            }
        };
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad sqlite URL {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_millis(options.acquire_timeout_ms))
            .pragma("temp_store", "memory")
            // The WAL file shrinks back to this after a checkpoint lets it restart.
            .pragma("journal_size_limit", "67108864");
        let timeout = Duration::from_millis(options.acquire_timeout_ms);
        // Negative: KiB rather than pages.
        let writer_cache = format!(
            "-{}",
            u64::from(options.sqlite_writer_cache_mb.max(1)) * 1024
        );
        // Set when SQLite rolls back a whole transaction of the writer (see `group`).
        let rolled_back = Arc::new(AtomicBool::new(false));
        let hook = rolled_back.clone();
        // No idle reaping: an embedded file has nothing to reconnect to.
        let writer = PoolOptions::<Sqlite>::new()
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .max_connections(1)
            .acquire_timeout(timeout)
            .after_connect(move |conn, _| {
                let hook = hook.clone();
                Box::pin(async move {
                    conn.lock_handle()
                        .await?
                        .set_rollback_hook(move || hook.store(true, Ordering::Release));
                    Ok(())
                })
            })
            // Checkpoints run on their own thread (see `checkpoint`), not in commits.
            .connect_with(
                connect
                    .clone()
                    .pragma("wal_autocheckpoint", "0")
                    .pragma("cache_size", writer_cache),
            )
            .await
            .map_err(StoreError::from_sqlx)?;
        // Migrate through the writer first: a read-only connection cannot create the file.
        SqlStore {
            writer: writer.clone(),
            reader: writer.clone(),
            checkpointer: None,
            group: None,
            components,
        }
        .migrate()
        .await?;
        let reader = PoolOptions::<Sqlite>::new()
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(timeout)
            // Readers share the OS page cache; a small private cache each keeps RSS bounded.
            .connect_with(
                connect
                    .clone()
                    .read_only(true)
                    .pragma("cache_size", "-8192"),
            )
            .await
            .map_err(StoreError::from_sqlx)?;
        let checkpointer = Checkpointer::start(connect)
            .map_err(|e| StoreError::Config(format!("cannot start the WAL checkpointer: {e}")))?;
        let group = group_writer(components, &writer, |_| Batching {
            begin: "BEGIN IMMEDIATE",
            rolled_back: Some(rolled_back.clone()),
        })?;
        Ok(SqlStore {
            group,
            writer,
            reader,
            checkpointer: Some(checkpointer),
            components,
        })
    }
}

/// Checkout's stores write through a group writer (one `BEGIN` and one `COMMIT` for
/// every write waiting); the catalog and identity stores keep a transaction per call.
fn group_writer<DB>(
    components: &'static [Component],
    pool: &Pool<DB>,
    batching: impl Fn(Component) -> Batching,
) -> Result<Option<GroupWriter<DB>>>
where
    DB: Grouped,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    match components {
        [c @ (Component::Orders | Component::Inventory | Component::Payments)] => {
            GroupWriter::start(c.name(), pool.clone(), batching(*c))
                .map(Some)
                .map_err(|e| {
                    StoreError::Config(format!("cannot start the group commit writer: {e}"))
                })
        }
        _ => Ok(None),
    }
}

impl SqlStore<Postgres> {
    pub(crate) async fn open_postgres(
        url: &str,
        options: &StoreOptions,
        components: &'static [Component],
    ) -> Result<Self> {
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad postgres URL: {e}")))?;
        if let Some(schema) = &options.pg_schema {
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                || schema.is_empty()
            {
                return Err(StoreError::Config(format!(
                    "store.pg_schema must be [A-Za-z0-9_]+, got {schema:?}"
                )));
            }
            let mut conn = sqlx::PgConnection::connect_with(&connect)
                .await
                .map_err(StoreError::from_sqlx)?;
            let ddl = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
            sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                .execute(&mut conn)
                .await
                .map_err(StoreError::from_sqlx)?;
            conn.close().await.map_err(StoreError::from_sqlx)?;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let pool = PoolOptions::<Postgres>::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_millis(options.acquire_timeout_ms))
            .connect_with(connect)
            .await
            .map_err(StoreError::from_sqlx)?;
        let mut store = SqlStore {
            writer: pool.clone(),
            reader: pool.clone(),
            checkpointer: None,
            group: None,
            components,
        };
        store.migrate().await?;
        // The orders and inventory writers take their outbox's lock with their `BEGIN`
        // (see `orders` and `inventory`).
        store.group = group_writer(components, &pool, |c| Batching {
            begin: match c {
                Component::Orders => crate::orders::PG_BATCH_BEGIN,
                Component::Inventory => crate::inventory::PG_BATCH_BEGIN,
                _ => "BEGIN",
            },
            rolled_back: None,
        })?;
        Ok(store)
    }
}

/// Implements migrations and [`CatalogStore`] for `SqlStore<$db>`.
///
/// `$dialect` selects the DDL of each migration; `$lock` is a statement run inside a
/// write transaction before its outbox inserts (empty for none); `$for_update` is the
/// row-lock suffix for reading the projector position; `$numbered` selects `$n`
/// placeholders over `?` in generated multi-row statements.
macro_rules! sql_store {
    ($db:ty, $name:literal, $dialect:ident, $lock:literal, $for_update:literal, $numbered:literal) => {
        impl SqlStore<$db> {
            async fn migrate(&self) -> Result<()> {
                let mut tx = self.writer.begin().await.map_err(StoreError::from_sqlx)?;
                if !$lock.is_empty() {
                    sqlx::query($lock).execute(&mut *tx).await.map_err(StoreError::from_sqlx)?;
                }
                sqlx::query(CREATE_MIGRATIONS_TABLE)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                let applied: Vec<i64> = sqlx::query_scalar::<_, i64>(
                    "SELECT version FROM surge_schema_migrations",
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                for m in MIGRATIONS
                    .iter()
                    .filter(|m| self.components.contains(&m.component) && !applied.contains(&m.version))
                {
                    for stmt in m.$dialect {
                        sqlx::query(*stmt)
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                    }
                    sqlx::query(
                        "INSERT INTO surge_schema_migrations (version, name, applied_at_ms) \
                         VALUES ($1, $2, $3)",
                    )
                    .bind(m.version)
                    .bind(m.name)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    tracing::info!(version = m.version, name = m.name, backend = $name, "applied migration");
                }
                tx.commit().await.map_err(StoreError::from_sqlx)
            }

            async fn insert_outbox(
                tx: &mut sqlx::Transaction<'static, $db>,
                kind: OutboxKind,
                product_id: &str,
                market: Option<&str>,
                at: i64,
            ) -> Result<i64> {
                sqlx::query_scalar::<_, i64>(
                    "INSERT INTO outbox (kind, product_id, market, created_at_ms) \
                     VALUES ($1, $2, $3, $4) RETURNING position",
                )
                .bind(kind.as_str())
                .bind(product_id)
                .bind(market)
                .bind(at)
                .fetch_one(&mut **tx)
                .await
                .map_err(StoreError::from_sqlx)
            }

            /// An offer of `product_id` in `market` from a row whose columns from `skip` on
            /// are merchant_id, price_minor, currency, stock, updated_at_ms.
            fn offer_at(
                row: &<$db as Database>::Row,
                product_id: String,
                market: String,
                skip: usize,
            ) -> std::result::Result<Offer, sqlx::Error> {
                Ok(Offer {
                    product_id,
                    market,
                    merchant_id: row.try_get(skip)?,
                    price_minor: row.try_get(skip + 1)?,
                    currency: row.try_get(skip + 2)?,
                    stock: row.try_get(skip + 3)?,
                    updated_at_ms: row.try_get(skip + 4)?,
                })
            }

            async fn lock_outbox(tx: &mut sqlx::Transaction<'static, $db>) -> Result<()> {
                if !$lock.is_empty() {
                    sqlx::query($lock).execute(&mut **tx).await.map_err(StoreError::from_sqlx)?;
                }
                Ok(())
            }

            async fn put_products_inner(&self, products: &[ProductWrite]) -> Result<Vec<WriteReceipt>> {
                let at = now_ms();
                let mut tx = self.writer.begin().await.map_err(StoreError::from_sqlx)?;
                let mut versions = Vec::with_capacity(products.len());
                for p in products {
                    let version = sqlx::query_scalar::<_, i64>(
                        "INSERT INTO products (id, body, version, updated_at_ms) VALUES ($1, $2, 1, $3) \
                         ON CONFLICT (id) DO UPDATE SET body = excluded.body, \
                         version = products.version + 1, updated_at_ms = excluded.updated_at_ms \
                         RETURNING version",
                    )
                    .bind(p.id.as_str())
                    .bind(p.body.as_ref())
                    .bind(at)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    versions.push(version);
                }
                Self::lock_outbox(&mut tx).await?;
                let mut receipts = Vec::with_capacity(products.len());
                for (p, version) in products.iter().zip(versions) {
                    let position = Self::insert_outbox(&mut tx, OutboxKind::Product, &p.id, None, at).await?;
                    receipts.push(WriteReceipt { id: p.id.clone(), version, position });
                }
                tx.commit().await.map_err(StoreError::from_sqlx)?;
                Ok(receipts)
            }

            async fn delete_product_inner(&self, id: &str) -> Result<bool> {
                let mut tx = self.writer.begin().await.map_err(StoreError::from_sqlx)?;
                let deleted = sqlx::query("DELETE FROM products WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?
                    .rows_affected();
                if deleted == 0 {
                    return Ok(false);
                }
                Self::lock_outbox(&mut tx).await?;
                Self::insert_outbox(&mut tx, OutboxKind::ProductDeleted, id, None, now_ms()).await?;
                tx.commit().await.map_err(StoreError::from_sqlx)?;
                Ok(true)
            }

            async fn upsert_offers_inner(&self, offers: &[Offer]) -> Result<u64> {
                let at = now_ms();
                let mut tx = self.writer.begin().await.map_err(StoreError::from_sqlx)?;
                let mut touched: Vec<(&str, &str)> = Vec::new();
                let mut seen: std::collections::HashSet<(&str, &str)> =
                    std::collections::HashSet::with_capacity(offers.len());
                // Within one statement a key may appear once (PostgreSQL refuses to update a
                // row twice), so the last write of a repeated (product, market, merchant) wins.
                let mut latest: std::collections::HashMap<(&str, &str, &str), &Offer> =
                    std::collections::HashMap::with_capacity(offers.len());
                let mut order = Vec::with_capacity(offers.len());
                for o in offers {
                    let key = (o.product_id.as_str(), o.market.as_str(), o.merchant_id.as_str());
                    if latest.insert(key, o).is_none() {
                        order.push(key);
                    }
                    let pair = (o.product_id.as_str(), o.market.as_str());
                    if seen.insert(pair) {
                        touched.push(pair);
                    }
                }
                let rows: Vec<&Offer> = order.iter().filter_map(|k| latest.get(k).copied()).collect();
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    let sql = multi_row(
                        $numbered,
                        "INSERT INTO offers (product_id, market, merchant_id, price_minor, currency, stock, updated_at_ms) VALUES",
                        chunk.len(),
                        7,
                        "ON CONFLICT (product_id, market, merchant_id) DO UPDATE SET \
                         price_minor = excluded.price_minor, currency = excluded.currency, \
                         stock = excluded.stock, updated_at_ms = excluded.updated_at_ms",
                    );
                    let mut q = sqlx::query(sql);
                    for o in chunk {
                        q = q
                            .bind(o.product_id.as_str())
                            .bind(o.market.as_str())
                            .bind(o.merchant_id.as_str())
                            .bind(o.price_minor)
                            .bind(o.currency.as_str())
                            .bind(o.stock)
                            .bind(at);
                    }
                    q.execute(&mut *tx).await.map_err(StoreError::from_sqlx)?;
                }
                Self::lock_outbox(&mut tx).await?;
                for chunk in touched.chunks(ROWS_PER_STATEMENT) {
                    let sql = multi_row(
                        $numbered,
                        "INSERT INTO outbox (kind, product_id, market, created_at_ms) VALUES",
                        chunk.len(),
                        4,
                        "",
                    );
                    let mut q = sqlx::query(sql);
                    for (product_id, market) in chunk {
                        q = q.bind(OutboxKind::Offers.as_str()).bind(*product_id).bind(*market).bind(at);
                    }
                    q.execute(&mut *tx).await.map_err(StoreError::from_sqlx)?;
                }
                tx.commit().await.map_err(StoreError::from_sqlx)?;
                Ok(touched.len() as u64)
            }

            async fn apply_views_inner(&self, batch: &ViewBatch) -> Result<()> {
                let mut tx = self.writer.begin().await.map_err(StoreError::from_sqlx)?;
                let found: i64 = sqlx::query_scalar(concat!(
                    "SELECT position FROM projector_position WHERE name = 'catalog'",
                    $for_update
                ))
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                if found != batch.from_position {
                    return Err(StoreError::PositionConflict { expected: batch.from_position, found });
                }
                for chunk in batch.deletes.chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::query(multi_row($numbered, "DELETE FROM views WHERE key IN (VALUES", chunk.len(), 1, ")"));
                    for key in chunk {
                        q = q.bind(key.as_str());
                    }
                    q.execute(&mut *tx).await.map_err(StoreError::from_sqlx)?;
                }
                for chunk in batch.puts.chunks(ROWS_PER_STATEMENT) {
                    let sql = multi_row(
                        $numbered,
                        "INSERT INTO views (key, etag, gzip) VALUES",
                        chunk.len(),
                        3,
                        "ON CONFLICT (key) DO UPDATE SET etag = excluded.etag, gzip = excluded.gzip",
                    );
                    let mut q = sqlx::query(sql);
                    for put in chunk {
                        q = q.bind(put.key.as_str()).bind(put.view.etag.as_str()).bind(put.view.gzip.as_ref());
                    }
                    q.execute(&mut *tx).await.map_err(StoreError::from_sqlx)?;
                }
                sqlx::query("UPDATE projector_position SET position = $1 WHERE name = 'catalog'")
                    .bind(batch.to_position)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                tx.commit().await.map_err(StoreError::from_sqlx)
            }
        }

        #[async_trait]
        impl CatalogStore for SqlStore<$db> {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn put_products(&self, products: &[ProductWrite]) -> Result<Vec<WriteReceipt>> {
                let started = Instant::now();
                let r = self.put_products_inner(products).await;
                record($name, "put_products", started, &r);
                r
            }

            async fn delete_product(&self, id: &str) -> Result<bool> {
                let started = Instant::now();
                let r = self.delete_product_inner(id).await;
                record($name, "delete_product", started, &r);
                r
            }

            async fn get_product(&self, id: &str) -> Result<Option<ProductRecord>> {
                let started = Instant::now();
                let r = sqlx::query("SELECT body, version, updated_at_ms FROM products WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)
                    .and_then(|row| {
                        row.map(|row| {
                            Ok(ProductRecord {
                                id: id.to_owned(),
                                body: Bytes::from(row.try_get::<Vec<u8>, _>(0)?),
                                version: row.try_get(1)?,
                                updated_at_ms: row.try_get(2)?,
                            })
                        })
                        .transpose()
                        .map_err(StoreError::from_sqlx)
                    });
                record($name, "get_product", started, &r);
                r
            }

            async fn upsert_offers(&self, offers: &[Offer]) -> Result<u64> {
                let started = Instant::now();
                let r = self.upsert_offers_inner(offers).await;
                record($name, "upsert_offers", started, &r);
                r
            }

            async fn offers_for(&self, product_id: &str, market: &str) -> Result<Vec<Offer>> {
                let started = Instant::now();
                let r = sqlx::query(
                    "SELECT merchant_id, price_minor, currency, stock, updated_at_ms FROM offers \
                     WHERE product_id = $1 AND market = $2 ORDER BY merchant_id",
                )
                .bind(product_id)
                .bind(market)
                .fetch_all(&self.reader)
                .await
                .and_then(|rows| {
                    rows.into_iter()
                        .map(|row| Self::offer_at(&row, product_id.to_owned(), market.to_owned(), 0))
                        .collect()
                })
                .map_err(StoreError::from_sqlx);
                record($name, "offers_for", started, &r);
                r
            }

            async fn offers_page(&self, after: Option<&Offer>, limit: u32) -> Result<Vec<Offer>> {
                let started = Instant::now();
                // Product ids are never empty, so ('', '', '') is before every offer.
                let (p, m, x) = after.map_or(("", "", ""), |o| {
                    (o.product_id.as_str(), o.market.as_str(), o.merchant_id.as_str())
                });
                let r = sqlx::query(
                    "SELECT product_id, market, merchant_id, price_minor, currency, stock, updated_at_ms \
                     FROM offers WHERE (product_id, market, merchant_id) > ($1, $2, $3) \
                     ORDER BY product_id, market, merchant_id LIMIT $4",
                )
                .bind(p)
                .bind(m)
                .bind(x)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .and_then(|rows| {
                    rows.into_iter()
                        .map(|row| Self::offer_at(&row, row.try_get(0)?, row.try_get(1)?, 2))
                        .collect()
                })
                .map_err(StoreError::from_sqlx);
                record($name, "offers_page", started, &r);
                r
            }

            async fn outbox_head(&self) -> Result<i64> {
                let started = Instant::now();
                let r = sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(position) FROM outbox")
                    .fetch_one(&self.reader)
                    .await
                    .map(|v| v.unwrap_or(0))
                    .map_err(StoreError::from_sqlx);
                // An empty outbox after pruning still has its applied position as head.
                let r = match r {
                    Ok(0) => self.applied_position().await,
                    other => other,
                };
                record($name, "outbox_head", started, &r);
                r
            }

            async fn read_outbox(&self, after: i64, limit: u32) -> Result<Vec<OutboxEntry>> {
                let started = Instant::now();
                let r = sqlx::query(
                    "SELECT position, kind, product_id, market, created_at_ms FROM outbox \
                     WHERE position > $1 ORDER BY position LIMIT $2",
                )
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(StoreError::from_sqlx)
                .and_then(|rows| {
                    rows.into_iter()
                        .map(|row| {
                            let kind: String = row.try_get(1).map_err(StoreError::from_sqlx)?;
                            Ok(OutboxEntry {
                                position: row.try_get(0).map_err(StoreError::from_sqlx)?,
                                kind: OutboxKind::parse(&kind).ok_or_else(|| {
                                    StoreError::Corrupt(format!("unknown outbox kind {kind:?}"))
                                })?,
                                product_id: row.try_get(2).map_err(StoreError::from_sqlx)?,
                                market: row.try_get(3).map_err(StoreError::from_sqlx)?,
                                created_at_ms: row.try_get(4).map_err(StoreError::from_sqlx)?,
                            })
                        })
                        .collect()
                });
                record($name, "read_outbox", started, &r);
                r
            }

            async fn applied_position(&self) -> Result<i64> {
                sqlx::query_scalar("SELECT position FROM projector_position WHERE name = 'catalog'")
                    .fetch_one(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)
            }

            async fn apply_views(&self, batch: &ViewBatch) -> Result<()> {
                let started = Instant::now();
                let r = self.apply_views_inner(batch).await;
                record($name, "apply_views", started, &r);
                r
            }

            async fn prune_outbox(&self, up_to: i64, max_rows: u32) -> Result<u64> {
                let started = Instant::now();
                let r = sqlx::query(
                    "DELETE FROM outbox WHERE position IN \
                     (SELECT position FROM outbox WHERE position <= $1 ORDER BY position LIMIT $2)",
                )
                .bind(up_to)
                .bind(i64::from(max_rows))
                .execute(&self.writer)
                .await
                .map(|r| r.rows_affected())
                .map_err(StoreError::from_sqlx);
                record($name, "prune_outbox", started, &r);
                r
            }

            async fn get_view(&self, key: &str) -> Result<Option<StoredView>> {
                let started = Instant::now();
                let r = sqlx::query("SELECT etag, gzip FROM views WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.reader)
                    .await
                    .and_then(|row| {
                        row.map(|row| {
                            Ok(StoredView {
                                etag: row.try_get(0)?,
                                gzip: Bytes::from(row.try_get::<Vec<u8>, _>(1)?),
                            })
                        })
                        .transpose()
                    })
                    .map_err(StoreError::from_sqlx);
                record($name, "get_view", started, &r);
                r
            }

            async fn counts(&self) -> Result<(i64, i64, i64)> {
                let row = sqlx::query(
                    "SELECT (SELECT COUNT(*) FROM products), (SELECT COUNT(*) FROM offers), \
                     (SELECT COUNT(*) FROM views)",
                )
                .fetch_one(&self.reader)
                .await
                .map_err(StoreError::from_sqlx)?;
                Ok((
                    row.try_get(0).map_err(StoreError::from_sqlx)?,
                    row.try_get(1).map_err(StoreError::from_sqlx)?,
                    row.try_get(2).map_err(StoreError::from_sqlx)?,
                ))
            }

            async fn close(&self) {
                self.shut().await;
            }
        }
    };
}

sql_store!(Sqlite, "sqlite", sqlite, "", "", false);
sql_store!(
    Postgres,
    "postgres",
    postgres,
    "SELECT pg_advisory_xact_lock(7368211)",
    " FOR UPDATE",
    true
);
