//! Storage for checkout's fulfilment capacity: how many orders each warehouse was
//! promised per minute, kept with the orders (the orders service owns admission).
//!
//! A slot is one order in one warehouse's minute. Taking one is a conditional increment
//! (`used < capacity`), so however many checkouts race for the last slot of a minute,
//! at most `capacity` win; the order's slot is recorded so that a cancelled order can
//! give it back exactly once.

use async_trait::async_trait;
use sqlx::{Postgres, Sqlite};

use crate::group::Step;
use crate::metrics::record;
use crate::sql::SqlStore;
use crate::{Result, StoreError};

/// Fulfilment slots. Every orders store is one (see [`crate::OrdersStore`]).
#[async_trait]
pub trait FulfilmentStore: Send + Sync + 'static {
    /// Takes a slot of `warehouse` in `minute` (minutes since the Unix epoch) for
    /// `order_id`, if fewer than `capacity` (>= 1) are taken. Returns whether it did.
    async fn take_slot(
        &self,
        order_id: &str,
        warehouse: &str,
        minute: i64,
        capacity: i64,
    ) -> Result<bool>;

    /// Gives back the slot `order_id` took, if it has one. Returns whether this call
    /// gave one back (a second call finds nothing).
    async fn return_slot(&self, order_id: &str) -> Result<bool>;

    /// Slots taken in `warehouse`'s `minute`.
    async fn slots_used(&self, warehouse: &str, minute: i64) -> Result<i64>;

    /// Forgets slots of minutes before `minute` (they can no longer be given back).
    /// Returns how many records went.
    async fn prune_slots(&self, minute: i64) -> Result<u64>;
}

/// Takes a slot if the minute has room; a row when it did.
const TAKE: &str = "INSERT INTO fulfilment_slots (warehouse, minute, used) VALUES ($1, $2, 1) \
     ON CONFLICT (warehouse, minute) DO UPDATE SET used = fulfilment_slots.used + 1 \
     WHERE fulfilment_slots.used < $3 RETURNING used";

macro_rules! fulfilment_store {
    ($db:ty, $name:literal) => {
        #[async_trait]
        impl FulfilmentStore for SqlStore<$db> {
            async fn take_slot(
                &self,
                order_id: &str,
                warehouse: &str,
                minute: i64,
                capacity: i64,
            ) -> Result<bool> {
                let started = std::time::Instant::now();
                let r = async {
                    if capacity < 1 {
                        return Err(StoreError::Config(format!(
                            "a capacity of {capacity} orders per minute"
                        )));
                    }
                    let data = (order_id.to_owned(), warehouse.to_owned());
                    self.write(data, move |(order_id, warehouse), conn, _| {
                        Box::pin(async move {
                            let took = sqlx::query(TAKE)
                                .bind(warehouse.as_str())
                                .bind(minute)
                                .bind(capacity)
                                .fetch_optional(&mut *conn)
                                .await
                                .map_err(StoreError::from_sqlx)?;
                            if took.is_none() {
                                return Ok(Step::Keep(false));
                            }
                            sqlx::query(
                                "INSERT INTO order_slots (order_id, warehouse, minute) VALUES ($1, $2, $3)",
                            )
                            .bind(order_id.as_str())
                            .bind(warehouse.as_str())
                            .bind(minute)
                            .execute(&mut *conn)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                            Ok(Step::Keep(true))
                        })
                    })
                    .await
                }
                .await;
                record($name, "take_slot", started, &r);
                r
            }

            async fn return_slot(&self, order_id: &str) -> Result<bool> {
                let started = std::time::Instant::now();
                let r = self
                    .write(order_id.to_owned(), |order_id, conn, _| {
                        Box::pin(async move {
                            let slot: Option<(String, i64)> = sqlx::query_as(
                                "DELETE FROM order_slots WHERE order_id = $1 RETURNING warehouse, minute",
                            )
                            .bind(order_id.as_str())
                            .fetch_optional(&mut *conn)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                            let Some((warehouse, minute)) = slot else {
                                return Ok(Step::Keep(false));
                            };
                            sqlx::query(
                                "UPDATE fulfilment_slots SET used = used - 1 \
                                 WHERE warehouse = $1 AND minute = $2 AND used > 0",
                            )
                            .bind(warehouse.as_str())
                            .bind(minute)
                            .execute(&mut *conn)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                            Ok(Step::Keep(true))
                        })
                    })
                    .await;
                record($name, "return_slot", started, &r);
                r
            }

            async fn slots_used(&self, warehouse: &str, minute: i64) -> Result<i64> {
                let started = std::time::Instant::now();
                let r = sqlx::query_scalar::<_, i64>(
                    "SELECT used FROM fulfilment_slots WHERE warehouse = $1 AND minute = $2",
                )
                .bind(warehouse)
                .bind(minute)
                .fetch_optional(&self.reader)
                .await
                .map(|u| u.unwrap_or(0))
                .map_err(StoreError::from_sqlx);
                record($name, "slots_used", started, &r);
                r
            }

            async fn prune_slots(&self, minute: i64) -> Result<u64> {
                let started = std::time::Instant::now();
                let r = self
                    .write_one((), move |(), conn| {
                        Box::pin(async move {
                            let mut gone = 0;
                            for table in ["order_slots", "fulfilment_slots"] {
                                gone += sqlx::query(sqlx::AssertSqlSafe(format!(
                                    "DELETE FROM {table} WHERE minute < $1"
                                )))
                                .bind(minute)
                                .execute(&mut *conn)
                                .await
                                .map_err(StoreError::from_sqlx)?
                                .rows_affected();
                            }
                            Ok(gone)
                        })
                    })
                    .await;
                record($name, "prune_slots", started, &r);
                r
            }
        }
    };
}

fulfilment_store!(Sqlite, "sqlite");
fulfilment_store!(Postgres, "postgres");
