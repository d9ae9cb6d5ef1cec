//! Configuration of the edge: the route table, where upstreams are, identity, API keys
//! and request limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::authenticator::ApiKeyEntry;
use crate::cluster::ClusterConfig;
use crate::identity::IdentityConfig;
use crate::pipeline::micro_cache::MicroCacheConfig;
use crate::pipeline::rate_limit::{KeyBy, RateRule};
use crate::pipeline::shed::ShedClass;
use crate::routes::{Access, Route};

/// Where an upstream runs: `in-process` (all-in-one) or `http://host:port`.
pub const IN_PROCESS: &str = "in-process";

/// Where an upstream is: a string (`in-process`, or one node's `http://host:port` with
/// the default policies) or a table of nodes and policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UpstreamSpec {
    /// `in-process` or `http://host:port`.
    At(String),
    /// Nodes on other machines and how to use them.
    Cluster(Box<ClusterConfig>),
}

impl From<&str> for UpstreamSpec {
    fn from(at: &str) -> Self {
        UpstreamSpec::At(at.to_owned())
    }
}

impl From<String> for UpstreamSpec {
    fn from(at: String) -> Self {
        UpstreamSpec::At(at)
    }
}

impl UpstreamSpec {
    /// Whether the upstream runs in this process.
    pub fn in_process(&self) -> bool {
        matches!(self, UpstreamSpec::At(at) if at == IN_PROCESS)
    }

    /// The nodes and policies of a remote upstream (`None` for in-process).
    pub fn cluster(&self) -> Option<ClusterConfig> {
        match self {
            UpstreamSpec::At(at) if at == IN_PROCESS => None,
            UpstreamSpec::At(at) => Some(ClusterConfig::single(at)),
            UpstreamSpec::Cluster(c) => Some(c.as_ref().clone()),
        }
    }
}

/// Everything the edge can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Path prefix → upstream and policy. Default: the table in [`default_routes`].
    pub routes: Vec<Route>,
    /// Upstream name → `in-process`, `http://host:port`, or a table of nodes with
    /// balancing, retry, breaker and health settings ([`ClusterConfig`]). Default:
    /// `catalog` and `identity` in process.
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    /// Idle connections kept per remote node. Default 64.
    pub upstream_max_idle: usize,
    /// Largest request body, in bytes. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Longest an upstream call may take, in milliseconds (504 after). Default 10,000.
    pub timeout_ms: u64,
    /// API keys of partners and services (hashes, never keys).
    pub api_keys: Vec<ApiKeyEntry>,
    /// Rate-limit rules (GCRA per IP or per caller, by route class). Default: signup,
    /// login and refresh at 10/s per IP (burst 20).
    pub rate_limits: Vec<RateRule>,
    /// The micro-cache of anonymous answers on `cacheable` routes.
    pub micro_cache: MicroCacheConfig,
    /// Concurrency limits and load shedding per route class (classes not listed are
    /// never limited). Default: `browse` adaptive (8–1024, LIFO queue of 512), `auth`
    /// static 16 (password hashing is CPU-bound), queue 64.
    pub shedding: Vec<ShedClass>,
    /// Keys (IPs, callers) tracked per rate-limit rule at most; beyond, new keys share
    /// one overflow bucket until a sweep makes room. Default 100,000.
    pub rate_limit_max_keys: usize,
    /// Accounts, tokens, keys, revocation.
    pub identity: IdentityConfig,
    /// How often each edge node reads kill-switch changes made on other nodes, in
    /// milliseconds (1..=60,000). Changes apply at once on the node that made them.
    /// Default 1,000.
    pub switch_poll_ms: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            routes: default_routes(),
            upstreams: [("catalog", IN_PROCESS), ("identity", IN_PROCESS)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into()))
                .collect(),
            upstream_max_idle: 64,
            max_body_bytes: 1024 * 1024,
            timeout_ms: 10_000,
            api_keys: Vec::new(),
            rate_limits: vec![RateRule {
                name: "auth-per-ip".into(),
                classes: vec!["auth".into()],
                key: KeyBy::Ip,
                requests: 10,
                per_seconds: 1,
                burst: Some(20),
                shadow: false,
            }],
            rate_limit_max_keys: 100_000,
            micro_cache: MicroCacheConfig::default(),
            shedding: vec![
                ShedClass {
                    class: "browse".into(),
                    max_concurrency: 1024,
                    min_concurrency: 32,
                    adaptive: true,
                    latency_target_ms: 100,
                    queue: 512,
                    queue_timeout_ms: 500,
                    lifo: true,
                    priority: false,
                    max_lag_ms: 5.0,
                },
                ShedClass {
                    class: "auth".into(),
                    max_concurrency: 16,
                    min_concurrency: 16,
                    adaptive: false,
                    latency_target_ms: 1000,
                    queue: 64,
                    queue_timeout_ms: 2000,
                    lifo: false,
                    priority: false,
                    max_lag_ms: 0.0,
                },
            ],
            identity: IdentityConfig::default(),
            switch_poll_ms: 1_000,
        }
    }
}

/// The routes of a fresh install.
pub fn default_routes() -> Vec<Route> {
    let route = |prefix: &str, upstream: &str, access, class: &str| Route {
        prefix: prefix.into(),
        upstream: upstream.into(),
        access,
        authenticators: Vec::new(),
        cacheable: false,
        class: class.into(),
        timeout_ms: None,
        fallback: None,
    };
    // Catalog reads: anyone; an identity (user or partner) is passed on when given.
    let browse = |prefix: &str| Route {
        authenticators: vec!["jwt".into(), "api-key".into()],
        cacheable: true,
        ..route(prefix, "catalog", Access::Public, "browse")
    };
    let account = |prefix: &str| Route {
        authenticators: vec!["jwt".into()],
        ..route(prefix, "identity", Access::Authenticated, "account")
    };
    // Checkout: signed-in users only (the user id comes from the Envelope).
    let buy = |prefix: &str| Route {
        authenticators: vec!["jwt".into()],
        ..route(prefix, "checkout", Access::Authenticated, "checkout")
    };
    vec![
        browse("/products"),
        browse("/product-offers"),
        route("/admin", "catalog", Access::Admin, "admin"),
        route("/healthz", "catalog", Access::Public, "ops"),
        route("/readyz", "catalog", Access::Public, "ops"),
        route("/metrics", "catalog", Access::Public, "ops"),
        route("/openapi.json", "catalog", Access::Public, "ops"),
        route("/auth", "identity", Access::Public, "auth"),
        account("/auth/me"),
        account("/auth/logout"),
        route("/.well-known", "identity", Access::Public, "ops"),
        route("/admin/sessions", "identity", Access::Admin, "admin"),
        route("/admin/users", "identity", Access::Admin, "admin"),
        route("/admin/switches", "identity", Access::Admin, "admin"),
        buy("/checkout"),
        buy("/orders"),
        route("/admin/sagas", "checkout", Access::Admin, "admin"),
        route("/admin/inventory", "inventory", Access::Admin, "admin"),
        route("/admin/checkout", "checkout", Access::Admin, "admin"),
    ]
}

impl EdgeConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes == 0 || self.timeout_ms == 0 {
            return Err("edge.max_body_bytes and edge.timeout_ms must be > 0".into());
        }
        if !(1..=60_000).contains(&self.switch_poll_ms) {
            return Err(format!(
                "edge.switch_poll_ms must be 1..=60000, got {}",
                self.switch_poll_ms
            ));
        }
        for (name, spec) in &self.upstreams {
            match spec {
                UpstreamSpec::At(at) if at != IN_PROCESS && !at.starts_with("http://") => {
                    return Err(format!(
                        "edge.upstreams.{name} must be \"{IN_PROCESS}\", http://host:port or a table with nodes, got {at:?}"
                    ));
                }
                UpstreamSpec::At(_) => {}
                UpstreamSpec::Cluster(c) => c.validate(&format!("edge.upstreams.{name}"))?,
            }
        }
        if let Some(r) = self.routes.iter().find(|r| r.timeout_ms == Some(0)) {
            return Err(format!(
                "edge.routes {:?}: timeout_ms must be > 0",
                r.prefix
            ));
        }
        self.identity.validate()
    }
}
