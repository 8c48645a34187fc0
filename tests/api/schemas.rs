//! The schema routes need a key unless `auth.public_schemas` opens them; nothing else opens.

use serde_json::json;

use crate::helpers::{Db, spawn_app, spawn_with, test_config};

#[actix_web::test]
async fn schema_routes_need_a_key_unless_made_public() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    for path in ["/schema", "/execute_code/schema"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path}");
    }
    drop(app);

    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.auth.public_schemas = true;
    let app = spawn_with(config, dir).await;
    let response = app.client.get(app.url("/schema")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let schema: serde_json::Value = response.json().await.unwrap();
    assert!(
        schema["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "execute_code"),
        "{schema}"
    );
    let response = app
        .client
        .get(app.url("/execute_code/schema"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let tool: serde_json::Value = response.json().await.unwrap();
    assert_eq!(tool["name"], "execute_code");
    assert!(
        tool["input_schema"]["properties"]["code"].is_object(),
        "{tool}"
    );
    // Only the schemas: tools, jobs and MCP still need the key.
    let response = app
        .client
        .post(app.url("/execute_shell"))
        .json(&json!({"sandbox_id": "x", "command": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    for path in [
        "/v1/jobs",
        "/schema/schema/x",
        "/create_sandbox/schema/extra",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path}");
    }
    let response = app
        .client
        .post(app.url("/mcp"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}
