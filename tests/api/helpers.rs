//! A real server on a random port, on a real database, with real sandboxes.

use std::time::Duration;

use actix_web::dev::ServerHandle;
use daytona_mcp::app::Application;
use daytona_mcp::config::Config;
use serde_json::{Value, json};

use crate::support;

/// Which database a test server uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub base: String,
    pub port: u16,
    /// The separate metrics listener's port, when `server.metrics_listen` is set.
    pub metrics_port: Option<u16>,
    pub key: String,
    pub client: reqwest::Client,
    pub data_dir: std::path::PathBuf,
    handle: ServerHandle,
    /// The server runs in its own thread and actix system, like a separate process; dropping
    /// the `TestApp` stops it gracefully and joins the thread.
    thread: Option<std::thread::JoinHandle<()>>,
    dir: Option<TestDir>,
}

/// What a test server's data lives in: a temporary directory, and for PostgreSQL a fresh
/// database. Both go when this is dropped (the database with its connections), so after the
/// server stopped, whether the test passed or failed.
pub struct TestDir {
    _dir: tempfile::TempDir,
    _database: Option<support::PgDatabase>,
}

impl TestDir {
    /// The temporary directory (the data dir is its `data` subdirectory). Used by
    /// `tests/driver`, which shares this file.
    #[allow(dead_code)]
    pub fn path(&self) -> &std::path::Path {
        self._dir.path()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop_server();
    }
}

fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        daytona_mcp::logging::init(&daytona_mcp::config::LogConfig {
            level: "debug,sqlx=warn,actix_server=warn".into(),
            format: "pretty".into(),
        });
    }
}

/// A configuration for a test server: random port, temporary data dir, one HTTP worker.
pub async fn test_config(db: Db) -> Option<(Config, TestDir)> {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".into();
    config.server.workers = 1;
    config.auth.api_key = format!("test-{}", uuid::Uuid::new_v4().simple());
    config.queue.poll_interval_ms = 500;
    config.queue.retention_hours = 0;
    // The server runs in this test binary; the sandbox agent is the real binary's.
    config.local.agent_path = env!("CARGO_BIN_EXE_daytona-mcp").into();
    let database = match db {
        Db::Sqlite => None,
        Db::Postgres => Some(support::fresh_postgres().await?),
    };
    if let Some(database) = &database {
        config.database.url = database.url.clone();
    }
    Some((
        config,
        TestDir {
            _dir: dir,
            _database: database,
        },
    ))
}

/// Starts a server; `None` when the database is not available (PostgreSQL not configured).
pub async fn spawn_app(db: Db) -> Option<TestApp> {
    let (config, dir) = test_config(db).await?;
    Some(spawn_with(config, dir).await)
}

pub async fn spawn_with(config: Config, dir: TestDir) -> TestApp {
    spawn_with_drivers(config, dir, None).await
}

/// Builds the drivers of a test server inside its actix system.
pub type MakeDrivers = Box<
    dyn FnOnce(
            Config,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = daytona_mcp::drivers::Drivers>>,
        > + Send,
>;

/// A server whose drivers come from `make` (injected, as `Application::build_with` allows)
/// instead of the configuration.
pub async fn spawn_with_drivers(
    mut config: Config,
    dir: TestDir,
    make: Option<MakeDrivers>,
) -> TestApp {
    let key = config.auth.api_key.clone();
    config.server.shutdown_grace_s = 1;
    let (tx, rx) = std::sync::mpsc::channel();
    let data_dir = config.data_dir.clone();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let drivers = match make {
                Some(make) => Some(make(config.clone()).await),
                None => None,
            };
            let app = Application::build_with(config, drivers)
                .await
                .expect("server builds");
            tx.send((app.port(), app.metrics_port(), app.handle()))
                .unwrap();
            app.run_until_stopped().await.expect("server stops cleanly");
        });
    });
    let (port, metrics_port, handle) =
        tokio::task::spawn_blocking(move || rx.recv().expect("server started"))
            .await
            .unwrap();
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        port,
        metrics_port,
        key,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
        data_dir: data_dir.canonicalize().unwrap(),
        handle,
        thread: Some(thread),
        dir: Some(dir),
    }
}

impl TestApp {
    fn stop_server(&mut self) {
        if let Some(thread) = self.thread.take() {
            // `stop` sends its command at once; the returned future only reports completion.
            drop(self.handle.stop(false));
            let _ = thread.join();
        }
    }

    /// Stops the server gracefully and hands back its temporary directory (with the data dir
    /// and SQLite file) and database, which dropping the `TestApp` would delete.
    pub fn stop(mut self) -> TestDir {
        self.stop_server();
        self.dir.take().expect("the directory is still there")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn authed(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        builder.bearer_auth(&self.key)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.authed(self.client.get(self.url(path)))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.authed(self.client.post(self.url(path)))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs and returns the status and the JSON body.
    pub async fn call(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.post(path, &body).await;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` with `credential` (a key or a token) as the bearer instead of the app's key.
    pub async fn get_json_with(&self, credential: &str, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Creates a sandbox and returns its id.
    pub async fn sandbox(&self, name: &str) -> String {
        let (status, body) = self.call("/create_sandbox", json!({"name": name})).await;
        assert_eq!(status, 200, "create_sandbox: {body}");
        body["sandbox_id"].as_str().unwrap().to_string()
    }

    /// Runs a shell command synchronously and returns the output object.
    pub async fn shell(&self, sandbox: &str, command: &str) -> Value {
        let (status, body) = self
            .call(
                "/execute_shell",
                json!({"sandbox_id": sandbox, "command": command}),
            )
            .await;
        assert_eq!(status, 200, "execute_shell {command}: {body}");
        body
    }

    /// Submits a call asynchronously and returns the job id.
    pub async fn submit(&self, tool: &str, arguments: Value) -> String {
        let (status, body) = self
            .call("/v1/jobs", json!({"tool": tool, "arguments": arguments}))
            .await;
        assert_eq!(status, 202, "submit {tool}: {body}");
        body["job_id"].as_str().unwrap().to_string()
    }

    /// Waits until the job is terminal and returns it.
    pub async fn wait(&self, job_id: &str) -> Value {
        for _ in 0..60 {
            let (status, job) = self.get_json(&format!("/v1/jobs/{job_id}?wait=10")).await;
            assert_eq!(status, 200, "get job: {job}");
            if matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return job;
            }
        }
        panic!("job {job_id} did not finish");
    }

    /// Waits until the job is in `state`.
    pub async fn wait_for_state(&self, job_id: &str, state: &str) {
        for _ in 0..400 {
            let (_, job) = self.get_json(&format!("/v1/jobs/{job_id}")).await;
            if job["status"] == state {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("job {job_id} never became {state}");
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Every host process: its pid and its `/proc` directory.
pub fn host_processes() -> Vec<(u32, std::path::PathBuf)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, entry.path()))
        })
        .collect()
}

/// Host processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (pid, dir) in host_processes() {
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(dir.join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!("{pid}: {cmdline}"));
            }
        }
    }
    found
}

/// Polls `check` for up to `seconds`.
pub async fn eventually(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..seconds * 20 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// An external program the tests drive (promtool, prometheus, docker-compose, hadolint, node):
/// its path, found on `PATH` or at an absolute path; else `None` with a message, or a failure
/// when `DAYTONA_MCP_REQUIRE_CLIENTS=1` (set by `.ci/run`, which installs them all).
pub fn required_tool(program: &str, install: &str) -> Option<std::path::PathBuf> {
    let candidate = std::path::Path::new(program);
    let found = if candidate.is_absolute() {
        candidate.is_file().then(|| candidate.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
    };
    if found.is_none() {
        let message = format!("{program} is not installed ({install})");
        if std::env::var("DAYTONA_MCP_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!("{message} (DAYTONA_MCP_REQUIRE_CLIENTS=1)");
        }
        eprintln!("skipped: {message}");
    }
    found
}

/// The repository's root (where `prometheus/`, `grafana/`, `Dockerfile` are).
pub fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where `tests/monitoring/setup.sh` installs its tools.
pub fn monitoring_tools() -> std::path::PathBuf {
    std::env::var_os("DAYTONA_MCP_MONITORING_TOOLS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo().join("target/monitoring-tools"))
}

/// The value of the sample `series` (a full series as the text format prints it, labels in
/// the server's order) in a scrape, if present.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
