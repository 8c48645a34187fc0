//! `GET /v1/audit`: admins only, its filters and cursor, the same filters in `daytona-mcp audit
//! export`, one row per action and per refusal, and no secret in any of them.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::access::{ADMIN, DEVELOPER, Keyed, VIEWER, spawn_keyed};
use crate::helpers::Db;
use crate::on_both_databases;

on_both_databases!(the_audit_api_filters_pages_and_keeps_no_secret);

/// Every row `GET /v1/audit?{query}` gives, following the cursor in pages of `limit`.
async fn all_pages(keyed: &Keyed, query: &str, limit: u32) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/v1/audit?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = keyed.send_as(ADMIN, "GET", &path, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        rows.extend(page["rows"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return rows,
        }
    }
    panic!("the cursor never ended");
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

async fn the_audit_api_filters_pages_and_keeps_no_secret(db: Db) {
    let Some(mut keyed) = spawn_keyed(db).await else {
        return;
    };
    let env_secret = format!("env-secret-{}", uuid::Uuid::new_v4().simple());
    let file_secret = format!("file-secret-{}", uuid::Uuid::new_v4().simple());
    let bad_key = format!("dmcp-bad-{}", uuid::Uuid::new_v4().simple());
    keyed.act_as(DEVELOPER);
    let sandbox = keyed.app.sandbox("audited").await;
    let out = keyed
        .app
        .call(
            "/execute_shell",
            json!({"sandbox_id": sandbox, "command": "printf %s \"$PLANTED\"", "env": {"PLANTED": env_secret}}),
        )
        .await;
    assert_eq!(out.1["stdout"], env_secret.as_str(), "{}", out.1);
    let (status, _) = keyed
        .app
        .call(
            "/file_operation",
            json!({"sandbox_id": sandbox, "operation": "write", "file_path": "f.txt", "content": file_secret}),
        )
        .await;
    assert_eq!(status, 200);
    let queued = keyed
        .submit_as(
            DEVELOPER,
            "execute_shell",
            json!({"sandbox_id": sandbox, "command": "sleep 30"}),
        )
        .await;
    keyed.app.wait_for_state(&queued, "running").await;
    let (status, _) = keyed
        .send_as(
            DEVELOPER,
            "POST",
            &format!("/v1/jobs/{queued}/cancel"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 202);
    // Refusals: a bad key (401) and a role too low (403).
    let (status, _, _) = keyed
        .send_with(Some(&bad_key), "GET", "/v1/jobs", None)
        .await;
    assert_eq!(status, 401);
    let (status, _) = keyed
        .send_as(
            VIEWER,
            "POST",
            "/execute_shell",
            Some(
                &json!({"sandbox_id": sandbox, "command": "true", "env": {"PLANTED": env_secret}}),
            ),
        )
        .await;
    assert_eq!(status, 403);

    // Only admins read the log.
    for who in [VIEWER, DEVELOPER] {
        let (status, body) = keyed.send_as(who, "GET", "/v1/audit", None).await;
        assert_eq!(status, 403, "{who}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let everything = all_pages(&keyed, "", 1000).await;
    // One row per action and per refusal.
    let seen: BTreeSet<(String, String)> = everything
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for wanted in [
        ("create_sandbox", "accepted"),
        ("execute_shell", "accepted"),
        ("file_operation", "accepted"),
        ("jobs.cancel", "cancel_requested"),
        ("GET /v1/jobs", "denied"),
        ("execute_shell", "denied"),
        ("audit.list", "denied"),
    ] {
        assert!(
            seen.contains(&(wanted.0.to_string(), wanted.1.to_string())),
            "no {wanted:?} row in {seen:?}"
        );
    }
    let cancel = everything
        .iter()
        .find(|r| r["action"] == "jobs.cancel")
        .unwrap();
    assert_eq!(cancel["job_id"], queued.as_str());
    assert_eq!(cancel["workspace"], "default/audited");
    assert_eq!(cancel["key_id"], "developer-key");
    assert!(cancel["request_id"].is_string());
    assert_eq!(cancel["client_addr"], "127.0.0.1");

    // Paging gives the same rows in the same order.
    assert_eq!(ids(&all_pages(&keyed, "", 2).await), ids(&everything));
    // Each filter keeps exactly the rows it names.
    let check = |query: &str, keep: &dyn Fn(&Value) -> bool| {
        let wanted: Vec<i64> = ids(&everything
            .iter()
            .filter(|r| keep(r))
            .cloned()
            .collect::<Vec<_>>());
        assert!(!wanted.is_empty(), "{query} matches nothing to compare");
        (query.to_string(), wanted)
    };
    let cases = [
        check("tool=execute_shell", &|r| r["action"] == "execute_shell"),
        check("actor=developer-key", &|r| r["key_id"] == "developer-key"),
        check("tenant=default", &|r| r["tenant"] == "default"),
        check("sandbox=audited", &|r| r["workspace"] == "default/audited"),
        check("tenant=default&sandbox=audited", &|r| {
            r["workspace"] == "default/audited"
        }),
        check("outcome=denied", &|r| r["outcome"] == "denied"),
        check(
            "tool=execute_shell&outcome=accepted&actor=developer-key",
            &|r| {
                r["action"] == "execute_shell"
                    && r["outcome"] == "accepted"
                    && r["key_id"] == "developer-key"
            },
        ),
    ];
    for (query, wanted) in &cases {
        assert_eq!(&ids(&all_pages(&keyed, query, 3).await), wanted, "{query}");
    }
    let first = everything[0]["at"].as_str().unwrap().to_string();
    let last = everything.last().unwrap()["at"]
        .as_str()
        .unwrap()
        .to_string();
    let encode = |t: &str| t.replace('+', "%2B");
    assert_eq!(
        all_pages(&keyed, &format!("since={}", encode(&first)), 50)
            .await
            .len(),
        everything.len()
    );
    assert!(
        all_pages(&keyed, &format!("until={}", encode(&first)), 50)
            .await
            .is_empty()
    );
    assert!(
        all_pages(&keyed, "since=2999-01-01T00:00:00Z", 50)
            .await
            .is_empty()
    );
    let recent = all_pages(
        &keyed,
        &format!("since={}&until=2999-01-01T00:00:00Z", encode(&last)),
        50,
    )
    .await;
    assert!(
        recent
            .iter()
            .any(|r| r["id"] == everything.last().unwrap()["id"])
    );
    assert!(recent.len() < everything.len());
    for bad in ["since=yesterday", "limit=0", "cursor=abc", "colour=red"] {
        let (status, body) = keyed
            .send_as(ADMIN, "GET", &format!("/v1/audit?{bad}"), None)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // `audit export` honours the same filters.
    for (query, wanted) in &cases {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_daytona-mcp"));
        command
            .args(["audit", "export", "--database-url", keyed.url.expose()])
            .env_remove("DAYTONA_MCP_CONFIG")
            .current_dir(keyed.app.data_dir.parent().unwrap());
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap();
            let flag = match name {
                "tool" | "actor" | "tenant" | "sandbox" | "outcome" => format!("--{name}"),
                other => panic!("no flag for {other}"),
            };
            command.args([flag.as_str(), value]);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let exported: Vec<Value> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(&ids(&exported), wanted, "audit export {query}");
    }

    // No secret in any row: not the keys (valid or refused), the environment value, or the
    // file content.
    let rows = keyed.audit().await;
    let text = serde_json::to_string(&rows).unwrap();
    let mut secrets = keyed.all_keys();
    secrets.extend([bad_key.clone(), env_secret.clone(), file_secret.clone()]);
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret in the audit log");
    }
    // The keys are stored nowhere at all: search the SQLite files' bytes (the environment value
    // and the file content travel in their jobs' arguments, which the jobs need to run).
    if db == Db::Sqlite {
        let keys = keyed.all_keys();
        let data_dir = keyed.app.data_dir.clone();
        // Stopped first, so that everything is written to the files.
        let _dir = keyed.app.stop();
        for file in ["daytona-mcp.db", "daytona-mcp.db-wal"] {
            let Ok(bytes) = std::fs::read(data_dir.join(file)) else {
                continue;
            };
            for key in keys.iter().chain([&bad_key]) {
                assert!(
                    !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                    "a key in {file}"
                );
            }
        }
    }
}

on_both_databases!(every_cancel_path_writes_one_audit_row);

/// The running job of sandbox `name`, once there is one.
async fn running_in(keyed: &Keyed, name: &str) -> String {
    for _ in 0..1200 {
        let (_, page) = keyed
            .send_as(
                DEVELOPER,
                "GET",
                &format!("/v1/jobs?sandbox={name}&state=running"),
                None,
            )
            .await;
        if let Some(job) = page["jobs"].as_array().and_then(|j| j.first()) {
            return job["job_id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("nothing ran in {name}");
}

/// Each way a job gets cancelled (the jobs API, `cancel_job`, `tasks/cancel`,
/// `notifications/cancelled`, a 2026-07-28 client that closes its JSON request or its stream)
/// writes one `jobs.cancel` row, with the job and the caller.
async fn every_cancel_path_writes_one_audit_row(db: Db) {
    use futures::StreamExt;

    let Some(mut keyed) = spawn_keyed(db).await else {
        return;
    };
    keyed.act_as(DEVELOPER);
    for name in ["c-rest", "c-tool", "c-task", "c-note", "c-json", "c-sse"] {
        keyed.app.sandbox(name).await;
    }
    let sleep = |name: &str| json!({"sandbox_id": name, "command": "sleep 600"});
    let mut cancelled = Vec::new();

    // The jobs API.
    let job = keyed
        .submit_as(DEVELOPER, "execute_shell", sleep("c-rest"))
        .await;
    running_in(&keyed, "c-rest").await;
    let (status, _) = keyed
        .send_as(
            DEVELOPER,
            "POST",
            &format!("/v1/jobs/{job}/cancel"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 202);
    cancelled.push(job);

    // The cancel_job tool and tasks/cancel.
    let session = keyed.app.mcp_session("2025-11-25").await;
    let job = keyed
        .submit_as(DEVELOPER, "execute_shell", sleep("c-tool"))
        .await;
    running_in(&keyed, "c-tool").await;
    let result = session.tool(1, "cancel_job", json!({"job_id": job})).await;
    assert_eq!(result["structuredContent"]["cancelled"], true, "{result}");
    cancelled.push(job);
    let job = keyed
        .submit_as(DEVELOPER, "execute_shell", sleep("c-task"))
        .await;
    running_in(&keyed, "c-task").await;
    let task = session
        .call(2, "tasks/cancel", json!({"taskId": job}))
        .await;
    assert_eq!(task.result()["status"], "cancelled", "{:?}", task.body);
    cancelled.push(job);

    // notifications/cancelled for a synchronous call in flight.
    let request = session.request(&json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
        "params": {"name": "execute_shell", "arguments": sleep("c-note")}}));
    let call = tokio::spawn(async move { request.send().await.unwrap().status() });
    let job = running_in(&keyed, "c-note").await;
    let note = session
        .send(
            &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                       "params": {"requestId": 42}}),
        )
        .await;
    assert_eq!(note.status, 202);
    assert_eq!(keyed.app.wait(&job).await["status"], "cancelled");
    call.await.unwrap();
    cancelled.push(job);

    // A 2026-07-28 JSON call whose connection closes.
    let request = keyed.app.modern_request(
        json!(3),
        "tools/call",
        json!({"name": "execute_shell", "arguments": sleep("c-json")}),
    );
    let call = tokio::spawn(async move { request.send().await });
    let job = running_in(&keyed, "c-json").await;
    call.abort();
    assert_eq!(keyed.app.wait(&job).await["status"], "cancelled");
    cancelled.push(job);

    // A 2026-07-28 streamed call whose stream closes.
    let response = keyed
        .app
        .modern_request(
            json!(4),
            "tools/call",
            json!({"name": "execute_shell", "arguments": sleep("c-sse"),
                   "_meta": {"progressToken": "p"}}),
        )
        .send()
        .await
        .unwrap();
    let job = running_in(&keyed, "c-sse").await;
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("running") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
            .await
            .expect("progress arrives")
            .expect("the stream is open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    assert_eq!(keyed.app.wait(&job).await["status"], "cancelled");
    cancelled.push(job);

    let rows = keyed.audit().await;
    for job in &cancelled {
        let mine: Vec<_> = rows
            .iter()
            .filter(|r| {
                r.entry.action == "jobs.cancel"
                    && r.entry.job_id.map(|j| j.to_string()).as_deref() == Some(job.as_str())
            })
            .collect();
        assert_eq!(mine.len(), 1, "job {job}: {mine:#?}");
        assert_eq!(mine[0].entry.key_id.as_deref(), Some("developer-key"));
        assert_eq!(mine[0].entry.tenant, "default");
        assert!(
            matches!(
                mine[0].entry.outcome.as_str(),
                "cancelled" | "cancel_requested"
            ),
            "{:?}",
            mine[0].entry
        );
    }
}
