//! The harness of the edge's integration tests: the whole edge ([`Edge::build`]) over a
//! real SQLite identity store and an in-process upstream that records the Envelopes it
//! receives.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use surge_edge::identity::IdentityConfig;
use surge_edge::pipeline::dispatch::upstream;
use surge_edge::{Edge, EdgeConfig};
use surge_http::admin::AdminToken;
use surge_http::envelope;
use surge_store::IdentityStore;
use tower::ServiceExt;

pub const ADMIN: &str = "admin-secret-token";
pub const PASSWORD: &str = "correct horse battery";

pub struct Harness {
    pub edge: Edge,
    pub store: Arc<dyn IdentityStore>,
    /// Envelope headers the upstream received, by path.
    pub seen: Arc<Mutex<Vec<(String, String)>>>,
    _dir: Arc<tempfile::TempDir>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn problem(&self) -> &str {
        self.body["type"]
            .as_str()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap()
    }

    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

pub async fn harness(identity: IdentityConfig) -> Harness {
    harness_with(EdgeConfig {
        identity,
        ..EdgeConfig::default()
    })
    .await
}

/// The whole edge built from `config` over a fresh SQLite store.
pub async fn harness_with(config: EdgeConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("identity.db").display());
    let store = surge_store::open_identity(&url, &surge_store::StoreOptions::default())
        .await
        .unwrap();
    node(config, store, Arc::new(dir)).await
}

async fn node(
    config: EdgeConfig,
    store: Arc<dyn IdentityStore>,
    dir: Arc<tempfile::TempDir>,
) -> Harness {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let catalog = Router::new().route(
        "/products/{id}",
        get(move |req: Request<Body>| {
            let record = record.clone();
            async move {
                let env = req
                    .headers()
                    .get(envelope::HEADER)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                record
                    .lock()
                    .unwrap()
                    .push((req.uri().path().to_owned(), env.clone()));
                format!("{{\"envelope\":{}}}", !env.is_empty())
            }
        }),
    );
    let mut in_process = HashMap::new();
    in_process.insert("catalog".to_owned(), upstream(catalog));
    let edge = Edge::build(&config, store.clone(), AdminToken::new(ADMIN), in_process)
        .await
        .unwrap();
    Harness {
        edge,
        store,
        seen,
        _dir: dir,
    }
}

pub fn config() -> IdentityConfig {
    IdentityConfig {
        // Reuse detection at once (the window is tested separately).
        refresh_reuse_window_seconds: 0,
        ..IdentityConfig::default()
    }
}

impl Harness {
    /// Another edge node (or this one rebuilt, e.g. after a restart) on the same store,
    /// with its own upstream recorder.
    pub async fn node(&self, config: EdgeConfig) -> Harness {
        node(config, self.store.clone(), self._dir.clone()).await
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let mut req = b
            .body(body.map_or(Body::empty(), |v| Body::from(v.to_string())))
            .unwrap();
        let peer: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        let r = self.edge.service.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn signup(&self, email: &str) -> Reply {
        let r = self
            .call(
                "POST",
                "/auth/signup",
                &[],
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r
    }

    pub async fn me(&self, access: &str) -> Reply {
        self.call(
            "GET",
            "/auth/me",
            &[("authorization", &format!("Bearer {access}"))],
            None,
        )
        .await
    }
}

pub fn field(r: &Reply, name: &str) -> String {
    r.body[name].as_str().unwrap().to_owned()
}
