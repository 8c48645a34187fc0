//! A private PostgreSQL cluster for tests and benchmarks that stop and restart the database:
//! `initdb` into a temporary directory as the `postgres` user, served on a random loopback port
//! with its socket in that directory. The shared cluster's lifecycle is never touched.
//!
//! The cluster is stopped (immediate mode) and its directory removed when the value is dropped,
//! also while a failed test unwinds. Used by the api tests (`db_faults`), the chaos tests and
//! `benches/nodes.rs` (through `#[path]`, so it depends on nothing else of the test support).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sqlx::Connection;

/// A private PostgreSQL cluster.
pub struct PgCluster {
    /// Holds the data directory, the socket and the log.
    dir: tempfile::TempDir,
    bindir: PathBuf,
    pub port: u16,
}

/// The directory of `initdb` and `pg_ctl`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`; `None` when PostgreSQL's server programs are not installed.
pub fn server_bindir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| d.join("initdb").is_file()) {
        return Some(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// A loopback port free at the time of asking.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether this process runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL program as the `postgres` user when this process is root (PostgreSQL
/// refuses to run as root), else as the current user.
fn as_postgres(program: &Path, args: &[&str]) -> Output {
    if !is_root() {
        return Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    }
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} as postgres: {e}", program.display()))
}

fn check(what: &str, output: Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl PgCluster {
    /// Initialises and starts a cluster; `None` when PostgreSQL's server programs are missing.
    pub fn start() -> Option<PgCluster> {
        let bindir = server_bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("dmcp-pgcluster-")
            .tempdir()
            .expect("temporary directory");
        // The postgres user owns the cluster's directory (when the programs run as it).
        if is_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .output()
                .expect("chown");
            check("chown of the cluster directory", chown);
        }
        let cluster = PgCluster {
            dir,
            bindir,
            port: free_port(),
        };
        let data = cluster.data_dir();
        check(
            "initdb",
            as_postgres(
                &cluster.bindir.join("initdb"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            ),
        );
        cluster.pg_start();
        Some(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data_dir();
        let log = self.dir.path().join("postgres.log");
        let mut all = vec!["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()];
        all.extend_from_slice(args);
        as_postgres(&self.bindir.join("pg_ctl"), &all)
    }

    /// Starts the server and waits until it accepts connections. On a loaded machine a start
    /// now and then outlives pg_ctl's wait; it is tried again (a running server makes the next
    /// `start` fail fast, so `status` decides first), and a final failure shows the log.
    pub fn pg_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let mut last = None;
        for _ in 0..3 {
            let started = self.pg_ctl(&["-w", "-t", "60", "-o", &options, "start"]);
            if started.status.success() || self.running() {
                return;
            }
            last = Some(started);
            std::thread::sleep(Duration::from_millis(500));
        }
        let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let last = last.expect("three attempts");
        panic!(
            "pg_ctl start failed ({}):\n{}\n{}\n{log}",
            last.status,
            String::from_utf8_lossy(&last.stdout),
            String::from_utf8_lossy(&last.stderr)
        );
    }

    /// Whether the server runs (`pg_ctl status`).
    fn running(&self) -> bool {
        self.pg_ctl(&["status"]).status.success()
    }

    /// Stops the server (fast mode: clients are disconnected, the shutdown checkpoint is
    /// written), as `pg_ctlcluster … stop` does.
    pub fn pg_stop(&self) {
        check("pg_ctl stop", self.pg_ctl(&["-w", "-m", "fast", "stop"]));
    }

    /// Restarts the server in one step.
    pub fn pg_restart(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        check(
            "pg_ctl restart",
            self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "-o", &options, "restart"]),
        );
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name`; returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the private cluster");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        self.url(name)
    }

    /// Terminates every backend connected to database `name` (only that database's), as an
    /// administrator or a failover would; returns how many were terminated.
    pub async fn terminate_backends(&self, name: &str) -> i64 {
        terminate_backends(&self.url(name)).await
    }

    /// Waits until the server accepts a connection; returns how long that took.
    pub async fn wait_accepting(&self, within: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < within {
            if sqlx::PgConnection::connect(&self.url("postgres"))
                .await
                .is_ok()
            {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the private cluster did not accept connections within {within:?}");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: nothing of this cluster needs to survive. The directory goes with `dir`.
        let _ = self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
    }
}

/// Terminates every backend of the database `url` names but the caller's own (a PostgreSQL
/// restart as its clients see it), on any server, not only a private cluster; returns how many
/// there were.
pub async fn terminate_backends(url: &str) -> i64 {
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to terminate backends");
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t",
    )
    .fetch_one(&mut admin)
    .await
    .expect("pg_terminate_backend");
    count
}
