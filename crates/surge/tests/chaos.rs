//! The checkout chaos test: many concurrent checkouts through the real `surge` binary
//! (a hot SKU with far less stock than demand, payment declines, provider timeouts and
//! lost replies from the simulator) while the process is killed with SIGKILL at random
//! moments and restarted. Clients behave as they should: they retry with the same
//! `Idempotency-Key` until they get an answer.
//!
//! After the run settles (a last restart with a healthy provider), the stores and the
//! provider's ledger are read directly and must show: every acknowledged order is
//! terminal; no SKU sold more than its stock and `available + held + sold` is what was
//! stocked; for every order captured − refunded is its total if confirmed, else 0, at
//! the provider too; every key maps to at most one order; every compensation ran once.
//!
//! Short by default (CI); the soak is `SURGE_CHAOS_SECONDS=600 SURGE_CHAOS_KILLS=40
//! cargo test -p surge --test chaos -- --nocapture` (see docs/operations.md).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Http, Surge};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::watch;

const HOT: &str = "HOT-1:m1";
const HOT_STOCK: i64 = 12;
const NORMAL: [&str; 3] = ["N-1:m1", "N-2:m1", "N-3:m1"];
const NORMAL_STOCK: i64 = 400;
const USERS: usize = 8;
const WORKERS: usize = 12;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Environment of a run: a flaky provider (or a healthy one) and quick retries.
fn surge_env(flaky: bool) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("SURGE_CHECKOUT__SAGA__RETRY_BASE_MS", "10"),
        ("SURGE_CHECKOUT__SAGA__RETRY_MAX_MS", "200"),
        ("SURGE_CHECKOUT__SAGA__LEASE_MS", "2000"),
        ("SURGE_CHECKOUT__SAGA__POLL_MS", "100"),
        ("SURGE_CHECKOUT__SAGA__STEP_DEADLINE_MS", "600000"),
        ("SURGE_CHECKOUT__SAGA__COMPENSATION_DEADLINE_MS", "600000"),
        ("SURGE_CHECKOUT__RESPOND_WITHIN_MS", "2000"),
        ("SURGE_CHECKOUT__IDEMPOTENCY_LOCK_MS", "3000"),
    ];
    if flaky {
        env.extend([
            ("SURGE_CHECKOUT__PROVIDER__LATENCY_MS", "2"),
            ("SURGE_CHECKOUT__PROVIDER__DECLINE_RATE", "0.1"),
            ("SURGE_CHECKOUT__PROVIDER__TIMEOUT_RATE", "0.05"),
            ("SURGE_CHECKOUT__PROVIDER__LOST_REPLY_RATE", "0.05"),
        ]);
    }
    env
}

fn start(dir: &std::path::Path, flaky: bool) -> Surge {
    Surge::spawn_env(&["up"], dir, &surge_env(flaky))
}

/// How long a client waits before sending a key again after a 409 or 503, unless the
/// process restarts first.
const RETRY: Duration = Duration::from_millis(50);

/// What the clients saw: per (user, key), the order ids answered.
type Answers = Arc<std::sync::Mutex<HashMap<(String, String), HashSet<String>>>>;

async fn seed(http: &Http, base: &str) -> Vec<(String, String)> {
    let mut offers = vec![
        json!({"product_id": "HOT-1", "merchant_id": "m1", "market": "DE",
        "price": {"amount_minor": 15000, "currency": "EUR"}, "stock": HOT_STOCK}),
    ];
    for sku in NORMAL {
        let product = sku.split(':').next().unwrap();
        offers.push(
            json!({"product_id": product, "merchant_id": "m1", "market": "DE",
            "price": {"amount_minor": 2500, "currency": "EUR"}, "stock": NORMAL_STOCK}),
        );
    }
    let (s, b) = http
        .send(
            "POST",
            &format!("{base}/admin/offers"),
            Some(json!({ "offers": offers })),
        )
        .await
        .unwrap();
    assert!(s < 300, "offers: {s} {}", String::from_utf8_lossy(&b));
    // The offers' stock reaches the inventory through the offer feed.
    for (sku, units) in [(HOT, HOT_STOCK)]
        .into_iter()
        .chain(NORMAL.iter().map(|s| (*s, NORMAL_STOCK)))
    {
        common::poll_until(
            Duration::from_secs(10),
            "the offer feed declares the stock",
            || async {
                let (s, b) = http
                    .send("GET", &format!("{base}/admin/inventory/{sku}/DE"), None)
                    .await
                    .unwrap();
                s == 200
                    && serde_json::from_slice::<Value>(&b).unwrap()["available"].as_i64()
                        == Some(units)
            },
        )
        .await;
    }
    let mut users = Vec::new();
    for i in 0..USERS {
        let (s, b) = http
            .send(
                "POST",
                &format!("{base}/auth/signup"),
                Some(json!({"email": format!("buyer{i}@example.com"), "password": "a long enough password"})),
            )
            .await
            .unwrap();
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
        let v: Value = serde_json::from_slice(&b).unwrap();
        users.push((
            v["user_id"].as_str().unwrap().to_owned(),
            v["access_token"].as_str().unwrap().to_owned(),
        ));
    }
    users
}

/// One client: checkouts until `until`, each retried with its key until answered.
async fn client(
    http: Http,
    mut base: watch::Receiver<String>,
    users: Arc<Vec<(String, String)>>,
    answers: Answers,
    acks: Arc<watch::Sender<usize>>,
    until: Instant,
    worker: usize,
) {
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let (user, token, body) = {
            let mut rng = rand::rng();
            let (user, token) = users[rng.random_range(0..users.len())].clone();
            let items = if rng.random_bool(0.5) {
                vec![json!({"sku": HOT, "qty": 1})]
            } else {
                let sku = NORMAL[rng.random_range(0..NORMAL.len())];
                vec![json!({"sku": sku, "qty": rng.random_range(1..=2)})]
            };
            let body = json!({"items": items, "market": "DE", "payment_method": "tok_ok",
                "shipping_address": {"name": "Chaos", "line1": "Str. 1", "postal_code": "1",
                "city": "Berlin", "country": "DE"}});
            (user, token, body)
        };
        let key = format!("w{worker}-n{n}");
        // Retry with the same key until the answer is final (bounded, so a broken
        // server fails the test instead of hanging it).
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            let url = format!("{}/checkout", *base.borrow_and_update());
            let r = http
                .send_headers(
                    "POST",
                    &url,
                    Some(&token),
                    &[("idempotency-key", &key)],
                    Some(body.clone()),
                )
                .await;
            match r {
                Ok((201 | 202, b)) => {
                    let v: Value = serde_json::from_slice(&b).unwrap();
                    let id = v["id"].as_str().unwrap().to_owned();
                    answers
                        .lock()
                        .unwrap()
                        .entry((user.clone(), key.clone()))
                        .or_default()
                        .insert(id);
                    acks.send_modify(|n| *n += 1);
                    break;
                }
                // Sold out from memory: final, no order.
                Ok((409, b)) if String::from_utf8_lossy(&b).contains("sold-out") => break,
                Ok((s, b)) if (400..500).contains(&s) && s != 409 && s != 429 => {
                    panic!("client error {s}: {}", String::from_utf8_lossy(&b))
                }
                // In use, overloaded, or the process is down: the same key again once
                // the process has restarted, or after a short delay.
                _ => {
                    assert!(Instant::now() < give_up, "key {key} never got an answer");
                    let _ = tokio::time::timeout(RETRY, base.changed()).await;
                }
            }
        }
    }
}

async fn ready(http: &Http, base: &str) {
    common::wait_for(
        http,
        &format!("{base}/readyz"),
        200,
        Duration::from_secs(60),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_survive_sigkill_without_overselling_double_charging_or_losing_orders() {
    let seconds = env_or("SURGE_CHAOS_SECONDS", 12);
    let kills = env_or("SURGE_CHAOS_KILLS", 3);
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let surge = start(dir.path(), true);
    ready(&http, &surge.base).await;
    let users = Arc::new(seed(&http, &surge.base).await);
    let (base, base_rx) = watch::channel(surge.base.clone());
    let answers: Answers = Arc::default();
    let acks = Arc::new(watch::Sender::new(0_usize));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for w in 0..WORKERS {
        clients.push(tokio::spawn(client(
            http.clone(),
            base_rx.clone(),
            users.clone(),
            answers.clone(),
            acks.clone(),
            until,
            w,
        )));
    }

    // The killer: SIGKILL in the middle of the traffic — after a random number of
    // further acknowledged checkouts, or at the latest after its share of the run —
    // and restart at once.
    let mut surge = surge;
    let mut acked = acks.subscribe();
    for k in 0..kills {
        let left = until.saturating_duration_since(Instant::now());
        let share = left / u32::try_from(kills - k + 1).unwrap_or(1);
        let (more, jitter) = {
            let mut rng = rand::rng();
            (rng.random_range(10..200), rng.random_range(0.5..1.5))
        };
        let target = *acked.borrow() + more;
        let _ = tokio::time::timeout(share.mul_f64(jitter), acked.wait_for(|n| *n >= target)).await;
        surge.kill9();
        surge = start(dir.path(), true);
        base.send_replace(surge.base.clone());
    }
    for c in clients {
        c.await.unwrap();
    }
    // Settle: one more kill, then a healthy provider until every saga is done.
    surge.kill9();
    let surge = start(dir.path(), false);
    ready(&http, &surge.base).await;
    let open = format!("{}/admin/sagas?limit=10", surge.base);
    common::poll_until(Duration::from_secs(60), "every saga done", || async {
        let (s, v) = http.get_json(&open).await;
        s == 200 && v["sagas"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    surge.kill9();

    let answers = answers.lock().unwrap().clone();
    check(dir.path(), &users, &answers).await;
}

async fn check(
    dir: &std::path::Path,
    users: &[(String, String)],
    answers: &HashMap<(String, String), HashSet<String>>,
) {
    let url = |f: &str| format!("sqlite://{}", dir.join(f).display());
    let options = surge_store::StoreOptions::default();
    let orders = surge_store::open_orders(&url("orders.db"), &options)
        .await
        .unwrap();
    let inventory = surge_store::open_inventory(&url("inventory.db"), &options)
        .await
        .unwrap();
    let payments = surge_store::open_payments(&url("payments.db"), &options)
        .await
        .unwrap();
    let provider = surge_checkout::payments::simulator::ProviderSimulator::new(
        surge_checkout::payments::simulator::SimulatorConfig {
            ledger: Some(dir.join("provider-simulator.db")),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // Every key maps to at most one order.
    for ((user, key), ids) in answers {
        assert!(ids.len() <= 1, "{user}/{key} answered {ids:?}");
    }
    let acknowledged: HashSet<&String> = answers.values().flatten().collect();
    assert!(!acknowledged.is_empty(), "no checkout was acknowledged");

    // Every order (acknowledged or not) is terminal, with consistent money.
    let mut all = Vec::new();
    for (user, _) in users {
        let mut before = None;
        loop {
            let page = orders.orders_of(user, before.clone(), 500).await.unwrap();
            let Some(last) = page.last() else { break };
            before = Some((last.created_at_ms, last.id.clone()));
            all.extend(page);
        }
    }
    let ids: HashSet<&String> = all.iter().map(|o| &o.id).collect();
    for id in &acknowledged {
        assert!(ids.contains(id), "acknowledged order {id} is lost");
    }
    let ledger = provider.ledger().await.unwrap();
    let at_provider: HashMap<&str, &surge_checkout::payments::simulator::LedgerEntry> = ledger
        .iter()
        .map(|e| (e.authorize_key.as_str(), e))
        .collect();
    let (mut confirmed, mut cancelled) = (0, 0);
    for o in &all {
        assert_eq!(o.saga_state, surge_store::SagaState::Done, "{o:?}");
        let p = payments.payment(&o.id).await.unwrap();
        let net = p
            .as_ref()
            .map_or(0, |p| p.captured_minor - p.refunded_minor);
        let key = surge_checkout::payments::authorize_key(&o.id);
        let psp = at_provider.get(key.as_str());
        let psp_net = psp.map_or(0, |e| e.captured_minor - e.refunded_minor);
        assert!(psp.is_none_or(|e| e.captures <= 1), "{o:?}: {psp:?}");
        match o.status.as_str() {
            "confirmed" => {
                confirmed += 1;
                assert_eq!(net, o.total_minor, "{o:?} {p:?}");
                assert_eq!(psp_net, o.total_minor, "{o:?} at the provider: {psp:?}");
            }
            "cancelled" => {
                cancelled += 1;
                assert_eq!(net, 0, "{o:?} {p:?}");
                assert_eq!(psp_net, 0, "{o:?} at the provider: {psp:?}");
                assert!(o.reason.is_some());
            }
            other => panic!("order {} is {other}", o.id),
        }
        // Each compensation ran (was recorded) at most once.
        let log = orders.log(&o.id).await.unwrap();
        for step in ["void_payment", "release_stock"] {
            let n = log
                .iter()
                .filter(|l| l.step == step && l.outcome == "compensated")
                .count();
            assert!(n <= 1, "{} compensated {step} {n} times", o.id);
        }
    }

    // Stock: never oversold, conserved, nothing left held.
    let mut sold_by_orders: HashMap<String, i64> = HashMap::new();
    for o in all.iter().filter(|o| o.status == "confirmed") {
        let doc: Value = serde_json::from_str(&o.document).unwrap();
        for l in doc["lines"].as_array().unwrap() {
            *sold_by_orders
                .entry(l["sku"].as_str().unwrap().to_owned())
                .or_default() += l["qty"].as_i64().unwrap();
        }
    }
    for (sku, initial) in [(HOT, HOT_STOCK)]
        .into_iter()
        .chain(NORMAL.iter().map(|s| (*s, NORMAL_STOCK)))
    {
        let level = inventory.stock(sku, "DE").await.unwrap().unwrap();
        assert!(level.sold <= initial, "{sku} oversold: {level:?}");
        assert_eq!(level.total(), initial, "{sku} not conserved: {level:?}");
        assert_eq!(level.held, 0, "{sku} still held: {level:?}");
        assert_eq!(
            level.sold,
            sold_by_orders.get(sku).copied().unwrap_or(0),
            "{sku}: sold units match confirmed orders"
        );
    }

    // StockChanged: written with every change through the kills, so the last event of
    // each SKU shows its counters as they are now.
    let mut last: HashMap<String, surge_store::StockLevel> = HashMap::new();
    let mut after = 0;
    loop {
        let page = inventory.events(after, 1_000).await.unwrap();
        let Some(end) = page.last() else { break };
        after = end.position;
        for e in page {
            last.insert(e.sku, e.level);
        }
    }
    for sku in [HOT].into_iter().chain(NORMAL.iter().copied()) {
        let level = inventory.stock(sku, "DE").await.unwrap().unwrap();
        assert_eq!(
            last.get(sku),
            Some(&level),
            "{sku}: the last StockChanged event"
        );
    }
    eprintln!(
        "chaos: {} acknowledged, {} orders ({confirmed} confirmed, {cancelled} cancelled), provider ledger {} entries",
        acknowledged.len(),
        all.len(),
        ledger.len()
    );
}
