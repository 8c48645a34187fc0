//! Bad input gets a 4xx with a JSON error naming the field: never a 500, never a panic.

use serde_json::{Value, json};

use crate::helpers::{Db, spawn_app, spawn_with, test_config};

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str, field: Option<&str>) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    if let Some(field) = field {
        assert_eq!(body["error"]["field"], field, "{body}");
    }
}

#[actix_web::test]
async fn tool_calls_with_bad_input_are_refused_with_the_field_named() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("strict").await;

    let (s, b) = app.call("/no_such_tool", json!({})).await;
    assert_error(s, &b, 404, "unknown_tool", None);
    let (s, b) = app.get_json("/no_such_tool/schema").await;
    assert_error(s, &b, 404, "unknown_tool", None);
    let (s, b) = app.call("/execute_shell", json!({"sandbox_id": id})).await;
    assert_error(s, &b, 400, "invalid_argument", Some("command"));
    let (s, b) = app
        .call("/execute_shell", json!({"sandbox_id": id, "command": 42}))
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("command"));
    let (s, b) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "ls", "timeout_s": "soon"}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("timeout_s"));
    let (s, b) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "ls", "timeout_s": 0}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("timeout_s"));
    let (s, b) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "ls", "timeout_s": 1e9}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("timeout_s"));
    let (s, b) = app
        .call("/execute_shell", json!({"sandbox_id": id, "comand": "ls"}))
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("comand"));
    let (s, b) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "ls", "env": {"1BAD": "x"}}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("env.1BAD"));
    let (s, b) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": "nope", "command": "ls"}),
        )
        .await;
    assert_error(s, &b, 404, "not_found", Some("sandbox_id"));
    let (s, b) = app
        .call(
            "/execute_code",
            json!({"sandbox_id": id, "code": "x", "language": "cobol"}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("language"));
    let (s, b) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "pwd", "working_directory": "../../etc"}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("working_directory"));
    let (s, b) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "pwd", "working_directory": "/etc"}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("working_directory"));
    let (s, b) = app
        .call("/create_sandbox", json!({"name": "../escape"}))
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("name"));
    let (s, b) = app.call("/create_sandbox", json!({"name": "strict"})).await;
    assert_error(s, &b, 409, "conflict", None);
    let (s, b) = app
        .call("/create_sandbox", json!({"environment_vars": {"A": 1}}))
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("environment_vars.A"));
    let (s, b) = app
        .call("/list_sandboxes", json!({"background": "yes"}))
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("background"));

    // Bodies that are not JSON objects.
    for body in ["{not json", "[1,2]", "\"text\""] {
        let response = app
            .authed(app.client.post(app.url("/execute_shell")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let b: Value = response.json().await.unwrap();
        assert_error(status, &b, 400, "invalid_json", None);
    }

    // Nothing reached the queue, and the server is fine.
    let (_, page) = app.get_json("/v1/jobs?tool=execute_shell").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 0);
    let out = app.shell(&id, "echo fine").await;
    assert_eq!(out["stdout"], "fine\n");
}

#[actix_web::test]
async fn huge_bodies_are_refused_with_413() {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.server.body_limit_bytes = 64 * 1024;
    let app = spawn_with(config, dir).await;
    let id = app.sandbox("big").await;
    let code = "x".repeat(100 * 1024);
    for path in ["/execute_code", "/v1/jobs"] {
        let body = if path == "/v1/jobs" {
            json!({"tool": "execute_code", "arguments": {"sandbox_id": id, "code": code}})
        } else {
            json!({"sandbox_id": id, "code": code})
        };
        let (s, b) = app.call(path, body).await;
        assert_error(s, &b, 413, "payload_too_large", None);
    }
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[actix_web::test]
async fn jobs_api_and_auth_errors() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let (s, b) = app.get_json("/v1/jobs/not-a-uuid").await;
    assert_error(s, &b, 400, "invalid_argument", Some("id"));
    let missing = uuid::Uuid::now_v7();
    let (s, b) = app.get_json(&format!("/v1/jobs/{missing}")).await;
    assert_error(s, &b, 404, "not_found", Some("job_id"));
    let (s, b) = app
        .call(&format!("/v1/jobs/{missing}/cancel"), json!({}))
        .await;
    assert_error(s, &b, 404, "not_found", Some("job_id"));
    let (s, b) = app.get_json(&format!("/v1/jobs/{missing}?wait=-1")).await;
    assert_error(s, &b, 400, "invalid_argument", Some("wait"));
    let (s, b) = app.get_json("/v1/jobs?state=sleeping").await;
    assert_error(s, &b, 400, "invalid_argument", Some("state"));
    let (s, b) = app.get_json("/v1/jobs?limit=0").await;
    assert_error(s, &b, 400, "invalid_argument", Some("limit"));
    let (s, b) = app.get_json("/v1/jobs?cursor=abc").await;
    assert_error(s, &b, 400, "invalid_argument", Some("cursor"));
    let (s, b) = app.call("/v1/jobs", json!({"arguments": {}})).await;
    assert_error(s, &b, 400, "invalid_argument", Some("tool"));
    let (s, b) = app
        .call(
            "/v1/jobs",
            json!({"tool": "list_sandboxes", "priority": 5000}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("priority"));
    let (s, b) = app
        .call(
            "/v1/jobs",
            json!({"tool": "list_sandboxes", "arguments": [1]}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("arguments"));
    let (s, b) = app
        .call(
            "/v1/jobs",
            json!({"tool": "list_sandboxes", "idempotency_key": ""}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument", Some("idempotency_key"));
    let (s, b) = app.call("/v1/jobs", json!({"tool": "nope"})).await;
    assert_error(s, &b, 404, "unknown_tool", None);
    let (s, b) = app.get_json("/no/such/route").await;
    assert_error(s, &b, 404, "not_found", None);

    // Without a key, or with a wrong one: 401, audited as denied.
    for key in [None, Some("wrong-key")] {
        let mut request = app.client.post(app.url("/list_sandboxes")).json(&json!({}));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let b: Value = response.json().await.unwrap();
        assert_error(status, &b, 401, "unauthenticated", None);
    }
    let response = app
        .client
        .post(app.url("/list_sandboxes"))
        .header("X-API-Key", &app.key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "X-API-Key works too");
    // Health and metrics need no key.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}
