//! The per-request cost of the traffic-control layers, in process: a per-IP rate limit
//! (GCRA) and the shedding layer (adaptive concurrency limit, LIFO queue) around a
//! trivial upstream, against that upstream alone; and, on the remote path, a circuit
//! breaker's permit + outcome and a consistent-hash (bounded load) placement over three
//! nodes. The budget for limit + shed + breaker is 2 µs per request.
//!
//!     cargo bench -p surge-edge --bench layers

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use surge_edge::EdgeConfig;
use surge_edge::cluster::breaker::{Breaker, BreakerConfig};
use surge_edge::cluster::ring::{Ring, key_hash};
use surge_edge::config::default_routes;
use surge_edge::pipeline::rate_limit::{KeyBy, RateLimitLayer, RateLimits, RateRule};
use surge_edge::pipeline::shed::{ShedLayer, Shedding};
use surge_edge::routes::RouteTable;
use tower::{ServiceBuilder, ServiceExt};

fn request() -> Request<Body> {
    let mut r = Request::get("/products/P0000042")
        .body(Body::empty())
        .unwrap();
    r.extensions_mut()
        .insert(ConnectInfo::<SocketAddr>("127.0.0.1:9".parse().unwrap()));
    r
}

fn layers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = Router::new().route("/products/{id}", get(|| async { "{\"id\":\"P0000042\"}" }));
    let names = ["jwt", "api-key"];
    let routes = Arc::new(RouteTable::new(default_routes(), &names).unwrap());
    let rule = RateRule {
        name: "browse-per-ip".into(),
        classes: vec!["browse".into()],
        key: KeyBy::Ip,
        requests: 1_000_000_000,
        per_seconds: 1,
        burst: None,
        shadow: false,
    };
    let limits = Arc::new(RateLimits::new(&[rule], routes.clone(), 100_000).unwrap());
    let shedding = Arc::new(Shedding::new(&EdgeConfig::default().shedding, routes).unwrap());
    let stack = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limits, KeyBy::Ip))
        .layer(ShedLayer::new(shedding))
        .service(upstream.clone());

    c.bench_function("upstream alone", |b| {
        b.iter(|| rt.block_on(upstream.clone().oneshot(request())).unwrap())
    });
    c.bench_function("rate limit + shed + upstream", |b| {
        b.iter(|| rt.block_on(stack.clone().oneshot(request())).unwrap())
    });
    let breaker = Breaker::new(BreakerConfig::default());
    c.bench_function("breaker permit + outcome", |b| {
        b.iter(|| {
            let now = tokio::time::Instant::now();
            let (permit, _) = breaker.try_acquire(now);
            black_box(breaker.record(permit.unwrap(), false, now))
        })
    });
    let ring = Ring::new(
        &[
            "http://10.0.0.1:80",
            "http://10.0.0.2:80",
            "http://10.0.0.3:80",
        ],
        100,
    );
    let loads = [3usize, 5, 4];
    c.bench_function("bounded-load placement, 3 nodes", |b| {
        b.iter(|| {
            black_box(ring.place(key_hash(black_box(b"P0000042")), 0b111, |i| loads[i], 1.25))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3));
    targets = layers
}
criterion_main!(benches);
