//! Shared by the test binaries: real databases for each test, and an honest account of what was
//! skipped.
//!
//! SQLite: a fresh file in a temporary directory. PostgreSQL: a fresh database on the server
//! named by `DAYTONA_MCP_TEST_POSTGRES` (a URL whose database the tests may create others from,
//! e.g. `postgres://postgres@127.0.0.1:5432/postgres`), dropped again when the test ends, passed
//! or failed. Without it, PostgreSQL tests are skipped, unless `DAYTONA_MCP_REQUIRE_POSTGRES=1`
//! (set by `.ci/run`), which turns the skip into a failure.
//!
//! A skipped test still shows as `ok` in libtest's list (stable Rust has no "skipped" outcome,
//! and `#[ignore]` would hide the test from every run). So each skip is recorded with its test's
//! name, and when the test binary exits, a summary of the skips is written straight to the
//! process's standard error, below libtest's `test result:` line, where a plain `cargo test`
//! shows it (output written with `eprintln!` inside a passing test is captured and discarded).

#![allow(dead_code)]

pub mod git;
pub mod pg_cluster;
pub mod tree;

use std::io::Write;
use std::sync::{Mutex, Once};

use sqlx::Connection;

/// Why a test did not run its subject.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Skip {
    /// `DAYTONA_MCP_TEST_POSTGRES` is not set.
    Postgres,
    /// A real client (`tests/clients/setup.sh`) is not installed.
    Client,
}

impl Skip {
    /// What was skipped, why, and how to run it.
    fn heading(self) -> &'static str {
        match self {
            Skip::Postgres => {
                "PostgreSQL variants: DAYTONA_MCP_TEST_POSTGRES is not set (to run them: \
                 DAYTONA_MCP_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/postgres cargo test)"
            }
            Skip::Client => {
                "real-client tests: their client is not installed (to run them: \
                 tests/clients/setup.sh, then cargo test)"
            }
        }
    }
}

/// The skips of this test binary: (why, test name, detail).
static SKIPS: Mutex<Vec<(Skip, String, String)>> = Mutex::new(Vec::new());
static REPORT_AT_EXIT: Once = Once::new();

/// Records that the running test skips its subject, and says so at once (visible with
/// `--nocapture`) and in the summary at exit (visible always).
pub fn skipped(why: Skip, detail: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string();
    eprintln!("skipped: {detail}");
    SKIPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((why, test, detail.to_string()));
    REPORT_AT_EXIT.call_once(|| {
        // SAFETY: `report_skips` is a plain `extern "C"` function that neither unwinds nor
        // returns anything.
        unsafe {
            libc::atexit(report_skips);
        }
    });
}

/// The summary of [`skipped`] calls, written when the test binary exits (after libtest printed
/// its result). Writes straight to standard error, which libtest does not capture.
extern "C" fn report_skips() {
    let skips = match SKIPS.lock() {
        Ok(skips) => skips,
        Err(e) => e.into_inner(),
    };
    if skips.is_empty() {
        return;
    }
    let mut text = format!(
        "\nskipped: {} of the tests above passed without running what they test:\n",
        skips.len()
    );
    for why in [Skip::Postgres, Skip::Client] {
        let mut tests: Vec<&str> = skips
            .iter()
            .filter(|(w, _, _)| *w == why)
            .map(|(_, test, _)| test.as_str())
            .collect();
        if tests.is_empty() {
            continue;
        }
        tests.sort_unstable();
        text.push_str(&format!("  {} {}\n", tests.len(), why.heading()));
        for test in tests {
            text.push_str(&format!("    {test}\n"));
        }
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}
/// A fresh PostgreSQL database for one test, dropped (with its connections) when this value
/// is, which happens when the test ends, passed or failed.
pub struct PgDatabase {
    /// The database's URL.
    pub url: String,
    admin: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // A runtime of its own on a thread of its own: this may run inside an async test's
        // runtime (which cannot block on another future) or while a failed test unwinds.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: cannot drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// A new, empty PostgreSQL database, or `None` (recorded as a skip) when PostgreSQL tests are
/// not set up.
pub async fn fresh_postgres() -> Option<PgDatabase> {
    let Ok(admin) = std::env::var("DAYTONA_MCP_TEST_POSTGRES") else {
        if std::env::var("DAYTONA_MCP_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!(
                "PostgreSQL tests are required (DAYTONA_MCP_REQUIRE_POSTGRES=1) but \
                 DAYTONA_MCP_TEST_POSTGRES is not set"
            );
        }
        skipped(
            Skip::Postgres,
            "set DAYTONA_MCP_TEST_POSTGRES to run the PostgreSQL variant",
        );
        return None;
    };
    let name = format!("dmcp_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to DAYTONA_MCP_TEST_POSTGRES: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    Some(PgDatabase {
        url: with_database(&admin, &name),
        admin,
        name,
    })
}

/// Whether a PostgreSQL database of that name exists on the `DAYTONA_MCP_TEST_POSTGRES` server.
pub async fn postgres_database_exists(name: &str) -> bool {
    let admin = std::env::var("DAYTONA_MCP_TEST_POSTGRES").expect("PostgreSQL is configured");
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    count > 0
}

impl PgDatabase {
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}
