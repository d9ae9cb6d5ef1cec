//! Projector settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the projector batches and compresses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectorConfig {
    /// Outbox entries applied per transaction. Default 256.
    pub batch_size: u32,
    /// How often to look for work written by other processes, in milliseconds
    /// (writes in this process wake the projector at once). Default 100.
    pub poll_interval_ms: u64,
    /// gzip level of pre-compressed views, 1 (fast) to 9 (small). Default 6.
    pub gzip_level: u32,
    /// Applied outbox entries kept for inspection and replay; older ones are deleted in
    /// the background, 10,000 at a time. Default 100,000.
    pub outbox_retain_entries: u64,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            batch_size: 256,
            poll_interval_ms: 100,
            gzip_level: 6,
            outbox_retain_entries: 100_000,
        }
    }
}

impl ProjectorConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(format!(
                "projector.batch_size must be 1..=10000, got {}",
                self.batch_size
            ));
        }
        if !(1..=9).contains(&self.gzip_level) {
            return Err(format!(
                "projector.gzip_level must be 1..=9, got {}",
                self.gzip_level
            ));
        }
        if !(1..=60_000).contains(&self.poll_interval_ms) {
            return Err(format!(
                "projector.poll_interval_ms must be 1..=60000, got {}",
                self.poll_interval_ms
            ));
        }
        Ok(())
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}
