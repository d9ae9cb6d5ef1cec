//! Synthetic catalogs for demos, tests and benchmarks.
//!
//! Product `n` (1-based) has id `P` + `n` zero-padded to 7 digits (`P0000001`), and
//! its content depends only on `(seed, n)`, so every run with the same seed produces
//! the same catalog. A product is about 20–25 KB of compact JSON (about 1,000 lines
//! pretty-printed): names and descriptions in 8 locales, 8–14 sizes with SKUs and
//! EAN-13s, 8 media items, and 100 attributes. Each product has offers from 3 of 8
//! merchants (`M001`…`M008`) in 4 of 6 markets.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use surge_store::Offer;

const UNITS: [&str; 4] = ["", "mm", "g", "%"];
const LOCALES: [&str; 8] = ["en", "de", "fr", "it", "es", "nl", "pl", "sv"];
const MARKETS: [(&str, &str); 6] = [
    ("DE", "EUR"),
    ("FR", "EUR"),
    ("IT", "EUR"),
    ("NL", "EUR"),
    ("GB", "GBP"),
    ("SE", "SEK"),
];
const BRANDS: [&str; 12] = [
    "Northpeak",
    "Velora",
    "Strideon",
    "Kumo",
    "Atlas & Finch",
    "Brisa",
    "Oxbow",
    "Lumen",
    "Takkar",
    "Rivelle",
    "Hollow Oak",
    "Zephyrine",
];
const KINDS: [&str; 10] = [
    "Running Shoe",
    "Trail Sneaker",
    "High-Top",
    "Court Shoe",
    "Hiking Boot",
    "Slip-On",
    "Training Shoe",
    "Skate Shoe",
    "Racing Flat",
    "Walking Shoe",
];
const COLORS: [&str; 10] = [
    "black", "white", "volt", "navy", "sand", "crimson", "olive", "slate", "ivory", "teal",
];
const WORDS: [&str; 48] = [
    "breathable",
    "mesh",
    "upper",
    "cushioned",
    "midsole",
    "responsive",
    "foam",
    "grip",
    "rubber",
    "outsole",
    "lightweight",
    "durable",
    "support",
    "heel",
    "counter",
    "padded",
    "collar",
    "tongue",
    "laces",
    "recycled",
    "materials",
    "comfort",
    "everyday",
    "training",
    "distance",
    "stability",
    "flexible",
    "forefoot",
    "energy",
    "return",
    "sustainable",
    "design",
    "seamless",
    "knit",
    "reflective",
    "details",
    "night",
    "runs",
    "water",
    "resistant",
    "terrain",
    "traction",
    "lugs",
    "arch",
    "fit",
    "true",
    "to",
    "size",
];

fn rng(seed: u64, n: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n)
}

/// The id of product `n` (1-based).
pub fn product_id(n: u64) -> String {
    format!("P{n:07}")
}

fn sentence(r: &mut ChaCha8Rng, words: usize) -> String {
    let mut s = String::with_capacity(words * 9);
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[r.random_range(0..WORDS.len())]);
    }
    s.push('.');
    s
}

fn ean13(r: &mut ChaCha8Rng) -> String {
    let digits: Vec<u32> = (0..12).map(|_| r.random_range(0..10)).collect();
    let sum: u32 = digits
        .iter()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { *d } else { d * 3 })
        .sum();
    let check = (10 - sum % 10) % 10;
    digits
        .iter()
        .chain(std::iter::once(&check))
        .map(|d| char::from(b'0' + *d as u8))
        .collect()
}

/// Product `n` of the catalog made with `seed`.
pub fn product(seed: u64, n: u64) -> Value {
    let r = &mut rng(seed, n);
    let id = product_id(n);
    let brand = BRANDS[r.random_range(0..BRANDS.len())];
    let kind = KINDS[r.random_range(0..KINDS.len())];
    let color = COLORS[r.random_range(0..COLORS.len())];
    let model = r.random_range(100..999);
    let name: serde_json::Map<String, Value> = LOCALES
        .iter()
        .map(|l| {
            (
                l.to_string(),
                json!(format!("{brand} {kind} {model} ({color}, {l})")),
            )
        })
        .collect();
    let description: serde_json::Map<String, Value> = LOCALES
        .iter()
        .map(|l| {
            let text: Vec<String> = (0..9).map(|_| sentence(r, 14)).collect();
            (l.to_string(), json!(text.join(" ")))
        })
        .collect();
    let sizes: Vec<Value> = (0..r.random_range(8..15))
        .map(|i| {
            let eu = 36 + i;
            json!({"label": format!("EU {eu}"), "sku": format!("{id}-{eu}"), "ean": ean13(r),
                   "us": format!("{:.1}", f64::from(eu) * 0.5 - 14.0), "stock_hint": r.random_range(0..200)})
        })
        .collect();
    let media: Vec<Value> = (0..8)
        .map(|i| {
            json!({"type": if i == 7 { "video" } else { "image" },
                   "url": format!("https://media.example.com/{id}/{i}-{color}.jpg"),
                   "width": 2000, "height": 2000,
                   "alt": {"en": format!("{brand} {kind} view {i}"), "de": format!("{brand} {kind} Ansicht {i}")}})
        })
        .collect();
    let attributes: Vec<Value> = (0..100)
        .map(|i| json!({"key": format!("attr_{i:03}"), "value": sentence(r, 3), "group": format!("group_{}", i / 10),
                   "unit": UNITS[i % 4], "filterable": i % 3 == 0}))
        .collect();
    let gender = ["women", "men", "unisex"][r.random_range(0..3)];
    json!({
        "id": id,
        "brand": brand,
        "name": name,
        "description": description,
        "category": ["shoes", kind.to_lowercase().replace(' ', "-")],
        "color": color,
        "gender": gender,
        "release_date": format!("2026-{:02}-{:02}", r.random_range(1..13), r.random_range(1..29)),
        "sizes": sizes,
        "media": media,
        "attributes": attributes,
    })
}

/// The offers of product `n`: 3 merchants × 4 markets.
pub fn offers(seed: u64, n: u64) -> Vec<Offer> {
    let r = &mut rng(seed ^ 0x0000_FFE5, n);
    let id = product_id(n);
    let first_market = r.random_range(0..MARKETS.len());
    let first_merchant = r.random_range(0..8u32);
    let mut out = Vec::with_capacity(12);
    for m in 0..4 {
        let (market, currency) = MARKETS[(first_market + m) % MARKETS.len()];
        for k in 0..3 {
            out.push(Offer {
                product_id: id.clone(),
                merchant_id: format!("M{:03}", (first_merchant + k * 3) % 8 + 1),
                market: market.into(),
                price_minor: r.random_range(4_999..24_999),
                currency: currency.into(),
                stock: r.random_range(0..500),
                updated_at_ms: 0,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_realistic_and_valid() {
        assert_eq!(product(7, 42), product(7, 42));
        assert_ne!(product(7, 42), product(8, 42));
        let p = product(1, 1);
        let len = serde_json::to_vec(&p).map(|v| v.len()).unwrap_or(0);
        assert!((18_000..=27_000).contains(&len), "product is {len} bytes");
        let pretty = serde_json::to_string_pretty(&p).unwrap_or_default();
        assert!(
            pretty.lines().count() > 800,
            "{} lines, {len} bytes",
            pretty.lines().count()
        );
        assert!(crate::model::product::normalize("P0000001", p).is_ok());
        assert_eq!(offers(1, 1).len(), 12);
    }
}
