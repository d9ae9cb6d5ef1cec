//! Last stop: hand the request to the upstream its route names.
//!
//! An upstream is any `tower::Service` answering `Response`s: in all-in-one mode the
//! role's own router, called in process with no socket hop; in scale-out mode a
//! [`super::remote::Remote`] (a pooled HTTP client to another node). The pipeline above
//! does not know which.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::Request;
use surge_http::{Problem, ProblemKind};
use tower::util::{BoxCloneSyncService, Oneshot};
use tower::{Service, ServiceExt};

use crate::routes::RouteTable;

/// One upstream, type-erased.
pub type Upstream = BoxCloneSyncService<Request<Body>, Response, Infallible>;

/// Wraps any cloneable service answering `Response`s (an axum `Router`, a [`super::remote::Remote`]).
pub fn upstream<S>(service: S) -> Upstream
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service)
}

/// Routes requests to upstreams by the route table.
#[derive(Clone)]
pub struct Dispatch {
    routes: Arc<RouteTable>,
    upstreams: Arc<HashMap<String, Upstream>>,
}

impl Dispatch {
    /// A dispatcher; every route's upstream must be in `upstreams`.
    pub fn new(routes: RouteTable, upstreams: HashMap<String, Upstream>) -> Result<Self, String> {
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
        })
    }
}

/// The future of one dispatched call.
pub enum DispatchFuture {
    /// Calling the upstream.
    Call(Oneshot<Upstream, Request<Body>>),
    /// No route (the authentication layer normally answers this first).
    NoRoute(Option<Response>),
}

impl std::future::Future for DispatchFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            DispatchFuture::Call(f) => std::pin::Pin::new(f).poll(cx),
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

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let upstream = self
            .routes
            .find(request.uri().path())
            .and_then(|r| self.upstreams.get(&r.upstream));
        match upstream {
            Some(u) => DispatchFuture::Call(u.clone().oneshot(request)),
            None => DispatchFuture::NoRoute(Some(
                Problem::new(ProblemKind::NoRoute, "no route serves this path").into_response(),
            )),
        }
    }
}
