//! The checkout HTTP API: `POST /checkout`, the owner's `GET /orders` and
//! `GET /orders/{id}`, the operators' saga routes under `/admin`; the inventory
//! service's stock routes ([`inventory_router`]) and the services' internal routes
//! ([`internal`]).
//!
//! User routes need an Envelope from the edge (the user id comes from it); admin
//! routes need the admin token. Errors are problem+json; a database that cannot be
//! reached is a 503 with `Retry-After`, never a 500.

pub mod admin;
pub mod checkout;
pub mod internal;
pub mod orders;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use surge_http::admin::{AdminToken, require_admin};
use surge_http::envelope::{EnvelopeKeys, require_envelope};
use surge_http::{Problem, ProblemKind};
use surge_store::StoreError;

use crate::config::CheckoutConfig;
use crate::inventory::Inventory;
use crate::payments::Payments;
use crate::pricing::Pricing;
use crate::saga::driver::Orchestrator;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// The orchestrator (and through it the three services).
    pub saga: Orchestrator,
    /// Prices SKUs.
    pub pricing: Arc<dyn Pricing>,
    /// The configuration.
    pub config: Arc<CheckoutConfig>,
    /// `idempotency_lock_ms`, as i64.
    pub lock_ms: i64,
    /// `idempotency_retention_ms`, as i64.
    pub retention_ms: i64,
    /// Fulfilment capacity: the slot a checkout takes before its order is created.
    pub fulfilment: crate::fulfilment::Fulfilment,
}

/// A store failure as the client sees it: 503, try again.
pub fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::Closed => Problem::unavailable("checkout is shutting down", 1),
        other => {
            tracing::warn!(error = %other, "checkout store error");
            Problem::unavailable("checkout cannot reach its database right now", 1)
        }
    }
}

/// A 404 that does not tell whether the order exists (it may be someone else's).
pub fn no_order() -> Problem {
    Problem::new(ProblemKind::NotFound, "no such order")
}

/// The checkout router.
pub fn router(api: Api, keys: EnvelopeKeys, admin: AdminToken) -> Router {
    let users = Router::new()
        .route("/checkout", post(checkout::post))
        .route("/orders", get(orders::list))
        .route("/orders/{id}", get(orders::get))
        .route_layer(axum::middleware::from_fn_with_state(keys, require_envelope));
    let operators = Router::new()
        .route("/admin/sagas", get(admin::list))
        .route("/admin/sagas/{id}", get(admin::show))
        .route("/admin/sagas/{id}/retry", post(admin::retry))
        .route("/admin/sagas/{id}/compensate", post(admin::compensate))
        .route("/admin/checkout/events", get(admin::events))
        .route_layer(axum::middleware::from_fn_with_state(admin, require_admin));
    users
        .merge(operators)
        .route_layer(axum::middleware::from_fn(surge_http::metrics::track))
        .with_state(api)
}

/// The inventory service's router: the operators' stock routes
/// (`/admin/inventory/...`) and the orchestrator's `/internal/inventory/...`.
pub fn inventory_router(inventory: Inventory, admin: AdminToken) -> Router {
    let operators = Router::new()
        .route(
            "/admin/inventory/{sku}/{market}",
            get(admin::stock).post(admin::restock),
        )
        .route("/admin/inventory/events", get(admin::stock_events))
        .route_layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            require_admin,
        ))
        .with_state(inventory.clone());
    operators
        .merge(internal::inventory_routes(inventory, admin))
        .route_layer(axum::middleware::from_fn(surge_http::metrics::track))
}

/// The payments service's router: the orchestrator's `/internal/payments/...`.
pub fn payments_router(payments: Payments, admin: AdminToken) -> Router {
    internal::payments_routes(payments, admin)
        .route_layer(axum::middleware::from_fn(surge_http::metrics::track))
}
