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
