//! Job retention runs on its own: a node prunes at start-up and hourly.

use serde_json::json;
use sqlx::Connection;

use crate::helpers::{Db, spawn_with, test_config};
use crate::on_both_databases;

on_both_databases!(a_node_prunes_finished_jobs_past_their_retention);

/// Jobs that finished longer ago than `queue.retention_hours` are gone after the next start
/// (the first pass runs at once), their keys free; younger ones and the audit log stay.
async fn a_node_prunes_finished_jobs_past_their_retention(db: Db) {
    let Some((mut config, dir)) = test_config(db).await else {
        return;
    };
    let url = match db {
        Db::Sqlite => format!(
            "sqlite://{}",
            config.data_dir.join("daytona-mcp.db").display()
        ),
        Db::Postgres => config.database.url.clone(),
    };
    let app = spawn_with(config.clone(), dir).await;
    let (status, old) = app
        .call(
            "/v1/jobs",
            json!({"tool": "list_sandboxes", "arguments": {}, "idempotency_key": "old-one"}),
        )
        .await;
    assert_eq!(status, 202, "{old}");
    let old = old["job_id"].as_str().unwrap().to_string();
    app.wait(&old).await;
    let young = app.submit("list_sandboxes", json!({})).await;
    app.wait(&young).await;
    let dir = app.stop();

    // Three hours ago, by the database's clock.
    let sql_sqlite = "UPDATE jobs SET finished_at = finished_at - 10800000000 WHERE id = ?";
    let sql_pg =
        "UPDATE jobs SET finished_at = finished_at - interval '3 hours' WHERE id = $1::uuid";
    let changed = if url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(sql_sqlite)
            .bind(&old)
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected()
    } else {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sql_pg)
            .bind(&old)
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected()
    };
    assert_eq!(changed, 1);

    config.queue.retention_hours = 1;
    let app = spawn_with(config, dir).await;
    let mut gone = false;
    for _ in 0..100 {
        if app.get(&format!("/v1/jobs/{old}")).await.status().as_u16() == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the old job was not pruned");
    let (status, _) = app.get_json(&format!("/v1/jobs/{young}")).await;
    assert_eq!(status, 200, "a younger job stays");
    // Its idempotency key went with it: the key makes a new job now.
    let (status, again) = app
        .call(
            "/v1/jobs",
            json!({"tool": "list_sandboxes", "arguments": {}, "idempotency_key": "old-one"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_ne!(again["job_id"].as_str(), Some(old.as_str()));
}
