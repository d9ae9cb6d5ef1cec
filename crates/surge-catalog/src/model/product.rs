//! Product documents: any JSON object, with a few fields the catalog relies on.
//!
//! Rules (each failure names its field):
//! - the body is a JSON object;
//! - `id`, if present, equals the id in the path (it is added when absent);
//! - `name` is required: a non-empty string, or an object of locale → non-empty string;
//! - `description`, if present: the same shape as `name`;
//! - `attributes`, if present: an array of objects with a non-empty string `key`;
//! - `sizes`, if present: an array of objects with a non-empty string `sku` and, if
//!   present, an `ean` of 8 or 13 digits.
//!
//! The stored form is compact JSON of the validated document.

use bytes::Bytes;
use serde_json::Value;
use surge_http::FieldError;

/// Validates `body` as the product `id` and returns its stored form.
pub fn normalize(id: &str, mut doc: Value) -> Result<Bytes, Vec<FieldError>> {
    let Value::Object(map) = &mut doc else {
        return Err(vec![FieldError::new(
            "",
            "the product must be a JSON object",
        )]);
    };
    let mut errors = Vec::new();
    match map.get("id") {
        None => {
            // The id goes first, as a reader expects it.
            let rest = std::mem::take(map);
            map.insert("id".into(), Value::String(id.to_owned()));
            map.extend(rest);
        }
        Some(Value::String(s)) if s == id => {}
        Some(_) => errors.push(FieldError::new(
            "/id",
            format!("must equal the id in the path ({id})"),
        )),
    }
    match map.get("name") {
        None => errors.push(FieldError::new("/name", "is required")),
        Some(v) => check_localized("/name", v, &mut errors),
    }
    if let Some(v) = map.get("description") {
        check_localized("/description", v, &mut errors);
    }
    if let Some(v) = map.get("attributes") {
        check_list("attributes", v, &mut errors, |i, item, errors| {
            check_nonempty_str(&format!("/attributes/{i}/key"), item.get("key"), errors);
        });
    }
    if let Some(v) = map.get("sizes") {
        check_list("sizes", v, &mut errors, |i, item, errors| {
            check_nonempty_str(&format!("/sizes/{i}/sku"), item.get("sku"), errors);
            if let Some(ean) = item.get("ean") {
                let ok = ean.as_str().is_some_and(|s| {
                    matches!(s.len(), 8 | 13) && s.bytes().all(|b| b.is_ascii_digit())
                });
                if !ok {
                    errors.push(FieldError::new(
                        format!("/sizes/{i}/ean"),
                        "must be a string of 8 or 13 digits",
                    ));
                }
            }
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    serde_json::to_vec(&doc)
        .map(Bytes::from)
        .map_err(|e| vec![FieldError::new("", format!("cannot be serialised: {e}"))])
}

fn check_localized(pointer: &str, v: &Value, errors: &mut Vec<FieldError>) {
    match v {
        Value::String(s) if !s.is_empty() => {}
        Value::Object(m) if !m.is_empty() => {
            for (locale, text) in m {
                if text.as_str().is_none_or(str::is_empty) {
                    errors.push(FieldError::new(
                        format!("{pointer}/{locale}"),
                        "must be a non-empty string",
                    ));
                }
            }
        }
        _ => errors.push(FieldError::new(
            pointer,
            "must be a non-empty string or an object of locale to non-empty string",
        )),
    }
}

fn check_nonempty_str(pointer: &str, v: Option<&Value>, errors: &mut Vec<FieldError>) {
    if v.and_then(Value::as_str).is_none_or(str::is_empty) {
        errors.push(FieldError::new(
            pointer,
            "is required and must be a non-empty string",
        ));
    }
}

fn check_list(
    field: &str,
    v: &Value,
    errors: &mut Vec<FieldError>,
    each: impl Fn(usize, &Value, &mut Vec<FieldError>),
) {
    let Value::Array(items) = v else {
        errors.push(FieldError::new(format!("/{field}"), "must be an array"));
        return;
    };
    for (i, item) in items.iter().enumerate() {
        if item.is_object() {
            each(i, item, errors);
        } else {
            errors.push(FieldError::new(
                format!("/{field}/{i}"),
                "must be an object",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointers(r: Result<Bytes, Vec<FieldError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.pointer)
            .collect()
    }

    #[test]
    fn adds_the_id_and_compacts() {
        let out = normalize("P1", json!({"name": "Shoe"})).unwrap_or_default();
        assert_eq!(&out[..], br#"{"id":"P1","name":"Shoe"}"#);
    }

    #[test]
    fn names_every_bad_field() {
        let doc = json!({
            "id": "P2",
            "name": {"en": ""},
            "attributes": [{"key": "ok"}, {"value": 1}, 3],
            "sizes": [{"sku": "S1", "ean": "123"}],
        });
        assert_eq!(
            pointers(normalize("P1", doc)),
            vec![
                "/id",
                "/name/en",
                "/attributes/1/key",
                "/attributes/2",
                "/sizes/0/ean"
            ]
        );
        assert_eq!(pointers(normalize("P1", json!([1]))), vec![""]);
        assert_eq!(pointers(normalize("P1", json!({}))), vec!["/name"]);
    }
}
