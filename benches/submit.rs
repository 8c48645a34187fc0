//! Benchmarks of submissions (group commit). Prints numbers for BENCHMARKS.md; asserts nothing.
//!
//! ```text
//! cargo bench --bench submit -- enqueue [JOBS]     # 50 concurrent Queue::enqueue callers
//! cargo bench --bench submit -- http [SECONDS]     # POST /v1/jobs → 202 under wrk (or our client)
//! ```
//! Each mode runs "before" (`queue.submit_batch = 1`: every submission its own transaction, the
//! code path of the base commit) and "after" (the default batch) in the same run. PostgreSQL
//! variants run when `DAYTONA_MCP_BENCH_POSTGRES` names a database URL the bench may create
//! databases from (e.g. `postgres://postgres@127.0.0.1:5432/postgres`). The HTTP mode uses
//! `wrk` when it is on the PATH, else the bench's own client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use daytona_mcp::app::Application;
use daytona_mcp::audit::Caller;
use daytona_mcp::config::Config;
use daytona_mcp::queue::Queue;
use daytona_mcp::store::{self, DatabaseUrl, NewJob, Store};
use serde_json::json;

#[path = "bench_db.rs"]
mod bench_db;
use bench_db::{drop_database, postgres_url};

const CALLERS: usize = 50;
const AFTER: usize = daytona_mcp::queue::submit::DEFAULT_MAX_BATCH;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// p0, p1, …, p100 of sorted latencies, in milliseconds (for `benches/plot.py`'s CDFs).
fn quantiles(sorted: &[Duration]) -> Vec<f64> {
    (0..=100)
        .map(|p| (percentile(sorted, p as f64 / 100.0) * 1e3).round() / 1e3)
        .collect()
}

/// `jobs` submissions by 50 concurrent callers through `Queue::enqueue` (job + audit row each,
/// every caller its own workspace, as sandboxes are); jobs/s and per-call latency quantiles.
async fn enqueue_run(store: Arc<dyn Store>, jobs: usize, batch: usize) -> (f64, Vec<f64>) {
    let queue = Queue::new(store, Duration::from_secs(1)).with_submit_batch(batch);
    let per = jobs / CALLERS;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CALLERS {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let mut job = NewJob::new("bench", "noop", json!({"command": "true"}));
                job.workspace = Some(format!("bench/{c}"));
                let audit = Caller::internal("bench").entry("noop", None, None, "accepted", None);
                let t = Instant::now();
                queue.enqueue(job, audit).await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(jobs);
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    (lat.len() as f64 / secs, quantiles(&lat))
}

async fn fresh_store(url: &str) -> Arc<dyn Store> {
    let store = store::connect(&DatabaseUrl::new(url.to_string()), 8)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

async fn bench_enqueue(jobs: usize) {
    println!("## single enqueues, {CALLERS} concurrent callers, {jobs} jobs");
    println!("| backend | submit_batch | jobs/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    let mut backends = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    backends.push(("sqlite", None));
    if std::env::var("DAYTONA_MCP_BENCH_POSTGRES").is_ok() {
        backends.push(("postgres", Some(())));
    }
    for (name, pg) in backends {
        let mut rates = Vec::new();
        for batch in [1, AFTER] {
            let url = match pg {
                None => format!(
                    "sqlite://{}",
                    dir.path().join(format!("b{batch}.db")).to_str().unwrap()
                ),
                Some(()) => postgres_url().await.unwrap(),
            };
            let store = fresh_store(&url).await;
            let (rate, q) = enqueue_run(store, jobs, batch).await;
            drop_database(&url).await;
            println!(
                "| {name} | {batch} | {rate:.0} | {:.2} | {:.2} |",
                q[50], q[99]
            );
            println!(
                "{}",
                json!({"bench": "submit", "mode": "enqueue", "backend": name,
                       "submit_batch": batch, "callers": CALLERS, "jobs": jobs,
                       "jobs_per_s": rate.round(), "p50_ms": q[50], "p99_ms": q[99],
                       "quantiles_ms": q})
            );
            rates.push(rate);
        }
        println!(
            "{name}: after/before = {:.1}x",
            rates[1] / rates[0].max(f64::MIN_POSITIVE)
        );
    }
}

/// A server on a random port with `queue.submit_batch = batch`, on `url` (empty: SQLite).
async fn start_server(url: &str, batch: usize, dir: &std::path::Path) -> String {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".into();
    config.auth.api_key = "bench-key".into();
    config.auth.rate_limit_per_minute = 0;
    config.queue.retention_hours = 0;
    config.queue.submit_batch = batch;
    config.database.url = url.to_string();
    config.local.cgroups = false;
    let app = Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    actix_rt::spawn(app.run_until_stopped());
    base
}

const BODY: &str = r#"{"tool":"list_sandboxes","arguments":{}}"#;

/// Runs wrk against `POST {base}/v1/jobs` and prints its summary; `None` without wrk.
fn run_wrk(base: &str, seconds: u64) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{BODY}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer bench-key\"\n\
             done = function(summary, latency, requests)\n\
               io.write(string.format(\"WRK %d %d %d %.0f %.0f\\n\", summary.requests, \
             summary.errors.status, summary.duration, latency:percentile(50), \
             latency:percentile(99)))\n\
             end\n"
        ),
    )
    .unwrap();
    let output = std::process::Command::new("wrk")
        .args(["-t2", "-c50", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(format!("{base}/v1/jobs"))
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The bench's own client, 50 connections, when wrk is missing: (requests, non-202, quantiles).
async fn run_client(base: &str, seconds: u64) -> (usize, usize, Vec<f64>) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (client, url) = (client.clone(), format!("{base}/v1/jobs"));
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut bad) = (Vec::new(), 0);
            while Instant::now() < deadline {
                let t = Instant::now();
                let status = client
                    .post(&url)
                    .bearer_auth("bench-key")
                    .header("content-type", "application/json")
                    .body(BODY)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                lat.push(t.elapsed());
                bad += usize::from(status != 202);
            }
            (lat, bad)
        }));
    }
    let (mut lat, mut bad) = (Vec::new(), 0);
    for t in tasks {
        let (l, b) = t.await.unwrap();
        lat.extend(l);
        bad += b;
    }
    lat.sort();
    (lat.len(), bad, quantiles(&lat))
}

async fn bench_http(seconds: u64) {
    let wrk = std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok();
    println!(
        "## POST /v1/jobs -> 202, 50 connections, {seconds} s each, load generator: {}",
        if wrk { "wrk -t2 -c50" } else { "bench client" }
    );
    println!("| backend | submit_batch | jobs/s | non-202 | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    let mut backends = vec![("sqlite", false)];
    if std::env::var("DAYTONA_MCP_BENCH_POSTGRES").is_ok() {
        backends.push(("postgres", true));
    }
    // Dropped at the end: their servers run until the process exits.
    let mut databases = Vec::new();
    for (name, pg) in backends {
        let mut rates = Vec::new();
        for batch in [1, AFTER] {
            let dir = tempfile::tempdir().unwrap();
            let url = if pg {
                postgres_url().await.unwrap()
            } else {
                String::new()
            };
            databases.push(url.clone());
            let base = start_server(&url, batch, dir.path()).await;
            // wrk runs off this thread: the server's tasks share its runtime.
            let wrk_out = if wrk {
                let base = base.clone();
                tokio::task::spawn_blocking(move || run_wrk(&base, seconds))
                    .await
                    .unwrap()
            } else {
                None
            };
            let (rate, bad, p50, p99, q) = match wrk_out {
                Some(out) => {
                    let line = out
                        .lines()
                        .find(|l| l.starts_with("WRK "))
                        .unwrap_or_else(|| panic!("wrk printed no summary: {out}"))
                        .to_string();
                    let f: Vec<f64> = line[4..].split(' ').map(|x| x.parse().unwrap()).collect();
                    let (p50, p99) = (f[3] / 1e3, f[4] / 1e3);
                    (f[0] / (f[2] / 1e6), f[1] as usize, p50, p99, None)
                }
                None => {
                    let (n, bad, q) = run_client(&base, seconds).await;
                    (n as f64 / seconds as f64, bad, q[50], q[99], Some(q))
                }
            };
            println!("| {name} | {batch} | {rate:.0} | {bad} | {p50:.2} | {p99:.2} |");
            println!(
                "{}",
                json!({"bench": "submit", "mode": "http", "backend": name,
                       "submit_batch": batch, "connections": CALLERS, "seconds": seconds,
                       "load_generator": if wrk { "wrk" } else { "bench client" },
                       "jobs_per_s": rate.round(), "non_202": bad, "p50_ms": p50,
                       "p99_ms": p99, "quantiles_ms": q})
            );
            rates.push(rate);
        }
        println!(
            "{name}: after/before = {:.1}x",
            rates[1] / rates[0].max(f64::MIN_POSITIVE)
        );
    }
    for url in databases {
        drop_database(&url).await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("all");
    let n: Option<usize> = args.get(1).and_then(|s| s.parse().ok());
    let system = actix_rt::System::new();
    system.block_on(async move {
        if matches!(mode, "enqueue" | "all") {
            bench_enqueue(n.unwrap_or(10_000)).await;
        }
        if matches!(mode, "http" | "all") {
            bench_http(n.unwrap_or(10) as u64).await;
        }
        // The servers' pools must not be dropped after the runtime they live on.
        std::process::exit(0);
    });
}
