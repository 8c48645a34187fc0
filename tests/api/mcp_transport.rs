//! The MCP transport's guards and leniency: Origin checks, authentication, no batching, size
//! and media-type limits, `POST /`, and the LangSwarm dialect.

use std::time::Duration;

use daytona_mcp::store::{self, AuditFilter, DatabaseUrl};
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_app, spawn_with, test_config};
use crate::mcp_client::answer;

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
           "params": {"protocolVersion": "2025-11-25", "capabilities": {}}})
}

#[actix_web::test]
async fn foreign_origins_are_refused() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let with_origin = |origin: &str| app.mcp_request(&[("origin", origin)], &initialize()).send();
    let foreign = answer(with_origin("http://evil.example.com").await.unwrap()).await;
    assert_eq!(foreign.status, 403);
    assert_eq!(foreign.body["jsonrpc"], "2.0");
    assert!(
        foreign.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Origin")
    );
    for origin in [
        format!("http://localhost:{}", app.port),
        format!("http://127.0.0.1:{}", app.port),
    ] {
        let local = answer(with_origin(&origin).await.unwrap()).await;
        assert_eq!(local.status, 200, "{origin}");
    }
    let other_port = answer(with_origin("http://localhost:1").await.unwrap()).await;
    assert_eq!(other_port.status, 403);
    // A foreign origin is refused before the key is even looked at, on every method.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = app
            .client
            .request(method, app.url("/mcp"))
            .header("origin", "http://evil.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403);
    }
    // No Origin (a non-browser client) is fine.
    assert_eq!(app.mcp(&[], &initialize()).await.status, 200);
    // Refusals are audited.
    let url = format!("sqlite://{}", app.data_dir.join("daytona-mcp.db").display());
    let store = store::connect(&DatabaseUrl::new(url), 1).await.unwrap();
    let rows = store
        .list_audit(&AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let refused = rows
        .iter()
        .filter(|r| r.entry.outcome == "denied" && r.entry.action.contains("origin refused"))
        .count();
    assert_eq!(refused, 4, "{rows:?}");
}

#[actix_web::test]
async fn configured_origins_replace_the_loopback_default() {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.server.allowed_origins = vec!["https://agents.example.com".into()];
    let app = spawn_with(config, dir).await;
    let call = |origin: String| {
        let request = app.mcp_request(&[("origin", &origin)], &initialize());
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(call("https://agents.example.com".into()).await, 200);
    assert_eq!(call(format!("http://localhost:{}", app.port)).await, 403);
}

#[actix_web::test]
async fn every_mcp_route_needs_the_key() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    for path in ["/mcp", "/"] {
        let response = app
            .client
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(initialize().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["jsonrpc"], "2.0");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("API key")
        );
    }
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = app
            .client
            .request(method, app.url("/mcp"))
            .header("x-api-key", "wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
    }
    // The key works as X-API-Key too.
    let response = app
        .client
        .post(app.url("/mcp"))
        .header("x-api-key", &app.key)
        .header("content-type", "application/json")
        .body(initialize().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[actix_web::test]
async fn malformed_bodies_get_clear_errors() {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.server.body_limit_bytes = 4096;
    let app = spawn_with(config, dir).await;
    let post = |content_type: &'static str, accept: &'static str, body: String| {
        let request = app
            .authed(app.client.post(app.url("/mcp")))
            .header("content-type", content_type)
            .header("accept", accept)
            .body(body);
        async move { answer(request.send().await.unwrap()).await }
    };
    let both = "application/json, text/event-stream";
    let batch = post(
        "application/json",
        both,
        json!([initialize(), {"jsonrpc": "2.0", "id": 2, "method": "ping"}]).to_string(),
    )
    .await;
    assert_eq!((batch.status, batch.error_code()), (400, -32600));
    assert!(
        batch.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batching is not supported")
    );
    let not_json = post("application/json", both, "{\"jsonrpc\":".into()).await;
    assert_eq!((not_json.status, not_json.error_code()), (400, -32700));
    let empty = post("application/json", both, String::new()).await;
    assert_eq!((empty.status, empty.error_code()), (400, -32600));
    let scalar = post("application/json", both, "42".into()).await;
    assert_eq!(scalar.error_code(), -32600);
    let wrong_version = post(
        "application/json",
        both,
        json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}).to_string(),
    )
    .await;
    assert_eq!(wrong_version.error_code(), -32600);
    assert_eq!(wrong_version.body["id"], 1);
    let big = post(
        "application/json",
        both,
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "y".repeat(5000)}})
            .to_string(),
    )
    .await;
    assert_eq!(big.status, 413);
    assert_eq!(big.body["jsonrpc"], "2.0");
    let text = post("text/plain", both, initialize().to_string()).await;
    assert_eq!(text.status, 415);
    let html_only = post("application/json", "text/html", initialize().to_string()).await;
    assert_eq!(html_only.status, 406);
    // No error leaks internals, and nothing was a server error.
    for answer in [&batch, &not_json, &empty, &big, &text, &html_only] {
        assert!(answer.status < 500);
    }
}

#[actix_web::test]
async fn post_root_is_the_mcp_endpoint_and_rest_routes_stay() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let response = app
        .authed(app.client.post(app.url("/")))
        .header("content-type", "application/json")
        .body(initialize().to_string())
        .send()
        .await
        .unwrap();
    let init = answer(response).await;
    assert_eq!(init.status, 200);
    assert_eq!(init.result()["protocolVersion"], "2025-11-25");
    // The seed's routes are still there.
    let (status, _) = app.get_json("/schema").await;
    assert_eq!(status, 200);
    let (status, body) = app.call("/list_sandboxes", json!({})).await;
    assert_eq!(status, 200, "{body}");
}

/// What LangSwarm's `RemoteMCPTool` sends: no `jsonrpc`, no session, no Accept of its own
/// (`*/*` from python-requests), the key as `X-API-Key`.
async fn langswarm(app: &TestApp, path: &str, body: Value) -> crate::mcp_client::Answer {
    answer(
        app.client
            .post(app.url(path))
            .header("content-type", "application/json")
            .header("accept", "*/*")
            .header("x-api-key", &app.key)
            .body(body.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[actix_web::test]
async fn langswarm_dialect() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    for path in ["/mcp", "/"] {
        let init = langswarm(&app, path, json!({"method": "initialize", "id": "init-1"})).await;
        assert_eq!(init.status, 200, "{}", init.body);
        assert_eq!(init.body["id"], "init-1");
        assert!(init.result()["serverInfo"].is_object());

        let tools = langswarm(&app, path, json!({"method": "tools/list", "id": "list-1"})).await;
        assert_eq!(tools.status, 200, "{}", tools.body);
        let names: Vec<&str> = tools.result()["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"execute_shell"));
    }
    let created = langswarm(
        &app,
        "/",
        json!({"method": "tools/call", "id": "call-create_sandbox-1",
               "params": {"name": "create_sandbox", "arguments": {"name": "swarm"}}}),
    )
    .await;
    assert_eq!(created.result()["structuredContent"]["name"], "swarm");
    let ran = langswarm(
        &app,
        "/",
        json!({"method": "tools/call", "id": "call-execute_shell-1",
               "params": {"name": "execute_shell",
                          "arguments": {"sandbox_id": "swarm", "command": "echo swarm"}}}),
    )
    .await;
    assert_eq!(ran.status, 200);
    assert_eq!(ran.header("content-type"), Some("application/json"));
    assert_eq!(ran.result()["structuredContent"]["stdout"], "swarm\n");
    // LangSwarm's `mcp_call` form: the call itself, no method, no id.
    let direct = langswarm(
        &app,
        "/",
        json!({"name": "execute_code", "arguments": {"sandbox_id": "swarm", "code": "print(1+1)"}}),
    )
    .await;
    assert_eq!(direct.status, 200);
    assert_eq!(direct.body["id"], Value::Null);
    assert_eq!(direct.result()["structuredContent"]["stdout"], "2\n");
    // Errors keep the JSON-RPC shape LangSwarm reads (`error.message`).
    let unknown = langswarm(
        &app,
        "/",
        json!({"method": "tools/call", "id": 9, "params": {"name": "nope", "arguments": {}}}),
    )
    .await;
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    // A notification in the dialect is accepted.
    let note = langswarm(&app, "/", json!({"method": "notifications/initialized"})).await;
    assert_eq!(note.status, 202);
}

#[actix_web::test]
async fn a_legacy_client_that_hangs_up_does_not_cancel() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    app.sandbox("hangup").await;
    let session = app.mcp_session("2025-06-18").await;
    let request = session.request(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "execute_shell",
                   "arguments": {"sandbox_id": "hangup", "command": "sleep 1; echo survived"}}}));
    let call = tokio::spawn(async move { request.send().await });
    let job = loop {
        let (_, page) = app.get_json("/v1/jobs?state=running").await;
        if let Some(job) = page["jobs"].as_array().and_then(|j| j.first()) {
            break job["job_id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    call.abort();
    let finished = app.wait(&job).await;
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(finished["result"]["stdout"], "survived\n");
}
