//! Passwords and tokens never reach the log: the whole edge runs a signup, logins, token
//! use, refresh and reuse under a process-wide log subscriber that captures every line.
//! (Its own test binary, so no other test's log calls race the subscriber.)

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{PASSWORD, config, field, harness};
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn passwords_and_tokens_never_reach_the_log() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let h = harness(config()).await;
    let s = h.signup("ivan@example.com").await;
    let access = field(&s, "access_token");
    let refresh = field(&s, "refresh_token");
    h.me(&access).await;
    h.call(
        "POST",
        "/auth/login",
        &[],
        Some(json!({"email": "ivan@example.com", "password": "wrong password!"})),
    )
    .await;
    h.call(
        "GET",
        "/auth/me",
        &[("authorization", "Bearer not.a.token")],
        None,
    )
    .await;
    let r = h
        .call(
            "POST",
            "/auth/refresh",
            &[],
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    let reused = h
        .call(
            "POST",
            "/auth/refresh",
            &[],
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(reused.problem(), "revoked");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("session started"),
        "the log was captured: {text}"
    );
    for secret in [
        PASSWORD,
        "wrong password!",
        &access,
        &refresh,
        r.body["refresh_token"].as_str().unwrap(),
        r.body["access_token"].as_str().unwrap(),
        "not.a.token",
    ] {
        assert!(!text.contains(secret), "{secret:?} appeared in the log");
    }
}
