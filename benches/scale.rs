//! Scale benchmarks against the real server binary (`daytona-mcp serve`, local driver, SQLite)
//! run as a child process, so that its memory is its own. Prints numbers and JSON lines for
//! BENCHMARKS.md and `benches/plot.py`; asserts nothing about timing.
//!
//! ```text
//! cargo bench --bench scale -- idle [SANDBOXES]          # 1,000 sandboxes, idle actors: RSS
//! cargo bench --bench scale -- exec [CALLS] [ROUNDS]     # 50 sandboxes, 8 callers, vs bare bwrap
//! ```
//! `idle` creates SANDBOXES (1,000) sandboxes over REST, runs `execute_shell true` in each over
//! MCP so that every workspace has its actor, lets them go idle and reads the server's VmRSS
//! (`/proc/<pid>/status`) before, while the idle actors live, and after they are reaped
//! (`queue.actor_idle_s`, default 60 s here as in the server; `BENCH_ACTOR_IDLE_S`), then once
//! more after touching them all again (a second cycle of actors: growth there would be a
//! leak); it also counts the server's descendant processes (bwrap among them), which idle
//! workspaces should not hold.
//! `exec` runs CALLS (2,000) `execute_shell true` calls over MCP (2026-07-28 stateless JSON)
//! spread over 50 sandboxes by 8 concurrent callers, and as many bare `bwrap … true` spawns by
//! 8 concurrent threads with the options the driver builds, alternating the two in ROUNDS (4)
//! rounds so both see the same machine conditions. `BENCH_NO_CGROUPS=1` turns the server's
//! cgroups off.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use daytona_mcp::drivers::local::isolation::{Bwrap, WORKSPACE};
use serde_json::{Value, json};

const KEY: &str = "bench-key";
const CALLERS: usize = 8;

/// The server under test: a child process with its own data dir, killed when dropped.
struct Server {
    child: Child,
    base: String,
    data: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(actor_idle_s: u64) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // A free port: bound, read and released (the server binds it right after).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cgroups = std::env::var("BENCH_NO_CGROUPS").is_err();
        let config = format!(
            "data_dir = {data:?}\n\
             [server]\nlisten = \"127.0.0.1:{port}\"\n\
             [auth]\napi_key = \"{KEY}\"\n\
             [queue]\nactor_idle_s = {actor_idle_s}\nretention_hours = 0\n\
             [local]\ncgroups = {cgroups}\n\
             [log]\nlevel = \"warn\"\n"
        );
        let config_path = dir.path().join("daytona-mcp.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_daytona-mcp"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("DAYTONA_MCP_API_KEY")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            data,
            log,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = client
                .get(format!("{}/healthz", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not come up: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident set, KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// (descendant processes, of which bwrap) of the server.
    fn descendants(&self) -> (usize, usize) {
        let mut parent: HashMap<u32, (u32, String)> = HashMap::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = stat[open + 1..close].to_string();
            let ppid = stat[close + 1..]
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            parent.insert(pid, (ppid, comm));
        }
        let (mut all, mut bwrap) = (0, 0);
        for (pid, (_, comm)) in &parent {
            let mut up = *pid;
            while let Some((ppid, _)) = parent.get(&up) {
                if *ppid == self.pid() {
                    all += 1;
                    bwrap += usize::from(comm == "bwrap");
                    break;
                }
                up = *ppid;
            }
        }
        (all, bwrap)
    }

    async fn active_actors(&self, client: &reqwest::Client) -> i64 {
        let text = client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("daytona_mcp_active_actors "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1)
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.data.join("sandboxes").join(id)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first (a graceful stop), then the kill.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /create_sandbox` (synchronous); the sandbox's id.
async fn create_sandbox(client: &reqwest::Client, base: &str, name: &str) -> String {
    let body: Value = client
        .post(format!("{base}/create_sandbox"))
        .bearer_auth(KEY)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["sandbox_id"]
        .as_str()
        .unwrap_or_else(|| panic!("create_sandbox {name}: {body}"))
        .to_string()
}

/// An MCP `tools/call` of `execute_shell true` in `sandbox`, a stateless 2026-07-28 request
/// answered in JSON; its latency.
async fn mcp_true(client: &reqwest::Client, base: &str, sandbox: &str) -> Duration {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "execute_shell",
        "arguments": {"sandbox_id": sandbox, "command": "true"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        }
    }});
    let started = Instant::now();
    let response = client
        .post(format!("{base}/mcp"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "execute_shell")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        answer["result"]["structuredContent"]["exit_code"], 0,
        "execute_shell in {sandbox}: {answer}"
    );
    elapsed
}

/// Runs `f(i)` for i in 0..n by `callers` concurrent tasks; (wall time, latencies).
async fn concurrently<F, Fut>(n: usize, callers: usize, f: F) -> (Duration, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Duration> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (f, next) = (f.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break lat;
                }
                lat.push(f(i).await);
            }
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    (started.elapsed(), lat)
}

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// p0, p1, …, p100 of `lat`, in milliseconds (what a CDF plot needs).
fn quantiles_ms(lat: &mut [Duration]) -> Vec<f64> {
    lat.sort();
    (0..=100)
        .map(|p| {
            let i = ((lat.len() as f64 - 1.0) * p as f64 / 100.0).round() as usize;
            (lat[i].as_secs_f64() * 1e6).round() / 1e3
        })
        .collect()
}

async fn bench_idle(n: usize) {
    println!("# load before: {}", uptime());
    let actor_idle_s: u64 = std::env::var("BENCH_ACTOR_IDLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let server = Server::start(actor_idle_s).await;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let start_kib = server.rss_kib();
    // Warm-up: the lazily built parts (connections, caches, the first actors' code paths)
    // are counted in the baseline, not against the idle workspaces.
    for i in 0..20 {
        let name = format!("warm{i}");
        create_sandbox(&client, &base, &name).await;
        for _ in 0..5 {
            mcp_true(&client, &base, &name).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_kib = server.rss_kib();
    let warm_actors = server.active_actors(&client).await;

    let (c, b) = (client.clone(), base.clone());
    let (create_wall, _) = concurrently(n, CALLERS, move |i| {
        let (c, b) = (c.clone(), b.clone());
        async move {
            let t = Instant::now();
            create_sandbox(&c, &b, &format!("s{i:05}")).await;
            t.elapsed()
        }
    })
    .await;
    let created_kib = server.rss_kib();
    let (c, b) = (client.clone(), base.clone());
    let (touch_wall, _) = concurrently(n, CALLERS, move |i| {
        let (c, b) = (c.clone(), b.clone());
        async move { mcp_true(&c, &b, &format!("s{i:05}")).await }
    })
    .await;
    // Idle: every job done, the actors alive with empty mailboxes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kib = server.rss_kib();
    let idle_actors = server.active_actors(&client).await;
    let (idle_procs, idle_bwrap) = server.descendants();

    // Reaped: wait until the dispatcher has dropped the idle actors, counting the server's
    // processes all along (idle workspaces should hold none).
    let deadline = Instant::now() + Duration::from_secs(actor_idle_s * 2 + 30);
    let mut most_procs = idle_procs;
    while server.active_actors(&client).await > 0 && Instant::now() < deadline {
        most_procs = most_procs.max(server.descendants().0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Dropping an actor stops its sandbox's agent (`Driver::release`) in the background:
    // wait for the last one, up to 60 s, and report how long the stragglers took.
    let reaped_at = Instant::now();
    let teardown_deadline = reaped_at + Duration::from_secs(60);
    while server.descendants().0 > 0 && Instant::now() < teardown_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let teardown_s = reaped_at.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reaped_kib = server.rss_kib();
    let reaped_actors = server.active_actors(&client).await;
    let (reaped_procs, reaped_bwrap) = server.descendants();

    // A second cycle: the same workspaces touched again (fresh actors), then idle. Memory
    // that grows here per cycle would be a leak rather than a high-water mark.
    let (c, b) = (client.clone(), base.clone());
    concurrently(n, CALLERS, move |i| {
        let (c, b) = (c.clone(), b.clone());
        async move { mcp_true(&c, &b, &format!("s{i:05}")).await }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again_kib = server.rss_kib();
    let again_actors = server.active_actors(&client).await;

    let per_workspace = (idle_kib as f64 - baseline_kib as f64) / n as f64;
    let per_actor = (idle_kib as f64 - reaped_kib as f64) / n as f64;
    println!(
        "server RSS, KiB: start {start_kib}, after warm-up {baseline_kib} ({warm_actors} actors), \
         {n} sandboxes created {created_kib}, touched and idle {idle_kib} ({idle_actors} actors), \
         actors reaped {reaped_kib} ({reaped_actors} actors), touched again and idle \
         {again_kib} ({again_actors} actors)"
    );
    println!(
        "per idle workspace (idle − warm-up) / {n}: {per_workspace:.1} KiB; \
         freed per reaped actor (idle − reaped) / {n}: {per_actor:.1} KiB"
    );
    println!(
        "server descendants while idle: {idle_procs} processes, {idle_bwrap} bwrap (at most \
         {most_procs} processes while waiting for the reaper); after reaping: {reaped_procs}, \
         {reaped_bwrap} bwrap ({teardown_s:.1} s after the last actor went for the agents to stop)"
    );
    println!(
        "create_sandbox {:.0}/s, touch (MCP execute_shell true) {:.0}/s, {CALLERS} callers",
        n as f64 / create_wall.as_secs_f64(),
        n as f64 / touch_wall.as_secs_f64()
    );
    println!(
        "{}",
        json!({
            "bench": "scale", "mode": "idle", "sandboxes": n, "actor_idle_s": actor_idle_s,
            "rss_kib": {"start": start_kib, "warm": baseline_kib, "created": created_kib,
                        "idle": idle_kib, "reaped": reaped_kib, "again": again_kib},
            "active_actors": {"warm": warm_actors, "idle": idle_actors, "reaped": reaped_actors,
                              "again": again_actors},
            "kib_per_idle_workspace": (per_workspace * 10.0).round() / 10.0,
            "kib_freed_per_actor": (per_actor * 10.0).round() / 10.0,
            "descendants_idle": idle_procs, "bwrap_idle": idle_bwrap,
            "descendants_idle_max": most_procs,
            "descendants_reaped": reaped_procs, "bwrap_reaped": reaped_bwrap,
            "teardown_s": teardown_s,
        })
    );
    println!("# load after: {}", uptime());
}

/// `calls` bare `bwrap … true` spawns by `CALLERS` threads over `dirs`; (wall, latencies).
fn bare_bwrap(
    bwrap: &Arc<Bwrap>,
    dirs: &Arc<Vec<PathBuf>>,
    calls: usize,
) -> (Duration, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (bwrap, dirs, next) = (bwrap.clone(), dirs.clone(), next.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= calls {
                        break lat;
                    }
                    let options = bwrap.options(&dirs[i % dirs.len()], WORKSPACE, &[], false, &[]);
                    let t = Instant::now();
                    let status = Command::new(&bwrap.path)
                        .args(&options)
                        .args(["--", "true"])
                        .env_clear()
                        .env("PATH", "/usr/bin:/bin")
                        .current_dir("/")
                        .status()
                        .unwrap();
                    lat.push(t.elapsed());
                    assert!(status.success());
                }
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(calls);
    for t in threads {
        lat.extend(t.join().unwrap());
    }
    (started.elapsed(), lat)
}

fn summary(label: &str, wall: Duration, lat: &mut [Duration]) -> (f64, Vec<f64>) {
    let q = quantiles_ms(lat);
    let rate = lat.len() as f64 / wall.as_secs_f64();
    println!(
        "{label:44} n={:5}  {rate:7.0} jobs/s  p50 {:7.2} ms  p99 {:7.2} ms",
        lat.len(),
        q[50],
        q[99]
    );
    (rate, q)
}

async fn bench_exec(calls: usize, rounds: usize) {
    const SANDBOXES: usize = 50;
    println!("# load before: {}", uptime());
    let server = Server::start(60).await;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let mut ids = Vec::new();
    for i in 0..SANDBOXES {
        ids.push(create_sandbox(&client, &base, &format!("x{i:02}")).await);
    }
    let names: Arc<Vec<String>> = Arc::new((0..SANDBOXES).map(|i| format!("x{i:02}")).collect());
    let bwrap = Arc::new(Bwrap::new(
        "/usr/bin/bwrap".into(),
        server.data.join("runtime"),
        true,
    ));
    let dirs: Arc<Vec<PathBuf>> = Arc::new(ids.iter().map(|id| server.sandbox_dir(id)).collect());
    for d in dirs.iter() {
        assert!(
            Path::new(d).is_dir(),
            "no sandbox directory {}",
            d.display()
        );
    }
    // Warm-up of both paths.
    let mcp_round = |n: usize| {
        let (c, b, names) = (client.clone(), base.clone(), names.clone());
        concurrently(n, CALLERS, move |i| {
            let (c, b, names) = (c.clone(), b.clone(), names.clone());
            async move { mcp_true(&c, &b, &names[i % names.len()]).await }
        })
    };
    mcp_round(200).await;
    {
        let (bwrap, dirs) = (bwrap.clone(), dirs.clone());
        tokio::task::spawn_blocking(move || bare_bwrap(&bwrap, &dirs, 100))
            .await
            .unwrap();
    }
    let per_round = calls.div_ceil(rounds.max(1));
    let (mut mcp_wall, mut mcp_lat) = (Duration::ZERO, Vec::new());
    let (mut bare_wall, mut bare_lat) = (Duration::ZERO, Vec::new());
    for _ in 0..rounds.max(1) {
        let (w, l) = mcp_round(per_round).await;
        mcp_wall += w;
        mcp_lat.extend(l);
        let (bwrap, dirs) = (bwrap.clone(), dirs.clone());
        let (w, l) = tokio::task::spawn_blocking(move || bare_bwrap(&bwrap, &dirs, per_round))
            .await
            .unwrap();
        bare_wall += w;
        bare_lat.extend(l);
    }
    let (mcp_rate, mcp_q) = summary(
        "MCP execute_shell `true`, 50 sandboxes",
        mcp_wall,
        &mut mcp_lat,
    );
    let (bare_rate, bare_q) = summary("bare `bwrap … true` spawns", bare_wall, &mut bare_lat);
    println!(
        "ratio MCP / bare: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x ({CALLERS} concurrent \
         callers each)",
        mcp_rate / bare_rate,
        mcp_q[50] / bare_q[50],
        mcp_q[99] / bare_q[99]
    );
    for (path, rate, q) in [
        ("mcp", mcp_rate, &mcp_q),
        ("bare_bwrap", bare_rate, &bare_q),
    ] {
        println!(
            "{}",
            json!({
                "bench": "scale", "mode": "exec", "path": path, "sandboxes": SANDBOXES,
                "callers": CALLERS, "calls": per_round * rounds.max(1),
                "jobs_per_s": rate.round(), "p50_ms": q[50], "p99_ms": q[99],
                "quantiles_ms": q,
            })
        );
    }
    println!("# load after: {}", uptime());
    std::io::stdout().flush().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("all");
    let n: Option<usize> = args.get(1).and_then(|s| s.parse().ok());
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        if matches!(mode, "idle" | "all") {
            bench_idle(n.unwrap_or(1000)).await;
        }
        if matches!(mode, "exec" | "all") {
            bench_exec(n.unwrap_or(2000), rounds).await;
        }
    });
}
