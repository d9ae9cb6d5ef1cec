//! The edge role: the only public door. A tower pipeline ([`pipeline`]) finds the route,
//! authenticates once (JWT or API key, [`auth`]), checks revocations, refreshes expired
//! access tokens silently, signs an Envelope for the upstream and calls it — in process
//! or over HTTP on a [`cluster`] of nodes (consistent hashing with bounded load, retries,
//! circuit breakers, health checks). The identity service ([`identity`]) owns accounts, sessions, refresh
//! tokens, revocations and signing keys; [`switches`] are the operators' kill switches.
//! Upstreams verify the Envelope with
//! `surge_http::envelope`, without depending on this crate. [`Edge::build`] assembles it
//! all from an [`EdgeConfig`].

pub mod auth;
pub mod cluster;
pub mod config;
mod edge;
pub mod identity;
pub mod pipeline;
pub mod routes;
pub mod switches;
mod upkeep;

pub use config::EdgeConfig;
pub use edge::{Edge, IDENTITY, KeyedRouter, Pipeline};
