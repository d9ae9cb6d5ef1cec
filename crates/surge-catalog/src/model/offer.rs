//! Offer upserts: `POST /admin/offers` with `{"offers": [...]}`.

use serde::Deserialize;
use serde_json::Value;
use surge_http::FieldError;
use surge_store::Offer;
use utoipa::ToSchema;

use super::{check_id, check_market};

/// The body of `POST /admin/offers`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OfferBatch {
    /// Offers to create or update (at most `http.max_offers_per_request`).
    pub offers: Vec<OfferInput>,
}

/// One offer: a merchant's price and stock for a product in a market.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documents the schema; parsing goes through `parse`
pub struct OfferInput {
    /// Product id.
    pub product_id: String,
    /// Merchant id.
    pub merchant_id: String,
    /// ISO 3166-1 alpha-2 market, e.g. `DE` (any case; stored upper case).
    pub market: String,
    /// The price.
    pub price: PriceInput,
    /// Units in stock (≥ 0).
    pub stock: i64,
}

/// A price in minor units.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PriceInput {
    /// Amount in minor units of the currency (cents): 1999 is 19.99 EUR.
    pub amount_minor: i64,
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
}

/// Parses and validates an offer batch, naming every bad field.
pub fn parse(doc: &Value, max: usize) -> Result<Vec<Offer>, Vec<FieldError>> {
    let Some(items) = doc.get("offers").and_then(Value::as_array) else {
        return Err(vec![FieldError::new(
            "/offers",
            "is required and must be an array",
        )]);
    };
    if items.is_empty() || items.len() > max {
        return Err(vec![FieldError::new(
            "/offers",
            format!("must hold 1 to {max} offers, got {}", items.len()),
        )]);
    }
    let mut errors = Vec::new();
    let mut offers = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |field: &str| format!("/offers/{i}/{field}");
        let text = |field: &str, errors: &mut Vec<FieldError>| -> String {
            match item.get(field).and_then(Value::as_str) {
                Some(s) => s.to_owned(),
                None => {
                    errors.push(FieldError::new(
                        at(field),
                        "is required and must be a string",
                    ));
                    String::new()
                }
            }
        };
        let product_id = text("product_id", &mut errors);
        let merchant_id = text("merchant_id", &mut errors);
        let market_raw = text("market", &mut errors);
        for (field, id) in [("product_id", &product_id), ("merchant_id", &merchant_id)] {
            if !id.is_empty()
                && let Err(e) = check_id(id)
            {
                errors.push(FieldError::new(at(field), e));
            }
        }
        let market = if market_raw.is_empty() {
            String::new()
        } else {
            check_market(&market_raw).unwrap_or_else(|e| {
                errors.push(FieldError::new(at("market"), e));
                String::new()
            })
        };
        let price = item.get("price");
        let amount = price
            .and_then(|p| p.get("amount_minor"))
            .and_then(Value::as_i64);
        if amount.is_none_or(|a| a < 0) {
            errors.push(FieldError::new(
                at("price/amount_minor"),
                "is required and must be an integer ≥ 0",
            ));
        }
        let currency = price
            .and_then(|p| p.get("currency"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
            errors.push(FieldError::new(
                at("price/currency"),
                "must be an ISO 4217 code such as EUR",
            ));
        }
        let stock = item.get("stock").and_then(Value::as_i64);
        if stock.is_none_or(|s| s < 0) {
            errors.push(FieldError::new(
                at("stock"),
                "is required and must be an integer ≥ 0",
            ));
        }
        offers.push(Offer {
            product_id,
            merchant_id,
            market,
            price_minor: amount.unwrap_or(0),
            currency: currency.to_owned(),
            stock: stock.unwrap_or(0),
            updated_at_ms: 0,
        });
    }
    if errors.is_empty() {
        Ok(offers)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_normalises() {
        let doc = json!({"offers": [{"product_id": "P1", "merchant_id": "M1", "market": "de",
            "price": {"amount_minor": 1999, "currency": "EUR"}, "stock": 3}]});
        let offers = parse(&doc, 10).unwrap_or_default();
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].market, "DE");
    }

    #[test]
    fn names_bad_fields() {
        let doc = json!({"offers": [{"product_id": "P 1", "market": "Germany",
            "price": {"amount_minor": -1, "currency": "eur"}, "stock": "many"}]});
        let errs: Vec<_> = parse(&doc, 10)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.pointer)
            .collect();
        assert_eq!(
            errs,
            vec![
                "/offers/0/merchant_id",
                "/offers/0/product_id",
                "/offers/0/market",
                "/offers/0/price/amount_minor",
                "/offers/0/price/currency",
                "/offers/0/stock",
            ]
        );
        assert!(parse(&json!({"offers": []}), 10).is_err());
        assert!(parse(&json!({"offers": [{}, {}]}), 1).is_err());
    }
}
