//! An open-loop HTTP load generator for the overload benchmark (`bench/traffic.sh`).
//!
//! Each of `--connections` keep-alive connections sends on its own fixed schedule
//! (`rate / connections` requests per second, as wrk2 does), so a slow server does not
//! slow the offered load down; a request sent late is timed from when it *should* have
//! been sent (no coordinated omission). Answers are split into admitted (2xx/3xx/4xx other
//! than 429) and shed (503, 429); each gets its own latency percentiles, and a timeline
//! per second shows both.
//!
//!     cargo run --release -p surge-edge --example loadgen -- \
//!         --url http://127.0.0.1:18090 --rate 20000 --seconds 20 --connections 512 --ids 10000
//!
//! Paths are `/products/P%07d` with ids drawn uniformly from 1..=ids (`--path` fixes one).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

struct Args {
    addr: String,
    host: String,
    rate: f64,
    seconds: u64,
    connections: usize,
    ids: u64,
    path: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        addr: String::new(),
        host: String::new(),
        rate: 1000.0,
        seconds: 10,
        connections: 256,
        ids: 10_000,
        path: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => {
                let rest = value.strip_prefix("http://").unwrap_or(&value);
                a.addr = rest.trim_end_matches('/').to_owned();
                a.host = a.addr.clone();
            }
            "--rate" => a.rate = value.parse().unwrap(),
            "--seconds" => a.seconds = value.parse().unwrap(),
            "--connections" => a.connections = value.parse().unwrap(),
            "--ids" => a.ids = value.parse().unwrap(),
            "--path" => a.path = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.addr.is_empty(), "--url http://host:port is required");
    a
}

/// One answer: when it completed (ms since start), its latency (µs) and whether it was
/// shed (`Some(true)`), admitted (`Some(false)`) or failed (`None`).
type Sample = (u32, u32, Option<bool>);

async fn connection(args: &Args, index: usize, start: Instant) -> Vec<Sample> {
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let end = start + Duration::from_secs(args.seconds);
    // Spread the connections' schedules over one interval.
    let mut due = start + interval.mul_f64(index as f64 / args.connections as f64);
    let mut samples = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (index as u64 + 1);
    let mut sender = None;
    while due < end {
        tokio::time::sleep_until(due).await;
        if sender.is_none() {
            let Ok(stream) = TcpStream::connect(&args.addr).await else {
                samples.push((start.elapsed().as_millis() as u32, 0, None));
                due += interval;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender = Some(s);
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let path = match &args.path {
            Some(p) => p.clone(),
            None => format!("/products/P{:07}", 1 + seed % args.ids),
        };
        let request = Request::get(path)
            .header("host", &args.host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let s = sender.as_mut().unwrap();
        let outcome = match s.send_request(request).await {
            Ok(r) => {
                let status = r.status().as_u16();
                let ok = r.into_body().collect().await.is_ok();
                if !ok {
                    sender = None;
                    None
                } else {
                    Some(status == 503 || status == 429)
                }
            }
            Err(_) => {
                sender = None;
                None
            }
        };
        let now = Instant::now();
        samples.push((
            now.duration_since(start).as_millis() as u32,
            now.duration_since(due).as_micros() as u32,
            outcome,
        ));
        due += interval;
    }
    samples
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: &'static Args = Box::leak(Box::new(args()));
    let start = Instant::now() + Duration::from_millis(50);
    let tasks: Vec<_> = (0..args.connections)
        .map(|i| tokio::spawn(connection(args, i, start)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let seconds = args.seconds as usize + 2;
    let mut timeline = vec![(0u64, 0u64, 0u64); seconds];
    let mut admitted = Vec::new();
    let mut shed = Vec::new();
    let mut failed = 0u64;
    for &(at, latency, outcome) in &all {
        let slot = &mut timeline[(at as usize / 1000).min(seconds - 1)];
        match outcome {
            Some(false) => {
                slot.0 += 1;
                admitted.push(latency);
            }
            Some(true) => {
                slot.1 += 1;
                shed.push(latency);
            }
            None => {
                slot.2 += 1;
                failed += 1;
            }
        }
    }
    println!("second admitted shed failed");
    for (s, (a, sh, f)) in timeline.iter().enumerate() {
        if a + sh + f > 0 {
            println!("{s} {a} {sh} {f}");
        }
    }
    admitted.sort_unstable();
    shed.sort_unstable();
    let secs = args.seconds as f64;
    println!(
        "offered {:.0}/s sent {:.0}/s admitted {:.0}/s shed {:.0}/s failed {failed}",
        args.rate,
        all.len() as f64 / secs,
        admitted.len() as f64 / secs,
        shed.len() as f64 / secs
    );
    println!(
        "admitted-ms p50 {:.3} p99 {:.3} p999 {:.3} max {:.3}",
        percentile(&admitted, 0.5),
        percentile(&admitted, 0.99),
        percentile(&admitted, 0.999),
        percentile(&admitted, 1.0)
    );
    println!(
        "shed-ms p50 {:.3} p99 {:.3} p999 {:.3} max {:.3}",
        percentile(&shed, 0.5),
        percentile(&shed, 0.99),
        percentile(&shed, 0.999),
        percentile(&shed, 1.0)
    );
}
