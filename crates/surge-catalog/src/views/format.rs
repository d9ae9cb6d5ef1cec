//! The representations the read API serves, and how each is derived from the standard
//! document. Transforms run once, in the projector; the read path only picks bytes.
//!
//! | format | media type | derived from the standard document by |
//! |---|---|---|
//! | standard | `application/json` | nothing: the document as written (compact JSON) |
//! | alpha | `application/x.alpha-format+json` | `id` → `productId`, `product_id` → `productId`; `attributes` as an object `{key: value}` instead of `[{key, value}]` |
//! | beta | `application/x.beta-format+json` | every object key in camelCase (`merchant_id` → `merchantId`); `sizes` → `variants`; localized maps (`name`, `description`) as `[{locale, text}]`, sorted by locale |

use serde_json::{Map, Value};

/// A representation of catalog documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `application/json`.
    Standard,
    /// `application/x.alpha-format+json`.
    Alpha,
    /// `application/x.beta-format+json`.
    Beta,
}

impl Format {
    /// Every format, in order of preference when a client accepts several equally.
    pub const ALL: [Format; 3] = [Format::Standard, Format::Alpha, Format::Beta];

    /// The media type served with this format.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Standard => "application/json",
            Format::Alpha => "application/x.alpha-format+json",
            Format::Beta => "application/x.beta-format+json",
        }
    }

    /// The short tag used in view keys.
    pub fn tag(self) -> &'static str {
        match self {
            Format::Standard => "std",
            Format::Alpha => "alpha",
            Format::Beta => "beta",
        }
    }

    /// Derives this format's document from the standard one.
    pub fn transform(self, standard: &Value) -> Value {
        match self {
            Format::Standard => standard.clone(),
            Format::Alpha => alpha(standard),
            Format::Beta => beta(standard),
        }
    }
}

fn alpha(v: &Value) -> Value {
    let Value::Object(map) = v else {
        return v.clone();
    };
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        match (k.as_str(), v) {
            ("id" | "product_id", _) => {
                out.insert("productId".into(), v.clone());
            }
            ("attributes", Value::Array(items)) => {
                let mut attrs = Map::with_capacity(items.len());
                for item in items {
                    if let Some(key) = item.get("key").and_then(Value::as_str) {
                        attrs.insert(
                            key.to_owned(),
                            item.get("value").cloned().unwrap_or(Value::Null),
                        );
                    }
                }
                out.insert("attributes".into(), Value::Object(attrs));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn is_localized(key: &str) -> bool {
    matches!(key, "name" | "description")
}

fn beta(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let key = if k == "sizes" {
                    "variants".to_owned()
                } else {
                    camel(k)
                };
                let value = match v {
                    Value::Object(locales) if is_localized(k) => {
                        let mut list: Vec<(&String, &Value)> = locales.iter().collect();
                        list.sort_by(|a, b| a.0.cmp(b.0));
                        Value::Array(
                            list.into_iter()
                                .map(|(locale, text)| {
                                    serde_json::json!({"locale": locale, "text": text})
                                })
                                .collect(),
                        )
                    }
                    other => beta(other),
                };
                out.insert(key, value);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(beta).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn alpha_flattens_attributes_and_renames_id() {
        let std = json!({"id": "P1", "attributes": [{"key": "color", "value": "red"}], "x": 1});
        assert_eq!(
            Format::Alpha.transform(&std),
            json!({"productId": "P1", "attributes": {"color": "red"}, "x": 1})
        );
    }

    #[test]
    fn beta_camel_cases_and_lists_locales() {
        let std = json!({"id": "P1", "name": {"de": "Schuh", "en": "Shoe"},
                         "sizes": [{"size_label": "42"}], "merchant_id": "M1"});
        assert_eq!(
            Format::Beta.transform(&std),
            json!({"id": "P1", "name": [{"locale": "de", "text": "Schuh"}, {"locale": "en", "text": "Shoe"}],
                   "variants": [{"sizeLabel": "42"}], "merchantId": "M1"})
        );
    }

    #[test]
    fn transforms_tolerate_any_shape() {
        for v in [
            json!(null),
            json!([1, 2]),
            json!({"attributes": "nope", "name": "plain"}),
        ] {
            for f in Format::ALL {
                let _ = f.transform(&v);
            }
        }
    }
}
