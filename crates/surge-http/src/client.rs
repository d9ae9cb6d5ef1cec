//! A pooled HTTP/1.1 client (hyper) to one base URL on another machine: the edge's
//! upstream nodes, and checkout's remote inventory and payments services.
//!
//! Connections are kept alive and reused (`pool_max_idle_per_host`). Hop-by-hop headers
//! are dropped on the way ([`forwarded_headers`]), `x-forwarded-for` gets the client
//! address. What to do when a node fails (other nodes, retries, breakers) is the
//! caller's business; this client only reports how the exchange went.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;

/// A client for one node.
#[derive(Clone)]
pub struct Remote {
    base: Uri,
    client: Client<HttpConnector, Body>,
}

/// How an exchange with a node went wrong.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: the request never reached the node.
    Connect(String),
    /// The exchange broke after the request may have been sent.
    Broken(String),
}

impl Remote {
    /// A client for `base` (`http://host:port`), keeping up to `max_idle` idle
    /// connections.
    pub fn new(base: &str, max_idle: usize) -> Result<Self, String> {
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("upstream URL {base:?}: {e}"))?;
        if uri.scheme_str() != Some("http")
            || uri.authority().is_none()
            || uri.path_and_query().is_some_and(|p| p.as_str() != "/")
        {
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

    /// The node's base URL.
    pub fn base(&self) -> &Uri {
        &self.base
    }

    /// Sends one request (`path_and_query` relative to the base; headers already passed
    /// through [`forwarded_headers`]).
    pub fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Exchange, SendError> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            path_and_query
                .parse()
                .map_err(|e| SendError::Broken(format!("bad request target: {e}")))?,
        );
        let uri =
            Uri::from_parts(parts).map_err(|e| SendError::Broken(format!("bad target: {e}")))?;
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(Exchange(self.client.request(request)))
    }
}

/// A request on its way to a node.
pub struct Exchange(ResponseFuture);

impl Exchange {
    /// The node's answer, or how the exchange failed.
    pub async fn answer(self) -> Result<Response<Incoming>, SendError> {
        self.0.await.map_err(|e| {
            if e.is_connect() {
                SendError::Connect(e.to_string())
            } else {
                SendError::Broken(e.to_string())
            }
        })
    }
}

/// Drops hop-by-hop headers and sets `x-forwarded-for` to the client's address.
pub fn forwarded_headers(headers: &mut HeaderMap, peer: Option<IpAddr>) {
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
}
