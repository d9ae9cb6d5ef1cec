//! Assembling the edge: identity, authenticators, upstreams and the pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use surge_http::admin::AdminToken;
use surge_http::envelope::EnvelopeKeys;
use surge_store::IdentityStore;
use tokio::sync::watch;
use tower::ServiceBuilder;

use crate::auth::authenticator::{ApiKeyAuthenticator, Authenticator, JwtAuthenticator};
use crate::cluster::Cluster;
use crate::config::EdgeConfig;
use crate::identity::feed::{self, StoreLog};
use crate::identity::{self, Identity};
use crate::pipeline::authenticate::{AuthSetup, Authenticate, AuthenticateLayer};
use crate::pipeline::dispatch::{Dispatch, Upstream, upstream};
use crate::pipeline::kill_switch::{KillSwitch, KillSwitchLayer};
use crate::pipeline::micro_cache::{MicroCache, MicroCacheLayer, MicroCached};
use crate::pipeline::rate_limit::{KeyBy, RateLimit, RateLimitLayer, RateLimits};
use crate::pipeline::request_limits::{Limit, RequestLimits, RequestLimitsLayer};
use crate::pipeline::shed::{LoopLag, Shed, ShedLayer, Shedding};
use crate::routes::RouteTable;
use crate::switches::{self, Switches};

/// How often rate-limit keys whose budget is full again are dropped.
const RATE_LIMIT_SWEEP: Duration = Duration::from_secs(10);

/// Name of the identity upstream (always in the edge's process).
pub const IDENTITY: &str = "identity";

/// Routes the edge answers itself when their configured upstream is remote.
const OWN_OPS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The edge's tower pipeline, top to bottom (cheap to clone: shared state is behind `Arc`s).
pub type Pipeline =
    Limit<KillSwitch<RateLimit<Authenticate<RateLimit<MicroCached<Shed<Dispatch>>>>>>>;

/// Roles whose routes are in the default table but that an edge may run without
/// (their routes then answer 503 `unavailable`).
pub const OPTIONAL_ROLES: &[&str] = &["checkout", "inventory"];

/// A stand-in for a role that runs neither here nor anywhere the config names.
fn absent_role(name: &str) -> axum::Router {
    let detail = format!(
        "the {name} role is not available behind this edge (an operator can set edge.upstreams.{name})"
    );
    axum::Router::new().fallback(move || {
        let detail = detail.clone();
        async move { surge_http::Problem::unavailable(detail, 60) }
    })
}

/// Makes an in-process role's router once the Envelope keys exist.
pub type KeyedRouter = Box<dyn FnOnce(EnvelopeKeys) -> axum::Router + Send>;

/// A built edge.
pub struct Edge {
    /// The whole pipeline, to serve on the public listener.
    pub service: Pipeline,
    /// The identity service (for the upkeep task and tools).
    pub identity: Arc<Identity>,
    /// The remote upstreams (for health checks and tools).
    pub clusters: Vec<Cluster>,
    store: Arc<dyn IdentityStore>,
    rate_limits: Arc<RateLimits>,
    switches: Arc<Switches>,
    lag: Arc<LoopLag>,
}

impl Edge {
    /// Builds the edge. `in_process` holds the routers of the roles running in this
    /// process (e.g. `catalog`); every upstream the config places `in-process` must be
    /// among them, the others are reached over HTTP.
    pub async fn build(
        config: &EdgeConfig,
        store: Arc<dyn IdentityStore>,
        admin: AdminToken,
        in_process: HashMap<String, Upstream>,
    ) -> Result<Edge, String> {
        Edge::build_with(config, store, admin, in_process, Vec::new()).await
    }

    /// [`Edge::build`], plus in-process roles that check the Envelope themselves and so
    /// need the edge's Envelope keys: each `(name, make)` becomes the upstream `name`
    /// with the router `make(keys)` (the keys rotate in place: clones share one ring).
    pub async fn build_with(
        config: &EdgeConfig,
        store: Arc<dyn IdentityStore>,
        admin: AdminToken,
        mut in_process: HashMap<String, Upstream>,
        keyed: Vec<(String, KeyedRouter)>,
    ) -> Result<Edge, String> {
        config.validate()?;
        surge_http::metrics::install();
        let identity = Identity::open(config.identity.clone(), store.clone()).await?;
        feed::catch_up(&identity, &StoreLog(store.clone()), 0)
            .await
            .map_err(|e| format!("cannot read the revocation log: {e}"))?;
        let keys = identity.keys().envelope();
        for (name, make) in keyed {
            in_process.insert(name, upstream(make(keys.clone())));
        }
        let switches = Arc::new(Switches::new(
            &config.routes,
            store.clone(),
            Duration::from_millis(config.switch_poll_ms),
        )?);
        switches
            .load()
            .await
            .map_err(|e| format!("cannot read the kill switches: {e}"))?;
        in_process.insert(
            IDENTITY.to_owned(),
            upstream(
                identity::http::router(identity.clone(), keys.clone(), admin.clone())
                    .merge(surge_http::metrics::ops_router())
                    .merge(switches::http::router(switches.clone(), admin)),
            ),
        );
        let mut upstreams = HashMap::new();
        let mut clusters = Vec::new();
        for (name, spec) in &config.upstreams {
            let service = match spec.cluster() {
                Some(nodes) if name != IDENTITY => {
                    let cluster = Cluster::new(
                        name,
                        nodes,
                        config.upstream_max_idle,
                        Duration::from_millis(config.timeout_ms),
                    )?;
                    clusters.push(cluster.clone());
                    Upstream::Cluster(cluster)
                }
                _ => in_process.remove(name).ok_or_else(|| {
                    format!(
                        "edge.upstreams.{name} is in-process, but the {name} role does not run in this process; \
                         give its http://host:port or nodes"
                    )
                })?,
            };
            upstreams.insert(name.clone(), service);
        }
        // Roles running in this process that the config does not mention are reachable
        // in process; optional roles that run nowhere answer 503 on their routes.
        for (name, service) in in_process {
            upstreams.entry(name).or_insert(service);
        }
        for r in &config.routes {
            let name = r.upstream.as_str();
            if OPTIONAL_ROLES.contains(&name) && !upstreams.contains_key(name) {
                tracing::info!(
                    role = name,
                    "the {name} role does not run here and edge.upstreams.{name} is not set: its routes answer 503"
                );
                upstreams.insert(name.to_owned(), upstream(absent_role(name)));
            }
        }
        let mut authenticators: HashMap<String, Arc<dyn Authenticator>> = HashMap::new();
        authenticators.insert(
            "jwt".into(),
            Arc::new(JwtAuthenticator::new(identity.jwt())),
        );
        authenticators.insert(
            "api-key".into(),
            Arc::new(ApiKeyAuthenticator::new(config.api_keys.clone())?),
        );
        let names: Vec<&str> = authenticators.keys().map(String::as_str).collect();
        let mut table = config.routes.clone();
        for r in &mut table {
            // An edge in front of remote nodes answers for itself: its liveness and its
            // metrics are not those of a random catalog node.
            if OWN_OPS.contains(&r.prefix.as_str())
                && matches!(upstreams.get(&r.upstream), Some(Upstream::Cluster(_)))
            {
                r.upstream = IDENTITY.to_owned();
            }
        }
        let routes = RouteTable::new(table, &names)?;
        let dispatch = Dispatch::new(
            routes.clone(),
            upstreams,
            Duration::from_millis(config.timeout_ms),
        )?;
        let rate_limits = Arc::new(RateLimits::new(
            &config.rate_limits,
            Arc::new(routes.clone()),
            config.rate_limit_max_keys,
        )?);
        let shedding = Arc::new(Shedding::new(&config.shedding, Arc::new(routes.clone()))?);
        let micro_cache = Arc::new(MicroCache::new(
            config.micro_cache.clone(),
            Arc::new(routes.clone()),
        ));
        let auth = AuthenticateLayer::new(AuthSetup {
            routes,
            authenticators,
            revoked: identity.revocation_filter(),
            confirm: identity.clone(),
            keys,
            profiles: Some(identity.clone()),
            refresher: Some(identity.clone()),
        });
        let pipeline = ServiceBuilder::new()
            .layer(RequestLimitsLayer(RequestLimits {
                max_body_bytes: config.max_body_bytes,
                timeout: Duration::from_millis(config.timeout_ms),
            }))
            .layer(KillSwitchLayer::new(switches.clone()))
            .layer(RateLimitLayer::new(rate_limits.clone(), KeyBy::Ip))
            .layer(auth)
            .layer(RateLimitLayer::new(rate_limits.clone(), KeyBy::User))
            .layer(MicroCacheLayer::new(micro_cache))
            .layer(ShedLayer::new(shedding.clone()))
            .service(dispatch);
        Ok(Edge {
            service: pipeline,
            identity,
            clusters,
            store,
            rate_limits,
            lag: shedding.lag(),
            switches,
        })
    }

    /// The kill switches (for the upkeep task, tools and tests).
    pub fn switches(&self) -> &Arc<Switches> {
        &self.switches
    }

    /// The background upkeep (revocation log, filter generations, key rotation, pruning,
    /// rate-limit key sweeps, health checks of remote nodes, other nodes' kill-switch
    /// changes) until `shutdown` turns true.
    pub fn upkeep(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let identity = feed::run(
            self.identity.clone(),
            Arc::new(StoreLog(self.store.clone())),
            shutdown.clone(),
        );
        let checks = futures_util::future::join_all(
            self.clusters
                .iter()
                .map(|c| c.health_checks(shutdown.clone())),
        );
        let switches = switches::run(self.switches.clone(), shutdown.clone());
        let lag = self.lag.clone().probe(shutdown.clone());
        let limits = self.rate_limits.clone();
        let sweep = crate::upkeep::every(RATE_LIMIT_SWEEP, shutdown, move || {
            limits.sweep();
            std::future::ready(())
        });
        async move {
            tokio::join!(identity, sweep, checks, switches, lag);
        }
    }
}
