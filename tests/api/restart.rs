//! A crashed server (SIGKILL) restarts and resolves what it left running: executions fail with
//! reason `interrupted` instead of running twice; queued jobs still run; nothing is lost.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Db, eventually, processes_with};
use crate::on_both_databases;
use crate::support;

on_both_databases!(crash_and_restart_resolves_running_jobs);

struct Server {
    child: Child,
    base: String,
    key: String,
    client: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(data_dir: &std::path::Path, database_url: &Option<String>, key: &str) -> Server {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_daytona-mcp"));
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(data_dir)
    .env_remove("DATABASE_URL")
    .env("DAYTONA_MCP_API_KEY", key)
    .env("DAYTONA_MCP_QUEUE__POLL_INTERVAL_MS", "200")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    let child = cmd.spawn().expect("server binary starts");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        key: key.to_string(),
        client: reqwest::Client::new(),
    };
    for _ in 0..200 {
        if let Ok(r) = server
            .client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
        {
            if r.status().is_success() {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready");
}

impl Server {
    async fn call(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn job(&self, id: &str, wait: u32) -> Value {
        self.client
            .get(format!("{}/v1/jobs/{id}?wait={wait}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

async fn crash_and_restart_resolves_running_jobs(db: Db) {
    // Dropped (with its database) when the test ends.
    let database = match db {
        Db::Sqlite => None,
        Db::Postgres => match support::fresh_postgres().await {
            Some(database) => Some(database),
            None => return,
        },
    };
    let database_url = database.as_ref().map(|d| d.url.clone());
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let key = format!("k-{}", uuid::Uuid::new_v4().simple());
    let mut server = start(&data_dir, &database_url, &key).await;

    let (status, created) = server
        .call("/create_sandbox", json!({"name": "crashy"}))
        .await;
    assert_eq!(status, 200, "{created}");
    let marker = format!("mark{}", uuid::Uuid::new_v4().simple());
    let submit = |command: String| {
        let server = &server;
        let marker = marker.clone();
        async move {
            let (status, body) = server
                .call(
                    "/v1/jobs",
                    json!({"tool": "execute_shell", "arguments": {
                        "sandbox_id": "crashy", "command": command, "env": {"MARK": marker}}}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
            body["job_id"].as_str().unwrap().to_string()
        }
    };
    let long = submit("cp \"$(command -v sleep)\" \"./$MARK\"; \"./$MARK\" 600".into()).await;
    let behind = submit("echo after > after.txt; echo ran".into()).await;
    for _ in 0..200 {
        if server.job(&long, 0).await["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(server.job(&long, 0).await["status"], "running");
    assert!(eventually(5, || !processes_with(&marker).is_empty()).await);

    // Crash: no graceful shutdown, no chance to write anything.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // The sandboxed command dies with its server.
    assert!(
        eventually(10, || processes_with(&marker).is_empty()).await,
        "{:?}",
        processes_with(&marker)
    );

    let mut server = start(&data_dir, &database_url, &key).await;
    let long_job = server.job(&long, 10).await;
    assert_eq!(long_job["status"], "failed", "{long_job}");
    assert_eq!(long_job["error"]["reason"], "interrupted");
    assert_eq!(long_job["attempts"], 1, "not run a second time");
    let behind_job = server.job(&behind, 30).await;
    assert_eq!(behind_job["status"], "succeeded", "{behind_job}");
    assert_eq!(behind_job["result"]["stdout"], "ran\n");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
