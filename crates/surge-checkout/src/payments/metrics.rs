//! Metric names of the payments service.

/// Counter: calls to the payment provider, labelled `op` (`authorize`, `capture`,
/// `void`, `refund`, `find`) and `outcome` (`ok`, `declined`, `timeout`,
/// `unavailable`, `rejected`).
pub const PROVIDER_CALLS_TOTAL: &str = "surge_payment_provider_calls_total";
/// Histogram: duration of one call to the payment provider, labelled `op`.
pub const PROVIDER_CALL_SECONDS: &str = "surge_payment_provider_call_duration_seconds";

/// Records one provider call.
pub(crate) fn record_call(op: &'static str, outcome: &'static str, started: std::time::Instant) {
    metrics::counter!(PROVIDER_CALLS_TOTAL, "op" => op, "outcome" => outcome).increment(1);
    metrics::histogram!(PROVIDER_CALL_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
}
