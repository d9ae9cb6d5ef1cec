//! Metric names of the projector.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// Gauge: the last applied outbox position.
pub const APPLIED_POSITION: &str = "surge_projector_applied_position";
/// Gauge: the outbox head seen by the last step (entries up to it are applied).
pub const HEAD_POSITION: &str = "surge_projector_head_position";
/// Gauge: outbox entries written but not applied yet (set on scrape).
pub const LAG_ENTRIES: &str = "surge_projector_lag_entries";
/// Gauge: age of the oldest entry of the last applied batch, in seconds.
pub const LAG_SECONDS: &str = "surge_projector_lag_seconds";
/// Counter: outbox entries applied.
pub const ENTRIES_TOTAL: &str = "surge_projector_entries_applied_total";
/// Counter: views written or deleted.
pub const VIEWS_TOTAL: &str = "surge_projector_views_written_total";
/// Histogram: duration of one step (read, render, commit, write-through).
pub const STEP_SECONDS: &str = "surge_projector_step_duration_seconds";
/// Counter: failed steps (retried).
pub const FAILURES_TOTAL: &str = "surge_projector_failures_total";

pub(crate) fn publish_positions(applied: i64, head: i64) {
    gauge!(APPLIED_POSITION).set(applied as f64);
    gauge!(HEAD_POSITION).set(head as f64);
}

pub(crate) fn applied(entries: usize, views: usize, took: Duration, lag: f64, position: i64) {
    counter!(ENTRIES_TOTAL).increment(entries as u64);
    counter!(VIEWS_TOTAL).increment(views as u64);
    histogram!(STEP_SECONDS).record(took.as_secs_f64());
    gauge!(LAG_SECONDS).set(lag);
    gauge!(APPLIED_POSITION).set(position as f64);
    gauge!(HEAD_POSITION).set(position as f64);
}

pub(crate) fn failure() {
    counter!(FAILURES_TOTAL).increment(1);
}

pub(crate) fn idle() {
    gauge!(LAG_SECONDS).set(0.0);
}
