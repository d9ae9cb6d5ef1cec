//! Read-cache settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How big the read cache is and how long entries live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Upper bound of cached view bytes (both encodings + keys). Default 512 MiB.
    pub max_bytes: u64,
    /// Life of an entry, in seconds. Default 60.
    pub ttl_seconds: f64,
    /// The last part of an entry's life, in seconds, in which reads serve it and start
    /// one background refresh. Default 15.
    pub stale_seconds: f64,
    /// Each entry's life is scaled by a random factor in `1 ± jitter_ratio`. Default 0.1.
    pub jitter_ratio: f64,
    /// How long an unknown key is remembered as absent, in seconds. Default 2.
    pub negative_ttl_seconds: f64,
    /// After a failed reload, how long the stale entry is served before the store is
    /// tried again, in seconds. Default 5.
    pub error_backoff_seconds: f64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 512 * 1024 * 1024,
            ttl_seconds: 60.0,
            stale_seconds: 15.0,
            jitter_ratio: 0.1,
            negative_ttl_seconds: 2.0,
            error_backoff_seconds: 5.0,
        }
    }
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::ZERO)
}

impl CacheConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bytes < 1024 * 1024 {
            return Err(format!(
                "cache.max_bytes must be at least 1048576, got {}",
                self.max_bytes
            ));
        }
        for (name, v) in [
            ("cache.ttl_seconds", self.ttl_seconds),
            ("cache.stale_seconds", self.stale_seconds),
            ("cache.negative_ttl_seconds", self.negative_ttl_seconds),
            ("cache.error_backoff_seconds", self.error_backoff_seconds),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be a non-negative number, got {v}"));
            }
        }
        if self.stale_seconds > self.ttl_seconds {
            return Err(format!(
                "cache.stale_seconds ({}) must not exceed cache.ttl_seconds ({})",
                self.stale_seconds, self.ttl_seconds
            ));
        }
        if !(0.0..0.5).contains(&self.jitter_ratio) {
            return Err(format!(
                "cache.jitter_ratio must be in [0, 0.5), got {}",
                self.jitter_ratio
            ));
        }
        Ok(())
    }

    pub(crate) fn ttl(&self) -> Duration {
        secs(self.ttl_seconds)
    }
    pub(crate) fn stale(&self) -> Duration {
        secs(self.stale_seconds)
    }
    pub(crate) fn negative_ttl(&self) -> Duration {
        secs(self.negative_ttl_seconds)
    }
    pub(crate) fn error_backoff(&self) -> Duration {
        secs(self.error_backoff_seconds)
    }
}
