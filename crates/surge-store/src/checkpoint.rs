//! SQLite WAL checkpoints on their own thread and connection.
//!
//! With SQLite's default auto-checkpoint, the commit that crosses 1,000 WAL pages copies
//! them into the database file inside the single writer's commit, so every write queued
//! behind it waits (under a stream of offer updates that was a quarter of the writer's
//! time). Here the writer never checkpoints (`wal_autocheckpoint=0`); a dedicated thread
//! runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection every
//! [`CHECKPOINT_EVERY`]. A passive checkpoint never blocks the writer or readers, and
//! the writer restarts the WAL from the top once it has been fully copied back.
//!
//! The thread has its own small runtime, so it neither competes with request tasks nor
//! fires under a test's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

/// How often the WAL is copied back into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The WAL pages not yet copied back after the last checkpoint (a gauge).
pub const WAL_BACKLOG_PAGES: &str = "surge_store_sqlite_wal_backlog_pages";

/// Handle to the checkpoint thread; stopping it joins the thread.
pub(crate) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts the thread on a connection made from `options` (the writer's options).
    pub(crate) fn start(options: SqliteConnectOptions) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(options, &flag))?;
        Ok(Checkpointer {
            stop,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread and waits for its last checkpoint to finish.
    pub(crate) async fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            thread.thread().unpark();
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            thread.thread().unpark();
        }
    }
}

fn run(options: SqliteConnectOptions, stop: &AtomicBool) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "no runtime for the WAL checkpointer; the WAL will grow until restart");
            return;
        }
    };
    runtime.block_on(async {
        let mut conn = match options.connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the WAL checkpointer cannot connect; the WAL will grow until restart");
                return;
            }
        };
        let mut failing = false;
        while !stop.load(Ordering::Acquire) {
            match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut conn)
                .await
            {
                Ok(row) => {
                    // (busy, pages in the WAL, pages copied back)
                    let log: i64 = row.try_get(1).unwrap_or(0);
                    let done: i64 = row.try_get(2).unwrap_or(0);
                    metrics::gauge!(WAL_BACKLOG_PAGES).set((log - done).max(0) as f64);
                    failing = false;
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                }
                Err(_) => {}
            }
            std::thread::park_timeout(CHECKPOINT_EVERY);
        }
        let _ = conn.close().await;
    });
}
