//! The two cookies of a browser session: the access token and the refresh token.
//!
//! Both are `HttpOnly` (scripts cannot read them), `SameSite=Strict` (other sites cannot
//! make the browser send them), `Path=/` (silent refresh needs the refresh cookie on
//! every request) and `Secure` unless configured off.

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};

/// Cookie holding the access token.
pub const ACCESS: &str = "surge_access";
/// Cookie holding the refresh token.
pub const REFRESH: &str = "surge_refresh";

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Appends a `Set-Cookie` for `name` (`value` is a token: base64url and dots only).
pub fn set(headers: &mut HeaderMap, name: &str, value: &str, max_age_secs: u64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    );
    if let Ok(v) = HeaderValue::try_from(cookie) {
        headers.append(SET_COOKIE, v);
    }
}

/// Appends `Set-Cookie`s that delete both cookies.
pub fn clear(headers: &mut HeaderMap, secure: bool) {
    set(headers, ACCESS, "", 0, secure);
    set(headers, REFRESH, "", 0, secure);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_and_writes() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; surge_refresh=rt_x"));
        h.append(COOKIE, HeaderValue::from_static("surge_access=eyJ.a.b"));
        assert_eq!(get(&h, REFRESH), Some("rt_x"));
        assert_eq!(get(&h, ACCESS), Some("eyJ.a.b"));
        assert_eq!(get(&h, "surge"), None);
        let mut out = HeaderMap::new();
        set(&mut out, ACCESS, "t", 60, true);
        clear(&mut out, false);
        let all: Vec<_> = out
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            all,
            [
                "surge_access=t; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure",
                "surge_access=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
                "surge_refresh=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            ]
        );
    }
}
