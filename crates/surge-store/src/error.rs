//! Errors of the store.

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// The store URL or options are invalid.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The projector position moved under us (two projectors on one store).
    #[error("projector position conflict: expected {expected}, found {found}")]
    PositionConflict {
        /// The position the writer started from.
        expected: i64,
        /// The position actually stored.
        found: i64,
    },
    /// A row with this unique key exists already.
    #[error("already exists")]
    Duplicate,
    /// The transaction of a SQLite group commit failed (or SQLite rolled it back), so
    /// the writes batched in it did not take effect — or, when the `COMMIT` itself
    /// failed, may have. Every caller in the batch gets this error; retry.
    #[error("group commit failed: {0}")]
    GroupCommit(std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// A stored value could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Normalises a closed pool into [`StoreError::Closed`].
    pub(crate) fn from_sqlx(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolClosed => StoreError::Closed,
            other => StoreError::Database(other),
        }
    }
}
