//! The per-request cost of authentication for a hot token: the revocation Bloom check
//! (session and user, two generations) plus the verified-token cache hit.
//! Target (issue 3): ≤ 1 µs together.
//!
//!     cargo bench -p surge-edge --bench auth_hot_path

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use surge_edge::auth::jwt::{Jwt, JwtSettings};
use surge_edge::auth::revocation::{RevocationFilter, Revoked};
use surge_http::envelope::{self, Envelope, EnvelopeKeys};

fn hot_path(c: &mut Criterion) {
    let jwt = Jwt::new(JwtSettings::default(), "k1").unwrap();
    let token = jwt.issue("u-123456", "s-abcdef").unwrap();
    let filter = RevocationFilter::new(1_000_000, 0.001, Duration::from_secs(3600)).unwrap();
    for i in 0..100_000 {
        filter.insert(Revoked::Session(&format!("s-revoked-{i}")));
    }
    jwt.verify(&token).unwrap(); // warm the cache: the hot token

    c.bench_function("bloom check (session + user)", |b| {
        b.iter(|| black_box(filter.might_be_revoked(black_box("s-abcdef"), black_box("u-123456"))))
    });
    c.bench_function("verified-token cache hit", |b| {
        b.iter(|| black_box(jwt.verify(black_box(&token)).unwrap()))
    });
    c.bench_function("bloom check + cache hit (one request)", |b| {
        b.iter(|| {
            let claims = jwt.verify(black_box(&token)).unwrap();
            black_box(filter.might_be_revoked(&claims.sid, &claims.sub))
        })
    });
    // The Envelope: signed once per request at the edge, verified once by the upstream.
    let keys = EnvelopeKeys::new(
        "e1",
        [("e1", b"edge-envelope-key-of-32-bytes!!!" as &[u8])],
        Duration::from_secs(10),
        Duration::from_secs(2),
    )
    .unwrap();
    let env = Envelope {
        user_id: "u-123456".into(),
        session_id: "s-abcdef".into(),
        market: "DE".into(),
        cohorts: vec!["sneaker-fan".into()],
        tier: "plus".into(),
        request_id: "1f".into(),
        issued_at_ms: envelope::now_ms(),
        method: "GET".into(),
        path: "/products/P0000001".into(),
    };
    c.bench_function("envelope sign (edge)", |b| {
        b.iter(|| black_box(keys.sign(black_box(&env))))
    });
    let header = keys.sign(&env);
    c.bench_function("envelope verify (upstream)", |b| {
        b.iter(|| {
            black_box(
                keys.verify(Some(black_box(&header)), "GET", "/products/P0000001")
                    .is_ok(),
            )
        })
    });
    // For scale: a full signature check (what the cache saves; 64 tokens rotate through
    // a 16-entry cache, so most checks miss it).
    c.bench_function("uncached EdDSA verification", |b| {
        let cold = Jwt::new(
            JwtSettings {
                cache_entries: 16,
                ..JwtSettings::default()
            },
            "k9",
        )
        .unwrap();
        let tokens: Vec<String> = (0..64)
            .map(|i| cold.issue(&format!("u{i}"), "s").unwrap())
            .collect();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % tokens.len();
            black_box(cold.verify(&tokens[i]).is_ok())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = hot_path
}
criterion_main!(benches);
