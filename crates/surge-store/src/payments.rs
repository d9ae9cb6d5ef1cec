//! Storage for checkout's payments service: one payment per order, and a log of every
//! call made to the payment provider.
//!
//! A payment moves through a small state machine:
//!
//! ```text
//!  (none) ──begin_authorize──▶ authorizing ──record_authorized──▶ authorized ──record_captured──▶ captured ──record_refund──▶ refunded
//!     │                             │   └──record_declined──▶ declined            │                (partial refunds stay captured)
//!     └──record_voided(None)──▶ voided ◀──record_voided────────────────────────────┘
//! ```
//!
//! Every transition is one conditional `UPDATE … WHERE state = <from>` (or an
//! `INSERT … ON CONFLICT DO NOTHING`), the same SQL on SQLite and PostgreSQL, so:
//! - running a transition again (a step re-run after a crash) changes nothing and reports
//!   what is there ([`Transition::Unchanged`]);
//! - of two transitions racing on one payment (two captures, a capture and a void)
//!   exactly one wins;
//! - a void of an order that has no payment writes a `voided` *tombstone*, so a late
//!   authorize of that order finds it and is refused.
//!
//! Refunds are numbered: [`PaymentsStore::record_refund`] applies refund number `seq`
//! only while the payment has recorded exactly `seq` refunds, and only if the total
//! refunded stays within what was captured, so recording the same refund twice adds it
//! once.

use async_trait::async_trait;
use sqlx::{Postgres, Row, Sqlite};

use crate::group::chain;
use crate::metrics::record;
use crate::sql::{SqlStore, now_ms};
use crate::{Result, StoreError};

/// Where a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentState {
    /// An authorization was asked for; the provider's answer is not recorded yet.
    Authorizing,
    /// The provider authorized the amount (`provider_ref` holds its authorization id).
    Authorized,
    /// The provider declined the authorization (final).
    Declined,
    /// The authorization was voided, or the order was voided before any authorization
    /// (a tombstone: amount 0, no `provider_ref`). Final.
    Voided,
    /// The authorized amount was captured; partial refunds keep this state.
    Captured,
    /// Everything captured was refunded (final).
    Refunded,
}

impl PaymentState {
    /// The stored name: `authorizing`, `authorized`, `declined`, `voided`, `captured`,
    /// `refunded`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Authorizing => "authorizing",
            PaymentState::Authorized => "authorized",
            PaymentState::Declined => "declined",
            PaymentState::Voided => "voided",
            PaymentState::Captured => "captured",
            PaymentState::Refunded => "refunded",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "authorizing" => PaymentState::Authorizing,
            "authorized" => PaymentState::Authorized,
            "declined" => PaymentState::Declined,
            "voided" => PaymentState::Voided,
            "captured" => PaymentState::Captured,
            "refunded" => PaymentState::Refunded,
            _ => return None,
        })
    }
}

impl std::fmt::Display for PaymentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The payment of one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// The order (one payment per order).
    pub order_id: String,
    /// The amount to authorize, in minor units (cents). 0 for a void tombstone.
    pub amount_minor: i64,
    /// ISO 4217 currency code, e.g. `EUR`. Empty for a void tombstone.
    pub currency: String,
    /// Where the payment is.
    pub state: PaymentState,
    /// The provider's authorization id, once known.
    pub provider_ref: Option<String>,
    /// Captured, in minor units.
    pub captured_minor: i64,
    /// Refunded so far, in minor units; never more than `captured_minor`.
    pub refunded_minor: i64,
    /// How many refunds were recorded (the number the next refund gets).
    pub refunds: i64,
    /// Why the provider declined, for a declined payment.
    pub decline_reason: Option<String>,
    /// When the row was created, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When the row last changed, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

/// What a conditional transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// This call changed the payment; here it is afterwards.
    Applied(PaymentRecord),
    /// The payment was not in a state this transition starts from (an earlier run did
    /// it already, or it moved elsewhere): nothing changed; here is what is there.
    Unchanged(PaymentRecord),
    /// The order has no payment.
    Missing,
}

impl Transition {
    /// Whether this call changed the payment.
    pub fn applied(&self) -> bool {
        matches!(self, Transition::Applied(_))
    }

    /// The payment after the call, if there is one.
    pub fn record(&self) -> Option<&PaymentRecord> {
        match self {
            Transition::Applied(r) | Transition::Unchanged(r) => Some(r),
            Transition::Missing => None,
        }
    }

    /// The payment after the call, if there is one.
    pub fn into_record(self) -> Option<PaymentRecord> {
        match self {
            Transition::Applied(r) | Transition::Unchanged(r) => Some(r),
            Transition::Missing => None,
        }
    }
}

/// One logged call to the payment provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentOperation {
    /// The order.
    pub order_id: String,
    /// The provider operation: `authorize`, `capture`, `void`, `refund`, `find`.
    pub op: String,
    /// The idempotency key the call was made with.
    pub idempotency_key: String,
    /// What came back, e.g. `ok`, `declined: …`, `timeout`.
    pub outcome: String,
    /// When it was logged, milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// A transition of a payment, as [`PaymentsStore::log_and_update`] takes it: each variant
/// is the transition of the `record_*` method of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentUpdate {
    /// [`PaymentsStore::record_authorized`].
    Authorized {
        /// The provider's authorization id.
        provider_ref: String,
    },
    /// [`PaymentsStore::record_declined`].
    Declined {
        /// The provider's reason.
        reason: String,
    },
    /// [`PaymentsStore::record_voided`].
    Voided {
        /// The voided authorization, if there was one.
        provider_ref: Option<String>,
    },
    /// [`PaymentsStore::record_captured`].
    Captured {
        /// Captured, in minor units (> 0).
        amount_minor: i64,
    },
    /// [`PaymentsStore::record_refund`].
    Refund {
        /// The refund's number.
        seq: i64,
        /// Refunded, in minor units (> 0).
        amount_minor: i64,
    },
}

/// The payments store.
#[async_trait]
pub trait PaymentsStore: Send + Sync + 'static {
    /// A short name for logs and metrics (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Creates the order's payment in `authorizing` for `amount_minor` (> 0) of
    /// `currency`: [`Transition::Applied`]. When the order has a payment already
    /// (whatever its state or amount) nothing changes: [`Transition::Unchanged`].
    async fn begin_authorize(
        &self,
        order_id: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Transition>;

    /// `authorizing` → `authorized` with the provider's authorization id.
    async fn record_authorized(&self, order_id: &str, provider_ref: &str) -> Result<Transition>;

    /// `authorizing` → `declined` with the provider's reason.
    async fn record_declined(&self, order_id: &str, reason: &str) -> Result<Transition>;

    /// Records a void.
    ///
    /// - `provider_ref: None` says there is no authorization to void: a missing payment
    ///   becomes a `voided` tombstone, an `authorizing` one becomes `voided`. An
    ///   `authorized` payment is left alone (its authorization must be voided first).
    /// - `provider_ref: Some(id)` says authorization `id` was voided at the provider:
    ///   `authorizing` or `authorized` → `voided`, and a `voided` payment without a
    ///   `provider_ref` gets this one. A missing payment stays missing.
    async fn record_voided(&self, order_id: &str, provider_ref: Option<&str>)
    -> Result<Transition>;

    /// `authorized` → `captured` with `amount_minor` (> 0, at most the authorized
    /// amount) captured.
    async fn record_captured(&self, order_id: &str, amount_minor: i64) -> Result<Transition>;

    /// Adds refund number `seq` of `amount_minor` (> 0) to what is refunded. Applies only
    /// to a `captured` payment that has recorded exactly `seq` refunds and only if the
    /// total refunded stays within what was captured; the payment becomes `refunded`
    /// when everything captured is refunded.
    async fn record_refund(
        &self,
        order_id: &str,
        seq: i64,
        amount_minor: i64,
    ) -> Result<Transition>;

    /// Appends `call` (its `at_ms` may be 0: now) to the operations log, then applies
    /// `update` to the payment of `call.order_id`: the same as
    /// [`log_operation`](Self::log_operation) followed by the `record_*` method, in one
    /// write (one commit instead of two, each statement still standing alone as before:
    /// when the transition fails, the logged call stays). An invalid `update` (an amount
    /// that is not positive) is refused before anything is written.
    async fn log_and_update(
        &self,
        call: &PaymentOperation,
        update: PaymentUpdate,
    ) -> Result<Transition>;

    /// Appends one provider call and its outcome to the operations log.
    async fn log_operation(
        &self,
        order_id: &str,
        op: &str,
        idempotency_key: &str,
        outcome: &str,
    ) -> Result<()>;

    /// The logged provider calls of one order, oldest first.
    async fn operations(&self, order_id: &str) -> Result<Vec<PaymentOperation>>;

    /// The payment of one order.
    async fn payment(&self, order_id: &str) -> Result<Option<PaymentRecord>>;

    /// Payments with an order id greater than `after` (`""` for the first page), in
    /// order id order, at most `limit`. For tests and admin pages.
    async fn payments(&self, after: &str, limit: u32) -> Result<Vec<PaymentRecord>>;

    /// Closes the connections; every later call fails with [`StoreError::Closed`].
    async fn close(&self);
}

/// The columns of a [`PaymentRecord`], in decoding order (a macro so that `concat!` can
/// build each statement as a literal).
macro_rules! columns {
    () => {
        "order_id, amount_minor, currency, state, provider_ref, captured_minor, \
         refunded_minor, refunds, decline_reason, created_at_ms, updated_at_ms"
    };
}

fn positive(what: &str, amount_minor: i64) -> Result<()> {
    if amount_minor > 0 {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "{what} of {amount_minor} minor units"
        )))
    }
}

/// A query on database `DB` with its arguments.
type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>;

/// Appends one provider call to the operations log.
const LOG_CALL: &str = "INSERT INTO payment_operations (order_id, op, idempotency_key, outcome, at_ms) \
     VALUES ($1, $2, $3, $4, $5)";

/// A `voided` tombstone for an order without a payment.
const VOID_TOMBSTONE: &str = concat!(
    "INSERT INTO payments (",
    columns!(),
    ") \
     VALUES ($1, 0, '', 'voided', NULL, 0, 0, 0, NULL, $2, $2) \
     ON CONFLICT (order_id) DO NOTHING RETURNING ",
    columns!()
);

/// `authorizing` → `voided`, without an authorization.
const VOID_AUTHORIZING: &str = concat!(
    "UPDATE payments SET state = 'voided', updated_at_ms = $2 \
     WHERE order_id = $1 AND state = 'authorizing' RETURNING ",
    columns!()
);

/// The conditional statement of `update` (`$1` the order, then its fields, then the
/// time), or `None` for a void without an authorization, which takes two.
fn update_statement(update: &PaymentUpdate) -> Option<&'static str> {
    Some(match update {
        PaymentUpdate::Authorized { .. } => concat!(
            "UPDATE payments SET state = 'authorized', provider_ref = $2, updated_at_ms = $3 \
             WHERE order_id = $1 AND state = 'authorizing' RETURNING ",
            columns!()
        ),
        PaymentUpdate::Declined { .. } => concat!(
            "UPDATE payments SET state = 'declined', decline_reason = $2, updated_at_ms = $3 \
             WHERE order_id = $1 AND state = 'authorizing' RETURNING ",
            columns!()
        ),
        PaymentUpdate::Voided { provider_ref: None } => return None,
        PaymentUpdate::Voided {
            provider_ref: Some(_),
        } => concat!(
            "UPDATE payments SET state = 'voided', provider_ref = $2, updated_at_ms = $3 \
             WHERE order_id = $1 AND (state IN ('authorizing', 'authorized') \
             OR (state = 'voided' AND provider_ref IS NULL)) RETURNING ",
            columns!()
        ),
        PaymentUpdate::Captured { .. } => concat!(
            "UPDATE payments SET state = 'captured', captured_minor = $2, updated_at_ms = $3 \
             WHERE order_id = $1 AND state = 'authorized' AND amount_minor >= $2 RETURNING ",
            columns!()
        ),
        PaymentUpdate::Refund { .. } => concat!(
            "UPDATE payments SET refunded_minor = refunded_minor + $3, refunds = refunds + 1, \
             state = CASE WHEN refunded_minor + $3 = captured_minor THEN 'refunded' ELSE 'captured' END, \
             updated_at_ms = $4 \
             WHERE order_id = $1 AND state = 'captured' AND refunds = $2 \
             AND refunded_minor + $3 <= captured_minor RETURNING ",
            columns!()
        ),
    })
}

macro_rules! payments_store {
    ($db:ty, $name:literal) => {
        impl SqlStore<$db> {
            fn decode_payment(row: &<$db as sqlx::Database>::Row) -> Result<PaymentRecord> {
                let get = |e: sqlx::Error| StoreError::from_sqlx(e);
                let state: String = row.try_get(3).map_err(get)?;
                Ok(PaymentRecord {
                    order_id: row.try_get(0).map_err(get)?,
                    amount_minor: row.try_get(1).map_err(get)?,
                    currency: row.try_get(2).map_err(get)?,
                    state: PaymentState::parse(&state).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown payment state {state:?}"))
                    })?,
                    provider_ref: row.try_get(4).map_err(get)?,
                    captured_minor: row.try_get(5).map_err(get)?,
                    refunded_minor: row.try_get(6).map_err(get)?,
                    refunds: row.try_get(7).map_err(get)?,
                    decline_reason: row.try_get(8).map_err(get)?,
                    created_at_ms: row.try_get(9).map_err(get)?,
                    updated_at_ms: row.try_get(10).map_err(get)?,
                })
            }

            async fn load_payment<'e, E>(e: E, order_id: &str) -> Result<Option<PaymentRecord>>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let sql = concat!(
                    "SELECT ", columns!(), " FROM payments WHERE order_id = $1"
                );
                sqlx::query(sql)
                    .bind(order_id)
                    .fetch_optional(e)
                    .await
                    .map_err(StoreError::from_sqlx)?
                    .map(|row| Self::decode_payment(&row))
                    .transpose()
            }

            /// What a conditional statement's `RETURNING` row means: applied when it
            /// returned the row, otherwise whatever is stored now.
            async fn transition(
                conn: &mut <$db as sqlx::Database>::Connection,
                order_id: &str,
                returned: Option<<$db as sqlx::Database>::Row>,
            ) -> Result<Transition> {
                if let Some(row) = returned {
                    return Ok(Transition::Applied(Self::decode_payment(&row)?));
                }
                // Read on the writer's connection: it sees what the write saw.
                Ok(match Self::load_payment(&mut *conn, order_id).await? {
                    Some(r) => Transition::Unchanged(r),
                    None => Transition::Missing,
                })
            }
            /// Binds the arguments of [`update_statement`]`(update)`.
            fn bind_update<'q>(
                q: Query<'q, $db>,
                order_id: &str,
                update: &PaymentUpdate,
                at: i64,
            ) -> Query<'q, $db> {
                let q = q.bind(order_id);
                match update {
                    PaymentUpdate::Authorized { provider_ref } => q.bind(provider_ref.as_str()).bind(at),
                    PaymentUpdate::Declined { reason } => q.bind(reason.as_str()).bind(at),
                    PaymentUpdate::Voided { provider_ref } => q.bind(provider_ref.as_deref()).bind(at),
                    PaymentUpdate::Captured { amount_minor } => q.bind(*amount_minor).bind(at),
                    PaymentUpdate::Refund { seq, amount_minor } => q.bind(*seq).bind(*amount_minor).bind(at),
                }
            }

            /// The statements of `update` on the order's payment, and what they did.
            async fn apply_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                order_id: &str,
                update: &PaymentUpdate,
                at: i64,
            ) -> Result<Transition> {
                let row = match update_statement(update) {
                    Some(sql) => Self::bind_update(sqlx::query(sql), order_id, update, at)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(StoreError::from_sqlx)?,
                    None => {
                        // A void without an authorization: a tombstone, or an `authorizing`
                        // payment voided. Two statements, each of which would stand alone.
                        let tombstone = sqlx::query(VOID_TOMBSTONE)
                            .bind(order_id)
                            .bind(at)
                            .fetch_optional(&mut *conn)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                        match tombstone {
                            Some(row) => Some(row),
                            None => sqlx::query(VOID_AUTHORIZING)
                                .bind(order_id)
                                .bind(at)
                                .fetch_optional(&mut *conn)
                                .await
                                .map_err(StoreError::from_sqlx)?,
                        }
                    }
                };
                Self::transition(conn, order_id, row).await
            }

            fn bind_call<'q>(q: Query<'q, $db>, call: &PaymentOperation, at: i64) -> Query<'q, $db> {
                q.bind(call.order_id.as_str())
                    .bind(call.op.as_str())
                    .bind(call.idempotency_key.as_str())
                    .bind(call.outcome.as_str())
                    .bind(if call.at_ms == 0 { at } else { call.at_ms })
            }

            /// Appends `call` to the operations log.
            async fn log_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                call: &PaymentOperation,
                at: i64,
            ) -> Result<()> {
                Self::bind_call(sqlx::query(LOG_CALL), call, at)
                    .execute(&mut *conn)
                    .await
                    .map(|_| ())
                    .map_err(StoreError::from_sqlx)
            }

            /// Validates `update`, then runs it (after logging `call`, if any) as one write.
            /// Every statement would stand alone, so the write needs no savepoint.
            async fn update(
                &self,
                order_id: &str,
                call: Option<&PaymentOperation>,
                update: PaymentUpdate,
            ) -> Result<Transition> {
                match &update {
                    PaymentUpdate::Captured { amount_minor } => positive("a capture", *amount_minor)?,
                    PaymentUpdate::Refund { amount_minor, .. } => positive("a refund", *amount_minor)?,
                    _ => {}
                }
                let at = now_ms();
                let data = (order_id.to_owned(), call.cloned(), update);
                self.write_one(data, move |(order_id, call, update), conn| Box::pin(async move {
                    if let (Some(call), Some(sql)) = (call, update_statement(update)) {
                        // Both statements in one round trip. On SQLite, as when sent one
                        // by one, a failing log stops the update and a failing update keeps
                        // the log; on PostgreSQL (one statement) either failing fails both.
                        let mut q = sqlx::query(sqlx::AssertSqlSafe(chain::<$db, _>(&[LOG_CALL, sql], &[1])));
                        q = Self::bind_call(q, call, at);
                        q = Self::bind_update(q, order_id, update, at);
                        let rows = q.fetch_all(&mut *conn).await.map_err(StoreError::from_sqlx)?;
                        return Self::transition(conn, order_id, rows.into_iter().next()).await;
                    }
                    if let Some(call) = call {
                        Self::log_in(conn, call, at).await?;
                    }
                    Self::apply_in(conn, order_id, update, at).await
                }))
                .await
            }
        }

        #[async_trait]
        impl PaymentsStore for SqlStore<$db> {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn begin_authorize(
                &self,
                order_id: &str,
                amount_minor: i64,
                currency: &str,
            ) -> Result<Transition> {
                let started = std::time::Instant::now();
                let r = async {
                    positive("an authorization", amount_minor)?;
                    if currency.is_empty() {
                        return Err(StoreError::Config("an authorization without a currency".into()));
                    }
                    let at = now_ms();
                    let data = (order_id.to_owned(), currency.to_owned());
                    self.write_one(data, move |(order_id, currency), conn| Box::pin(async move {
                        let sql = concat!(
                            "INSERT INTO payments (", columns!(), ") \
                             VALUES ($1, $2, $3, 'authorizing', NULL, 0, 0, 0, NULL, $4, $4) \
                             ON CONFLICT (order_id) DO NOTHING RETURNING ", columns!(), ""
                        );
                        let row = sqlx::query(sql)
                            .bind(order_id.as_str())
                            .bind(amount_minor)
                            .bind(currency.as_str())
                            .bind(at)
                            .fetch_optional(&mut *conn)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                        Self::transition(conn, &order_id, row).await
                    }))
                    .await
                }
                .await;
                record($name, "payment_begin_authorize", started, &r);
                r
            }

            async fn record_authorized(&self, order_id: &str, provider_ref: &str) -> Result<Transition> {
                let started = std::time::Instant::now();
                let update = PaymentUpdate::Authorized { provider_ref: provider_ref.to_owned() };
                let r = self.update(order_id, None, update).await;
                record($name, "payment_record_authorized", started, &r);
                r
            }

            async fn record_declined(&self, order_id: &str, reason: &str) -> Result<Transition> {
                let started = std::time::Instant::now();
                let update = PaymentUpdate::Declined { reason: reason.to_owned() };
                let r = self.update(order_id, None, update).await;
                record($name, "payment_record_declined", started, &r);
                r
            }

            async fn record_voided(
                &self,
                order_id: &str,
                provider_ref: Option<&str>,
            ) -> Result<Transition> {
                let started = std::time::Instant::now();
                let update = PaymentUpdate::Voided { provider_ref: provider_ref.map(str::to_owned) };
                let r = self.update(order_id, None, update).await;
                record($name, "payment_record_voided", started, &r);
                r
            }

            async fn record_captured(&self, order_id: &str, amount_minor: i64) -> Result<Transition> {
                let started = std::time::Instant::now();
                let r = self.update(order_id, None, PaymentUpdate::Captured { amount_minor }).await;
                record($name, "payment_record_captured", started, &r);
                r
            }

            async fn record_refund(
                &self,
                order_id: &str,
                seq: i64,
                amount_minor: i64,
            ) -> Result<Transition> {
                let started = std::time::Instant::now();
                let r = self.update(order_id, None, PaymentUpdate::Refund { seq, amount_minor }).await;
                record($name, "payment_record_refund", started, &r);
                r
            }

            async fn log_and_update(
                &self,
                call: &PaymentOperation,
                update: PaymentUpdate,
            ) -> Result<Transition> {
                let started = std::time::Instant::now();
                let r = self.update(&call.order_id, Some(call), update).await;
                record($name, "payment_log_and_update", started, &r);
                r
            }

            async fn log_operation(
                &self,
                order_id: &str,
                op: &str,
                idempotency_key: &str,
                outcome: &str,
            ) -> Result<()> {
                let started = std::time::Instant::now();
                let call = PaymentOperation {
                    order_id: order_id.to_owned(),
                    op: op.to_owned(),
                    idempotency_key: idempotency_key.to_owned(),
                    outcome: outcome.to_owned(),
                    at_ms: 0,
                };
                let r = self
                    .write_one(call, |call, conn| Box::pin(Self::log_in(conn, call, now_ms())))
                    .await;
                record($name, "payment_log_operation", started, &r);
                r
            }

            async fn operations(&self, order_id: &str) -> Result<Vec<PaymentOperation>> {
                let started = std::time::Instant::now();
                let r = sqlx::query(
                    "SELECT order_id, op, idempotency_key, outcome, at_ms FROM payment_operations \
                     WHERE order_id = $1 ORDER BY seq",
                )
                .bind(order_id)
                .fetch_all(&self.reader)
                .await
                .and_then(|rows| {
                    rows.iter()
                        .map(|row| {
                            Ok(PaymentOperation {
                                order_id: row.try_get(0)?,
                                op: row.try_get(1)?,
                                idempotency_key: row.try_get(2)?,
                                outcome: row.try_get(3)?,
                                at_ms: row.try_get(4)?,
                            })
                        })
                        .collect()
                })
                .map_err(StoreError::from_sqlx);
                record($name, "payment_operations", started, &r);
                r
            }

            async fn payment(&self, order_id: &str) -> Result<Option<PaymentRecord>> {
                let started = std::time::Instant::now();
                let r = Self::load_payment(&self.reader, order_id).await;
                record($name, "payment", started, &r);
                r
            }

            async fn payments(&self, after: &str, limit: u32) -> Result<Vec<PaymentRecord>> {
                let started = std::time::Instant::now();
                let r = async {
                    let sql = concat!(
                        "SELECT ", columns!(), " FROM payments WHERE order_id > $1 ORDER BY order_id LIMIT $2"
                    );
                    sqlx::query(sql)
                        .bind(after)
                        .bind(i64::from(limit))
                        .fetch_all(&self.reader)
                        .await
                        .map_err(StoreError::from_sqlx)?
                        .iter()
                        .map(Self::decode_payment)
                        .collect()
                }
                .await;
                record($name, "payments", started, &r);
                r
            }

            async fn close(&self) {
                self.shut().await;
            }
        }
    };
}

payments_store!(Sqlite, "sqlite");
payments_store!(Postgres, "postgres");
