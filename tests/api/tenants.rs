//! Tenants: sandboxes and jobs belong to the creating key's tenant, and another tenant gets
//! "not found" (never "forbidden") on every surface: REST, the jobs API with its events, MCP
//! tools, and tasks in both dialects. Sandbox names are unique per tenant. An admin reaches
//! other tenants only when it asks (`?tenant=`).

use serde_json::{Value, json};

use crate::access::{ADMIN, DEVELOPER, OTHER, spawn_keyed, tool_error};
use crate::helpers::Db;
use crate::mcp_client::answer;
use crate::on_both_databases;

on_both_databases!(another_tenant_gets_not_found_everywhere);

fn assert_not_found(what: &str, status: u16, body: &Value) {
    assert_eq!(status, 404, "{what}: {body}");
    assert_eq!(body["error"]["code"], "not_found", "{what}: {body}");
}

/// Whether a listing of jobs or tasks shows any of `ids` (under the id field `field`).
fn listed_any(listing: &Value, field: &str, ids: &[String]) -> bool {
    listing
        .as_array()
        .unwrap()
        .iter()
        .any(|j| ids.iter().any(|id| j[field] == id.as_str()))
}

async fn another_tenant_gets_not_found_everywhere(db: Db) {
    let Some(mut keyed) = spawn_keyed(db).await else {
        return;
    };
    keyed.act_as(DEVELOPER);
    let sandbox = keyed.app.sandbox("shared").await;
    keyed.app.shell(&sandbox, "printf mine > mine.txt").await;
    let finished = keyed
        .submit_as(
            DEVELOPER,
            "execute_shell",
            json!({"sandbox_id": sandbox, "command": "true"}),
        )
        .await;
    keyed.app.wait(&finished).await;
    // In a sandbox of its own, so that it holds up nothing else (a sandbox's jobs run in turn).
    keyed.app.sandbox("busy").await;
    let running = keyed
        .submit_as(
            DEVELOPER,
            "execute_shell",
            json!({"sandbox_id": "busy", "command": "sleep 600"}),
        )
        .await;
    keyed.app.wait_for_state(&running, "running").await;
    let mine = [finished.clone(), running.clone()];

    // REST tool calls, by the sandbox's id and by its name.
    for reference in [sandbox.as_str(), "shared"] {
        for (tool, args) in [
            (
                "execute_shell",
                json!({"sandbox_id": reference, "command": "cat mine.txt"}),
            ),
            (
                "execute_code",
                json!({"sandbox_id": reference, "code": "cat mine.txt", "language": "sh"}),
            ),
            (
                "file_operation",
                json!({"sandbox_id": reference, "operation": "read", "file_path": "mine.txt"}),
            ),
            (
                "git_operation",
                json!({"sandbox_id": reference, "operation": "status"}),
            ),
            ("get_sandbox_info", json!({"sandbox_id": reference})),
            ("delete_sandbox", json!({"sandbox_id": reference})),
        ] {
            let (status, body) = keyed
                .send_as(OTHER, "POST", &format!("/{tool}"), Some(&args))
                .await;
            assert_not_found(&format!("{tool} {reference}"), status, &body);
        }
        let (status, body) = keyed
            .send_as(
                OTHER,
                "POST",
                "/v1/jobs",
                Some(&json!({"tool": "execute_shell", "arguments": {"sandbox_id": reference, "command": "true"}})),
            )
            .await;
        assert_not_found("POST /v1/jobs", status, &body);
    }
    let (_, listed) = keyed
        .send_as(OTHER, "POST", "/list_sandboxes", Some(&json!({})))
        .await;
    assert_eq!(listed["count"], 0, "{listed}");

    // The jobs API, events included.
    for job in [&finished, &running] {
        for (method, path) in [
            ("GET", format!("/v1/jobs/{job}")),
            ("GET", format!("/v1/jobs/{job}?wait=1")),
            ("POST", format!("/v1/jobs/{job}/cancel")),
            ("GET", format!("/v1/jobs/{job}/events")),
        ] {
            let body = (method == "POST").then(|| json!({}));
            let (status, answer, _) = keyed
                .send_with(Some(keyed.key(OTHER)), method, &path, body.as_ref())
                .await;
            assert_not_found(&format!("{method} {path}"), status, &answer);
        }
    }
    for query in ["", "?sandbox=shared", &format!("?sandbox={sandbox}")] {
        let (status, page) = keyed
            .send_as(OTHER, "GET", &format!("/v1/jobs{query}"), None)
            .await;
        assert_eq!(status, 200, "{page}");
        assert!(
            !listed_any(&page["jobs"], "job_id", &mine),
            "{query}: {page}"
        );
    }

    // MCP tools and 2025-11-25 tasks.
    keyed.act_as(OTHER);
    let session = keyed.app.mcp_session("2025-11-25").await;
    for job in [&finished, &running] {
        for tool in ["get_job", "cancel_job"] {
            let result = session.tool(1, tool, json!({"job_id": job})).await;
            let error = tool_error(&result);
            assert_eq!(error["reason"], "not_found", "{tool}: {error}");
            assert_eq!(error["field"], "job_id");
        }
        for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
            let answer = session.call(2, method, json!({"taskId": job})).await;
            assert_eq!(answer.error_code(), -32602, "{method}: {:?}", answer.body);
        }
    }
    let result = session
        .tool(
            3,
            "execute_shell",
            json!({"sandbox_id": "shared", "command": "true"}),
        )
        .await;
    assert_eq!(tool_error(&result)["reason"], "not_found");
    let jobs = session.tool(4, "list_jobs", json!({})).await;
    assert!(!listed_any(
        &jobs["structuredContent"]["jobs"],
        "job_id",
        &mine
    ));
    let tasks = session.call(5, "tasks/list", json!({})).await;
    assert!(!listed_any(&tasks.result()["tasks"], "taskId", &mine));
    // 2026-07-28 tasks (the extension).
    let capabilities = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    for method in ["tasks/get", "tasks/cancel", "tasks/update"] {
        let got = answer(
            keyed
                .app
                .modern_request_with(
                    json!(6),
                    method,
                    json!({"taskId": running}),
                    capabilities.clone(),
                )
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got.error_code(), -32602, "{method}: {:?}", got.body);
    }

    // The other tenant may use the same sandbox name: names are unique per tenant.
    let (status, theirs) = keyed
        .send_as(
            OTHER,
            "POST",
            "/create_sandbox",
            Some(&json!({"name": "shared"})),
        )
        .await;
    assert_eq!(status, 200, "{theirs}");
    assert_ne!(theirs["sandbox_id"].as_str().unwrap(), sandbox);
    let (status, again) = keyed
        .send_as(
            OTHER,
            "POST",
            "/create_sandbox",
            Some(&json!({"name": "shared"})),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    let (_, out) = keyed
        .send_as(
            OTHER,
            "POST",
            "/execute_shell",
            Some(&json!({"sandbox_id": "shared", "command": "ls mine.txt; echo $?"})),
        )
        .await;
    assert_ne!(
        out["stdout"], "mine.txt\n0\n",
        "a sandbox of its own: {out}"
    );
    let their_job = keyed.submit_as(OTHER, "list_sandboxes", json!({})).await;

    // Nothing of the first tenant moved.
    keyed.act_as(DEVELOPER);
    let (_, job) = keyed.app.get_json(&format!("/v1/jobs/{running}")).await;
    assert_eq!(job["status"], "running", "{job}");
    assert_eq!(job["cancel_requested"], false);
    let out = keyed.app.shell(&sandbox, "cat mine.txt").await;
    assert_eq!(out["stdout"], "mine");

    // An admin sees another tenant only when it asks; a developer may not ask.
    let (status, body) = keyed
        .send_as(ADMIN, "GET", &format!("/v1/jobs/{their_job}"), None)
        .await;
    assert_not_found("admin, own tenant", status, &body);
    let (status, body) = keyed
        .send_as(
            ADMIN,
            "GET",
            &format!("/v1/jobs/{their_job}?tenant=other"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, page) = keyed
        .send_as(ADMIN, "GET", "/v1/jobs?tenant=*&limit=200", None)
        .await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&their_job.as_str()) && ids.contains(&running.as_str()));
    let (status, body) = keyed
        .send_as(DEVELOPER, "GET", "/v1/jobs?tenant=other", None)
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = keyed
        .send_as(
            OTHER,
            "GET",
            &format!("/v1/jobs/{running}?tenant=default"),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = keyed
        .send_as(
            ADMIN,
            "POST",
            &format!("/v1/jobs/{running}/cancel"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 202);
}
