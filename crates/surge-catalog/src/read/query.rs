//! Query-string parameters, read without building a map per request.

use surge_http::Problem;

/// The value of parameter `name` in a raw query string, percent-decoded.
pub fn param(raw: Option<&str>, name: &str) -> Result<Option<String>, Problem> {
    let Some(raw) = raw else { return Ok(None) };
    for pair in raw.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return decode(v)
                .map(Some)
                .ok_or_else(|| Problem::bad_param(name, "is not valid percent-encoded UTF-8"));
        }
    }
    Ok(None)
}

fn decode(v: &str) -> Option<String> {
    if !v.contains(['%', '+']) {
        return Some(v.to_owned());
    }
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_decodes() {
        assert_eq!(
            param(Some("a=1&ids=P1%2CP2"), "ids").ok().flatten(),
            Some("P1,P2".into())
        );
        assert_eq!(param(Some("market=DE"), "ids").ok().flatten(), None);
        assert_eq!(param(None, "ids").ok().flatten(), None);
        assert!(param(Some("ids=%zz"), "ids").is_err());
        assert!(param(Some("ids=%ff"), "ids").is_err());
    }
}
