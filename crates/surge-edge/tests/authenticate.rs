//! The authentication layer in front of a real upstream router that verifies Envelopes
//! with `surge_http::envelope::require_envelope`: a token goes in at the edge, only a
//! signed identity reaches the upstream.

#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::future::BoxFuture;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use surge_edge::auth::authenticator::{Authenticator, JwtAuthenticator};
use surge_edge::auth::jwt::{Jwt, JwtSettings};
use surge_edge::auth::revocation::{RevocationFilter, Revoked};
use surge_edge::pipeline::authenticate::{AuthSetup, AuthenticateLayer, RevocationCheck};
use surge_edge::routes::{Access, Route, RouteTable};
use surge_http::envelope::{self, Envelope, EnvelopeKeys};
use tower::{Layer, ServiceExt};

/// The authoritative revocations (the identity store's role).
#[derive(Default)]
struct Store(Mutex<HashSet<String>>);

impl RevocationCheck for Store {
    fn is_revoked(&self, session: &str, _user: &str) -> BoxFuture<'static, bool> {
        let hit = self.0.lock().unwrap().contains(session);
        Box::pin(async move { hit })
    }
}

struct Edge {
    jwt: Arc<Jwt>,
    filter: Arc<RevocationFilter>,
    store: Arc<Store>,
    service: axum::routing::RouterIntoService<Body>,
    layer: AuthenticateLayer,
}

fn keys() -> EnvelopeKeys {
    EnvelopeKeys::new(
        "e1",
        [("e1", b"edge-envelope-key-of-32-bytes!!!" as &[u8])],
        Duration::from_secs(10),
        Duration::from_secs(2),
    )
    .unwrap()
}

fn edge() -> Edge {
    // The upstream: an authenticated route behind the Envelope check, and a public one
    // that reports whether an Envelope arrived.
    let upstream = Router::new()
        .route(
            "/auth/me",
            get(|Extension(e): Extension<Envelope>| async move { e.user_id }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            keys(),
            envelope::require_envelope,
        ))
        .route(
            "/products/{id}",
            get(|req: Request<Body>| async move {
                format!("envelope: {}", req.headers().contains_key(envelope::HEADER))
            }),
        );
    let jwt = Arc::new(Jwt::new(JwtSettings::default(), "k1").unwrap());
    let route = |prefix: &str, access| Route {
        prefix: prefix.into(),
        upstream: "catalog".into(),
        access,
        authenticators: vec!["jwt".into()],
        cacheable: false,
        class: "default".into(),
        timeout_ms: None,
        fallback: None,
    };
    let routes = RouteTable::new(
        vec![
            route("/auth", Access::Authenticated),
            route("/products", Access::Public),
        ],
        &["jwt"],
    )
    .unwrap();
    let filter = Arc::new(RevocationFilter::new(1000, 0.001, Duration::from_secs(3600)).unwrap());
    let store = Arc::new(Store::default());
    let mut authenticators: HashMap<String, Arc<dyn Authenticator>> = HashMap::new();
    authenticators.insert("jwt".into(), Arc::new(JwtAuthenticator::new(jwt.clone())));
    let layer = AuthenticateLayer::new(AuthSetup {
        routes,
        authenticators,
        revoked: filter.clone(),
        confirm: store.clone(),
        keys: keys(),
        profiles: None,
        refresher: None,
    });
    Edge {
        jwt,
        filter,
        store,
        service: upstream.into_service(),
        layer,
    }
}

impl Edge {
    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, String, String) {
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let svc = self.layer.layer(self.service.clone());
        let r = svc.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = r.status();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body =
            String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        (status, ctype, body)
    }
}

fn problem_type(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["type"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_token_at_the_edge_becomes_an_identity_upstream() {
    let e = edge();
    let token = e.jwt.issue("u-alice", "s-1").unwrap();
    let bearer = format!("Bearer {token}");
    let (status, _, body) = e.get("/auth/me", &[("authorization", &bearer)]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "u-alice"));
    // Public routes pass anonymous callers through, with an identity when one is given.
    assert_eq!(e.get("/products/P1", &[]).await.2, "envelope: false");
    assert_eq!(
        e.get("/products/P1", &[("authorization", &bearer)]).await.2,
        "envelope: true"
    );
}

#[tokio::test]
async fn refusals_use_one_problem_shape() {
    let e = edge();
    let (status, ctype, body) = e.get("/auth/me", &[]).await;
    assert_eq!(
        (status, ctype.as_str()),
        (StatusCode::UNAUTHORIZED, "application/problem+json")
    );
    assert_eq!(problem_type(&body), "unauthorized");
    let (status, _, body) = e
        .get("/auth/me", &[("authorization", "Bearer garbage")])
        .await;
    assert_eq!(
        (status, problem_type(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, _, body) = e.get("/nowhere", &[]).await;
    assert_eq!(
        (status, problem_type(&body).as_str()),
        (StatusCode::NOT_FOUND, "no-route")
    );
}

#[tokio::test]
async fn client_supplied_envelopes_never_reach_the_upstream() {
    let e = edge();
    // A well-formed Envelope signed with the real key, sent by a client: the edge drops
    // it, so the upstream sees no identity.
    let forged = keys().sign(&Envelope {
        user_id: "u-admin".into(),
        issued_at_ms: envelope::now_ms(),
        method: "GET".into(),
        path: "/auth/me".into(),
        ..Envelope::default()
    });
    let (status, _, _) = e
        .get("/auth/me", &[(envelope::HEADER, forged.to_str().unwrap())])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, _, body) = e
        .get(
            "/products/P1",
            &[(envelope::HEADER, forged.to_str().unwrap())],
        )
        .await;
    assert_eq!(body, "envelope: false");
}

#[tokio::test]
async fn revoked_sessions_are_refused_once_confirmed() {
    let e = edge();
    let token = e.jwt.issue("u-bob", "s-9").unwrap();
    let bearer = format!("Bearer {token}");
    // In the filter but not confirmed by the store (a false positive): served.
    e.filter.insert(Revoked::Session("s-9"));
    assert_eq!(
        e.get("/auth/me", &[("authorization", &bearer)]).await.0,
        StatusCode::OK
    );
    // Confirmed: refused with its own type.
    e.store.0.lock().unwrap().insert("s-9".into());
    let (status, _, body) = e.get("/auth/me", &[("authorization", &bearer)]).await;
    assert_eq!(
        (status, problem_type(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "revoked")
    );
}
