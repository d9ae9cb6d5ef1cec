//! Layer: find the route, authenticate once, and hand the upstream a signed Envelope.
//!
//! For every request: an `x-surge-envelope` header from the client is dropped (only the
//! edge issues them); the route is looked up (none: 404 `no-route`); the route's
//! authenticators are asked in order; a refused credential is a 401 (`token-expired` for
//! an expired access token, `unauthorized` otherwise), and so is a missing one on an
//! authenticated route. A user whose session or account may be revoked (Bloom filter)
//! is confirmed against the authoritative [`RevocationCheck`]; a confirmed revocation is
//! a 401 `revoked`. Then the Envelope (identity, request id, method and path) is signed
//! into the request and the upstream is called. Admin routes pass through: the upstream
//! checks its admin token.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::Request;
use surge_http::envelope::{self, Envelope, EnvelopeKeys};
use surge_http::{Problem, ProblemKind};
use tower::{Layer, Service};

use crate::auth::authenticator::{AuthError, Authenticator, Authenticators, Principal};
use crate::auth::jwt::TokenError;
use crate::auth::revocation::RevocationFilter;
use crate::routes::{Access, RouteTable};

/// The authoritative answer for a filter "maybe" (the identity store).
pub trait RevocationCheck: Send + Sync {
    /// Whether `session` or `user` is really revoked.
    fn is_revoked(&self, session: &str, user: &str) -> BoxFuture<'static, bool>;
}

/// What the layer needs, shared by every connection.
pub struct AuthSetup {
    /// The route table.
    pub routes: RouteTable,
    /// Authenticators by name (`jwt`, `api-key`).
    pub authenticators: HashMap<String, Arc<dyn Authenticator>>,
    /// Revoked sessions and users.
    pub revoked: Arc<RevocationFilter>,
    /// Confirms a filter hit.
    pub confirm: Arc<dyn RevocationCheck>,
    /// Signs Envelopes.
    pub keys: EnvelopeKeys,
}

struct Shared {
    setup: AuthSetup,
    per_route: HashMap<String, Authenticators>,
    request_ids: AtomicU64,
}

/// The layer.
#[derive(Clone)]
pub struct AuthenticateLayer {
    shared: Arc<Shared>,
}

impl AuthenticateLayer {
    /// A layer over `setup` (each route's authenticator list is resolved once here).
    pub fn new(setup: AuthSetup) -> Self {
        let per_route = setup
            .routes
            .routes()
            .iter()
            .map(|route| {
                let list = route
                    .authenticators
                    .iter()
                    .filter_map(|n| setup.authenticators.get(n).cloned())
                    .collect();
                (route.prefix.clone(), Authenticators::new(list))
            })
            .collect();
        AuthenticateLayer {
            shared: Arc::new(Shared {
                setup,
                per_route,
                request_ids: AtomicU64::new(0),
            }),
        }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service the layer wraps around an upstream.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    shared: Arc<Shared>,
}

fn refuse(kind: ProblemKind, detail: &str) -> Response {
    Problem::new(kind, detail).into_response()
}

impl<S> Service<Request<Body>> for Authenticate<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The ready clone serves this request; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            request.headers_mut().remove(envelope::HEADER);
            let s = &shared.setup;
            let path = request.uri().path().to_owned();
            let Some(route) = s.routes.find(&path) else {
                return Ok(refuse(ProblemKind::NoRoute, "no route serves this path"));
            };
            if route.access == Access::Admin {
                return inner.call(request).await;
            }
            let principal = match shared
                .per_route
                .get(&route.prefix)
                .map(|a| a.authenticate(&path, request.headers()))
                .unwrap_or(Ok(None))
            {
                Ok(p) => p,
                Err(AuthError::Token(TokenError::Expired)) => {
                    return Ok(refuse(
                        ProblemKind::TokenExpired,
                        "refresh the access token",
                    ));
                }
                Err(e) => {
                    tracing::info!(reason = %e, route = %route.prefix, "credentials refused");
                    return Ok(refuse(ProblemKind::Unauthorized, "credentials refused"));
                }
            };
            if principal.is_none() && route.access == Access::Authenticated {
                return Ok(refuse(
                    ProblemKind::Unauthorized,
                    "this route needs credentials",
                ));
            }
            if let Some(Principal::User {
                user_id,
                session_id,
            }) = &principal
                && s.revoked.might_be_revoked(session_id, user_id)
                && s.confirm.is_revoked(session_id, user_id).await
            {
                return Ok(refuse(
                    ProblemKind::Revoked,
                    "this session was revoked; log in again",
                ));
            }
            if let Some(p) = principal {
                let (user_id, session_id) = match p {
                    Principal::User {
                        user_id,
                        session_id,
                    } => (user_id, session_id),
                    Principal::Partner { key_id, .. } => (String::new(), key_id),
                };
                let id = shared.request_ids.fetch_add(1, Ordering::Relaxed);
                let env = Envelope {
                    user_id,
                    session_id,
                    request_id: format!("{id:x}"),
                    issued_at_ms: envelope::now_ms(),
                    method: request.method().as_str().to_owned(),
                    path: request
                        .uri()
                        .path_and_query()
                        .map_or_else(|| path.clone(), |p| p.as_str().to_owned()),
                    ..Envelope::default()
                };
                request
                    .headers_mut()
                    .insert(envelope::HEADER, s.keys.sign(&env));
            }
            inner.call(request).await
        })
    }
}
