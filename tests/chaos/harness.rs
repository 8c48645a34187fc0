//! Real server processes for the chaos tests and the node benchmarks: `daytona-mcp serve` (the
//! built binary) on a random loopback port, each with its own data dir (and so its own node id),
//! all against one database; SIGKILL, restart, and the HTTP calls the tests make.
//!
//! Also compiled into `benches/nodes.rs` (with `#[path]`), so it depends on nothing of the test
//! binary's other modules.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The settings every node of a test gets: short leases and scans, so that a crash is resolved
/// within seconds and each test stays bounded in time.
#[derive(Clone, Debug)]
pub struct Timing {
    /// `queue.lease_s`.
    pub lease_s: u64,
    /// `queue.heartbeat_s`.
    pub heartbeat_s: u64,
    /// `queue.rescue_interval_s`.
    pub rescue_interval_s: u64,
    /// `queue.poll_interval_ms`.
    pub poll_interval_ms: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            lease_s: 3,
            heartbeat_s: 1,
            rescue_interval_s: 1,
            poll_interval_ms: 200,
        }
    }
}

/// How to start one node; kept so that the node can be started again after a kill.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// A short name for messages (`n0`, `n1`, …).
    pub name: String,
    /// Its own data dir: sandboxes of the local driver, the node id, the lock.
    pub data_dir: PathBuf,
    /// The shared database (`None`: SQLite in the data dir, only for one node).
    pub database_url: Option<String>,
    /// The admin key every node of the test accepts.
    pub key: String,
    pub timing: Timing,
    /// Further `DAYTONA_MCP_<SECTION>__<KEY>` settings.
    pub env: Vec<(String, String)>,
    /// Where the node's standard error goes (appended to across restarts).
    pub log: PathBuf,
}

/// One running (or killed) `daytona-mcp serve` process.
pub struct Node {
    pub spec: NodeSpec,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` of the current process (a restart takes a new port).
    pub base: String,
    pub client: reqwest::Client,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A reqwest client whose requests give up after `timeout` (a hung server is a failure, not a
/// hung test).
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// What an HTTP call answered: status, the `Retry-After` header, the JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Node {
    /// Starts a node and waits until `/readyz` answers 200.
    pub async fn start(spec: NodeSpec) -> Node {
        let mut node = Node {
            spec,
            child: None,
            base: String::new(),
            client: client(Duration::from_secs(30)),
        };
        node.launch().await;
        node
    }

    /// `n` nodes named `n0…`, each with its own data dir under `root`, on one database.
    pub async fn start_many(
        n: usize,
        root: &Path,
        database_url: Option<String>,
        key: &str,
        timing: &Timing,
        env: &[(String, String)],
    ) -> Vec<Node> {
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(
                Node::start(NodeSpec::new(
                    i,
                    root,
                    database_url.clone(),
                    key,
                    timing,
                    env,
                ))
                .await,
            );
        }
        nodes
    }

    async fn launch(&mut self) {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .expect("node log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_daytona-mcp"));
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&self.spec.data_dir)
        .env_remove("DATABASE_URL")
        .env("DAYTONA_MCP_API_KEY", &self.spec.key)
        .env(
            "DAYTONA_MCP_QUEUE__LEASE_S",
            self.spec.timing.lease_s.to_string(),
        )
        .env(
            "DAYTONA_MCP_QUEUE__HEARTBEAT_S",
            self.spec.timing.heartbeat_s.to_string(),
        )
        .env(
            "DAYTONA_MCP_QUEUE__RESCUE_INTERVAL_S",
            self.spec.timing.rescue_interval_s.to_string(),
        )
        .env(
            "DAYTONA_MCP_QUEUE__POLL_INTERVAL_MS",
            self.spec.timing.poll_interval_ms.to_string(),
        )
        .env("DAYTONA_MCP_SERVER__SHUTDOWN_GRACE_S", "5")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        if std::env::var("TEST_LOG").is_ok() {
            cmd.stderr(Stdio::inherit());
        } else {
            cmd.stderr(Stdio::from(log.try_clone().expect("node log file")));
        }
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        if let Some(url) = &self.spec.database_url {
            cmd.env("DATABASE_URL", url);
        }
        self.child = Some(cmd.spawn().expect("the server binary starts"));
        self.base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // Right after a SIGKILL the old process's lock on the data dir can outlive it
                // for a moment (see `lock_holders`); start again, as a supervisor would.
                let holders = lock_holders(&self.spec.data_dir);
                let locked = self
                    .log_tail()
                    .lines()
                    .last()
                    .is_some_and(|l| l.contains("is in use by another daytona-mcp process"));
                if locked && started.elapsed() < Duration::from_secs(20) {
                    eprintln!(
                        "node {}: data dir still locked by {holders:?}",
                        self.spec.name
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.child = Some(cmd.spawn().expect("the server binary starts"));
                    continue;
                }
                panic!(
                    "node {} exited at start-up ({status}); lock holders: {holders:?}; its log:\n{}",
                    self.spec.name,
                    self.log_tail()
                );
            }
            if let Ok(r) = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "node {} was not ready within 60 s; its log:\n{}",
            self.spec.name,
            self.log_tail()
        );
    }

    /// SIGKILL: no graceful shutdown, nothing written on the way out.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the node");
            child.wait().expect("reap the node");
        }
    }

    /// SIGTERM, then waits for the process to exit (the graceful stop).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the node is running");
        // SAFETY: `kill` on the pid of a child this process started and has not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        child.wait().expect("reap the node")
    }

    /// Starts the node again with the same data dir (so the same node id), on a new port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running node");
        self.launch().await;
    }

    /// Whether the process has exited by itself (it was not killed by the test).
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_some())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The node id the server generated into its data dir.
    pub fn node_id(&self) -> String {
        std::fs::read_to_string(self.spec.data_dir.join("node-id"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// The last 60 lines of the node's standard error.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.spec.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// `POST path` with a JSON body and the node's key.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Result<Answer> {
        self.post_with(path, body, &[]).await
    }

    /// `POST path` with extra headers.
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<Answer> {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.spec.key)
            .json(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        answer(request.send().await?).await
    }

    /// `GET path` with the node's key.
    pub async fn get(&self, path: &str) -> reqwest::Result<Answer> {
        answer(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.spec.key)
                .send()
                .await?,
        )
        .await
    }

    /// Creates a sandbox synchronously; returns its id.
    pub async fn create_sandbox(&self, name: &str) -> String {
        let a = self
            .post("/create_sandbox", &json!({"name": name}))
            .await
            .expect("create_sandbox answers");
        assert_eq!(
            a.status, 200,
            "create_sandbox {name} on {}: {}",
            self.spec.name, a.body
        );
        a.body["sandbox_id"].as_str().unwrap().to_string()
    }

    /// The job as `GET /v1/jobs/{id}` shows it, long-polling up to `wait` seconds.
    pub async fn job(&self, id: &str, wait: u32) -> reqwest::Result<Answer> {
        self.get(&format!("/v1/jobs/{id}?wait={wait}")).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Reads a response into an [`Answer`].
pub async fn answer(r: reqwest::Response) -> reqwest::Result<Answer> {
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = r.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

impl NodeSpec {
    /// Node `i` under `root`: `root/n{i}/data`, its log `root/n{i}.log`.
    pub fn new(
        i: usize,
        root: &Path,
        database_url: Option<String>,
        key: &str,
        timing: &Timing,
        env: &[(String, String)],
    ) -> NodeSpec {
        let name = format!("n{i}");
        NodeSpec {
            data_dir: root.join(&name).join("data"),
            log: root.join(format!("{name}.log")),
            name,
            database_url,
            key: key.to_string(),
            timing: timing.clone(),
            env: env.to_vec(),
        }
    }
}

/// Whether a job status is terminal.
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

/// A fresh admin key for one test.
pub fn new_key() -> String {
    format!("chaos-{}", uuid::Uuid::new_v4().simple())
}

/// The processes (pid: command line) that hold the data dir's lock file open.
pub fn lock_holders(data_dir: &Path) -> Vec<String> {
    let lock = data_dir.join("daytona-mcp.lock");
    let Ok(lock) = std::fs::canonicalize(&lock) else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let holds = std::fs::read_dir(entry.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == lock));
        if holds {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            holders.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    holders
}

/// The processes (pid: command line) whose environment contains `needle` (e.g. a run's
/// `MARK=` prefix): the sandboxed commands of a test, found from the host.
pub fn processes_with_env(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == std::process::id().to_string() {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| String::from_utf8_lossy(var).contains(needle))
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// Waits up to `within` until no process's environment contains `needle`; returns the
/// survivors (empty when all are gone).
pub async fn wait_processes_gone(needle: &str, within: Duration) -> Vec<String> {
    let started = Instant::now();
    loop {
        let left = processes_with_env(needle);
        if left.is_empty() || started.elapsed() > within {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
