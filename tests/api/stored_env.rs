//! A sandbox's `environment_vars` are stored once, on the sandbox: the `create_sandbox` job
//! keeps only their names, so job rows, job listings and audit rows never hold the values.

use serde_json::json;
use sqlx::{Connection, Row};

use crate::helpers::{Db, spawn_with, test_config};

/// How many rows of each table hold `needle` in a text column.
const PER_TABLE: [(&str, &str); 5] = [
    (
        "jobs",
        "SELECT COUNT(*) AS n FROM jobs WHERE CAST(arguments AS TEXT) LIKE $1 \
         OR COALESCE(CAST(result AS TEXT), '') LIKE $1 OR COALESCE(CAST(error AS TEXT), '') LIKE $1",
    ),
    (
        "audit_log",
        "SELECT COUNT(*) AS n FROM audit_log WHERE COALESCE(CAST(args_summary AS TEXT), '') \
         LIKE $1 OR COALESCE(args_digest, '') LIKE $1",
    ),
    (
        "job_output",
        "SELECT COUNT(*) AS n FROM job_output WHERE CAST(data AS TEXT) LIKE $1",
    ),
    (
        "sandboxes",
        "SELECT COUNT(*) AS n FROM sandboxes WHERE CAST(environment_vars AS TEXT) LIKE $1",
    ),
    (
        "sandboxes (elsewhere)",
        "SELECT COUNT(*) AS n FROM sandboxes WHERE CAST(labels AS TEXT) LIKE $1 \
         OR COALESCE(git_repo, '') LIKE $1",
    ),
];

async fn environment_values_are_stored_only_with_the_sandbox(db: Db) {
    let Some((config, dir)) = test_config(db).await else {
        return;
    };
    let db_url = config.database.url.clone();
    let app = spawn_with(config, dir).await;
    let secret = format!("envsecret{}", uuid::Uuid::new_v4().simple());

    // A synchronous create, and an asynchronous one submitted twice with one idempotency key.
    let (status, created) = app
        .call(
            "/create_sandbox",
            json!({"name": "env-sync", "environment_vars": {"API_SECRET": secret, "PLAIN": "p"}}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let request = json!({
        "tool": "create_sandbox",
        "arguments": {"name": "env-async", "environment_vars": {"API_SECRET": secret}},
        "idempotency_key": "create-env-async",
    });
    let (status, first) = app.call("/v1/jobs", request.clone()).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = app.call("/v1/jobs", request).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["job_id"], first["job_id"], "a replay is the same job");
    let job = app.wait(first["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, list) = app.call("/list_sandboxes", json!({})).await;
    assert_eq!(
        list["count"], 2,
        "a replay creates no second sandbox: {list}"
    );

    // A taken name is refused at submission, before any job exists.
    let (status, taken) = app
        .call(
            "/v1/jobs",
            json!({"tool": "create_sandbox", "arguments": {"name": "env-sync"}}),
        )
        .await;
    assert_eq!(status, 409, "{taken}");
    assert_eq!(taken["error"]["code"], "conflict", "{taken}");
    let (_, creates) = app.get_json("/v1/jobs?tool=create_sandbox&limit=100").await;
    assert_eq!(creates["jobs"].as_array().unwrap().len(), 2, "{creates}");

    // The jobs API shows the names, not the values.
    let (_, shown) = app
        .get_json(&format!("/v1/jobs/{}", first["job_id"].as_str().unwrap()))
        .await;
    assert!(
        shown["arguments"]["environment_vars"]
            .to_string()
            .contains("API_SECRET"),
        "{shown}"
    );
    assert!(!shown.to_string().contains(&secret), "{shown}");
    let (_, all) = app.get_json("/v1/jobs?limit=100").await;
    assert!(
        !all.to_string().contains(&secret),
        "the job listing shows a value"
    );

    // In the database: only the two sandbox rows hold it.
    let like = format!("%{secret}%");
    let mut counts = Vec::new();
    match db {
        Db::Sqlite => {
            let path = app.data_dir.join("daytona-mcp.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            for (table, query) in PER_TABLE {
                let n: i64 = sqlx::query(sqlx::AssertSqlSafe(query.replace("$1", "?1")))
                    .bind(&like)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
                    .get("n");
                counts.push((table, n));
            }
            // A compacted copy has no free pages: every occurrence left is live data.
            let copy = tempfile::tempdir().unwrap();
            let copy_path = copy.path().join("copy.db");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "VACUUM INTO '{}'",
                copy_path.display()
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            let bytes = std::fs::read(&copy_path).unwrap();
            let occurrences = bytes
                .windows(secret.len())
                .filter(|w| *w == secret.as_bytes())
                .count();
            assert_eq!(
                occurrences, 2,
                "the database file holds the value elsewhere"
            );
        }
        Db::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db_url).await.unwrap();
            for (table, query) in PER_TABLE {
                let query = query.replace("CAST(data AS TEXT)", "encode(data, 'escape')");
                let n: i64 = sqlx::query(sqlx::AssertSqlSafe(query))
                    .bind(&like)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
                    .get("n");
                counts.push((table, n));
            }
        }
    }
    assert_eq!(
        counts,
        [
            ("jobs", 0),
            ("audit_log", 0),
            ("job_output", 0),
            ("sandboxes", 2),
            ("sandboxes (elsewhere)", 0)
        ]
    );
    // The variables reach commands (printed last: a job's output is stored with it).
    for name in ["env-sync", "env-async"] {
        let out = app.shell(name, "printf %s \"$API_SECRET\"").await;
        assert_eq!(out["stdout"], secret.as_str(), "{name}");
    }
}

crate::on_both_databases!(environment_values_are_stored_only_with_the_sandbox);
