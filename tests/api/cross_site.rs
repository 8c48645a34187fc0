//! A web page in the operator's browser must not drive the server: every route applies the
//! `Origin` policy, and POST bodies must be JSON (or carry no Content-Type at all).

use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_app, spawn_with, test_config};

/// A POST as a browser page could send it: a foreign `Origin` and a "simple" content type,
/// which needs no CORS preflight.
async fn browser_post(app: &TestApp, path: &str, origin: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(path))
        .header("origin", origin)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn a_foreign_page_cannot_drive_rest_routes_without_auth() {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.auth.disabled = true;
    let app = spawn_with(config, dir).await;
    let id = app.sandbox("browser").await;
    let pwn = json!({"sandbox_id": id, "command": "touch /workspace/pwned"});
    let (status, body) = browser_post(&app, "/execute_shell", "http://evil.example", &pwn).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "origin_refused", "{body}");
    // Even with a JSON body (a preflighted request the browser might still send).
    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .header("origin", "http://evil.example")
        .json(&json!({"tool": "execute_shell", "arguments": pwn}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    // Reads and unknown routes too: the policy is the same on every route.
    for path in ["/v1/jobs", "/schema", "/readyz", "/no/such/route"] {
        let response = app
            .client
            .get(app.url(path))
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403, "{path}");
    }
    let (_, jobs) = app.get_json("/v1/jobs?tool=execute_shell").await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");
    assert!(
        !app.data_dir
            .join("sandboxes")
            .join(&id)
            .join("pwned")
            .exists()
    );
    // The server's own origin (loopback on its port) and non-browser clients are served.
    let local = format!("http://localhost:{}", app.port);
    let response = app
        .client
        .post(app.url("/execute_shell"))
        .header("origin", &local)
        .json(&json!({"sandbox_id": id, "command": "echo ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(app.shell(&id, "echo ok").await["stdout"], "ok\n");
}

#[actix_web::test]
async fn post_bodies_must_be_json() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("media").await;
    let body = json!({"sandbox_id": id, "command": "echo hi"}).to_string();
    let post = |path: &str, content_type: Option<&str>, body: String| {
        let mut request = app.authed(app.client.post(app.url(path))).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for refused in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
    ] {
        let (status, answer) = post("/execute_shell", Some(refused), body.clone()).await;
        assert_eq!(status, 415, "{refused}: {answer}");
        assert_eq!(answer["error"]["code"], "unsupported_media_type");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Content-Type: application/json"),
            "{answer}"
        );
        let job =
            json!({"tool": "execute_shell", "arguments": {"sandbox_id": id, "command": "true"}});
        let (status, _) = post("/v1/jobs", Some(refused), job.to_string()).await;
        assert_eq!(status, 415, "{refused}");
    }
    let (_, jobs) = app.get_json("/v1/jobs?tool=execute_shell").await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");
    for accepted in [
        Some("application/json"),
        Some("Application/JSON; charset=utf-8"),
        Some("application/merge-patch+json"),
        None,
    ] {
        let (status, answer) = post("/execute_shell", accepted, body.clone()).await;
        assert_eq!(status, 200, "{accepted:?}: {answer}");
        assert_eq!(answer["stdout"], "hi\n");
    }
    // A POST without a body needs no Content-Type.
    let job = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "sleep 30"}),
        )
        .await;
    let (status, _) = post(&format!("/v1/jobs/{job}/cancel"), None, String::new()).await;
    assert!(status == 200 || status == 202, "{status}");
}
