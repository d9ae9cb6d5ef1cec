//! The catalog's HTTP surface: router, shared state, health, metrics and OpenAPI.

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use http::{HeaderValue, header};
use surge_http::Problem;
use surge_store::CatalogStore;
use utoipa::OpenApi;

use crate::cache::ViewCache;
use crate::command::{self, AdminToken};
use crate::config::HttpConfig;
use crate::projector::{Nudge, ProjectorStatus};
use crate::read;

/// The `{id}` path segment, percent-decoded and checked against the id rules
/// ([`crate::model::check_id`]). Unlike `Path<String>`, a segment that does not decode
/// or is not a valid id is answered with a problem+json 400, like every other mistake.
pub struct PathId(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathId {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::bad_param("id", format!("cannot be read: {}", e.body_text())))
            .and_then(|axum::extract::Path(id)| {
                crate::model::check_id(&id).map_err(|e| Problem::bad_param("id", e))?;
                Ok(PathId(id))
            })
    }
}

/// What every handler shares.
pub struct AppState {
    pub(crate) cache: ViewCache,
    pub(crate) store: Arc<dyn CatalogStore>,
    pub(crate) http: HttpConfig,
    pub(crate) cache_control: HeaderValue,
    pub(crate) admin: AdminToken,
    pub(crate) nudge: Nudge,
    /// The projector in this process, if any (readiness waits for it).
    pub(crate) projector: Option<Arc<ProjectorStatus>>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Surge catalog API", description = "Read API (ready-made bytes from memory) and admin command API of the Surge catalog. Errors are application/problem+json (RFC 9457)."),
    paths(
        read::product, read::offers, read::product_offers, read::batch,
        command::put_product, command::delete_product, command::get_product_source,
        command::post_offers, command::projector_state,
    ),
    modifiers(&AdminSecurity),
)]
struct ApiDoc;

struct AdminSecurity;

impl utoipa::Modify for AdminSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3.1 document, generated from the handlers' annotations.
pub fn openapi_json() -> Bytes {
    static DOC: LazyLock<Bytes> =
        LazyLock::new(|| Bytes::from(ApiDoc::openapi().to_pretty_json().unwrap_or_default()));
    DOC.clone()
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        openapi_json(),
    )
        .into_response()
}

async fn healthz() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.projector.as_ref().is_none_or(|p| p.caught_up()) {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            r#"{"status":"ready"}"#,
        )
            .into_response()
    } else {
        Problem::unavailable("the projector is catching up with the outbox", 1).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.cache.publish_gauges();
    if let (Ok(head), Some(p)) = (state.store.outbox_head().await, &state.projector) {
        ::metrics::gauge!(crate::projector::HEAD_POSITION).set(head as f64);
        ::metrics::gauge!(crate::projector::LAG_ENTRIES).set((head - p.applied()).max(0) as f64);
    }
    surge_http::metrics::render().await
}

/// The catalog router: read API, command API, health, metrics, OpenAPI.
pub fn router(state: Arc<AppState>) -> Router {
    let admin = Router::new()
        .route(
            "/admin/products/{id}",
            put(command::put_product)
                .delete(command::delete_product)
                .get(command::get_product_source),
        )
        .route("/admin/offers", post(command::post_offers))
        .route("/admin/projector", get(command::projector_state))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            command::require_admin,
        ));
    Router::new()
        .route("/products/{id}", get(read::product))
        .route("/products/{id}/offers", get(read::offers))
        .route("/product-offers/{id}", get(read::product_offers))
        .route("/products", get(read::batch))
        .merge(admin)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route_layer(axum::middleware::from_fn(surge_http::metrics::track))
        .fallback(surge_http::problem::no_route)
        .method_not_allowed_fallback(surge_http::problem::method_not_allowed)
        .with_state(state)
}
