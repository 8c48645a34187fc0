//! Per-tenant quotas and the per-key request rate over real HTTP: 429 with `Retry-After` and a
//! clear message, nothing half-created, the same refusal over MCP, and recovery.

use std::sync::Arc;

use daytona_mcp::config::{Config, TenantQuotaConfig};
use daytona_mcp::store::{AuditFilter, DatabaseUrl, Store};
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_with, test_config};

/// A server with `configure` applied, and a handle on its database.
async fn spawn(db: Db, configure: impl FnOnce(&mut Config)) -> Option<(TestApp, Arc<dyn Store>)> {
    let (mut config, dir) = test_config(db).await?;
    configure(&mut config);
    let url = config.database_url();
    let app = spawn_with(config, dir).await;
    let url = if url.expose().starts_with("sqlite") {
        // The server resolved its data dir; the file is there.
        DatabaseUrl::new(format!(
            "sqlite://{}",
            app.data_dir.join("daytona-mcp.db").display()
        ))
    } else {
        url
    };
    let store = daytona_mcp::store::connect(&url, 2).await.unwrap();
    Some((app, store))
}

fn retry_after(response: &reqwest::Response) -> String {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_string()
}

async fn create(app: &TestApp, name: &str) -> reqwest::Response {
    app.post("/create_sandbox", &json!({"name": name})).await
}

async fn sandbox_quota_refuses_then_recovers(db: Db) {
    let Some((app, store)) = spawn(db, |c| {
        // The default is higher; the admin key's tenant (`default`) has its own, lower one.
        c.quotas.max_sandboxes = 5;
        c.quotas.tenants.insert(
            "default".into(),
            TenantQuotaConfig {
                max_sandboxes: Some(1),
                ..TenantQuotaConfig::default()
            },
        );
    })
    .await
    else {
        return;
    };
    let first = app.sandbox("first").await;

    let refused = create(&app, "second").await;
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(retry_after(&refused), "60");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("at most 1 sandboxes") && message.contains("quotas.max_sandboxes"),
        "{message}"
    );
    // Nothing half-created: no sandbox row, no job.
    let (status, info) = app
        .call("/get_sandbox_info", json!({"sandbox_id": "second"}))
        .await;
    assert_eq!(status, 404, "{info}");
    let (_, list) = app.call("/list_sandboxes", json!({})).await;
    assert_eq!(list["sandboxes"].as_array().unwrap().len(), 1, "{list}");
    let (_, jobs) = app.get_json("/v1/jobs?tool=create_sandbox").await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{jobs}");
    // The jobs API refuses the same way.
    let response = app
        .post(
            "/v1/jobs",
            &json!({"tool": "create_sandbox", "arguments": {"name": "third"}}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(retry_after(&response), "60");

    // MCP: a tool error saying the same.
    let session = app.mcp_session("2025-06-18").await;
    let result = session
        .tool(1, "create_sandbox", json!({"name": "fourth"}))
        .await;
    assert_eq!(result["isError"], true, "{result}");
    let text = result.to_string();
    assert!(
        text.contains("quota_exceeded") && text.contains("quotas.max_sandboxes"),
        "{text}"
    );

    // Each refusal is audited as denied.
    let denied = store
        .list_audit(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.outcome == "denied" && r.entry.action.contains("quota"))
        .count();
    assert_eq!(denied, 3);

    // Deleting the sandbox frees the place.
    let (status, body) = app
        .call("/delete_sandbox", json!({"sandbox_id": first}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.sandbox("second").await;
}

async fn active_job_quota_holds_for_concurrent_submissions(db: Db) {
    let Some((app, _store)) = spawn(db, |c| c.quotas.max_active_jobs = 3).await else {
        return;
    };
    let sandbox = app.sandbox("busy").await;
    // Eight submissions at once for three places: exactly three are accepted.
    let body = json!({"tool": "execute_shell",
                      "arguments": {"sandbox_id": sandbox, "command": "sleep 30"}});
    let submissions = (0..8).map(|_| app.post("/v1/jobs", &body));
    let responses = futures::future::join_all(submissions).await;
    let mut accepted = Vec::new();
    for response in responses {
        match response.status().as_u16() {
            202 => {
                let body: Value = response.json().await.unwrap();
                accepted.push(body["job_id"].as_str().unwrap().to_string());
            }
            429 => {
                assert_eq!(retry_after(&response), "5");
                let body: Value = response.json().await.unwrap();
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("quotas.max_active_jobs"),
                    "{body}"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted.len(), 3);
    let (_, jobs) = app.get_json("/v1/jobs?tool=execute_shell").await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 3, "{jobs}");

    // Cancelled jobs free their places.
    for id in &accepted {
        let (status, body) = app.call(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
        assert!(status == 200 || status == 202, "{status} {body}");
    }
    for id in &accepted {
        app.wait(id).await;
    }
    app.submit(
        "execute_shell",
        json!({"sandbox_id": sandbox, "command": "true"}),
    )
    .await;
}

async fn request_rate_is_limited_per_key_and_recovers(db: Db) {
    // 60 a minute: a bucket of 60, one more each second.
    let Some((app, store)) = spawn(db, |c| c.auth.rate_limit_per_minute = 60).await else {
        return;
    };
    let other = daytona_mcp::auth::keys::generate(
        "default",
        daytona_mcp::auth::Role::Viewer,
        None,
        None,
        chrono::Utc::now(),
    );
    store
        .insert_api_key(
            &other.record,
            &daytona_mcp::audit::Caller::internal("default").entry(
                "keys.create",
                None,
                None,
                "succeeded",
                None,
            ),
        )
        .await
        .unwrap();

    let mut limited = None;
    for _ in 0..200 {
        let response = app.get("/v1/jobs").await;
        match response.status().as_u16() {
            200 => {}
            429 => {
                limited = Some(response);
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let limited = limited.expect("the key was never limited");
    assert_eq!(retry_after(&limited), "1");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 60 a minute"),
        "{body}"
    );
    // MCP answers in JSON-RPC, with the same header.
    let response = app
        .mcp_request(
            &[],
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let rpc: Value = response.json().await.unwrap();
    assert!(
        rpc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many requests"),
        "{rpc}"
    );
    // Another key has its own budget; health checks need none.
    let response = app
        .client
        .get(app.url("/v1/jobs"))
        .bearer_auth(&other.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // After Retry-After, the key works again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.get("/v1/jobs").await.status().as_u16(), 200);
}

/// With `max_running_jobs = 1`, a tenant's jobs in two sandboxes never run at the same time,
/// every one still runs, and each sandbox keeps its order; another tenant is not held back.
async fn running_jobs_of_a_tenant_are_limited(db: Db) {
    let Some((app, _store)) = spawn(db, |c| {
        c.quotas.max_running_jobs = 1;
        c.queue.poll_interval_ms = 200;
    })
    .await
    else {
        return;
    };
    let a = app.sandbox("a").await;
    let b = app.sandbox("b").await;
    // Each command prints when it really started and ended (nanoseconds, in the sandbox):
    // the job rows' timestamps are taken around database writes and may skew by milliseconds.
    let timed =
        |name: &str, sleep: &str| format!("date +%s%N; sleep {sleep}; echo {name}; date +%s%N");
    let mut ids = Vec::new();
    for (sandbox, command) in [
        (&a, timed("a1", "1")),
        (&b, timed("b1", "1")),
        (&a, timed("a2", "0")),
        (&b, timed("b2", "0")),
    ] {
        ids.push(
            app.submit(
                "execute_shell",
                json!({"sandbox_id": sandbox, "command": command}),
            )
            .await,
        );
    }
    let mut spans = Vec::new();
    for id in &ids {
        let job = app.wait(id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let stdout = job["result"]["stdout"].as_str().unwrap().to_string();
        let lines: Vec<&str> = stdout.lines().collect();
        let at = |i: usize| lines[i].parse::<u128>().unwrap();
        spans.push((lines[1].to_string(), at(0), at(2)));
    }
    // No two of the tenant's commands overlapped.
    for (i, x) in spans.iter().enumerate() {
        for y in &spans[i + 1..] {
            assert!(x.2 <= y.1 || y.2 <= x.1, "overlapping: {x:?} {y:?}");
        }
    }
    // Each sandbox kept its order.
    assert!(spans[0].2 <= spans[2].1, "{spans:?}");
    assert!(spans[1].2 <= spans[3].1, "{spans:?}");
}

/// `quotas.max_disk` bounds the sum of a tenant's sandbox disk quotas.
async fn disk_quota_bounds_the_tenants_sandboxes(db: Db) {
    let Some((app, _store)) = spawn(db, |c| {
        c.sandbox.disk_limit = "1g".into();
        c.quotas.max_disk = "3g".into();
    })
    .await
    else {
        return;
    };
    app.sandbox("d1").await;
    let (status, body) = app
        .call(
            "/create_sandbox",
            json!({"name": "d2", "resources": {"disk_gb": 2}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let refused = create(&app, "d3").await;
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(retry_after(&refused), "60");
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("3.0 GiB") && message.contains("quotas.max_disk"),
        "{message}"
    );
    let (status, _) = app
        .call("/get_sandbox_info", json!({"sandbox_id": "d3"}))
        .await;
    assert_eq!(status, 404);
    let (status, body) = app
        .call("/delete_sandbox", json!({"sandbox_id": "d2"}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.sandbox("d3").await;
}

crate::on_both_databases!(
    disk_quota_bounds_the_tenants_sandboxes,
    running_jobs_of_a_tenant_are_limited,
    sandbox_quota_refuses_then_recovers,
    active_job_quota_holds_for_concurrent_submissions,
    request_rate_is_limited_per_key_and_recovers
);
