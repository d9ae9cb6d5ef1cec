//! Metric names of the store.

/// Histogram: duration of one store operation, labelled `op` and `backend`.
pub const STORE_OPERATION_SECONDS: &str = "surge_store_operation_duration_seconds";
/// Counter: store operations that failed, labelled `op` and `backend`.
pub const STORE_ERRORS_TOTAL: &str = "surge_store_errors_total";

/// Histogram: writes committed together by one SQLite group commit, labelled `store`.
pub const GROUP_COMMIT_WRITES: &str = "surge_store_group_commit_writes";

/// Counter: SQLite group commits run again with savepoints because a write in them
/// failed or undid its changes.
pub const GROUP_COMMIT_REDONE_TOTAL: &str = "surge_store_group_commit_redone_total";

/// Records the outcome of one operation.
pub(crate) fn record<T, E>(
    backend: &'static str,
    op: &'static str,
    started: std::time::Instant,
    result: &Result<T, E>,
) {
    metrics::histogram!(STORE_OPERATION_SECONDS, "op" => op, "backend" => backend)
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!(STORE_ERRORS_TOTAL, "op" => op, "backend" => backend).increment(1);
    }
}
