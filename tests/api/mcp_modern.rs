//! MCP, the stateless revision (2026-07-28): `server/discover`, per-request `_meta`, the
//! required headers and their error codes, `resultType` and caching hints, tool calls, streamed
//! progress, and cancellation by disconnect.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_app};
use crate::mcp_client::{MODERN, answer, is_answer, read_events};
use crate::on_both_databases;

const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

#[actix_web::test]
async fn discover_describes_the_server() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let discovered = app.modern(json!("d-1"), "server/discover", json!({})).await;
    assert_eq!(discovered.status, 200, "{}", discovered.body);
    assert_eq!(discovered.body["id"], "d-1");
    let result = discovered.result();
    assert_eq!(result["resultType"], "complete");
    assert_eq!(
        result["supportedVersions"],
        json!(["2026-07-28", "2025-11-25", "2025-06-18"])
    );
    assert_eq!(
        result["capabilities"]["tools"],
        json!({"listChanged": false})
    );
    assert_eq!(
        result["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"],
        json!({})
    );
    assert!(result["capabilities"].get("tasks").is_none());
    assert!(result["ttlMs"].as_u64().is_some());
    assert!(matches!(
        result["cacheScope"].as_str(),
        Some("public" | "private")
    ));
    assert_eq!(result["_meta"][SERVER_INFO]["name"], "daytona-mcp");
    assert!(result["instructions"].is_string());
    // clientInfo is optional.
    let bare = app
        .authed(app.client.post(app.url("/mcp")))
        .header("content-type", "application/json")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "server/discover")
        .body(
            json!({"jsonrpc": "2.0", "id": 2, "method": "server/discover", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {}
            }}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status().as_u16(), 200);
}

/// Sends a raw POST with `headers` and `body`.
async fn raw(app: &TestApp, headers: &[(&str, &str)], body: Value) -> crate::mcp_client::Answer {
    app.mcp(headers, &body).await
}

fn meta(version: &str) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

#[actix_web::test]
async fn requests_are_checked_in_the_specs_order() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let modern_headers = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/list"),
    ];
    // No _meta at all: -32602, 400, the id echoed.
    let no_meta = raw(
        &app,
        &modern_headers,
        json!({"jsonrpc": "2.0", "id": 11, "method": "tools/list"}),
    )
    .await;
    assert_eq!((no_meta.status, no_meta.error_code()), (400, -32602));
    assert_eq!(no_meta.body["id"], 11);
    // _meta without clientCapabilities, and without protocolVersion.
    for incomplete in [
        json!({"io.modelcontextprotocol/protocolVersion": MODERN}),
        json!({"io.modelcontextprotocol/clientCapabilities": {}, "progressToken": 1}),
    ] {
        let answer = raw(
            &app,
            &modern_headers,
            json!({"jsonrpc": "2.0", "id": 12, "method": "tools/list",
                   "params": {"_meta": incomplete}}),
        )
        .await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (400, -32602),
            "{}",
            answer.body
        );
    }
    // The version header is missing, or disagrees with _meta: -32020.
    let no_header = raw(
        &app,
        &[("mcp-method", "tools/list")],
        json!({"jsonrpc": "2.0", "id": 13, "method": "tools/list", "params": {"_meta": meta(MODERN)}}),
    )
    .await;
    assert_eq!((no_header.status, no_header.error_code()), (400, -32020));
    let mismatch = raw(
        &app,
        &modern_headers,
        json!({"jsonrpc": "2.0", "id": 14, "method": "tools/list",
               "params": {"_meta": meta("v999.0.0")}}),
    )
    .await;
    assert_eq!((mismatch.status, mismatch.error_code()), (400, -32020));
    // Mcp-Method missing or wrong: -32020.
    for method_header in [None, Some("tools/call")] {
        let mut headers = vec![("mcp-protocol-version", MODERN)];
        if let Some(m) = method_header {
            headers.push(("mcp-method", m));
        }
        let answer = raw(
            &app,
            &headers,
            json!({"jsonrpc": "2.0", "id": 15, "method": "tools/list",
                   "params": {"_meta": meta(MODERN)}}),
        )
        .await;
        assert_eq!((answer.status, answer.error_code()), (400, -32020));
    }
    // Mcp-Name must name the tool; a base64-encoded value is decoded first.
    let call = |name_header: Option<&'static str>| {
        let app = &app;
        async move {
            let mut headers = vec![
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
            ];
            if let Some(n) = name_header {
                headers.push(("mcp-name", n));
            }
            raw(
                app,
                &headers,
                json!({"jsonrpc": "2.0", "id": 16, "method": "tools/call",
                       "params": {"name": "list_sandboxes", "arguments": {}, "_meta": meta(MODERN)}}),
            )
            .await
        }
    };
    assert_eq!(call(None).await.error_code(), -32020);
    assert_eq!(call(Some("execute_shell")).await.error_code(), -32020);
    assert_eq!(call(Some("  list_sandboxes ")).await.status, 200);
    // "list_sandboxes" in base64.
    assert_eq!(
        call(Some("=?base64?bGlzdF9zYW5kYm94ZXM=?=")).await.status,
        200
    );
    // Header and _meta agree on a version this server does not serve: -32022.
    let unsupported = raw(
        &app,
        &[
            ("mcp-protocol-version", "v999.0.0"),
            ("mcp-method", "tools/list"),
        ],
        json!({"jsonrpc": "2.0", "id": 17, "method": "tools/list",
               "params": {"_meta": meta("v999.0.0")}}),
    )
    .await;
    assert_eq!(
        (unsupported.status, unsupported.error_code()),
        (400, -32022)
    );
    assert_eq!(unsupported.body["error"]["data"]["requested"], "v999.0.0");
    assert_eq!(
        unsupported.body["error"]["data"]["supported"],
        json!(["2026-07-28", "2025-11-25", "2025-06-18"])
    );
    // A 2025 version in a modern request is not served on the stateless path.
    let legacy_in_meta = raw(
        &app,
        &[
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-method", "tools/list"),
        ],
        json!({"jsonrpc": "2.0", "id": 18, "method": "tools/list",
               "params": {"_meta": meta("2025-11-25")}}),
    )
    .await;
    assert_eq!(legacy_in_meta.error_code(), -32022);
}

#[actix_web::test]
async fn methods_of_other_revisions_are_not_found() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    for method in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "tasks/list",
        "tasks/result",
        "unknown/method",
    ] {
        let answer = app.modern(json!(method), method, json!({})).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (404, -32601),
            "{method}"
        );
        assert_eq!(answer.body["id"], method);
    }
    // Task methods need the extension in the request's capabilities: -32021.
    let tasks = app
        .modern(
            json!(1),
            "tasks/get",
            json!({"taskId": "01900000-0000-7000-8000-000000000000"}),
        )
        .await;
    assert_eq!((tasks.status, tasks.error_code()), (400, -32021));
    assert_eq!(
        tasks.body["error"]["data"]["requiredCapabilities"],
        json!({"extensions": {"io.modelcontextprotocol/tasks": {}}})
    );
    // Clients must not send responses; GET and DELETE have nothing to serve.
    let response = raw(
        &app,
        &[("mcp-protocol-version", MODERN)],
        json!({"jsonrpc": "2.0", "id": 1, "result": {}}),
    )
    .await;
    assert_eq!(response.status, 400);
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let answer = app
            .authed(app.client.request(method.clone(), app.url("/mcp")))
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", MODERN)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 405, "{method}");
    }
    // A notification is accepted.
    let note = raw(
        &app,
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "notifications/cancelled"),
        ],
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
    )
    .await;
    assert_eq!(note.status, 202);
}

#[actix_web::test]
async fn tools_list_carries_result_type_and_caching_hints() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let listed = app.modern(json!(1), "tools/list", json!({})).await;
    let result = listed.result();
    assert_eq!(result["resultType"], "complete");
    assert!(result["ttlMs"].as_u64().is_some());
    assert_eq!(result["cacheScope"], "private");
    assert_eq!(result["_meta"][SERVER_INFO]["name"], "daytona-mcp");
    let tools = result["tools"].as_array().unwrap();
    // Every tool of the REST API, plus the three job tools.
    let (_, schema) = app.get_json("/schema").await;
    assert_eq!(tools.len(), schema["tasks"].as_array().unwrap().len() + 3);
    assert!(tools.iter().all(|t| t.get("execution").is_none()));
}

on_both_databases!(modern_tool_calls);

async fn modern_tool_calls(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let created = app
        .modern(
            json!(1),
            "tools/call",
            json!({"name": "create_sandbox", "arguments": {"name": "modern"}}),
        )
        .await;
    let result = created.result();
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["isError"], false);
    assert_eq!(result["structuredContent"]["name"], "modern");
    assert_eq!(result["_meta"][SERVER_INFO]["name"], "daytona-mcp");

    let shell = app
        .modern(
            json!(2),
            "tools/call",
            json!({"name": "execute_shell",
                   "arguments": {"sandbox_id": "modern", "command": "echo hi; exit 4"}}),
        )
        .await;
    let out = &shell.result()["structuredContent"];
    assert_eq!(
        (out["exit_code"].clone(), out["stdout"].clone()),
        (json!(4), json!("hi\n"))
    );
    assert_eq!(shell.result()["isError"], false);

    // Refused arguments are an isError result in this revision.
    let refused = app
        .modern(
            json!(3),
            "tools/call",
            json!({"name": "execute_shell", "arguments": {"sandbox_id": "modern", "comand": "x"}}),
        )
        .await;
    assert_eq!(refused.result()["isError"], true);
    assert_eq!(refused.result()["resultType"], "complete");
    let unknown = app
        .modern(
            json!(4),
            "tools/call",
            json!({"name": "nope", "arguments": {}}),
        )
        .await;
    assert_eq!(unknown.error_code(), -32602);

    // Streaming: progress always, log messages only when _meta asks for them.
    for (log_level, expect_logs) in [(None, false), (Some("info"), true)] {
        let mut params = json!({
            "name": "execute_shell",
            "arguments": {"sandbox_id": "modern", "command": "echo one; sleep 0.2; echo two"},
            "_meta": {"progressToken": "tok"}
        });
        if let Some(level) = log_level {
            params["_meta"]["io.modelcontextprotocol/logLevel"] = json!(level);
        }
        let response = app
            .modern_request(json!(5), "tools/call", params)
            .send()
            .await
            .unwrap();
        let events = read_events(response, |e| is_answer(e, &json!(5))).await;
        assert!(
            events.iter().all(|e| e.id.is_none()),
            "no resumability in 2026"
        );
        let progress = events
            .iter()
            .filter(|e| e.data["method"] == "notifications/progress")
            .count();
        assert!(progress >= 3, "{events:?}");
        let logs: String = events
            .iter()
            .filter(|e| e.data["method"] == "notifications/message")
            .map(|e| e.data["params"]["data"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(!logs.is_empty(), expect_logs, "{events:?}");
        if expect_logs {
            assert_eq!(logs, "one\ntwo\n");
        }
        let last = &events.last().unwrap().data["result"];
        assert_eq!(last["resultType"], "complete");
        assert_eq!(last["structuredContent"]["stdout"], "one\ntwo\n");
    }
}

/// The job of the one running command.
async fn running_job(app: &TestApp) -> String {
    for _ in 0..400 {
        let (_, page) = app.get_json("/v1/jobs?state=running").await;
        if let Some(job) = page["jobs"].as_array().and_then(|j| j.first()) {
            return job["job_id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no job started running");
}

#[actix_web::test]
async fn a_client_that_goes_away_cancels_its_call() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    app.sandbox("gone").await;
    // A streamed call: closing the stream cancels it, even while the command prints nothing.
    let response = app
        .modern_request(
            json!(1),
            "tools/call",
            json!({"name": "execute_shell",
                   "arguments": {"sandbox_id": "gone", "command": "sleep 60"},
                   "_meta": {"progressToken": 1}}),
        )
        .send()
        .await
        .unwrap();
    let job = running_job(&app).await;
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"running\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("progress arrives")
            .expect("the stream is open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    // Well under the 15 s keep-alive, which would also notice the closed stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, state) = app.get_json(&format!("/v1/jobs/{job}")).await;
        if state["status"] == "cancelled" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream was not noticed: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A JSON call: the connection closes while the server waits.
    let request = app.modern_request(
        json!(2),
        "tools/call",
        json!({"name": "execute_shell", "arguments": {"sandbox_id": "gone", "command": "sleep 60"}}),
    );
    let call = tokio::spawn(async move { request.send().await });
    let job = running_job(&app).await;
    call.abort();
    assert_eq!(app.wait(&job).await["status"], "cancelled");

    // A background call is not tied to its request.
    let started = answer(
        app.modern_request(
            json!(3),
            "tools/call",
            json!({"name": "execute_shell",
                   "arguments": {"sandbox_id": "gone", "command": "sleep 0.5", "background": true}}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let id = started.result()["structuredContent"]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.wait(&id).await["status"], "succeeded");
}
