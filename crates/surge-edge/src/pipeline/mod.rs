//! The edge's tower pipeline, one file per layer, read top to bottom.

pub mod authenticate;
pub mod request_limits;
