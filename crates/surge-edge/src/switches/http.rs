//! The kill switches' admin routes, merged into the identity router (the edge's own
//! upstream), behind the admin token:
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/switches` | every switch ever set: target, off, reason, actor, seq, time, routes |
//! | `PUT /admin/switches/{target}` | `{off, reason, actor?}` → the stored state |
//!
//! `{target}` is `route:<prefix>` or `class:<name>`, URL-encoded (`route:%2Fproducts`)
//! or not (`route:/products`).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use surge_http::admin::{AdminToken, require_admin};
use surge_http::{FieldError, Problem, ProblemKind};
use surge_store::Switch;

use super::{SwitchError, Switches, Target};

/// Largest request body read.
const MAX_BODY_BYTES: usize = 4 * 1024;

impl From<SwitchError> for Problem {
    fn from(e: SwitchError) -> Self {
        match e {
            SwitchError::Malformed(detail) => Problem::bad_param("target", detail),
            e @ SwitchError::Unknown(_) => Problem::new(ProblemKind::NotFound, e.to_string()),
            e @ SwitchError::Protected { .. } => Problem::new(ProblemKind::Conflict, e.to_string()),
            SwitchError::Invalid { field, detail } => {
                Problem::validation(vec![FieldError::new(field, detail)])
            }
            SwitchError::Store(e) => {
                tracing::warn!(error = %e, "kill switch store unavailable");
                Problem::unavailable("the switch store is unavailable; nothing changed", 1)
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    off: bool,
    reason: String,
    #[serde(default)]
    actor: Option<String>,
}

/// One switch as the API shows it.
#[derive(Serialize)]
struct View<'a> {
    target: &'a str,
    off: bool,
    reason: &'a str,
    actor: Option<&'a str>,
    seq: i64,
    updated_at_ms: i64,
    /// The routes the target covers in this node's table (none: a stale target).
    routes: &'a [String],
}

impl<'a> View<'a> {
    fn new(s: &'a Switch, routes: &'a [String]) -> Self {
        View {
            target: &s.target,
            off: s.off,
            reason: &s.reason,
            actor: s.actor.as_deref(),
            seq: s.seq,
            updated_at_ms: s.updated_at_ms,
            routes,
        }
    }
}

#[derive(Serialize)]
struct List<'a> {
    switches: Vec<View<'a>>,
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(b) => {
            let mut r = (StatusCode::OK, b).into_response();
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}

async fn list(State(switches): State<Arc<Switches>>) -> Result<Response, Problem> {
    switches.refresh().await.map_err(SwitchError::from)?;
    let all = switches.list();
    Ok(json(&List {
        switches: all.iter().map(|(s, r)| View::new(s, r)).collect(),
    }))
}

async fn set(
    State(switches): State<Arc<Switches>>,
    target: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let Path(raw) = target.map_err(|e| Problem::bad_param("target", e.body_text()))?;
    let target = Target::parse(&raw)?;
    switches.resolve(&target)?;
    let b: SetBody = surge_http::body::json(&headers, body, MAX_BODY_BYTES).await?;
    let stored = switches
        .set(&target, b.off, &b.reason, b.actor.as_deref())
        .await?;
    let routes: Vec<String> = switches
        .resolve(&target)
        .map(|rs| rs.iter().map(|r| r.prefix.clone()).collect())
        .unwrap_or_default();
    Ok(json(&View::new(&stored, &routes)))
}

/// The admin routes of the kill switches (no fallback: merged into the identity router).
pub fn router(switches: Arc<Switches>, admin: AdminToken) -> Router {
    Router::new()
        .route("/admin/switches", get(list))
        .route("/admin/switches/{*target}", put(set))
        .route_layer(axum::middleware::from_fn_with_state(admin, require_admin))
        .route_layer(axum::middleware::from_fn(surge_http::metrics::track))
        .method_not_allowed_fallback(surge_http::problem::method_not_allowed)
        .with_state(switches)
}
