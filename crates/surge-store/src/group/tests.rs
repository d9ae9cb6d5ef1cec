//! Group commit on a real database (a SQLite file; with the `pg-tests` feature also
//! PostgreSQL at `SURGE_TEST_POSTGRES_URL`): writes queued together commit in one batch,
//! each caller gets its own answer, and a write that fails or undoes inside the batch
//! leaves no trace while the others commit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::Sqlite;
use tokio::sync::Semaphore;

use super::{BoxFuture, Step};
use crate::migrations::Component;
use crate::sql::{SqlStore, StoreOptions};
use crate::{Result, StoreError};

/// What keeps a test's database alive (SQLite: its directory).
struct Place(#[allow(dead_code)] Option<tempfile::TempDir>);

async fn open_sqlite() -> (SqlStore<Sqlite>, Place) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("inventory.db").display());
    let store =
        SqlStore::<Sqlite>::open_sqlite(&url, &StoreOptions::default(), &[Component::Inventory])
            .await
            .unwrap();
    (store, Place(Some(dir)))
}

#[cfg(feature = "pg-tests")]
async fn open_postgres() -> (SqlStore<sqlx::Postgres>, Place) {
    let url = std::env::var("SURGE_TEST_POSTGRES_URL").expect(
        "pg-tests needs SURGE_TEST_POSTGRES_URL, e.g. postgres://postgres@127.0.0.1:5432/test",
    );
    // CI drops every `conf_` schema before the suites run.
    let options = StoreOptions {
        pg_schema: Some(format!(
            "conf_group_{}_{}",
            std::process::id(),
            rand::random_range(0..u32::MAX)
        )),
        ..StoreOptions::default()
    };
    let store = SqlStore::<sqlx::Postgres>::open_postgres(&url, &options, &[Component::Inventory])
        .await
        .unwrap();
    (store, Place(None))
}

/// The same tests for each database.
macro_rules! group_tests {
    ($module:ident, $db:ty, $open:ident) => {
        mod $module {
            use super::*;

            type Db = $db;
            type Conn = <$db as sqlx::Database>::Connection;

            /// Inserts a stock row named `sku` with `available` units.
            async fn insert(conn: &mut Conn, sku: &str, available: i64) -> Result<()> {
                sqlx::query("INSERT INTO stock (sku, market, available, held, sold) VALUES ($1, 'T', $2, 0, 0)")
                    .bind(sku)
                    .bind(available)
                    .execute(&mut *conn)
                    .await
                    .map(|_| ())
                    .map_err(StoreError::from_sqlx)
            }

            /// The skus stored, in order.
            async fn skus(store: &SqlStore<Db>) -> Vec<String> {
                sqlx::query_scalar("SELECT sku FROM stock WHERE market = 'T' ORDER BY sku")
                    .fetch_all(&store.reader)
                    .await
                    .unwrap()
            }

            /// What the `n`th write of the batch does.
            #[derive(Clone, Copy, Debug, PartialEq)]
            enum Kind {
                /// Two inserts in a savepoint write: kept.
                Keep,
                /// One insert without a savepoint: kept.
                One,
                /// An insert, then an error of its own: rolled back, the caller gets the error.
                Fail,
                /// An insert, then a duplicate insert SQLite refuses: rolled back, the caller gets
                /// SQLite's error.
                Constraint,
                /// An insert, then an undo: rolled back, the caller still gets its value.
                Undo,
            }

            fn kind(n: usize) -> Kind {
                match n % 10 {
                    3 => Kind::Fail,
                    5 => Kind::Undo,
                    7 => Kind::Constraint,
                    8 | 9 => Kind::One,
                    _ => Kind::Keep,
                }
            }

            /// The write of kind `kind(n)`; answers `n`.
            fn write(store: &Arc<SqlStore<Db>>, n: usize) -> tokio::task::JoinHandle<Result<usize>> {
                let store = store.clone();
                tokio::spawn(async move {
                    let sku = format!("s{n:03}");
                    match kind(n) {
                        Kind::One => {
                            store
                                .write_one((sku, n), |(sku, n), conn| {
                                    Box::pin(async move {
                                        insert(conn, sku, 1).await?;
                                        Ok(*n)
                                    })
                                })
                                .await
                        }
                        k => {
                            store
                                .write((sku, n, k), |(sku, n, k), conn, _| {
                                    Box::pin(async move {
                                        insert(conn, sku, 1).await?;
                                        match k {
                                            Kind::Fail => Err(StoreError::Corrupt(format!("write {n} fails"))),
                                            Kind::Constraint => {
                                                insert(conn, &format!("{sku}-b"), 1).await?;
                                                insert(conn, sku, 1).await?;
                                                Ok(Step::Keep(*n))
                                            }
                                            Kind::Undo => Ok(Step::Undo(*n)),
                                            _ => {
                                                insert(conn, &format!("{sku}-b"), 1).await?;
                                                Ok(Step::Keep(*n))
                                            }
                                        }
                                    })
                                })
                                .await
                        }
                    }
                })
            }

            /// Holds the writer inside a batch until the returned semaphore gets a permit, so that
            /// every write submitted meanwhile lands in the next batch.
            async fn hold_writer(
                store: &Arc<SqlStore<Db>>,
            ) -> (Arc<Semaphore>, tokio::task::JoinHandle<Result<()>>) {
                let gate = Arc::new(Semaphore::new(0));
                let entered = Arc::new(AtomicBool::new(false));
                let store2 = store.clone();
                let data = (gate.clone(), entered.clone());
                let held = tokio::spawn(async move {
                    store2
                        .write_one(
                            data,
                            |(gate, entered), _conn: &mut Conn| -> BoxFuture<'_, Result<()>> {
                                Box::pin(async move {
                                    entered.store(true, Ordering::Release);
                                    gate.acquire()
                                        .await
                                        .map(|p| p.forget())
                                        .map_err(|_| StoreError::Closed)
                                })
                            },
                        )
                        .await
                });
                while !entered.load(Ordering::Acquire) {
                    tokio::task::yield_now().await;
                }
                (gate, held)
            }

            /// Writes waiting in the queue.
            fn queued(store: &SqlStore<Db>) -> usize {
                let q = &store
                    .group
                    .as_ref()
                    .expect("an inventory store has a group writer")
                    .queue;
                q.max_capacity() - q.capacity()
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_batch_answers_each_caller_and_isolates_failures() {
                let (store, _place) = $open().await;
                let store = Arc::new(store);
                let (gate, held) = hold_writer(&store).await;

                const WRITES: usize = 200;
                let writes: Vec<_> = (0..WRITES).map(|n| write(&store, n)).collect();
                while queued(&store) < WRITES {
                    tokio::task::yield_now().await;
                }
                gate.add_permits(1);
                held.await.unwrap().unwrap();

                let mut expected = Vec::new();
                for (n, w) in writes.into_iter().enumerate() {
                    let answer = w.await.unwrap();
                    let sku = format!("s{n:03}");
                    match kind(n) {
                        Kind::Keep => {
                            assert_eq!(answer.unwrap(), n);
                            expected.push(sku.clone());
                            expected.push(format!("{sku}-b"));
                        }
                        Kind::One => {
                            assert_eq!(answer.unwrap(), n);
                            expected.push(sku);
                        }
                        Kind::Undo => assert_eq!(answer.unwrap(), n),
                        Kind::Fail => {
                            let e = answer.unwrap_err();
                            assert!(
                                matches!(&e, StoreError::Corrupt(m) if *m == format!("write {n} fails")),
                                "{e:?}"
                            );
                        }
                        Kind::Constraint => {
                            let e = answer.unwrap_err();
                            assert!(matches!(&e, StoreError::Database(_)), "{e:?}");
                        }
                    }
                }
                expected.sort();
                // Nothing of the failed and undone writes, everything of the others.
                assert_eq!(skus(&store).await, expected);
                store.shut().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn many_concurrent_writers_get_their_own_results() {
                let (store, _place) = $open().await;
                let store = Arc::new(store);
                // Each writer adds to one shared counter and reads back the value it made, so a
                // mixed-up answer shows.
                store
                    .write_one((), |(), conn| Box::pin(insert(conn, "counter", 0)))
                    .await
                    .unwrap();
                let writers: Vec<_> = (1..=500_i64)
                    .map(|n| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            let (before, after) = store
                                .write(n, |n, conn, _| {
                                    Box::pin(async move {
                                        let after: i64 = sqlx::query_scalar(
                                            "UPDATE stock SET available = available + $1 WHERE sku = 'counter' RETURNING available",
                                        )
                                        .bind(*n)
                                        .fetch_one(&mut *conn)
                                        .await
                                        .map_err(StoreError::from_sqlx)?;
                                        Ok(Step::Keep((after - n, after)))
                                    })
                                })
                                .await
                                .unwrap();
                            (n, before, after)
                        })
                    })
                    .collect();
                let mut seen = Vec::new();
                for w in writers {
                    let (n, before, after) = w.await.unwrap();
                    assert_eq!(after - before, n);
                    seen.push((before, after));
                }
                // The answers chain up: every write saw the one before it, none was lost.
                seen.sort_unstable();
                let mut total = 0;
                for (before, after) in seen {
                    assert_eq!(before, total);
                    total = after;
                }
                assert_eq!(total, (1..=500).sum::<i64>());
                store.shut().await;
            }

            #[tokio::test]
            async fn a_closed_store_refuses_writes() {
                let (store, _place) = $open().await;
                store
                    .write_one((), |(), conn| Box::pin(insert(conn, "a", 1)))
                    .await
                    .unwrap();
                store.shut().await;
                let after = store
                    .write_one((), |(), conn| Box::pin(insert(conn, "b", 1)))
                    .await;
                assert!(matches!(after, Err(StoreError::Closed)), "{after:?}");
            }

            /// A write that goes on after an error of its own: on SQLite the failed
            /// statement undid only itself and the batch commits; on PostgreSQL the
            /// transaction is aborted, so the batch must fail as a whole (never a `COMMIT`
            /// that silently rolls back), and the writer recovers for the next one.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_write_that_swallows_its_error_never_commits_a_broken_batch() {
                use crate::group::Grouped;
                let (store, _place) = $open().await;
                let store = Arc::new(store);
                store
                    .write_one((), |(), conn| Box::pin(insert(conn, "dup", 1)))
                    .await
                    .unwrap();
                let (gate, held) = hold_writer(&store).await;
                let first = {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .write_one((), |(), conn| Box::pin(insert(conn, "first", 1)))
                            .await
                    })
                };
                while queued(&store) < 1 {
                    tokio::task::yield_now().await;
                }
                // Last in its batch: only the commit can notice.
                let swallow = {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .write_one((), |(), conn| {
                                Box::pin(async move {
                                    // Refused (the row exists); the error is dropped.
                                    let _ = insert(conn, "dup", 1).await;
                                    Ok(())
                                })
                            })
                            .await
                    })
                };
                while queued(&store) < 2 {
                    tokio::task::yield_now().await;
                }
                gate.add_permits(1);
                held.await.unwrap().unwrap();
                let first = first.await.unwrap();
                let swallow = swallow.await.unwrap();
                if <Db as Grouped>::ERROR_ABORTS {
                    assert!(first.is_err(), "{first:?}");
                    assert!(swallow.is_err(), "{swallow:?}");
                    assert_eq!(skus(&store).await, vec!["dup".to_owned()]);
                } else {
                    first.unwrap();
                    swallow.unwrap();
                    assert_eq!(skus(&store).await, vec!["dup".to_owned(), "first".to_owned()]);
                }
                // The next batch runs on a sound connection.
                store
                    .write_one((), |(), conn| Box::pin(insert(conn, "next", 1)))
                    .await
                    .unwrap();
                assert!(skus(&store).await.contains(&"next".to_owned()));
                store.shut().await;
            }
        }
    };
}

group_tests!(sqlite, Sqlite, open_sqlite);
#[cfg(feature = "pg-tests")]
group_tests!(postgres, sqlx::Postgres, open_postgres);

#[test]
fn chain_renumbers_each_statement_after_the_ones_before() {
    use super::chain;
    use sqlx::Postgres;
    assert_eq!(chain::<Sqlite, _>(&["SELECT $1"], &[0]), "SELECT $1");
    let three = [
        "INSERT INTO t VALUES ($1, $2, $1)",
        "UPDATE t SET a = $2 WHERE b = $1 RETURNING a",
        "DELETE FROM t",
    ];
    assert_eq!(
        chain::<Sqlite, _>(&three, &[1]),
        "INSERT INTO t VALUES ($1, $2, $1); UPDATE t SET a = $4 WHERE b = $3 RETURNING a; DELETE FROM t"
    );
    assert_eq!(
        chain::<Sqlite, _>(&["SELECT $10", "SELECT $1"], &[0, 1]),
        "SELECT $10; SELECT $11"
    );
    // PostgreSQL: one statement, the parts in a WITH; the rows of the one asked for.
    assert_eq!(
        chain::<Postgres, _>(&three, &[1]),
        "WITH s0 AS (INSERT INTO t VALUES ($1, $2, $1)), \
         s1 AS (UPDATE t SET a = $4 WHERE b = $3 RETURNING a), s2 AS (DELETE FROM t) \
         SELECT * FROM s1"
    );
    // Several: one row per row of each, to count.
    assert_eq!(
        chain::<Postgres, _>(
            &[
                "INSERT INTO t VALUES ($1) RETURNING 1",
                "UPDATE t SET a = $1 RETURNING 1"
            ],
            &[0, 1]
        ),
        "WITH s0 AS (INSERT INTO t VALUES ($1) RETURNING 1), s1 AS (UPDATE t SET a = $2 RETURNING 1) \
         SELECT 1 FROM s0 UNION ALL SELECT 1 FROM s1"
    );
}
