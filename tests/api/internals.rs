//! Server faults stay in the server's log: 5xx answers, job views and `/readyz` name what
//! failed and the request id, never the error text; the database password is never logged.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{Db, spawn_app, spawn_with, test_config};
use crate::mcp_client::answer;
use crate::support;

/// Words of the internal errors the tests provoke, which no answer may contain.
const INTERNALS: &[&str] = &[
    "os error",
    "Not a directory",
    "not a directory",
    "sandboxes",
];

fn assert_clean(what: &str, text: &str) {
    for word in INTERNALS {
        assert!(!text.contains(word), "{what} leaks `{word}`: {text}");
    }
}

#[actix_web::test]
async fn server_faults_answer_a_request_id_not_the_error() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    // The driver can no longer make sandbox directories: creating one fails inside the server.
    let sandboxes = app.data_dir.join("sandboxes");
    std::fs::remove_dir_all(&sandboxes).unwrap();
    std::fs::write(&sandboxes, "not a directory").unwrap();

    let response = app
        .authed(app.client.post(app.url("/create_sandbox")))
        .json(&json!({"name": "doomed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 500);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let job_id = response.headers()["x-job-id"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    assert_clean("the 500 answer", &body.to_string());
    assert_eq!(body["error"]["code"], "internal", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&request_id),
        "{body}"
    );

    // The job itself, as every API shows it.
    let (status, job) = app.get_json(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(job["error"]["reason"], "internal", "{job}");
    assert_clean("the job view", &job.to_string());
    let (_, listed) = app.get_json("/v1/jobs?tool=create_sandbox").await;
    assert_clean("the job list", &listed.to_string());

    // MCP: a tool call, get_job and a task's status say as little.
    let session = app.mcp_session("2025-11-25").await;
    let call = session
        .call(
            1,
            "tools/call",
            json!({"name": "create_sandbox", "arguments": {"name": "x"}}),
        )
        .await;
    assert_clean("the MCP tools/call answer", &call.body.to_string());
    assert_eq!(call.error_code(), -32603);
    let got = session
        .call(
            2,
            "tools/call",
            json!({"name": "get_job", "arguments": {"job_id": job_id}}),
        )
        .await;
    assert_clean("MCP get_job", &got.body.to_string());
    let task = session
        .call(
            3,
            "tools/call",
            json!({"name": "create_sandbox", "arguments": {"name": "y"}, "task": {}}),
        )
        .await;
    let task_id = task.result()["task"]["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let mut status = Value::Null;
    for _ in 0..100 {
        status = session
            .call(4, "tasks/get", json!({"taskId": task_id}))
            .await
            .body;
        if status["result"]["status"] != "working" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["result"]["status"], "failed", "{status}");
    assert_clean("MCP tasks/get", &status.to_string());

    // Readiness names the failed check, not its error.
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["checks"]["database"], "ok", "{ready}");
    assert_eq!(ready["checks"]["driver"], "failed", "{ready}");
    assert_clean("/readyz", &ready.to_string());
    assert!(
        !ready
            .to_string()
            .contains(&app.data_dir.display().to_string())
    );
}

#[actix_web::test]
async fn readyz_names_a_lost_database_without_its_error() {
    let Some((config, dir)) = test_config(Db::Postgres).await else {
        return;
    };
    let url = config.database.url.clone();
    let name = url.rsplit('/').next().unwrap().to_string();
    let app = spawn_with(config, dir).await;
    let (status, _) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
    let admin = std::env::var("DAYTONA_MCP_TEST_POSTGRES").unwrap();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["checks"]["database"], "failed", "{ready}");
    let text = ready.to_string();
    for word in [name.as_str(), "does not exist", "terminating", "error"] {
        assert!(!text.contains(word), "/readyz leaks `{word}`: {text}");
    }
}

#[actix_web::test]
async fn the_database_password_is_never_logged() {
    // PostgreSQL here trusts local connections, so a password in the URL is accepted and
    // ignored: the server starts normally with it.
    let Some(database) = support::fresh_postgres().await else {
        return;
    };
    let url = database.url.clone();
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let url = url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{password}@"),
        1,
    );
    assert!(
        url.contains(&password),
        "unexpected test database url {url}"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_daytona-mcp"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .env("DATABASE_URL", &url)
        .env("DAYTONA_MCP_API_KEY", "log-test-key")
        .env("DAYTONA_MCP_LOG__LEVEL", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while the server runs, so that a full pipe never blocks it.
    let drain = |pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut pipe, &mut text).unwrap();
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            ready = r.status().is_success();
            if ready {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        let _ = child.kill();
        panic!("the server did not become ready");
    }
    // A job and an MCP session, so that the logs cover more than start-up.
    let response = client
        .post(format!("http://127.0.0.1:{port}/list_sandboxes"))
        .bearer_auth("log-test-key")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let init = answer(
        client
            .post(format!("http://127.0.0.1:{port}/mcp"))
            .bearer_auth("log-test-key")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(init.status, 200);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let logs = tokio::task::spawn_blocking(move || {
        child.wait().unwrap();
        format!("{}{}", stdout.join().unwrap(), stderr.join().unwrap())
    })
    .await
    .unwrap();
    // The debug log has the configuration, with the database URL redacted.
    assert!(logs.contains("configuration"), "no debug log: {logs}");
    assert!(logs.contains("postgres:***@"), "{logs}");
    assert!(!logs.contains(&password), "the password is in the logs");
}
