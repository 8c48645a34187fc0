//! API keys stored in the database: created, listed and revoked with the real binary while a
//! real server runs on the same database; the server honours each change at its next request,
//! and the database never holds a key itself.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_with, test_config};

/// The real binary on the test server's database, with none of the caller's settings.
fn cli(database: &CliDatabase) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_daytona-mcp"));
    for (name, _) in std::env::vars() {
        if name.starts_with("DAYTONA") || name == "DATABASE_URL" || name == "MCP_DEBUG" {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command.current_dir(&database.cwd);
    command
}

/// Where the CLI finds the server's database: its data dir (SQLite) or URL (PostgreSQL).
struct CliDatabase {
    args: Vec<String>,
    cwd: std::path::PathBuf,
}

/// Runs `keys <args>` and returns stdout; a failure panics with both streams.
fn keys(database: &CliDatabase, args: &[&str]) -> String {
    let output = cli(database)
        .arg("keys")
        .args(args)
        .args(&database.args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "keys {args:?}: {stdout}\n{stderr}");
    stdout
}

async fn spawn(db: Db) -> Option<(TestApp, CliDatabase)> {
    let (config, dir) = test_config(db).await?;
    let mut args = vec![
        "--data-dir".to_string(),
        config.data_dir.display().to_string(),
    ];
    if !config.database.url.is_empty() {
        args.extend(["--database-url".to_string(), config.database.url.clone()]);
    }
    let cwd = config.data_dir.parent().unwrap().to_path_buf();
    let app = spawn_with(config, dir).await;
    Some((app, CliDatabase { args, cwd }))
}

/// Every byte of the SQLite database (with its WAL), or every stored key and audit row as text.
async fn stored_text(app: &TestApp, database: &CliDatabase) -> Vec<u8> {
    match database.args.iter().position(|a| a == "--database-url") {
        None => {
            let mut bytes = Vec::new();
            for suffix in ["", "-wal"] {
                let path = app.data_dir.join(format!("daytona-mcp.db{suffix}"));
                bytes.extend(std::fs::read(path).unwrap_or_default());
            }
            bytes
        }
        Some(i) => {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::PgConnection::connect(&database.args[i + 1])
                .await
                .unwrap();
            let mut text = String::new();
            for table in ["api_keys", "audit_log"] {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT CAST(t.* AS text) AS row FROM {table} t"
                )))
                .fetch_all(&mut conn)
                .await
                .unwrap();
                for row in rows {
                    text.push_str(&row.get::<String, _>("row"));
                    text.push('\n');
                }
            }
            assert!(text.contains("keys.create"), "{text}");
            text.into_bytes()
        }
    }
}

async fn stored_keys_work_until_revoked_or_expired(db: Db) {
    let Some((app, database)) = spawn(db).await else {
        return;
    };
    let key = keys(
        &database,
        &[
            "create",
            "--tenant",
            "acme",
            "--role",
            "developer",
            "--name",
            "ci",
        ],
    );
    let key = key.trim().to_string();
    assert!(key.starts_with("dmcp_"), "{key}");

    // The new key works at once, as its tenant: a job it submits is acme's, not the admin's.
    let (status, jobs) = app.get_json_with(&key, "/v1/jobs").await;
    assert_eq!(status, 200, "{jobs}");
    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .header("x-api-key", &key)
        .json(&json!({"tool": "list_sandboxes", "arguments": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let job: Value = response.json().await.unwrap();
    let job_path = format!("/v1/jobs/{}", job["job_id"].as_str().unwrap());
    assert_eq!(app.get_json_with(&key, &job_path).await.0, 200);
    assert_eq!(app.get_json(&job_path).await.0, 404, "another tenant's job");

    // `keys list` shows the key without its secret.
    let listed = keys(&database, &["list", "--json"]);
    let rows: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{listed}");
    let id = rows[0]["id"].as_str().unwrap().to_string();
    assert_eq!(rows[0]["tenant"], "acme");
    assert_eq!(rows[0]["role"], "developer");
    assert_eq!(rows[0]["name"], "ci");
    assert_eq!(rows[0]["state"], "active");
    let secret = &key[key.rfind('_').unwrap() + 1..];
    assert!(!listed.contains(secret));
    assert!(!keys(&database, &["list"]).contains(secret));

    // A key that is only almost right is refused like any wrong key.
    let mut forged = key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let (status, body) = app.get_json_with(&forged, "/v1/jobs").await;
    assert_eq!(status, 401, "{body}");

    // Revoked: refused at the next request, with no restart.
    assert!(keys(&database, &["revoke", &id]).contains("revoked"));
    let (status, body) = app.get_json_with(&key, "/v1/jobs").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
    let listed = keys(&database, &["list", "--json"]);
    assert!(listed.contains("\"state\":\"revoked\""), "{listed}");

    // Expired: works until its time, then refused.
    let short = keys(
        &database,
        &[
            "create",
            "--tenant",
            "acme",
            "--role",
            "viewer",
            "--expires",
            "2s",
        ],
    );
    let short = short.trim().to_string();
    assert_eq!(app.get_json_with(&short, "/v1/jobs").await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (status, body) = app.get_json_with(&short, "/v1/jobs").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    // Key operations are audited, and nothing stored holds a key.
    let stored = stored_text(&app, &database).await;
    for secret in [&key, &short] {
        let tail = &secret[secret.rfind('_').unwrap() + 1..];
        assert!(
            !stored.windows(tail.len()).any(|w| w == tail.as_bytes()),
            "a key is stored in plain"
        );
    }
    let text = String::from_utf8_lossy(&stored);
    assert!(text.contains("keys.create") && text.contains("keys.revoke"));
}

async fn bad_key_commands_say_what_is_wrong(db: Db) {
    let Some((_app, database)) = spawn(db).await else {
        return;
    };
    for (args, expected) in [
        (
            vec!["revoke", "0123456789ab"],
            "no API key with id `0123456789ab`",
        ),
        (
            vec![
                "create",
                "--tenant",
                "a",
                "--role",
                "viewer",
                "--expires",
                "soon",
            ],
            "--expires: `soon`",
        ),
        (
            vec![
                "create",
                "--tenant",
                "a",
                "--role",
                "viewer",
                "--expires",
                "2001-01-01T00:00:00Z",
            ],
            "not in the future",
        ),
        (
            vec!["create", "--tenant", "a", "--role", "root"],
            "invalid value 'root'",
        ),
        (
            vec!["create", "--tenant", " ", "--role", "viewer"],
            "--tenant must be",
        ),
    ] {
        let output = cli(&database)
            .arg("keys")
            .args(&args)
            .args(&database.args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert_eq!(keys(&database, &["list", "--json"]), "");
}

crate::on_both_databases!(
    stored_keys_work_until_revoked_or_expired,
    bad_key_commands_say_what_is_wrong
);
