//! The inventory and payments services on other machines, reached over HTTP (their
//! routes are in [`crate::api::internal`]). The orchestrator treats every failure here
//! (no connection, a timeout, a 503, an answer it cannot read) as transient: it retries
//! the step with backoff, and the service's per-order idempotency makes the repeat
//! harmless even when the first call did take effect.

use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use surge_http::client::Remote;
use surge_store::{HoldLine, HoldOutcome};

use crate::api::internal::{
    AuthorizeBody, ExpiredReply, HoldBody, HoldReply, PaymentReply, ReleaseBody, UnitsReply,
};
use crate::inventory::SoldOut;
use crate::metrics;
use crate::payments::{AuthorizeRequest, PaymentError};
use crate::services::{InventoryApi, PaymentsApi, ServiceError};

/// Largest answer read from a service, in bytes.
const MAX_ANSWER: usize = 1024 * 1024;
/// Idle connections kept to one service.
const MAX_IDLE: usize = 256;

/// A client for one service: its base URL, the token it wants, a deadline per call.
#[derive(Clone)]
struct Service {
    name: &'static str,
    remote: Remote,
    auth: HeaderValue,
    timeout: Duration,
}

/// What a path segment keeps as is: RFC 3986 unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment.
fn segment(raw: &str) -> String {
    utf8_percent_encode(raw, SEGMENT).to_string()
}

impl Service {
    fn new(name: &'static str, base: &str, token: &str, timeout: Duration) -> Result<Self, String> {
        let remote =
            Remote::new(base, MAX_IDLE).map_err(|e| format!("checkout.remote.{name}: {e}"))?;
        let auth = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the admin token cannot go in a header".to_owned())?;
        Ok(Service {
            name,
            remote,
            auth,
            timeout,
        })
    }

    fn error(&self, why: impl Into<String>) -> ServiceError {
        ServiceError::Remote {
            service: self.name,
            why: why.into(),
        }
    }

    /// One call: `200` with a JSON answer is success; anything else is an error whose
    /// text carries the status and the problem's detail. Counted and timed.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ServiceError> {
        let started = std::time::Instant::now();
        let r = self.exchange(method, path, body).await;
        let outcome = if r.is_ok() { "ok" } else { "error" };
        ::metrics::counter!(metrics::REMOTE_CALLS_TOTAL, "service" => self.name, "outcome" => outcome)
            .increment(1);
        ::metrics::histogram!(metrics::REMOTE_CALL_SECONDS, "service" => self.name)
            .record(started.elapsed().as_secs_f64());
        r
    }

    async fn exchange<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ServiceError> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, self.auth.clone());
        let body = match body {
            Some(b) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Body::from(serde_json::to_vec(b).map_err(|e| self.error(e.to_string()))?)
            }
            None => Body::empty(),
        };
        let exchange = async {
            let answer = self
                .remote
                .send(method, path, headers, body)
                .map_err(|e| self.error(format!("{e:?}")))?
                .answer()
                .await
                .map_err(|e| self.error(format!("{e:?}")))?;
            let status = answer.status();
            let bytes: Bytes = Limited::new(answer.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| self.error(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ServiceError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| self.error(format!("no answer within {:?}", self.timeout)))??;
        if status != StatusCode::OK {
            let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
                .unwrap_or_default();
            return Err(self.error(format!("{path} answered {status}: {detail}")));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| self.error(format!("{path} answered unreadable JSON: {e}")))
    }
}

/// The inventory service on another machine. It keeps its own sold-out memory, fed
/// by the service's answers, so a rush on a sold-out SKU stops here.
#[derive(Clone)]
pub struct RemoteInventory {
    service: Service,
    sold_out: SoldOut,
}

impl RemoteInventory {
    /// A client for the inventory service at `base` (`http://host:port`), calling with
    /// the admin `token`; a call gets `timeout`; sold-out marks last `sold_out_ttl`.
    pub fn new(
        base: &str,
        token: &str,
        timeout: Duration,
        sold_out_ttl: Duration,
    ) -> Result<Self, String> {
        Ok(RemoteInventory {
            service: Service::new("inventory", base, token, timeout)?,
            sold_out: SoldOut::new(sold_out_ttl),
        })
    }
}

#[async_trait]
impl InventoryApi for RemoteInventory {
    fn is_sold_out(&self, sku: &str, market: &str) -> bool {
        self.sold_out.contains(sku, market)
    }

    async fn hold(
        &self,
        order_id: &str,
        lines: &[HoldLine],
        expires_at_ms: i64,
    ) -> Result<HoldOutcome, ServiceError> {
        if let Some(l) = lines.iter().find(|l| self.is_sold_out(&l.sku, &l.market)) {
            ::metrics::counter!(metrics::SOLD_OUT_FROM_MEMORY_TOTAL).increment(1);
            return Ok(HoldOutcome::OutOfStock {
                sku: l.sku.clone(),
                market: l.market.clone(),
            });
        }
        let body = HoldBody {
            lines,
            expires_at_ms,
        };
        let path = format!("/internal/inventory/holds/{}", segment(order_id));
        let reply: HoldReply = self.service.call(Method::POST, &path, Some(&body)).await?;
        Ok(match reply {
            HoldReply::Held => HoldOutcome::Held,
            HoldReply::OutOfStock {
                sku,
                market,
                sold_out,
            } => {
                if sold_out {
                    self.sold_out.mark(&sku, &market);
                }
                HoldOutcome::OutOfStock { sku, market }
            }
            HoldReply::Settled => HoldOutcome::Settled,
        })
    }

    async fn release(&self, order_id: &str, lines: &[HoldLine]) -> Result<i64, ServiceError> {
        let path = format!("/internal/inventory/holds/{}/release", segment(order_id));
        let body = ReleaseBody { lines };
        let reply: UnitsReply = self.service.call(Method::POST, &path, Some(&body)).await?;
        if reply.units > 0 {
            self.sold_out
                .forget(lines.iter().map(|l| (l.sku.as_str(), l.market.as_str())));
        }
        Ok(reply.units)
    }

    async fn commit(&self, order_id: &str) -> Result<i64, ServiceError> {
        let path = format!("/internal/inventory/holds/{}/commit", segment(order_id));
        let reply: UnitsReply = self
            .service
            .call::<(), _>(Method::POST, &path, None)
            .await?;
        Ok(reply.units)
    }

    async fn expired_holds(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, ServiceError> {
        let path = format!("/internal/inventory/expired-holds?now_ms={now_ms}&limit={limit}");
        let reply: ExpiredReply = self.service.call::<(), _>(Method::GET, &path, None).await?;
        Ok(reply.orders)
    }
}

/// The payments service on another machine.
#[derive(Clone)]
pub struct RemotePayments {
    service: Service,
}

impl RemotePayments {
    /// A client for the payments service at `base` (`http://host:port`), calling with
    /// the admin `token`; a call gets `timeout` (longer than the provider's own).
    pub fn new(base: &str, token: &str, timeout: Duration) -> Result<Self, String> {
        Ok(RemotePayments {
            service: Service::new("payments", base, token, timeout)?,
        })
    }

    async fn call(
        &self,
        order_id: &str,
        action: &str,
        body: Option<&AuthorizeBody>,
    ) -> Result<(), PaymentError> {
        let path = format!("/internal/payments/{}/{action}", segment(order_id));
        match self.service.call(Method::POST, &path, body).await {
            Ok(PaymentReply::Ok) => Ok(()),
            Ok(PaymentReply::Declined { reason }) => Err(PaymentError::Declined { reason }),
            Ok(PaymentReply::Conflict { why }) => Err(PaymentError::Conflict(why)),
            Err(e) => Err(PaymentError::Transient(e.to_string())),
        }
    }
}

#[async_trait]
impl PaymentsApi for RemotePayments {
    async fn authorize(&self, request: &AuthorizeRequest) -> Result<(), PaymentError> {
        let body = AuthorizeBody {
            amount_minor: request.amount_minor,
            currency: request.currency.clone(),
            method_token: request.method_token.clone(),
        };
        self.call(&request.order_id, "authorize", Some(&body)).await
    }

    async fn capture(&self, order_id: &str) -> Result<(), PaymentError> {
        self.call(order_id, "capture", None).await
    }

    async fn void(&self, order_id: &str) -> Result<(), PaymentError> {
        self.call(order_id, "void", None).await
    }
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("o-01HX_a.b~"), "o-01HX_a.b~");
        assert_eq!(segment("a/b c?%"), "a%2Fb%20c%3F%25");
    }
}
