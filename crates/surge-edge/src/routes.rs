//! The route table: which upstream serves a path, and under what policy.
//!
//! Routes match by path prefix on a segment boundary (`/products` matches `/products`,
//! `/products/P1` and `/products?ids=…`, not `/productsX`); the longest prefix wins.

use serde::{Deserialize, Serialize};

use crate::pipeline::kill_switch::Fallback;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Anyone; an identity is passed on if the caller presents valid credentials.
    Public,
    /// Only callers one of the route's authenticators accepts.
    Authenticated,
    /// Operators: passed through to the upstream, which checks its admin token.
    Admin,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Path prefix, starting with `/`.
    pub prefix: String,
    /// Name of the upstream that serves it (e.g. `catalog`).
    pub upstream: String,
    /// Who may call it.
    pub access: Access,
    /// Authenticators accepted, in order (`jwt`, `api-key`).
    #[serde(default = "default_authenticators")]
    pub authenticators: Vec<String>,
    /// Whether anonymous responses may be cached at the edge (issue 4).
    #[serde(default)]
    pub cacheable: bool,
    /// The route class rate limits (and, later, shedding) are configured by, e.g.
    /// `browse`, `auth`, `admin`. Default `default`.
    #[serde(default = "default_class")]
    pub class: String,
    /// Longest a call to a remote upstream may take on this route, retries included, in
    /// milliseconds (504 after). Default: `edge.timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// What the route answers while a kill switch has it off (default: a 503 problem
    /// `switched-off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

fn default_authenticators() -> Vec<String> {
    vec!["jwt".into()]
}

fn default_class() -> String {
    "default".into()
}

/// Routes, longest prefix first.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Checks and orders `routes`; `authenticators` are the names that exist.
    pub fn new(mut routes: Vec<Route>, authenticators: &[&str]) -> Result<Self, String> {
        for r in &routes {
            if !r.prefix.starts_with('/') || r.prefix.contains(['?', '#', '*']) {
                return Err(format!(
                    "route prefix {:?} must start with / and hold no ? # *",
                    r.prefix
                ));
            }
            if let Some(a) = r
                .authenticators
                .iter()
                .find(|a| !authenticators.contains(&a.as_str()))
            {
                return Err(format!(
                    "route {:?}: unknown authenticator {a:?} (known: {})",
                    r.prefix,
                    authenticators.join(", ")
                ));
            }
            if r.access == Access::Authenticated && r.authenticators.is_empty() {
                return Err(format!(
                    "route {:?} is authenticated but accepts no authenticator",
                    r.prefix
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(r) = routes.iter().find(|r| !seen.insert(r.prefix.as_str())) {
            return Err(format!("route prefix {:?} appears twice", r.prefix));
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(RouteTable { routes })
    }

    /// Every route, longest prefix first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route serving `path` (no query), if any.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            let p = r.prefix.trim_end_matches('/');
            path == p
                || path
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('/') || p.is_empty())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn route(prefix: &str, access: Access) -> Route {
        Route {
            prefix: prefix.into(),
            upstream: "catalog".into(),
            access,
            authenticators: vec!["jwt".into()],
            cacheable: false,
            class: "default".into(),
            timeout_ms: None,
            fallback: None,
        }
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = RouteTable::new(
            vec![
                route("/", Access::Public),
                route("/products", Access::Public),
                route("/products/secret/", Access::Authenticated),
            ],
            &["jwt"],
        )
        .unwrap();
        let at = |p: &str| t.find(p).map(|r| r.prefix.as_str());
        assert_eq!(at("/products"), Some("/products"));
        assert_eq!(at("/products/P1"), Some("/products"));
        assert_eq!(at("/products/secret/x"), Some("/products/secret/"));
        assert_eq!(at("/products/secret"), Some("/products/secret/"));
        assert_eq!(at("/productsX"), Some("/"), "not a segment boundary");
        assert_eq!(at("/auth/me"), Some("/"));
        let t = RouteTable::new(vec![route("/auth", Access::Public)], &["jwt"]).unwrap();
        assert_eq!(t.find("/other").map(|r| r.prefix.as_str()), None);
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(RouteTable::new(vec![route("products", Access::Public)], &["jwt"]).is_err());
        assert!(RouteTable::new(vec![route("/a*", Access::Public)], &["jwt"]).is_err());
        assert!(
            RouteTable::new(
                vec![route("/a", Access::Public), route("/a", Access::Admin)],
                &["jwt"]
            )
            .is_err()
        );
        assert!(RouteTable::new(vec![route("/a", Access::Public)], &["api-key"]).is_err());
        let mut r = route("/a", Access::Authenticated);
        r.authenticators.clear();
        assert!(RouteTable::new(vec![r], &["jwt"]).is_err());
    }
}
