//! Node health: active checks (a `GET` on each node every interval) and passive outlier
//! ejection (consecutive failures take a node out for a growing interval), Envoy's two
//! mechanisms.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Active health checks of an upstream's nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Whether to check at all. Default true.
    pub enabled: bool,
    /// Path asked (any 2xx is healthy). Default `/healthz`.
    pub path: String,
    /// Between two rounds, in milliseconds. Default 2,000.
    pub interval_ms: u64,
    /// A check slower than this fails, in milliseconds. Default 1,000.
    pub timeout_ms: u64,
    /// Consecutive failed checks that mark a node unhealthy. Default 2.
    pub unhealthy_after: u32,
    /// Consecutive good checks that mark it healthy again. Default 1.
    pub healthy_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            path: "/healthz".into(),
            interval_ms: 2_000,
            timeout_ms: 1_000,
            unhealthy_after: 2,
            healthy_after: 1,
        }
    }
}

/// Passive outlier ejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Whether to eject at all. Default true.
    pub enabled: bool,
    /// Consecutive failures (connect errors, broken exchanges, timeouts, 5xx) that
    /// eject a node. Default 5.
    pub consecutive_failures: u32,
    /// First ejection, in milliseconds; the k-th in a row lasts k times as long.
    /// Default 5,000.
    pub base_ejection_ms: u64,
    /// Longest ejection, in milliseconds. Default 60,000.
    pub max_ejection_ms: u64,
    /// At most this share of the nodes is ejected at once (at least one node may
    /// always be). Default 50.
    pub max_ejected_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            enabled: true,
            consecutive_failures: 5,
            base_ejection_ms: 5_000,
            max_ejection_ms: 60_000,
            max_ejected_percent: 50,
        }
    }
}

impl HealthConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if !self.path.starts_with('/') {
            return Err(format!("{at}.health.path must start with /"));
        }
        if self.interval_ms == 0
            || self.timeout_ms == 0
            || self.unhealthy_after == 0
            || self.healthy_after == 0
        {
            return Err(format!(
                "{at}.health.interval_ms, timeout_ms, unhealthy_after and healthy_after must be > 0"
            ));
        }
        Ok(())
    }
}

impl OutlierConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.consecutive_failures == 0 || self.base_ejection_ms == 0 {
            return Err(format!(
                "{at}.outlier.consecutive_failures and base_ejection_ms must be > 0"
            ));
        }
        if self.max_ejection_ms < self.base_ejection_ms || self.max_ejected_percent > 100 {
            return Err(format!(
                "{at}.outlier.max_ejection_ms must be ≥ base_ejection_ms and max_ejected_percent ≤ 100"
            ));
        }
        Ok(())
    }
}

/// What the cluster knows about one node's health. Times are milliseconds since the
/// cluster's epoch.
#[derive(Debug)]
pub struct NodeHealth {
    healthy: AtomicBool,
    check_failures: AtomicU32,
    check_successes: AtomicU32,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
}

impl Default for NodeHealth {
    fn default() -> Self {
        NodeHealth {
            // A node is trusted until a check says otherwise, so a fresh edge serves at once.
            healthy: AtomicBool::new(true),
            check_failures: AtomicU32::new(0),
            check_successes: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }
}

impl NodeHealth {
    /// Whether the active checks find the node healthy.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether the node is ejected at `now_ms`.
    pub fn ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Records an active check; answers the new health when it changed.
    pub fn checked(&self, ok: bool, config: &HealthConfig) -> Option<bool> {
        if ok {
            self.check_failures.store(0, Ordering::Relaxed);
            let n = self.check_successes.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= config.healthy_after && !self.healthy.swap(true, Ordering::Relaxed) {
                return Some(true);
            }
        } else {
            self.check_successes.store(0, Ordering::Relaxed);
            let n = self.check_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= config.unhealthy_after && self.healthy.swap(false, Ordering::Relaxed) {
                return Some(false);
            }
        }
        None
    }

    /// Records a call's outcome. Answers how long to eject the node for when this
    /// failure makes it an outlier (the caller checks how many nodes are out already and
    /// then calls [`NodeHealth::eject`]).
    pub fn called(&self, failed: bool, now_ms: u64, config: &OutlierConfig) -> Option<u64> {
        if !failed {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            return None;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if !config.enabled || n < config.consecutive_failures || self.ejected(now_ms) {
            return None;
        }
        // Ejections in a row grow; a node that stayed in for a whole maximum
        // ejection starts again from the base.
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        let mut k = self.ejections.load(Ordering::Relaxed);
        if until > 0 && now_ms.saturating_sub(until) > config.max_ejection_ms {
            k = 0;
        }
        let k = k + 1;
        self.ejections.store(k, Ordering::Relaxed);
        Some(
            config
                .base_ejection_ms
                .saturating_mul(u64::from(k))
                .min(config.max_ejection_ms),
        )
    }

    /// Takes the node out until `until_ms`.
    pub fn eject(&self, until_ms: u64) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejected_until_ms.store(until_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_checks_flip_health_after_the_configured_runs() {
        let h = NodeHealth::default();
        let c = HealthConfig::default();
        assert!(h.healthy());
        assert_eq!(h.checked(false, &c), None, "one failure is not enough");
        assert_eq!(h.checked(false, &c), Some(false));
        assert!(!h.healthy());
        assert_eq!(h.checked(false, &c), None);
        assert_eq!(h.checked(true, &c), Some(true));
        assert!(h.healthy());
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_interval() {
        let h = NodeHealth::default();
        let c = OutlierConfig::default();
        for _ in 0..4 {
            assert_eq!(h.called(true, 0, &c), None);
        }
        assert_eq!(h.called(false, 0, &c), None, "a success resets the run");
        for _ in 0..4 {
            assert_eq!(h.called(true, 0, &c), None);
        }
        assert_eq!(h.called(true, 0, &c), Some(5_000));
        h.eject(5_000);
        assert!(h.ejected(4_999));
        assert!(!h.ejected(5_000));
        for _ in 0..4 {
            h.called(true, 6_000, &c);
        }
        assert_eq!(
            h.called(true, 6_000, &c),
            Some(10_000),
            "second in a row: 2×"
        );
        h.eject(16_000);
        // Long after: back to the base.
        for _ in 0..4 {
            h.called(true, 200_000, &c);
        }
        assert_eq!(h.called(true, 200_000, &c), Some(5_000));
    }
}
