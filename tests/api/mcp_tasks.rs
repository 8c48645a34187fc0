//! MCP tasks on the job queue: 2025-11-25 core tasks and the 2026-07-28 extension. A task id
//! is a job id; another tenant's task is "not found".

use std::time::Duration;

use daytona_mcp::audit::Caller;
use daytona_mcp::store::{self, DatabaseUrl, NewJob};
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_app};
use crate::mcp_client::{answer, read_events};
use crate::on_both_databases;

const V1125: &str = "2025-11-25";
const TASKS: &str = "io.modelcontextprotocol/tasks";

on_both_databases!(core_tasks, extension_tasks);

fn task_call(id: i64, command: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "execute_shell",
        "arguments": {"sandbox_id": "tasks", "command": command},
        "task": {"ttl": 60000}
    }})
}

async fn core_tasks(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    app.sandbox("tasks").await;
    let session = app.mcp_session(V1125).await;

    // A task-augmented call answers at once with the task; the task is the job.
    let created = session.send(&task_call(1, "sleep 0.5; echo done")).await;
    let task = created.result()["task"].clone();
    let id = task["taskId"].as_str().unwrap().to_string();
    assert_eq!(task["status"], "working");
    assert!(task["createdAt"].is_string() && task["lastUpdatedAt"].is_string());
    assert!(
        task.get("ttl").is_some(),
        "ttl is always present (null = unlimited)"
    );
    assert_eq!(task["pollInterval"], 1000);
    let (status, job) = app.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "the task id is a job id");
    assert_eq!(job["tool"], "execute_shell");

    let got = session.call(2, "tasks/get", json!({"taskId": id})).await;
    assert_eq!(got.result()["taskId"], id.as_str());
    // tasks/result waits for the end and answers what the call would have.
    let result = session.call(3, "tasks/result", json!({"taskId": id})).await;
    let result = result.result();
    assert_eq!(result["isError"], false);
    assert_eq!(result["structuredContent"]["stdout"], "done\n");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        id.as_str()
    );
    let got = session.call(4, "tasks/get", json!({"taskId": id})).await;
    assert_eq!(got.result()["status"], "completed");

    // A failing call (timeout) ends `failed`; its result is still the tool result.
    let failing = session
        .send(
            &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
                "name": "execute_shell",
                "arguments": {"sandbox_id": "tasks", "command": "sleep 10", "timeout_s": 1},
                "task": {}
            }}),
        )
        .await;
    let failing_id = failing.result()["task"]["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = session
        .call(6, "tasks/result", json!({"taskId": failing_id}))
        .await;
    assert_eq!(failed.result()["isError"], true);
    assert_eq!(failed.result()["structuredContent"]["timed_out"], true);
    let got = session
        .call(7, "tasks/get", json!({"taskId": failing_id}))
        .await;
    assert_eq!(got.result()["status"], "failed");

    // tasks/cancel moves a running task to cancelled before answering.
    let long = session.send(&task_call(8, "sleep 60")).await;
    let long_id = long.result()["task"]["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_for_state(&long_id, "running").await;
    let cancelled = session
        .call(9, "tasks/cancel", json!({"taskId": long_id}))
        .await;
    assert_eq!(cancelled.result()["status"], "cancelled");
    let again = session
        .call(10, "tasks/cancel", json!({"taskId": long_id}))
        .await;
    assert_eq!(again.error_code(), -32602);
    assert!(
        again.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("terminal")
    );

    // tasks/list pages through the caller's tasks, newest first.
    let listed = session.call(11, "tasks/list", json!({})).await;
    let tasks = listed.result()["tasks"].as_array().unwrap().clone();
    let ids: Vec<&str> = tasks
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&id.as_str()) && ids.contains(&long_id.as_str()));
    assert_eq!(
        session
            .call(12, "tasks/list", json!({"cursor": "garbage"}))
            .await
            .error_code(),
        -32602
    );

    // Unknown tasks, and tasks on a tool that cannot be one.
    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        for task_id in ["01900000-0000-7000-8000-000000000000", "not-a-uuid"] {
            let unknown = session.call(13, method, json!({"taskId": task_id})).await;
            assert_eq!(unknown.error_code(), -32602, "{method} {task_id}");
        }
    }
    let forbidden = session
        .send(
            &json!({"jsonrpc": "2.0", "id": 14, "method": "tools/call", "params": {
                "name": "list_jobs", "arguments": {}, "task": {}
            }}),
        )
        .await;
    assert_eq!(forbidden.error_code(), -32601);
}

#[actix_web::test]
async fn task_status_notifications_arrive_on_the_standalone_stream() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    app.sandbox("tasks").await;
    let session = app.mcp_session(V1125).await;
    let stream = app
        .authed(app.client.get(app.url("/mcp")))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session.id)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let created = session.send(&task_call(1, "echo hi")).await;
    let id = created.result()["task"]["taskId"].clone();
    let events = read_events(stream, |e| {
        e.data["method"] == "notifications/tasks/status" && e.data["params"]["taskId"] == id
    })
    .await;
    let status = &events.last().unwrap().data["params"];
    assert_eq!(status["status"], "completed");
}

/// Declares the tasks extension.
fn with_tasks() -> Value {
    json!({"extensions": {TASKS: {}}})
}

async fn extension(
    app: &TestApp,
    id: i64,
    method: &str,
    params: Value,
) -> crate::mcp_client::Answer {
    answer(
        app.modern_request_with(json!(id), method, params, with_tasks())
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Polls tasks/get until the task is no longer working.
async fn until_done(app: &TestApp, task: &str) -> Value {
    for _ in 0..600 {
        let got = extension(app, 99, "tasks/get", json!({"taskId": task})).await;
        let result = got.result().clone();
        assert_eq!(result["resultType"], "complete");
        if result["status"] != "working" {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {task} never ended");
}

async fn extension_tasks(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    app.sandbox("tasks").await;
    let call = |command: &str| json!({"name": "execute_shell", "arguments": {"sandbox_id": "tasks", "command": command}});
    // A client with the extension gets a flat task.
    let created = extension(&app, 1, "tools/call", call("echo from-task")).await;
    let task = created.result().clone();
    assert_eq!(task["resultType"], "task");
    assert_eq!(task["status"], "working");
    assert!(task["ttlMs"].is_u64() || task["ttlMs"].is_null());
    assert_eq!(task["pollIntervalMs"], 1000);
    let id = task["taskId"].as_str().unwrap().to_string();
    let done = until_done(&app, &id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"]["resultType"], "complete");
    assert_eq!(done["result"]["structuredContent"]["stdout"], "from-task\n");

    // A timed-out command is still `completed`, with an isError result.
    let failing = extension(
        &app,
        2,
        "tools/call",
        json!({"name": "execute_shell",
               "arguments": {"sandbox_id": "tasks", "command": "sleep 10", "timeout_s": 1}}),
    )
    .await;
    let failing_id = failing.result()["taskId"].as_str().unwrap().to_string();
    let done = until_done(&app, &failing_id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"]["isError"], true);

    // tasks/cancel acknowledges, and the job is cancelled.
    let long = extension(&app, 3, "tools/call", call("sleep 60")).await;
    let long_id = long.result()["taskId"].as_str().unwrap().to_string();
    app.wait_for_state(&long_id, "running").await;
    let ack = extension(&app, 4, "tasks/cancel", json!({"taskId": long_id})).await;
    assert_eq!(ack.result()["resultType"], "complete");
    assert_eq!(app.wait(&long_id).await["status"], "cancelled");
    assert_eq!(until_done(&app, &long_id).await["status"], "cancelled");

    // tasks/update: nothing ever waits for input here, and the answer says so.
    let update = extension(
        &app,
        5,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {"k": {"action": "accept"}}}),
    )
    .await;
    assert_eq!(update.error_code(), -32602);
    assert!(
        update.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not waiting for input")
    );
    // Unknown tasks.
    for method in ["tasks/get", "tasks/cancel", "tasks/update"] {
        let unknown = extension(
            &app,
            6,
            method,
            json!({"taskId": "01900000-0000-7000-8000-000000000000"}),
        )
        .await;
        assert_eq!(unknown.error_code(), -32602, "{method}");
    }
    // Without the extension the same call is answered synchronously.
    let sync = app.modern(json!(7), "tools/call", call("echo sync")).await;
    assert_eq!(sync.result()["resultType"], "complete");
    assert_eq!(sync.result()["structuredContent"]["stdout"], "sync\n");
}

#[actix_web::test]
async fn another_tenants_task_is_not_found() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    // A job of another tenant, written straight into the server's database.
    let url = format!("sqlite://{}", app.data_dir.join("daytona-mcp.db").display());
    let store = store::connect(&DatabaseUrl::new(url), 1).await.unwrap();
    let job = NewJob::new("other-tenant", "list_sandboxes", json!({}));
    let id = job.id.to_string();
    let audit = Caller::internal("other-tenant").entry(
        "list_sandboxes",
        None,
        Some(job.id),
        "accepted",
        None,
    );
    store.enqueue(job, audit).await.unwrap();

    let session = app.mcp_session(V1125).await;
    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        let answer = session.call(1, method, json!({"taskId": id})).await;
        assert_eq!(answer.error_code(), -32602, "{method}");
    }
    let listed = session.call(2, "tasks/list", json!({})).await;
    assert!(
        listed.result()["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["taskId"] != id.as_str())
    );
    for tool in ["get_job", "cancel_job"] {
        let result = session.tool(3, tool, json!({"job_id": id})).await;
        assert_eq!(result["isError"], true, "{tool}");
    }
    for method in ["tasks/get", "tasks/cancel", "tasks/update"] {
        let answer = extension(&app, 4, method, json!({"taskId": id})).await;
        assert_eq!(answer.error_code(), -32602, "{method}");
    }
    // The other tenant's job was left alone.
    let job = store.job(None, id.parse().unwrap()).await.unwrap().unwrap();
    assert!(!job.cancel_requested);
    assert_ne!(job.state, store::JobState::Cancelled);
}
