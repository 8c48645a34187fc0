//! What a job's error tells a caller when the server itself failed: a generic message; the
//! details (a database error naming tables) go to the log, under the job's id.

use serde_json::json;
use sqlx::Connection;

use crate::helpers::{Db, spawn_with, test_config};

/// Runs one statement on the test server's database.
async fn execute(db: Db, url: &str, data_dir: &std::path::Path, sql: &str) {
    match db {
        Db::Sqlite => {
            let path = data_dir.join("daytona-mcp.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        Db::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

async fn a_database_failure_is_not_shown_in_the_job(db: Db) {
    let Some((config, dir)) = test_config(db).await else {
        return;
    };
    let db_url = config.database.url.clone();
    let app = spawn_with(config, dir).await;
    let id = app.sandbox("broken-db").await;

    // A command holds the sandbox until the test lets it go; the next one waits behind it.
    let holder = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "while [ ! -e go ]; do sleep 0.05; done"}),
        )
        .await;
    app.wait_for_state(&holder, "running").await;
    let victim = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "echo never"}),
        )
        .await;
    // The sandbox's row is damaged under the server: the waiting job cannot read its sandbox.
    let damage = match db {
        Db::Sqlite => "UPDATE sandboxes SET environment_vars = 'not json' WHERE name = 'broken-db'",
        Db::Postgres => "UPDATE sandboxes SET environment_vars = '[1]' WHERE name = 'broken-db'",
    };
    execute(db, &db_url, &app.data_dir, damage).await;
    let go = app.data_dir.join("sandboxes").join(&id).join("go");
    std::fs::write(&go, "").unwrap();
    let job = app.wait(&victim).await;
    execute(
        db,
        &db_url,
        &app.data_dir,
        "UPDATE sandboxes SET environment_vars = '{}' WHERE name = 'broken-db'",
    )
    .await;

    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["reason"], "internal", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    for internal in [
        "sandboxes",
        "environment_vars",
        "database",
        "corrupt",
        "decod",
        "column",
        "json",
    ] {
        assert!(
            !message.to_lowercase().contains(internal),
            "the job's error carries internals: {message}"
        );
    }
    assert!(message.contains("log"), "{message}");
    // The server keeps working once its database is whole again.
    let out = app.shell(&id, "echo fine").await;
    assert_eq!(out["stdout"], "fine\n");
}

crate::on_both_databases!(a_database_failure_is_not_shown_in_the_job);
