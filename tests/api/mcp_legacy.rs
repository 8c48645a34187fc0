//! MCP, legacy revisions (2025-06-18 and 2025-11-25): the handshake, sessions, every method,
//! tool calls as jobs, streamed progress with resumption, cancellation, GET and DELETE.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Db, spawn_app, spawn_with, test_config};
use crate::mcp_client::{LegacySession, answer, is_answer, read_events};
use crate::on_both_databases;

const V0618: &str = "2025-06-18";
const V1125: &str = "2025-11-25";

#[actix_web::test]
async fn initialize_negotiates_the_version_and_opens_a_session() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    for (asked, answered) in [
        (V0618, V0618),
        (V1125, V1125),
        // A version this server does not serve in a handshake: it offers its newest legacy one.
        ("2026-07-28", V1125),
        ("2024-11-05", V1125),
        ("not-a-version", V1125),
    ] {
        let init = app
            .mcp(
                &[],
                &json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
                    "protocolVersion": asked, "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"}
                }}),
            )
            .await;
        assert_eq!(init.status, 200, "{}", init.body);
        assert_eq!(init.body["id"], "init");
        let result = init.result();
        assert_eq!(result["protocolVersion"], answered, "asked {asked}");
        assert_eq!(result["serverInfo"]["name"], "daytona-mcp");
        assert!(result["serverInfo"]["version"].is_string());
        assert!(
            result["instructions"]
                .as_str()
                .unwrap()
                .contains("create_sandbox")
        );
        assert_eq!(
            result["capabilities"]["tools"],
            json!({"listChanged": false})
        );
        assert_eq!(result["capabilities"]["logging"], json!({}));
        // Core tasks exist only in 2025-11-25.
        if answered == V1125 {
            assert_eq!(
                result["capabilities"]["tasks"],
                json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}})
            );
        } else {
            assert!(result["capabilities"].get("tasks").is_none());
        }
        let session = init.header("mcp-session-id").expect("a session id");
        assert!(session.len() >= 32);
        assert!(session.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
}

#[actix_web::test]
async fn session_ids_are_checked() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    // No session: 400.
    let missing = app.mcp(&[("mcp-protocol-version", V1125)], &ping).await;
    assert_eq!(missing.status, 400, "{}", missing.body);
    assert!(
        missing.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mcp-Session-Id")
    );
    assert_eq!(missing.body["id"], 1);
    // Unknown session: 404.
    let unknown = app
        .mcp(&[("mcp-session-id", "no-such-session")], &ping)
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_code(), -32001);

    let session = app.mcp_session(V1125).await;
    // An unsupported protocol version header on a session: 400.
    let bad = app
        .mcp(
            &[
                ("mcp-session-id", &session.id),
                ("mcp-protocol-version", "1999-01-01"),
            ],
            &ping,
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1999-01-01")
    );
    // Without the header, the negotiated version applies.
    let ok = app.mcp(&[("mcp-session-id", &session.id)], &ping).await;
    assert_eq!(ok.status, 200);
    // A second initialize on a session is refused.
    let again = session
        .call(
            2,
            "initialize",
            json!({"protocolVersion": V1125, "capabilities": {}}),
        )
        .await;
    assert_eq!(again.status, 400);
    assert_eq!(again.error_code(), -32600);

    // DELETE ends it; then the id is unknown.
    let deleted = app
        .authed(app.client.delete(app.url("/mcp")))
        .header("mcp-session-id", &session.id)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    let after = session.send(&ping).await;
    assert_eq!(after.status, 404);
    let deleted_again = app
        .authed(app.client.delete(app.url("/mcp")))
        .header("mcp-session-id", &session.id)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted_again.status().as_u16(), 404);
}

#[actix_web::test]
async fn idle_sessions_expire() {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.mcp.session_idle_s = 1;
    let app = spawn_with(config, dir).await;
    let session = app.mcp_session(V1125).await;
    assert_eq!(session.call(1, "ping", json!({})).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = session.call(2, "ping", json!({})).await;
    assert_eq!(expired.status, 404);
    assert_eq!(expired.error_code(), -32001);
}

#[actix_web::test]
async fn ping_set_level_and_unknown_methods() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    for version in [V0618, V1125] {
        let session = app.mcp_session(version).await;
        let ping = session.call(1, "ping", json!({})).await;
        assert_eq!(ping.status, 200);
        assert_eq!(ping.result(), &json!({}), "ping answers exactly {{}}");
        let set = session
            .call(2, "logging/setLevel", json!({"level": "warning"}))
            .await;
        assert_eq!(set.result(), &json!({}));
        let bad = session
            .call(3, "logging/setLevel", json!({"level": "loud"}))
            .await;
        assert_eq!(bad.error_code(), -32602);
        let unknown = session.call(4, "resources/list", json!({})).await;
        assert_eq!(unknown.error_code(), -32601);
        assert_eq!(unknown.body["id"], 4);
        // server/discover and tasks belong to other revisions.
        assert_eq!(
            session
                .call(5, "server/discover", json!({}))
                .await
                .error_code(),
            -32601
        );
        // Notifications and client responses are accepted without a body.
        let note = session
            .send(&json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}))
            .await;
        assert_eq!(note.status, 202);
        let response = session
            .send(&json!({"jsonrpc": "2.0", "id": "s1", "result": {}}))
            .await;
        assert_eq!(response.status, 202);
    }
    let old = app.mcp_session(V0618).await;
    assert_eq!(
        old.call(6, "tasks/list", json!({})).await.error_code(),
        -32601,
        "2025-06-18 has no tasks"
    );
}

fn names(tools: &Value) -> Vec<String> {
    tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn tools_list_describes_every_tool_and_pages() {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.mcp.page_size = 4;
    let app = spawn_with(config, dir).await;
    for version in [V0618, V1125] {
        let session = app.mcp_session(version).await;
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let page = session.call(pages, "tools/list", params).await;
            let result = page.result().clone();
            assert!(result["tools"].as_array().unwrap().len() <= 4);
            all.extend(result["tools"].as_array().unwrap().iter().cloned());
            pages += 1;
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        let (_, schema) = app.get_json("/schema").await;
        let total = schema["tasks"].as_array().unwrap().len() + 3;
        assert_eq!(
            all.len(),
            total,
            "every tool of the REST API and the job tools"
        );
        assert_eq!(pages as usize, total.div_ceil(4));
        let listed = names(&Value::Array(all.clone()));
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(listed, sorted, "deterministic name order");
        for expected in [
            "cancel_job",
            "create_sandbox",
            "delete_sandbox",
            "execute_code",
            "execute_shell",
            "get_job",
            "get_sandbox_info",
            "list_jobs",
            "list_sandboxes",
        ] {
            assert!(listed.iter().any(|n| n == expected), "{expected} listed");
        }
        for tool in &all {
            let name = tool["name"].as_str().unwrap();
            assert!(!tool["description"].as_str().unwrap().is_empty());
            assert_eq!(tool["inputSchema"]["type"], "object", "{name}");
            assert_eq!(tool["outputSchema"]["type"], "object", "{name}");
            for hint in [
                "readOnlyHint",
                "destructiveHint",
                "idempotentHint",
                "openWorldHint",
            ] {
                assert!(tool["annotations"][hint].is_boolean(), "{name} {hint}");
            }
            let is_job_tool = matches!(name, "get_job" | "cancel_job" | "list_jobs");
            assert_eq!(
                tool["inputSchema"]["properties"]["background"].is_object(),
                !is_job_tool,
                "{name}: background on queue tools only"
            );
            if version == V1125 {
                let support = if is_job_tool { "forbidden" } else { "optional" };
                assert_eq!(tool["execution"]["taskSupport"], support, "{name}");
            } else {
                assert!(tool.get("execution").is_none());
            }
        }
        let text = Value::Array(all.clone()).to_string();
        for format in ["uint64", "uint32", "double"] {
            assert!(
                !text.contains(&format!("\"format\":\"{format}\"")),
                "no Rust number formats in MCP schemas"
            );
        }
        let by_name = |n: &str| all.iter().find(|t| t["name"] == n).unwrap().clone();
        assert_eq!(
            by_name("execute_shell")["annotations"],
            json!({"readOnlyHint": false, "destructiveHint": true, "idempotentHint": false,
                   "openWorldHint": false})
        );
        assert_eq!(
            by_name("list_sandboxes")["annotations"]["readOnlyHint"],
            true
        );
        assert_eq!(by_name("get_job")["annotations"]["readOnlyHint"], true);
        assert_eq!(
            by_name("cancel_job")["annotations"]["destructiveHint"],
            true
        );
        let bad = session
            .call(9, "tools/list", json!({"cursor": "not-a-cursor"}))
            .await;
        assert_eq!(bad.error_code(), -32602);
    }
}

/// The structured content, checking that the text block carries the same JSON.
fn structured(result: &Value) -> Value {
    let text = result["content"][0]["text"].as_str().unwrap();
    assert_eq!(result["content"][0]["type"], "text");
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        parsed, result["structuredContent"],
        "text = structured JSON"
    );
    result["structuredContent"].clone()
}

on_both_databases!(tool_calls_run_as_jobs);

async fn tool_calls_run_as_jobs(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    for version in [V0618, V1125] {
        let session = app.mcp_session(version).await;
        let name = format!("mcp-{}", &version[5..7]);
        let created = session
            .tool(1, "create_sandbox", json!({"name": name}))
            .await;
        assert_eq!(created["isError"], false, "{created}");
        let sandbox = structured(&created);
        assert_eq!(sandbox["name"], name.as_str());
        assert_eq!(sandbox["status"], "running");

        // A non-zero exit is a normal result.
        let shell = session
            .tool(
                2,
                "execute_shell",
                json!({"sandbox_id": name, "command": "echo out; echo err >&2; exit 3"}),
            )
            .await;
        assert_eq!(shell["isError"], false);
        let out = structured(&shell);
        assert_eq!(out["exit_code"], 3);
        assert_eq!(out["stdout"], "out\n");
        assert_eq!(out["stderr"], "err\n");

        let code = session
            .tool(
                3,
                "execute_code",
                json!({"sandbox_id": name, "code": "print(6 * 7)", "language": "python"}),
            )
            .await;
        assert_eq!(structured(&code)["stdout"], "42\n");

        // A timeout is an execution failure that still has the command's output.
        let slow = session
            .tool(
                4,
                "execute_shell",
                json!({"sandbox_id": name, "command": "echo started; sleep 30", "timeout_s": 1}),
            )
            .await;
        assert_eq!(slow["isError"], true);
        let out = structured(&slow);
        assert_eq!(out["timed_out"], true);
        assert_eq!(out["stdout"], "started\n");

        // Unknown tool: a protocol error.
        let unknown = session
            .call(
                5,
                "tools/call",
                json!({"name": "no_such_tool", "arguments": {}}),
            )
            .await;
        assert_eq!(unknown.error_code(), -32602);
        assert!(
            unknown.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no_such_tool")
        );
        let malformed = session
            .call(
                6,
                "tools/call",
                json!({"name": "execute_shell", "arguments": [1]}),
            )
            .await;
        assert_eq!(malformed.error_code(), -32602);

        // Arguments the tool refuses: -32602 in 2025-06-18, an isError result from 2025-11-25.
        let refused = session
            .call(
                7,
                "tools/call",
                json!({"name": "execute_shell", "arguments": {"sandbox_id": name}}),
            )
            .await;
        if version == V0618 {
            assert_eq!(refused.error_code(), -32602);
            assert_eq!(refused.body["error"]["data"]["field"], "command");
        } else {
            let result = refused.result();
            assert_eq!(result["isError"], true);
            assert!(result.get("structuredContent").is_none());
            let text: Value =
                serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
            assert_eq!(text["error"]["field"], "command");
            assert_eq!(text["error"]["reason"], "invalid_argument");
        }
        // A sandbox that does not exist: what the tool could not do.
        let missing = session
            .tool(
                8,
                "execute_shell",
                json!({"sandbox_id": "nope", "command": "true"}),
            )
            .await;
        assert_eq!(missing["isError"], true);
        assert!(
            missing["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("not found")
        );

        // background: a job handle at once, then get_job and list_jobs.
        let started = session
            .tool(
                9,
                "execute_shell",
                json!({"sandbox_id": name, "command": "sleep 0.3; echo bg", "background": true}),
            )
            .await;
        assert_eq!(started["isError"], false);
        let handle = structured(&started);
        let job_id = handle["job_id"].as_str().unwrap().to_string();
        assert!(matches!(
            handle["status"].as_str(),
            Some("queued" | "running")
        ));
        let got = session
            .tool(10, "get_job", json!({"job_id": job_id, "wait_s": 30}))
            .await;
        let job = structured(&got);
        assert_eq!(job["status"], "succeeded");
        assert_eq!(job["result"]["stdout"], "bg\n");
        assert_eq!(job["tool"], "execute_shell");
        let listed = session
            .tool(11, "list_jobs", json!({"sandbox_id": name, "limit": 50}))
            .await;
        let page = structured(&listed);
        assert!(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["job_id"] == job_id.as_str())
        );
        let bad_background = session
            .call(
                12,
                "tools/call",
                json!({"name": "execute_shell", "arguments":
                    {"sandbox_id": name, "command": "true", "background": "yes"}}),
            )
            .await;
        if version == V0618 {
            assert_eq!(bad_background.body["error"]["data"]["field"], "background");
        } else {
            assert_eq!(bad_background.result()["isError"], true);
            assert!(
                bad_background.result()["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .contains("background")
            );
        }

        // cancel_job kills a running command.
        let long = session
            .tool(
                13,
                "execute_shell",
                json!({"sandbox_id": name, "command": "sleep 60", "background": true}),
            )
            .await;
        let long_id = structured(&long)["job_id"].as_str().unwrap().to_string();
        app.wait_for_state(&long_id, "running").await;
        let cancelled = session
            .tool(14, "cancel_job", json!({"job_id": long_id}))
            .await;
        let c = structured(&cancelled);
        assert_eq!(c["cancelled"], true);
        assert_eq!(app.wait(&long_id).await["status"], "cancelled");
        let again = session
            .tool(15, "cancel_job", json!({"job_id": long_id}))
            .await;
        assert_eq!(structured(&again)["cancelled"], false);
        let unknown_job = session
            .tool(
                16,
                "get_job",
                json!({"job_id": "01900000-0000-7000-8000-000000000000"}),
            )
            .await;
        assert_eq!(unknown_job["isError"], true);
    }
}

/// Starts a streamed call (progressToken, SSE accepted) and returns the response.
async fn streamed(session: &LegacySession<'_>, id: i64, arguments: Value) -> reqwest::Response {
    session
        .request(
            &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": "execute_shell", "arguments": arguments,
                "_meta": {"progressToken": format!("progress-{id}")}
            }}),
        )
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn progress_and_output_stream_before_the_result() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    app.sandbox("stream").await;
    let session = app.mcp_session(V1125).await;
    let response = streamed(
        &session,
        7,
        json!({"sandbox_id": "stream", "command": "for i in 1 2 3; do echo line $i; sleep 0.2; done"}),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let events = read_events(response, |e| is_answer(e, &json!(7))).await;
    // The priming event: an id to resume from, a retry delay, no message.
    assert_eq!(events[0].data, Value::Null);
    assert!(events[0].id.is_some());
    assert_eq!(events[0].retry, Some(1000));
    let mut last = 0.0;
    let mut progress = 0;
    let mut logged = String::new();
    for event in &events[1..events.len() - 1] {
        assert!(event.id.is_some(), "every event has an id");
        match event.data["method"].as_str().unwrap() {
            "notifications/progress" => {
                let p = &event.data["params"];
                assert_eq!(p["progressToken"], "progress-7");
                let value = p["progress"].as_f64().unwrap();
                assert!(value > last, "progress increases");
                last = value;
                progress += 1;
            }
            "notifications/message" => {
                let p = &event.data["params"];
                assert_eq!(p["level"], "info");
                assert_eq!(p["logger"], "stdout");
                logged.push_str(p["data"].as_str().unwrap());
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        progress >= 4,
        "queued/running and one per chunk: {events:?}"
    );
    assert_eq!(logged, "line 1\nline 2\nline 3\n");
    let answer = &events.last().unwrap().data;
    assert_eq!(answer["result"]["structuredContent"]["stdout"], logged);

    // Ids are unique across the session's streams.
    let ids: Vec<&String> = events.iter().filter_map(|e| e.id.as_ref()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids.len(), unique.len());

    // Without a progressToken (and without setLevel), the answer is plain JSON.
    let plain = session
        .call(
            8,
            "tools/call",
            json!({"name": "execute_shell", "arguments": {"sandbox_id": "stream", "command": "true"}}),
        )
        .await;
    assert_eq!(plain.header("content-type"), Some("application/json"));
    // A level that filters info out: progress only.
    session
        .call(9, "logging/setLevel", json!({"level": "error"}))
        .await;
    let quiet = streamed(
        &session,
        10,
        json!({"sandbox_id": "stream", "command": "echo hidden"}),
    )
    .await;
    let events = read_events(quiet, |e| is_answer(e, &json!(10))).await;
    assert!(
        events
            .iter()
            .all(|e| e.data["method"] != "notifications/message")
    );
}

#[actix_web::test]
async fn a_dropped_stream_resumes_and_its_job_goes_on() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    app.sandbox("resume").await;
    let session = app.mcp_session(V1125).await;
    let response = streamed(
        &session,
        3,
        json!({"sandbox_id": "resume", "command": "echo first; sleep 2; echo second"}),
    )
    .await;
    // Read up to the first output line, then hang up.
    let seen = read_events(response, |e| e.data["method"] == "notifications/message").await;
    let last_id = seen.last().unwrap().id.clone().unwrap();
    assert_eq!(seen.last().unwrap().data["params"]["data"], "first\n");

    // Legacy revisions: a disconnect is not a cancellation. Resume after the last event seen.
    let resumed = app
        .authed(app.client.get(app.url("/mcp")))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session.id)
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status().as_u16(), 200);
    let rest = read_events(resumed, |e| is_answer(e, &json!(3))).await;
    assert!(rest.iter().all(|e| e.id.as_ref() != Some(&last_id)));
    assert!(rest.iter().any(|e| e.data["params"]["data"] == "second\n"));
    let answer = &rest.last().unwrap().data;
    assert_eq!(
        answer["result"]["structuredContent"]["stdout"],
        "first\nsecond\n"
    );

    // Resuming from an id no stream has is refused.
    let unknown = app
        .authed(app.client.get(app.url("/mcp")))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session.id)
        .header("last-event-id", "999-1")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 400);
}

#[actix_web::test]
async fn notifications_cancelled_cancels_the_job() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    app.sandbox("cancel").await;
    let session = app.mcp_session(V1125).await;
    let request = session.request(&json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
        "params": {"name": "execute_shell", "arguments": {"sandbox_id": "cancel", "command": "sleep 60"}}}));
    let call = tokio::spawn(async move { answer(request.send().await.unwrap()).await });
    // Wait until the command runs.
    let job_id = loop {
        let (_, page) = app.get_json("/v1/jobs?state=running").await;
        if let Some(job) = page["jobs"].as_array().and_then(|j| j.first()) {
            break job["job_id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // An id of another request changes nothing.
    let other = session
        .send(
            &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": 41, "reason": "not this one"}}),
        )
        .await;
    assert_eq!(other.status, 202);
    let cancel = session
        .send(
            &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": 42, "reason": "changed my mind"}}),
        )
        .await;
    assert_eq!(cancel.status, 202);
    let answered = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends once cancelled")
        .unwrap();
    assert_eq!(answered.result()["isError"], true);
    assert_eq!(answered.result()["structuredContent"]["cancelled"], true);
    assert_eq!(app.wait(&job_id).await["status"], "cancelled");
}

#[actix_web::test]
async fn get_opens_a_standalone_stream_and_delete_needs_a_session() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let session = app.mcp_session(V1125).await;
    let get = |headers: Vec<(&'static str, String)>| {
        let mut request = app.authed(app.client.get(app.url("/mcp")));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let open = get(vec![
        ("accept", "text/event-stream".into()),
        ("mcp-session-id", session.id.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(open.status().as_u16(), 200);
    assert_eq!(open.headers()["content-type"], "text/event-stream");
    drop(open);
    let not_sse = get(vec![
        ("accept", "application/json".into()),
        ("mcp-session-id", session.id.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(not_sse.status().as_u16(), 406);
    let unknown = get(vec![
        ("accept", "text/event-stream".into()),
        ("mcp-session-id", "nope".into()),
    ])
    .await
    .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let legacy_without_session = get(vec![
        ("accept", "text/event-stream".into()),
        ("mcp-protocol-version", V1125.into()),
    ])
    .await
    .unwrap();
    assert_eq!(legacy_without_session.status().as_u16(), 400);
    let stateless = get(vec![("accept", "text/event-stream".into())])
        .await
        .unwrap();
    assert_eq!(stateless.status().as_u16(), 405);
    let delete_without = app
        .authed(app.client.delete(app.url("/mcp")))
        .header("mcp-protocol-version", V1125)
        .send()
        .await
        .unwrap();
    assert_eq!(delete_without.status().as_u16(), 400);
}
