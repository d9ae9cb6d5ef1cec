//! Scale-out shapes: the edge in front of a catalog on another "node" (a real HTTP server
//! on a loopback port), and two edge nodes sharing one identity store.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use common::{ADMIN, config, field, harness};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use surge_edge::{Edge, EdgeConfig};
use surge_http::admin::AdminToken;
use surge_http::envelope;
use tokio::sync::watch;
use tower::ServiceExt;

async fn call(edge: &Edge, path: &str, bearer: Option<&str>) -> (StatusCode, String) {
    let mut b = Request::get(path);
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let mut req = b.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo::<SocketAddr>("192.0.2.9:4000".parse().unwrap()));
    let r = edge.service.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_remote_catalog_is_reached_over_pooled_http_and_a_dead_one_is_a_502() {
    // The "catalog node": answers with what it received from the edge.
    let node = Router::new().route(
        "/products/{id}",
        get(|req: Request<Body>| async move {
            let h = req.headers();
            format!(
                "{} envelope={} xff={}",
                req.uri(),
                h.contains_key(envelope::HEADER),
                h.get("x-forwarded-for").map_or("", |v| v.to_str().unwrap())
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server = tokio::spawn(surge_http::server::serve(listener, node, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    let h = harness(config()).await;
    let token = field(&h.signup("remote@example.com").await, "access_token");
    let mut cfg = EdgeConfig::default();
    cfg.upstreams
        .insert("catalog".into(), format!("http://{addr}").into());
    let edge = Edge::build(
        &cfg,
        h.store.clone(),
        AdminToken::new(ADMIN),
        HashMap::new(),
    )
    .await
    .unwrap();
    let (s, body) = call(&edge, "/products/P1?market=DE", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, "/products/P1?market=DE envelope=false xff=192.0.2.9");
    let (_, body) = call(&edge, "/products/P2", Some(&token)).await;
    assert!(body.contains("envelope=true"), "{body}");
    // Identity stays in the edge's process.
    let (s, body) = call(&edge, "/auth/me", Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let _ = stop_tx.send(true);
    server.await.unwrap();
    let (s, body) = call(&edge, "/products/P1", None).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(body.contains("bad-gateway"), "{body}");
}

#[tokio::test]
async fn an_in_process_upstream_that_does_not_run_here_is_a_start_up_error() {
    let h = harness(config()).await;
    let cfg = EdgeConfig::default();
    assert!(cfg.upstreams["catalog"].in_process());
    let err = Edge::build(
        &cfg,
        h.store.clone(),
        AdminToken::new(ADMIN),
        HashMap::new(),
    )
    .await
    .err()
    .unwrap();
    assert!(err.contains("edge.upstreams.catalog"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_enforces_a_revocation_through_the_log() {
    let h = harness(config()).await;
    let s = h.signup("nodes@example.com").await;
    let (token, session) = (field(&s, "access_token"), field(&s, "session_id"));
    let other = Edge::build(
        &EdgeConfig::default(),
        h.store.clone(),
        AdminToken::new(ADMIN),
        HashMap::from([(
            "catalog".to_owned(),
            surge_edge::pipeline::dispatch::upstream(Router::new()),
        )]),
    )
    .await
    .unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let upkeep = tokio::spawn(other.upkeep(stop_rx));
    assert_eq!(
        call(&other, "/auth/me", Some(&token)).await.0,
        StatusCode::OK
    );

    // Revoked on the first node; the second learns it from the log (poll_ms = 250).
    let admin = format!("Bearer {ADMIN}");
    let r = h
        .call(
            "POST",
            &format!("/admin/sessions/{session}/revoke"),
            &[("authorization", &admin)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let seq = r.body["seq"].as_i64().unwrap();
    let revoked_at = Instant::now();
    // Wait for the other node's upkeep to apply that log entry (a liveness deadline for
    // the test, not the figure).
    let mut applied = other.identity.revocations_applied();
    tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|s| *s >= seq))
        .await
        .expect("never applied")
        .unwrap();
    println!("applied on the other node after {:?}", revoked_at.elapsed());
    // The verified-token cache does not hide the revocation; the filter catches it.
    assert_eq!(
        call(&other, "/auth/me", Some(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let _ = stop_tx.send(true);
    upkeep.await.unwrap();
}
