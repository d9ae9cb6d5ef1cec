//! Group commit for the writes of one checkout store (SQLite or PostgreSQL).
//!
//! A SQLite store has one writer connection and runs `synchronous = FULL`, so every
//! commit is an fsync and every write transaction queues behind the one before it. On
//! PostgreSQL every transaction costs a `BEGIN` and a `COMMIT` round trip (and a WAL
//! flush) besides its statements, and the server's CPU is shared with the service on a
//! small machine. Here concurrent writes are queued to one writer instead, which runs
//! every write waiting (at most [`MAX_BATCH`]) inside ONE transaction and commits once:
//!
//! ```text
//! BEGIN IMMEDIATE
//!   <write 1>                                      (kept)
//!   SAVEPOINT op; <write 2> ROLLBACK TO op; RELEASE op   (failed, or asked to undo)
//!   SAVEPOINT op; <write 3>                        (kept: released with the next one)
//!   <write 4>                                      (one statement: no savepoint)
//! COMMIT                                           (one fsync for all four)
//! ```
//!
//! Only after the `COMMIT` returns does each caller get its result, so nothing is
//! acknowledged before it is durable, and a failed commit is every caller's error.
//!
//! ## Savepoints, and the optimistic first pass
//! A write that fails halfway, or that decides to undo what it did (a hold that finds a
//! line out of stock), must leave no trace while its neighbours in the batch commit. A
//! `ROLLBACK TO` its savepoint does exactly that. A write made of one statement (or of
//! statements that each stand alone, like autocommitted ones) needs no savepoint: a
//! failing SQLite statement undoes its own changes and leaves the transaction open.
//!
//! On PostgreSQL any failing statement aborts the whole transaction, so there every
//! write that fails in the first pass (not only one that needed a savepoint) has the
//! batch redone, with savepoints from that write on; a write of one statement that
//! fails in its savepoint is then undone as a whole (a write of two statements that
//! would each have stood alone loses both).
//!
//! A savepoint costs a round trip to the database, and most writes neither fail nor
//! undo, so a batch first runs without any. When a write that needed one fails or
//! undoes, the batch is rolled back and run again with savepoints from that write on;
//! the writes before it see the same state as before and do the same again. So a write
//! must be a function of the database and its arguments only (the store's writes are:
//! statements and their results), and may run more than once before its batch commits;
//! only the run that commits is answered.
//!
//! ## What can abort a whole batch
//! Some errors (I/O, disk full, out of memory) make SQLite roll back the whole
//! transaction by itself. A rollback hook on the writer connection reports that; the
//! batch is then abandoned and every caller in it gets an error, exactly as if the
//! commit had failed (later writes must not run outside a transaction). The same
//! happens if a write panics. On PostgreSQL the commit is sent as `SELECT 1; COMMIT`:
//! should a write have gone on after an error of its own (leaving the transaction
//! aborted, where a bare `COMMIT` would roll back and still succeed), the `SELECT`
//! fails and so does the batch; and after any failed batch the connection is closed
//! rather than reused.
//!
//! ## Backpressure
//! The queue holds at most [`QUEUE_DEPTH`] writes; callers beyond that wait for room.
//!
//! ## The thread and the connection
//! A batch is a chain of round trips to the database, one statement at a time, so its
//! length is set by how fast the writer is woken after each one. The writer therefore
//! runs on a thread of its own (with a one-thread runtime), not as a task among the
//! request tasks, where every wake-up could wait for a busy worker. On PostgreSQL it
//! also opens a connection of its own on that runtime, so that the socket's readiness
//! is seen by the writer's thread itself rather than by the busy request runtime that
//! opened the pool (measured: ≈ 1.25× the checkouts/s of a task on a pool connection,
//! see docs/benchmarks.md). On SQLite it takes the pool's one writer connection (it
//! carries the rollback hook; SQLite's own thread does the I/O).
//!
//! It keeps its connection (giving one back to the pool costs a round trip per batch),
//! and every write of a store that uses group commit goes through the writer (on
//! SQLite the pool's only one; on PostgreSQL, a write beside it, autocommitted on a
//! pool connection, was measured slower: its own commit costs more than the round trip
//! it saves the writer). Closing the store stops the writer first: it commits what is
//! queued and closes the connection.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, Pool, Postgres, Sqlite};
use tokio::sync::{mpsc, oneshot, watch};

use crate::sql::SqlStore;
use crate::{Result, StoreError};

/// Most writes run in one transaction.
pub const MAX_BATCH: usize = 256;

/// Most writes waiting for the writer; callers beyond it wait for room.
pub const QUEUE_DEPTH: usize = 2 * MAX_BATCH;

/// A boxed future that may borrow for `'a`.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a write did with its changes.
pub(crate) enum Step<T> {
    /// Keep them: they commit with the batch.
    Keep(T),
    /// Roll them back (to the write's savepoint), and still answer `T`.
    Undo(T),
}

/// How a write of several statements may run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Without a savepoint of its own (the optimistic first pass of a batch): the write
    /// may send its statements together, in one round trip, speculatively (see
    /// [`chain`]). It must then either answer what [`Pace::Stepwise`] would have
    /// answered on the same state, or fail or undo: the batch is then redone, and this
    /// write runs stepwise in its own savepoint.
    Fast,
    /// Inside its own savepoint (or its own transaction): one statement at a time, each
    /// decided on the results before it.
    Stepwise,
}

/// A database whose writes can be grouped: what differs between SQLite and PostgreSQL.
pub(crate) trait Grouped: Database
where
    for<'c> &'c mut Self::Connection: Executor<'c, Database = Self>,
{
    /// Whether a failing statement aborts the whole transaction (PostgreSQL) rather
    /// than only undoing itself (SQLite).
    const ERROR_ABORTS: bool;
    /// Ends a batch: commits, or fails if the transaction cannot commit.
    const COMMIT: &'static str;
    /// Whether the writer opens a connection of its own, on its own runtime (so that
    /// its socket is driven by the writer's thread, not by the busy request runtime),
    /// rather than taking one of the pool's.
    const OWN_CONNECTION: bool;
    /// Starts the writer (on a thread of its own).
    fn spawn(name: String, writer: BoxFuture<'static, ()>) -> std::io::Result<Running>;
}

/// Runs a writer on a thread of its own, with a one-thread runtime.
fn own_thread(name: String, writer: BoxFuture<'static, ()>) -> std::io::Result<Running> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || runtime.block_on(writer))?;
    Ok(Running::Thread(thread))
}

impl Grouped for Sqlite {
    const ERROR_ABORTS: bool = false;
    const COMMIT: &'static str = "COMMIT";
    // The pool's one writer connection carries the rollback hook.
    const OWN_CONNECTION: bool = false;

    fn spawn(name: String, writer: BoxFuture<'static, ()>) -> std::io::Result<Running> {
        own_thread(name, writer)
    }
}

impl Grouped for Postgres {
    const ERROR_ABORTS: bool = true;
    const COMMIT: &'static str = "SELECT 1; COMMIT";
    const OWN_CONNECTION: bool = true;

    fn spawn(name: String, writer: BoxFuture<'static, ()>) -> std::io::Result<Running> {
        own_thread(name, writer)
    }
}

/// The writer's connection: one of the pool's, or its own.
enum Held<DB: Database> {
    Pooled(PoolConnection<DB>),
    Own(DB::Connection),
}

impl<DB: Database> Held<DB> {
    fn conn(&mut self) -> &mut DB::Connection {
        match self {
            Held::Pooled(c) => c,
            Held::Own(c) => c,
        }
    }

    async fn close(self) {
        let _ = match self {
            Held::Pooled(c) => c.close().await,
            Held::Own(c) => sqlx::Connection::close(c).await,
        };
    }
}

/// A running writer: its thread.
pub(crate) enum Running {
    /// A thread of its own.
    Thread(std::thread::JoinHandle<()>),
}

/// A write as the writer sees it: run it (again, if the batch is redone), then
/// deliver the result of its last run.
trait Operation<DB: Database>: Send {
    /// Runs the write on the batch's connection. Returns whether its changes must be
    /// rolled back (it failed, or asked to undo).
    fn run<'a>(&'a mut self, conn: &'a mut DB::Connection, pace: Pace) -> BoxFuture<'a, bool>;

    /// Hands the caller its result: its own, if the batch committed (or it failed by
    /// itself), otherwise the batch's error.
    fn finish(self: Box<Self>, batch: Result<()>);
}

/// A write: what it works on, and the statements it runs on that (it may run more than
/// once: see the module docs).
pub(crate) trait WriteOp<DB: Database, D, T>:
    for<'a> Fn(&'a D, &'a mut DB::Connection, Pace) -> BoxFuture<'a, Result<Step<T>>> + Send + 'static
{
}

impl<DB: Database, D, T, F> WriteOp<DB, D, T> for F where
    F: for<'a> Fn(&'a D, &'a mut DB::Connection, Pace) -> BoxFuture<'a, Result<Step<T>>>
        + Send
        + 'static
{
}

/// A write of one statement (or of statements that would each stand alone).
pub(crate) trait WriteOneOp<DB: Database, D, T>:
    for<'a> Fn(&'a D, &'a mut DB::Connection) -> BoxFuture<'a, Result<T>> + Send + Sync + 'static
{
}

impl<DB: Database, D, T, F> WriteOneOp<DB, D, T> for F where
    F: for<'a> Fn(&'a D, &'a mut DB::Connection) -> BoxFuture<'a, Result<T>>
        + Send
        + Sync
        + 'static
{
}

/// One queued write and where its answer goes.
struct Pending<D, T, F> {
    data: D,
    op: F,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<DB, D, T, F> Operation<DB> for Pending<D, T, F>
where
    DB: Database,
    D: Send + 'static,
    T: Send + 'static,
    F: WriteOp<DB, D, T>,
{
    fn run<'a>(&'a mut self, conn: &'a mut DB::Connection, pace: Pace) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let (result, undo) = match (self.op)(&self.data, conn, pace).await {
                Ok(Step::Keep(v)) => (Ok(v), false),
                Ok(Step::Undo(v)) => (Ok(v), true),
                Err(e) => (Err(e), true),
            };
            self.result = Some(result);
            undo
        })
    }

    fn finish(self: Box<Self>, batch: Result<()>) {
        let answer = match (self.result, batch) {
            // A write that failed by itself reports its own error, whatever the batch did.
            (Some(Err(e)), _) => Err(e),
            (_, Err(e)) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (None, Ok(())) => Err(StoreError::Closed),
        };
        // The caller may have gone away (its future was dropped): nothing to tell.
        let _ = self.reply.send(answer);
    }
}

/// A queued write and whether it runs inside its own savepoint.
struct Job<DB> {
    savepoint: bool,
    op: Box<dyn Operation<DB>>,
}

/// How a writer starts each batch.
pub(crate) struct Batching {
    /// Starts a batch's transaction (and may take locks the store's writes need).
    pub(crate) begin: &'static str,
    /// Set by the database when it rolled the whole transaction back by itself
    /// (SQLite's rollback hook); `None` where that cannot happen unseen.
    pub(crate) rolled_back: Option<Arc<AtomicBool>>,
}

/// Handle to a store's writer (one per store that writes through it).
pub(crate) struct GroupWriter<DB: Database> {
    queue: mpsc::Sender<Job<DB>>,
    stop: watch::Sender<bool>,
    running: std::sync::Mutex<Option<Running>>,
}

impl<DB: Database> GroupWriter<DB> {
    /// Refuses new writes ([`StoreError::Closed`]), commits the ones already queued and
    /// waits for the writer to close its connection.
    pub(crate) async fn stop(&self) {
        self.stop.send_replace(true);
        let running = self.running.lock().ok().and_then(|mut r| r.take());
        // A writer that panicked has dropped its connection too.
        match running {
            Some(Running::Thread(thread)) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            None => {}
        }
    }
}

impl<DB> GroupWriter<DB>
where
    DB: Grouped,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Starts the writer on `pool`. The writer takes a connection with its first batch
    /// and keeps it until [`stop`](Self::stop) or until the handle is dropped, so a
    /// SQLite store that writes through it must not use `pool` (its one connection)
    /// itself.
    pub(crate) fn start(
        store: &'static str,
        pool: Pool<DB>,
        batching: Batching,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        let (stop, stopped) = watch::channel(false);
        let writer = run(store, pool, jobs, stopped, batching);
        let running = DB::spawn(format!("{store}-writer"), Box::pin(writer))?;
        Ok(GroupWriter {
            queue,
            stop,
            running: std::sync::Mutex::new(Some(running)),
        })
    }

    /// Runs `op` on `data` in the next batch, inside its own savepoint: [`Step::Undo`] or
    /// an error rolls back what it wrote. Returns its result once the batch has committed.
    pub(crate) async fn write<D, T, F>(&self, data: D, op: F) -> Result<T>
    where
        D: Send + 'static,
        T: Send + 'static,
        F: WriteOp<DB, D, T>,
    {
        self.submit(true, data, op).await
    }

    /// Runs `op` on `data` in the next batch without a savepoint: for writes of one
    /// statement, or of statements that would each have been committed on their own.
    /// Returns its result once the batch has committed.
    pub(crate) async fn write_one<D, T, F>(&self, data: D, op: F) -> Result<T>
    where
        D: Send + Sync + 'static,
        T: Send + 'static,
        F: WriteOneOp<DB, D, T>,
    {
        self.submit(
            false,
            (data, op),
            |(data, op): &(D, F), conn: &mut DB::Connection, _| {
                Box::pin(async move { op(data, conn).await.map(Step::Keep) })
            },
        )
        .await
    }

    async fn submit<D, T, F>(&self, savepoint: bool, data: D, op: F) -> Result<T>
    where
        D: Send + 'static,
        T: Send + 'static,
        F: WriteOp<DB, D, T>,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            savepoint,
            op: Box::new(Pending {
                data,
                op,
                result: None,
                reply,
            }),
        };
        self.queue.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Why a batch did not commit; turned into one [`StoreError`] per caller.
#[derive(Clone)]
enum Abort {
    Closed,
    Failed(Arc<dyn std::error::Error + Send + Sync>),
}

impl Abort {
    fn error(&self) -> StoreError {
        match self {
            Abort::Closed => StoreError::Closed,
            Abort::Failed(e) => StoreError::GroupCommit(e.clone()),
        }
    }

    fn sqlx(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolClosed => Abort::Closed,
            other => Abort::Failed(Arc::new(other)),
        }
    }

    fn message(msg: &str) -> Self {
        Abort::Failed(Arc::new(std::io::Error::other(msg.to_owned())))
    }
}

async fn run<DB>(
    store: &'static str,
    pool: Pool<DB>,
    mut jobs: mpsc::Receiver<Job<DB>>,
    mut stop: watch::Receiver<bool>,
    batching: Batching,
) where
    DB: Grouped,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut held: Option<Held<DB>> = None;
    loop {
        let received = tokio::select! {
            n = jobs.recv_many(&mut batch, MAX_BATCH) => n,
            // Refuse new writes; the loop drains the queued ones, then ends.
            _ = stop.wait_for(|stop| *stop), if !jobs.is_closed() => {
                jobs.close();
                continue;
            }
        };
        if received == 0 {
            if let Some(conn) = held.take() {
                // The store is closing (or gone): close the connection here rather than
                // hand it back through a task this thread's runtime would never run.
                conn.close().await;
            }
            break;
        }
        let conn = match held.take() {
            Some(conn) => Ok(conn),
            None if DB::OWN_CONNECTION => {
                <DB::Connection as sqlx::Connection>::connect_with(&pool.connect_options())
                    .await
                    .map(Held::Own)
                    .map_err(Abort::sqlx)
            }
            None => pool.acquire().await.map(Held::Pooled).map_err(Abort::sqlx),
        };
        let outcome = match conn {
            Ok(mut conn) => {
                let r = run_batch(conn.conn(), &mut batch, &batching).await;
                if r.is_ok() {
                    held = Some(conn);
                } else if DB::ERROR_ABORTS {
                    // Its transaction may still be open: never hand it to anyone else.
                    conn.close().await;
                }
                // SQLite: after a failure the pool checks the connection before it is
                // used again.
                r
            }
            Err(e) => Err(e),
        };
        if let Err(Abort::Failed(e)) = &outcome {
            tracing::warn!(store, error = %e, writes = batch.len(), "a group commit failed");
        }
        metrics::histogram!(crate::metrics::GROUP_COMMIT_WRITES, "store" => store)
            .record(batch.len() as f64);
        for job in batch.drain(..) {
            job.op
                .finish(outcome.as_ref().map(|_| ()).map_err(Abort::error));
        }
    }
}

/// Runs every job of `batch` in one transaction on `conn` and commits it.
///
/// The first pass is optimistic: no savepoints. If a job that needs one fails or asks
/// to undo (on PostgreSQL: any job that fails), the whole transaction is rolled back
/// and the batch runs again, with savepoints from that job on (the jobs before it run
/// again as they did, on the same state). Only the results of the pass that commits
/// are delivered.
async fn run_batch<DB>(
    conn: &mut DB::Connection,
    batch: &mut [Job<DB>],
    batching: &Batching,
) -> std::result::Result<(), Abort>
where
    DB: Grouped,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut safe_from = batch.len();
    loop {
        begin::<DB>(conn, batching.begin).await?;
        if let Some(flag) = &batching.rolled_back {
            flag.store(false, Ordering::Release);
        }
        let ran = run_jobs::<DB>(conn, batch, safe_from, batching.rolled_back.as_deref()).await;
        let committed = match ran {
            // Also releases the savepoint the last job may have left open.
            Ok(()) => exec::<DB>(conn, DB::COMMIT).await.map_err(Abort::sqlx),
            // Strictly before `safe_from`, so this ends.
            Err(Pass::Redo(from)) => {
                metrics::counter!(crate::metrics::GROUP_COMMIT_REDONE_TOTAL).increment(1);
                exec::<DB>(conn, "ROLLBACK").await.map_err(Abort::sqlx)?;
                safe_from = from;
                continue;
            }
            Err(Pass::Abort(e)) => Err(e),
        };
        if committed.is_err() {
            // Leave the connection outside any transaction for the next user (an error
            // here only means the database rolled back already).
            let _ = exec::<DB>(conn, "ROLLBACK").await;
        }
        return committed;
    }
}

/// Why a pass over a batch stopped early.
enum Pass {
    /// Job `n` needs the savepoint it ran without: roll back, run again with
    /// savepoints from `n` on.
    Redo(usize),
    /// The batch cannot commit.
    Abort(Abort),
}

/// Runs the jobs in order, jobs from `safe_from` on inside their savepoint if they need
/// one (on PostgreSQL every job does: any error aborts the transaction). A kept
/// savepoint is released lazily, together with the next job's `SAVEPOINT` (or by the
/// `COMMIT`): one round trip per job instead of two. A job without a savepoint that
/// runs inside a kept one is unaffected: a kept savepoint is only ever released, never
/// rolled back to.
async fn run_jobs<DB>(
    conn: &mut DB::Connection,
    batch: &mut [Job<DB>],
    safe_from: usize,
    rolled_back: Option<&AtomicBool>,
) -> std::result::Result<(), Pass>
where
    DB: Grouped,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut open = false;
    for (n, job) in batch.iter_mut().enumerate() {
        let needs = job.savepoint || DB::ERROR_ABORTS;
        let savepoint = needs && n >= safe_from;
        if savepoint {
            let start = if open {
                "RELEASE op; SAVEPOINT op"
            } else {
                "SAVEPOINT op"
            };
            exec::<DB>(conn, start)
                .await
                .map_err(|e| Pass::Abort(Abort::sqlx(e)))?;
            open = true;
        }
        let pace = if savepoint {
            Pace::Stepwise
        } else {
            Pace::Fast
        };
        let undo = AssertUnwindSafe(job.op.run(conn, pace))
            .catch_unwind()
            .await
            .map_err(|_| Pass::Abort(Abort::message("a write panicked")))?;
        if rolled_back.is_some_and(|r| r.load(Ordering::Acquire)) {
            return Err(Pass::Abort(Abort::message(
                "SQLite rolled the transaction back after an error",
            )));
        }
        if undo && needs {
            if !savepoint {
                return Err(Pass::Redo(n));
            }
            exec::<DB>(conn, "ROLLBACK TO op; RELEASE op")
                .await
                .map_err(|e| Pass::Abort(Abort::sqlx(e)))?;
            open = false;
        }
    }
    Ok(())
}

/// Starts the batch's transaction with `sql`. A SQLite connection left inside a
/// transaction (a batch abandoned mid-way) is rolled back first (a PostgreSQL one is
/// never reused after a failed batch).
async fn begin<DB>(conn: &mut DB::Connection, sql: &'static str) -> std::result::Result<(), Abort>
where
    DB: Grouped,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    match exec::<DB>(conn, sql).await {
        Ok(()) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.message().contains("within a transaction") => {
            exec::<DB>(conn, "ROLLBACK").await.map_err(Abort::sqlx)?;
            exec::<DB>(conn, sql).await.map_err(Abort::sqlx)
        }
        Err(e) => Err(Abort::sqlx(e)),
    }
}

async fn exec<DB>(conn: &mut DB::Connection, sql: &'static str) -> sqlx::Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    sqlx::raw_sql(sql).execute(conn).await.map(|_| ())
}

/// `statements` as one statement text, run in one round trip with the arguments of each
/// statement bound after those of the statements before it (each statement's `$n` is
/// renumbered after theirs). The statements are the texts both dialects share.
///
/// SQLite runs the statements in order, separated by `;`, and returns every row any of
/// them returns; those that must return rows are listed in `rows` (the others must
/// return none). PostgreSQL takes one statement only: there they become the
/// data-modifying parts of one `WITH` (`s0`, `s1`, …), which all run on the same
/// snapshot, so none may depend on what another writes, except through the rows the
/// part before it returns, which a statement names `{prev}` (PostgreSQL only). It
/// returns the rows of the one statement in `rows`, one row (`1`) per row of each
/// statement in `rows` when they are several (to be counted), or none.
pub(crate) fn chain<DB: Grouped, S: AsRef<str>>(statements: &[S], rows: &[usize]) -> String
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let renumbered = renumber(statements);
    if !DB::ERROR_ABORTS {
        debug_assert!(!renumbered.iter().any(|s| s.contains("{prev}")));
        return renumbered.join("; ");
    }
    let mut out = String::from("WITH ");
    for (i, statement) in renumbered.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let statement = match i.checked_sub(1) {
            Some(p) => statement.replace("{prev}", &format!("s{p}")),
            None => statement.clone(),
        };
        out.push_str(&format!("s{i} AS ({statement})"));
    }
    match rows {
        [] => out.push_str(" SELECT 1 WHERE false"),
        [one] => out.push_str(&format!(" SELECT * FROM s{one}")),
        many => {
            let selects: Vec<String> = many.iter().map(|i| format!("SELECT 1 FROM s{i}")).collect();
            out.push(' ');
            out.push_str(&selects.join(" UNION ALL "));
        }
    }
    out
}

/// Each statement with its `$n` renumbered after those of the statements before it.
fn renumber<S: AsRef<str>>(statements: &[S]) -> Vec<String> {
    let mut all = Vec::with_capacity(statements.len());
    let mut offset = 0;
    for statement in statements {
        let statement = statement.as_ref();
        let mut out = String::with_capacity(statement.len() + 8);
        let mut highest = 0;
        let mut chars = statement.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            out.push(c);
            if c != '$' {
                continue;
            }
            let mut end = i + 1;
            while let Some(&(j, d)) = chars.peek() {
                if !d.is_ascii_digit() {
                    break;
                }
                end = j + 1;
                chars.next();
            }
            if let Ok(n) = statement[i + 1..end].parse::<usize>() {
                highest = highest.max(n);
                out.push_str(&(n + offset).to_string());
            } else {
                out.push_str(&statement[i + 1..end]);
            }
        }
        offset += highest;
        all.push(out);
    }
    all
}

/// Runs `op` on `data` in a transaction of its own on `pool`: committed on
/// [`Step::Keep`], rolled back on [`Step::Undo`] or an error: for stores without a
/// writer, and while a store is being opened.
async fn per_call<DB, D, T, F>(pool: &Pool<DB>, data: &D, op: F) -> Result<T>
where
    DB: Database,
    F: for<'a> Fn(&'a D, &'a mut DB::Connection, Pace) -> BoxFuture<'a, Result<Step<T>>>,
{
    let mut tx = pool.begin().await.map_err(StoreError::from_sqlx)?;
    match op(data, &mut *tx, Pace::Stepwise).await? {
        Step::Keep(v) => {
            tx.commit().await.map_err(StoreError::from_sqlx)?;
            Ok(v)
        }
        // Dropping the transaction rolls it back.
        Step::Undo(v) => Ok(v),
    }
}

/// Runs `op` on `data` on a connection of `pool` outside any transaction: each
/// statement commits by itself.
async fn per_call_one<DB, D, T, F>(pool: &Pool<DB>, data: &D, op: F) -> Result<T>
where
    DB: Database,
    F: for<'a> Fn(&'a D, &'a mut DB::Connection) -> BoxFuture<'a, Result<T>>,
{
    let mut conn = pool.acquire().await.map_err(StoreError::from_sqlx)?;
    op(data, &mut *conn).await
}

// The writes are the crate's own; `Grouped` is an implementation detail of them.
#[allow(private_bounds)]
impl<DB> SqlStore<DB>
where
    DB: Grouped,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Runs a write of several statements: in the next group commit, inside its own
    /// savepoint (see [`GroupWriter::write`]); without a writer, in a transaction of
    /// its own.
    pub(crate) async fn write<D, T, F>(&self, data: D, op: F) -> Result<T>
    where
        D: Send + 'static,
        T: Send + 'static,
        F: WriteOp<DB, D, T>,
    {
        match &self.group {
            Some(group) => group.write(data, op).await,
            None => per_call(&self.writer, &data, op).await,
        }
    }

    /// Runs a write of one statement (or of statements that stand alone) in the next
    /// group commit (see [`GroupWriter::write_one`]); without a writer, as autocommitted
    /// statements.
    pub(crate) async fn write_one<D, T, F>(&self, data: D, op: F) -> Result<T>
    where
        D: Send + Sync + 'static,
        T: Send + 'static,
        F: WriteOneOp<DB, D, T>,
    {
        match &self.group {
            Some(group) => group.write_one(data, op).await,
            None => per_call_one(&self.writer, &data, op).await,
        }
    }
}

#[cfg(test)]
mod tests;
