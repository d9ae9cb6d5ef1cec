//! One conformance suite for every [`IdentityStore`] backend (SQLite always; PostgreSQL
//! with `--features pg-tests` and `SURGE_TEST_POSTGRES_URL`, failing loudly without it).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::sync::Arc;

use surge_store::{
    IdentityStore, NewAccount, NewSession, Profile, Refresh, RevocationKind, SigningKey,
    StoreError, StoreOptions, Switch,
};

mod common;

type Backend = common::Backend<dyn IdentityStore>;

async fn sqlite() -> Backend {
    common::sqlite("identity.db", |url, options| async move {
        surge_store::open_identity(&url, &options).await
    })
    .await
}

#[cfg(feature = "pg-tests")]
async fn postgres() -> Backend {
    common::postgres(|url, options| async move { surge_store::open_identity(&url, &options).await })
        .await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn account(id: &str, email: &str) -> NewAccount {
    NewAccount {
        id: id.into(),
        email: email.into(),
        password_hash: format!("$argon2id$hash-of-{id}"),
        profile: Profile {
            market: "de".into(),
            tier: "free".into(),
            cohorts: vec!["sneaker-fan".into(), "early".into()],
        },
    }
}

fn session(id: &str, user: &str, refresh: &str) -> NewSession {
    NewSession {
        id: id.into(),
        user_id: user.into(),
        expires_at_ms: now_ms() + 3_600_000,
        refresh_hash: refresh.into(),
    }
}

async fn accounts_and_profiles(s: &dyn IdentityStore) {
    s.create_account(&account("u1", "a@example.com"))
        .await
        .unwrap();
    let dup = s.create_account(&account("u2", "a@example.com")).await;
    assert!(matches!(dup, Err(StoreError::Duplicate)), "{dup:?}");
    let dup = s.create_account(&account("u1", "b@example.com")).await;
    assert!(matches!(dup, Err(StoreError::Duplicate)), "{dup:?}");
    let a = s.account_by_email("a@example.com").await.unwrap().unwrap();
    assert_eq!(a.id, "u1");
    assert_eq!(a.password_hash, "$argon2id$hash-of-u1");
    assert_eq!(a.profile.cohorts, vec!["sneaker-fan", "early"]);
    assert_eq!(a.banned_at_ms, None);
    assert!(
        s.account_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let p = Profile {
        market: "fr".into(),
        tier: "plus".into(),
        cohorts: vec![],
    };
    assert!(s.set_profile("u1", &p).await.unwrap());
    assert!(!s.set_profile("nobody", &p).await.unwrap());
    assert_eq!(s.account("u1").await.unwrap().unwrap().profile, p);
    assert!(s.account("nobody").await.unwrap().is_none());
}

async fn refresh_rotation_and_reuse(s: &dyn IdentityStore) {
    s.create_account(&account("u1", "a@example.com"))
        .await
        .unwrap();
    s.create_session(&session("s1", "u1", "h1")).await.unwrap();
    let rotated = Refresh::Rotated {
        session_id: "s1".into(),
        user_id: "u1".into(),
    };
    assert_eq!(s.rotate_refresh("h1", "h2").await.unwrap(), rotated);
    assert_eq!(s.rotate_refresh("h2", "h3").await.unwrap(), rotated);
    assert!(!s.is_revoked("s1", "u1").await.unwrap());
    assert_eq!(
        s.rotate_refresh("unknown", "x").await.unwrap(),
        Refresh::Invalid
    );
    // h1 was used: presenting it again revokes the whole family.
    let Refresh::Reused(entry) = s.rotate_refresh("h1", "h4").await.unwrap() else {
        panic!("reuse not detected");
    };
    assert_eq!(entry.kind, RevocationKind::Session);
    assert_eq!(entry.subject, "s1");
    assert_eq!(entry.reason, "refresh-reuse");
    assert!(s.is_revoked("s1", "u1").await.unwrap());
    // The current token of the family is dead too, and nothing was issued for h4.
    assert_eq!(
        s.rotate_refresh("h3", "h5").await.unwrap(),
        Refresh::Invalid
    );
    assert_eq!(
        s.rotate_refresh("h4", "h6").await.unwrap(),
        Refresh::Invalid
    );
    let log = s.revocations(0, 0, 100).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
}

async fn one_winner_among_concurrent_rotations(s: Arc<dyn IdentityStore>) {
    s.create_account(&account("u1", "a@example.com"))
        .await
        .unwrap();
    s.create_session(&session("s1", "u1", "h")).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.rotate_refresh("h", &format!("new{i}")).await })
        })
        .collect();
    let mut rotated = 0;
    for t in tasks {
        if let Refresh::Rotated { .. } = t.await.unwrap().unwrap() {
            rotated += 1;
        }
    }
    assert_eq!(rotated, 1, "exactly one rotation of one token wins");
    assert!(
        s.is_revoked("s1", "u1").await.unwrap(),
        "the losers are reuse"
    );
}

async fn revoking_sessions_and_users(s: &dyn IdentityStore) {
    s.create_account(&account("u1", "a@example.com"))
        .await
        .unwrap();
    s.create_account(&account("u2", "b@example.com"))
        .await
        .unwrap();
    s.create_session(&session("s1", "u1", "h1")).await.unwrap();
    s.create_session(&session("s2", "u1", "h2")).await.unwrap();
    s.create_session(&session("s3", "u2", "h3")).await.unwrap();
    assert_eq!(s.revoke_session("nope", "logout").await.unwrap(), None);
    let first = s.revoke_session("s1", "logout").await.unwrap().unwrap();
    assert!(first.seq > 0);
    let again = s.revoke_session("s1", "logout").await.unwrap().unwrap();
    assert_eq!(again.subject, "s1");
    assert_eq!(
        s.revocations(0, 0, 100).await.unwrap().len(),
        1,
        "logged once"
    );
    assert!(s.is_revoked("s1", "u1").await.unwrap());
    assert!(!s.is_revoked("s2", "u1").await.unwrap());
    assert_eq!(s.rotate_refresh("h1", "x").await.unwrap(), Refresh::Invalid);

    assert_eq!(s.revoke_user("nobody", "admin").await.unwrap(), None);
    let ban = s.revoke_user("u1", "admin").await.unwrap().unwrap();
    assert_eq!(ban.kind, RevocationKind::User);
    assert!(ban.seq > first.seq);
    assert!(s.is_revoked("s2", "u1").await.unwrap());
    assert!(
        s.is_revoked("any-session", "u1").await.unwrap(),
        "a ban covers every session"
    );
    assert_eq!(s.rotate_refresh("h2", "y").await.unwrap(), Refresh::Invalid);
    assert!(
        s.account("u1")
            .await
            .unwrap()
            .unwrap()
            .banned_at_ms
            .is_some()
    );
    assert!(!s.is_revoked("s3", "u2").await.unwrap(), "others untouched");

    let after = s.revocations(first.seq, 0, 100).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].subject, "u1");
    assert!(
        s.revocations(0, now_ms() + 60_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.revocations(0, 0, 1).await.unwrap().len(), 1, "limit");
}

async fn expired_sessions_and_pruning(s: &dyn IdentityStore) {
    s.create_account(&account("u1", "a@example.com"))
        .await
        .unwrap();
    let mut old = session("old", "u1", "h-old");
    old.expires_at_ms = now_ms() - 1;
    s.create_session(&old).await.unwrap();
    assert_eq!(
        s.rotate_refresh("h-old", "x").await.unwrap(),
        Refresh::Invalid
    );
    s.create_session(&session("live", "u1", "h1"))
        .await
        .unwrap();
    s.rotate_refresh("h1", "h2").await.unwrap();
    s.revoke_session("live", "logout").await.unwrap();
    let n = s.prune(now_ms() + 1).await.unwrap();
    // The revocation entry, the expired session with its token, the used token h1.
    assert_eq!(n, 4, "pruned rows");
    assert!(s.revocations(0, 0, 100).await.unwrap().is_empty());
    assert!(
        s.is_revoked("live", "u1").await.unwrap(),
        "the session row stays"
    );
}

async fn signing_keys(s: &dyn IdentityStore) {
    assert!(s.signing_keys("jwt").await.unwrap().is_empty());
    for (kid, at) in [("k1", 1_000), ("k2", 2_000), ("k3", 3_000)] {
        s.put_signing_key(&SigningKey {
            kid: kid.into(),
            purpose: "jwt".into(),
            secret: vec![1, 2, 3],
            created_at_ms: at,
        })
        .await
        .unwrap();
    }
    s.put_signing_key(&SigningKey {
        kid: "e1".into(),
        purpose: "envelope".into(),
        secret: vec![9; 32],
        created_at_ms: 1_000,
    })
    .await
    .unwrap();
    // A kid that exists is left alone.
    s.put_signing_key(&SigningKey {
        kid: "k1".into(),
        purpose: "jwt".into(),
        secret: vec![7],
        created_at_ms: 9_000,
    })
    .await
    .unwrap();
    let keys = s.signing_keys("jwt").await.unwrap();
    let kids: Vec<_> = keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["k1", "k2", "k3"]);
    assert_eq!(keys[0].secret, vec![1, 2, 3]);
    assert_eq!(s.retire_signing_keys("jwt", 2_500).await.unwrap(), 2);
    assert_eq!(
        s.retire_signing_keys("jwt", 10_000).await.unwrap(),
        0,
        "never the newest"
    );
    assert_eq!(s.signing_keys("jwt").await.unwrap().len(), 1);
    assert_eq!(s.signing_keys("envelope").await.unwrap().len(), 1);
}

async fn kill_switches(s: &dyn IdentityStore) {
    assert!(s.switches(0).await.unwrap().is_empty());
    let before = now_ms();
    let a = s
        .set_switch("route:/products", true, "carousel melts", Some("ops-anna"))
        .await
        .unwrap();
    assert_eq!(
        (
            a.target.as_str(),
            a.off,
            a.reason.as_str(),
            a.actor.as_deref()
        ),
        ("route:/products", true, "carousel melts", Some("ops-anna"))
    );
    assert!(a.seq > 0);
    assert!(a.updated_at_ms >= before && a.updated_at_ms <= now_ms());
    let b = s
        .set_switch("class:browse", true, "drop", None)
        .await
        .unwrap();
    assert!(b.seq > a.seq);
    assert_eq!(s.switches(0).await.unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(s.switches(a.seq).await.unwrap(), vec![b.clone()]);
    assert!(s.switches(b.seq).await.unwrap().is_empty());
    // Switching back on replaces the row (one row per target) with a newer seq.
    let c = s
        .set_switch("route:/products", false, "fixed", None)
        .await
        .unwrap();
    assert!(c.seq > b.seq);
    assert_eq!(
        c,
        Switch {
            target: "route:/products".into(),
            off: false,
            reason: "fixed".into(),
            actor: None,
            seq: c.seq,
            updated_at_ms: c.updated_at_ms,
        }
    );
    assert_eq!(s.switches(0).await.unwrap(), vec![b.clone(), c.clone()]);
    assert_eq!(s.switches(b.seq).await.unwrap(), vec![c.clone()]);
    // Unusual but valid text survives as it is.
    let d = s
        .set_switch("route:/a b/ü", true, "it's \"quoted\"", Some(""))
        .await
        .unwrap();
    assert_eq!(s.switches(c.seq).await.unwrap(), vec![d]);
}

async fn concurrent_switch_changes_are_ordered(s: Arc<dyn IdentityStore>) {
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let target = format!("class:c{}", i % 4);
            s.set_switch(&target, i % 2 == 0, &format!("change {i}"), None)
                .await
                .unwrap()
        }));
    }
    let mut seqs = Vec::new();
    let mut last = std::collections::HashMap::new();
    for t in tasks {
        let sw = t.await.unwrap();
        seqs.push(sw.seq);
        let e = last.entry(sw.target.clone()).or_insert(sw.clone());
        if sw.seq > e.seq {
            *e = sw;
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 24, "every change has its own seq");
    // The stored row of each target is its last change, and rows come in seq order.
    let stored = s.switches(0).await.unwrap();
    assert_eq!(stored.len(), 4);
    assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq));
    for sw in &stored {
        assert_eq!(Some(sw), last.get(&sw.target));
    }
}

macro_rules! conformance {
    ($module:ident, $open:ident) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn accounts_and_profiles() {
                let b = $open().await;
                super::accounts_and_profiles(&*b.store).await;
            }

            #[tokio::test]
            async fn refresh_rotation_and_reuse() {
                let b = $open().await;
                super::refresh_rotation_and_reuse(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_winner_among_concurrent_rotations() {
                let b = $open().await;
                super::one_winner_among_concurrent_rotations(b.store.clone()).await;
            }

            #[tokio::test]
            async fn revoking_sessions_and_users() {
                let b = $open().await;
                super::revoking_sessions_and_users(&*b.store).await;
            }

            #[tokio::test]
            async fn expired_sessions_and_pruning() {
                let b = $open().await;
                super::expired_sessions_and_pruning(&*b.store).await;
            }

            #[tokio::test]
            async fn signing_keys() {
                let b = $open().await;
                super::signing_keys(&*b.store).await;
            }

            #[tokio::test]
            async fn kill_switches() {
                let b = $open().await;
                super::kill_switches(&*b.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_switch_changes_are_ordered() {
                let b = $open().await;
                super::concurrent_switch_changes_are_ordered(b.store.clone()).await;
            }
        }
    };
}

conformance!(sqlite_backend, sqlite);
#[cfg(feature = "pg-tests")]
conformance!(postgres_backend, postgres);

#[tokio::test]
async fn catalog_and_identity_can_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("both.db").display());
    let catalog = surge_store::open(&url, &StoreOptions::default())
        .await
        .unwrap();
    catalog.close().await;
    let identity = surge_store::open_identity(&url, &StoreOptions::default())
        .await
        .unwrap();
    identity
        .create_account(&account("u1", "a@example.com"))
        .await
        .unwrap();
    identity.close().await;
    // Reopening applies nothing twice.
    let catalog = surge_store::open(&url, &StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(catalog.counts().await.unwrap(), (0, 0, 0));
    catalog.close().await;
}
