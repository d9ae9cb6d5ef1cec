//! Catalog configuration: plain data with documented units and defaults.

use serde::{Deserialize, Serialize};

pub use crate::cache::CacheConfig;
pub use crate::projector::ProjectorConfig;

/// Limits and headers of the catalog's HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `Cache-Control: public, max-age=N` on read responses, in seconds. Default 60.
    pub cache_max_age_seconds: u32,
    /// Largest accepted request body, in bytes. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Most ids in one batch read. Default 100.
    pub max_batch_ids: usize,
    /// Most offers in one `POST /admin/offers`. Default 1000.
    pub max_offers_per_request: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            cache_max_age_seconds: 60,
            max_body_bytes: 1024 * 1024,
            max_batch_ids: 100,
            max_offers_per_request: 1000,
        }
    }
}

impl HttpConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(format!(
                "http.max_body_bytes must be 1..=67108864, got {}",
                self.max_body_bytes
            ));
        }
        if !(1..=10_000).contains(&self.max_batch_ids) {
            return Err(format!(
                "http.max_batch_ids must be 1..=10000, got {}",
                self.max_batch_ids
            ));
        }
        if !(1..=100_000).contains(&self.max_offers_per_request) {
            return Err(format!(
                "http.max_offers_per_request must be 1..=100000, got {}",
                self.max_offers_per_request
            ));
        }
        Ok(())
    }
}

/// Everything the catalog role needs to know.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// The read cache.
    pub cache: CacheConfig,
    /// The projector.
    pub projector: ProjectorConfig,
    /// HTTP limits and headers.
    pub http: HttpConfig,
}

impl CatalogConfig {
    /// Checks every section; the error names the key and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        self.cache.validate()?;
        self.projector.validate()?;
        self.http.validate()
    }
}
