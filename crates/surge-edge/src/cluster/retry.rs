//! Retries: which requests may be retried, how long to wait, and the budget that keeps
//! retries from multiplying a failure.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};

/// Retry settings of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = never retry). Default 3.
    pub attempts: u32,
    /// Backoff base, in milliseconds: the k-th retry waits a random time in
    /// `[0, min(max, base · 2^(k-1))]` ("full jitter"). Default 25.
    pub backoff_base_ms: u64,
    /// Longest backoff, in milliseconds. Default 250.
    pub backoff_max_ms: u64,
    /// Retries allowed as a share of recent requests, in percent. Default 20.
    pub budget_percent: f32,
    /// Retries allowed per second whatever the traffic (the floor). Default 10.
    pub budget_min_per_second: u32,
    /// Longest one attempt may take before it counts as failed, in milliseconds
    /// (the whole call, retries included, is bounded by the route's `timeout_ms`).
    /// Default 3,000.
    pub try_timeout_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            backoff_base_ms: 25,
            backoff_max_ms: 250,
            budget_percent: 20.0,
            budget_min_per_second: 10,
            try_timeout_ms: 3_000,
        }
    }
}

impl RetryConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.attempts == 0 || self.attempts > 10 {
            return Err(format!("{at}.retry.attempts must be 1..=10"));
        }
        if !(0.0..=1000.0).contains(&self.budget_percent) {
            return Err(format!("{at}.retry.budget_percent must be 0..=1000"));
        }
        if self.backoff_max_ms < self.backoff_base_ms || self.try_timeout_ms == 0 {
            return Err(format!(
                "{at}.retry.backoff_max_ms must be ≥ backoff_base_ms, try_timeout_ms > 0"
            ));
        }
        Ok(())
    }

    /// The wait before retry number `retry` (1-based), with full jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .backoff_base_ms
            .saturating_mul(1u64 << retry.saturating_sub(1).min(20))
            .min(self.backoff_max_ms);
        Duration::from_millis(random() % (cap + 1))
    }
}

/// Whether a request may be sent twice: an idempotent method (RFC 9110 §9.2.2) or an
/// `Idempotency-Key`.
pub fn may_retry(method: &Method, headers: &HeaderMap) -> bool {
    method.is_idempotent() || headers.contains_key("idempotency-key")
}

/// Answers worth trying on another node: the node (or something in front of it) could
/// not serve the request now. A 500 is the upstream's own error and is not retried.
pub fn retry_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// A random number good enough for jitter and picking nodes (not for secrets): each
/// `RandomState` is freshly keyed.
pub fn random() -> u64 {
    RandomState::new().hash_one(0u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_under_an_exponential_cap() {
        let c = RetryConfig::default();
        for _ in 0..200 {
            assert!(c.backoff(1) <= Duration::from_millis(25));
            assert!(c.backoff(2) <= Duration::from_millis(50));
            assert!(c.backoff(9) <= Duration::from_millis(250));
        }
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| c.backoff(5)).collect();
        assert!(distinct.len() > 10, "not jittered: {distinct:?}");
    }

    #[test]
    fn only_idempotent_requests_may_be_retried() {
        let none = HeaderMap::new();
        assert!(may_retry(&Method::GET, &none));
        assert!(may_retry(&Method::PUT, &none));
        assert!(may_retry(&Method::DELETE, &none));
        assert!(!may_retry(&Method::POST, &none));
        let mut keyed = HeaderMap::new();
        keyed.insert(
            "idempotency-key",
            "k1".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert!(may_retry(&Method::POST, &keyed));
        assert!(retry_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retry_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!retry_status(StatusCode::NOT_FOUND));
    }
}
