//! The event relay against a real NATS JetStream (`--features nats-tests`, with
//! `SURGE_TEST_NATS_URL`, failing loudly without it): checkout's events reach the
//! stream in order with their ids, a restarted relay resumes from the stream's last
//! message, and JetStream drops an event published twice.

#![cfg(feature = "nats-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::{body, harness, test_config};
use surge_checkout::relay::{Outboxes, POSITION, Relay, RelayConfig, TYPE};

fn config() -> RelayConfig {
    let url = std::env::var("SURGE_TEST_NATS_URL")
        .expect("nats-tests needs SURGE_TEST_NATS_URL, e.g. nats://127.0.0.1:4222");
    // A stream and subjects of its own: streams may not share subjects.
    let tag = format!(
        "t{}x{}",
        std::process::id(),
        rand::random_range(0..u32::MAX)
    );
    RelayConfig {
        nats_url: Some(url),
        stream: format!("SURGE_TEST_{tag}"),
        subject_prefix: tag,
        max_age_ms: 600_000,
        batch: 3,
        ..RelayConfig::default()
    }
}

/// Every message of the stream: (subject, id, type, position, payload).
async fn messages(config: &RelayConfig) -> Vec<(String, String, String, i64, serde_json::Value)> {
    let client = async_nats::connect(config.nats_url.as_deref().unwrap())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(&config.stream).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        let header = |k: &str| m.headers.get(k).unwrap().as_str().to_owned();
        out.push((
            m.subject.to_string(),
            header("Nats-Msg-Id"),
            header(TYPE),
            header(POSITION).parse().unwrap(),
            serde_json::from_slice(&m.payload).unwrap(),
        ));
    }
    out
}

async fn drop_stream(config: &RelayConfig) {
    let client = async_nats::connect(config.nats_url.as_deref().unwrap())
        .await
        .unwrap();
    async_nats::jetstream::new(client)
        .delete_stream(&config.stream)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_stream_once_in_order_and_a_restart_resumes() {
    let h = harness(test_config()).await;
    h.offer("p1:m1", 1000, 5).await;
    for (user, key) in [("alice", "a"), ("bob", "b")] {
        let r = h
            .checkout(user, Some(key), &body(&[("p1:m1", 1)], "tok_ok"))
            .await;
        assert_eq!(r.json()["status"], "confirmed", "{}", r.text());
    }
    let orders = h.stores.orders.clone();
    let inventory = h.stores.inventory.clone();
    let checkout_events = orders.events(0, 100).await.unwrap();
    let stock_events = inventory.events(0, 100).await.unwrap();
    assert_eq!(checkout_events.len(), 4, "placed and confirmed, twice");
    assert_eq!(stock_events.len(), 5, "restock, then held and sold twice");

    let config = config();
    let mut relay = Relay::connect(&config, &Outboxes::both(orders.clone(), inventory.clone()))
        .await
        .unwrap();
    // Batches of 3: everything after a few steps, then nothing more.
    let mut published = 0;
    loop {
        let n = relay.step().await.unwrap();
        if n == 0 {
            break;
        }
        published += n;
    }
    assert_eq!(published, 9);

    let got = messages(&config).await;
    let on = |suffix: &str| -> Vec<_> {
        got.iter()
            .filter(|m| m.0.ends_with(suffix))
            .cloned()
            .collect()
    };
    let checkout = on(".checkout.events");
    let ids: Vec<&str> = checkout.iter().map(|m| m.1.as_str()).collect();
    let expected: Vec<&str> = checkout_events
        .iter()
        .map(|e| e.event.event_id.as_str())
        .collect();
    assert_eq!(ids, expected, "in outbox order, with their ids");
    assert!(checkout.iter().all(|m| m.4["event_id"] == m.1.as_str()));
    assert_eq!(checkout[0].2, "OrderPlaced");
    let stock = on(".inventory.events");
    let positions: Vec<i64> = stock.iter().map(|m| m.3).collect();
    let expected: Vec<i64> = stock_events.iter().map(|e| e.position).collect();
    assert_eq!(positions, expected);
    assert!(stock.iter().all(|m| m.2 == "StockChanged"));
    assert_eq!(stock.last().unwrap().4["sold"], 2);

    // A new relay (a restart) starts where the stream ends: nothing again, then only
    // what is new.
    let mut again = Relay::connect(&config, &Outboxes::both(orders.clone(), inventory.clone()))
        .await
        .unwrap();
    assert_eq!(again.step().await.unwrap(), 0);
    inventory.restock("p1:m1", "DE", 3).await.unwrap();
    assert_eq!(again.step().await.unwrap(), 1);
    assert_eq!(messages(&config).await.len(), 10);

    // Published twice (a crash between publishing and knowing it was stored): the
    // stream keeps one.
    let client = async_nats::connect(config.nats_url.as_deref().unwrap())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let first = &got[0];
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, first.1.as_str());
    let ack = js
        .publish_with_headers(first.0.clone(), headers, "again".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(ack.duplicate, "JetStream recognised the id");
    let all = messages(&config).await;
    assert_eq!(all.len(), 10);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for m in &all {
        *seen.entry(m.1.as_str()).or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    drop_stream(&config).await;
}

#[tokio::test]
async fn a_relay_without_a_server_fails_with_a_clear_error() {
    let h = harness(test_config()).await;
    let config = RelayConfig {
        nats_url: Some("nats://127.0.0.1:1".into()),
        ..RelayConfig::default()
    };
    let err = match Relay::connect(
        &config,
        &Outboxes::both(h.stores.orders.clone(), h.stores.inventory.clone()),
    )
    .await
    {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("the event stream:"), "{err}");
}
