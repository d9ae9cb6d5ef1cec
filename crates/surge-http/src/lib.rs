//! HTTP plumbing shared by every Surge role: the signed caller identity the edge hands
//! upstreams ([`envelope`]), the one error shape
//! (`application/problem+json`, RFC 9457), Prometheus metrics, and the per-request
//! metrics/tracing middleware.

pub mod admin;
pub mod body;
pub mod client;
pub mod envelope;
pub mod metrics;
pub mod problem;
pub mod server;

pub use problem::{FieldError, Problem, ProblemKind};
