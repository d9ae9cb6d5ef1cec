//! The per-request cost of the kill-switch layer, in process, around a trivial
//! upstream: with no switch off (the hot path: one atomic load), with another route
//! switched off (route lookup + snapshot read), and the switched-off answer itself
//! (the default problem and a static fallback), against the upstream alone.
//!
//!     cargo bench -p surge-edge --bench kill_switch

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use surge_edge::config::default_routes;
use surge_edge::pipeline::kill_switch::{Fallback, KillSwitchLayer};
use surge_edge::switches::Switches;
use surge_store::Switch;
use tower::{Layer, ServiceExt};

fn request(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn switch(target: &str, off: bool, seq: i64) -> Switch {
    Switch {
        target: target.into(),
        off,
        reason: "bench".into(),
        actor: None,
        seq,
        updated_at_ms: 0,
    }
}

fn kill_switch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("identity.db").display());
    let store = rt
        .block_on(surge_store::open_identity(
            &url,
            &surge_store::StoreOptions::default(),
        ))
        .unwrap();
    let mut routes = default_routes();
    if let Some(r) = routes.iter_mut().find(|r| r.prefix == "/product-offers") {
        r.fallback = Some(Fallback {
            status: 200,
            content_type: "application/json".into(),
            body: r#"{"offers":[]}"#.into(),
            retry_after_seconds: None,
        });
    }
    let switches = Arc::new(Switches::new(&routes, store, Duration::from_secs(1)).unwrap());
    let upstream = Router::new().route("/products/{id}", get(|| async { "{\"id\":\"P0000042\"}" }));
    let stack = KillSwitchLayer::new(switches.clone()).layer(upstream.clone());

    c.bench_function("upstream alone", |b| {
        b.iter(|| {
            rt.block_on(upstream.clone().oneshot(request("/products/P0000042")))
                .unwrap()
        })
    });
    c.bench_function("kill switch, none off + upstream", |b| {
        b.iter(|| {
            rt.block_on(stack.clone().oneshot(request("/products/P0000042")))
                .unwrap()
        })
    });
    switches.apply([switch("route:/auth", true, 1)]);
    c.bench_function("kill switch, another route off + upstream", |b| {
        b.iter(|| {
            rt.block_on(stack.clone().oneshot(request("/products/P0000042")))
                .unwrap()
        })
    });
    switches.apply([switch("class:browse", true, 2)]);
    c.bench_function("kill switch, switched off: default problem", |b| {
        b.iter(|| {
            rt.block_on(stack.clone().oneshot(request("/products/P0000042")))
                .unwrap()
        })
    });
    c.bench_function("kill switch, switched off: static fallback", |b| {
        b.iter(|| {
            rt.block_on(stack.clone().oneshot(request("/product-offers/P0000042")))
                .unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3));
    targets = kill_switch
}
criterion_main!(benches);
