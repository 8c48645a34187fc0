//! Database faults: a private PostgreSQL cluster (its own data directory and port, never the
//! shared server) stopped and started under a running server, and backends of a test database
//! killed with `pg_terminate_backend`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Db, TestApp, spawn_with, test_config};
use crate::support;
use crate::support::pg_cluster::PgCluster;

/// Polls `check` every 100 ms until it holds or `seconds` pass.
async fn within(seconds: u64, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn status_of(app: &TestApp, path: &str) -> u16 {
    app.client
        .get(app.url(path))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The database stops under a running server and comes back: the server keeps answering
/// `/healthz`, says not ready, refuses submissions with 503 and `Retry-After` (never a 500,
/// never a job id), reconnects by itself, and the job it accepted before the outage (which
/// finished during it) is not lost.
#[actix_web::test]
async fn a_database_restart_is_survived_without_losing_accepted_jobs() {
    let Some(cluster) = PgCluster::start() else {
        support::skipped(
            support::Skip::Postgres,
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed",
        );
        return;
    };
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.database.url = cluster.url("postgres");
    config.database.acquire_timeout_ms = 1000;
    let app = spawn_with(config, dir).await;
    let sandbox = app.sandbox("outage").await;
    // Accepted before the outage; it ends while the database is down.
    let accepted = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": sandbox, "command": "sleep 2; echo survived"}),
        )
        .await;
    app.wait_for_state(&accepted, "running").await;

    cluster.pg_stop();
    assert_eq!(status_of(&app, "/healthz").await, 200);
    assert!(
        within(10, async || status_of(&app, "/readyz").await == 503).await,
        "/readyz did not report the outage"
    );
    // Metrics keep answering and say the database is down.
    let metrics = app.metrics().await;
    assert_eq!(
        crate::helpers::sample(&metrics, "daytona_mcp_database_up"),
        Some(0.0),
        "database_up during the outage"
    );
    for (path, body) in [
        (
            "/execute_shell",
            json!({"sandbox_id": sandbox, "command": "echo never"}),
        ),
        (
            "/v1/jobs",
            json!({"tool": "execute_shell", "arguments": {"sandbox_id": sandbox, "command": "echo never"}}),
        ),
    ] {
        let response = app.post(path, &body).await;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
        assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok()));
        assert!(body.get("job_id").is_none(), "{body}");
    }
    // MCP: a JSON-RPC error with status 503, not an internal error.
    let mcp = app
        .modern(
            json!(9),
            "tools/call",
            json!({"name": "execute_shell",
                   "arguments": {"sandbox_id": sandbox, "command": "echo never"}}),
        )
        .await;
    assert_eq!(mcp.status, 503, "{:?}", mcp.body);
    assert_eq!(mcp.error_code(), -32000, "{:?}", mcp.body);
    assert!(
        mcp.header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "an MCP 503 says when to retry: {:?}",
        mcp.headers
    );
    // Reads of jobs fail the same way, not with a 500.
    let read = app.get(&format!("/v1/jobs/{accepted}")).await;
    assert_eq!(read.status().as_u16(), 503);
    // The accepted job's command ends meanwhile; its outcome waits in the completer.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let outage = Instant::now();
    cluster.pg_start();
    assert!(
        within(30, async || status_of(&app, "/readyz").await == 200).await,
        "the server did not reconnect"
    );
    eprintln!("ready again {:?} after the restart", outage.elapsed());
    let job = app.wait(&accepted).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["stdout"], "survived\n", "{job}");
    // New work runs again, and a synchronous call is answered through the reconnected pool.
    let again = app.shell(&sandbox, "echo back").await;
    assert_eq!(again["stdout"], "back\n");
    // Only the two jobs that were accepted exist: the refused submissions left nothing.
    let (_, page) = app.get_json("/v1/jobs?tool=execute_shell").await;
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(2), "{page}");
}

/// Every backend of the server's (own, fresh) test database killed at once: the pool and the
/// listener reconnect, and a synchronous call afterwards is answered.
#[actix_web::test]
async fn killed_backends_are_replaced() {
    let Some((config, dir)) = test_config(Db::Postgres).await else {
        return;
    };
    let url = config.database.url.clone();
    let app = spawn_with(config, dir).await;
    let sandbox = app.sandbox("terminated").await;
    assert_eq!(app.shell(&sandbox, "echo one").await["stdout"], "one\n");
    let killed = support::pg_cluster::terminate_backends(&url).await;
    assert!(killed >= 2, "the pool and the listener: {killed}");
    let mut answered = None;
    for _ in 0..20 {
        let (status, body) = app
            .call(
                "/execute_shell",
                json!({"sandbox_id": sandbox, "command": "echo two"}),
            )
            .await;
        assert!(status == 200 || status == 503, "{status}: {body}");
        if status == 200 {
            answered = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        answered.expect("answered after reconnecting")["stdout"],
        "two\n"
    );
    // The listener is back: a LISTEN backend exists again.
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    assert!(
        within(10, async || {
            let listening: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            )
            .fetch_one(&mut admin)
            .await
            .unwrap();
            listening == 1
        })
        .await,
        "the notification listener did not reconnect"
    );
}

/// An exhausted pool (every connection stuck behind a lock this test holds on the jobs table)
/// answers 503 `database_unavailable` with `Retry-After` once `database.acquire_timeout_ms`
/// passes, never a 500 (also a submission waiting behind a stuck group commit); submissions that
/// got a connection finish once the lock goes, and every id that was answered exists, none
/// other.
#[actix_web::test]
async fn an_exhausted_pool_answers_503_and_accepts_nothing_it_did_not_answer() {
    let Some((mut config, dir)) = test_config(Db::Postgres).await else {
        return;
    };
    config.database.max_connections = 2;
    config.database.acquire_timeout_ms = 500;
    let url = config.database.url.clone();
    let app = spawn_with(config, dir).await;

    use sqlx::Connection;
    let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let submit = || async {
        let response = app
            .post(
                "/v1/jobs",
                &json!({"tool": "list_sandboxes", "arguments": {}}),
            )
            .await;
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        (status, retry_after, body)
    };
    // Release the lock after a few seconds, while the submissions are in flight.
    let release = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        lock.rollback().await.unwrap();
    };
    // Staggered, so that later submissions arrive while earlier ones hold the connections or
    // (with group commit) wait in a stuck transaction, and find no place within the timeout.
    let staggered = (0..6u64).map(|i| async move {
        tokio::time::sleep(Duration::from_millis(150 * i)).await;
        submit().await
    });
    let (answers, ()) = tokio::join!(futures::future::join_all(staggered), release);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (status, retry_after, body) in &answers {
        match status {
            202 => accepted.push(body["job_id"].as_str().unwrap().to_string()),
            503 => {
                assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
                assert!(retry_after, "{body}");
                assert!(body.get("job_id").is_none());
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(refused > 0, "the pool was never exhausted: {answers:?}");
    for id in &accepted {
        assert_eq!(app.wait(id).await["status"], "succeeded");
    }
    let (_, page) = app.get_json("/v1/jobs?tool=list_sandboxes").await;
    assert_eq!(
        page["jobs"].as_array().map(Vec::len),
        Some(accepted.len()),
        "exactly the answered jobs exist: {page}"
    );
}
