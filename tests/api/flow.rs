//! The whole synchronous and asynchronous flow over HTTP.

use serde_json::{Value, json};

use crate::helpers::{Db, spawn_app};
use crate::on_both_databases;

on_both_databases!(sync_and_async_flow, jobs_api_idempotency_and_listing);

async fn sync_and_async_flow(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };

    // Discovery, as LangSwarm does it.
    let (status, schema) = app.get_json("/schema").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = schema["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "create_sandbox",
            "create_template",
            "delete_sandbox",
            "delete_snapshot",
            "delete_template",
            "execute_code",
            "execute_shell",
            "file_operation",
            "get_sandbox_info",
            "git_operation",
            "list_sandboxes",
            "list_snapshots",
            "list_templates",
            "restore_snapshot",
            "snapshot_sandbox"
        ]
    );
    assert_eq!(schema["tasks"][5]["path"], "/execute_code");
    let (status, tool) = app.get_json("/execute_code/schema").await;
    assert_eq!(status, 200);
    assert_eq!(tool["name"], "execute_code");
    assert!(tool["input_schema"]["properties"]["code"].is_object());
    assert!(tool["output_schema"]["properties"]["exit_code"].is_object());

    // The seed's own examples, with real fields.
    let (status, created) = app
        .call(
            "/create_sandbox",
            json!({
                "language": "python",
                "name": "ml-project",
                "environment_vars": {"PYTHONPATH": "/workspace", "ENV": "development"},
                "labels": {"team": "ml"}
            }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["name"], "ml-project");
    assert_eq!(created["status"], "running");
    assert_eq!(created["language"], "python");
    let id = created["sandbox_id"].as_str().unwrap().to_string();

    let (status, out) = app
        .call(
            "/execute_code",
            json!({
                "sandbox_id": "ml-project",
                "code": "import os, sys\nprint(os.environ['ENV'])\nprint('err', file=sys.stderr)\nsys.exit(3)",
                "language": "python"
            }),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["sandbox_id"], id);
    assert_eq!(out["stdout"], "development\n");
    assert_eq!(out["stderr"], "err\n");
    assert_eq!(out["exit_code"], 3, "a non-zero exit is a normal result");
    assert_eq!(out["timed_out"], false);
    assert_eq!(out["truncated"], false);
    assert!(out["execution_time"].as_f64().unwrap() > 0.0);
    assert!(out["message"].as_str().unwrap().contains('3'));

    let out = app
        .shell(&id, "echo hello > greeting.txt && cat greeting.txt && pwd")
        .await;
    assert_eq!(out["stdout"], "hello\n/workspace\n");
    assert_eq!(out["exit_code"], 0);

    // Asynchronous: 202 with a job id, then poll until done.
    let response = app
        .authed(app.client.post(app.url("/execute_shell")))
        .header("Prefer", "respond-async")
        .json(&json!({"sandbox_id": id, "command": "sleep 0.3; cat greeting.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "queued");
    assert_eq!(accepted["status_url"], location);
    let job = app.wait(accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["result"]["stdout"], "hello\n");
    assert_eq!(job["exit_code"], 0);
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["sandbox"], "ml-project");
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());

    // `background: true` does the same through the body; `?async=true` through the query.
    let (status, bg) = app
        .call(
            "/list_sandboxes",
            json!({"background": true, "labels": {"team": "ml"}}),
        )
        .await;
    assert_eq!(status, 202);
    let listed = app.wait(bg["job_id"].as_str().unwrap()).await;
    assert_eq!(listed["result"]["count"], 1);
    assert_eq!(listed["result"]["sandboxes"][0]["name"], "ml-project");
    let (status, _) = app.call("/list_sandboxes?async=true", json!({})).await;
    assert_eq!(status, 202);

    let (status, info) = app
        .call("/get_sandbox_info", json!({"sandbox_id": id}))
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["name"], "ml-project");
    assert_eq!(info["environment_vars"]["ENV"], "***", "secrets are masked");
    assert!(!info.to_string().contains("development"));
    assert!(info["disk_bytes"].as_u64().unwrap() > 0);
    assert!(info["last_accessed"].as_str().unwrap() >= info["created_at"].as_str().unwrap());

    let (status, deleted) = app
        .call("/delete_sandbox", json!({"sandbox_id": "ml-project"}))
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["success"], true);
    let (status, gone) = app
        .call("/get_sandbox_info", json!({"sandbox_id": id}))
        .await;
    assert_eq!(status, 404, "{gone}");
    assert!(!app.data_dir.join("sandboxes").join(&id).exists());

    let metrics = app.metrics().await;
    for needle in [
        "daytona_mcp_jobs{state=\"succeeded\"}",
        "daytona_mcp_execution_time_seconds_bucket{outcome=\"succeeded\",tool=\"execute_shell\"",
        "daytona_mcp_queue_wait_seconds_count{tool=\"execute_code\"}",
        "daytona_mcp_http_requests_total{method=\"POST\",route=\"/{tool}\",status=\"200\"}",
        "daytona_mcp_data_dir_free_bytes",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
}

async fn jobs_api_idempotency_and_listing(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let id = app.sandbox("jobs").await;

    let request = json!({
        "tool": "execute_shell",
        "arguments": {"sandbox_id": id, "command": "echo once >> runs.txt"},
        "idempotency_key": "deploy-42"
    });
    let (status, first) = app.call("/v1/jobs", request.clone()).await;
    assert_eq!(status, 202);
    let response = app.post("/v1/jobs", &request).await;
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let second: Value = response.json().await.unwrap();
    assert_eq!(
        second["job_id"], first["job_id"],
        "a repeated key returns the original job"
    );
    // The header form names the same key.
    let response = app
        .authed(app.client.post(app.url("/v1/jobs")))
        .header("Idempotency-Key", "deploy-42")
        .json(&json!({"tool": "execute_shell", "arguments": {"sandbox_id": id, "command": "echo once >> runs.txt"}}))
        .send()
        .await
        .unwrap();
    let third: Value = response.json().await.unwrap();
    assert_eq!(third["job_id"], first["job_id"]);
    app.wait(first["job_id"].as_str().unwrap()).await;
    let out = app.shell(&id, "cat runs.txt").await;
    assert_eq!(out["stdout"], "once\n", "never a second run");

    for i in 0..4 {
        app.submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": format!("echo {i}")}),
        )
        .await;
    }
    let (status, page) = app.get_json("/v1/jobs?sandbox=jobs&limit=3").await;
    assert_eq!(status, 200);
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get_json(&format!("/v1/jobs?sandbox=jobs&limit=3&cursor={cursor}"))
        .await;
    let rest = rest["jobs"].as_array().unwrap();
    // 1 idempotent + 1 cat + 4 echo = 6 jobs on this sandbox, newest first across pages.
    assert_eq!(rest.len(), 3);
    let all: Vec<&str> = jobs
        .iter()
        .chain(rest)
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    let mut sorted = all.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(all, sorted, "newest first (UUIDv7 order)");
    let (_, creates) = app
        .get_json("/v1/jobs?tool=create_sandbox&state=succeeded")
        .await;
    assert_eq!(creates["jobs"].as_array().unwrap().len(), 1);
    assert!(!creates["jobs"][0]["arguments"].to_string().contains("echo"));
}
