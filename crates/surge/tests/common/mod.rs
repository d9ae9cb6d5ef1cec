//! The real `surge` binary under test: start it on port 0, talk HTTP to it, kill it.

#![allow(dead_code, clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub const TOKEN: &str = "e2e-token";

pub struct Surge {
    pub child: Child,
    pub base: String,
}

impl Surge {
    /// Starts `surge up` on a free port and returns once it is ready (`/readyz` 200:
    /// the projector has applied what was in the outbox at start).
    pub async fn start(data_dir: &Path, http: &Http) -> Surge {
        let surge = Self::spawn(data_dir);
        wait_for(
            http,
            &format!("{}/readyz", surge.base),
            200,
            Duration::from_secs(60),
        )
        .await;
        surge
    }

    /// Starts `surge up` on a free port and waits for its `listening on` line.
    pub fn spawn(data_dir: &Path) -> Surge {
        Self::spawn_with(&["up"], data_dir)
    }

    /// Starts `surge <command…>` on a free port with `data_dir` and waits for its
    /// `listening on` line.
    pub fn spawn_with(command: &[&str], data_dir: &Path) -> Surge {
        Self::spawn_env(command, data_dir, &[])
    }

    /// [`Surge::spawn_with`] with extra environment variables.
    pub fn spawn_env(command: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Surge {
        Self::spawn_at(command, data_dir, env, "127.0.0.1:0")
    }

    /// [`Surge::spawn_env`] listening on `listen` (to come back on the same address).
    pub fn spawn_at(
        command: &[&str],
        data_dir: &Path,
        env: &[(&str, &str)],
        listen: &str,
    ) -> Surge {
        let mut child = Command::new(env!("CARGO_BIN_EXE_surge"))
            .args(command)
            .envs(env.iter().copied())
            .args(["--listen", listen, "--data-dir"])
            .arg(data_dir)
            .env("SURGE_ADMIN_TOKEN", TOKEN)
            .env("SURGE_LOG__FORMAT", "pretty")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn surge");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(at) = line.find("listening on ") {
                    let addr = line[at + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("surge printed no 'listening on' line");
        Surge {
            child,
            base: format!("http://{addr}"),
        }
    }

    pub fn kill9(mut self) {
        // Child::kill sends SIGKILL on Unix: no shutdown hook runs.
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for Surge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
pub struct Http(pub Client<HttpConnector, Full<Bytes>>);

impl Http {
    pub fn new() -> Self {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }

    pub async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<Value>,
    ) -> Result<(u16, Bytes), String> {
        // The admin token only where it belongs: the edge refuses a bearer token it
        // cannot verify, even on a public route.
        let bearer = url.contains("/admin/").then_some(TOKEN);
        self.send_as(method, url, bearer, body).await
    }

    /// Sends with `Authorization: Bearer <bearer>` when given.
    pub async fn send_as(
        &self,
        method: &str,
        url: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Bytes), String> {
        self.send_headers(method, url, bearer, &[], body).await
    }

    /// Sends with a bearer token (when given) and extra headers.
    pub async fn send_headers(
        &self,
        method: &str,
        url: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<(u16, Bytes), String> {
        let mut b = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        if let Some(token) = bearer {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = b
            .body(Full::new(
                body.map(|v| Bytes::from(v.to_string())).unwrap_or_default(),
            ))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.0.request(req))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    pub async fn get_json(&self, url: &str) -> (u16, Value) {
        let (s, b) = self.send("GET", url, None).await.expect("GET");
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
}

/// Polls `url` until it answers `status`, for at most `within`.
pub async fn wait_for(http: &Http, url: &str, status: u16, within: Duration) {
    poll_until(within, &format!("{url} answering {status}"), || async {
        matches!(http.send("GET", url, None).await, Ok((s, _)) if s == status)
    })
    .await;
}

/// Asks `check` until it says yes, for at most `within`. The process under test is
/// another process with nothing to subscribe to, so this is the one place the tests of
/// the binary poll: every 20 ms.
pub async fn poll_until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "never: {what}");
    }
}

/// Sums the values of every series of `metric` in a Prometheus text page.
pub fn metric_sum(page: &str, metric: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
