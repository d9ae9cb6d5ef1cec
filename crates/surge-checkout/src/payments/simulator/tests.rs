//! Unit tests of the provider simulator: replay by key, injected faults, seeded rates,
//! latency on paused time, and a ledger file that outlives the simulator.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use super::*;

async fn sim(config: SimulatorConfig) -> ProviderSimulator {
    ProviderSimulator::new(config).await.unwrap()
}

fn seeded() -> SimulatorConfig {
    SimulatorConfig {
        seed: Some(7),
        ..SimulatorConfig::default()
    }
}

#[tokio::test]
async fn same_key_replays_and_another_request_is_rejected() {
    let s = sim(seeded()).await;
    let a = s.authorize("k1", 500, "EUR", "tok_ok").await.unwrap();
    assert_eq!(
        s.authorize("k1", 500, "EUR", "tok_ok").await.unwrap(),
        a,
        "replayed"
    );
    assert!(matches!(
        s.authorize("k1", 501, "EUR", "tok_ok").await,
        Err(ProviderError::Rejected(_))
    ));
    assert_eq!(s.ledger().await.unwrap().len(), 1);
    assert_eq!(s.find("k1").await.unwrap(), Some(a.clone()));

    s.capture("c1", &a.auth_ref, 500).await.unwrap();
    s.capture("c1", &a.auth_ref, 500).await.unwrap();
    // Another key for the same capture: a second capture is refused.
    assert!(matches!(
        s.capture("c2", &a.auth_ref, 500).await,
        Err(ProviderError::Rejected(_))
    ));
    let e = s.ledger_entry("k1").await.unwrap().unwrap();
    assert_eq!((e.captured_minor, e.captures), (500, 1));
    assert_eq!(s.recorded_requests().await.unwrap(), 2);
}

#[tokio::test]
async fn operations_follow_the_authorization() {
    let s = sim(seeded()).await;
    let a = s
        .authorize("a", 100, "EUR", "tok_ok")
        .await
        .unwrap()
        .auth_ref;
    assert!(matches!(
        s.refund("r0", &a, 10).await,
        Err(ProviderError::Rejected(_))
    ));
    assert!(matches!(
        s.capture("c", &a, 101).await,
        Err(ProviderError::Rejected(_))
    ));
    s.capture("c", &a, 80).await.unwrap();
    assert!(matches!(
        s.void("v", &a).await,
        Err(ProviderError::Rejected(_))
    ));
    s.refund("r0", &a, 50).await.unwrap();
    assert!(matches!(
        s.refund("r1", &a, 31).await,
        Err(ProviderError::Rejected(_))
    ));
    s.refund("r1", &a, 30).await.unwrap();
    let e = s.ledger_entry("a").await.unwrap().unwrap();
    assert_eq!(
        (
            e.captured_minor,
            e.refunded_minor,
            e.refunds,
            e.voided_minor
        ),
        (80, 80, 2, 0)
    );

    let b = s
        .authorize("b", 70, "EUR", "tok_ok")
        .await
        .unwrap()
        .auth_ref;
    s.void("vb", &b).await.unwrap();
    s.void("vb", &b).await.unwrap();
    assert!(matches!(
        s.capture("cb", &b, 70).await,
        Err(ProviderError::Rejected(_))
    ));
    assert!(matches!(
        s.void("vb2", &b).await,
        Err(ProviderError::Rejected(_))
    ));
    assert_eq!(s.ledger_entry("b").await.unwrap().unwrap().voided_minor, 70);
    assert!(matches!(
        s.capture("cx", "nope", 1).await,
        Err(ProviderError::Rejected(_))
    ));
}

#[tokio::test]
async fn declines_by_token_and_by_rate() {
    let s = sim(seeded()).await;
    let declined = |r: Result<ProviderAuth, ProviderError>| match r {
        Err(ProviderError::Declined { reason }) => reason,
        other => panic!("expected a decline, got {other:?}"),
    };
    assert_eq!(
        declined(s.authorize("k", 5, "EUR", DECLINE_TOKEN).await),
        "card_declined"
    );
    // Replayed, not authorized on a second try.
    assert_eq!(
        declined(s.authorize("k", 5, "EUR", DECLINE_TOKEN).await),
        "card_declined"
    );
    assert_eq!(s.find("k").await.unwrap(), None);

    let s = sim(SimulatorConfig {
        decline_rate: 1.0,
        ..seeded()
    })
    .await;
    assert_eq!(
        declined(s.authorize("k", 5, "EUR", "tok_ok").await),
        "insufficient_funds"
    );
    assert!(s.ledger().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_timeout_has_no_effect() {
    let s = sim(seeded()).await;
    s.script([Fault::Timeout, Fault::Unavailable]);
    assert_eq!(
        s.authorize("k", 5, "EUR", "tok_ok").await,
        Err(ProviderError::Timeout)
    );
    assert!(matches!(
        s.authorize("k", 5, "EUR", "tok_ok").await,
        Err(ProviderError::Unavailable(_))
    ));
    assert_eq!(s.find("k").await.unwrap(), None);
    assert_eq!(s.recorded_requests().await.unwrap(), 0);
    // The key is still free for any request.
    s.authorize("k", 6, "EUR", "tok_ok").await.unwrap();
    assert_eq!(s.ledger_entry("k").await.unwrap().unwrap().amount_minor, 6);
}

#[tokio::test]
async fn a_lost_reply_took_effect() {
    let s = sim(seeded()).await;
    s.script([Fault::LostReply]);
    assert_eq!(
        s.authorize("k", 5, "EUR", "tok_ok").await,
        Err(ProviderError::Timeout)
    );
    let entry = s
        .ledger_entry("k")
        .await
        .unwrap()
        .expect("authorized anyway");
    let found = s.find("k").await.unwrap().expect("found by its key");
    assert_eq!(found.auth_ref, entry.auth_ref);
    // The retry replays it: still one authorization.
    assert_eq!(s.authorize("k", 5, "EUR", "tok_ok").await.unwrap(), found);
    assert_eq!(s.ledger().await.unwrap().len(), 1);

    s.script([Fault::LostReply]);
    assert_eq!(
        s.capture("c", &found.auth_ref, 5).await,
        Err(ProviderError::Timeout)
    );
    assert_eq!(s.ledger_entry("k").await.unwrap().unwrap().captures, 1);
    s.capture("c", &found.auth_ref, 5).await.unwrap();
    assert_eq!(s.ledger_entry("k").await.unwrap().unwrap().captures, 1);
}

/// What each of `n` authorizations did, under the seeded rates.
async fn outcomes(config: SimulatorConfig, n: usize) -> Vec<&'static str> {
    let s = sim(config).await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("k{i}");
        let r = s.authorize(&key, 100, "EUR", "tok_ok").await;
        let recorded = s.ledger_entry(&key).await.unwrap().is_some();
        out.push(match (r, recorded) {
            (Ok(_), true) => "authorized",
            (Err(ProviderError::Declined { .. }), false) => "declined",
            (Err(ProviderError::Timeout), false) => "timeout",
            (Err(ProviderError::Timeout), true) => "lost reply",
            other => panic!("unexpected {other:?}"),
        });
    }
    out
}

#[tokio::test]
async fn seeded_rates_are_reproducible() {
    let config = SimulatorConfig {
        decline_rate: 0.2,
        timeout_rate: 0.2,
        lost_reply_rate: 0.2,
        seed: Some(42),
        ..SimulatorConfig::default()
    };
    let first = outcomes(config.clone(), 200).await;
    assert_eq!(first, outcomes(config.clone(), 200).await, "same seed");
    for kind in ["authorized", "declined", "timeout", "lost reply"] {
        assert!(first.contains(&kind), "{kind} never happened");
    }
    let other = outcomes(
        SimulatorConfig {
            seed: Some(43),
            ..config
        },
        200,
    )
    .await;
    assert_ne!(first, other, "another seed, other draws");

    // Random faults can be switched off; scripted ones still apply.
    let s = sim(SimulatorConfig {
        timeout_rate: 1.0,
        ..seeded()
    })
    .await;
    assert_eq!(
        s.find("k").await,
        Err(ProviderError::Timeout),
        "always times out"
    );
    s.set_random_faults(false);
    assert_eq!(s.find("k").await, Ok(None));
    s.script([Fault::Timeout]);
    assert_eq!(s.find("k").await, Err(ProviderError::Timeout));
}

#[tokio::test]
async fn latency_runs_on_tokio_time() {
    let s = sim(SimulatorConfig {
        latency_ms: 250,
        ..seeded()
    })
    .await;
    // Paused after the ledger is open: every wait below is virtual.
    tokio::time::pause();
    let mut waited = Vec::new();
    for i in 0..20 {
        let started = tokio::time::Instant::now();
        s.authorize(&format!("k{i}"), 5, "EUR", "tok_ok")
            .await
            .unwrap();
        waited.push(started.elapsed());
    }
    assert!(waited.iter().all(|w| *w <= Duration::from_millis(500)));
    assert!(
        waited.iter().any(|w| !w.is_zero()),
        "latency was added: {waited:?}"
    );
}

#[tokio::test]
async fn the_ledger_file_outlives_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let config = SimulatorConfig {
        ledger: Some(dir.path().join("psp.db")),
        ..seeded()
    };
    let auth = {
        let s = sim(config.clone()).await;
        let a = s.authorize("k", 900, "EUR", "tok_ok").await.unwrap();
        s.capture("c", &a.auth_ref, 900).await.unwrap();
        a
    };
    let s = sim(config).await;
    assert_eq!(
        s.ledger().await.unwrap(),
        [LedgerEntry {
            authorize_key: "k".into(),
            auth_ref: auth.auth_ref.clone(),
            amount_minor: 900,
            currency: "EUR".into(),
            captured_minor: 900,
            voided_minor: 0,
            refunded_minor: 0,
            captures: 1,
            refunds: 0,
        }]
    );
    // Keys are remembered across the restart.
    assert_eq!(s.authorize("k", 900, "EUR", "tok_ok").await.unwrap(), auth);
    s.capture("c", &auth.auth_ref, 900).await.unwrap();
    assert_eq!(s.ledger_entry("k").await.unwrap().unwrap().captures, 1);
}

#[test]
fn config_defaults_and_validation() {
    let c: SimulatorConfig = serde_json::from_str(r#"{"seed": 3, "timeout_rate": 0.5}"#).unwrap();
    assert_eq!(
        c,
        SimulatorConfig {
            seed: Some(3),
            timeout_rate: 0.5,
            ..SimulatorConfig::default()
        }
    );
    assert_eq!(c.latency_ms, 0);
    assert!(c.ledger.is_none());
    assert!(serde_json::from_str::<SimulatorConfig>(r#"{"timeout": 1}"#).is_err());
    let bad = |c: SimulatorConfig| match c.validate() {
        Err(SimulatorError::Config(msg)) => msg,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert!(
        bad(SimulatorConfig {
            decline_rate: 1.5,
            ..SimulatorConfig::default()
        })
        .contains("decline_rate")
    );
    assert!(
        bad(SimulatorConfig {
            timeout_rate: 0.6,
            lost_reply_rate: 0.6,
            ..SimulatorConfig::default()
        })
        .contains("lost_reply_rate")
    );
    assert!(SimulatorConfig::default().validate().is_ok());
}
