//! Layer: find the route, authenticate once, and hand the upstream a signed Envelope.
//!
//! For every request: an `x-surge-envelope` header from the client is dropped (only the
//! edge issues them); the route is looked up (none: 404 `no-route`); the route's
//! authenticators are asked in order; a refused credential is a 401 (`token-expired` for
//! an expired access token, `unauthorized` otherwise), and so is a missing one on an
//! authenticated route. A user whose session or account may be revoked (Bloom filter)
//! is confirmed against the authoritative [`RevocationCheck`]; a confirmed revocation is
//! a 401 `revoked`. Then the Envelope (identity, the user's profile: market, tier,
//! cohorts; request id, method and path) is signed into the request and the upstream is
//! called. Admin routes pass through: the upstream checks its admin token.
//!
//! **Silent refresh**: an access token that expired less than the grace ago, sent with a
//! valid refresh cookie, is replaced on the fly: the request is served and the response
//! carries the new access token (`x-surge-access-token` and the cookies). A token with an
//! unknown `kid` makes the edge re-read its key set once (single-flight, rate-limited)
//! before it is refused.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::Request;
use surge_http::envelope::{self, Envelope, EnvelopeKeys};
use surge_http::{Problem, ProblemKind};
use surge_store::Profile;
use tower::{Layer, Service};

use crate::auth::authenticator::{AuthError, Authenticator, Authenticators, Principal};
use crate::auth::cookies;
use crate::auth::jwt::{Claims, TokenError};
use crate::auth::revocation::RevocationFilter;
use crate::routes::{Access, RouteTable};

/// The authoritative answer for a filter "maybe" (the identity store).
pub trait RevocationCheck: Send + Sync {
    /// Whether `session` or `user` is really revoked.
    fn is_revoked(&self, session: &str, user: &str) -> BoxFuture<'static, bool>;
}

/// Where the Envelope's market, tier and cohorts come from (stored, cached).
pub trait ProfileSource: Send + Sync {
    /// The profile if it is cached and fresh (the hot path: no allocation, no await).
    fn cached(&self, user_id: &str) -> Option<Arc<Profile>>;
    /// The user's profile; `None` when it cannot be loaded (the Envelope carries none).
    fn profile(self: Arc<Self>, user_id: &str) -> BoxFuture<'static, Option<Arc<Profile>>>;
}

/// Tokens handed out by a login or a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The access JWT.
    pub access_token: String,
    /// Its life in seconds.
    pub expires_in: u64,
    /// The new opaque refresh token.
    pub refresh_token: String,
    /// The user.
    pub user_id: String,
    /// The session.
    pub session_id: String,
}

/// Why a silent refresh failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshError {
    /// The refresh token is not valid (answer `token-expired`: log in or refresh).
    Refused,
    /// The refresh token was reused; the session is now revoked.
    Revoked,
    /// The identity store cannot answer.
    Unavailable,
}

/// Silent refresh and key re-reads (the identity service).
pub trait Refresher: Send + Sync {
    /// How long after expiry a token may still be refreshed silently (zero: never).
    fn grace(&self) -> Duration;
    /// The claims of an expired token, if it expired at most `grace` ago and is
    /// otherwise valid.
    fn verify_expired(&self, token: &str) -> Option<Claims>;
    /// Rotates `refresh_token`.
    fn refresh(
        self: Arc<Self>,
        refresh_token: String,
    ) -> BoxFuture<'static, Result<Issued, RefreshError>>;
    /// Whether cookies carry `Secure`.
    fn cookie_secure(&self) -> bool;
    /// Cookie lifetimes: (access, refresh), in seconds.
    fn cookie_ages(&self) -> (u64, u64);
    /// Re-reads the signing keys after an unknown `kid`; whether it did.
    fn refetch_keys(self: Arc<Self>) -> BoxFuture<'static, bool>;
}

/// Header carrying a silently refreshed access token on the response.
pub const REFRESHED_TOKEN_HEADER: &str = "x-surge-access-token";

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
    /// Fills the Envelope's profile fields (none: left empty).
    pub profiles: Option<Arc<dyn ProfileSource>>,
    /// Silent refresh and key re-reads (none: expired is a 401, unknown `kid` too).
    pub refresher: Option<Arc<dyn Refresher>>,
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

pub use future::AuthFuture;

mod future {
    // The projection types pin-project-lite generates cannot carry docs.
    #![allow(missing_docs)]

    use std::convert::Infallible;
    use std::task::{Context, Poll};

    use axum::response::Response;
    use futures_util::future::BoxFuture;
    use surge_http::ProblemKind;

    use super::refuse;

    pin_project_lite::pin_project! {
        /// The future of one request through the layer: answered at once, the upstream's
        /// own future (the hot path: nothing boxed), or the slow path (boxed).
        #[project = AuthFutureProj]
        pub enum AuthFuture<F> {
            /// Refused (or no route) without calling the upstream.
            Ready { response: Option<Response> },
            /// Authenticated synchronously; the upstream is running.
            Inner { #[pin] future: F },
            /// Something had to be awaited (revocation confirmation, profile load, silent
            /// refresh, key re-read).
            Slow { future: BoxFuture<'static, Result<Response, Infallible>> },
        }
    }

    impl<F> std::future::Future for AuthFuture<F>
    where
        F: std::future::Future<Output = Result<Response, Infallible>>,
    {
        type Output = Result<Response, Infallible>;

        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                AuthFutureProj::Ready { response } => Poll::Ready(Ok(response
                    .take()
                    .unwrap_or_else(|| refuse(ProblemKind::Internal, "polled after completion")))),
                AuthFutureProj::Inner { future } => future.poll(cx),
                AuthFutureProj::Slow { future } => future.as_mut().poll(cx),
            }
        }
    }
}

/// What the synchronous pass decided.
enum Fast {
    /// Answer this without calling the upstream.
    Respond(Response),
    /// Call the upstream with the request as it is now (Envelope added if any).
    Forward,
    /// Something must be awaited: take the slow path.
    Slow,
}

/// The hot path, without awaiting: a cached token, a Bloom "no", a cached profile.
fn fast(shared: &Shared, request: &mut Request<Body>) -> Fast {
    let s = &shared.setup;
    let path = request.uri().path();
    let Some(route) = s.routes.find(path) else {
        return Fast::Respond(refuse(ProblemKind::NoRoute, "no route serves this path"));
    };
    if route.access == Access::Admin {
        return Fast::Forward;
    }
    let outcome = shared
        .per_route
        .get(&route.prefix)
        .map_or(Ok(None), |a| a.authenticate(path, request.headers()));
    let principal = match outcome {
        Ok(p) => p,
        Err(AuthError::Token(TokenError::Expired)) => return Fast::Slow,
        Err(AuthError::Token(TokenError::UnknownKey)) if s.refresher.is_some() => {
            return Fast::Slow;
        }
        Err(e) => {
            tracing::info!(reason = %e, route = %route.prefix, "credentials refused");
            return Fast::Respond(refuse(ProblemKind::Unauthorized, "credentials refused"));
        }
    };
    let Some(principal) = principal else {
        if route.access == Access::Authenticated {
            return Fast::Respond(refuse(
                ProblemKind::Unauthorized,
                "this route needs credentials",
            ));
        }
        return Fast::Forward;
    };
    let profile = match &principal {
        Principal::User {
            user_id,
            session_id,
        } => {
            if s.revoked.might_be_revoked(session_id, user_id) {
                return Fast::Slow;
            }
            match &s.profiles {
                Some(source) => match source.cached(user_id) {
                    Some(p) => Some(p),
                    None => return Fast::Slow,
                },
                None => None,
            }
        }
        Principal::Partner { .. } => None,
    };
    sign_into(shared, request, principal, profile.as_deref());
    Fast::Forward
}

/// Signs the Envelope for `principal` into the request.
fn sign_into(
    shared: &Shared,
    request: &mut Request<Body>,
    principal: Principal,
    profile: Option<&Profile>,
) {
    let (user_id, session_id) = match principal {
        Principal::User {
            user_id,
            session_id,
        } => (user_id, session_id),
        Principal::Partner { key_id, .. } => (String::new(), key_id),
    };
    let id = shared.request_ids.fetch_add(1, Ordering::Relaxed);
    let mut env = Envelope {
        user_id,
        session_id,
        request_id: format!("{id:x}"),
        issued_at_ms: envelope::now_ms(),
        method: request.method().as_str().to_owned(),
        path: request.uri().path_and_query().map_or_else(
            || request.uri().path().to_owned(),
            |p| p.as_str().to_owned(),
        ),
        ..Envelope::default()
    };
    if let Some(p) = profile {
        env.market.clone_from(&p.market);
        env.tier.clone_from(&p.tier);
        env.cohorts.clone_from(&p.cohorts);
    }
    let header = shared.setup.keys.sign(&env);
    request.headers_mut().insert(envelope::HEADER, header);
    let caller = if env.user_id.is_empty() {
        &env.session_id
    } else {
        &env.user_id
    };
    request
        .extensions_mut()
        .insert(super::rate_limit::Caller(Arc::from(caller.as_str())));
}

impl<S> Service<Request<Body>> for Authenticate<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AuthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        request.headers_mut().remove(envelope::HEADER);
        match fast(&self.shared, &mut request) {
            Fast::Respond(response) => AuthFuture::Ready {
                response: Some(response),
            },
            Fast::Forward => AuthFuture::Inner {
                future: self.inner.call(request),
            },
            Fast::Slow => {
                // The ready clone serves this request; a fresh clone waits for the next one.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                AuthFuture::Slow {
                    future: Box::pin(slow(self.shared.clone(), inner, request)),
                }
            }
        }
    }
}

/// The whole decision with awaiting allowed: unknown `kid` re-read, silent refresh,
/// revocation confirmed against the store, profile loaded.
async fn slow<S>(
    shared: Arc<Shared>,
    mut inner: S,
    mut request: Request<Body>,
) -> Result<Response, Infallible>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    let s = &shared.setup;
    let path = request.uri().path().to_owned();
    let Some(route) = s.routes.find(&path) else {
        return Ok(refuse(ProblemKind::NoRoute, "no route serves this path"));
    };
    let authenticators = shared.per_route.get(&route.prefix);
    let authenticate = |headers: &http::HeaderMap| {
        authenticators.map_or(Ok(None), |a| a.authenticate(&path, headers))
    };
    let mut outcome = authenticate(request.headers());
    if let (Err(AuthError::Token(TokenError::UnknownKey)), Some(r)) = (&outcome, &s.refresher)
        && r.clone().refetch_keys().await
    {
        outcome = authenticate(request.headers());
    }
    let mut refreshed = None;
    let principal = match outcome {
        Ok(p) => p,
        Err(AuthError::Token(TokenError::Expired)) => {
            match silent_refresh(s.refresher.as_ref(), request.headers()).await {
                Ok((principal, issued)) => {
                    refreshed = Some(issued);
                    Some(principal)
                }
                Err(problem) => return Ok(problem),
            }
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
    if let Some(principal) = principal {
        let mut profile = None;
        if let Principal::User {
            user_id,
            session_id,
        } = &principal
        {
            if s.revoked.might_be_revoked(session_id, user_id)
                && s.confirm.is_revoked(session_id, user_id).await
            {
                return Ok(refuse(
                    ProblemKind::Revoked,
                    "this session was revoked; log in again",
                ));
            }
            if let Some(source) = &s.profiles {
                profile = match source.cached(user_id) {
                    Some(p) => Some(p),
                    None => source.clone().profile(user_id).await,
                };
            }
        }
        sign_into(&shared, &mut request, principal, profile.as_deref());
    }
    let mut response = inner.call(request).await?;
    if let (Some(issued), Some(r)) = (refreshed, &s.refresher) {
        hand_out(&mut response, &issued, &**r);
    }
    Ok(response)
}

/// The credentials of an expired access token and a refresh cookie, exchanged for fresh
/// tokens; or the problem to answer.
async fn silent_refresh(
    refresher: Option<&Arc<dyn Refresher>>,
    headers: &http::HeaderMap,
) -> Result<(Principal, Issued), Response> {
    let expired = || refuse(ProblemKind::TokenExpired, "refresh the access token");
    let Some(r) = refresher.filter(|r| !r.grace().is_zero()) else {
        return Err(expired());
    };
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or_else(|| cookies::get(headers, cookies::ACCESS));
    let (Some(token), Some(refresh)) = (token, cookies::get(headers, cookies::REFRESH)) else {
        return Err(expired());
    };
    let Some(claims) = r.verify_expired(token) else {
        return Err(expired());
    };
    match r.clone().refresh(refresh.to_owned()).await {
        Ok(issued) if issued.session_id == claims.sid && issued.user_id == claims.sub => Ok((
            Principal::User {
                user_id: issued.user_id.clone(),
                session_id: issued.session_id.clone(),
            },
            issued,
        )),
        Ok(_) => Err(refuse(
            ProblemKind::Unauthorized,
            "the refresh cookie belongs to another session",
        )),
        Err(RefreshError::Refused) => Err(expired()),
        Err(RefreshError::Revoked) => Err(refuse(
            ProblemKind::Revoked,
            "this session was revoked; log in again",
        )),
        Err(RefreshError::Unavailable) => {
            Err(Problem::unavailable("the identity store is unavailable", 1).into_response())
        }
    }
}

/// Puts silently refreshed tokens on the response (header and cookies); such a response
/// is personal and must not be stored by shared caches.
fn hand_out(response: &mut Response, issued: &Issued, r: &dyn Refresher) {
    let headers = response.headers_mut();
    if let Ok(v) = http::HeaderValue::try_from(issued.access_token.as_str()) {
        headers.insert(REFRESHED_TOKEN_HEADER, v);
    }
    let (access_age, refresh_age) = r.cookie_ages();
    cookies::set(
        headers,
        cookies::ACCESS,
        &issued.access_token,
        access_age,
        r.cookie_secure(),
    );
    cookies::set(
        headers,
        cookies::REFRESH,
        &issued.refresh_token,
        refresh_age,
        r.cookie_secure(),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("private, no-store"),
    );
}
