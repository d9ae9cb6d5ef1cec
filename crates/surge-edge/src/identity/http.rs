//! The identity service's HTTP routes, an in-process upstream of the edge:
//!
//! | route | access | what |
//! |---|---|---|
//! | `POST /auth/signup` | public | `{email, password, market?}` → 201 + tokens |
//! | `POST /auth/login` | public | `{email, password}` → tokens |
//! | `POST /auth/refresh` | public | `{refresh_token}` or the refresh cookie → new tokens |
//! | `POST /auth/logout` | Envelope | revokes the caller's session → 204 |
//! | `GET /auth/me` | Envelope | who the edge says the caller is |
//! | `GET /.well-known/jwks.json` | public | the access-token public keys |
//! | `POST /admin/sessions/{id}/revoke` | admin token | revoke one session |
//! | `POST /admin/users/{id}/revoke` | admin token | ban a user |
//! | `PUT /admin/users/{id}/profile` | admin token | `{market, tier, cohorts}` |
//!
//! Tokens go out in the JSON body and as cookies; they are never logged.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use surge_http::admin::{AdminToken, require_admin};
use surge_http::envelope::{Envelope, EnvelopeKeys, require_envelope};
use surge_http::{FieldError, Problem, ProblemKind};
use surge_store::Profile;

use super::{Identity, IdentityError, Me};
use crate::auth::cookies;
use crate::pipeline::authenticate::Issued;

/// Largest request body the identity routes read.
const MAX_BODY_BYTES: usize = 8 * 1024;

impl From<IdentityError> for Problem {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Invalid { field, detail } => {
                Problem::validation(vec![FieldError::new(field, detail)])
            }
            IdentityError::EmailTaken => {
                Problem::new(ProblemKind::Conflict, "an account with this e-mail exists")
            }
            IdentityError::BadCredentials => {
                Problem::new(ProblemKind::Unauthorized, "wrong e-mail or password")
            }
            IdentityError::Suspended => {
                Problem::new(ProblemKind::Forbidden, "this account is suspended")
            }
            IdentityError::TooManyAttempts(wait) => Problem::new(
                ProblemKind::TooManyRequests,
                "too many attempts; try again later",
            )
            .with_retry_after(wait.as_secs().max(1)),
            IdentityError::RefreshRefused => {
                Problem::new(ProblemKind::Unauthorized, "the refresh token is not valid")
            }
            IdentityError::RefreshReused => Problem::new(
                ProblemKind::Revoked,
                "this refresh token was used before; the session is revoked, log in again",
            ),
            IdentityError::NotFound => {
                Problem::new(ProblemKind::NotFound, "no such session or user")
            }
            IdentityError::Store(e) => {
                tracing::warn!(error = %e, "identity store unavailable");
                Problem::unavailable("the identity store is unavailable", 1)
            }
            IdentityError::Internal(e) => Problem::internal(&e),
        }
    }
}

#[derive(Clone)]
struct Http {
    identity: Arc<Identity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
    #[serde(default)]
    market: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Serialize)]
struct TokensBody<'a> {
    user_id: &'a str,
    session_id: &'a str,
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileBody {
    market: String,
    tier: String,
    #[serde(default)]
    cohorts: Vec<String>,
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(b) => json_response(status, b),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// The tokens as JSON and as cookies.
fn tokens(identity: &Identity, status: StatusCode, issued: &Issued) -> Response {
    let mut r = json(
        status,
        &TokensBody {
            user_id: &issued.user_id,
            session_id: &issued.session_id,
            access_token: &issued.access_token,
            token_type: "Bearer",
            expires_in: issued.expires_in,
            refresh_token: &issued.refresh_token,
        },
    );
    set_cookies(identity, r.headers_mut(), issued);
    r
}

/// Sets both cookies for `issued`.
pub fn set_cookies(identity: &Identity, headers: &mut HeaderMap, issued: &Issued) {
    let c = identity.config();
    cookies::set(
        headers,
        cookies::ACCESS,
        &issued.access_token,
        c.access_ttl_seconds + c.silent_refresh_grace_seconds,
        c.cookie_secure,
    );
    cookies::set(
        headers,
        cookies::REFRESH,
        &issued.refresh_token,
        c.session_ttl_seconds,
        c.cookie_secure,
    );
}

fn peer(info: Option<Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    info.map_or(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        |Extension(ConnectInfo(a))| a.ip(),
    )
}

async fn signup(
    State(h): State<Http>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let c: Credentials = surge_http::body::json(&headers, body, MAX_BODY_BYTES).await?;
    let issued = h
        .identity
        .signup(&c.email, &c.password, c.market.as_deref(), peer(info))
        .await?;
    Ok(tokens(&h.identity, StatusCode::CREATED, &issued))
}

async fn login(
    State(h): State<Http>,
    info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let c: Credentials = surge_http::body::json(&headers, body, MAX_BODY_BYTES).await?;
    if c.market.is_some() {
        return Err(Problem::validation(vec![FieldError::new(
            "/market",
            "is set at signup, not at login",
        )]));
    }
    let issued = h.identity.login(&c.email, &c.password, peer(info)).await?;
    Ok(tokens(&h.identity, StatusCode::OK, &issued))
}

async fn refresh(
    State(h): State<Http>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let has_body = headers.contains_key(CONTENT_TYPE);
    let b: RefreshBody = if has_body {
        surge_http::body::json(&headers, body, MAX_BODY_BYTES).await?
    } else {
        RefreshBody::default()
    };
    let token = b
        .refresh_token
        .or_else(|| cookies::get(&headers, cookies::REFRESH).map(str::to_owned))
        .ok_or_else(|| {
            Problem::new(
                ProblemKind::Unauthorized,
                "send the refresh token in the body or the refresh cookie",
            )
        })?;
    let issued = h.identity.refresh(&token).await?;
    Ok(tokens(&h.identity, StatusCode::OK, &issued))
}

async fn logout(
    State(h): State<Http>,
    Extension(env): Extension<Envelope>,
) -> Result<Response, Problem> {
    if env.user_id.is_empty() {
        return Err(Problem::new(ProblemKind::Forbidden, "only users log out"));
    }
    h.identity.revoke_session(&env.session_id, "logout").await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    cookies::clear(r.headers_mut(), h.identity.config().cookie_secure);
    Ok(r)
}

async fn me(Extension(env): Extension<Envelope>) -> Response {
    json(
        StatusCode::OK,
        &Me {
            user_id: env.user_id,
            session_id: env.session_id,
            market: env.market,
            cohorts: env.cohorts,
            tier: env.tier,
        },
    )
}

async fn jwks(State(h): State<Http>) -> Response {
    let mut r = json(StatusCode::OK, &h.identity.jwt().jwks());
    r.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

#[derive(Serialize)]
struct Revoked {
    revoked: &'static str,
    id: String,
    seq: i64,
}

async fn revoke_session(
    State(h): State<Http>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let e = h.identity.revoke_session(&id, "admin").await?;
    Ok(json(
        StatusCode::OK,
        &Revoked {
            revoked: "session",
            id,
            seq: e.seq,
        },
    ))
}

async fn revoke_user(State(h): State<Http>, Path(id): Path<String>) -> Result<Response, Problem> {
    let e = h.identity.revoke_user(&id, "admin").await?;
    Ok(json(
        StatusCode::OK,
        &Revoked {
            revoked: "user",
            id,
            seq: e.seq,
        },
    ))
}

async fn put_profile(
    State(h): State<Http>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let p: ProfileBody = surge_http::body::json(&headers, body, MAX_BODY_BYTES).await?;
    h.identity
        .set_profile(
            &id,
            Profile {
                market: p.market,
                tier: p.tier,
                cohorts: p.cohorts,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The identity router. `keys` verify the Envelope on `/auth/me` and `/auth/logout`.
pub fn router(identity: Arc<Identity>, keys: EnvelopeKeys, admin: AdminToken) -> Router {
    let state = Http { identity };
    let with_envelope = Router::new()
        .route("/auth/me", get(me))
        .route("/auth/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(keys, require_envelope));
    let admin = Router::new()
        .route("/admin/sessions/{id}/revoke", post(revoke_session))
        .route("/admin/users/{id}/revoke", post(revoke_user))
        .route("/admin/users/{id}/profile", put(put_profile))
        .route_layer(axum::middleware::from_fn_with_state(admin, require_admin));
    Router::new()
        .route("/auth/signup", post(signup))
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/.well-known/jwks.json", get(jwks))
        .merge(with_envelope)
        .merge(admin)
        .route_layer(axum::middleware::from_fn(surge_http::metrics::track))
        .fallback(surge_http::problem::no_route)
        .method_not_allowed_fallback(surge_http::problem::method_not_allowed)
        .with_state(state)
}
