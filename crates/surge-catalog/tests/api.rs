//! The catalog's HTTP API, end to end through the router (no sockets): writes, the
//! projector, every read shape, content negotiation, conditional requests, and
//! problem+json for every client mistake.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use surge_catalog::projector::Projector;
use surge_catalog::{CatalogConfig, Parts};
use surge_store::{CatalogStore, StoreOptions};
use tower::ServiceExt;

const TOKEN: &str = "test-admin-token";

struct App {
    router: Router,
    projector: Projector,
    store: Arc<dyn CatalogStore>,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let store = surge_store::open(&url, &StoreOptions::default())
        .await
        .expect("open");
    let catalog = surge_catalog::build(
        &CatalogConfig::default(),
        store.clone(),
        TOKEN,
        Parts {
            api: true,
            projector: true,
        },
    )
    .await
    .expect("build");
    App {
        router: catalog.router,
        projector: catalog.projector.expect("projector"),
        store,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn is_problem(&self, status: u16, slug: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), "application/problem+json");
        assert_eq!(
            self.json()["type"],
            format!("https://surge.dev/problems/{slug}")
        );
        assert_eq!(self.json()["status"], status);
    }
}

impl App {
    async fn call(&self, req: Request<Body>) -> Reply {
        let r = self.router.clone().oneshot(req).await.expect("infallible");
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.call(b.body(Body::empty()).expect("request")).await
    }

    async fn admin(&self, method: &str, uri: &str, body: impl Into<Body>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .expect("request");
        self.call(req).await
    }

    async fn put_product(&self, id: &str, doc: Value) -> Reply {
        self.admin("PUT", &format!("/admin/products/{id}"), doc.to_string())
            .await
    }

    async fn project(&self) {
        self.projector.catch_up().await.expect("project");
    }
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("one valid gzip member");
    out
}

fn shoe(id: &str) -> Value {
    json!({"id": id, "name": {"en": "Shoe", "de": "Schuh"},
           "attributes": [{"key": "color", "value": "red"}],
           "sizes": [{"sku": format!("{id}-42"), "ean": "4006381333931"}]})
}

async fn seeded() -> App {
    let app = app().await;
    assert_eq!(
        app.put_product("P1", shoe("P1")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.put_product("P2", shoe("P2")).await.status,
        StatusCode::CREATED
    );
    let offers = json!({"offers": [
        {"product_id": "P1", "merchant_id": "M1", "market": "DE", "price": {"amount_minor": 1999, "currency": "EUR"}, "stock": 3},
        {"product_id": "P1", "merchant_id": "M2", "market": "de", "price": {"amount_minor": 1899, "currency": "EUR"}, "stock": 0},
    ]});
    let r = app.admin("POST", "/admin/offers", offers.to_string()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"accepted": 2, "outbox_entries": 1}));
    app.project().await;
    let (products, offers, views) = app.store.counts().await.expect("counts");
    assert_eq!(
        (products, offers, views),
        (2, 2, 6),
        "only product views are stored"
    );
    app
}

#[tokio::test]
async fn product_reads_in_every_format_and_encoding() {
    let app = seeded().await;
    let std = app.get("/products/P1", &[]).await;
    assert_eq!(std.status, StatusCode::OK);
    assert_eq!(std.header("content-type"), "application/json");
    assert_eq!(std.header("vary"), "Accept, Accept-Encoding");
    assert_eq!(std.header("cache-control"), "public, max-age=60");
    assert_eq!(std.json(), shoe("P1"));

    let gz = app
        .get("/products/P1", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(gz.header("content-encoding"), "gzip");
    assert_eq!(gunzip(&gz.body), std.body.to_vec());
    assert_ne!(gz.header("etag"), std.header("etag"));

    let alpha = app
        .get(
            "/products/P1",
            &[("accept", "application/x.alpha-format+json")],
        )
        .await;
    assert_eq!(
        alpha.header("content-type"),
        "application/x.alpha-format+json"
    );
    assert_eq!(alpha.json()["productId"], "P1");
    assert_eq!(alpha.json()["attributes"], json!({"color": "red"}));
    let beta = app
        .get(
            "/products/P1",
            &[("accept", "application/x.beta-format+json")],
        )
        .await;
    assert_eq!(beta.json()["variants"][0]["sku"], "P1-42");
    assert_eq!(
        beta.json()["name"][0],
        json!({"locale": "de", "text": "Schuh"})
    );

    let bad = app.get("/products/P1", &[("accept", "text/html")]).await;
    bad.is_problem(406, "not-acceptable");
    assert!(
        bad.json()["detail"]
            .as_str()
            .unwrap_or("")
            .contains("application/x.beta-format+json")
    );
}

#[tokio::test]
async fn conditional_requests_answer_304() {
    let app = seeded().await;
    let first = app.get("/products/P1", &[]).await;
    let etag = first.header("etag").to_owned();
    let again = app.get("/products/P1", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), etag);
    // A changed product gets a new ETag and no 304.
    let mut changed = shoe("P1");
    changed["color"] = json!("blue");
    assert_eq!(app.put_product("P1", changed).await.status, StatusCode::OK);
    app.project().await;
    let after = app.get("/products/P1", &[("if-none-match", &etag)]).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(
        after.json()["color"],
        "blue",
        "write-through made the change visible at once"
    );
}

#[tokio::test]
async fn offers_and_combined_documents() {
    let app = seeded().await;
    let offers = app.get("/products/P1/offers?market=DE", &[]).await;
    assert_eq!(offers.status, StatusCode::OK);
    let list = offers.json()["offers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["merchant_id"], "M1");
    assert_eq!(
        list[1]["price"],
        json!({"amount_minor": 1899, "currency": "EUR"})
    );

    let none = app.get("/products/P2/offers?market=FR", &[]).await;
    assert_eq!(
        none.json(),
        json!({"product_id": "P2", "market": "FR", "offers": []})
    );
    app.get("/products/NOPE/offers?market=DE", &[])
        .await
        .is_problem(404, "not-found");
    app.get("/products/P1/offers", &[])
        .await
        .is_problem(400, "bad-request");
    app.get("/products/P1/offers?market=Germany", &[])
        .await
        .is_problem(400, "bad-request");

    let combined = app.get("/product-offers/P1?market=DE", &[]).await;
    assert_eq!(combined.status, StatusCode::OK);
    assert_eq!(
        combined.json(),
        json!({"product": shoe("P1"), "offers": offers.json()})
    );
    let gz = app
        .get(
            "/product-offers/P1?market=DE",
            &[("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(
        gunzip(&gz.body),
        combined.body.to_vec(),
        "joined gzip is one valid member"
    );
    let etag = combined.header("etag").to_owned();
    let cond = app
        .get("/product-offers/P1?market=DE", &[("if-none-match", &etag)])
        .await;
    assert_eq!(cond.status, StatusCode::NOT_MODIFIED);

    // An offer update changes the offers and the combined document, not the product.
    let before = app.get("/products/P1", &[]).await;
    let update = json!({"offers": [{"product_id": "P1", "merchant_id": "M1", "market": "DE",
        "price": {"amount_minor": 999, "currency": "EUR"}, "stock": 1}]});
    app.admin("POST", "/admin/offers", update.to_string()).await;
    app.project().await;
    let combined2 = app.get("/product-offers/P1?market=DE", &[]).await;
    assert_eq!(
        combined2.json()["offers"]["offers"][0]["price"]["amount_minor"],
        999
    );
    assert_ne!(combined2.header("etag"), etag);
    assert_eq!(
        app.get("/products/P1", &[]).await.header("etag"),
        before.header("etag")
    );
    let version = app.admin("GET", "/admin/products/P1", Body::empty()).await;
    assert_eq!(
        version.header("x-surge-version"),
        "1",
        "offers never rewrite the product"
    );
}

#[tokio::test]
async fn batch_reads() {
    let app = seeded().await;
    let r = app.get("/products?ids=P2,NOPE,P1", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!([shoe("P2"), null, shoe("P1")]));
    let gz = app
        .get("/products?ids=P2,NOPE,P1", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(gunzip(&gz.body), r.body.to_vec());
    let alpha = app
        .get(
            "/products?ids=P1",
            &[("accept", "application/x.alpha-format+json")],
        )
        .await;
    assert_eq!(alpha.json()[0]["productId"], "P1");

    let ids: Vec<String> = (0..101).map(|i| format!("P{i}")).collect();
    let too_many = app
        .get(&format!("/products?ids={}", ids.join(",")), &[])
        .await;
    too_many.is_problem(400, "bad-request");
    assert_eq!(too_many.json()["errors"][0]["pointer"], "ids");
    let hundred = app
        .get(&format!("/products?ids={}", ids[..100].join(",")), &[])
        .await;
    assert_eq!(hundred.status, StatusCode::OK);
    app.get("/products", &[])
        .await
        .is_problem(400, "bad-request");
    app.get("/products?ids=P1,,P2", &[])
        .await
        .is_problem(400, "bad-request");
    app.get("/products?ids=P1%2FP2", &[])
        .await
        .is_problem(400, "bad-request");
}

#[tokio::test]
async fn deletes_are_visible() {
    let app = seeded().await;
    assert_eq!(app.get("/products/P2", &[]).await.status, StatusCode::OK);
    assert_eq!(
        app.admin("DELETE", "/admin/products/P2", Body::empty())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    app.admin("DELETE", "/admin/products/P2", Body::empty())
        .await
        .is_problem(404, "not-found");
    app.project().await;
    app.get("/products/P2", &[])
        .await
        .is_problem(404, "not-found");
}

#[tokio::test]
async fn client_mistakes_are_problems_never_500() {
    let app = seeded().await;
    app.get("/products/NOPE", &[])
        .await
        .is_problem(404, "not-found");
    app.get("/products/bad%20id", &[])
        .await
        .is_problem(400, "bad-request");
    app.get(&format!("/products/{}", "x".repeat(65)), &[])
        .await
        .is_problem(400, "bad-request");
    app.get("/nowhere", &[]).await.is_problem(404, "no-route");
    app.admin("PATCH", "/admin/offers", Body::empty())
        .await
        .is_problem(405, "method-not-allowed");

    // Unauthenticated writes.
    let r = app
        .call(
            Request::put("/admin/products/P9")
                .body(Body::from(shoe("P9").to_string()))
                .expect("req"),
        )
        .await;
    r.is_problem(401, "unauthorized");
    assert!(r.header("www-authenticate").starts_with("Bearer"));
    for (method, uri) in [
        ("DELETE", "/admin/products/P1"),
        ("GET", "/admin/products/P1"),
        ("POST", "/admin/offers"),
        ("GET", "/admin/projector"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("req");
        app.call(req).await.is_problem(401, "unauthorized");
    }

    // Bodies.
    app.admin("PUT", "/admin/products/P9", "{not json")
        .await
        .is_problem(400, "bad-request");
    app.admin(
        "PUT",
        "/admin/products/P9",
        Body::from(vec![0xff, 0xfe, 0x00]),
    )
    .await
    .is_problem(400, "bad-request");
    app.admin("PUT", "/admin/products/P9", "")
        .await
        .is_problem(400, "bad-request");
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    app.admin("PUT", "/admin/products/P9", huge)
        .await
        .is_problem(413, "payload-too-large");
    let r = app
        .admin(
            "PUT",
            "/admin/products/P9",
            json!({"id": "P8", "attributes": [{}]}).to_string(),
        )
        .await;
    r.is_problem(422, "validation-failed");
    let problem = r.json();
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["pointer"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(pointers, vec!["/id", "/name", "/attributes/0/key"]);
    let xml = Request::put("/admin/products/P9")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/xml")
        .body(Body::from("<p/>"))
        .expect("req");
    app.call(xml)
        .await
        .is_problem(415, "unsupported-media-type");
    app.admin(
        "POST",
        "/admin/offers",
        json!({"offers": [{"product_id": "P1"}]}).to_string(),
    )
    .await
    .is_problem(422, "validation-failed");
    app.admin("POST", "/admin/offers", "[]")
        .await
        .is_problem(422, "validation-failed");
    assert!(
        app.get("/products/P9", &[]).await.status == StatusCode::NOT_FOUND,
        "nothing was written"
    );
}

#[tokio::test]
async fn health_readiness_metrics_openapi() {
    let app = seeded().await;
    assert_eq!(app.get("/healthz", &[]).await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz", &[]).await.status, StatusCode::OK);
    let status = app
        .admin("GET", "/admin/projector", Body::empty())
        .await
        .json();
    assert_eq!(status["lag_entries"], 0);
    assert_eq!(status["caught_up"], true);
    let metrics = app.get("/metrics", &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for name in [
        "surge_http_requests_total",
        "surge_cache_misses_total",
        "surge_projector_entries_applied_total",
        "surge_store_operation_duration_seconds",
        "surge_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    let doc = app.get("/openapi.json", &[]).await.json();
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"));
    for path in [
        "/products/{id}",
        "/products/{id}/offers",
        "/product-offers/{id}",
        "/products",
        "/admin/products/{id}",
        "/admin/offers",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} not documented");
    }
    let _ = app.store.counts().await.expect("counts");
}

#[tokio::test]
async fn readiness_waits_for_the_projector() {
    let app = seeded().await;
    app.put_product("P3", shoe("P3")).await;
    // A fresh process over the same store has an outbox entry to apply first.
    let catalog = surge_catalog::build(
        &CatalogConfig::default(),
        app.store.clone(),
        TOKEN,
        Parts {
            api: true,
            projector: true,
        },
    )
    .await
    .expect("build");
    let ready = catalog
        .router
        .clone()
        .oneshot(Request::get("/readyz").body(Body::empty()).expect("req"))
        .await
        .expect("call");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    catalog
        .projector
        .as_ref()
        .expect("projector")
        .catch_up()
        .await
        .expect("catch up");
    let ready = catalog
        .router
        .oneshot(Request::get("/readyz").body(Body::empty()).expect("req"))
        .await
        .expect("call");
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn offer_updates_do_not_wait_for_the_position_commit() {
    let app = seeded().await;
    let offers_url = "/products/P1/offers?market=DE";
    assert_eq!(app.get(offers_url, &[]).await.status, StatusCode::OK); // now cached
    let price = |amount: i64| {
        json!({"offers": [{"product_id": "P1", "merchant_id": "M1", "market": "DE",
            "price": {"amount_minor": amount, "currency": "EUR"}, "stock": 1}]})
        .to_string()
    };
    for amount in [501, 502, 503] {
        app.admin("POST", "/admin/offers", price(amount)).await;
        let step = app.projector.step().await.expect("step");
        assert_eq!(step.entries, 1);
        // Visible after the step, whether or not its position is stored yet.
        assert_eq!(
            app.get(offers_url, &[]).await.json()["offers"][0]["price"]["amount_minor"],
            amount
        );
    }
    // A product change after deferred offers positions commits from the stored
    // position, not from the in-memory one (a mismatch would be a PositionConflict).
    app.put_product("P3", shoe("P3")).await;
    let step = app.projector.step().await.expect("stored step");
    assert_eq!(step.entries, 1);
    let head = app.store.outbox_head().await.expect("head");
    assert_eq!(app.store.applied_position().await.expect("pos"), head);
    assert_eq!(app.get("/products/P3", &[]).await.status, StatusCode::OK);

    // Offers-only again, then flush (what a stopping projector does): stored = head.
    app.admin("POST", "/admin/offers", price(504)).await;
    app.projector.step().await.expect("step");
    app.projector.flush().await.expect("flush");
    let head = app.store.outbox_head().await.expect("head");
    assert_eq!(app.store.applied_position().await.expect("pos"), head);
    // A restarted projector has nothing left to apply.
    let fresh = Projector::new(app.store.clone(), None, Default::default())
        .await
        .expect("projector");
    assert_eq!(fresh.step().await.expect("step").entries, 0);
}
