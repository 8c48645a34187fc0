//! Benchmarks of the job pipeline. Prints numbers for BENCHMARKS.md; asserts nothing.
//!
//! ```text
//! cargo bench --bench pipeline -- queue [JOBS]     # no-op jobs through store, dispatcher, actors
//! cargo bench --bench pipeline -- e2e [CALLS]      # sync execute_shell `true`: REST, MCP, bare bwrap
//! cargo bench --bench pipeline -- mcp [CALLS]      # the same (MCP rows included in both);
//!                                                  # BENCH_FRESH_SPAWN=1: a fresh bwrap per call
//! cargo bench --bench pipeline -- peers [JOBS] [RUNS] [BACKENDS]  # the peers' workload
//! cargo bench --bench pipeline -- sweep [JOBS] [RUNS] [BACKENDS]  # it at 1 … 1,024 in flight
//! ```
//! `peers` is the workload of graphile-worker's and pg-boss's published benchmarks (and of
//! `benches/peers/`): JOBS (20,000) no-op jobs inserted in bulk, then worked off, measured from
//! the worker's start to the last job done; workload A without a workspace, workload B over
//! 1,000 workspaces round-robin (at most one running job each); 50 jobs in flight (the peers'
//! setting) and the tuned setting. BACKENDS is `sqlite,postgres` (default) or either one. Each
//! run prints one JSON line, which `benches/peers/compare.sh` reads, with the CPU this process
//! and (when it runs on this host) the PostgreSQL server spent per job during the work-off
//! (`client_cpu_us_per_job`, `postgres_cpu_us_per_job`; see `cpu.rs`). `sweep` runs the same
//! workloads (JOBS 10,000 by default; a fifth of them at 1 in flight, half at 8) at 1, 8, 50,
//! 256 and 1,024 jobs in flight, claimed half that many at a time (at most 512), for
//! `benches/plot.py`'s throughput curve. `e2e` prints a
//! JSON line per path too, with its latency quantiles.
//! PostgreSQL variants run when `DAYTONA_MCP_BENCH_POSTGRES` names a database URL the bench may
//! create databases from (e.g. `postgres://postgres@127.0.0.1:5432/postgres`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use daytona_mcp::actors::{Executor, JobContext, Outcome, Pool, PoolConfig};
use daytona_mcp::app::Application;
use daytona_mcp::config::Config;
use daytona_mcp::drivers::local::isolation::{Bwrap, WORKSPACE};
use daytona_mcp::metrics::Metrics;
use daytona_mcp::queue::Queue;
use daytona_mcp::store::{self, DatabaseUrl, JobState, NewJob, Store};
use serde_json::json;
use sqlx::Connection;

#[path = "bench_db.rs"]
mod bench_db;
#[path = "cpu.rs"]
mod cpu;
use bench_db::{drop_database, postgres_url};

struct Noop;

#[async_trait]
impl Executor for Noop {
    async fn execute(&self, _job: &daytona_mcp::store::Job, _ctx: JobContext) -> Outcome {
        Outcome::Succeeded {
            result: json!({}),
            exit_code: None,
        }
    }
}

/// Enqueues `jobs` no-op jobs (spread over `workspaces` workspaces, or none), then measures
/// how long the pool takes to run them all.
async fn queue_run(store: Arc<dyn Store>, jobs: usize, workspaces: usize) -> f64 {
    queue_run_with(store, None, jobs, workspaces, 1024, 512)
        .await
        .rate
}

/// What one work-off measured.
struct WorkOff {
    /// Jobs per second, from the pool's start to the last outcome committed.
    rate: f64,
    /// Microseconds of this process's CPU per job over the same window: the node's side.
    node_cpu_us: f64,
    /// Microseconds of the PostgreSQL server's CPU per job over the same window, when its
    /// processes run on this host.
    postgres_cpu_us: Option<f64>,
}

/// [`queue_run`] with the pool's concurrency and claim batch given; `vacuum` (a PostgreSQL
/// URL) is vacuumed and analysed after the insert, as the peers' scripts do.
async fn queue_run_with(
    store: Arc<dyn Store>,
    vacuum: Option<&str>,
    jobs: usize,
    workspaces: usize,
    concurrency: usize,
    claim_batch: u32,
) -> WorkOff {
    let mut batch = Vec::with_capacity(1000);
    for i in 0..jobs {
        let mut job = NewJob::new("bench", "noop", json!({}));
        if workspaces > 0 {
            job.workspace = Some(format!("bench/{}", i % workspaces));
        }
        batch.push(job);
        if batch.len() == 1000 {
            store
                .enqueue_many(std::mem::take(&mut batch))
                .await
                .unwrap();
        }
    }
    store.enqueue_many(batch).await.unwrap();
    if let Some(url) = vacuum {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query("VACUUM ANALYZE jobs")
            .execute(&mut conn)
            .await
            .unwrap();
    }

    let queue = Queue::new(store.clone(), Duration::from_secs(1));
    let metrics = Metrics::new();
    let cpu = cpu::Window::start();
    let started = Instant::now();
    let pool = Pool::start(
        queue,
        Arc::new(Noop),
        metrics.clone(),
        PoolConfig {
            node_id: format!("bench-{}", uuid::Uuid::new_v4().simple()),
            concurrency,
            claim_batch,
            poll_interval: Duration::from_millis(50),
            ..PoolConfig::default()
        },
    )
    .await
    .unwrap();
    // The completer counts a job in this histogram once its outcome is committed, so the
    // in-process count is "done" as the database sees it. (Counting rows in the database every
    // few milliseconds instead cost ~12 ms of a PostgreSQL core per poll at 20,000 rows: the
    // measurement weighed on what it measured.)
    let done = metrics
        .execution_time_seconds
        .with_label_values(&["noop", JobState::Succeeded.as_str()]);
    while (done.get_sample_count() as usize) < jobs {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (node_cpu_us, postgres_cpu_us) = cpu.per_job_us(jobs);
    pool.shutdown(Duration::from_secs(5)).await;
    // The database agrees: every job succeeded, none is left open.
    let counts = store.job_counts().await.unwrap();
    let succeeded = counts
        .iter()
        .find(|c| c.state == JobState::Succeeded)
        .map_or(0, |c| c.count);
    assert_eq!(succeeded as usize, jobs, "the store's counts: {counts:?}");
    WorkOff {
        rate: jobs as f64 / elapsed,
        node_cpu_us,
        postgres_cpu_us,
    }
}

/// Single-job enqueue rate: one transaction (job + audit row) per call, `tasks` callers.
async fn enqueue_rate(store: Arc<dyn Store>, jobs: usize, tasks: usize) -> f64 {
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..jobs / tasks {
                let job = NewJob::new("bench", "noop", json!({}));
                let audit = daytona_mcp::audit::Caller::internal("bench").entry(
                    "noop",
                    None,
                    Some(job.id),
                    "accepted",
                    None,
                );
                store.enqueue(job, audit).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

async fn open(url: &str) -> Arc<dyn Store> {
    let store = store::connect(&DatabaseUrl::new(url), 16).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// A URL of a fresh, empty database of `backend`, or `None` when PostgreSQL is not set up.
async fn fresh(backend: &str, dir: &std::path::Path) -> Option<String> {
    match backend {
        "sqlite" => Some(format!(
            "sqlite://{}",
            dir.join(format!("bench-{}.db", uuid::Uuid::new_v4().simple()))
                .display()
        )),
        _ => postgres_url().await,
    }
}

async fn bench_queue(jobs: usize) {
    let dir = tempfile::tempdir().unwrap();
    for backend in ["sqlite", "postgres"] {
        for (label, workspaces) in [("no workspace", 0), ("1000 workspaces", 1000)] {
            // A fresh database per run, so earlier runs' rows do not weigh on the claims.
            let Some(url) = fresh(backend, dir.path()).await else {
                println!("queue {backend}: skipped (set DAYTONA_MCP_BENCH_POSTGRES)");
                break;
            };
            let rate = queue_run(open(&url).await, jobs, workspaces).await;
            drop_database(&url).await;
            println!("queue {backend:8} {label:16} {jobs} no-op jobs: {rate:>9.0} jobs/s");
        }
        if let Some(url) = fresh(backend, dir.path()).await {
            let rate = enqueue_rate(open(&url).await, jobs.min(20_000), 8).await;
            drop_database(&url).await;
            println!(
                "queue {backend:8} single enqueue (job + audit row, one tx each, 8 callers): \
                 {rate:>9.0} jobs/s"
            );
        }
    }
}

/// The peers' workload (see the module comment), one JSON line per run.
async fn bench_peers(jobs: usize, runs: usize, backends: &str) {
    // 50 in flight as the peers' scripts run (graphile-worker `concurrency` 50, pg-boss 2 × 25),
    // claimed 25 at a time so that a claim overlaps the previous batch's completion; and the
    // tuned setting, room for two claims of 512 in flight.
    let mut settings = vec![
        ("50".to_string(), 50usize, 25u32),
        ("tuned".to_string(), 1024, 512),
    ];
    // BENCH_SETTINGS=name:in_flight:claim,… replaces them (to try other settings).
    if let Ok(list) = std::env::var("BENCH_SETTINGS") {
        settings = list
            .split(',')
            .map(|s| {
                let f: Vec<&str> = s.split(':').collect();
                assert_eq!(
                    f.len(),
                    3,
                    "BENCH_SETTINGS entries are name:in_flight:claim"
                );
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect();
    }
    let settings: Vec<(&str, usize, u32)> = settings
        .iter()
        .map(|(n, c, b)| (n.as_str(), *c, *b))
        .collect();
    peers_runs(&settings, jobs, runs, backends).await;
}

/// The peers' workload at 1 … 1,024 jobs in flight, each claiming half its room at a time.
/// One and eight in flight work off a fifth and a half of `jobs`: one claim and one completion
/// per job or few, the rate is steady from the start, and whole runs would take many minutes.
async fn bench_sweep(jobs: usize, runs: usize, backends: &str) {
    for (in_flight, share) in [(1usize, 5), (8, 2), (50, 1), (256, 1), (1024, 1)] {
        let claim = (in_flight as u32 / 2).clamp(1, 512);
        peers_runs(&[("sweep", in_flight, claim)], jobs / share, runs, backends).await;
    }
}

async fn peers_runs(settings: &[(&str, usize, u32)], jobs: usize, runs: usize, backends: &str) {
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=runs {
        for backend in ["postgres", "sqlite"] {
            if !backends.split(',').any(|b| b == backend) {
                continue;
            }
            for (workload, workspaces) in [("A", 0usize), ("B", 1000)] {
                for &(setting, concurrency, claim_batch) in settings {
                    let Some(url) = fresh(backend, dir.path()).await else {
                        eprintln!("peers {backend}: skipped (set DAYTONA_MCP_BENCH_POSTGRES)");
                        break;
                    };
                    let store = open(&url).await;
                    let vacuum = (backend == "postgres").then_some(url.as_str());
                    let run =
                        queue_run_with(store, vacuum, jobs, workspaces, concurrency, claim_batch)
                            .await;
                    // A SQLite run's database is this process; the server's CPU is not its.
                    let postgres_cpu_us = run.postgres_cpu_us.filter(|_| backend == "postgres");
                    println!(
                        "{}",
                        json!({
                            "system": "daytona-mcp",
                            "backend": backend,
                            "workload": workload,
                            "jobs": jobs,
                            "keys": (workspaces > 0).then_some(workspaces),
                            "setting": setting,
                            "concurrency": concurrency,
                            "claim_batch": claim_batch,
                            "work_per_s": (run.rate * 10.0).round() / 10.0,
                            "client_cpu_us_per_job": run.node_cpu_us,
                            "postgres_cpu_us_per_job": postgres_cpu_us,
                            "run": round,
                            "ok": true,
                        })
                    );
                    if backend == "postgres" {
                        drop_database(&url).await;
                    }
                }
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Prints a path's percentiles, and a JSON line with p0 … p100 for `benches/plot.py`.
fn report(label: &str, path: &str, mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p50 = percentile(&samples, 0.5);
    let quantiles: Vec<f64> = (0..=100)
        .map(|p| (percentile(&samples, p as f64 / 100.0) * 1e6).round() / 1e3)
        .collect();
    println!(
        "{}",
        json!({"bench": "e2e", "path": path, "calls": samples.len(), "callers": 1,
               "p50_ms": quantiles[50], "p99_ms": quantiles[99], "quantiles_ms": quantiles})
    );
    println!(
        "{label:44} n={:4}  p50 {:7.2} ms  p90 {:7.2} ms  p99 {:7.2} ms",
        samples.len(),
        p50 * 1e3,
        percentile(&samples, 0.9) * 1e3,
        percentile(&samples, 0.99) * 1e3
    );
    p50
}

/// An MCP `tools/call` of `execute_shell` `true` answered in JSON: in the legacy `session` when
/// one is given, else as a stateless 2026-07-28 request with its `_meta` and headers.
fn mcp_call(
    client: &reqwest::Client,
    base: &str,
    session: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut params = json!({"name": "execute_shell",
                            "arguments": {"sandbox_id": "bench", "command": "true"}});
    let mut request = client
        .post(format!("{base}/mcp"))
        .bearer_auth("bench-key")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    match session {
        Some(id) => {
            request = request
                .header("mcp-session-id", id)
                .header("mcp-protocol-version", "2025-11-25");
        }
        None => {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            });
            request = request
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/call")
                .header("mcp-name", "execute_shell");
        }
    }
    request.body(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).to_string(),
    )
}

fn mcp_exit_code(body: &serde_json::Value) -> &serde_json::Value {
    &body["result"]["structuredContent"]["exit_code"]
}

async fn bench_e2e(calls: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".into();
    config.auth.api_key = "bench-key".into();
    config.queue.retention_hours = 0;
    if std::env::var("BENCH_NO_CGROUPS").is_ok() {
        config.local.cgroups = false;
    }
    // The bench runs the server in process; the sandbox agent is the real binary's.
    config.local.agent_path = env!("CARGO_BIN_EXE_daytona-mcp").into();
    let persistent = std::env::var("BENCH_FRESH_SPAWN").is_err();
    config.local.persistent_sandbox = persistent;
    let app = Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    actix_rt::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{base}/create_sandbox"))
        .bearer_auth("bench-key")
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["sandbox_id"].as_str().unwrap().to_string();
    let rest_call = |client: &reqwest::Client| {
        client
            .post(format!("{base}/execute_shell"))
            .bearer_auth("bench-key")
            .json(&json!({"sandbox_id": "bench", "command": "true"}))
            .send()
    };
    let initialized = client
        .post(format!("{base}/mcp"))
        .bearer_auth("bench-key")
        .header("content-type", "application/json")
        .body(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                   "params": {"protocolVersion": "2025-11-25", "capabilities": {}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let session = initialized.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    for _ in 0..20 {
        rest_call(&client).await.unwrap().bytes().await.unwrap();
        for s in [Some(session.as_str()), None] {
            mcp_call(&client, &base, s)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
    }
    // Round-robin, so that the three paths see the same machine conditions.
    let (mut rest, mut legacy, mut modern) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..calls {
        let started = Instant::now();
        let body: serde_json::Value = rest_call(&client).await.unwrap().json().await.unwrap();
        rest.push(started.elapsed().as_secs_f64());
        assert_eq!(body["exit_code"], 0, "{body}");
        for (s, samples) in [(Some(session.as_str()), &mut legacy), (None, &mut modern)] {
            let started = Instant::now();
            let response = mcp_call(&client, &base, s).send().await.unwrap();
            assert_eq!(response.headers()["content-type"], "application/json");
            let body: serde_json::Value = response.json().await.unwrap();
            samples.push(started.elapsed().as_secs_f64());
            assert_eq!(mcp_exit_code(&body), 0, "{body}");
        }
    }

    // The same bubblewrap options the driver builds (here on the command line, not in a
    // memory file), spawned bare.
    let runtime = dir.path().join("data/runtime");
    let bwrap = Bwrap::new("/usr/bin/bwrap".into(), runtime, true);
    let sandbox_dir = dir.path().join("data/sandboxes").join(&id);
    let options = bwrap.options(&sandbox_dir, WORKSPACE, &[], false, &[]);
    let mut bare = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let status = std::process::Command::new(&bwrap.path)
            .args(&options)
            .args(["--", "true"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .status()
            .unwrap();
        bare.push(started.elapsed().as_secs_f64());
        assert!(status.success());
    }
    // A bare fork/exec of `/bin/true`, without any sandbox: the floor.
    let mut fork_exec = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let status = std::process::Command::new("/bin/true").status().unwrap();
        fork_exec.push(started.elapsed().as_secs_f64());
        assert!(status.success());
    }
    println!(
        "commands ran in {}",
        if persistent {
            "a persistent sandbox (local.persistent_sandbox = true)"
        } else {
            "a fresh bubblewrap each (local.persistent_sandbox = false)"
        }
    );
    let p50_http = report("sync execute_shell `true` over HTTP (REST)", "rest", rest);
    let p50_legacy = report(
        "MCP tools/call, 2025-11-25 session (JSON)",
        "mcp_session",
        legacy,
    );
    let p50_modern = report("MCP tools/call, 2026-07-28 stateless (JSON)", "mcp", modern);
    let p50_bare = report("bare `bwrap … true` spawn", "bare_bwrap", bare);
    let p50_fork = report("bare fork/exec of /bin/true", "bare_fork_exec", fork_exec);
    println!("ratio p50 HTTP / bare bwrap: {:.2}x", p50_http / p50_bare);
    println!(
        "ratio p50 MCP / bare bwrap: {:.2}x (session), {:.2}x (stateless)",
        p50_legacy / p50_bare,
        p50_modern / p50_bare
    );
    println!(
        "ratio p50 MCP (stateless) / bare fork/exec: {:.2}x",
        p50_modern / p50_fork
    );
    println!(
        "ratio p50 MCP / REST: {:.2}x (session), {:.2}x (stateless)",
        p50_legacy / p50_http,
        p50_modern / p50_http
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("all");
    let n: Option<usize> = args.get(1).and_then(|s| s.parse().ok());
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let backends = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "sqlite,postgres".into());
    let system = actix_rt::System::new();
    system.block_on(async move {
        if matches!(mode, "queue" | "all") {
            bench_queue(n.unwrap_or(50_000)).await;
        }
        if mode == "peers" {
            bench_peers(n.unwrap_or(20_000), runs, &backends).await;
        }
        if mode == "sweep" {
            bench_sweep(n.unwrap_or(10_000), runs, &backends).await;
        }
        if matches!(mode, "e2e" | "mcp" | "all") {
            bench_e2e(n.unwrap_or(300)).await;
        }
    });
}
