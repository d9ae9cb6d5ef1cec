//! Configuration of the edge: the route table, where upstreams are, identity, API keys
//! and request limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::authenticator::ApiKeyEntry;
use crate::identity::IdentityConfig;
use crate::routes::{Access, Route};

/// Where an upstream runs: `in-process` (all-in-one) or `http://host:port`.
pub const IN_PROCESS: &str = "in-process";

/// Everything the edge can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Path prefix → upstream and policy. Default: the table in [`default_routes`].
    pub routes: Vec<Route>,
    /// Upstream name → `in-process` or `http://host:port`. Default: `catalog` and
    /// `identity` in process.
    pub upstreams: BTreeMap<String, String>,
    /// Idle connections kept per remote upstream. Default 64.
    pub upstream_max_idle: usize,
    /// Largest request body, in bytes. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Longest an upstream call may take, in milliseconds (504 after). Default 10,000.
    pub timeout_ms: u64,
    /// API keys of partners and services (hashes, never keys).
    pub api_keys: Vec<ApiKeyEntry>,
    /// Accounts, tokens, keys, revocation.
    pub identity: IdentityConfig,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            routes: default_routes(),
            upstreams: [("catalog", IN_PROCESS), ("identity", IN_PROCESS)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            upstream_max_idle: 64,
            max_body_bytes: 1024 * 1024,
            timeout_ms: 10_000,
            api_keys: Vec::new(),
            identity: IdentityConfig::default(),
        }
    }
}

/// The routes of a fresh install.
pub fn default_routes() -> Vec<Route> {
    let r = |prefix: &str, upstream: &str, access, authenticators: &[&str], cacheable| Route {
        prefix: prefix.into(),
        upstream: upstream.into(),
        access,
        authenticators: authenticators.iter().map(|a| (*a).to_owned()).collect(),
        cacheable,
    };
    let users = &["jwt", "api-key"];
    vec![
        r("/products", "catalog", Access::Public, users, true),
        r("/product-offers", "catalog", Access::Public, users, true),
        r("/admin", "catalog", Access::Admin, &[], false),
        r("/healthz", "catalog", Access::Public, &[], false),
        r("/readyz", "catalog", Access::Public, &[], false),
        r("/metrics", "catalog", Access::Public, &[], false),
        r("/openapi.json", "catalog", Access::Public, &[], false),
        r("/auth", "identity", Access::Public, &[], false),
        r(
            "/auth/me",
            "identity",
            Access::Authenticated,
            &["jwt"],
            false,
        ),
        r(
            "/auth/logout",
            "identity",
            Access::Authenticated,
            &["jwt"],
            false,
        ),
        r("/.well-known", "identity", Access::Public, &[], false),
        r("/admin/sessions", "identity", Access::Admin, &[], false),
        r("/admin/users", "identity", Access::Admin, &[], false),
    ]
}

impl EdgeConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes == 0 || self.timeout_ms == 0 {
            return Err("edge.max_body_bytes and edge.timeout_ms must be > 0".into());
        }
        for (name, at) in &self.upstreams {
            if at != IN_PROCESS && !at.starts_with("http://") {
                return Err(format!(
                    "edge.upstreams.{name} must be \"{IN_PROCESS}\" or http://host:port, got {at:?}"
                ));
            }
        }
        self.identity.validate()
    }
}
