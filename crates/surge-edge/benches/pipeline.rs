//! What the whole edge pipeline adds to one request, in process (no sockets): the same
//! trivial upstream called directly, through the edge anonymously, and through the edge
//! with a hot bearer token (limits, route, token cache, Bloom check, cached profile,
//! Envelope signed, dispatch). Each iteration drives one request to completion on a
//! current-thread runtime; the differences between the three are the edge's cost.
//!
//!     cargo bench -p surge-edge --bench pipeline

#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use surge_edge::pipeline::dispatch::upstream;
use surge_edge::{Edge, EdgeConfig};
use surge_http::admin::AdminToken;
use tower::ServiceExt;

fn request(bearer: Option<&http::HeaderValue>) -> Request<Body> {
    let mut b = Request::get("/products/P0000042");
    if let Some(t) = bearer {
        b = b.header("authorization", t.clone());
    }
    let mut r = b.body(Body::empty()).unwrap();
    r.extensions_mut()
        .insert(ConnectInfo::<SocketAddr>("127.0.0.1:9".parse().unwrap()));
    r
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let catalog = Router::new().route("/products/{id}", get(|| async { "{\"id\":\"P0000042\"}" }));
    let (edge, token) = rt.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("identity.db").display());
        let store = surge_store::open_identity(&url, &surge_store::StoreOptions::default())
            .await
            .unwrap();
        let edge = Edge::build(
            &EdgeConfig::default(),
            store,
            AdminToken::new("bench-admin"),
            HashMap::from([("catalog".to_owned(), upstream(catalog.clone()))]),
        )
        .await
        .unwrap();
        let issued = edge
            .identity
            .signup(
                "bench@example.com",
                "benchmark password",
                None,
                "127.0.0.1".parse().unwrap(),
            )
            .await
            .unwrap();
        let bearer =
            http::HeaderValue::try_from(format!("Bearer {}", issued.access_token)).unwrap();
        (edge, bearer)
    });
    // Warm the token and profile caches (the hot path).
    rt.block_on(edge.service.clone().oneshot(request(Some(&token))))
        .unwrap();

    c.bench_function("upstream alone", |b| {
        b.iter(|| rt.block_on(catalog.clone().oneshot(request(None))).unwrap())
    });
    c.bench_function("through the edge, anonymous", |b| {
        b.iter(|| {
            rt.block_on(edge.service.clone().oneshot(request(None)))
                .unwrap()
        })
    });
    c.bench_function("through the edge, hot bearer token", |b| {
        b.iter(|| {
            rt.block_on(edge.service.clone().oneshot(request(Some(&token))))
                .unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3));
    targets = pipeline
}
criterion_main!(benches);
