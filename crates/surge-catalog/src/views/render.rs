//! Building views from source state: one product document or one (product, market)
//! offers document, in every [`Format`], each compressed once.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use surge_store::Offer;

use super::{Format, View, offers_key, product_key};

/// A view to write (`Some`) or to delete (`None`), by key.
pub type ViewChange = (String, Option<View>);

/// The views of a product: every format when it exists, deletions when it does not.
/// A body that is not JSON (it was validated on write, so only a corrupt row) yields
/// the standard view alone and deletes the derived ones.
pub fn product_views(id: &str, body: Option<&Bytes>, level: u32) -> Vec<ViewChange> {
    let Some(body) = body else {
        return Format::ALL
            .iter()
            .map(|f| (product_key(*f, id), None))
            .collect();
    };
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if parsed.is_none() {
        tracing::error!(
            product_id = id,
            "stored product body is not JSON; serving it only as application/json"
        );
    }
    Format::ALL
        .iter()
        .map(|f| {
            let view = match (f, &parsed) {
                (Format::Standard, _) => Some(View::build(body.clone(), level)),
                (f, Some(doc)) => serde_json::to_vec(&f.transform(doc))
                    .ok()
                    .map(|bytes| View::build(Bytes::from(bytes), level)),
                (_, None) => None,
            };
            (product_key(*f, id), view)
        })
        .collect()
}

#[derive(Serialize)]
struct OffersDoc<'a> {
    product_id: &'a str,
    market: &'a str,
    offers: Vec<OfferDoc<'a>>,
}

#[derive(Serialize)]
struct OfferDoc<'a> {
    merchant_id: &'a str,
    price: PriceDoc<'a>,
    stock: i64,
    updated_at_ms: i64,
}

#[derive(Serialize)]
struct PriceDoc<'a> {
    amount_minor: i64,
    currency: &'a str,
}

/// The offers document of a product in a market, in `format`.
pub fn offers_document(format: Format, id: &str, market: &str, offers: &[Offer]) -> Vec<u8> {
    let doc = OffersDoc {
        product_id: id,
        market,
        offers: offers
            .iter()
            .map(|o| OfferDoc {
                merchant_id: &o.merchant_id,
                price: PriceDoc {
                    amount_minor: o.price_minor,
                    currency: &o.currency,
                },
                stock: o.stock,
                updated_at_ms: o.updated_at_ms,
            })
            .collect(),
    };
    let standard = match serde_json::to_value(&doc) {
        Ok(v) => v,
        Err(_) => return b"{}".to_vec(),
    };
    serde_json::to_vec(&format.transform(&standard)).unwrap_or_else(|_| b"{}".to_vec())
}

/// The offers views of a product in a market: every format when it has offers,
/// deletions when it has none.
pub fn offers_views(id: &str, market: &str, offers: &[Offer], level: u32) -> Vec<ViewChange> {
    Format::ALL
        .iter()
        .map(|f| {
            let view = (!offers.is_empty())
                .then(|| View::build(Bytes::from(offers_document(*f, id, market, offers)), level));
            (offers_key(*f, id, market), view)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_has_three_views_and_deletion_removes_them() {
        let body = Bytes::from_static(br#"{"id":"P1","attributes":[{"key":"k","value":1}]}"#);
        let views = product_views("P1", Some(&body), 6);
        assert_eq!(views.len(), 3);
        assert_eq!(views[0].0, "p:std:P1");
        assert_eq!(views[0].1.as_ref().map(|v| v.identity.clone()), Some(body));
        let alpha = views[1]
            .1
            .as_ref()
            .map(|v| v.identity.clone())
            .unwrap_or_default();
        assert_eq!(&alpha[..], br#"{"productId":"P1","attributes":{"k":1}}"#);
        assert!(
            product_views("P1", None, 6)
                .iter()
                .all(|(_, v)| v.is_none())
        );
    }

    #[test]
    fn offers_keys_round_trip() {
        let key = offers_key(Format::Beta, "P-1.x", "DE");
        assert_eq!(
            super::super::parse_offers_key(&key),
            Some((Format::Beta, "P-1.x", "DE"))
        );
        assert_eq!(super::super::parse_offers_key("p:std:P1"), None);
        assert_eq!(super::super::parse_offers_key("o:gamma:P1:DE"), None);
        assert_eq!(super::super::parse_offers_key("o:std:P1:DE:x"), None);
    }

    #[test]
    fn offers_document_lists_offers() {
        let o = Offer {
            product_id: "P1".into(),
            merchant_id: "M1".into(),
            market: "DE".into(),
            price_minor: 1999,
            currency: "EUR".into(),
            stock: 4,
            updated_at_ms: 7,
        };
        let doc = offers_document(Format::Standard, "P1", "DE", &[o]);
        assert_eq!(
            std::str::from_utf8(&doc).unwrap_or_default(),
            r#"{"product_id":"P1","market":"DE","offers":[{"merchant_id":"M1","price":{"amount_minor":1999,"currency":"EUR"},"stock":4,"updated_at_ms":7}]}"#
        );
        assert!(
            offers_views("P1", "DE", &[], 6)
                .iter()
                .all(|(k, v)| v.is_none() && k.starts_with("o:"))
        );
    }
}
