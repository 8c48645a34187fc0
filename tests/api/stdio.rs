//! `daytona-mcp stdio` as a desktop client drives it: the real binary, messages on its stdin,
//! answers read from its stdout. (The official Python SDK's stdio client drives it in
//! `mcp_clients::python_sdk_over_stdio_relay_and_embedded`.)

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::helpers::{Db, spawn_app};

struct StdioProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl StdioProcess {
    fn start(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> StdioProcess {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_daytona-mcp"));
        command
            .arg("stdio")
            .args(args)
            .current_dir(dir)
            .env_remove("DAYTONA_MCP_API_KEY")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        StdioProcess {
            child,
            stdin,
            stdout,
        }
    }

    async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    async fn send(&mut self, message: Value) {
        self.send_line(&message.to_string()).await;
    }

    /// The next message on stdout.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .expect("an answer in time")
            .unwrap()
            .expect("stdout is open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The next message that is an answer (notifications skipped).
    async fn answer(&mut self) -> Value {
        loop {
            let message = self.next().await;
            if message.get("id").is_some() {
                return message;
            }
        }
    }

    /// Closes stdin and waits for the process to exit; returns its exit code and whatever it
    /// still wrote.
    async fn close(mut self) -> (Option<i32>, Vec<Value>) {
        drop(self.stdin.take());
        let mut rest = Vec::new();
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
                .await
                .expect("stdout ends in time")
        {
            rest.push(serde_json::from_str(&line).unwrap());
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the process exits once stdin is closed")
            .unwrap();
        (status.code(), rest)
    }
}

fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "stdio-test", "version": "1"}}})
}

fn modern(id: u64, method: &str, params: Value) -> Value {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

#[actix_web::test]
async fn protocol_errors_are_answered_and_the_relay_goes_on() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = app.url("/mcp");
    let mut stdio = StdioProcess::start(
        &["--url", &url],
        &[("DAYTONA_MCP_API_KEY", &app.key)],
        dir.path(),
    );
    stdio.send_line("this is not JSON").await;
    let error = stdio.next().await;
    assert_eq!(error["error"]["code"], -32700, "{error}");
    assert_eq!(error["id"], Value::Null);
    stdio.send(initialize(1)).await;
    let init = stdio.answer().await;
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    stdio
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    // A batch (refused by the server), an unknown method, then a good request: each answered.
    stdio
        .send(json!([{"jsonrpc": "2.0", "id": 2, "method": "ping"}]))
        .await;
    let batch = stdio.answer().await;
    assert_eq!(batch["error"]["code"], -32600, "{batch}");
    stdio
        .send(json!({"jsonrpc": "2.0", "id": 3, "method": "no/such/method"}))
        .await;
    let unknown = stdio.answer().await;
    assert_eq!(unknown["id"], 3);
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    stdio
        .send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}))
        .await;
    let tools = stdio.answer().await;
    assert_eq!(tools["id"], 4);
    assert!(
        tools["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "execute_shell"),
        "{tools}"
    );
    // A wrong key is an error that says which variable to set.
    let mut wrong = StdioProcess::start(
        &["--url", &url],
        &[("DAYTONA_MCP_API_KEY", "not-the-key")],
        dir.path(),
    );
    wrong.send(initialize(7)).await;
    let refused = wrong.answer().await;
    assert_eq!(refused["id"], 7, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DAYTONA_MCP_API_KEY"),
        "{refused}"
    );
    assert_eq!(wrong.close().await.0, Some(0));
    assert_eq!(stdio.close().await.0, Some(0));
}

#[actix_web::test]
async fn a_server_that_is_down_is_an_error_for_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut stdio = StdioProcess::start(
        &["--url", &url],
        &[("DAYTONA_MCP_API_KEY", "k")],
        dir.path(),
    );
    stdio.send(initialize(1)).await;
    let error = stdio.answer().await;
    assert_eq!(error["id"], 1, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("cannot reach the daytona-mcp server at {url}")),
        "{message}"
    );
    assert!(message.contains("daytona-mcp serve"), "{message}");
    // A notification gets no answer; the next request gets its own error.
    stdio
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    stdio
        .send(json!({"jsonrpc": "2.0", "id": "two", "method": "ping"}))
        .await;
    let error = stdio.answer().await;
    assert_eq!(error["id"], "two", "{error}");
    assert_eq!(error["error"]["code"], -32000);
    let (code, rest) = stdio.close().await;
    assert_eq!(code, Some(0));
    assert!(rest.is_empty(), "{rest:?}");
}

#[actix_web::test]
async fn a_closed_stdin_waits_for_the_answers_then_exits() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("stdio-close").await;
    let dir = tempfile::tempdir().unwrap();
    let mut stdio = StdioProcess::start(
        &["--url", &app.url("/mcp")],
        &[("DAYTONA_MCP_API_KEY", &app.key)],
        dir.path(),
    );
    // Stateless requests need no handshake; the pipe closes right after the call.
    stdio
        .send(modern(
            1,
            "tools/call",
            json!({"name": "execute_shell",
                   "arguments": {"sandbox_id": id, "command": "sleep 1; echo done"}}),
        ))
        .await;
    let (code, rest) = stdio.close().await;
    assert_eq!(code, Some(0));
    let answer = rest
        .iter()
        .find(|m| m["id"] == 1)
        .unwrap_or_else(|| panic!("{rest:?}"));
    assert_eq!(
        answer["result"]["structuredContent"]["stdout"], "done\n",
        "{answer}"
    );
}

#[actix_web::test]
async fn cancelling_a_call_cancels_its_job_in_both_revisions() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("stdio-cancel").await;
    let dir = tempfile::tempdir().unwrap();
    let mut stdio = StdioProcess::start(
        &["--url", &app.url("/mcp")],
        &[("DAYTONA_MCP_API_KEY", &app.key)],
        dir.path(),
    );
    let sleep = |marker: &str| {
        json!({"name": "execute_shell",
               "arguments": {"sandbox_id": id, "command": format!("sleep 60 # {marker}")}})
    };
    // 2026-07-28: the relay closes the call's request, which cancels the job.
    stdio.send(modern(1, "tools/call", sleep("modern"))).await;
    let job = wait_for_running_job(&app, "modern").await;
    stdio
        .send(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": 1, "reason": "user"}}),
        )
        .await;
    let finished = app.wait(&job).await;
    assert_eq!(finished["status"], "cancelled", "{finished}");

    // 2025-11-25: the notification goes to the server, which cancels the job.
    stdio.send(initialize(2)).await;
    assert_eq!(stdio.answer().await["id"], 2);
    stdio
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    stdio
        .send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": sleep("legacy")}))
        .await;
    let job = wait_for_running_job(&app, "legacy").await;
    stdio
        .send(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": 3, "reason": "user"}}),
        )
        .await;
    let finished = app.wait(&job).await;
    assert_eq!(finished["status"], "cancelled", "{finished}");
    // The cancelled 2026 call was not answered; whatever the 2025 one got, the relay exits.
    let (code, rest) = stdio.close().await;
    assert_eq!(code, Some(0));
    assert!(!rest.iter().any(|m| m["id"] == 1), "{rest:?}");
}

/// The id of the running `execute_shell` job (the sandbox runs one at a time); `what` names
/// it in a failure.
async fn wait_for_running_job(app: &crate::helpers::TestApp, what: &str) -> String {
    for _ in 0..400 {
        let (_, jobs) = app
            .get_json("/v1/jobs?tool=execute_shell&state=running")
            .await;
        if let Some(job) = jobs["jobs"].as_array().unwrap().first() {
            return job["job_id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no running job for the {what} call");
}

#[actix_web::test]
async fn the_embedded_server_limits_messages_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data_dir_arg = data_dir.display().to_string();
    let mut stdio = StdioProcess::start(
        &["--data-dir", &data_dir_arg],
        &[("DAYTONA_MCP_SERVER__BODY_LIMIT_BYTES", "2000")],
        dir.path(),
    );
    stdio
        .send(json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x".repeat(5000)}}))
        .await;
    let error = stdio.next().await;
    assert_eq!(error["error"]["code"], -32600, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2000 bytes"),
        "{error}"
    );
    stdio.send(modern(2, "server/discover", json!({}))).await;
    let discovered = stdio.answer().await;
    assert_eq!(discovered["id"], 2);
    assert!(
        discovered["result"]["supportedVersions"].is_array(),
        "{discovered}"
    );
    // A signal stops it although stdin is still open.
    let pid = stdio.child.id().unwrap() as i32;
    // SAFETY: kill only sends a signal to the child started above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), stdio.child.wait())
        .await
        .expect("the process exits on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(data_dir.join("admin.key").exists());
}
