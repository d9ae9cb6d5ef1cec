//! An upstream on another node: a pooled HTTP/1.1 client (hyper) to one base URL.
//!
//! Connections are kept alive and reused (`pool_max_idle_per_host`). Hop-by-hop headers
//! are dropped on the way in, `x-forwarded-for` gets the client address. A node that
//! cannot be reached or breaks the exchange is a 502 `bad-gateway`; a slow one is cut by
//! the request-limits layer's timeout (504). Health checks, balancing and breakers
//! across several nodes come with the routing layers (issue 4).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderValue, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use surge_http::{Problem, ProblemKind};
use tower::Service;

/// A remote upstream.
#[derive(Clone)]
pub struct Remote {
    base: Uri,
    client: Client<HttpConnector, Body>,
}

impl Remote {
    /// A client for `base` (`http://host:port`), keeping up to `max_idle` idle
    /// connections.
    pub fn new(base: &str, max_idle: usize) -> Result<Self, String> {
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("upstream URL {base:?}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "upstream URL {base:?} must be http://host:port (TLS ends at the edge)"
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_idle)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Remote { base: uri, client })
    }
}

impl Service<Request<Body>> for Remote {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = path.parse().ok();
        let client = self.client.clone();
        Box::pin(async move {
            let Ok(uri) = Uri::from_parts(parts) else {
                return Ok(
                    Problem::new(ProblemKind::BadRequest, "bad request target").into_response()
                );
            };
            *request.uri_mut() = uri;
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let headers = request.headers_mut();
            for h in [CONNECTION, TE, TRANSFER_ENCODING, UPGRADE, HOST] {
                headers.remove(h);
            }
            headers.remove("keep-alive");
            headers.remove("proxy-connection");
            if let Some(ip) = peer
                && let Ok(v) = HeaderValue::try_from(ip.to_string())
            {
                headers.insert("x-forwarded-for", v);
            }
            match client.request(request).await {
                Ok(response) => Ok(response.map(Body::new)),
                Err(e) => {
                    tracing::warn!(error = %e, "upstream call failed");
                    Ok(
                        Problem::new(ProblemKind::BadGateway, "the upstream could not be reached")
                            .into_response(),
                    )
                }
            }
        })
    }
}
