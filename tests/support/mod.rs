//! Shared by the test binaries: real databases for each test.
//!
//! SQLite: a fresh file in a temporary directory. PostgreSQL: a fresh database on the server
//! named by `DAYTONA_MCP_TEST_POSTGRES` (a URL whose database the tests may create others from,
//! e.g. `postgres://postgres@127.0.0.1:5432/postgres`). Without it, PostgreSQL tests are skipped
//! with a message, unless `DAYTONA_MCP_REQUIRE_POSTGRES=1` (set by `.ci/run`), which turns the
//! skip into a failure.

#![allow(dead_code)]

use sqlx::Connection;

/// A URL of a new, empty PostgreSQL database, or `None` when PostgreSQL tests are not set up.
pub async fn fresh_postgres_url() -> Option<String> {
    let Ok(admin) = std::env::var("DAYTONA_MCP_TEST_POSTGRES") else {
        if std::env::var("DAYTONA_MCP_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!(
                "PostgreSQL tests are required (DAYTONA_MCP_REQUIRE_POSTGRES=1) but \
                 DAYTONA_MCP_TEST_POSTGRES is not set"
            );
        }
        eprintln!("skipped: set DAYTONA_MCP_TEST_POSTGRES to run the PostgreSQL variant");
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
    Some(with_database(&admin, &name))
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
