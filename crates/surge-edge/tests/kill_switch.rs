//! Kill switches through the whole edge ([`Edge::build`] over a real SQLite identity
//! store): the admin API, the fallbacks, class switches, refused targets and callers,
//! restarts, and a second edge node on the same store following the change.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{ADMIN, Harness, Reply, config, field, harness_with};
use http::StatusCode;
use serde_json::{Value, json};
use surge_edge::EdgeConfig;
use surge_edge::pipeline::kill_switch::Fallback;
use surge_edge::routes::{Access, Route};

/// The default edge plus a recommendations carousel whose fallback is an empty list.
fn edge_config() -> EdgeConfig {
    let mut c = EdgeConfig {
        identity: config(),
        switch_poll_ms: 10,
        ..EdgeConfig::default()
    };
    c.routes.push(Route {
        prefix: "/recommendations".into(),
        upstream: "catalog".into(),
        access: Access::Public,
        authenticators: vec!["jwt".into()],
        cacheable: false,
        class: "browse".into(),
        timeout_ms: None,
        fallback: Some(Fallback {
            status: 200,
            content_type: "application/json".into(),
            body: r#"{"items":[]}"#.into(),
            retry_after_seconds: None,
        }),
    });
    c
}

const BEARER: &str = concat!("Bearer ", "admin-secret-token");

impl Harness {
    async fn switch(&self, target: &str, body: Value) -> Reply {
        self.call(
            "PUT",
            &format!("/admin/switches/{target}"),
            &[("authorization", BEARER)],
            Some(body),
        )
        .await
    }

    async fn switches(&self) -> Reply {
        self.call("GET", "/admin/switches", &[("authorization", BEARER)], None)
            .await
    }

    fn upstream_calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn wait_applied(h: &Harness, seq: i64) {
    let mut applied = h.edge.switches().applied();
    tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|s| *s >= seq))
        .await
        .expect("the other node applies the change within 10 s")
        .unwrap();
}

#[tokio::test]
async fn a_switched_off_route_answers_its_fallback_and_never_calls_the_upstream() {
    assert_eq!(BEARER, format!("Bearer {ADMIN}"));
    let h = harness_with(edge_config()).await;
    assert_eq!(
        h.call("GET", "/products/P1", &[], None).await.status,
        StatusCode::OK
    );
    assert_eq!(h.upstream_calls(), 1);

    let put = h
        .switch(
            "route:%2Fproducts",
            json!({"off": true, "reason": "catalog overloaded", "actor": "ops-anna"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.body["target"], "route:/products");
    assert_eq!(put.body["off"], true);
    assert_eq!(put.body["reason"], "catalog overloaded");
    assert_eq!(put.body["actor"], "ops-anna");
    assert_eq!(put.body["routes"], json!(["/products"]));
    assert!(put.body["seq"].as_i64().unwrap() > 0);
    assert!(put.body["updated_at_ms"].as_i64().unwrap() > 0);

    // The default answer: 503 switched-off, before authentication (a bad token is not
    // even looked at) and without the upstream.
    for headers in [&[][..], &[("authorization", "Bearer not-a-token")][..]] {
        let off = h.call("GET", "/products/P1", headers, None).await;
        assert_eq!(
            (off.status, off.problem()),
            (StatusCode::SERVICE_UNAVAILABLE, "switched-off")
        );
        assert_eq!(off.headers["content-type"], "application/problem+json");
        assert_eq!(off.headers["cache-control"], "no-store");
        assert_eq!(off.headers["x-surge-switched-off"], "route:/products");
        assert_eq!(off.body["title"], "Switched off");
    }
    assert_eq!(h.upstream_calls(), 1, "the upstream was not called");
    // Another route of the same class is not affected.
    assert_ne!(
        h.call("GET", "/product-offers/P1", &[], None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // The configured static document; the target may also be sent unencoded.
    let put = h
        .switch(
            "route:/recommendations",
            json!({"off": true, "reason": "recs backend slow"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.body["actor"], Value::Null);
    let recs = h.call("GET", "/recommendations?user=u1", &[], None).await;
    assert_eq!(recs.status, StatusCode::OK);
    assert_eq!(recs.headers["content-type"], "application/json");
    assert_eq!(recs.body, json!({"items": []}));
    assert_eq!(
        recs.headers["x-surge-switched-off"],
        "route:/recommendations"
    );

    let list = h.switches().await;
    assert_eq!(list.status, StatusCode::OK);
    let all = list.body["switches"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["target"], "route:/products");
    assert_eq!(all[0]["reason"], "catalog overloaded");
    assert_eq!(all[1]["target"], "route:/recommendations");
    assert!(all[1]["seq"].as_i64() > all[0]["seq"].as_i64());

    // Back on.
    let put = h
        .switch(
            "route:%2Fproducts",
            json!({"off": false, "reason": "recovered"}),
        )
        .await;
    assert_eq!(
        (put.status, &put.body["off"]),
        (StatusCode::OK, &json!(false))
    );
    // (Another product: the micro-cache still holds P1's first answer.)
    let on = h.call("GET", "/products/P2", &[], None).await;
    assert_eq!(on.status, StatusCode::OK);
    assert!(on.headers.get("x-surge-switched-off").is_none());
    assert_eq!(h.upstream_calls(), 2);
    let list = h.switches().await;
    assert_eq!(list.body["switches"][0]["off"], false);
    assert_eq!(list.body["switches"][0]["reason"], "recovered");
}

#[tokio::test]
async fn a_class_switch_covers_every_route_of_the_class() {
    let h = harness_with(edge_config()).await;
    let put = h
        .switch(
            "class:browse",
            json!({"off": true, "reason": "drop at 10:00"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(
        put.body["routes"],
        json!(["/recommendations", "/product-offers", "/products"])
    );
    for path in ["/products/P1", "/products?ids=P1,P2", "/product-offers/P1"] {
        let r = h.call("GET", path, &[], None).await;
        assert_eq!(
            (r.status, r.problem()),
            (StatusCode::SERVICE_UNAVAILABLE, "switched-off"),
            "{path}"
        );
        assert_eq!(r.headers["x-surge-switched-off"], "class:browse");
    }
    // Each route answers its own fallback.
    let recs = h.call("GET", "/recommendations", &[], None).await;
    assert_eq!(
        (recs.status, recs.body.clone()),
        (StatusCode::OK, json!({"items": []}))
    );
    assert_eq!(h.upstream_calls(), 0);
    // Other classes are served.
    let signup = h.signup("dana@example.com").await;
    assert_eq!(signup.status, StatusCode::CREATED);
    let me = h.me(&field(&signup, "access_token")).await;
    assert_eq!(me.status, StatusCode::OK);

    let put = h
        .switch(
            "class:browse",
            json!({"off": false, "reason": "drop is over"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(
        h.call("GET", "/products/P1", &[], None).await.status,
        StatusCode::OK
    );
    assert_eq!(h.upstream_calls(), 1);
}

#[tokio::test]
async fn bad_targets_bodies_and_callers_are_refused() {
    let h = harness_with(edge_config()).await;
    let off = json!({"off": true, "reason": "test"});

    // Only the admin token opens the API: none, a wrong one, a user's access token.
    let signup = h.signup("erin@example.com").await;
    let user = format!("Bearer {}", field(&signup, "access_token"));
    for auth in [None, Some("Bearer wrong"), Some(user.as_str())] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let put = h
            .call(
                "PUT",
                "/admin/switches/route:%2Fproducts",
                &headers,
                Some(off.clone()),
            )
            .await;
        assert_eq!(
            (put.status, put.problem()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
        let get = h.call("GET", "/admin/switches", &headers, None).await;
        assert_eq!(get.status, StatusCode::UNAUTHORIZED);
    }

    // Targets: malformed (400), unknown (404), admin (409).
    for (target, status, problem) in [
        ("products", StatusCode::BAD_REQUEST, "bad-request"),
        ("route:products", StatusCode::BAD_REQUEST, "bad-request"),
        ("class:", StatusCode::BAD_REQUEST, "bad-request"),
        ("route:%2Fnope", StatusCode::NOT_FOUND, "not-found"),
        ("route:%2Fproducts%2FP1", StatusCode::NOT_FOUND, "not-found"),
        ("class:nope", StatusCode::NOT_FOUND, "not-found"),
        ("class:admin", StatusCode::CONFLICT, "conflict"),
        (
            "route:%2Fadmin%2Fswitches",
            StatusCode::CONFLICT,
            "conflict",
        ),
        ("route:/admin", StatusCode::CONFLICT, "conflict"),
    ] {
        let r = h.switch(target, off.clone()).await;
        assert_eq!(
            (r.status, r.problem()),
            (status, problem),
            "{target}: {:?}",
            r.body
        );
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
    let r = h.switch("class:admin", off.clone()).await;
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("admin routes cannot be switched off"),
        "{:?}",
        r.body
    );

    // Bodies: not JSON, wrong shape, unknown field (400); missing reason (422); not JSON
    // at all (415).
    for body in [
        json!({"off": "yes", "reason": "x"}),
        json!({"reason": "x"}),
        json!({"off": true}),
        json!({"off": true, "reason": "x", "until": "tomorrow"}),
        json!([true]),
    ] {
        let r = h.switch("route:%2Fproducts", body.clone()).await;
        assert_eq!(
            (r.status, r.problem()),
            (StatusCode::BAD_REQUEST, "bad-request"),
            "{body}"
        );
    }
    let r = h
        .call(
            "PUT",
            "/admin/switches/route:%2Fproducts",
            &[
                ("authorization", BEARER),
                ("content-type", "application/json"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .switch("route:%2Fproducts", json!({"off": true, "reason": " "}))
        .await;
    assert_eq!(
        (r.status, r.body["errors"][0]["pointer"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("/reason"))
    );
    let r = h
        .switch(
            "route:%2Fproducts",
            json!({"off": true, "reason": "x".repeat(300)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = h
        .call(
            "PUT",
            "/admin/switches/route:%2Fproducts",
            &[("authorization", BEARER), ("content-type", "text/plain")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A wrong method is a problem too.
    let r = h
        .call(
            "DELETE",
            "/admin/switches/class:browse",
            &[("authorization", BEARER)],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.problem()),
        (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed")
    );

    // Nothing was stored, nothing is off.
    assert_eq!(h.switches().await.body, json!({"switches": []}));
    assert_eq!(
        h.call("GET", "/products/P1", &[], None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn switches_survive_rebuilding_the_edge_on_the_same_store() {
    let h = harness_with(edge_config()).await;
    let put = h
        .switch(
            "route:%2Fproducts",
            json!({"off": true, "reason": "incident 42"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    // A restart: a new edge over the same store, no upkeep running yet.
    let restarted = h.node(edge_config()).await;
    drop(h);
    let r = restarted.call("GET", "/products/P1", &[], None).await;
    assert_eq!(
        (r.status, r.problem()),
        (StatusCode::SERVICE_UNAVAILABLE, "switched-off")
    );
    assert_eq!(restarted.upstream_calls(), 0);
    let list = restarted.switches().await;
    assert_eq!(list.body["switches"][0]["reason"], "incident 42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_edge_node_follows_the_change() {
    let a = harness_with(edge_config()).await;
    let b = a.node(edge_config()).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let upkeep = tokio::spawn(b.edge.upkeep(stopped));
    assert_eq!(
        b.call("GET", "/products/P1", &[], None).await.status,
        StatusCode::OK
    );

    let put = a
        .switch("class:browse", json!({"off": true, "reason": "drop"}))
        .await;
    assert_eq!(put.status, StatusCode::OK);
    wait_applied(&b, put.body["seq"].as_i64().unwrap()).await;
    let r = b.call("GET", "/products/P1", &[], None).await;
    assert_eq!(
        (r.status, r.problem()),
        (StatusCode::SERVICE_UNAVAILABLE, "switched-off")
    );
    assert_eq!(r.headers["x-surge-switched-off"], "class:browse");

    let put = a
        .switch("class:browse", json!({"off": false, "reason": "over"}))
        .await;
    wait_applied(&b, put.body["seq"].as_i64().unwrap()).await;
    assert_eq!(
        b.call("GET", "/products/P2", &[], None).await.status,
        StatusCode::OK
    );
    assert_eq!(b.upstream_calls(), 2);

    stop.send(true).unwrap();
    upkeep.await.unwrap();
}
