//! Keys and roles on every surface: 401 (with `WWW-Authenticate: Bearer`) without a valid key on
//! every route and MCP method, 403 for a role too low on every tool and route, `tools/list` per
//! role, and an audit row for each refusal. The tables are checked against the server's own
//! lists (its route templates, its tool registry), so a new route or tool without an entry
//! fails here.

use std::collections::{BTreeMap, BTreeSet};

use daytona_mcp::http::telemetry::ROUTES;
use serde_json::{Value, json};

use crate::access::{ADMIN, DEVELOPER, EXPIRED, VIEWER, spawn_keyed, tool_error};
use crate::helpers::Db;
use crate::on_both_databases;

on_both_databases!(
    every_route_and_mcp_method_refuses_a_missing_bad_or_expired_key,
    each_tool_and_route_needs_its_role,
    mcp_shows_and_refuses_by_role,
);

/// Routes that answer without a key.
const OPEN: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Every MCP method the endpoint serves, in any revision (and a notification).
const MCP_METHODS: &[&str] = &[
    "initialize",
    "notifications/initialized",
    "ping",
    "tools/list",
    "tools/call",
    "logging/setLevel",
    "notifications/cancelled",
    "server/discover",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "tasks/update",
];

/// A path of `template` with its parameters filled in.
fn path_of(template: &str) -> String {
    template
        .replace("{id}", &uuid::Uuid::now_v7().to_string())
        .replace("{tool}", "list_sandboxes")
}

async fn every_route_and_mcp_method_refuses_a_missing_bad_or_expired_key(db: Db) {
    let Some(keyed) = spawn_keyed(db).await else {
        return;
    };
    let expired = keyed.key(EXPIRED).to_string();
    let bad = format!("dmcp-wrong-{}", uuid::Uuid::new_v4().simple());
    let presented: [(&str, Option<&str>); 3] = [
        ("no key", None),
        ("bad key", Some(&bad)),
        ("expired key", Some(&expired)),
    ];
    let mut refused = 0;
    let mut checked = BTreeSet::new();
    for (template, method) in ROUTES {
        if OPEN.contains(template) {
            continue;
        }
        let path = path_of(template);
        let body =
            (*method == "POST").then(|| json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
        for (what, key) in presented {
            let (status, answer, challenge) =
                keyed.send_with(key, method, &path, body.as_ref()).await;
            assert_eq!(status, 401, "{method} {template} with {what}: {answer}");
            // The MCP routes answer in JSON-RPC, the others in the REST error shape.
            let coded =
                answer["error"]["code"] == "unauthenticated" || answer["error"]["code"].is_i64();
            assert!(coded, "{method} {template} with {what}: {answer}");
            assert!(
                challenge
                    .as_deref()
                    .is_some_and(|c| c.starts_with("Bearer")),
                "{method} {template} with {what}: WWW-Authenticate is {challenge:?}"
            );
            refused += 1;
        }
        checked.insert((*template, *method));
    }
    // The list of routes is the one the server registers (a test in `telemetry` checks that
    // each is routed); make sure it still has the ones this suite knows.
    for route in [
        ("/v1/jobs/{id}/events", "GET"),
        ("/v1/audit", "GET"),
        ("/{tool}", "POST"),
    ] {
        assert!(checked.contains(&route), "{route:?} not checked");
    }
    for mcp_method in MCP_METHODS {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": mcp_method, "params": {}});
        for (what, key) in presented {
            let (status, answer, challenge) =
                keyed.send_with(key, "POST", "/mcp", Some(&body)).await;
            assert_eq!(status, 401, "{mcp_method} with {what}: {answer}");
            assert!(
                answer["error"]["code"].is_i64(),
                "a JSON-RPC error: {answer}"
            );
            assert!(
                challenge
                    .as_deref()
                    .is_some_and(|c| c.starts_with("Bearer")),
                "{mcp_method} with {what}"
            );
            refused += 1;
        }
    }
    // One audit row per refusal, none with a key in it.
    let rows = keyed.audit().await;
    let denied: Vec<_> = rows
        .iter()
        .filter(|r| r.entry.outcome == "denied")
        .collect();
    assert_eq!(denied.len(), refused, "one row per refused request");
    let text = serde_json::to_string(&rows).unwrap();
    for key in keyed.all_keys().iter().chain([&bad]) {
        assert!(!text.contains(key.as_str()), "a key in the audit log");
    }
    // The same expired key is refused, and a valid one of the same file accepted.
    let (status, _) = keyed.send_as(VIEWER, "GET", "/v1/jobs", None).await;
    assert_eq!(status, 200);
}

/// What each tool is called with, per operation, and the least role of that call.
fn tool_table(sandbox: &str) -> BTreeMap<&'static str, Vec<(Value, &'static str)>> {
    let file = |op: &str, extra: Value| {
        let mut args = json!({"sandbox_id": sandbox, "operation": op, "file_path": "notes.txt"});
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        args
    };
    let git = |op: &str, extra: Value| {
        let mut args = json!({"sandbox_id": sandbox, "operation": op});
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        args
    };
    BTreeMap::from([
        (
            "create_sandbox",
            vec![(json!({"name": "made-by-role-test"}), "developer")],
        ),
        ("list_sandboxes", vec![(json!({}), "viewer")]),
        (
            "get_sandbox_info",
            vec![(json!({"sandbox_id": sandbox}), "viewer")],
        ),
        (
            "execute_shell",
            vec![(
                json!({"sandbox_id": sandbox, "command": "true"}),
                "developer",
            )],
        ),
        (
            "execute_code",
            vec![(
                json!({"sandbox_id": sandbox, "code": "true", "language": "sh"}),
                "developer",
            )],
        ),
        (
            "file_operation",
            vec![
                (file("read", json!({})), "viewer"),
                (file("list", json!({"file_path": "."})), "viewer"),
                (file("stat", json!({})), "viewer"),
                (file("exists", json!({})), "viewer"),
                (file("write", json!({"content": "more"})), "developer"),
                (file("append", json!({"content": "more"})), "developer"),
                (file("mkdir", json!({"file_path": "dir"})), "developer"),
                (
                    file("move", json!({"file_path": "dir", "destination": "dir2"})),
                    "developer",
                ),
                (file("delete", json!({"file_path": "dir2"})), "developer"),
            ],
        ),
        (
            "git_operation",
            vec![
                (git("status", json!({})), "viewer"),
                (git("log", json!({})), "viewer"),
                (git("diff", json!({})), "viewer"),
                (git("branch", json!({})), "viewer"),
                (git("add", json!({})), "developer"),
                (git("commit", json!({"commit_message": "m"})), "developer"),
                (git("branch", json!({"branch": "feature"})), "developer"),
            ],
        ),
        (
            "delete_sandbox",
            vec![(json!({"sandbox_id": "made-by-role-test"}), "developer")],
        ),
        (
            "create_template",
            vec![(
                json!({"name": "made-by-role-test", "setup_commands": ["true"]}),
                "developer",
            )],
        ),
        ("list_templates", vec![(json!({}), "viewer")]),
        (
            "delete_template",
            vec![(json!({"name": "made-by-role-test"}), "developer")],
        ),
        (
            "snapshot_sandbox",
            vec![(json!({"sandbox_id": sandbox}), "developer")],
        ),
        ("list_snapshots", vec![(json!({}), "viewer")]),
        (
            "restore_snapshot",
            vec![(
                json!({"snapshot_id": "snap-0000", "sandbox_id": sandbox}),
                "developer",
            )],
        ),
        (
            "delete_snapshot",
            vec![(json!({"snapshot_id": "snap-0000"}), "developer")],
        ),
    ])
}

/// A route's template and method, the request's path and body, and the status a viewer, a
/// developer and an admin get.
type RouteCase = (&'static str, &'static str, String, Option<Value>, [u16; 3]);

fn allows(role: &str, needed: &str) -> bool {
    let rank = |r: &str| {
        ["viewer", "developer", "admin"]
            .iter()
            .position(|x| *x == r)
    };
    rank(role) >= rank(needed)
}

async fn each_tool_and_route_needs_its_role(db: Db) {
    let Some(mut keyed) = spawn_keyed(db).await else {
        return;
    };
    keyed.act_as(DEVELOPER);
    let sandbox = keyed.app.sandbox("roles").await;
    keyed
        .app
        .shell(&sandbox, "printf 'hello viewer' > notes.txt && git init -q")
        .await;
    // The table covers the registry exactly.
    let (_, schema) = keyed.send_as(VIEWER, "GET", "/schema", None).await;
    let registry: BTreeSet<String> = schema["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let table = tool_table(&sandbox);
    let tabled: BTreeSet<String> = table.keys().map(|k| k.to_string()).collect();
    assert_eq!(registry, tabled, "every tool has a row here");

    // A viewer reads files.
    let (status, read) = keyed
        .send_as(
            VIEWER,
            "POST",
            "/file_operation",
            Some(&json!({"sandbox_id": sandbox, "operation": "read", "file_path": "notes.txt"})),
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["content"], "hello viewer");

    // Viewer first (nothing it is refused runs), then the developer, in an order where the
    // developer's calls find what they need (create before delete).
    let mut denials = 0;
    for who in [VIEWER, DEVELOPER] {
        for tool in [
            "create_sandbox",
            "list_sandboxes",
            "get_sandbox_info",
            "execute_shell",
            "execute_code",
            "file_operation",
            "git_operation",
            "delete_sandbox",
            "create_template",
            "list_templates",
            "delete_template",
            "snapshot_sandbox",
            "list_snapshots",
            "restore_snapshot",
            "delete_snapshot",
        ] {
            for (args, needed) in &table[tool] {
                let (status, body) = keyed
                    .send_as(who, "POST", &format!("/{tool}"), Some(args))
                    .await;
                if allows(who, needed) {
                    assert_ne!(status, 403, "{who} {tool} {args}: {body}");
                    assert_ne!(status, 401, "{who} {tool} {args}: {body}");
                } else {
                    assert_eq!(status, 403, "{who} {tool} {args}: {body}");
                    assert_eq!(body["error"]["code"], "forbidden", "{body}");
                    denials += 1;
                }
            }
        }
    }

    // The other routes, each with what a viewer, a developer and an admin get.
    let job = keyed
        .submit_as(
            DEVELOPER,
            "execute_shell",
            json!({"sandbox_id": sandbox, "command": "true"}),
        )
        .await;
    keyed.app.wait(&job).await;
    let routes: Vec<RouteCase> = vec![
        ("/schema", "GET", "/schema".into(), None, [200, 200, 200]),
        (
            "/{tool}/schema",
            "GET",
            "/execute_shell/schema".into(),
            None,
            [200, 200, 200],
        ),
        (
            "/v1/jobs",
            "POST",
            "/v1/jobs".into(),
            Some(
                json!({"tool": "execute_shell", "arguments": {"sandbox_id": sandbox, "command": "true"}}),
            ),
            [403, 202, 202],
        ),
        ("/v1/jobs", "GET", "/v1/jobs".into(), None, [200, 200, 200]),
        (
            "/v1/jobs/{id}",
            "GET",
            format!("/v1/jobs/{job}"),
            None,
            [200, 200, 200],
        ),
        (
            "/v1/jobs/{id}/cancel",
            "POST",
            format!("/v1/jobs/{job}/cancel"),
            Some(json!({})),
            // Finished already: the developer and the admin get 409.
            [403, 409, 409],
        ),
        (
            "/v1/jobs/{id}/events",
            "GET",
            format!("/v1/jobs/{job}/events"),
            None,
            [200, 200, 200],
        ),
        (
            "/v1/audit",
            "GET",
            "/v1/audit".into(),
            None,
            [403, 403, 200],
        ),
        (
            "/{tool}",
            "POST",
            "/list_sandboxes".into(),
            Some(json!({})),
            [200, 200, 200],
        ),
        // The MCP endpoint: any valid key may talk; what it may call is checked per method.
        (
            "/mcp",
            "POST",
            "/mcp".into(),
            Some(
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
            ),
            [200, 200, 200],
        ),
        (
            "/",
            "POST",
            "/".into(),
            Some(
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
            ),
            [200, 200, 200],
        ),
        // Without a session: 400 for every role (not 401/403).
        ("/mcp", "GET", "/mcp".into(), None, [405, 405, 405]),
        ("/mcp", "DELETE", "/mcp".into(), None, [405, 405, 405]),
    ];
    let mut covered = BTreeSet::new();
    for (template, method, path, body, wanted) in &routes {
        for (who, want) in [VIEWER, DEVELOPER, ADMIN].iter().zip(wanted) {
            let (status, answer, _) = keyed
                .send_with(Some(keyed.key(who)), method, path, body.as_ref())
                .await;
            assert_eq!(status, *want, "{who} {method} {path}: {answer}");
            if status == 403 {
                assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
                denials += 1;
            }
        }
        covered.insert((*template, *method));
    }
    for (template, method) in ROUTES {
        if !OPEN.contains(template) {
            assert!(
                covered.contains(&(*template, *method)),
                "{method} {template} has no row"
            );
        }
    }
    // Every refusal has its audit row, naming the key.
    let rows = keyed.audit().await;
    let denied: Vec<_> = rows
        .iter()
        .filter(|r| r.entry.outcome == "denied")
        .collect();
    assert_eq!(denied.len(), denials, "{denied:#?}");
    assert!(
        denied.iter().all(|r| matches!(
            r.entry.key_id.as_deref(),
            Some("viewer-key" | "developer-key")
        )),
        "{denied:#?}"
    );
    assert!(
        denied
            .iter()
            .any(|r| r.entry.action == "execute_shell" && r.entry.args_digest.is_some())
    );
    assert!(denied.iter().any(|r| r.entry.action == "jobs.cancel"));
    assert!(denied.iter().any(|r| r.entry.action == "audit.list"));
}

/// The names `tools/list` shows to the session's caller.
async fn listed(session: &crate::mcp_client::LegacySession<'_>) -> BTreeSet<String> {
    let answer = session.call(1, "tools/list", json!({})).await;
    answer.result()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

async fn mcp_shows_and_refuses_by_role(db: Db) {
    let Some(mut keyed) = spawn_keyed(db).await else {
        return;
    };
    keyed.act_as(DEVELOPER);
    let sandbox = keyed.app.sandbox("mcp-roles").await;
    keyed
        .app
        .shell(&sandbox, "printf 'for viewers' > seen.txt")
        .await;
    // In a sandbox of its own, so that it holds up nothing else (a sandbox's jobs run in turn).
    let busy = keyed.app.sandbox("mcp-roles-busy").await;
    let running = keyed
        .submit_as(
            DEVELOPER,
            "execute_shell",
            json!({"sandbox_id": busy, "command": "sleep 600"}),
        )
        .await;
    let all: BTreeSet<String> = [
        "cancel_job",
        "create_sandbox",
        "create_template",
        "delete_sandbox",
        "delete_snapshot",
        "delete_template",
        "execute_code",
        "execute_shell",
        "file_operation",
        "get_job",
        "get_sandbox_info",
        "git_operation",
        "list_jobs",
        "list_sandboxes",
        "list_snapshots",
        "list_templates",
        "restore_snapshot",
        "snapshot_sandbox",
    ]
    .map(String::from)
    .into();
    let readable: BTreeSet<String> = [
        "file_operation",
        "get_job",
        "get_sandbox_info",
        "git_operation",
        "list_jobs",
        "list_sandboxes",
        "list_snapshots",
        "list_templates",
    ]
    .map(String::from)
    .into();
    for version in ["2025-06-18", "2025-11-25"] {
        keyed.act_as(ADMIN);
        assert_eq!(listed(&keyed.app.mcp_session(version).await).await, all);
        keyed.act_as(DEVELOPER);
        assert_eq!(listed(&keyed.app.mcp_session(version).await).await, all);
        keyed.act_as(VIEWER);
        let session = keyed.app.mcp_session(version).await;
        assert_eq!(listed(&session).await, readable, "{version}");
        // A viewer reads files, and is refused what it cannot do, as a tool error.
        let read = session
            .tool(
                2,
                "file_operation",
                json!({"sandbox_id": sandbox, "operation": "read", "file_path": "seen.txt"}),
            )
            .await;
        assert_eq!(read["isError"], false, "{read}");
        assert_eq!(read["structuredContent"]["content"], "for viewers");
        for (tool, args) in [
            (
                "file_operation",
                json!({"sandbox_id": sandbox, "operation": "write", "file_path": "seen.txt", "content": "x"}),
            ),
            (
                "execute_shell",
                json!({"sandbox_id": sandbox, "command": "true"}),
            ),
            ("create_sandbox", json!({"name": "never"})),
            ("cancel_job", json!({"job_id": running})),
        ] {
            let result = session.tool(3, tool, args).await;
            assert_eq!(
                tool_error(&result)["reason"],
                "forbidden",
                "{version} {tool}"
            );
        }
        let job = session.tool(4, "get_job", json!({"job_id": running})).await;
        assert_eq!(job["isError"], false, "{job}");
        if version == "2025-11-25" {
            let cancel = session
                .call(5, "tasks/cancel", json!({"taskId": running}))
                .await;
            assert_eq!(cancel.error_code(), -32003, "{:?}", cancel.body);
            assert_eq!(cancel.body["error"]["data"]["reason"], "forbidden");
            let got = session
                .call(6, "tasks/get", json!({"taskId": running}))
                .await;
            assert_eq!(got.result()["status"], "working");
        }
    }
    // Nothing the viewer asked for was done.
    keyed.act_as(DEVELOPER);
    let out = keyed.app.shell(&sandbox, "cat seen.txt").await;
    assert_eq!(out["stdout"], "for viewers");
    let (_, job) = keyed.app.get_json(&format!("/v1/jobs/{running}")).await;
    assert_eq!(job["cancel_requested"], false, "{job}");
    let (status, _) = keyed
        .send_as(
            DEVELOPER,
            "POST",
            &format!("/v1/jobs/{running}/cancel"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 202);
    let rows = keyed.audit().await;
    let viewer_denials = rows
        .iter()
        .filter(|r| r.entry.outcome == "denied" && r.entry.key_id.as_deref() == Some("viewer-key"))
        .count();
    // Four refused tool calls in each revision, and one tasks/cancel.
    assert_eq!(viewer_denials, 4 * 2 + 1);
}

/// A keys file that holds a key instead of its digest stops the server at start-up, naming the
/// file and the entry, and without repeating the key.
#[actix_web::test]
async fn a_keys_file_with_a_plain_key_stops_the_server() {
    let (mut config, dir) = crate::helpers::test_config(Db::Sqlite).await.unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(
        &path,
        "[[keys]]\nname = \"ci\"\ntenant = \"team-a\"\nrole = \"developer\"\n\
         sha256 = \"dmcp_plain_key_0123456789\"\n",
    )
    .unwrap();
    config.auth.keys_file = path.display().to_string();
    let error = match daytona_mcp::app::Application::build(config).await {
        Ok(_) => panic!("the server started with a plain key in its keys file"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("keys.toml"), "{error}");
    assert!(error.contains("keys[0] (`ci`): sha256"), "{error}");
    assert!(!error.contains("dmcp_plain_key_0123456789"), "{error}");
}
