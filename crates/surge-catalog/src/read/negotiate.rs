//! Choosing what to send: the format from `Accept`, the encoding from
//! `Accept-Encoding`, and whether `If-None-Match` makes it a 304.

use http::HeaderValue;
use surge_http::{Problem, ProblemKind};

use crate::views::Format;

/// The format a client asked for; 406 when none of [`Format::ALL`] is acceptable.
///
/// Follows RFC 9110 §12.5.1: the most specific matching range gives a format its
/// weight (`type/subtype` over `type/*` over `*/*`); the highest weight above zero
/// wins, ties going to the earlier format in [`Format::ALL`].
pub fn format(accept: Option<&HeaderValue>) -> Result<Format, Problem> {
    let Some(accept) = accept else {
        return Ok(Format::Standard);
    };
    let bytes = accept.as_bytes();
    if bytes == b"application/json" || bytes == b"*/*" || bytes.is_empty() {
        return Ok(Format::Standard);
    }
    let text = accept.to_str().map_err(|_| not_acceptable())?;
    let mut best: Option<(f32, Format)> = None;
    for f in Format::ALL {
        let mut chosen: Option<(u8, f32)> = None; // (specificity, q)
        for range in text.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let specificity = if media.eq_ignore_ascii_case(f.media_type()) {
                3
            } else if media.eq_ignore_ascii_case("application/*") {
                2
            } else if media == "*/*" {
                1
            } else {
                continue;
            };
            let q = quality(parts);
            if chosen.is_none_or(|(s, _)| specificity > s) {
                chosen = Some((specificity, q));
            }
        }
        if let Some((_, q)) = chosen
            && q > 0.0
            && best.is_none_or(|(bq, _)| q > bq)
        {
            best = Some((q, f));
        }
    }
    best.map(|(_, f)| f).ok_or_else(not_acceptable)
}

fn quality<'a>(params: impl Iterator<Item = &'a str>) -> f32 {
    for p in params {
        let p = p.trim();
        if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
            return v
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(0.0);
        }
    }
    1.0
}

fn not_acceptable() -> Problem {
    let offered: Vec<&str> = Format::ALL.iter().map(|f| f.media_type()).collect();
    Problem::new(
        ProblemKind::NotAcceptable,
        format!(
            "none of the acceptable media types is offered; offered: {}",
            offered.join(", ")
        ),
    )
}

/// Whether the client takes gzip (`gzip`, `x-gzip` or `*` with a weight above zero).
pub fn gzip(accept_encoding: Option<&HeaderValue>) -> bool {
    let Some(text) = accept_encoding.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut star = false;
    for coding in text.split(',') {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            return quality(parts) > 0.0;
        }
        if name == "*" {
            star = quality(parts) > 0.0;
        }
    }
    star
}

/// Whether `If-None-Match` names the entity whose hash is `hash` (weak comparison,
/// any encoding's tag: `"<hex>"` or `"<hex>-gz"`).
pub fn not_modified(if_none_match: Option<&HeaderValue>, hash: u64) -> bool {
    let Some(text) = if_none_match.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    text.split(',').any(|tag| {
        let tag = tag.trim();
        if tag == "*" {
            return true;
        }
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        let Some(inner) = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
            return false;
        };
        let hex = inner.strip_suffix("-gz").unwrap_or(inner);
        hex.len() == 16 && u64::from_str_radix(hex, 16).is_ok_and(|h| h == hash)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> Option<HeaderValue> {
        Some(HeaderValue::from_static(s))
    }

    #[test]
    fn picks_formats() {
        assert_eq!(format(None).ok(), Some(Format::Standard));
        assert_eq!(
            format(hv("application/x.alpha-format+json").as_ref()).ok(),
            Some(Format::Alpha)
        );
        assert_eq!(
            format(hv("application/json;q=0.5, application/x.beta-format+json").as_ref()).ok(),
            Some(Format::Beta)
        );
        assert_eq!(
            format(hv("text/html, application/*;q=0.1").as_ref()).ok(),
            Some(Format::Standard)
        );
        assert_eq!(
            format(hv("*/*;q=0.9, application/json;q=0").as_ref()).ok(),
            Some(Format::Alpha),
            "an explicit q=0 excludes a format even under */*"
        );
        for bad in [
            "text/html",
            "image/png, text/*",
            "application/json;q=0",
            "application/json;q=abc",
        ] {
            let p = format(Some(&HeaderValue::from_static(bad))).err();
            assert_eq!(
                p.map(|p| p.kind()),
                Some(ProblemKind::NotAcceptable),
                "{bad}"
            );
        }
    }

    #[test]
    fn gzip_negotiation() {
        assert!(gzip(hv("gzip, deflate, br").as_ref()));
        assert!(gzip(hv("br;q=1.0, *;q=0.5").as_ref()));
        assert!(!gzip(hv("gzip;q=0").as_ref()));
        assert!(!gzip(hv("br").as_ref()));
        assert!(!gzip(None));
    }

    #[test]
    fn conditional() {
        let h = 0x0123_4567_89ab_cdef;
        assert!(not_modified(hv("\"0123456789abcdef\"").as_ref(), h));
        assert!(not_modified(hv("W/\"0123456789abcdef-gz\"").as_ref(), h));
        assert!(not_modified(hv("\"x\", \"0123456789abcdef\"").as_ref(), h));
        assert!(not_modified(hv("*").as_ref(), h));
        assert!(!not_modified(hv("\"0123456789abcdee\"").as_ref(), h));
        assert!(!not_modified(hv("0123456789abcdef").as_ref(), h));
    }
}
