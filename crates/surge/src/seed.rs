//! `surge seed`: fills a catalog with the synthetic products of
//! [`surge_catalog::seed`], either straight into a store (then projects the views and
//! reports the end-to-end rate) or through a running server's command API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use surge_catalog::model::product::normalize;
use surge_catalog::projector::{Projector, ProjectorConfig};
use surge_catalog::seed;
use surge_store::{Offer, ProductWrite, StoreOptions};
use tokio::sync::Semaphore;

/// Flags of `surge seed`.
#[derive(Args, Clone)]
pub struct SeedArgs {
    /// How many products (ids P0000001…).
    #[arg(long)]
    products: u64,
    /// Seed of the generator: the same seed gives the same catalog.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of the first product (to add to an existing catalog).
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// A running Surge to write to through its command API (e.g. http://127.0.0.1:8080).
    #[arg(long, conflicts_with_all = ["data_dir", "store"])]
    target: Option<String>,
    /// A data directory to write into directly (its catalog.db).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A store URL to write into directly.
    #[arg(long, conflicts_with = "data_dir")]
    store: Option<String>,
    /// Admin token for --target.
    #[arg(long, env = "SURGE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Products per transaction (direct) or concurrent requests (--target).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// gzip level for the projected views (direct mode).
    #[arg(long, default_value_t = 6)]
    gzip_level: u32,
    /// Do not write offers.
    #[arg(long)]
    no_offers: bool,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what:>10} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

fn generate(seed_value: u64, range: std::ops::Range<u64>) -> anyhow::Result<Vec<ProductWrite>> {
    range
        .map(|n| {
            let id = seed::product_id(n);
            let body = normalize(&id, seed::product(seed_value, n))
                .map_err(|e| anyhow::anyhow!("generated product {id} is invalid: {e:?}"))?;
            Ok(ProductWrite { id, body })
        })
        .collect()
}

/// Runs the seed command.
pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    if args.products == 0 {
        bail!("--products must be at least 1");
    }
    if args.batch == 0 || args.batch > 10_000 {
        bail!("--batch must be 1..=10000");
    }
    match (&args.target, &args.data_dir, &args.store) {
        (Some(target), _, _) => over_http(&args, target).await,
        (None, Some(dir), _) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            direct(
                &args,
                &format!("sqlite://{}", dir.join("catalog.db").display()),
            )
            .await
        }
        (None, None, Some(url)) => direct(&args, url).await,
        (None, None, None) => {
            bail!("say where to write: --target URL, --data-dir DIR or --store URL")
        }
    }
}

async fn direct(args: &SeedArgs, url: &str) -> anyhow::Result<()> {
    let store = surge_store::open(url, &StoreOptions::default())
        .await
        .context("cannot open the store")?;
    let started = Instant::now();
    let bars = indicatif::MultiProgress::new();
    let pb = bars.add(bar(args.products, "products"));
    let end = args.first + args.products;

    // The projector runs alongside the writes (its rendering uses the other core), so
    // the end-to-end time is the slower of the two, not their sum.
    let projector = Projector::new(
        store.clone(),
        None,
        ProjectorConfig {
            gzip_level: args.gzip_level,
            ..ProjectorConfig::default()
        },
    )
    .await?;
    let writes_done = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let views_pb = bars.add(bar(0, "views"));
    let status = projector.status();
    let projecting = {
        let store = store.clone();
        let (writes_done, finished) = (writes_done.clone(), finished.clone());
        let views_pb = views_pb.clone();
        tokio::spawn(async move {
            let mut last_step = Instant::now();
            loop {
                let step = projector.step().await?;
                if step.entries > 0 {
                    last_step = Instant::now();
                    views_pb.inc(step.entries as u64);
                    let head = store.outbox_head().await?;
                    // In memory: the stored position may trail it (see the projector).
                    let applied = status.applied().max(0);
                    views_pb.set_length(views_pb.position() + (head - applied).max(0) as u64);
                    continue;
                }
                if finished.load(std::sync::atomic::Ordering::Acquire) {
                    // Writes are over and everything written is applied.
                    projector.flush().await?;
                    return Ok::<_, anyhow::Error>(last_step);
                }
                tokio::select! {
                    () = writes_done.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
    };

    let mut offers_written = 0u64;
    let mut next = args.first;
    // Generate the next batch on the blocking pool while the current one is written.
    let gen_batch = |from: u64| {
        let to = (from + args.batch as u64).min(end);
        let seed_value = args.seed;
        let with_offers = !args.no_offers;
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<ProductWrite>, Vec<Offer>)> {
            let products = generate(seed_value, from..to)?;
            let offers = if with_offers {
                (from..to)
                    .flat_map(|n| seed::offers(seed_value, n))
                    .collect()
            } else {
                vec![]
            };
            Ok((products, offers))
        })
    };
    let mut pending = Some(gen_batch(next));
    while let Some(task) = pending.take() {
        let (products, offers) = task.await.context("generator panicked")??;
        next += products.len() as u64;
        if next < end {
            pending = Some(gen_batch(next));
        }
        store
            .put_products(&products)
            .await
            .context("writing products")?;
        if !offers.is_empty() {
            store
                .upsert_offers(&offers)
                .await
                .context("writing offers")?;
            offers_written += offers.len() as u64;
        }
        pb.inc(products.len() as u64);
    }
    pb.finish();
    let written = started.elapsed();
    finished.store(true, std::sync::atomic::Ordering::Release);
    writes_done.notify_one();
    let last_view = projecting.await.context("projector task panicked")??;
    views_pb.finish();
    let projected = last_view.saturating_duration_since(started);
    let total = started.elapsed();
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "seeded {} products and {} offers in {:.1}s ({:.0} products/s written); views projected alongside, \
         the last {:.1}s after the start; end to end {:.0} products/s",
        args.products,
        offers_written,
        written.as_secs_f64(),
        rate(args.products, written),
        projected.as_secs_f64(),
        rate(args.products, total),
    );
    store.close().await;
    Ok(())
}

async fn over_http(args: &SeedArgs, target: &str) -> anyhow::Result<()> {
    let token = args
        .token
        .clone()
        .context("--target needs --token or SURGE_ADMIN_TOKEN")?;
    let target = target.trim_end_matches('/').to_owned();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let pb = bar(args.products, "products");
    let limit = Arc::new(Semaphore::new(args.batch.min(64)));
    let mut tasks = tokio::task::JoinSet::new();
    let end = args.first + args.products;
    for chunk_start in (args.first..end).step_by(50) {
        let chunk_end = (chunk_start + 50).min(end);
        let products = generate(args.seed, chunk_start..chunk_end)?;
        for p in products {
            let permit = limit.clone().acquire_owned().await?;
            let (client, target, token, pb) =
                (client.clone(), target.clone(), token.clone(), pb.clone());
            tasks.spawn(async move {
                let r = send(
                    &client,
                    "PUT",
                    &format!("{target}/admin/products/{}", p.id),
                    &token,
                    p.body,
                )
                .await;
                pb.inc(1);
                drop(permit);
                r
            });
        }
        if !args.no_offers {
            let offers: Vec<Offer> = (chunk_start..chunk_end)
                .flat_map(|n| seed::offers(args.seed, n))
                .collect();
            let body = serde_json::json!({"offers": offers.iter().map(|o| serde_json::json!({
                "product_id": o.product_id, "merchant_id": o.merchant_id, "market": o.market,
                "price": {"amount_minor": o.price_minor, "currency": o.currency}, "stock": o.stock,
            })).collect::<Vec<_>>()});
            send(
                &client,
                "POST",
                &format!("{target}/admin/offers"),
                &token,
                Bytes::from(serde_json::to_vec(&body)?),
            )
            .await?;
        }
        while let Some(r) = tasks.try_join_next() {
            r.context("request task panicked")??;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.context("request task panicked")??;
    }
    pb.finish();
    let took = started.elapsed();
    println!(
        "seeded {} products through {target} in {:.1}s ({:.0} products/s)",
        args.products,
        took.as_secs_f64(),
        args.products as f64 / took.as_secs_f64().max(1e-9)
    );
    Ok(())
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    token: &str,
    body: Bytes,
) -> anyhow::Result<()> {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let response = client
        .request(request)
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!(
            "{method} {url}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}
