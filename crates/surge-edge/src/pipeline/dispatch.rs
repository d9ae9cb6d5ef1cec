//! Last stop: hand the request to the upstream its route names.
//!
//! An upstream is any `tower::Service` answering `Response`s: in all-in-one mode the
//! role's own router, called in process with no socket hop; in scale-out mode a
//! [`Cluster`] of nodes on other machines (balancing, retries, breakers, health). The
//! pipeline above does not know which. Calls to a cluster carry the route's deadline
//! (`timeout_ms`), which bounds the retries too.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::Request;
use surge_http::{Problem, ProblemKind};
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use crate::cluster::{Cluster, Deadline};
use crate::routes::RouteTable;

/// One upstream: a role's router in this process, or a node reached over HTTP. An enum
/// rather than a boxed service, so an in-process call clones an `Arc` and allocates
/// nothing.
#[derive(Clone)]
pub enum Upstream {
    /// A role running in this process.
    Local(Router),
    /// A role on other nodes.
    Cluster(Cluster),
}

/// An in-process upstream over a role's router.
pub fn upstream(router: Router) -> Upstream {
    Upstream::Local(router)
}

/// Routes requests to upstreams by the route table.
#[derive(Clone)]
pub struct Dispatch {
    routes: Arc<RouteTable>,
    upstreams: Arc<HashMap<String, Upstream>>,
    timeout: Duration,
}

impl Dispatch {
    /// A dispatcher; every route's upstream must be in `upstreams`. `timeout` bounds
    /// calls to remote upstreams on routes without their own `timeout_ms`.
    pub fn new(
        routes: RouteTable,
        upstreams: HashMap<String, Upstream>,
        timeout: Duration,
    ) -> Result<Self, String> {
        if let Some(r) = routes
            .routes()
            .iter()
            .find(|r| !upstreams.contains_key(&r.upstream))
        {
            let mut known: Vec<_> = upstreams.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(format!(
                "route {:?} names upstream {:?}, which is not running here (known: {})",
                r.prefix,
                r.upstream,
                known.join(", ")
            ));
        }
        Ok(Dispatch {
            routes: Arc::new(routes),
            upstreams: Arc::new(upstreams),
            timeout,
        })
    }
}

/// The future of one dispatched call.
pub enum DispatchFuture {
    /// Calling an in-process router.
    Local(Oneshot<Router, Request<Body>>),
    /// Calling a cluster of remote nodes.
    Remote(Oneshot<Cluster, Request<Body>>),
    /// No route (the authentication layer normally answers this first).
    NoRoute(Option<Response>),
}

impl std::future::Future for DispatchFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every variant is Unpin (a router's future is boxed inside axum, the remote's too).
        match self.get_mut() {
            DispatchFuture::Local(f) => std::pin::Pin::new(f).poll(cx),
            DispatchFuture::Remote(f) => std::pin::Pin::new(f).poll(cx),
            DispatchFuture::NoRoute(r) => Poll::Ready(Ok(r.take().unwrap_or_else(|| {
                Problem::new(ProblemKind::NoRoute, "no route").into_response()
            }))),
        }
    }
}

impl Service<Request<Body>> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let found = self
            .routes
            .find(request.uri().path())
            .and_then(|r| Some((r, self.upstreams.get(&r.upstream)?)));
        match found {
            Some((_, Upstream::Local(r))) => DispatchFuture::Local(r.clone().oneshot(request)),
            Some((route, Upstream::Cluster(c))) => {
                let timeout = route.timeout_ms.map_or(self.timeout, Duration::from_millis);
                request
                    .extensions_mut()
                    .insert(Deadline(tokio::time::Instant::now() + timeout));
                DispatchFuture::Remote(c.clone().oneshot(request))
            }
            None => DispatchFuture::NoRoute(Some(
                Problem::new(ProblemKind::NoRoute, "no route serves this path").into_response(),
            )),
        }
    }
}
