//! The catalog role: product and offer writes (command API), the projector that turns
//! them into ready-to-send bytes, and the read API that serves those bytes from a
//! bounded in-memory cache.
//!
//! Layout follows the flow: [`model`] (what writes may contain) → [`command`] (the
//! write API) → [`projector`] (outbox → views) → [`views`] (formats, compression,
//! joining) → [`cache`] → [`read`] (the read API). [`seed`] makes synthetic catalogs.

pub mod api;
pub mod cache;
pub mod command;
pub mod config;
pub mod model;
pub mod projector;
pub mod read;
pub mod seed;
pub mod views;

use std::sync::Arc;

use http::HeaderValue;
use surge_store::{CatalogStore, StoreError};

pub use config::CatalogConfig;
use projector::Projector;

/// A built catalog: its router and, when this process runs one, its projector.
pub struct Catalog {
    /// The HTTP API.
    pub router: axum::Router,
    /// The projector to run (`Projector::run`), if this process projects.
    pub projector: Option<Projector>,
    /// The read cache (for inspection).
    pub cache: cache::ViewCache,
}

/// Which parts of the catalog this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// Serve the read and command APIs.
    pub api: bool,
    /// Run the projector.
    pub projector: bool,
}

/// Builds the catalog over `store`. Call [`surge_http::metrics::install`] first so
/// the cache's metric handles reach the exporter.
pub async fn build(
    config: &CatalogConfig,
    store: Arc<dyn CatalogStore>,
    admin_token: &str,
    parts: Parts,
) -> Result<Catalog, StoreError> {
    surge_http::metrics::install();
    let cache = cache::ViewCache::new(
        store.clone(),
        config.cache.clone(),
        config.projector.gzip_level,
    );
    let projector = if parts.projector {
        Some(Projector::new(store.clone(), Some(cache.clone()), config.projector.clone()).await?)
    } else {
        None
    };
    let cache_control = HeaderValue::try_from(format!(
        "public, max-age={}",
        config.http.cache_max_age_seconds
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("public, max-age=60"));
    let state = api::AppState {
        cache: cache.clone(),
        store,
        http: config.http.clone(),
        cache_control,
        admin: command::AdminToken::new(admin_token),
        nudge: projector.as_ref().map(Projector::nudge).unwrap_or_default(),
        projector: projector.as_ref().map(Projector::status),
    };
    let router = if parts.api {
        api::router(Arc::new(state))
    } else {
        axum::Router::new()
    };
    Ok(Catalog {
        router,
        projector,
        cache,
    })
}
