//! Wiring roles into one process: open the store, build the roles, listen, run the
//! background tasks, and stop cleanly on Ctrl-C / SIGTERM.

use std::time::Instant;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::Config;
use crate::token;

/// A role this process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The catalog read and command APIs.
    Catalog,
    /// The projector (outbox → views).
    Projector,
}

impl Role {
    /// Every role (`surge up`).
    pub const ALL: [Role; 2] = [Role::Catalog, Role::Projector];
}

/// Runs `roles` until a shutdown signal.
pub async fn run(config: Config, roles: &[Role]) -> anyhow::Result<()> {
    let started = Instant::now();
    let url = config.store_url();
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
    }
    let store = surge_store::open(&url, &config.store_options)
        .await
        .with_context(|| format!("cannot open the store {}", redact(&url)))?;
    std::fs::create_dir_all(&config.data_dir).ok();
    let admin = token::admin_token(&config.admin_token, &config.data_dir)?;
    let parts = surge_catalog::Parts {
        api: roles.contains(&Role::Catalog),
        projector: roles.contains(&Role::Projector),
    };
    let catalog = surge_catalog::build(&config.catalog, store.clone(), &admin, parts).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(projector) = catalog.projector {
        tasks.push(tokio::spawn(projector.run(stop_rx.clone())));
    }

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        roles = ?roles,
        store = store.backend(),
        startup_ms = started.elapsed().as_millis() as u64,
        "listening on {addr}"
    );
    surge_http::server::serve(listener, catalog.router, async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    })
    .await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    store.close().await;
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
