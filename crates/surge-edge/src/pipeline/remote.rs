//! One node on another machine: the pooled HTTP/1.1 client of [`surge_http::client`]
//! (shared with checkout, whose orchestrator calls its remote services with it).

pub use surge_http::client::{Exchange, Remote, SendError, forwarded_headers};
