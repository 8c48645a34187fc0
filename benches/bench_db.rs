//! Fresh PostgreSQL databases for the benches (`DAYTONA_MCP_BENCH_POSTGRES` names a server and
//! a database the benches may create others from), dropped after each run so that repeated
//! runs do not fill the server. Shared by `pipeline.rs` and `submit.rs` through `#[path]`.

use sqlx::Connection;

/// The URL of a new, empty database, or `None` when no PostgreSQL is set up for benches.
pub async fn postgres_url() -> Option<String> {
    let admin = std::env::var("DAYTONA_MCP_BENCH_POSTGRES").ok()?;
    let name = format!("dmcp_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .ok()?;
    let base = &admin[..admin.rfind('/').unwrap()];
    Some(format!("{base}/{name}"))
}

/// Drops a database [`postgres_url`] created; anything else (a SQLite URL) is left alone.
pub async fn drop_database(url: &str) {
    let Ok(admin) = std::env::var("DAYTONA_MCP_BENCH_POSTGRES") else {
        return;
    };
    if !url.starts_with("postgres") {
        return;
    }
    let name = &url[url.rfind('/').unwrap() + 1..];
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}
