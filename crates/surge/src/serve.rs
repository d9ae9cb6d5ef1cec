//! Wiring roles into one process: open the store, build the roles, listen, run the
//! background tasks, and stop cleanly on Ctrl-C / SIGTERM.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use surge_checkout::inventory::feed::OfferFeed;
use surge_edge::Edge;
use surge_edge::pipeline::dispatch::upstream;
use surge_http::admin::AdminToken;

use crate::config::Config;
use crate::{checkout, token};

/// A role this process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The catalog read and command APIs.
    Catalog,
    /// The projector (outbox → views).
    Projector,
    /// The public door: authentication, the Envelope, routing to the other roles.
    Edge,
    /// Orders (the saga orchestrator and the checkout API), with the inventory and
    /// payments services in process unless `checkout.remote` places them elsewhere.
    Checkout,
    /// The inventory service alone, for orchestrators on other nodes
    /// (`checkout.remote.inventory`).
    Inventory,
    /// The payments service alone, for orchestrators on other nodes
    /// (`checkout.remote.payments`).
    Payments,
}

impl Role {
    /// Every role (`surge up`).
    pub const ALL: [Role; 4] = [Role::Catalog, Role::Projector, Role::Edge, Role::Checkout];
}

/// What answers on the public listener.
enum Public {
    /// The edge pipeline, in front of the roles of this process.
    Edge(surge_edge::Pipeline),
    /// The roles' own routers (an internal node without the edge).
    Roles(axum::Router),
}

/// Runs `roles` until a shutdown signal. With the edge among them, the edge is the only
/// listener on `listen` and calls the other roles of this process in process; without
/// it, the roles answer on `listen` themselves.
pub async fn run(config: Config, roles: &[Role]) -> anyhow::Result<()> {
    let started = Instant::now();
    // Before any role records a metric (a node may run no role that installs it).
    surge_http::metrics::install();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let admin = token::admin_token(&config.admin_token, &config.data_dir)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut closers: Vec<Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()>>> =
        Vec::new();

    let parts = surge_catalog::Parts {
        api: roles.contains(&Role::Catalog),
        projector: roles.contains(&Role::Projector),
    };
    let wanted = checkout::Wanted::of(
        &config,
        roles.contains(&Role::Checkout),
        roles.contains(&Role::Inventory),
        roles.contains(&Role::Payments),
    )?;
    let feed = &config.checkout.inventory.feed;
    let mut catalog_router = None;
    let mut catalog_store = None;
    if parts.api || parts.projector || wanted.orders || (wanted.inventory && feed.enabled) {
        let url = config.store_url();
        let store = surge_store::open(&url, &config.store_options)
            .await
            .with_context(|| format!("cannot open the store {}", redact(&url)))?;
        tracing::info!(store = store.backend(), "catalog store open");
        catalog_store = Some(store.clone());
    }
    if let Some(store) = catalog_store.clone()
        && (parts.api || parts.projector)
    {
        let catalog = surge_catalog::build(&config.catalog, store.clone(), &admin, parts).await?;
        if let Some(projector) = catalog.projector {
            tasks.push(tokio::spawn(projector.run(stop_rx.clone())));
        }
        if parts.api {
            catalog_router = Some(catalog.router);
        }
    }
    if let Some(store) = catalog_store.clone() {
        closers.push(Box::new(move || {
            Box::pin(async move { store.close().await })
        }));
    }

    let services = if wanted.any() {
        checkout::start(
            &config,
            wanted,
            catalog_store.clone(),
            &admin,
            stop_rx.clone(),
            &mut closers,
        )
        .await?
    } else {
        checkout::Services {
            checkout: None,
            inventory: None,
            payments: None,
        }
    };
    let admin_token = AdminToken::new(&admin);
    let mut outboxes = surge_checkout::relay::Outboxes::default();
    if let Some(checkout) = &services.checkout {
        tasks.push(tokio::spawn(checkout.saga.clone().run(stop_rx.clone())));
        outboxes.orders = Some(checkout.saga.orders().clone());
    }
    let mut internal_routers = Vec::new();
    if let Some(inventory) = &services.inventory {
        let c = &config.checkout;
        tasks.push(tokio::spawn(inventory.clone().upkeep(
            i64::try_from(c.inventory.event_retention_ms).unwrap_or(i64::MAX),
            Duration::from_millis(c.saga.sweep_ms),
            stop_rx.clone(),
        )));
        if feed.enabled {
            let catalog = catalog_store
                .clone()
                .context("the inventory feed reads the catalog store")?;
            let feed = OfferFeed::new(catalog, inventory.clone(), feed.clone());
            tasks.push(tokio::spawn(feed.run(stop_rx.clone())));
        }
        outboxes.inventory = Some(inventory.store().clone());
        internal_routers.push(surge_checkout::api::inventory_router(
            inventory.clone(),
            admin_token.clone(),
        ));
    }
    if let Some(payments) = &services.payments {
        internal_routers.push(surge_checkout::api::payments_router(
            payments.clone(),
            admin_token.clone(),
        ));
    }
    let events = &config.checkout.events;
    if events.nats_url.is_some() && (outboxes.orders.is_some() || outboxes.inventory.is_some()) {
        tasks.push(tokio::spawn(surge_checkout::relay::run(
            events.clone(),
            outboxes,
            stop_rx.clone(),
        )));
    }

    let public = if roles.contains(&Role::Edge) {
        let mut keyed: Vec<(String, surge_edge::KeyedRouter)> = Vec::new();
        if let Some(checkout) = services.checkout {
            let admin_token = admin_token.clone();
            keyed.push((
                "checkout".to_owned(),
                Box::new(move |keys| checkout.router(keys, admin_token)),
            ));
        }
        let url = config.identity_store_url();
        let identity_store = surge_store::open_identity(&url, &config.store_options)
            .await
            .with_context(|| format!("cannot open the identity store {}", redact(&url)))?;
        let mut in_process = HashMap::new();
        if let Some(router) = &catalog_router {
            in_process.insert("catalog".to_owned(), upstream(router.clone()));
        }
        if let Some(inventory) = &services.inventory {
            // The edge routes `/admin/inventory` only; `/internal` never goes through it.
            in_process.insert(
                "inventory".to_owned(),
                upstream(surge_checkout::api::inventory_router(
                    inventory.clone(),
                    admin_token.clone(),
                )),
            );
        }
        let edge = Edge::build_with(
            &config.edge,
            identity_store.clone(),
            admin_token.clone(),
            in_process,
            keyed,
        )
        .await
        .map_err(anyhow::Error::msg)
        .context("cannot build the edge")?;
        tasks.push(tokio::spawn(edge.upkeep(stop_rx.clone())));
        closers.push(Box::new(move || {
            Box::pin(async move { identity_store.close().await })
        }));
        if !config.internal_listen.is_empty()
            && let Some(router) = own_routes(catalog_router.clone(), internal_routers)
        {
            let internal = tokio::net::TcpListener::bind(&config.internal_listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.internal_listen))?;
            tracing::warn!(
                "internal listener on {} serves this node's roles without the edge; do not expose it",
                internal.local_addr()?
            );
            let mut stop = stop_rx.clone();
            tasks.push(tokio::spawn(surge_http::server::serve(
                internal,
                router,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )));
        }
        Public::Edge(edge.service)
    } else {
        let mut routers = internal_routers;
        if let Some(checkout) = services.checkout {
            // No edge here: the Envelope keys come from the identity store the edges
            // share, re-read as often as the edges check theirs.
            let keys = envelope_keys(&config, &mut tasks, &mut closers, stop_rx.clone()).await?;
            routers.push(checkout.router(keys, admin_token.clone()));
        }
        let Some(router) = own_routes(catalog_router, routers) else {
            anyhow::bail!(
                "nothing to serve: run the edge, the catalog, checkout, inventory or payments role"
            );
        };
        Public::Roles(router)
    };

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        roles = ?roles,
        startup_ms = started.elapsed().as_millis() as u64,
        "listening on {addr}"
    );
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    };
    match public {
        Public::Edge(service) => surge_http::server::serve(listener, service, shutdown).await,
        Public::Roles(router) => surge_http::server::serve(listener, router, shutdown).await,
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    for close in closers {
        close().await;
    }
    Ok(())
}

/// The routers of the roles answering without the edge, merged: on the catalog's
/// router (with its ops routes and problem+json fallbacks) or, without the catalog, on
/// the process's own `/healthz`, `/readyz`, `/metrics` and the same fallbacks. `None`
/// when there is nothing to serve.
fn own_routes(catalog: Option<axum::Router>, others: Vec<axum::Router>) -> Option<axum::Router> {
    if catalog.is_none() && others.is_empty() {
        return None;
    }
    let base = catalog.unwrap_or_else(|| {
        surge_http::metrics::ops_router()
            .fallback(surge_http::problem::no_route)
            .method_not_allowed_fallback(surge_http::problem::method_not_allowed)
    });
    Some(others.into_iter().fold(base, axum::Router::merge))
}

/// The Envelope keys for a checkout node without the edge: read from the identity store
/// (shared with the edges, which create and rotate them), and re-read every
/// `edge.identity.key_check_seconds` (a new key is published two checks before an edge
/// signs with it, so this node always knows the key of an Envelope it gets).
async fn envelope_keys(
    config: &Config,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    closers: &mut Vec<checkout::Closer>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<surge_http::envelope::EnvelopeKeys> {
    let url = config.identity_store_url();
    let store = surge_store::open_identity(&url, &config.store_options)
        .await
        .with_context(|| format!("cannot open the identity store {}", redact(&url)))?;
    let keys = surge_edge::identity::keys::KeyManager::load(store.clone(), &config.edge.identity)
        .await
        .map_err(anyhow::Error::msg)
        .context("cannot read the Envelope keys")?;
    let envelope = keys.envelope();
    let every = Duration::from_secs(config.edge.identity.key_check_seconds);
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = keys.reload().await {
                        tracing::warn!(error = %e, "cannot re-read the Envelope keys; keeping the last good set");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }));
    closers.push(Box::new(move || {
        Box::pin(async move { store.close().await })
    }));
    Ok(envelope)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Hides a password in a URL for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***{}", &url[..scheme], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
