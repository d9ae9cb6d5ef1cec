//! Batch fan-out: `GET /products?ids=a,b,c` split by owning node, the parts fetched
//! concurrently (each with the cluster's retries and breakers) and merged back into one
//! JSON array in the order asked.
//!
//! The parts are asked for without compression (the edge must read them to merge), and
//! the merged array is answered uncompressed. Elements are copied as raw JSON, never
//! re-serialised. Any part that is not a 200 is answered as it is (e.g. a 400 for a bad
//! id, a 406 for an unknown format): the batch succeeds or fails as a whole, as it does
//! on one node.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use surge_http::{Problem, ProblemKind};
use tokio::time::Instant;

use super::ring::key_hash;
use super::{Cluster, Replay, Target};

/// Largest part body the edge reads to merge, in bytes.
const MAX_PART_BYTES: usize = 64 * 1024 * 1024;

/// Which requests are batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanOutConfig {
    /// Whether to split batches at all. Default true.
    pub enabled: bool,
    /// The batch path. Default `/products`.
    pub path: String,
    /// The query parameter with comma-separated ids. Default `ids`.
    pub param: String,
    /// Batches with more ids are not split (one node answers them, with its own
    /// limit). Default 100, the catalog's `http.max_batch_ids`.
    pub max_ids: usize,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        FanOutConfig {
            enabled: true,
            path: "/products".into(),
            param: "ids".into(),
            max_ids: 100,
        }
    }
}

/// A batch request, read from the path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The ids, in order.
    pub ids: Vec<String>,
    /// The other query parameters, each as `&k=v`.
    pub rest: String,
    /// The batch path.
    pub path: String,
    /// The parameter carrying the ids.
    pub param: String,
}

impl FanOutConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.enabled && (!self.path.starts_with('/') || self.param.is_empty()) {
            return Err(format!(
                "{at}.fan_out.path must start with / and fan_out.param must be set"
            ));
        }
        Ok(())
    }

    /// The batch in a request, when it is one worth splitting: the batch path, one
    /// ids parameter with 2..=`max_ids` plain ids. Anything unusual (percent-escapes
    /// other than `%2C`, empty ids, the parameter twice) is left to one node, which
    /// answers it exactly as it would without the edge.
    pub fn split(&self, path: &str, query: Option<&str>) -> Option<Batch> {
        if !self.enabled || path != self.path {
            return None;
        }
        let mut ids = None;
        let mut rest = String::new();
        for pair in query?.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if k == self.param => {
                    if ids.is_some() {
                        return None;
                    }
                    let v = v.replace("%2C", ",").replace("%2c", ",");
                    if v.contains(['%', '+']) {
                        return None;
                    }
                    ids = Some(v);
                }
                _ => {
                    rest.push('&');
                    rest.push_str(pair);
                }
            }
        }
        let ids: Vec<String> = ids?.split(',').map(str::to_owned).collect();
        if ids.len() < 2 || ids.len() > self.max_ids || ids.iter().any(String::is_empty) {
            return None;
        }
        Some(Batch {
            ids,
            rest,
            path: self.path.clone(),
            param: self.param.clone(),
        })
    }
}

impl Cluster {
    /// Answers a batch from the nodes owning its ids.
    pub(super) async fn fan_out(
        &self,
        batch: Batch,
        mut headers: HeaderMap,
        deadline: Instant,
    ) -> Response {
        let (healthy, closed) = self.candidates(Instant::now());
        let set = if healthy != 0 { healthy } else { closed };
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (pos, id) in batch.ids.iter().enumerate() {
            let node = self.0.ring.owner(key_hash(id.as_bytes()), set).unwrap_or(0);
            match groups.iter_mut().find(|(n, _)| *n == node) {
                Some((_, members)) => members.push(pos),
                None => groups.push((node, vec![pos])),
            }
        }
        let part_query = |members: &[usize]| {
            let ids: Vec<&str> = members.iter().map(|&i| batch.ids[i].as_str()).collect();
            format!(
                "{}?{}={}{}",
                batch.path,
                batch.param,
                ids.join(","),
                batch.rest
            )
        };
        let target_of = |members: &[usize]| Target::Key(key_hash(batch.ids[members[0]].as_bytes()));
        if groups.len() == 1 {
            let members = &groups[0].1;
            return self
                .exchange(
                    Method::GET,
                    &part_query(members),
                    &headers,
                    Replay::Bytes(bytes::Bytes::new()),
                    target_of(members),
                    deadline,
                )
                .await;
        }
        self.0.metrics.fanouts.increment(1);
        headers.remove(ACCEPT_ENCODING);
        let headers = &headers;
        let parts = groups.iter().map(|(_, members)| {
            let pq = part_query(members);
            let target = target_of(members);
            async move {
                self.exchange(
                    Method::GET,
                    &pq,
                    headers,
                    Replay::Bytes(bytes::Bytes::new()),
                    target,
                    deadline,
                )
                .await
            }
        });
        let answers = futures_util::future::join_all(parts).await;
        if let Some(i) = answers.iter().position(|r| r.status() != StatusCode::OK) {
            return answers
                .into_iter()
                .nth(i)
                .unwrap_or_else(|| merge_failed("lost part"));
        }
        let first_headers = answers[0].headers().clone();
        let mut bodies = Vec::with_capacity(answers.len());
        for r in answers {
            if r.headers()
                .get(CONTENT_ENCODING)
                .is_some_and(|e| e.as_bytes() != b"identity")
            {
                return merge_failed("a node answered a compressed part");
            }
            match Limited::new(r.into_body(), MAX_PART_BYTES).collect().await {
                Ok(b) => bodies.push(b.to_bytes()),
                Err(_) => return merge_failed("a part could not be read"),
            }
        }
        let mut slots: Vec<Option<&RawValue>> = vec![None; batch.ids.len()];
        for ((_, members), body) in groups.iter().zip(&bodies) {
            let Ok(elements) = serde_json::from_slice::<Vec<&RawValue>>(body) else {
                return merge_failed("a part is not a JSON array");
            };
            if elements.len() != members.len() {
                return merge_failed("a part has the wrong number of elements");
            }
            for (&pos, element) in members.iter().zip(elements) {
                slots[pos] = Some(element);
            }
        }
        let size = slots
            .iter()
            .flatten()
            .map(|v| v.get().len() + 1)
            .sum::<usize>()
            + 2;
        let mut out = Vec::with_capacity(size);
        out.push(b'[');
        for (i, v) in slots.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(v.map_or("null", RawValue::get).as_bytes());
        }
        out.push(b']');
        let mut response = Response::new(Body::from(out));
        let h = response.headers_mut();
        for name in [CONTENT_TYPE, CACHE_CONTROL] {
            if let Some(v) = first_headers.get(&name) {
                h.insert(name, v.clone());
            }
        }
        h.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
        response
    }
}

fn merge_failed(why: &str) -> Response {
    tracing::warn!(why, "batch fan-out could not merge the parts");
    Problem::new(
        ProblemKind::BadGateway,
        format!("the batch could not be assembled: {why}"),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn batches_are_recognised_and_odd_ones_left_alone() {
        let c = FanOutConfig::default();
        let b = c.split("/products", Some("ids=P1,P2%2CP3&x=1")).unwrap();
        assert_eq!(b.ids, ["P1", "P2", "P3"]);
        assert_eq!(b.rest, "&x=1");
        assert_eq!(c.split("/products", Some("ids=P1")), None, "one id");
        assert_eq!(c.split("/products", Some("ids=P1,,P2")), None, "empty id");
        assert_eq!(c.split("/products", Some("ids=P%31,P2")), None, "escapes");
        assert_eq!(c.split("/products", Some("ids=a,b&ids=c,d")), None, "twice");
        assert_eq!(
            c.split("/products/P1", Some("ids=a,b")),
            None,
            "not the path"
        );
        assert_eq!(c.split("/products", None), None);
        let many: Vec<String> = (0..101).map(|i| format!("P{i}")).collect();
        let q = format!("ids={}", many.join(","));
        assert_eq!(c.split("/products", Some(&q)), None, "over max_ids");
    }
}
