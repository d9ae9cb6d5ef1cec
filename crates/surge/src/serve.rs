//! Wiring roles into one process: open the store, build the roles, listen, run the
//! background tasks, and stop cleanly on Ctrl-C / SIGTERM.

use std::collections::HashMap;
use std::time::Instant;

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
    /// Orders, inventory and payments, kept consistent by the checkout saga.
    Checkout,
}

impl Role {
    /// Every role (`surge up`).
    pub const ALL: [Role; 4] = [Role::Catalog, Role::Projector, Role::Edge, Role::Checkout];
}

/// What answers on the public listener.
enum Public {
    /// The edge pipeline, in front of the roles of this process.
    Edge(surge_edge::Pipeline),
    /// The catalog alone (an internal node without the edge).
    Catalog(axum::Router),
}

/// Runs `roles` until a shutdown signal. With the edge among them, the edge is the only
/// listener on `listen` and calls the other roles of this process in process; without
/// it, the catalog answers on `listen` itself.
pub async fn run(config: Config, roles: &[Role]) -> anyhow::Result<()> {
    let started = Instant::now();
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
    let mut catalog_router = None;
    let mut catalog_store = None;
    if parts.api || parts.projector || roles.contains(&Role::Checkout) {
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

    let mut keyed: Vec<(String, surge_edge::KeyedRouter)> = Vec::new();
    if roles.contains(&Role::Checkout) {
        if !roles.contains(&Role::Edge) {
            anyhow::bail!(
                "the checkout role needs the edge in the same process for now (it checks the \
                 edge's Envelope with the edge's keys): run --roles edge,checkout"
            );
        }
        let catalog = catalog_store
            .clone()
            .context("checkout prices from the catalog store")?;
        let checkout =
            checkout::start(&config, catalog.clone(), stop_rx.clone(), &mut closers).await?;
        tasks.push(tokio::spawn(checkout.saga.clone().run(stop_rx.clone())));
        let feed = &config.checkout.inventory.feed;
        if feed.enabled {
            let inventory = checkout.saga.inventory().clone();
            let feed = OfferFeed::new(catalog, inventory, feed.clone());
            tasks.push(tokio::spawn(feed.run(stop_rx.clone())));
        }
        let events = &config.checkout.events;
        if events.nats_url.is_some() {
            tasks.push(tokio::spawn(surge_checkout::relay::run(
                events.clone(),
                checkout.saga.orders().clone(),
                checkout.saga.inventory().store().clone(),
                stop_rx.clone(),
            )));
        }
        let admin_token = AdminToken::new(&admin);
        keyed.push((
            "checkout".to_owned(),
            Box::new(move |keys| checkout.router(keys, admin_token)),
        ));
    }

    let public = if roles.contains(&Role::Edge) {
        let url = config.identity_store_url();
        let identity_store = surge_store::open_identity(&url, &config.store_options)
            .await
            .with_context(|| format!("cannot open the identity store {}", redact(&url)))?;
        let mut in_process = HashMap::new();
        if let Some(router) = &catalog_router {
            in_process.insert("catalog".to_owned(), upstream(router.clone()));
        }
        let edge = Edge::build_with(
            &config.edge,
            identity_store.clone(),
            AdminToken::new(&admin),
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
            && let Some(router) = catalog_router.clone()
        {
            let internal = tokio::net::TcpListener::bind(&config.internal_listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.internal_listen))?;
            tracing::warn!(
                "internal listener on {} serves the catalog without the edge; do not expose it",
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
    } else if let Some(router) = catalog_router {
        Public::Catalog(router)
    } else {
        anyhow::bail!("nothing to serve: run the edge or the catalog role (or both)");
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
        Public::Catalog(router) => surge_http::server::serve(listener, router, shutdown).await,
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
