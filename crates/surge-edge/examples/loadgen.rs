//! An open-loop HTTP load generator for the overload benchmark (`bench/traffic.sh`).
//!
//! Requests are scheduled at a fixed rate whatever the server does (arrivals, not a
//! closed loop of clients): each one takes an idle keep-alive connection or opens a new
//! one (at most `--connections`), as browsers do, so a slow server sees more concurrent
//! requests rather than a slower client. Latency is timed from when a request was *due*
//! (no coordinated omission). Answers are split into admitted (anything but 503/429),
//! shed at once (503 with `x-surge-shed: queue_full` or `overloaded`), shed later (other 503s — a queue
//! timeout or an eviction — and 429s) and failed (no connection, broken exchange); each
//! gets its own latency percentiles and a timeline per second.
//!
//!     cargo run --release -p surge-edge --example loadgen -- \
//!         --url http://127.0.0.1:18090 --rate 20000 --seconds 20 --connections 8192 --ids 10000
//!
//! Paths are `/products/P%07d` with ids drawn uniformly from 1..=ids; `--batch N` asks
//! `/products?ids=` with N such ids; `--path` fixes one path.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

struct Args {
    addr: String,
    rate: f64,
    seconds: u64,
    connections: usize,
    ids: u64,
    batch: u64,
    path: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        addr: String::new(),
        rate: 1000.0,
        seconds: 10,
        connections: 8192,
        ids: 10_000,
        batch: 0,
        path: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => {
                let rest = value.strip_prefix("http://").unwrap_or(&value);
                a.addr = rest.trim_end_matches('/').to_owned();
            }
            "--rate" => a.rate = value.parse().unwrap(),
            "--seconds" => a.seconds = value.parse().unwrap(),
            "--connections" => a.connections = value.parse().unwrap(),
            "--ids" => a.ids = value.parse().unwrap(),
            "--batch" => a.batch = value.parse().unwrap(),
            "--path" => a.path = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.addr.is_empty(), "--url http://host:port is required");
    a
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Admitted,
    ShedAtOnce,
    ShedLater,
    Failed,
}

/// One answer: when it completed (ms since start), its latency from when it was due (µs).
type Sample = (u32, u32, Outcome);

type Sender = SendRequest<Empty<Bytes>>;

struct Pool {
    addr: String,
    idle: Mutex<Vec<Sender>>,
    open: AtomicUsize,
    max: usize,
}

impl Pool {
    async fn take(&self) -> Option<Sender> {
        loop {
            let Some(mut s) = self.idle.lock().unwrap().pop() else {
                break;
            };
            if s.ready().await.is_ok() {
                return Some(s);
            }
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let opened = async {
            let stream = TcpStream::connect(&self.addr).await.ok()?;
            let _ = stream.set_nodelay(true);
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .ok()?;
            tokio::spawn(conn);
            Some(s)
        }
        .await;
        if opened.is_none() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        opened
    }

    fn give_back(&self, s: Sender) {
        self.idle.lock().unwrap().push(s);
    }

    fn lost(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn one(pool: &Pool, path: String) -> Outcome {
    let Some(mut s) = pool.take().await else {
        return Outcome::Failed;
    };
    let request = Request::get(path)
        .header("host", &pool.addr)
        .body(Empty::<Bytes>::new())
        .unwrap();
    match s.send_request(request).await {
        Ok(r) => {
            let status = r.status().as_u16();
            let at_once = r
                .headers()
                .get("x-surge-shed")
                .is_some_and(|v| v.as_bytes() == b"queue_full" || v.as_bytes() == b"overloaded");
            if r.into_body().collect().await.is_err() {
                pool.lost();
                return Outcome::Failed;
            }
            pool.give_back(s);
            match status {
                503 if at_once => Outcome::ShedAtOnce,
                503 | 429 => Outcome::ShedLater,
                _ => Outcome::Admitted,
            }
        }
        Err(_) => {
            pool.lost();
            Outcome::Failed
        }
    }
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
    let args = args();
    let pool = Arc::new(Pool {
        addr: args.addr.clone(),
        idle: Mutex::new(Vec::new()),
        open: AtomicUsize::new(0),
        max: args.connections,
    });
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let seed = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let next_id = || {
        let mut x = seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seed.store(x, Ordering::Relaxed);
        1 + x % args.ids
    };
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    let mut due = start;
    let mut tick = tokio::time::interval_at(start, Duration::from_millis(1));
    while due < end {
        tick.tick().await;
        let now = Instant::now();
        while due <= now && due < end {
            let path = match &args.path {
                Some(p) => p.clone(),
                None if args.batch > 0 => {
                    let ids: Vec<String> = (0..args.batch)
                        .map(|_| format!("P{:07}", next_id()))
                        .collect();
                    format!("/products?ids={}", ids.join(","))
                }
                None => format!("/products/P{:07}", next_id()),
            };
            let (pool, samples) = (pool.clone(), samples.clone());
            let at = due;
            tasks.push(tokio::spawn(async move {
                let outcome = tokio::time::timeout(Duration::from_secs(30), one(&pool, path))
                    .await
                    .unwrap_or(Outcome::Failed);
                let done = Instant::now();
                samples.lock().unwrap().push((
                    done.duration_since(start).as_millis() as u32,
                    done.duration_since(at).as_micros() as u32,
                    outcome,
                ));
            }));
            due += interval;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let all = std::mem::take(&mut *samples.lock().unwrap());
    let seconds = args.seconds as usize + 31;
    let mut timeline = vec![[0u64; 4]; seconds];
    let mut latencies: [Vec<u32>; 4] = Default::default();
    for &(at, latency, outcome) in &all {
        let k = outcome as usize;
        timeline[(at as usize / 1000).min(seconds - 1)][k] += 1;
        latencies[k].push(latency);
    }
    println!("second admitted shed-at-once shed-later failed");
    for (s, row) in timeline.iter().enumerate() {
        if row.iter().sum::<u64>() > 0 {
            println!("{s} {} {} {} {}", row[0], row[1], row[2], row[3]);
        }
    }
    let secs = args.seconds as f64;
    println!(
        "offered {:.0}/s admitted {:.0}/s shed-at-once {:.0}/s shed-later {:.0}/s failed {}",
        args.rate,
        latencies[0].len() as f64 / secs,
        latencies[1].len() as f64 / secs,
        latencies[2].len() as f64 / secs,
        latencies[3].len()
    );
    for (name, l) in ["admitted", "shed-at-once", "shed-later"]
        .iter()
        .zip(&mut latencies)
    {
        l.sort_unstable();
        println!(
            "{name}-ms p50 {:.3} p99 {:.3} p999 {:.3} max {:.3}",
            percentile(l, 0.5),
            percentile(l, 0.99),
            percentile(l, 0.999),
            percentile(l, 1.0)
        );
    }
}
