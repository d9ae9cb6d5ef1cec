//! Layer: answer switched-off routes at once with their fallback.
//!
//! Runs right after the request limits, before rate limits and authentication: a route
//! an operator switched off ([`crate::switches`]) costs one route lookup and a prepared
//! answer, and its upstream is never called. The answer is the route's configured
//! [`Fallback`] (any status, content type and static body, e.g. an empty carousel), or
//! else a 503 problem `switched-off`. Either carries `Cache-Control: no-store` and
//! `x-surge-switched-off: <target>`, and counts in `surge_edge_switched_off_total`.
//! With no switch off, the layer costs one atomic load.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Request, StatusCode};
use serde::{Deserialize, Serialize};
use surge_http::{Problem, ProblemKind};
use tower::{Layer, Service};

use crate::switches::Switches;

/// Counter: requests answered by a fallback because a switch is off, labelled `target`
/// (the switch: `route:/products`, `class:browse`).
pub const SWITCHED_OFF_TOTAL: &str = "surge_edge_switched_off_total";

/// Header naming the switch that answered (`route:/products`, `class:browse`).
pub const SWITCHED_OFF_HEADER: HeaderName = HeaderName::from_static("x-surge-switched-off");

/// Largest fallback body, in bytes.
pub const MAX_FALLBACK_BYTES: usize = 64 * 1024;

/// What a switched-off route answers instead of calling its upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// HTTP status, 200–599. Default 503.
    #[serde(default = "default_status")]
    pub status: u16,
    /// `Content-Type` of `body`. Default `application/json` (the body must then be JSON).
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// The static document answered, at most 64 KiB.
    pub body: String,
    /// `Retry-After` in seconds, if any. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

fn default_status() -> u16 {
    503
}

fn default_content_type() -> String {
    "application/json".into()
}

/// A prepared answer of a switched-off route.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The route's configured fallback.
    Static {
        status: StatusCode,
        content_type: HeaderValue,
        body: Bytes,
        retry_after: Option<HeaderValue>,
    },
    /// The default: 503 `switched-off`.
    Problem,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

impl Answer {
    /// The default answer.
    pub(crate) fn problem() -> Answer {
        Answer::Problem
    }

    /// Checks and prepares a fallback; the error names the bad field.
    pub(crate) fn fallback(f: &Fallback) -> Result<Answer, String> {
        let status = StatusCode::from_u16(f.status)
            .ok()
            .filter(|s| (200..=599).contains(&s.as_u16()))
            .ok_or_else(|| format!("status must be 200-599, got {}", f.status))?;
        let media = f
            .content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let parses = media
            .split_once('/')
            .is_some_and(|(t, s)| is_token(t) && is_token(s));
        let content_type = HeaderValue::from_str(&f.content_type)
            .ok()
            .filter(|_| parses)
            .ok_or_else(|| {
                format!(
                    "content_type must be a media type such as application/json, got {:?}",
                    f.content_type
                )
            })?;
        if f.body.len() > MAX_FALLBACK_BYTES {
            return Err(format!(
                "body must be at most {MAX_FALLBACK_BYTES} bytes, got {}",
                f.body.len()
            ));
        }
        if (media == "application/json" || media.ends_with("+json"))
            && let Err(e) = serde_json::from_str::<serde_json::Value>(&f.body)
        {
            return Err(format!("body is not valid JSON ({e}) for {media}"));
        }
        if matches!(f.status, 204 | 205 | 304) && !f.body.is_empty() {
            return Err(format!("body must be empty with status {}", f.status));
        }
        Ok(Answer::Static {
            status,
            content_type,
            body: Bytes::from(f.body.clone()),
            retry_after: f.retry_after_seconds.map(HeaderValue::from),
        })
    }

    /// The response, marked with the switch that answered.
    pub(crate) fn respond(&self, target: &str) -> Response {
        let mut response = match self {
            Answer::Static {
                status,
                content_type,
                body,
                retry_after,
            } => {
                let mut r = (*status, body.clone()).into_response();
                let h = r.headers_mut();
                h.insert(CONTENT_TYPE, content_type.clone());
                if let Some(secs) = retry_after {
                    h.insert(RETRY_AFTER, secs.clone());
                }
                r
            }
            Answer::Problem => Problem::new(
                ProblemKind::SwitchedOff,
                "this part of the service is switched off for now",
            )
            .into_response(),
        };
        let h = response.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(target) {
            h.insert(SWITCHED_OFF_HEADER, v);
        }
        response
    }
}

/// The layer.
#[derive(Clone)]
pub struct KillSwitchLayer {
    switches: Arc<Switches>,
}

impl KillSwitchLayer {
    /// A layer enforcing `switches`.
    pub fn new(switches: Arc<Switches>) -> Self {
        KillSwitchLayer { switches }
    }
}

impl<S> Layer<S> for KillSwitchLayer {
    type Service = KillSwitch<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KillSwitch {
            inner,
            switches: self.switches.clone(),
        }
    }
}

/// The service the layer wraps.
#[derive(Clone)]
pub struct KillSwitch<S> {
    inner: S,
    switches: Arc<Switches>,
}

pub use future::KillSwitchFuture;

mod future {
    // The projection types pin-project-lite generates cannot carry docs.
    #![allow(missing_docs)]

    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::response::{IntoResponse, Response};
    use surge_http::{Problem, ProblemKind};

    pin_project_lite::pin_project! {
        /// The future of one request through the layer (nothing boxed).
        #[project = KillSwitchFutureProj]
        pub enum KillSwitchFuture<F> {
            /// Switched off: the fallback.
            Answered { response: Option<Response> },
            /// On: the rest of the pipeline.
            Passed { #[pin] call: F },
        }
    }

    impl<F> Future for KillSwitchFuture<F>
    where
        F: Future<Output = Result<Response, Infallible>>,
    {
        type Output = Result<Response, Infallible>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                KillSwitchFutureProj::Answered { response } => {
                    Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                        Problem::new(ProblemKind::Internal, "polled after completion")
                            .into_response()
                    })))
                }
                KillSwitchFutureProj::Passed { call } => call.poll(cx),
            }
        }
    }
}

impl<S> Service<Request<Body>> for KillSwitch<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = KillSwitchFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self.switches.switched_off(request.uri().path()) {
            None => KillSwitchFuture::Passed {
                call: self.inner.call(request),
            },
            Some(off) => {
                metrics::counter!(SWITCHED_OFF_TOTAL, "target" => off.target.to_string())
                    .increment(1);
                KillSwitchFuture::Answered {
                    response: Some(off.answer.respond(&off.target)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http_body_util::BodyExt;
    use surge_store::{IdentityStore, Switch};
    use tower::ServiceExt;

    use super::*;
    use crate::routes::{Access, Route};
    use crate::switches::{SwitchError, Target};

    fn route(prefix: &str, class: &str, access: Access, fallback: Option<Fallback>) -> Route {
        Route {
            prefix: prefix.into(),
            upstream: "catalog".into(),
            access,
            authenticators: vec![],
            cacheable: false,
            class: class.into(),
            timeout_ms: None,
            fallback,
        }
    }

    fn carousel() -> Fallback {
        Fallback {
            status: 200,
            content_type: "application/json".into(),
            body: r#"{"items":[]}"#.into(),
            retry_after_seconds: None,
        }
    }

    fn routes() -> Vec<Route> {
        vec![
            route("/products", "browse", Access::Public, None),
            route(
                "/recommendations",
                "browse",
                Access::Public,
                Some(carousel()),
            ),
            route("/auth", "auth", Access::Public, None),
            route("/admin", "admin", Access::Admin, None),
            route("/admin/other", "ops", Access::Admin, None),
        ]
    }

    struct Harness {
        switches: Arc<Switches>,
        calls: Arc<AtomicUsize>,
        seq: i64,
        _dir: tempfile::TempDir,
    }

    async fn store() -> (Arc<dyn IdentityStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("identity.db").display());
        let store = surge_store::open_identity(&url, &surge_store::StoreOptions::default())
            .await
            .unwrap();
        (store, dir)
    }

    async fn harness() -> Harness {
        let (store, dir) = store().await;
        let switches =
            Arc::new(Switches::new(&routes(), store, Duration::from_millis(100)).unwrap());
        Harness {
            switches,
            calls: Arc::new(AtomicUsize::new(0)),
            seq: 0,
            _dir: dir,
        }
    }

    impl Harness {
        /// Applies a change as if another node had made it.
        fn flip(&mut self, target: &str, off: bool) {
            self.seq += 1;
            self.switches.apply([Switch {
                target: target.into(),
                off,
                reason: "test".into(),
                actor: None,
                seq: self.seq,
                updated_at_ms: 0,
            }]);
        }

        /// (status, content type, switched-off header, body)
        async fn get(&self, path: &str) -> (StatusCode, String, String, String) {
            let calls = self.calls.clone();
            let inner = tower::service_fn(move |_req: Request<Body>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(Response::new(Body::from("upstream"))) }
            });
            let svc = KillSwitchLayer::new(self.switches.clone()).layer(inner);
            let r = svc
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let (status, ct, sw) = (r.status(), h("content-type"), h("x-surge-switched-off"));
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (status, ct, sw, String::from_utf8(body.to_vec()).unwrap())
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn nothing_off_passes_everything() {
        let h = harness().await;
        for p in [
            "/products/P1",
            "/recommendations",
            "/auth/login",
            "/nowhere",
        ] {
            assert_eq!(h.get(p).await.3, "upstream");
        }
        assert_eq!(h.calls(), 4);
    }

    #[tokio::test]
    async fn a_switched_off_route_answers_the_default_problem_without_the_upstream() {
        let mut h = harness().await;
        h.flip("route:/products", true);
        let (status, ct, sw, body) = h.get("/products/P1").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ct, "application/problem+json");
        assert_eq!(sw, "route:/products");
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["type"], "https://surge.dev/problems/switched-off");
        assert_eq!(problem["title"], "Switched off");
        assert_eq!(h.get("/products").await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.calls(), 0);
        // Other routes, and paths that only look alike, still pass.
        assert_eq!(h.get("/productsX").await.3, "upstream");
        assert_eq!(h.get("/recommendations").await.3, "upstream");
        assert_eq!(h.calls(), 2);
        // Back on.
        h.flip("route:/products", false);
        assert_eq!(h.get("/products/P1").await.3, "upstream");
        assert!(!h.switches.any_off());
    }

    #[tokio::test]
    async fn a_class_switch_answers_each_routes_own_fallback() {
        let mut h = harness().await;
        h.flip("class:browse", true);
        let (status, ct, sw, body) = h.get("/recommendations?user=1").await;
        assert_eq!(
            (status, ct.as_str(), sw.as_str(), body.as_str()),
            (
                StatusCode::OK,
                "application/json",
                "class:browse",
                r#"{"items":[]}"#
            )
        );
        let (status, _, sw, _) = h.get("/products/P1").await;
        assert_eq!(
            (status, sw.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "class:browse")
        );
        assert_eq!(h.get("/auth/login").await.3, "upstream");
        // A route switch is named before its class's; both must be on again to pass.
        h.flip("route:/products", true);
        assert_eq!(h.get("/products/P1").await.2, "route:/products");
        h.flip("class:browse", false);
        assert_eq!(h.get("/recommendations").await.3, "upstream");
        assert_eq!(
            h.get("/products/P1").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.flip("route:/products", false);
        assert_eq!(h.get("/products/P1").await.3, "upstream");
    }

    #[tokio::test]
    async fn older_changes_never_undo_newer_ones() {
        let h = harness().await;
        let change = |off, seq| Switch {
            target: "route:/products".into(),
            off,
            reason: String::new(),
            actor: None,
            seq,
            updated_at_ms: 0,
        };
        assert_eq!(h.switches.apply([change(true, 7)]), 1);
        // A poll that read the row before the change lands late.
        assert_eq!(h.switches.apply([change(false, 5)]), 0);
        assert_eq!(h.switches.apply([change(true, 7)]), 0);
        assert_eq!(
            h.get("/products/P1").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(*h.switches.applied().borrow(), 7);
    }

    #[tokio::test]
    async fn admin_routes_stay_on_whatever_the_store_says() {
        let mut h = harness().await;
        h.flip("class:admin", true);
        h.flip("route:/admin/other", true);
        h.flip("class:ops", true);
        assert_eq!(h.get("/admin/switches").await.3, "upstream");
        assert_eq!(h.get("/admin/other/x").await.3, "upstream");
        assert!(!h.switches.any_off());
    }

    #[tokio::test]
    async fn changes_are_checked_stored_and_applied_here() {
        let h = harness().await;
        let sw = &h.switches;
        let set = |t: &str, off: bool, reason: &'static str| {
            let t = Target::parse(t);
            async move { sw.set(&t?, off, reason, None).await }
        };
        assert!(matches!(
            set("products", true, "x").await,
            Err(SwitchError::Malformed(_))
        ));
        assert!(matches!(
            set("route:products", true, "x").await,
            Err(SwitchError::Malformed(_))
        ));
        assert!(matches!(
            set("class:", true, "x").await,
            Err(SwitchError::Malformed(_))
        ));
        assert!(matches!(
            set("route:/nope", true, "x").await,
            Err(SwitchError::Unknown(_))
        ));
        assert!(matches!(
            set("class:nope", true, "x").await,
            Err(SwitchError::Unknown(_))
        ));
        assert!(matches!(
            set("class:admin", true, "x").await,
            Err(SwitchError::Protected { .. })
        ));
        // A class that holds an admin route is refused whole.
        assert!(matches!(
            set("class:ops", true, "x").await,
            Err(SwitchError::Protected { route, .. }) if route == "/admin/other"
        ));
        assert!(matches!(
            set("route:/products", true, "  ").await,
            Err(SwitchError::Invalid {
                field: "/reason",
                ..
            })
        ));
        let long: &'static str = Box::leak("x".repeat(257).into_boxed_str());
        assert!(matches!(
            set("route:/products", true, long).await,
            Err(SwitchError::Invalid {
                field: "/reason",
                ..
            })
        ));
        assert!(matches!(
            sw.set(&Target::Class("browse".into()), true, "x", Some(""))
                .await,
            Err(SwitchError::Invalid {
                field: "/actor",
                ..
            })
        ));
        assert_eq!(h.calls(), 0);
        // Turning an admin target "on" is harmless and allowed; nothing was stored yet.
        set("class:admin", false, "").await.unwrap();
        let stored = set("route:/products", true, "carousel melts")
            .await
            .unwrap();
        assert!(stored.off);
        assert_eq!(
            h.get("/products/1").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(*sw.applied().borrow(), stored.seq);
        let listed = sw.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].0, stored);
        assert_eq!(listed[1].1, vec!["/products".to_owned()]);
    }

    #[tokio::test]
    async fn another_node_follows_through_the_store() {
        let h = harness().await;
        let store = h.switches.store().clone();
        let other = Switches::new(&routes(), store, Duration::from_millis(100)).unwrap();
        let stored = h
            .switches
            .set(&Target::Route("/products".into()), true, "drop", None)
            .await
            .unwrap();
        assert!(other.switched_off("/products/1").is_none());
        assert_eq!(other.refresh().await.unwrap(), 1);
        assert_eq!(other.refresh().await.unwrap(), 0, "nothing new");
        assert_eq!(*other.applied().borrow(), stored.seq);
        assert!(other.switched_off("/products/1").is_some());
    }

    #[test]
    fn fallbacks_are_checked() {
        let ok = |f: Fallback| Answer::fallback(&f).map(|_| ());
        assert!(ok(carousel()).is_ok());
        let html = Fallback {
            status: 503,
            content_type: "text/html; charset=utf-8".into(),
            body: "<p>Back soon</p>".into(),
            retry_after_seconds: Some(30),
        };
        assert!(ok(html.clone()).is_ok());
        for (f, says) in [
            (
                Fallback {
                    status: 199,
                    ..carousel()
                },
                "status",
            ),
            (
                Fallback {
                    status: 600,
                    ..carousel()
                },
                "status",
            ),
            (
                Fallback {
                    content_type: "json".into(),
                    ..carousel()
                },
                "content_type",
            ),
            (
                Fallback {
                    content_type: "text/html\n".into(),
                    ..html.clone()
                },
                "content_type",
            ),
            (
                Fallback {
                    body: "{not json".into(),
                    ..carousel()
                },
                "JSON",
            ),
            (
                Fallback {
                    content_type: "application/problem+json".into(),
                    body: "nope".into(),
                    ..carousel()
                },
                "JSON",
            ),
            (
                Fallback {
                    status: 204,
                    ..carousel()
                },
                "empty",
            ),
            (
                Fallback {
                    body: "x".repeat(MAX_FALLBACK_BYTES + 1),
                    ..html.clone()
                },
                "body",
            ),
        ] {
            let e = ok(f.clone()).unwrap_err();
            assert!(e.contains(says), "{f:?}: {e}");
        }
        // The edge refuses to start with a bad fallback, naming the route.
        let mut bad = routes();
        bad[1].fallback = Some(Fallback {
            status: 42,
            ..carousel()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (store, _dir) = rt.block_on(store());
        let e = Switches::new(&bad, store, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.contains("\"/recommendations\": fallback.status"), "{e}");
    }

    #[tokio::test]
    async fn a_static_fallback_carries_its_headers() {
        let mut h = harness().await;
        h.switches = Arc::new(
            Switches::new(
                &[route(
                    "/recommendations",
                    "browse",
                    Access::Public,
                    Some(Fallback {
                        status: 503,
                        content_type: "text/html; charset=utf-8".into(),
                        body: "<p>Back soon</p>".into(),
                        retry_after_seconds: Some(30),
                    }),
                )],
                h.switches.store().clone(),
                Duration::from_secs(1),
            )
            .unwrap(),
        );
        h.flip("route:/recommendations", true);
        let inner = tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let r = KillSwitchLayer::new(h.switches.clone())
            .layer(inner)
            .oneshot(
                Request::get("/recommendations")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(r.headers()["retry-after"], "30");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"<p>Back soon</p>");
    }

    #[test]
    fn fallbacks_parse_with_defaults_and_refuse_unknown_fields() {
        let f: Fallback = serde_json::from_str(r#"{"body": "{}"}"#).unwrap();
        assert_eq!(
            (f.status, f.content_type.as_str(), f.retry_after_seconds),
            (503, "application/json", None)
        );
        assert!(serde_json::from_str::<Fallback>(r#"{"body": "{}", "stauts": 200}"#).is_err());
        assert!(serde_json::from_str::<Fallback>(r#"{"status": 200}"#).is_err());
        let r: Route = serde_json::from_str(
            r#"{"prefix": "/r", "upstream": "catalog", "access": "public",
                "fallback": {"status": 200, "content_type": "text/plain", "body": "off"}}"#,
        )
        .unwrap();
        assert_eq!(r.fallback.unwrap().body, "off");
    }
}
