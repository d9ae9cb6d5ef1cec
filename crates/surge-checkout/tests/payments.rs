//! The payments service on a temporary SQLite payments store in front of the provider
//! simulator: the happy paths, declines, lost replies and their recovery, void
//! tombstones, concurrent captures, and a property test that random calls under random
//! timeouts and lost replies, retried to completion, leave the provider's books and the
//! store agreeing.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use proptest::prelude::*;
use surge_checkout::payments::provider::{PaymentProvider, ProviderAuth, ProviderError};
use surge_checkout::payments::simulator::{
    DECLINE_TOKEN, Fault, LedgerEntry, ProviderSimulator, SimulatorConfig,
};
use surge_checkout::payments::{
    AuthorizeRequest, PaymentError, PaymentRecord, PaymentState, Payments, authorize_key,
};
use surge_store::{PaymentsStore, StoreOptions};

struct Harness {
    payments: Payments,
    store: Arc<dyn PaymentsStore>,
    sim: Arc<ProviderSimulator>,
    _dir: tempfile::TempDir,
}

async fn harness_with(
    config: SimulatorConfig,
    wrap: impl FnOnce(Arc<ProviderSimulator>) -> Arc<dyn PaymentProvider>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("payments.db").display());
    let options = StoreOptions {
        sqlite_synchronous: "off".into(),
        ..StoreOptions::default()
    };
    let store = surge_store::open_payments(&url, &options).await.unwrap();
    let sim = Arc::new(ProviderSimulator::new(config).await.unwrap());
    let payments = Payments::new(store.clone(), wrap(sim.clone()));
    Harness {
        payments,
        store,
        sim,
        _dir: dir,
    }
}

async fn harness() -> Harness {
    let config = SimulatorConfig {
        seed: Some(1),
        ..SimulatorConfig::default()
    };
    harness_with(config, |sim| sim).await
}

fn req(order: &str, amount_minor: i64) -> AuthorizeRequest {
    AuthorizeRequest {
        order_id: order.into(),
        amount_minor,
        currency: "EUR".into(),
        method_token: "tok_ok".into(),
    }
}

impl Harness {
    async fn entry(&self, order: &str) -> Option<LedgerEntry> {
        self.sim.ledger_entry(&authorize_key(order)).await.unwrap()
    }

    async fn record(&self, order: &str) -> PaymentRecord {
        self.payments.payment(order).await.unwrap().unwrap()
    }
}

fn conflict<T: std::fmt::Debug>(r: Result<T, PaymentError>) {
    assert!(matches!(r, Err(PaymentError::Conflict(_))), "{r:?}");
}

fn transient<T: std::fmt::Debug>(r: Result<T, PaymentError>) {
    assert!(matches!(&r, Err(e) if e.is_transient()), "{r:?}");
}

#[tokio::test]
async fn authorize_capture_and_refund() {
    let h = harness().await;
    let p = h.payments.authorize(&req("o1", 1_000)).await.unwrap();
    assert_eq!(p.state, PaymentState::Authorized);
    let auth_ref = p.provider_ref.clone().unwrap();
    assert_eq!(h.payments.authorize(&req("o1", 1_000)).await.unwrap(), p);
    conflict(h.payments.authorize(&req("o1", 999)).await);
    conflict(h.payments.refund("o1", 10).await);

    let p = h.payments.capture("o1").await.unwrap();
    assert_eq!((p.state, p.captured_minor), (PaymentState::Captured, 1_000));
    assert_eq!(h.payments.capture("o1").await.unwrap(), p);
    conflict(h.payments.void("o1").await);

    let p = h.payments.refund("o1", 300).await.unwrap();
    assert_eq!((p.state, p.refunded_minor), (PaymentState::Captured, 300));
    conflict(h.payments.refund("o1", 701).await);
    let p = h.payments.refund("o1", 700).await.unwrap();
    assert_eq!((p.state, p.refunded_minor), (PaymentState::Refunded, 1_000));
    conflict(h.payments.refund("o1", 1).await);
    // A refunded authorize re-run reports the payment, it does not authorize again.
    assert_eq!(
        h.payments.authorize(&req("o1", 1_000)).await.unwrap().state,
        PaymentState::Refunded
    );

    let e = h.entry("o1").await.unwrap();
    assert_eq!(e.auth_ref, auth_ref);
    assert_eq!(
        (e.captured_minor, e.captures, e.refunded_minor, e.refunds),
        (1_000, 1, 1_000, 2)
    );
    let ops: Vec<_> = h
        .store
        .operations("o1")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.op, o.idempotency_key))
        .collect();
    let expected = [
        ("authorize", "o1:authorize"),
        ("capture", "o1:capture"),
        ("refund", "o1:refund:0"),
        ("refund", "o1:refund:1"),
    ];
    assert_eq!(
        ops,
        expected.map(|(op, key)| (op.to_owned(), key.to_owned()))
    );
}

#[tokio::test]
async fn void_releases_the_authorization() {
    let h = harness().await;
    h.payments.authorize(&req("o1", 500)).await.unwrap();
    h.payments.void("o1").await.unwrap();
    h.payments.void("o1").await.unwrap();
    let p = h.record("o1").await;
    assert_eq!(p.state, PaymentState::Voided);
    assert!(p.provider_ref.is_some());
    conflict(h.payments.capture("o1").await);
    conflict(h.payments.authorize(&req("o1", 500)).await);
    let e = h.entry("o1").await.unwrap();
    assert_eq!((e.voided_minor, e.captured_minor), (500, 0));
}

#[tokio::test]
async fn a_decline_is_final() {
    let h = harness().await;
    let declined = AuthorizeRequest {
        method_token: DECLINE_TOKEN.into(),
        ..req("o1", 500)
    };
    for _ in 0..2 {
        match h.payments.authorize(&declined).await {
            Err(PaymentError::Declined { reason }) => assert_eq!(reason, "card_declined"),
            other => panic!("expected a decline, got {other:?}"),
        }
    }
    assert_eq!(
        h.sim.recorded_requests().await.unwrap(),
        1,
        "asked the provider once"
    );
    assert_eq!(h.record("o1").await.state, PaymentState::Declined);
    assert!(
        !h.payments
            .authorize(&declined)
            .await
            .unwrap_err()
            .is_transient()
    );
    h.payments.void("o1").await.unwrap();
    conflict(h.payments.capture("o1").await);
    assert!(h.sim.ledger().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_lost_authorize_reply_then_a_retry_authorizes_once() {
    let h = harness().await;
    h.sim.script([Fault::LostReply]);
    transient(h.payments.authorize(&req("o1", 500)).await);
    assert_eq!(h.record("o1").await.state, PaymentState::Authorizing);
    // The provider has it; capture waits for the authorization to be known.
    assert!(h.entry("o1").await.is_some());
    conflict(h.payments.capture("o1").await);

    let p = h.payments.authorize(&req("o1", 500)).await.unwrap();
    assert_eq!(p.state, PaymentState::Authorized);
    let ledger = h.sim.ledger().await.unwrap();
    assert_eq!(ledger.len(), 1, "one authorization at the provider");
    assert_eq!(p.provider_ref.as_deref(), Some(ledger[0].auth_ref.as_str()));
    let outcomes: Vec<_> = h
        .store
        .operations("o1")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.outcome)
        .collect();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0], "timeout");
    assert!(outcomes[1].starts_with("ok "), "{outcomes:?}");
}

#[tokio::test]
async fn a_void_after_a_lost_authorize_reply_voids_what_was_authorized() {
    let h = harness().await;
    h.sim.script([Fault::LostReply]);
    transient(h.payments.authorize(&req("o1", 500)).await);
    h.payments.void("o1").await.unwrap();
    let e = h.entry("o1").await.unwrap();
    assert_eq!(e.voided_minor, 500, "the authorization is released");
    let p = h.record("o1").await;
    assert_eq!(p.state, PaymentState::Voided);
    assert_eq!(p.provider_ref.as_deref(), Some(e.auth_ref.as_str()));
    conflict(h.payments.authorize(&req("o1", 500)).await);
    conflict(h.payments.capture("o1").await);
    assert_eq!(h.entry("o1").await.unwrap().captured_minor, 0);
}

#[tokio::test]
async fn a_void_of_a_never_authorized_order_refuses_a_late_authorize() {
    let h = harness().await;
    h.payments.void("o1").await.unwrap();
    h.payments.void("o1").await.unwrap();
    let p = h.record("o1").await;
    assert_eq!((p.state, p.amount_minor), (PaymentState::Voided, 0));
    conflict(h.payments.authorize(&req("o1", 500)).await);
    assert!(h.sim.ledger().await.unwrap().is_empty());
    assert_eq!(h.sim.recorded_requests().await.unwrap(), 0);

    // An authorize that timed out with no effect, then a void: the provider has nothing,
    // the void records that, and the retried authorize is refused.
    h.sim.script([Fault::Timeout]);
    transient(h.payments.authorize(&req("o2", 500)).await);
    h.payments.void("o2").await.unwrap();
    assert_eq!(h.record("o2").await.state, PaymentState::Voided);
    conflict(h.payments.authorize(&req("o2", 500)).await);
    assert!(h.sim.ledger().await.unwrap().is_empty());
}

/// A provider whose authorize waits at a gate, so a test can run a void while an
/// authorize is out.
struct Gated {
    inner: Arc<ProviderSimulator>,
    entered: tokio::sync::Notify,
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl PaymentProvider for Gated {
    async fn authorize(
        &self,
        key: &str,
        amount_minor: i64,
        currency: &str,
        token: &str,
    ) -> Result<ProviderAuth, ProviderError> {
        self.entered.notify_one();
        self.gate.acquire().await.unwrap().forget();
        self.inner
            .authorize(key, amount_minor, currency, token)
            .await
    }
    async fn capture(&self, key: &str, auth_ref: &str, amount: i64) -> Result<(), ProviderError> {
        self.inner.capture(key, auth_ref, amount).await
    }
    async fn void(&self, key: &str, auth_ref: &str) -> Result<(), ProviderError> {
        self.inner.void(key, auth_ref).await
    }
    async fn refund(&self, key: &str, auth_ref: &str, amount: i64) -> Result<(), ProviderError> {
        self.inner.refund(key, auth_ref, amount).await
    }
    async fn find(&self, key: &str) -> Result<Option<ProviderAuth>, ProviderError> {
        self.inner.find(key).await
    }
}

/// A void overtakes an authorize that is still out; the authorization then happens
/// (its reply arriving, or lost). Either way it ends voided at the provider.
#[tokio::test]
async fn an_authorization_that_lands_after_a_void_is_voided() {
    for fault in [Fault::None, Fault::LostReply] {
        let gated = Arc::new(std::sync::OnceLock::<Arc<Gated>>::new());
        let g = gated.clone();
        let h = harness_with(
            SimulatorConfig {
                seed: Some(2),
                ..SimulatorConfig::default()
            },
            move |sim| {
                let provider = Arc::new(Gated {
                    inner: sim,
                    entered: tokio::sync::Notify::new(),
                    gate: tokio::sync::Semaphore::new(0),
                });
                assert!(g.set(provider.clone()).is_ok());
                provider
            },
        )
        .await;
        let gate = gated.get().unwrap().clone();
        let payments = h.payments.clone();
        let authorize = tokio::spawn(async move { payments.authorize(&req("o1", 500)).await });
        gate.entered.notified().await;
        // The provider has not authorized yet: the void finds nothing.
        h.payments.void("o1").await.unwrap();
        assert_eq!(h.record("o1").await.state, PaymentState::Voided);
        h.sim.script([fault]);
        gate.gate.add_permits(1);
        conflict(authorize.await.unwrap());
        let e = h.entry("o1").await.unwrap();
        assert_eq!(e.voided_minor, 500, "{fault:?}: released");
        let p = h.record("o1").await;
        assert_eq!(
            (p.state, p.provider_ref.as_deref()),
            (PaymentState::Voided, Some(e.auth_ref.as_str()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_captures_capture_once() {
    let h = harness().await;
    h.payments.authorize(&req("o1", 700)).await.unwrap();
    // Some of them lose their reply or time out; they are retried.
    h.sim
        .script([Fault::LostReply, Fault::Timeout, Fault::LostReply]);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let p = h.payments.clone();
            tokio::spawn(async move {
                loop {
                    match p.capture("o1").await {
                        Err(e) if e.is_transient() => continue,
                        other => return other,
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let p = t.await.unwrap().unwrap();
        assert_eq!((p.state, p.captured_minor), (PaymentState::Captured, 700));
    }
    let e = h.entry("o1").await.unwrap();
    assert_eq!((e.captured_minor, e.captures), (700, 1));
}

#[tokio::test]
async fn a_lost_capture_reply_is_not_voided_and_the_retry_captures_once() {
    let h = harness().await;
    h.payments.authorize(&req("o1", 400)).await.unwrap();
    h.sim.script([Fault::LostReply]);
    transient(h.payments.capture("o1").await);
    // The provider captured: it refuses the void, and the payment stays whole.
    conflict(h.payments.void("o1").await);
    assert_eq!(h.record("o1").await.state, PaymentState::Authorized);
    let p = h.payments.capture("o1").await.unwrap();
    assert_eq!(p.captured_minor, 400);
    assert_eq!(h.entry("o1").await.unwrap().captures, 1);
}

#[tokio::test]
async fn a_lost_refund_reply_is_completed_by_its_retry() {
    let h = harness().await;
    h.payments.authorize(&req("o1", 1_000)).await.unwrap();
    h.payments.capture("o1").await.unwrap();
    h.sim.script([Fault::LostReply]);
    transient(h.payments.refund("o1", 300).await);
    assert_eq!(h.record("o1").await.refunded_minor, 0);
    assert_eq!(h.entry("o1").await.unwrap().refunded_minor, 300);
    // Another refund while that one is in doubt is refused (same key, other request).
    conflict(h.payments.refund("o1", 200).await);
    let p = h.payments.refund("o1", 300).await.unwrap();
    assert_eq!((p.refunded_minor, p.refunds), (300, 1));
    let e = h.entry("o1").await.unwrap();
    assert_eq!((e.refunded_minor, e.refunds), (300, 1));
}

#[tokio::test]
async fn bad_requests_conflict() {
    let h = harness().await;
    conflict(h.payments.authorize(&req("o1", 0)).await);
    conflict(h.payments.authorize(&req("", 5)).await);
    conflict(
        h.payments
            .authorize(&AuthorizeRequest {
                currency: String::new(),
                ..req("o1", 5)
            })
            .await,
    );
    conflict(h.payments.capture("nope").await);
    conflict(h.payments.refund("nope", 5).await);
    conflict(h.payments.refund("nope", 0).await);
    assert_eq!(h.payments.payment("o1").await.unwrap(), None);
}

/// One call of the property test.
#[derive(Debug, Clone)]
enum Call {
    Authorize {
        order: usize,
        decline: bool,
    },
    Capture {
        order: usize,
    },
    Void {
        order: usize,
    },
    Refund {
        order: usize,
        amount_minor: i64,
    },
    /// Retries the oldest call that failed transiently.
    RetryOldest,
}

const ORDERS: [&str; 3] = ["a", "b", "c"];
const AMOUNTS: [i64; 3] = [500, 800, 1_200];

fn call() -> impl Strategy<Value = Call> {
    let order = 0..ORDERS.len();
    prop_oneof![
        3 => (order.clone(), prop::bool::weighted(0.15))
            .prop_map(|(order, decline)| Call::Authorize { order, decline }),
        2 => order.clone().prop_map(|order| Call::Capture { order }),
        1 => order.clone().prop_map(|order| Call::Void { order }),
        2 => (order, 1..700i64).prop_map(|(order, amount_minor)| Call::Refund { order, amount_minor }),
        2 => Just(Call::RetryOldest),
    ]
}

async fn run(p: &Payments, call: &Call) -> Result<(), PaymentError> {
    match *call {
        Call::Authorize { order, decline } => {
            let mut r = req(ORDERS[order], AMOUNTS[order]);
            if decline {
                r.method_token = DECLINE_TOKEN.into();
            }
            p.authorize(&r).await.map(|_| ())
        }
        Call::Capture { order } => p.capture(ORDERS[order]).await.map(|_| ()),
        Call::Void { order } => p.void(ORDERS[order]).await,
        Call::Refund {
            order,
            amount_minor,
        } => p.refund(ORDERS[order], amount_minor).await.map(|_| ()),
        Call::RetryOldest => Ok(()),
    }
}

/// Runs `calls` with random timeouts and lost replies, retries every transient failure
/// to completion with the faults off, then compares the provider's books with the
/// store.
async fn random_calls_agree(calls: Vec<Call>, seed: u64) {
    let h = harness_with(
        SimulatorConfig {
            decline_rate: 0.1,
            timeout_rate: 0.2,
            lost_reply_rate: 0.2,
            seed: Some(seed),
            ..SimulatorConfig::default()
        },
        |sim| sim,
    )
    .await;
    let mut pending = VecDeque::new();
    for c in calls {
        let c = match c {
            Call::RetryOldest => match pending.pop_front() {
                Some(c) => c,
                None => continue,
            },
            c => c,
        };
        if let Err(e) = run(&h.payments, &c).await
            && e.is_transient()
        {
            pending.push_back(c);
        }
    }
    h.sim.set_random_faults(false);
    while let Some(c) = pending.pop_front() {
        let r = run(&h.payments, &c).await;
        assert!(
            !matches!(&r, Err(e) if e.is_transient()),
            "{c:?} without faults: {r:?}"
        );
    }

    for order in ORDERS {
        let p = h.payments.payment(order).await.unwrap();
        let e = h.entry(order).await;
        let net = |captured: i64, refunded: i64| captured - refunded;
        let provider_net = e
            .as_ref()
            .map_or(0, |e| net(e.captured_minor, e.refunded_minor));
        let store_net = p
            .as_ref()
            .map_or(0, |p| net(p.captured_minor, p.refunded_minor));
        assert_eq!(provider_net, store_net, "{order}: {p:?} vs {e:?}");
        if let Some(e) = &e {
            assert!(e.captures <= 1, "{order}: captured twice {e:?}");
        }
        let Some(p) = p else {
            assert!(e.is_none(), "{order}: authorized without a payment {e:?}");
            continue;
        };
        match p.state {
            PaymentState::Authorizing => panic!("{order}: left in doubt {p:?}"),
            PaymentState::Declined => assert!(e.is_none(), "{order}: {e:?}"),
            PaymentState::Voided => assert!(
                e.as_ref().is_none_or(|e| e.voided_minor > 0),
                "{order}: voided here, not at the provider {e:?}"
            ),
            PaymentState::Authorized => {
                let e = e.as_ref().expect("authorized at the provider");
                assert_eq!((e.voided_minor, e.captured_minor), (0, 0), "{order}");
            }
            PaymentState::Captured | PaymentState::Refunded => {
                let e = e.as_ref().expect("captured at the provider");
                assert_eq!(
                    (e.captured_minor, e.refunded_minor, e.refunds),
                    (p.captured_minor, p.refunded_minor, p.refunds),
                    "{order}"
                );
            }
        }
        if let Some(e) = &e {
            assert_eq!(
                p.provider_ref.as_deref(),
                Some(e.auth_ref.as_str()),
                "{order}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_calls_with_faults_keep_provider_and_store_agreeing(
        calls in prop::collection::vec(call(), 1..40),
        seed in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(random_calls_agree(calls, seed));
    }
}
