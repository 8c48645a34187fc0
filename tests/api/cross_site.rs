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

/// A CORS preflight as a browser sends it before a cross-origin MCP request: no key.
async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,mcp-protocol-version,mcp-session-id",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// A comma-separated header's items, lowercase.
fn items(response: &reqwest::Response, name: &str) -> Vec<String> {
    header(response, name)
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

#[actix_web::test]
async fn cors_opens_the_mcp_endpoint_to_configured_origins_only() {
    let inspector = "http://localhost:6274";
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "browser", "version": "1"}}});

    // By default nothing is opened: a foreign page's preflight is refused, and the server's
    // own (loopback) origin gets no CORS headers.
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let refused = preflight(&app, "/mcp", inspector).await;
    assert_eq!(refused.status().as_u16(), 403);
    assert_eq!(header(&refused, "access-control-allow-origin"), None);
    let own = format!("http://localhost:{}", app.port);
    let response = preflight(&app, "/mcp", &own).await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    let response = app
        .authed(app.client.post(app.url("/mcp")))
        .header("origin", &own)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    drop(app);

    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.server.allowed_origins = vec![inspector.to_string()];
    let app = spawn_with(config, dir).await;
    // The preflight carries no key: it is answered before authentication.
    for (path, methods) in [("/mcp", &["get", "post", "delete"][..]), ("/", &["post"])] {
        let response = preflight(&app, path, inspector).await;
        assert_eq!(response.status().as_u16(), 204, "{path}");
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some(inspector)
        );
        let allowed = items(&response, "access-control-allow-methods");
        for method in methods {
            assert!(allowed.contains(&method.to_string()), "{path}: {allowed:?}");
        }
        let headers = items(&response, "access-control-allow-headers");
        for name in [
            "authorization",
            "x-api-key",
            "content-type",
            "accept",
            "mcp-session-id",
            "mcp-protocol-version",
            "mcp-method",
            "mcp-name",
            "last-event-id",
        ] {
            assert!(headers.contains(&name.to_string()), "{path}: {headers:?}");
        }
        assert!(items(&response, "vary").contains(&"origin".to_string()));
        assert!(header(&response, "access-control-max-age").is_some());
    }
    // Another origin is still refused, and the loopback default no longer applies.
    for other in [
        "http://evil.example",
        &format!("http://localhost:{}", app.port),
    ] {
        let response = preflight(&app, "/mcp", other).await;
        assert_eq!(response.status().as_u16(), 403, "{other}");
        assert_eq!(header(&response, "access-control-allow-origin"), None);
    }
    // The real request: the answer names the origin and exposes the MCP headers, so the page
    // can read the session id.
    let response = app
        .authed(app.client.post(app.url("/mcp")))
        .header("origin", inspector)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(inspector)
    );
    let exposed = items(&response, "access-control-expose-headers");
    for name in [
        "mcp-session-id",
        "mcp-protocol-version",
        "www-authenticate",
        "retry-after",
    ] {
        assert!(exposed.contains(&name.to_string()), "{exposed:?}");
    }
    let session = header(&response, "mcp-session-id").unwrap().to_string();
    // A refusal is readable too (a page must see the 401 to ask for a key).
    let response = app
        .client
        .post(app.url("/mcp"))
        .header("origin", inspector)
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(inspector)
    );
    let response = app
        .authed(app.client.delete(app.url("/mcp")))
        .header("origin", inspector)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(inspector)
    );
    // The REST routes are not opened to pages: no CORS headers there.
    let response = preflight(&app, "/execute_shell", inspector).await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    let response = app
        .authed(app.client.get(app.url("/v1/jobs")))
        .header("origin", inspector)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    drop(app);

    // `*` opens the endpoint to every page; the answer names the page's origin.
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.server.allowed_origins = vec!["*".to_string()];
    let app = spawn_with(config, dir).await;
    let response = preflight(&app, "/mcp", "https://anywhere.example").await;
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some("https://anywhere.example")
    );
}
