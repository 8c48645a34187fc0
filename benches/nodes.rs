//! Benchmarks of several nodes on one PostgreSQL, with real `daytona-mcp serve` processes (the
//! release binary) on loopback. Prints numbers for BENCHMARKS.md; asserts nothing.
//!
//! ```text
//! cargo bench --bench nodes -- throughput [JOBS [TOOL]]  # jobs/s with 1, 2, 3 nodes
//!                                                       # (list_sandboxes, execute_shell `true`)
//! cargo bench --bench nodes -- kill [ROUNDS]      # SIGKILL → its interrupted jobs resolved
//! cargo bench --bench nodes -- pgrestart [ROUNDS] # PostgreSQL restart → submissions accepted again
//! ```
//! `throughput` and `kill` need `DAYTONA_MCP_BENCH_POSTGRES`, a URL the bench may create
//! databases from (e.g. `postgres://postgres@127.0.0.1:5432/postgres`); `pgrestart` starts a
//! private cluster (initdb as the `postgres` user) and needs PostgreSQL's server programs.

#[path = "../tests/chaos/harness.rs"]
mod harness;
#[path = "../tests/support/pg_cluster.rs"]
mod pg_cluster;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::Connection;

use harness::{Node, Timing, client, new_key};

/// Sandboxes of a throughput run.
const SANDBOXES: usize = 12;

/// A fresh database on the `DAYTONA_MCP_BENCH_POSTGRES` server, dropped by `Drop`.
struct BenchDb {
    admin: String,
    name: String,
    url: String,
}

impl BenchDb {
    async fn new() -> Option<BenchDb> {
        let admin = std::env::var("DAYTONA_MCP_BENCH_POSTGRES").ok()?;
        let name = format!("dmcp_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .ok()?;
        let base = &admin[..admin.rfind('/').unwrap()];
        Some(BenchDb {
            url: format!("{base}/{name}"),
            admin,
            name,
        })
    }

    async fn drop_now(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// Counts `tool`'s jobs in a terminal state and among them the failed ones.
async fn terminal_counts(conn: &mut sqlx::PgConnection, tool: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state IN ('succeeded', 'failed', 'cancelled')), \
         count(*) FILTER (WHERE state = 'failed') FROM jobs WHERE tool = $1",
    )
    .bind(tool)
    .fetch_one(conn)
    .await
    .unwrap()
}

/// Submits `bodies` through the jobs API, round-robin over `bases` (body `i` to
/// `bases[route(i)]`), `concurrency` at a time; returns the number accepted.
async fn submit_all(
    key: &str,
    bases: &[String],
    bodies: Vec<(usize, Value)>,
    concurrency: usize,
) -> usize {
    let http = client(Duration::from_secs(60));
    let accepted = Arc::new(AtomicUsize::new(0));
    futures::stream::iter(bodies)
        .for_each_concurrent(concurrency, |(node, body)| {
            let (http, accepted) = (http.clone(), accepted.clone());
            let base = bases[node % bases.len()].clone();
            async move {
                if let Ok(r) = http
                    .post(format!("{base}/v1/jobs"))
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                {
                    if r.status().as_u16() == 202 {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
        .await;
    accepted.load(Ordering::SeqCst)
}

/// One throughput run: `nodes` nodes, `jobs` jobs of `tool`, submitted over HTTP and run;
/// returns (jobs/s from the first submission to the last terminal state, submissions/s,
/// failed jobs).
async fn throughput_run(nodes: usize, jobs: usize, tool: &str) -> Option<(f64, f64, i64)> {
    let db = BenchDb::new().await?;
    let root = tempfile::tempdir().unwrap();
    let key = new_key();
    let timing = Timing {
        lease_s: 60,
        heartbeat_s: 15,
        rescue_interval_s: 30,
        poll_interval_ms: 2000,
    };
    let env = [("DAYTONA_MCP_LOG__LEVEL".to_string(), "warn".to_string())];
    let started_nodes = Node::start_many(
        nodes,
        root.path(),
        Some(db.url.clone()),
        &key,
        &timing,
        &env,
    )
    .await;
    let bases: Vec<String> = started_nodes.iter().map(|n| n.base.clone()).collect();
    // Twelve sandboxes whatever the number of nodes (so that every run has the same
    // parallelism), made round-robin through the nodes (each held by the node that made it);
    // an execution is submitted to the node holding its sandbox.
    let mut sandboxes = Vec::new();
    // `BENCH_SANDBOXES_ON_FIRST=1`: all of them on the first node (the others idle but
    // listening), to separate what extra nodes cost from what they add.
    let on_first = std::env::var("BENCH_SANDBOXES_ON_FIRST").is_ok();
    for s in 0..SANDBOXES {
        let i = if on_first { 0 } else { s % nodes };
        let name = format!("b{s}");
        started_nodes[i].create_sandbox(&name).await;
        sandboxes.push((i, name));
    }
    let bodies: Vec<(usize, Value)> = (0..jobs)
        .map(|i| match tool {
            "execute_shell" => {
                let (node, name) = &sandboxes[i % sandboxes.len()];
                (
                    *node,
                    json!({"tool": "execute_shell",
                           "arguments": {"sandbox_id": name, "command": "true"}}),
                )
            }
            _ => (
                i % nodes,
                json!({"tool": "list_sandboxes", "arguments": {}}),
            ),
        })
        .collect();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let started = Instant::now();
    let accepted = submit_all(&key, &bases, bodies, 32).await;
    let submitted = started.elapsed().as_secs_f64();
    let failed = loop {
        let (done, failed) = terminal_counts(&mut conn, tool).await;
        if done as usize >= accepted {
            break failed;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{done} of {accepted} jobs done after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    drop(conn);
    drop(started_nodes);
    db.drop_now().await;
    Some((
        accepted as f64 / elapsed,
        accepted as f64 / submitted,
        failed,
    ))
}

async fn bench_throughput(jobs: usize, only: Option<&str>) {
    for tool in ["list_sandboxes", "execute_shell"] {
        if only.is_some_and(|o| o != tool) {
            continue;
        }
        let mut one = None;
        for nodes in 1..=3 {
            let Some((rate, submit_rate, failed)) = throughput_run(nodes, jobs, tool).await else {
                println!("throughput: skipped (set DAYTONA_MCP_BENCH_POSTGRES)");
                return;
            };
            let base = *one.get_or_insert(rate);
            println!(
                "throughput {tool:14} {nodes} node(s), {jobs} jobs: {rate:>7.0} jobs/s \
                 ({:.2}x 1 node; submissions {submit_rate:.0}/s; failed {failed})",
                rate / base
            );
        }
    }
}

/// Seconds from a SIGKILL of a node running `running` long executions until every one of them
/// is terminal: resolved by the survivor's rescuer (`restart == false`, two nodes) or by the
/// node's own start-up recovery after an immediate restart (`restart == true`, one node).
async fn kill_round(restart: bool, running: usize) -> Option<(f64, f64)> {
    let db = BenchDb::new().await?;
    let root = tempfile::tempdir().unwrap();
    let key = new_key();
    let timing = Timing {
        lease_s: 5,
        heartbeat_s: 1,
        rescue_interval_s: 1,
        poll_interval_ms: 200,
    };
    let env = [("DAYTONA_MCP_LOG__LEVEL".to_string(), "warn".to_string())];
    // The victim alone first, so that its sandboxes and their executions are its own; the
    // survivor joins once they run.
    let mut nodes = vec![
        Node::start(harness::NodeSpec::new(
            0,
            root.path(),
            Some(db.url.clone()),
            &key,
            &timing,
            &env,
        ))
        .await,
    ];
    let victim = 0;
    for s in 0..running {
        let name = format!("k{s}");
        nodes[victim].create_sandbox(&name).await;
        let a = nodes[victim]
            .post(
                "/v1/jobs",
                &json!({"tool": "execute_shell",
                        "arguments": {"sandbox_id": name, "command": "sleep 600"}}),
            )
            .await
            .unwrap();
        assert_eq!(a.status, 202, "{}", a.body);
    }
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let waiting = Instant::now();
    loop {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM jobs WHERE tool = 'execute_shell' AND state = 'running'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if n as usize == running {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "only {n} of {running} executions running; log:\n{}",
            nodes[victim].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !restart {
        nodes.push(
            Node::start(harness::NodeSpec::new(
                1,
                root.path(),
                Some(db.url.clone()),
                &key,
                &timing,
                &env,
            ))
            .await,
        );
    }
    // Let a heartbeat renew the leases, so the kill lands at a typical point of the lease.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = Instant::now();
    nodes[victim].kill9();
    let mut back = 0.0;
    if restart {
        nodes[victim].restart().await;
        back = killed.elapsed().as_secs_f64();
    }
    loop {
        let (done, _) = terminal_counts(&mut conn, "execute_shell").await;
        if done as usize >= running {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "{done} of {running} interrupted executions resolved after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resolved = killed.elapsed().as_secs_f64();
    drop(conn);
    drop(nodes);
    db.drop_now().await;
    Some((resolved, back))
}

async fn bench_kill(rounds: usize) {
    for _ in 0..rounds {
        let Some((survivor, _)) = kill_round(false, 8).await else {
            println!("kill: skipped (set DAYTONA_MCP_BENCH_POSTGRES)");
            return;
        };
        println!(
            "kill -9, 2 nodes, 8 running executions, lease 5 s, rescue scan 1 s: \
             resolved by the survivor after {survivor:.2} s"
        );
        let (restarted, back) = kill_round(true, 8).await.unwrap();
        println!(
            "kill -9, 1 node restarted at once, 8 running executions: resolved after \
             {restarted:.2} s (node ready again after {back:.2} s)"
        );
    }
}

/// What clients saw around one PostgreSQL restart.
struct RestartRound {
    /// Seconds `pg_ctl -m fast restart` took (stop, then start until it accepts connections).
    restart_took: f64,
    /// Seconds from `pg_ctl` returning (the database accepting again) to the first accepted
    /// submission, and to `/readyz` 200.
    first_accept: f64,
    ready: f64,
    /// The longest wait between two consecutive accepted submissions, in seconds.
    client_gap: f64,
    /// Answers during the round: 503s, and anything else that was not 202 (0 = transport).
    refused: usize,
    other: Vec<u16>,
}

/// Runs a steady load of `list_sandboxes` submissions (one every 5 ms) against one node on a
/// private cluster while PostgreSQL restarts.
async fn pgrestart_round(cluster: &pg_cluster::PgCluster, db: &str) -> RestartRound {
    let root = tempfile::tempdir().unwrap();
    let key = new_key();
    let env = [("DAYTONA_MCP_LOG__LEVEL".to_string(), "warn".to_string())];
    let node = Node::start(harness::NodeSpec::new(
        0,
        root.path(),
        Some(cluster.url(db)),
        &key,
        &Timing::default(),
        &env,
    ))
    .await;
    let t0 = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let submitter = {
        let (base, key, stop) = (node.base.clone(), key.clone(), stop.clone());
        tokio::spawn(async move {
            let http = client(Duration::from_secs(30));
            let body = json!({"tool": "list_sandboxes", "arguments": {}});
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let status = http
                    .post(format!("{base}/v1/jobs"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                seen.push((t0.elapsed().as_secs_f64(), status));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restart_took = {
        let started = Instant::now();
        tokio::task::block_in_place(|| cluster.pg_restart());
        started.elapsed().as_secs_f64()
    };
    let back = t0.elapsed().as_secs_f64();
    let http = client(Duration::from_secs(30));
    let ready = loop {
        if let Ok(r) = http.get(format!("{}/readyz", node.base)).send().await {
            if r.status().is_success() {
                break t0.elapsed().as_secs_f64() - back;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = submitter.await.unwrap();
    let first_after = seen
        .iter()
        .find(|(t, s)| *t > back && *s == 202)
        .map_or(f64::NAN, |(t, _)| *t);
    // The longest time between two consecutive accepted submissions (answer times).
    let accepted: Vec<f64> = seen
        .iter()
        .filter(|(_, s)| *s == 202)
        .map(|(t, _)| *t)
        .collect();
    let client_gap = accepted.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    drop(node);
    RestartRound {
        restart_took,
        first_accept: first_after - back,
        ready,
        client_gap,
        refused: seen.iter().filter(|(_, s)| *s == 503).count(),
        other: seen
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| *s != 202 && *s != 503)
            .collect(),
    }
}

async fn bench_pgrestart(rounds: usize) {
    let Some(cluster) = pg_cluster::PgCluster::start() else {
        println!("pgrestart: skipped (PostgreSQL's server programs are not installed)");
        return;
    };
    for round in 0..rounds {
        let db = format!("dmcp_bench_{round}");
        cluster.create_database(&db).await;
        let r = pgrestart_round(&cluster, &db).await;
        println!(
            "PostgreSQL restart (pg_ctl -m fast restart took {:.2} s), a submission every 5 ms: \
             longest wait between two accepted submissions {:.2} s; after the database was back the first was \
             accepted in {:.0} ms, /readyz 200 in {:.0} ms; {} answered 503, other answers {:?}",
            r.restart_took,
            r.client_gap,
            r.first_accept * 1e3,
            r.ready * 1e3,
            r.refused,
            r.other
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("all");
    let n: Option<usize> = args.get(1).and_then(|s| s.parse().ok());
    let only = args.get(2).cloned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if matches!(mode, "throughput" | "all") {
            bench_throughput(n.unwrap_or(3000), only.as_deref()).await;
        }
        if matches!(mode, "kill" | "all") {
            bench_kill(n.unwrap_or(3)).await;
        }
        if matches!(mode, "pgrestart" | "all") {
            bench_pgrestart(n.unwrap_or(3)).await;
        }
    });
}
