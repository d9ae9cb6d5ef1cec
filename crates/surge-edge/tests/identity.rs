//! The whole edge ([`Edge::build`]) over a real SQLite identity store and an in-process
//! upstream: accounts, tokens, refresh rotation and reuse, silent refresh, revocation,
//! profiles in the Envelope, brute-force limits. (No secrets in the logs:
//! `tests/log_hygiene.rs`, in its own process so its log subscriber sees everything.)

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use common::{ADMIN, PASSWORD, config, field, harness};
use http::{Request, StatusCode};
use serde_json::{Value, json};
use surge_edge::identity::IdentityConfig;
use surge_edge::pipeline::dispatch::upstream;
use surge_edge::{Edge, EdgeConfig};
use surge_http::admin::AdminToken;
use surge_http::envelope;
use surge_store::IdentityStore;
use tower::ServiceExt;

#[tokio::test]
async fn signup_login_me_and_profiles_in_the_envelope() {
    let h = harness(config()).await;
    let s = h.signup(" Alice@Example.com ").await;
    assert!(
        s.cookies()
            .iter()
            .any(|c| c.starts_with("surge_refresh=rt_"))
    );
    let dup = h
        .call(
            "POST",
            "/auth/signup",
            &[],
            Some(json!({"email": "alice@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(
        (dup.status, dup.problem()),
        (StatusCode::CONFLICT, "conflict")
    );
    let short = h
        .call(
            "POST",
            "/auth/signup",
            &[],
            Some(json!({"email": "bob@example.com", "password": "short"})),
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(short.body["errors"][0]["pointer"], "/password");

    let login = h
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(json!({"email": "alice@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 900);
    let user = field(&login, "user_id");
    let access = field(&login, "access_token");
    let me = h.me(&access).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user_id"], user.as_str());
    assert_eq!(me.body["session_id"], login.body["session_id"]);
    assert_eq!(
        (me.body["market"].as_str(), me.body["tier"].as_str()),
        (Some("DE"), Some("free"))
    );

    // An operator sets cohorts; the next Envelope carries them.
    let admin = format!("Bearer {ADMIN}");
    let put = h
        .call(
            "PUT",
            &format!("/admin/users/{user}/profile"),
            &[("authorization", &admin)],
            Some(json!({"market": "fr", "tier": "plus", "cohorts": ["sneaker-fan", "expiring-subscription"]})),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{:?}", put.body);
    let me = h.me(&access).await;
    assert_eq!(me.body["market"], "FR");
    assert_eq!(me.body["tier"], "plus");
    assert_eq!(
        me.body["cohorts"],
        json!(["sneaker-fan", "expiring-subscription"])
    );
    let bad = h
        .call(
            "PUT",
            &format!("/admin/users/{user}/profile"),
            &[("authorization", &admin)],
            Some(json!({"market": "fr", "tier": "plus", "cohorts": ["no spaces"]})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let anon = h
        .call(
            "PUT",
            &format!("/admin/users/{user}/profile"),
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);

    // The access cookie works like the bearer header (browsers).
    let by_cookie = h
        .call(
            "GET",
            "/auth/me",
            &[("cookie", &format!("surge_access={access}"))],
            None,
        )
        .await;
    assert_eq!(by_cookie.status, StatusCode::OK);

    // The public key set names the key that signed the token.
    let jwks = h.call("GET", "/.well-known/jwks.json", &[], None).await;
    let header: Value =
        serde_json::from_slice(&base64_decode(access.split('.').next().unwrap())).unwrap();
    assert!(
        jwks.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == header["kid"] && k["alg"] == "EdDSA")
    );

    // Anonymous product reads pass without an Envelope; signed-in ones carry one.
    let anon = h.call("GET", "/products/P1", &[], None).await;
    assert_eq!(anon.body["envelope"], false);
    let signed = h
        .call(
            "GET",
            "/products/P1",
            &[("authorization", &format!("Bearer {access}"))],
            None,
        )
        .await;
    assert_eq!(signed.body["envelope"], true);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let h = harness(config()).await;
    let s = h.signup("carol@example.com").await;
    let r1 = field(&s, "refresh_token");
    let access1 = field(&s, "access_token");
    let next = h
        .call(
            "POST",
            "/auth/refresh",
            &[],
            Some(json!({"refresh_token": r1})),
        )
        .await;
    assert_eq!(next.status, StatusCode::OK);
    let r2 = field(&next, "refresh_token");
    assert_ne!(r1, r2);
    // The refresh cookie alone works too.
    let by_cookie = h
        .call(
            "POST",
            "/auth/refresh",
            &[("cookie", &format!("surge_refresh={r2}"))],
            None,
        )
        .await;
    assert_eq!(by_cookie.status, StatusCode::OK);
    let r3 = field(&by_cookie, "refresh_token");
    // r1 again: reuse. The session is revoked, every token of it is dead.
    let reuse = h
        .call(
            "POST",
            "/auth/refresh",
            &[],
            Some(json!({"refresh_token": r1})),
        )
        .await;
    assert_eq!(
        (reuse.status, reuse.problem()),
        (StatusCode::UNAUTHORIZED, "revoked")
    );
    let me = h.me(&access1).await;
    assert_eq!(
        (me.status, me.problem()),
        (StatusCode::UNAUTHORIZED, "revoked")
    );
    let after = h
        .call(
            "POST",
            "/auth/refresh",
            &[],
            Some(json!({"refresh_token": r3})),
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let garbage = h
        .call(
            "POST",
            "/auth/refresh",
            &[],
            Some(json!({"refresh_token": "rt_nope"})),
        )
        .await;
    assert_eq!(
        (garbage.status, garbage.problem()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
}

#[tokio::test]
async fn parallel_refreshes_within_the_window_share_one_rotation() {
    let h = harness(IdentityConfig::default()).await;
    let s = h.signup("dave@example.com").await;
    let r1 = field(&s, "refresh_token");
    let a = h
        .call(
            "POST",
            "/auth/refresh",
            &[],
            Some(json!({"refresh_token": r1})),
        )
        .await;
    let b = h
        .call(
            "POST",
            "/auth/refresh",
            &[],
            Some(json!({"refresh_token": r1})),
        )
        .await;
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(
        a.body["refresh_token"], b.body["refresh_token"],
        "same answer, no reuse"
    );
    assert_eq!(
        h.me(&field(&b, "access_token")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn logout_and_admin_revocations_apply_at_once() {
    let h = harness(config()).await;
    let s1 = h.signup("erin@example.com").await;
    let a1 = field(&s1, "access_token");
    let user = field(&s1, "user_id");
    let logout = h
        .call(
            "POST",
            "/auth/logout",
            &[("authorization", &format!("Bearer {a1}"))],
            None,
        )
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert!(logout.cookies().iter().all(|c| c.contains("Max-Age=0")));
    let me = h.me(&a1).await;
    assert_eq!(
        (me.status, me.problem()),
        (StatusCode::UNAUTHORIZED, "revoked")
    );

    let login = |email: &'static str| async move { json!({"email": email, "password": PASSWORD}) };
    let s2 = h
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(login("erin@example.com").await),
        )
        .await;
    let s3 = h
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(login("erin@example.com").await),
        )
        .await;
    let (a2, a3) = (field(&s2, "access_token"), field(&s3, "access_token"));
    let admin = format!("Bearer {ADMIN}");
    let sid2 = field(&s2, "session_id");
    let r = h
        .call(
            "POST",
            &format!("/admin/sessions/{sid2}/revoke"),
            &[("authorization", &admin)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.me(&a2).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.me(&a3).await.status,
        StatusCode::OK,
        "other sessions untouched"
    );
    let missing = h
        .call(
            "POST",
            "/admin/sessions/nope/revoke",
            &[("authorization", &admin)],
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let ban = h
        .call(
            "POST",
            &format!("/admin/users/{user}/revoke"),
            &[("authorization", &admin)],
            None,
        )
        .await;
    assert_eq!(ban.status, StatusCode::OK);
    let me = h.me(&a3).await;
    assert_eq!(
        (me.status, me.problem()),
        (StatusCode::UNAUTHORIZED, "revoked")
    );
    let again = h
        .call(
            "POST",
            "/auth/login",
            &[],
            Some(login("erin@example.com").await),
        )
        .await;
    assert_eq!(
        (again.status, again.problem()),
        (StatusCode::FORBIDDEN, "forbidden")
    );

    // A second edge on the same store learns the revocations from the log.
    let other = Edge::build(
        &EdgeConfig::default(),
        h.store.clone(),
        AdminToken::new(ADMIN),
        HashMap::from([("catalog".to_owned(), upstream(Router::new()))]),
    )
    .await
    .unwrap();
    let mut req = Request::get("/auth/me")
        .header("authorization", format!("Bearer {a3}"))
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo::<SocketAddr>("192.0.2.8:1".parse().unwrap()));
    let r = other.service.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// A token the edge issued `age_secs` ago with a 900 s life (signed with its stored key).
async fn aged_token(store: &dyn IdentityStore, user: &str, session: &str, age_secs: u64) -> String {
    let key = store.signing_keys("jwt").await.unwrap().pop().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = now - age_secs;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key.kid);
    jsonwebtoken::encode(
        &header,
        &json!({"sub": user, "sid": session, "iss": "surge", "aud": "surge",
                "iat": iat, "nbf": iat, "exp": iat + 900}),
        &jsonwebtoken::EncodingKey::from_ed_der(&key.secret),
    )
    .unwrap()
}

#[tokio::test]
async fn expired_tokens_refresh_silently_within_the_grace() {
    let h = harness(config()).await;
    let s = h.signup("frank@example.com").await;
    let (user, session) = (field(&s, "user_id"), field(&s, "session_id"));
    let refresh = field(&s, "refresh_token");
    // Expired 100 s ago (grace 300 s), with the refresh cookie: served, new token handed out.
    let expired = aged_token(&*h.store, &user, &session, 1000).await;
    let r = h
        .call(
            "GET",
            "/auth/me",
            &[
                ("authorization", &format!("Bearer {expired}")),
                ("cookie", &format!("surge_refresh={refresh}")),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["user_id"], user.as_str());
    let fresh = r.headers["x-surge-access-token"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(r.headers["cache-control"], "private, no-store");
    assert!(r.cookies().iter().any(|c| c.starts_with("surge_access=")));
    assert!(
        r.cookies()
            .iter()
            .any(|c| c.starts_with("surge_refresh=rt_"))
    );
    assert_eq!(h.me(&fresh).await.status, StatusCode::OK);

    // Without the cookie: told to refresh.
    let r = h.me(&expired).await;
    assert_eq!(
        (r.status, r.problem()),
        (StatusCode::UNAUTHORIZED, "token-expired")
    );
    // Beyond the grace, even with a cookie: told to refresh, nothing rotated.
    let old = aged_token(&*h.store, &user, &session, 1300).await;
    let r = h
        .call(
            "GET",
            "/auth/me",
            &[
                ("authorization", &format!("Bearer {old}")),
                ("cookie", "surge_refresh=rt_whatever"),
            ],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.problem()),
        (StatusCode::UNAUTHORIZED, "token-expired")
    );
    // The refresh token used by the silent refresh is spent: presenting it is reuse.
    let reuse = h
        .call(
            "POST",
            "/auth/refresh",
            &[],
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(reuse.problem(), "revoked");
}

#[tokio::test]
async fn login_brute_force_is_limited_per_account() {
    let h = harness(config()).await;
    h.signup("grace@example.com").await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = h
            .call(
                "POST",
                "/auth/login",
                &[],
                Some(json!({"email": "grace@example.com", "password": "wrong password!"})),
            )
            .await;
        statuses.push(r.status);
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.problem(), "too-many-requests");
            assert!(r.headers.contains_key("retry-after"));
        }
    }
    // The signup spent one attempt of the account's five per minute.
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
        ]
    );
}

#[tokio::test]
async fn envelopes_sent_straight_to_an_upstream_are_refused() {
    let h = harness(config()).await;
    let s = h.signup("heidi@example.com").await;
    let access = field(&s, "access_token");
    h.call(
        "GET",
        "/products/P9",
        &[("authorization", &format!("Bearer {access}"))],
        None,
    )
    .await;
    let (_, captured) = h.seen.lock().unwrap().last().cloned().unwrap();
    assert!(captured.starts_with("v1."));
    // The identity upstream, called directly with the captured (genuine) Envelope for
    // another request: refused, it was issued for GET /products/P9.
    let keys = h.edge.identity.keys().envelope();
    let direct =
        surge_edge::identity::http::router(h.edge.identity.clone(), keys, AdminToken::new(ADMIN));
    let r = direct
        .clone()
        .oneshot(
            Request::get("/auth/me")
                .header(envelope::HEADER, &captured)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Forged with another key: refused.
    let forged = surge_http::envelope::EnvelopeKeys::new(
        "e1",
        [("e1", b"an attacker's key of 32 bytes!!!" as &[u8])],
        std::time::Duration::from_secs(30),
        std::time::Duration::from_secs(5),
    )
    .unwrap()
    .sign(&surge_http::envelope::Envelope {
        user_id: "u_victim".into(),
        issued_at_ms: envelope::now_ms(),
        method: "GET".into(),
        path: "/auth/me".into(),
        ..Default::default()
    });
    let r = direct
        .oneshot(
            Request::get("/auth/me")
                .header(envelope::HEADER, forged)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_default_per_ip_rule_limits_auth_routes_before_any_check() {
    let h = harness(config()).await;
    let mut allowed = 0;
    let mut refused = None;
    for _ in 0..200 {
        let r = h
            .call(
                "POST",
                "/auth/refresh",
                &[],
                Some(json!({"refresh_token": "rt_guess"})),
            )
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(
            r.headers.contains_key("ratelimit"),
            "allowed answers carry RateLimit"
        );
        allowed += 1;
    }
    // The burst of 20 (plus whatever refilled at 10/s meanwhile) passes, then 429.
    let r = refused.expect("the rule never refused");
    assert!(allowed >= 20, "{allowed}");
    assert_eq!(r.problem(), "too-many-requests");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(r.headers["ratelimit-policy"], "\"auth-per-ip\";q=10;w=1");
    // Catalog reads are another class: not limited by it.
    assert_eq!(
        h.call("GET", "/products/P1", &[], None).await.status,
        StatusCode::OK
    );
}
