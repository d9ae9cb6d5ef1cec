//! The security matrix of issue 3 through the whole edge: every bad credential is a 401
//! and the upstream is never called. Tokens are forged with the edge's real stored key
//! where the attack needs a valid signature over something else.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{config, field, harness};
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(user: &str, session: &str) -> Value {
    let t = now();
    json!({"sub": user, "sid": session, "iss": "surge", "aud": "surge",
           "iat": t, "nbf": t, "exp": t + 600})
}

fn raw(header: &Value, claims: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

#[tokio::test]
async fn every_bad_credential_is_a_401_and_never_reaches_the_upstream() {
    let h = harness(config()).await;
    let s = h.signup("mallory@example.com").await;
    let (user, session) = (field(&s, "user_id"), field(&s, "session_id"));
    let good = field(&s, "access_token");
    let key = h.store.signing_keys("jwt").await.unwrap().pop().unwrap();
    let sign = |kid: &str, c: &Value| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, c, &EncodingKey::from_ed_der(&key.secret)).unwrap()
    };
    let jwks = h
        .call("GET", "/.well-known/jwks.json", &[], None)
        .await
        .body;
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = good.split('.').collect();

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    let c = claims(&user, &session);
    cases.push((
        "alg none",
        raw(&json!({"alg": "none", "kid": key.kid}), &c, ""),
        "unauthorized",
    ));
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(key.kid.clone());
    for secret in [public_x.as_bytes().to_vec(), B64.decode(&public_x).unwrap()] {
        cases.push((
            "HS256 with the public key as secret",
            jsonwebtoken::encode(&hs, &c, &EncodingKey::from_secret(&secret)).unwrap(),
            "unauthorized",
        ));
    }
    let other = surge_edge::auth::jwt::generate_pkcs8().unwrap();
    let mut unknown = Header::new(Algorithm::EdDSA);
    unknown.kid = Some("unknown-kid".into());
    cases.push((
        "unknown kid",
        jsonwebtoken::encode(&unknown, &c, &EncodingKey::from_ed_der(&other)).unwrap(),
        "unauthorized",
    ));
    cases.push((
        "kid with a path",
        sign("../../etc/passwd", &c),
        "unauthorized",
    ));
    cases.push(("kid with SQL", sign("1' OR '1'='1", &c), "unauthorized"));
    for (what, name, value) in [
        ("wrong aud", "aud", json!("someone-else")),
        ("wrong iss", "iss", json!("evil")),
        ("nbf beyond leeway", "nbf", json!(now() + 60)),
    ] {
        let mut c = claims(&user, &session);
        c[name] = value;
        cases.push((what, sign(&key.kid, &c), "unauthorized"));
    }
    for missing in ["aud", "iss", "exp", "nbf", "iat", "sub"] {
        let mut c = claims(&user, &session);
        c.as_object_mut().unwrap().remove(missing);
        cases.push((
            "a required claim missing",
            sign(&key.kid, &c),
            "unauthorized",
        ));
    }
    let mut expired = claims(&user, &session);
    expired["exp"] = json!(now() - 3600);
    cases.push((
        "expired beyond the grace, no refresh cookie",
        sign(&key.kid, &expired),
        "token-expired",
    ));
    let mut admin = claims("u_admin", &session);
    admin["sub"] = json!("u_admin");
    cases.push((
        "tampered payload",
        format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(admin.to_string()),
            parts[2]
        ),
        "unauthorized",
    ));
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    cases.push((
        "tampered signature",
        format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig)),
        "unauthorized",
    ));
    let mut big = claims(&user, &session);
    big["pad"] = json!("x".repeat(5000));
    cases.push(("oversized", sign(&key.kid, &big), "unauthorized"));

    for (what, token, expected) in &cases {
        let r = h
            .call(
                "GET",
                "/products/P1",
                &[("authorization", &format!("Bearer {token}"))],
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.problem()),
            (StatusCode::UNAUTHORIZED, *expected),
            "{what}"
        );
    }
    assert!(
        h.seen.lock().unwrap().is_empty(),
        "no bad credential reached the upstream"
    );

    // A revoked session, and a bearer that is not a token at all.
    let r = h
        .call(
            "POST",
            "/auth/logout",
            &[("authorization", &format!("Bearer {good}"))],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    for (token, expected) in [(good.as_str(), "revoked"), ("garbage", "unauthorized")] {
        let r = h
            .call(
                "GET",
                "/products/P1",
                &[("authorization", &format!("Bearer {token}"))],
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.problem()),
            (StatusCode::UNAUTHORIZED, expected)
        );
    }
    let r = h
        .call(
            "GET",
            "/products/P1",
            &[("authorization", "Basic dXNlcjpwdw==")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        h.seen.lock().unwrap().is_empty(),
        "no bad credential reached the upstream"
    );
    // A good token does reach it (the check above is not vacuous).
    let s = h.signup("trent@example.com").await;
    let r = h
        .call(
            "GET",
            "/products/P1",
            &[(
                "authorization",
                &format!("Bearer {}", field(&s, "access_token")),
            )],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.seen.lock().unwrap().len(), 1);
}
