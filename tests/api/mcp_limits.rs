//! What an authenticated MCP client can make the server keep: session metadata is bounded, and
//! so is the number of sessions per key.

use serde_json::{Value, json};

use crate::helpers::{Db, spawn_app, spawn_with, test_config};

fn initialize(client_info: Value, capabilities: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": capabilities,
        "clientInfo": client_info,
    }})
}

#[actix_web::test]
async fn oversize_client_metadata_is_refused() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let huge = "x".repeat(1 << 20);
    for (what, body) in [
        (
            "clientInfo",
            initialize(
                json!({"name": "big", "version": "1", "description": huge}),
                json!({}),
            ),
        ),
        (
            "capabilities",
            initialize(
                json!({"name": "big", "version": "1"}),
                json!({"experimental": {"blob": huge}}),
            ),
        ),
    ] {
        let answer = app.mcp(&[], &body).await;
        assert_eq!(answer.error_code(), -32602, "{what}: {}", answer.body);
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(what), "{message}");
        assert!(message.contains("bytes"), "{message}");
        assert!(
            answer.header("mcp-session-id").is_none(),
            "{what} opened a session"
        );
    }
    // Ordinary metadata, icons included, still opens a session.
    let fine = app
        .mcp(
            &[],
            &initialize(
                json!({"name": "client", "title": "A client", "version": "1.2.3",
                       "icons": [{"src": "https://example.com/icon.png"}]}),
                json!({"roots": {"listChanged": true}, "sampling": {}}),
            ),
        )
        .await;
    assert_eq!(fine.status, 200, "{}", fine.body);
    assert!(fine.header("mcp-session-id").is_some());
}

#[actix_web::test]
async fn sessions_per_key_are_bounded() {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.mcp.max_sessions_per_key = 3;
    let app = spawn_with(config, dir).await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(app.mcp_session("2025-11-25").await);
        // Distinct last-use times, so that "least recently used" is well defined.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"});
    // The key's two least recently used sessions were dropped to open the last two.
    for (i, session) in sessions.iter().enumerate() {
        let answer = session.send(&ping).await;
        let want = if i < 2 { 404 } else { 200 };
        assert_eq!(answer.status, want, "session {i}: {}", answer.body);
    }
    // Using a session keeps it: it is not the next one to go.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(sessions[2].send(&ping).await.status, 200);
    let newest = app.mcp_session("2025-11-25").await;
    assert_eq!(newest.send(&ping).await.status, 200);
    assert_eq!(sessions[2].send(&ping).await.status, 200);
    assert_eq!(sessions[3].send(&ping).await.status, 404);
    assert_eq!(sessions[4].send(&ping).await.status, 200);
}
