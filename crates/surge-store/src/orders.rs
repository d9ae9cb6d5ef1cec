//! Storage for checkout's orders service: orders, the saga log that drives each one,
//! the idempotency keys of `POST /checkout`, the checkout outbox and the admin audit
//! trail.
//!
//! The order row *is* the saga's state: its `step`, `saga_state`, attempt counter and
//! next wake-up live beside the order's status, and every change of them goes through
//! [`OrdersStore::advance`], a compare-and-set on the row's `version` that also appends
//! the step's log lines and outbox events in the same transaction. So a step's result
//! and the next step's intent are durable together, and two drivers of one saga (a
//! request and the recovery poller, or two nodes) can never both move it: the second
//! one's version no longer matches.
//!
//! Claiming an idempotency key, creating the order, logging its first intent and
//! writing the `OrderPlaced` event happen in one transaction ([`OrdersStore::create`]).
//!
//! ## Why the outbox takes a lock on PostgreSQL
//! As in the catalog store: a relay reads the outbox by position, so commits must land
//! in position order. SQLite has one writer. On PostgreSQL the store's group writer
//! takes a transaction-scoped advisory lock with the `BEGIN` of every batch
//! ([`PG_BATCH_BEGIN`]), so batches of all processes sharing the database commit one
//! after the other. Every write of the store goes through that writer, so no write takes
//! the lock itself.

use async_trait::async_trait;
use sqlx::{Postgres, Row, Sqlite};

use crate::group::{Pace, Step, chain};
use crate::metrics::record;
use crate::sql::{SqlStore, now_ms, prune_outbox};
use crate::{Result, StoreError};

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaState {
    /// Moving forward (before or after the point of no return).
    Running,
    /// Running its compensations.
    Compensating,
    /// A step kept failing transiently until its deadline: waits for an operator
    /// (or its next retry); listed as stuck.
    Paused,
    /// A compensation kept failing past its deadline: a person must look at it.
    Review,
    /// Finished: the order is confirmed or cancelled.
    Done,
}

impl SagaState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Compensating => "compensating",
            SagaState::Paused => "paused",
            SagaState::Review => "review",
            SagaState::Done => "done",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => SagaState::Running,
            "compensating" => SagaState::Compensating,
            "paused" => SagaState::Paused,
            "review" => SagaState::Review,
            "done" => SagaState::Done,
            _ => return None,
        })
    }
}

/// An order and the state of its saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    /// The order id (also the saga id).
    pub id: String,
    /// The user who placed it.
    pub user_id: String,
    /// The market, e.g. `DE`.
    pub market: String,
    /// ISO 4217 currency of `total_minor`.
    pub currency: String,
    /// What the order costs, in minor units.
    pub total_minor: i64,
    /// The order's content as the checkout service wrote it (JSON: lines, address…).
    pub document: String,
    /// What the user sees: `pending`, `confirmed` or `cancelled`.
    pub status: String,
    /// Why it was cancelled, in words the user can read.
    pub reason: Option<String>,
    /// Where the saga is.
    pub saga_state: SagaState,
    /// The step the saga runs next (or ran last, once done).
    pub step: String,
    /// Failed attempts of the current step.
    pub attempts: i64,
    /// When the saga wants to run next, ms since the epoch.
    pub next_at_ms: i64,
    /// When the current step's transient retries give up, ms since the epoch.
    pub step_deadline_ms: i64,
    /// Which orchestrator drives it.
    pub lease_owner: String,
    /// Until when that orchestrator's claim holds, ms since the epoch.
    pub lease_until_ms: i64,
    /// Bumped by every [`OrdersStore::advance`].
    pub version: i64,
    /// Created at, ms since the epoch.
    pub created_at_ms: i64,
    /// Last changed at, ms since the epoch.
    pub updated_at_ms: i64,
}

/// One line of a saga's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLog {
    /// The step, e.g. `hold_stock`.
    pub step: String,
    /// What happened: `intent`, `done`, `failed`, `retry`, `compensated`…
    pub outcome: String,
    /// Words for people (a decline reason, an error).
    pub detail: String,
    /// When, ms since the epoch (set by the store when 0).
    pub at_ms: i64,
}

/// An event for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id (consumers dedupe on it), e.g. `<order>:OrderConfirmed`.
    pub event_id: String,
    /// `OrderPlaced`, `OrderConfirmed`, `OrderCancelled`…
    pub kind: String,
    /// The order it is about.
    pub order_id: String,
    /// The event body (JSON).
    pub payload: String,
}

/// An event read back from the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutEvent {
    /// Position in the outbox (increasing).
    pub position: i64,
    /// The event.
    pub event: NewEvent,
    /// Written at, ms since the epoch.
    pub created_at_ms: i64,
}

/// What [`OrdersStore::create`] writes.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// The order row (its `version` is ignored: a new order has version 1).
    pub order: OrderRow,
    /// The caller's `Idempotency-Key`.
    pub idempotency_key: String,
    /// A hash of the request body, to tell a retry from a different request.
    pub request_hash: String,
    /// Until when a second request with this key gets 409 (the first is still running).
    pub locked_until_ms: i64,
    /// When the key may be forgotten.
    pub key_expires_at_ms: i64,
    /// The first log lines.
    pub log: Vec<StepLog>,
    /// The first events (`OrderPlaced`).
    pub events: Vec<NewEvent>,
}

/// An idempotency key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The hash of the request that claimed it.
    pub request_hash: String,
    /// The order it created.
    pub order_id: String,
    /// The stored response: status, content type, body.
    pub response: Option<(u16, String, Vec<u8>)>,
    /// Until when the first request holds it.
    pub locked_until_ms: i64,
    /// When it may be forgotten (a later request with the key starts afresh).
    pub expires_at_ms: i64,
}

/// What [`OrdersStore::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The key was free (or expired): the order exists now.
    New,
    /// The key is taken (and not expired): nothing was written.
    Existing(KeyRecord),
}

/// A move of a saga: compare-and-set on `version`, plus log lines and events.
#[derive(Debug, Clone, Default)]
pub struct Advance {
    /// The order.
    pub order_id: String,
    /// The version the caller read; the move fails when the row has another.
    pub expected_version: i64,
    /// The new saga state.
    pub saga_state: Option<SagaState>,
    /// The new step.
    pub step: Option<String>,
    /// The new user-visible status.
    pub status: Option<String>,
    /// The cancellation reason.
    pub reason: Option<String>,
    /// The new attempt counter.
    pub attempts: i64,
    /// When to run next.
    pub next_at_ms: i64,
    /// The step's deadline.
    pub step_deadline_ms: i64,
    /// Who drives it, and until when.
    pub lease: Option<(String, i64)>,
    /// Log lines to append.
    pub log: Vec<StepLog>,
    /// Events to write.
    pub events: Vec<NewEvent>,
    /// The answer to store on the order's idempotency key, unless one is stored
    /// already (a saga that finishes writes its order's answer in the same
    /// transaction, instead of the request doing it afterwards).
    pub response: Option<KeyResponse>,
}

/// An answer stored on an order's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyResponse {
    /// The key's user (the order's).
    pub user_id: String,
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

/// One line of the admin audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The order.
    pub order_id: String,
    /// Who did it (the admin token's name, or `system`).
    pub actor: String,
    /// What: `retry`, `force_compensate`…
    pub action: String,
    /// Free text.
    pub note: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// The orders store (which also keeps the fulfilment slots orders take).
#[async_trait]
pub trait OrdersStore: crate::FulfilmentStore + Send + Sync + 'static {
    /// A short name for logs and metrics (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Claims the idempotency key of `new` and, if it was free or expired, creates the
    /// order with its first log lines and events, in one transaction.
    async fn create(&self, new: &NewOrder) -> Result<Created>;

    /// The stored idempotency key of a user.
    async fn key(&self, user_id: &str, key: &str) -> Result<Option<KeyRecord>>;

    /// Stores the response of the request that holds the key (once: a stored response
    /// is never replaced). Returns whether this call stored it.
    async fn store_response(
        &self,
        user_id: &str,
        key: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<bool>;

    /// Moves the key's lock forward if it has run out (the request that held it died).
    /// Returns whether this caller holds it now.
    async fn relock_key(
        &self,
        user_id: &str,
        key: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool>;

    /// Deletes at most `limit` keys that expired before `now_ms`. Returns how many.
    async fn purge_keys(&self, now_ms: i64, limit: u32) -> Result<u64>;

    /// Deletes at most `limit` outbox events written before `before_ms`, oldest first.
    /// Returns how many.
    async fn prune_events(&self, before_ms: i64, limit: u32) -> Result<u64>;

    /// Moves a saga. Returns the new row, or `None` when its version was not
    /// `expected_version` (someone else moved it first).
    async fn advance(&self, advance: &Advance) -> Result<Option<OrderRow>>;

    /// One order.
    async fn order(&self, id: &str) -> Result<Option<OrderRow>>;

    /// An order's saga history, oldest first.
    async fn log(&self, id: &str) -> Result<Vec<StepLog>>;

    /// A user's orders, newest first, strictly before the cursor `(created_at_ms, id)`.
    async fn orders_of(
        &self,
        user_id: &str,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<OrderRow>>;

    /// Sagas in `state` (any non-done state when `None`) last changed before
    /// `changed_before_ms`, oldest first, after the cursor `(updated_at_ms, id)`.
    async fn sagas(
        &self,
        state: Option<SagaState>,
        changed_before_ms: i64,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<OrderRow>>;

    /// Claims up to `limit` running or compensating sagas for `owner`, leasing them
    /// until `lease_until_ms`: those whose lease ran out and that are due (`next_at_ms
    /// <= now_ms`), and with `reclaim_own` every one whose lease is `owner`'s and that
    /// is due before `lease_until_ms`, lease or not (a node that restarts takes its
    /// sagas back at once; one queued for later waits until it is due, rather than
    /// holding a driver until then).
    async fn claim_due(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        reclaim_own: bool,
        limit: u32,
    ) -> Result<Vec<OrderRow>>;

    /// Outbox events after `position`, oldest first.
    async fn events(&self, after: i64, limit: u32) -> Result<Vec<CheckoutEvent>>;

    /// Appends to the audit trail.
    async fn audit(&self, entry: &AuditEntry) -> Result<()>;

    /// An order's audit trail, oldest first.
    async fn audit_of(&self, order_id: &str) -> Result<Vec<AuditEntry>>;

    /// Counts of orders by status, for tests and the admin page.
    async fn count_by_status(&self) -> Result<Vec<(String, i64)>>;

    /// Closes the connections.
    async fn close(&self);
}

/// A query on database `DB` with its arguments.
type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>;

/// Most saga log lines one statement appends (5 parameters each).
const LOG_LINES_PER_STATEMENT: usize = 100;

/// An `INSERT` of `lines` saga log lines for order `$1`, numbered after its last line:
/// line `k` (from 1) is bound as `($k, step, outcome, detail, at_ms)`. The same text for
/// SQLite and PostgreSQL (both name the columns of a `VALUES` list `column1`…).
fn saga_log_insert(lines: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO saga_log (order_id, seq, step, outcome, detail, at_ms) \
         SELECT $1, b.base + v.column1, v.column2, v.column3, v.column4, v.column5 FROM (VALUES ",
    );
    for l in 0..lines {
        let p = 2 + l * 5;
        if l > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${})",
            p,
            p + 1,
            p + 2,
            p + 3,
            p + 4
        ));
    }
    sql.push_str(
        ") AS v CROSS JOIN (SELECT COALESCE(MAX(seq), 0) AS base FROM saga_log WHERE order_id = $1) AS b",
    );
    sql
}

/// The columns of an [`OrderRow`], in decoding order (a macro so that `concat!` can build
/// statements as literals).
macro_rules! order_columns {
    () => {
        "id, user_id, market, currency, total_minor, document, status, reason, \
         saga_state, step, attempts, next_at_ms, step_deadline_ms, lease_owner, lease_until_ms, version, \
         created_at_ms, updated_at_ms"
    };
}

const ORDER_COLUMNS: &str = order_columns!();

/// Claims an idempotency key when it is free or has expired; returns a row when it did.
const CLAIM_KEY: &str = "INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, status, \
     content_type, body, locked_until_ms, expires_at_ms) VALUES ($1, $2, $3, $4, NULL, NULL, NULL, $5, $6) \
     ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash, \
     order_id = excluded.order_id, status = NULL, content_type = NULL, body = NULL, \
     locked_until_ms = excluded.locked_until_ms, expires_at_ms = excluded.expires_at_ms \
     WHERE idempotency_keys.expires_at_ms <= $7 RETURNING 1";

/// Inserts an order at version 1.
const INSERT_ORDER: &str = concat!(
    "INSERT INTO orders (",
    order_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 1, $16, $16)"
);

/// Moves a saga: a compare-and-set on its version; returns the row when it applied.
const ADVANCE_ORDER: &str = concat!(
    "UPDATE orders SET saga_state = COALESCE($1, saga_state), step = COALESCE($2, step), \
     status = COALESCE($3, status), reason = COALESCE($4, reason), attempts = $5, \
     next_at_ms = $6, step_deadline_ms = $7, lease_owner = COALESCE($8, lease_owner), \
     lease_until_ms = COALESCE($9, lease_until_ms), version = version + 1, updated_at_ms = $10 \
     WHERE id = $11 AND version = $12 RETURNING ",
    order_columns!()
);

/// Stores the answer on an order's key (the key of `user_id` naming the order) unless
/// one is stored already.
const STORE_ORDER_RESPONSE: &str = "UPDATE idempotency_keys SET status = $1, content_type = $2, body = $3 \
     WHERE user_id = $4 AND order_id = $5 AND status IS NULL";

/// How the PostgreSQL group writer starts a batch: with the checkout outbox lock.
pub(crate) const PG_BATCH_BEGIN: &str = "BEGIN; SELECT pg_advisory_xact_lock(7368212)";

/// Writes an event to the checkout outbox (once per event id).
const INSERT_EVENT: &str = "INSERT INTO checkout_outbox (event_id, kind, order_id, payload, created_at_ms) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING";

macro_rules! orders_store {
    ($db:ty, $name:literal) => {
        impl SqlStore<$db> {
            fn order_row(row: &<$db as sqlx::Database>::Row) -> Result<OrderRow> {
                let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                let state: String = row.try_get(8).map_err(get)?;
                Ok(OrderRow {
                    id: row.try_get(0).map_err(get)?,
                    user_id: row.try_get(1).map_err(get)?,
                    market: row.try_get(2).map_err(get)?,
                    currency: row.try_get(3).map_err(get)?,
                    total_minor: row.try_get(4).map_err(get)?,
                    document: row.try_get(5).map_err(get)?,
                    status: row.try_get(6).map_err(get)?,
                    reason: row.try_get(7).map_err(get)?,
                    saga_state: SagaState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("saga state {state:?}")))?,
                    step: row.try_get(9).map_err(get)?,
                    attempts: row.try_get(10).map_err(get)?,
                    next_at_ms: row.try_get(11).map_err(get)?,
                    step_deadline_ms: row.try_get(12).map_err(get)?,
                    lease_owner: row.try_get(13).map_err(get)?,
                    lease_until_ms: row.try_get(14).map_err(get)?,
                    version: row.try_get(15).map_err(get)?,
                    created_at_ms: row.try_get(16).map_err(get)?,
                    updated_at_ms: row.try_get(17).map_err(get)?,
                })
            }

            fn bind_claim<'q>(q: Query<'q, $db>, new: &NewOrder, at: i64) -> Query<'q, $db> {
                q.bind(new.order.user_id.as_str())
                    .bind(new.idempotency_key.as_str())
                    .bind(new.request_hash.as_str())
                    .bind(new.order.id.as_str())
                    .bind(new.locked_until_ms)
                    .bind(new.key_expires_at_ms)
                    .bind(at)
            }

            fn bind_order<'q>(q: Query<'q, $db>, o: &OrderRow, at: i64) -> Query<'q, $db> {
                q.bind(o.id.as_str())
                    .bind(o.user_id.as_str())
                    .bind(o.market.as_str())
                    .bind(o.currency.as_str())
                    .bind(o.total_minor)
                    .bind(o.document.as_str())
                    .bind(o.status.as_str())
                    .bind(o.reason.as_deref())
                    .bind(o.saga_state.as_str())
                    .bind(o.step.as_str())
                    .bind(o.attempts)
                    .bind(o.next_at_ms)
                    .bind(o.step_deadline_ms)
                    .bind(o.lease_owner.as_str())
                    .bind(o.lease_until_ms)
                    .bind(if o.created_at_ms == 0 { at } else { o.created_at_ms })
            }

            fn bind_advance<'q>(q: Query<'q, $db>, a: &Advance, at: i64) -> Query<'q, $db> {
                q.bind(a.saga_state.map(SagaState::as_str))
                    .bind(a.step.as_deref())
                    .bind(a.status.as_deref())
                    .bind(a.reason.as_deref())
                    .bind(a.attempts)
                    .bind(a.next_at_ms)
                    .bind(a.step_deadline_ms)
                    .bind(a.lease.as_ref().map(|l| l.0.as_str()))
                    .bind(a.lease.as_ref().map(|l| l.1))
                    .bind(at)
                    .bind(a.order_id.as_str())
                    .bind(a.expected_version)
            }

            fn bind_log<'q>(
                mut q: Query<'q, $db>,
                order_id: &str,
                lines: &[StepLog],
                at: i64,
            ) -> Query<'q, $db> {
                q = q.bind(order_id);
                for (k, line) in lines.iter().enumerate() {
                    q = q
                        .bind(i64::try_from(k).unwrap_or(i64::MAX).saturating_add(1))
                        .bind(line.step.as_str())
                        .bind(line.outcome.as_str())
                        .bind(line.detail.as_str())
                        .bind(if line.at_ms == 0 { at } else { line.at_ms });
                }
                q
            }

            fn bind_response<'q>(q: Query<'q, $db>, order_id: &'q str, r: &'q KeyResponse) -> Query<'q, $db> {
                q.bind(i64::from(r.status))
                    .bind(r.content_type.as_str())
                    .bind(r.body.as_slice())
                    .bind(r.user_id.as_str())
                    .bind(order_id)
            }

            fn bind_event<'q>(q: Query<'q, $db>, e: &NewEvent, at: i64) -> Query<'q, $db> {
                q.bind(e.event_id.as_str())
                    .bind(e.kind.as_str())
                    .bind(e.order_id.as_str())
                    .bind(e.payload.as_str())
                    .bind(at)
            }

            /// The statements that append `log` and `events`, and binds their arguments
            /// (in order) to a query.
            fn append_statements(log: &[StepLog], events: &[NewEvent]) -> Vec<std::borrow::Cow<'static, str>> {
                let mut texts: Vec<std::borrow::Cow<'static, str>> = log
                    .chunks(LOG_LINES_PER_STATEMENT)
                    .map(|chunk| saga_log_insert(chunk.len()).into())
                    .collect();
                texts.extend(events.iter().map(|_| INSERT_EVENT.into()));
                texts
            }

            fn bind_append<'q>(
                mut q: Query<'q, $db>,
                order_id: &str,
                log: &[StepLog],
                events: &[NewEvent],
                at: i64,
            ) -> Query<'q, $db> {
                for chunk in log.chunks(LOG_LINES_PER_STATEMENT) {
                    q = Self::bind_log(q, order_id, chunk, at);
                }
                for e in events {
                    q = Self::bind_event(q, e, at);
                }
                q
            }

            async fn append(
                conn: &mut <$db as sqlx::Database>::Connection,
                order_id: &str,
                log: &[StepLog],
                events: &[NewEvent],
                at: i64,
            ) -> Result<()> {
                // One statement per chunk of lines, numbering them after the order's last
                // line (which the statement reads itself).
                for chunk in log.chunks(LOG_LINES_PER_STATEMENT) {
                    Self::bind_log(sqlx::query(sqlx::AssertSqlSafe(saga_log_insert(chunk.len()))), order_id, chunk, at)
                        .execute(&mut *conn)
                        .await
                        .map_err(StoreError::from_sqlx)?;
                }
                for e in events {
                    Self::bind_event(sqlx::query(INSERT_EVENT), e, at)
                        .execute(&mut *conn)
                        .await
                        .map_err(StoreError::from_sqlx)?;
                }
                Ok(())
            }

            /// Reads an idempotency key through `e`.
            async fn key_in<'e, E>(e: E, user_id: &str, key: &str) -> Result<Option<KeyRecord>>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let row = sqlx::query(
                    "SELECT request_hash, order_id, status, content_type, body, locked_until_ms, \
                     expires_at_ms FROM idempotency_keys WHERE user_id = $1 AND key = $2",
                )
                .bind(user_id)
                .bind(key)
                .fetch_optional(e)
                .await
                .map_err(StoreError::from_sqlx)?;
                let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                row.map(|row| {
                    let status: Option<i64> = row.try_get(2).map_err(get)?;
                    let content_type: Option<String> = row.try_get(3).map_err(get)?;
                    let body: Option<Vec<u8>> = row.try_get(4).map_err(get)?;
                    let response = match (status, content_type, body) {
                        (Some(s), Some(c), Some(b)) => Some((
                            u16::try_from(s).map_err(|_| StoreError::Corrupt(format!("status {s}")))?,
                            c,
                            b,
                        )),
                        _ => None,
                    };
                    Ok(KeyRecord {
                        request_hash: row.try_get(0).map_err(get)?,
                        order_id: row.try_get(1).map_err(get)?,
                        response,
                        locked_until_ms: row.try_get(5).map_err(get)?,
                        expires_at_ms: row.try_get(6).map_err(get)?,
                    })
                })
                .transpose()
            }

            /// The statements of [`OrdersStore::create`].
            async fn create_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                new: &NewOrder,
                at: i64,
                pace: Pace,
            ) -> Result<Step<Created>> {
                let o = &new.order;
                if pace == Pace::Fast && new.log.len() <= LOG_LINES_PER_STATEMENT {
                    // Everything at once, betting that the key is free: the claim is the
                    // only statement that returns a row (one log statement at most: on
                    // PostgreSQL a second would number its lines on the same snapshot).
                    let mut texts: Vec<std::borrow::Cow<'static, str>> = vec![CLAIM_KEY.into(), INSERT_ORDER.into()];
                    texts.extend(Self::append_statements(&new.log, &new.events));
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(chain::<$db, _>(&texts, &[0])));
                    q = Self::bind_claim(q, new, at);
                    q = Self::bind_order(q, o, at);
                    q = Self::bind_append(q, &o.id, &new.log, &new.events, at);
                    let rows = q.fetch_all(&mut *conn).await.map_err(StoreError::from_sqlx)?;
                    // Lost the bet: undo, and run again step by step.
                    return Ok(if rows.len() == 1 { Step::Keep(Created::New) } else { Step::Undo(Created::New) });
                }
                let claimed = Self::bind_claim(sqlx::query(CLAIM_KEY), new, at)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                if claimed.is_none() {
                    // Nothing was written: report the key that is there.
                    return match Self::key_in(&mut *conn, &o.user_id, &new.idempotency_key).await? {
                        Some(k) => Ok(Step::Keep(Created::Existing(k))),
                        // Purged between the two statements: the caller retries.
                        None => Err(StoreError::Duplicate),
                    };
                }
                Self::bind_order(sqlx::query(INSERT_ORDER), o, at)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| match e {
                        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate,
                        other => StoreError::from_sqlx(other),
                    })?;
                Self::append(conn, &o.id, &new.log, &new.events, at).await?;
                Ok(Step::Keep(Created::New))
            }

            /// The statements of [`OrdersStore::advance`].
            async fn advance_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                a: &Advance,
                at: i64,
                pace: Pace,
            ) -> Result<Step<Option<OrderRow>>> {
                if pace == Pace::Fast && a.log.len() <= LOG_LINES_PER_STATEMENT {
                    // Everything at once, betting that the version matches: the move is
                    // the only statement that returns a row.
                    let mut texts: Vec<std::borrow::Cow<'static, str>> = vec![ADVANCE_ORDER.into()];
                    texts.extend(Self::append_statements(&a.log, &a.events));
                    if a.response.is_some() {
                        texts.push(STORE_ORDER_RESPONSE.into());
                    }
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(chain::<$db, _>(&texts, &[0])));
                    q = Self::bind_advance(q, a, at);
                    q = Self::bind_append(q, &a.order_id, &a.log, &a.events, at);
                    if let Some(r) = &a.response {
                        q = Self::bind_response(q, &a.order_id, r);
                    }
                    let rows = q.fetch_all(&mut *conn).await.map_err(StoreError::from_sqlx)?;
                    return match rows.as_slice() {
                        [row] => Ok(Step::Keep(Some(Self::order_row(row)?))),
                        // Lost the bet: undo, and run again step by step.
                        _ => Ok(Step::Undo(None)),
                    };
                }
                let row = Self::bind_advance(sqlx::query(ADVANCE_ORDER), a, at)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                let Some(row) = row else {
                    return Ok(Step::Keep(None));
                };
                let order = Self::order_row(&row)?;
                Self::append(conn, &a.order_id, &a.log, &a.events, at).await?;
                if let Some(r) = &a.response {
                    Self::bind_response(sqlx::query(STORE_ORDER_RESPONSE), &a.order_id, r)
                        .execute(&mut *conn)
                        .await
                        .map_err(StoreError::from_sqlx)?;
                }
                Ok(Step::Keep(Some(order)))
            }
        }

        #[async_trait]
        impl OrdersStore for SqlStore<$db> {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn create(&self, new: &NewOrder) -> Result<Created> {
                let started = std::time::Instant::now();
                let at = now_ms();
                let r = self
                    .write(new.clone(), move |new, conn, pace| Box::pin(Self::create_in(conn, new, at, pace)))
                    .await;
                record($name, "create_order", started, &r);
                r
            }

            async fn key(&self, user_id: &str, key: &str) -> Result<Option<KeyRecord>> {
                let started = std::time::Instant::now();
                // Every write is acknowledged after its commit, so a reader sees it.
                let r = Self::key_in(&self.reader, user_id, key).await;
                record($name, "idempotency_key", started, &r);
                r
            }

            async fn store_response(
                &self,
                user_id: &str,
                key: &str,
                status: u16,
                content_type: &str,
                body: &[u8],
            ) -> Result<bool> {
                let started = std::time::Instant::now();
                let data = (user_id.to_owned(), key.to_owned(), content_type.to_owned(), body.to_vec());
                let r = self
                    .write_one(data, move |(user_id, key, content_type, body), conn| Box::pin(async move {
                        sqlx::query(
                            "UPDATE idempotency_keys SET status = $1, content_type = $2, body = $3 \
                             WHERE user_id = $4 AND key = $5 AND status IS NULL",
                        )
                        .bind(i64::from(status))
                        .bind(content_type.as_str())
                        .bind(body.as_slice())
                        .bind(user_id.as_str())
                        .bind(key.as_str())
                        .execute(&mut *conn)
                        .await
                        .map(|r| r.rows_affected() == 1)
                        .map_err(StoreError::from_sqlx)
                    }))
                    .await;
                record($name, "store_response", started, &r);
                r
            }

            async fn relock_key(
                &self,
                user_id: &str,
                key: &str,
                now_ms: i64,
                until_ms: i64,
            ) -> Result<bool> {
                let started = std::time::Instant::now();
                let r = self
                    .write_one((user_id.to_owned(), key.to_owned()), move |(user_id, key), conn| Box::pin(async move {
                        sqlx::query(
                            "UPDATE idempotency_keys SET locked_until_ms = $1 \
                             WHERE user_id = $2 AND key = $3 AND status IS NULL AND locked_until_ms <= $4",
                        )
                        .bind(until_ms)
                        .bind(user_id.as_str())
                        .bind(key.as_str())
                        .bind(now_ms)
                        .execute(&mut *conn)
                        .await
                        .map(|r| r.rows_affected() == 1)
                        .map_err(StoreError::from_sqlx)
                    }))
                    .await;
                record($name, "relock_key", started, &r);
                r
            }

            async fn purge_keys(&self, now_ms: i64, limit: u32) -> Result<u64> {
                let started = std::time::Instant::now();
                let r = self
                    .write_one((), move |(), conn| Box::pin(async move {
                        sqlx::query(
                            "DELETE FROM idempotency_keys WHERE (user_id, key) IN (SELECT user_id, key \
                             FROM idempotency_keys WHERE expires_at_ms <= $1 LIMIT $2)",
                        )
                        .bind(now_ms)
                        .bind(i64::from(limit))
                        .execute(&mut *conn)
                        .await
                        .map(|r| r.rows_affected())
                        .map_err(StoreError::from_sqlx)
                    }))
                    .await;
                record($name, "purge_keys", started, &r);
                r
            }

            async fn prune_events(&self, before_ms: i64, limit: u32) -> Result<u64> {
                let started = std::time::Instant::now();
                let r = self
                    .write_one((), move |(), conn| Box::pin(async move {
                        prune_outbox!(&mut *conn, "checkout_outbox", before_ms, limit)
                    }))
                    .await;
                record($name, "prune_checkout_events", started, &r);
                r
            }

            async fn advance(&self, a: &Advance) -> Result<Option<OrderRow>> {
                let started = std::time::Instant::now();
                let at = now_ms();
                let r = self
                    .write(a.clone(), move |a, conn, pace| Box::pin(Self::advance_in(conn, a, at, pace)))
                    .await;
                record($name, "advance_saga", started, &r);
                r
            }

            async fn order(&self, id: &str) -> Result<Option<OrderRow>> {
                let started = std::time::Instant::now();
                let r = async {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"
                    )))
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    row.as_ref().map(Self::order_row).transpose()
                }
                .await;
                record($name, "order", started, &r);
                r
            }

            async fn log(&self, id: &str) -> Result<Vec<StepLog>> {
                let started = std::time::Instant::now();
                let r = async {
                    let rows = sqlx::query(
                        "SELECT step, outcome, detail, at_ms FROM saga_log WHERE order_id = $1 ORDER BY seq",
                    )
                    .bind(id)
                    .fetch_all(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                    rows.iter()
                        .map(|row| {
                            Ok(StepLog {
                                step: row.try_get(0).map_err(get)?,
                                outcome: row.try_get(1).map_err(get)?,
                                detail: row.try_get(2).map_err(get)?,
                                at_ms: row.try_get(3).map_err(get)?,
                            })
                        })
                        .collect()
                }
                .await;
                record($name, "saga_log", started, &r);
                r
            }

            async fn orders_of(
                &self,
                user_id: &str,
                before: Option<(i64, String)>,
                limit: u32,
            ) -> Result<Vec<OrderRow>> {
                let started = std::time::Instant::now();
                let (at, id) = before.unwrap_or((i64::MAX, String::new()));
                // With no cursor, every order is "before" (MAX, "").
                let r = async {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 \
                         AND (created_at_ms < $2 OR (created_at_ms = $2 AND id < $3)) \
                         ORDER BY created_at_ms DESC, id DESC LIMIT $4"
                    )))
                    .bind(user_id)
                    .bind(at)
                    .bind(id.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    rows.iter().map(Self::order_row).collect()
                }
                .await;
                record($name, "orders_of", started, &r);
                r
            }

            async fn sagas(
                &self,
                state: Option<SagaState>,
                changed_before_ms: i64,
                after: Option<(i64, String)>,
                limit: u32,
            ) -> Result<Vec<OrderRow>> {
                let started = std::time::Instant::now();
                let (at, id) = after.unwrap_or((i64::MIN, String::new()));
                let state = state.map_or("", SagaState::as_str);
                let r = async {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {ORDER_COLUMNS} FROM orders WHERE \
                         (($1 = '' AND saga_state <> 'done') OR saga_state = $1) AND updated_at_ms < $2 \
                         AND (updated_at_ms > $3 OR (updated_at_ms = $3 AND id > $4)) \
                         ORDER BY updated_at_ms, id LIMIT $5"
                    )))
                    .bind(state)
                    .bind(changed_before_ms)
                    .bind(at)
                    .bind(id.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    rows.iter().map(Self::order_row).collect()
                }
                .await;
                record($name, "sagas", started, &r);
                r
            }

            async fn claim_due(
                &self,
                owner: &str,
                now_ms: i64,
                lease_until_ms: i64,
                reclaim_own: bool,
                limit: u32,
            ) -> Result<Vec<OrderRow>> {
                let started = std::time::Instant::now();
                let r = self.write_one(owner.to_owned(), move |owner, conn| Box::pin(async move {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE orders SET lease_owner = $1, lease_until_ms = $2 WHERE id IN ( \
                         SELECT id FROM orders WHERE saga_state IN ('running', 'compensating') \
                         AND ((next_at_ms <= $3 AND lease_until_ms <= $3) \
                              OR (lease_owner = $1 AND $5 AND next_at_ms <= $2)) \
                         ORDER BY next_at_ms LIMIT $4) \
                         AND saga_state IN ('running', 'compensating') \
                         AND ((next_at_ms <= $3 AND lease_until_ms <= $3) \
                              OR (lease_owner = $1 AND $5 AND next_at_ms <= $2)) \
                         RETURNING {ORDER_COLUMNS}"
                    )))
                    .bind(owner.as_str())
                    .bind(lease_until_ms)
                    .bind(now_ms)
                    .bind(i64::from(limit))
                    .bind(reclaim_own)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    rows.iter().map(Self::order_row).collect()
                }))
                .await;
                record($name, "claim_due", started, &r);
                r
            }

            async fn events(&self, after: i64, limit: u32) -> Result<Vec<CheckoutEvent>> {
                let started = std::time::Instant::now();
                let r = async {
                    let rows = sqlx::query(
                        "SELECT position, event_id, kind, order_id, payload, created_at_ms FROM checkout_outbox \
                         WHERE position > $1 ORDER BY position LIMIT $2",
                    )
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                    rows.iter()
                        .map(|row| {
                            Ok(CheckoutEvent {
                                position: row.try_get(0).map_err(get)?,
                                event: NewEvent {
                                    event_id: row.try_get(1).map_err(get)?,
                                    kind: row.try_get(2).map_err(get)?,
                                    order_id: row.try_get(3).map_err(get)?,
                                    payload: row.try_get(4).map_err(get)?,
                                },
                                created_at_ms: row.try_get(5).map_err(get)?,
                            })
                        })
                        .collect()
                }
                .await;
                record($name, "checkout_events", started, &r);
                r
            }

            async fn audit(&self, e: &AuditEntry) -> Result<()> {
                let started = std::time::Instant::now();
                let at = if e.at_ms == 0 { now_ms() } else { e.at_ms };
                let r = self
                    .write_one(e.clone(), move |e, conn| Box::pin(async move {
                        sqlx::query(
                            "INSERT INTO saga_audit (order_id, actor, action, note, at_ms) VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(e.order_id.as_str())
                        .bind(e.actor.as_str())
                        .bind(e.action.as_str())
                        .bind(e.note.as_str())
                        .bind(at)
                        .execute(&mut *conn)
                        .await
                        .map(|_| ())
                        .map_err(StoreError::from_sqlx)
                    }))
                    .await;
                record($name, "audit", started, &r);
                r
            }

            async fn audit_of(&self, order_id: &str) -> Result<Vec<AuditEntry>> {
                let started = std::time::Instant::now();
                let r = async {
                    let rows = sqlx::query(
                        "SELECT order_id, actor, action, note, at_ms FROM saga_audit WHERE order_id = $1 ORDER BY id",
                    )
                    .bind(order_id)
                    .fetch_all(&self.reader)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                    let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                    rows.iter()
                        .map(|row| {
                            Ok(AuditEntry {
                                order_id: row.try_get(0).map_err(get)?,
                                actor: row.try_get(1).map_err(get)?,
                                action: row.try_get(2).map_err(get)?,
                                note: row.try_get(3).map_err(get)?,
                                at_ms: row.try_get(4).map_err(get)?,
                            })
                        })
                        .collect()
                }
                .await;
                record($name, "audit_of", started, &r);
                r
            }

            async fn count_by_status(&self) -> Result<Vec<(String, i64)>> {
                let started = std::time::Instant::now();
                let r = sqlx::query_as::<_, (String, i64)>(
                    "SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status",
                )
                .fetch_all(&self.reader)
                .await
                .map_err(StoreError::from_sqlx);
                record($name, "count_orders", started, &r);
                r
            }

            async fn close(&self) {
                self.shut().await;
            }
        }
    };
}

orders_store!(Sqlite, "sqlite");
orders_store!(Postgres, "postgres");
