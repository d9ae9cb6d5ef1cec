//! The backends every conformance suite runs against: a fresh SQLite file, and (with
//! `--features pg-tests` and `SURGE_TEST_POSTGRES_URL`) a fresh PostgreSQL schema per
//! test — failing loudly, never skipping, when the feature is on and the URL is not.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use surge_store::{StoreError, StoreOptions};

/// An opened store and what keeps its files alive.
pub struct Backend<S: ?Sized> {
    pub store: Arc<S>,
    _dir: Option<tempfile::TempDir>,
}

/// Opens a store in a new SQLite file named `file` with `open(url, options)`.
pub async fn sqlite<S: ?Sized, F, Fut>(file: &str, open: F) -> Backend<S>
where
    F: FnOnce(String, StoreOptions) -> Fut,
    Fut: Future<Output = Result<Arc<S>, StoreError>>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join(file).display());
    let store = open(url, StoreOptions::default())
        .await
        .expect("open sqlite");
    Backend {
        store,
        _dir: Some(dir),
    }
}

/// Opens a store in a new schema of the PostgreSQL at `SURGE_TEST_POSTGRES_URL`.
pub async fn postgres<S: ?Sized, F, Fut>(open: F) -> Backend<S>
where
    F: FnOnce(String, StoreOptions) -> Fut,
    Fut: Future<Output = Result<Arc<S>, StoreError>>,
{
    let url = std::env::var("SURGE_TEST_POSTGRES_URL").expect(
        "pg-tests needs SURGE_TEST_POSTGRES_URL, e.g. postgres://postgres@127.0.0.1:5432/test",
    );
    let schema = format!(
        "conf_{}_{}",
        std::process::id(),
        rand::random_range(0..u32::MAX)
    );
    let options = StoreOptions {
        pg_schema: Some(schema),
        ..StoreOptions::default()
    };
    let store = open(url, options).await.expect("open postgres");
    Backend { store, _dir: None }
}
