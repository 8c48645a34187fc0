//! Templates: `create_template` → `create_sandbox {template}` → setup commands run in the new
//! sandbox's order (their files and outputs), the call's fields over the template's; listing and
//! deleting; bad input; roles and tenants; the configuration's templates; environment values
//! kept off job and audit rows.

use serde_json::{Value, json};
use sqlx::{Connection, Row};

use crate::access::{DEVELOPER, OTHER, VIEWER, spawn_keyed};
use crate::helpers::{Db, TestApp, spawn_with, test_config};
use crate::on_both_databases;

on_both_databases!(
    a_sandbox_from_a_template_runs_its_setup_in_order_with_the_calls_fields_first,
    templates_are_listed_deleted_and_bad_input_is_refused,
    templates_are_per_tenant_and_need_their_roles,
    setup_jobs_are_made_once_and_fail_with_their_sandbox,
);

/// Rows of `table` holding `needle` in the text of `column`, read from the database directly.
async fn rows_holding(
    app: &TestApp,
    db: Db,
    url: &str,
    table: &str,
    column: &str,
    needle: &str,
) -> i64 {
    let like = format!("%{needle}%");
    let query = format!(
        "SELECT COUNT(*) AS n FROM {table} WHERE COALESCE(CAST({column} AS TEXT), '') LIKE $1"
    );
    match db {
        Db::Sqlite => {
            let path = app.data_dir.join("daytona-mcp.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(query.replace("$1", "?1")))
                .bind(&like)
                .fetch_one(&mut conn)
                .await
                .unwrap()
                .get("n")
        }
        Db::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(query))
                .bind(&like)
                .fetch_one(&mut conn)
                .await
                .unwrap()
                .get("n")
        }
    }
}

async fn a_sandbox_from_a_template_runs_its_setup_in_order_with_the_calls_fields_first(db: Db) {
    let Some((config, dir)) = test_config(db).await else {
        return;
    };
    let db_url = config.database.url.clone();
    let app = spawn_with(config, dir).await;
    let secret = format!("tplsecret{}", uuid::Uuid::new_v4().simple());
    let (status, made) = app
        .call(
            "/create_template",
            json!({
                "name": "shell-kit",
                "description": "a shell sandbox with a prepared directory",
                "language": "sh",
                "environment_vars": {"TEMPLATE_SECRET": secret, "SHARED": "from-template"},
                "labels": {"team": "data", "tier": "template"},
                "resources": {"memory_mb": 256},
                "setup_commands": [
                    "printf one > order.txt && echo first-output",
                    "printf ' two' >> order.txt; echo second-fails >&2; exit 3",
                    "printf ' three' >> order.txt && printf %s \"$SHARED\"",
                ],
            }),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["template"]["source"], "stored", "{made}");
    assert_eq!(
        made["template"]["environment_vars"],
        json!({"SHARED": "***", "TEMPLATE_SECRET": "***"}),
        "values are never echoed: {made}"
    );

    let (status, created) = app
        .call(
            "/create_sandbox",
            json!({
                "name": "from-kit",
                "template": "shell-kit",
                "environment_vars": {"SHARED": "from-call"},
                "labels": {"tier": "call"},
                "resources": {"cpu": 0.5},
            }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["template"], "shell-kit", "{created}");
    assert_eq!(
        created["language"], "sh",
        "the template's language: {created}"
    );
    let setup: Vec<String> = created["setup_jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no setup_jobs: {created}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    assert_eq!(setup.len(), 3, "{created}");

    // A call made after the creation waits behind the setup commands (the sandbox's order),
    // so it sees what all of them wrote.
    let after = app.shell("from-kit", "cat order.txt").await;
    assert_eq!(
        after["stdout"], "one two three",
        "in order, all of them: {after}"
    );
    let mut jobs = Vec::new();
    for id in &setup {
        jobs.push(app.wait(id).await);
    }
    for job in &jobs {
        assert_eq!(job["tool"], "execute_shell", "{job}");
        assert_eq!(job["sandbox"], "from-kit", "{job}");
    }
    // Each ran; the failing one did not stop the one after it.
    assert_eq!(jobs[0]["exit_code"], 0, "{}", jobs[0]);
    assert_eq!(jobs[0]["result"]["stdout"], "first-output\n");
    assert_eq!(jobs[1]["exit_code"], 3, "{}", jobs[1]);
    assert_eq!(jobs[1]["result"]["stderr"], "second-fails\n");
    assert_eq!(jobs[2]["exit_code"], 0, "{}", jobs[2]);
    // The call's variable won over the template's; the setup saw it.
    assert_eq!(jobs[2]["result"]["stdout"], "from-call");

    // Maps merged key by key, the call's keys first; the template's secret reached commands.
    let (_, info) = app
        .call("/get_sandbox_info", json!({"sandbox_id": "from-kit"}))
        .await;
    assert_eq!(
        info["labels"],
        json!({"team": "data", "tier": "call"}),
        "{info}"
    );
    assert_eq!(info["resources"]["requested"]["memory_mb"], 256, "{info}");
    assert_eq!(info["resources"]["requested"]["cpu"], 0.5, "{info}");
    assert_eq!(
        info["environment_vars"],
        json!({"SHARED": "***", "TEMPLATE_SECRET": "***"})
    );
    let length = app
        .shell("from-kit", "printf %s \"$TEMPLATE_SECRET\" | wc -c")
        .await;
    assert_eq!(
        length["stdout"].as_str().unwrap().trim(),
        secret.len().to_string()
    );

    // Explicit setup_commands replace the template's (an empty list runs none).
    let (status, bare) = app
        .call(
            "/create_sandbox",
            json!({"name": "from-kit-bare", "template": "shell-kit", "setup_commands": []}),
        )
        .await;
    assert_eq!(status, 200, "{bare}");
    assert!(bare.get("setup_jobs").is_none(), "{bare}");
    let listing = app
        .shell("from-kit-bare", "ls -A | wc -l && printf %s \"$SHARED\"")
        .await;
    assert_eq!(listing["stdout"], "0\nfrom-template", "{listing}");

    // The value is on the template and sandbox rows only: never in job or audit rows.
    let (_, all) = app.get_json("/v1/jobs?limit=200").await;
    assert!(!all.to_string().contains(&secret), "a job shows the value");
    let (_, listed) = app.call("/list_templates", json!({})).await;
    assert!(!listed.to_string().contains(&secret), "{listed}");
    for (table, column, want) in [
        ("jobs", "arguments", 0),
        ("jobs", "result", 0),
        ("audit_log", "args_summary", 0),
        ("templates", "fields", 0),
        ("templates", "environment_vars", 1),
        ("sandboxes", "environment_vars", 2),
    ] {
        let n = rows_holding(&app, db, &db_url, table, column, &secret).await;
        assert_eq!(n, want, "{table}.{column}");
    }
}

async fn templates_are_listed_deleted_and_bad_input_is_refused(db: Db) {
    let Some((mut config, dir)) = test_config(db).await else {
        return;
    };
    config.templates.insert(
        "server-kit".into(),
        serde_json::from_value(json!({
            "description": "the operator's",
            "language": "sh",
            "environment_vars": {"OPERATOR_VALUE": "op-secret-value"},
            "setup_commands": ["echo from-config > made-by-config.txt"],
        }))
        .unwrap(),
    );
    let app = spawn_with(config, dir).await;
    let (status, _) = app
        .call(
            "/create_template",
            json!({"name": "mine", "language": "sh"}),
        )
        .await;
    assert_eq!(status, 200);

    // Both sources listed, values masked.
    let (status, list) = app.call("/list_templates", json!({})).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], 2, "{list}");
    let by_name = |name: &str| -> Value {
        list["templates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {list}"))
    };
    assert_eq!(by_name("server-kit")["source"], "config");
    assert_eq!(
        by_name("server-kit")["environment_vars"]["OPERATOR_VALUE"],
        "***"
    );
    assert_eq!(by_name("mine")["source"], "stored");
    assert!(by_name("mine")["created_at"].is_string());
    assert!(!list.to_string().contains("op-secret-value"));

    // The configuration's template makes sandboxes like a stored one.
    let (status, created) = app
        .call(
            "/create_sandbox",
            json!({"name": "from-server", "template": "server-kit"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let out = app
        .shell(
            "from-server",
            "cat made-by-config.txt && printf %s \"$OPERATOR_VALUE\"",
        )
        .await;
    assert_eq!(out["stdout"], "from-config\nop-secret-value");

    // Conflicts: a taken name, and a configuration template's name.
    let (status, again) = app.call("/create_template", json!({"name": "mine"})).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "conflict");
    let (status, shadow) = app
        .call("/create_template", json!({"name": "server-kit"}))
        .await;
    assert_eq!(status, 409, "{shadow}");
    assert!(
        shadow["error"]["message"]
            .as_str()
            .unwrap()
            .contains("configuration"),
        "{shadow}"
    );

    // Unknown template: 404 naming the field, and nothing was made.
    let (status, unknown) = app
        .call(
            "/create_sandbox",
            json!({"name": "never-made", "template": "no-such-kit"}),
        )
        .await;
    assert_eq!(status, 404, "{unknown}");
    assert_eq!(unknown["error"]["field"], "template", "{unknown}");
    let (_, info) = app
        .call("/get_sandbox_info", json!({"sandbox_id": "never-made"}))
        .await;
    assert_eq!(info["error"]["code"], "not_found", "{info}");

    // Invalid fields, each refused with its field and nothing stored.
    let long = "x".repeat(16 * 1024 + 1);
    let many: Vec<String> = (0..33).map(|i| format!("echo {i}")).collect();
    for (tool, arguments, field) in [
        ("create_template", json!({"language": "sh"}), "name"),
        ("create_template", json!({"name": "../up"}), "name"),
        (
            "create_template",
            json!({"name": "t1", "langauge": "sh"}),
            "langauge",
        ),
        (
            "create_template",
            json!({"name": "t2", "language": "cobol"}),
            "language",
        ),
        (
            "create_template",
            json!({"name": "t3", "git_branch": "main"}),
            "git_branch",
        ),
        (
            "create_template",
            json!({"name": "t4", "environment_vars": {"BAD-NAME": "v"}}),
            "environment_vars.BAD-NAME",
        ),
        (
            "create_template",
            json!({"name": "t5", "setup_commands": many}),
            "setup_commands",
        ),
        (
            "create_template",
            json!({"name": "t6", "setup_commands": [long]}),
            "setup_commands[0]",
        ),
        (
            "create_template",
            json!({"name": "t7", "setup_commands": ["true", " "]}),
            "setup_commands[1]",
        ),
        (
            "create_template",
            json!({"name": "t8", "resources": {"cpu": 10000.0}}),
            "resources.cpu",
        ),
        (
            "create_template",
            json!({"name": "t9", "git_repo": "https://user:pw@example.com/r.git"}),
            "git_repo",
        ),
        (
            "create_sandbox",
            json!({"setup_commands": many}),
            "setup_commands",
        ),
        ("create_sandbox", json!({"setup_jobs": ["x"]}), "setup_jobs"),
        ("create_sandbox", json!({"template": 5}), "template"),
        ("delete_template", json!({"name": "server-kit"}), "name"),
    ] {
        let (status, refused) = app.call(&format!("/{tool}"), arguments.clone()).await;
        assert_eq!(status, 400, "{tool} {arguments}: {refused}");
        assert_eq!(
            refused["error"]["field"], field,
            "{tool} {arguments}: {refused}"
        );
    }
    let (_, list) = app.call("/list_templates", json!({})).await;
    assert_eq!(list["count"], 2, "nothing refused was stored: {list}");

    // Delete: gone from the list and from create_sandbox; a second delete is 404; the
    // sandbox made from it stays.
    let (status, deleted) = app.call("/delete_template", json!({"name": "mine"})).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["success"], true);
    let (_, list) = app.call("/list_templates", json!({})).await;
    assert_eq!(list["count"], 1, "{list}");
    let (status, gone) = app.call("/delete_template", json!({"name": "mine"})).await;
    assert_eq!(status, 404, "{gone}");
    let (status, _) = app
        .call(
            "/create_sandbox",
            json!({"name": "late", "template": "mine"}),
        )
        .await;
    assert_eq!(status, 404);
    // The name is free again.
    let (status, _) = app
        .call(
            "/create_template",
            json!({"name": "mine", "labels": {"v": "2"}}),
        )
        .await;
    assert_eq!(status, 200);
}

async fn templates_are_per_tenant_and_need_their_roles(db: Db) {
    let Some(mut keyed) = spawn_keyed(db).await else {
        return;
    };
    keyed.act_as(DEVELOPER);
    let (status, made) = keyed
        .app
        .call(
            "/create_template",
            json!({"name": "team-kit", "setup_commands": ["echo default-tenant > who.txt"]}),
        )
        .await;
    assert_eq!(status, 200, "{made}");

    // A viewer lists it but may not create or delete one.
    let (status, list) = keyed
        .send_as(VIEWER, "POST", "/list_templates", Some(&json!({})))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["templates"][0]["name"], "team-kit", "{list}");
    for (tool, arguments) in [
        ("create_template", json!({"name": "viewer-kit"})),
        ("delete_template", json!({"name": "team-kit"})),
    ] {
        let (status, refused) = keyed
            .send_as(VIEWER, "POST", &format!("/{tool}"), Some(&arguments))
            .await;
        assert_eq!(status, 403, "{tool}: {refused}");
        assert_eq!(refused["error"]["code"], "forbidden");
    }

    // Another tenant neither sees nor uses nor deletes it, and may take the name for its own.
    let (_, theirs) = keyed
        .send_as(OTHER, "POST", "/list_templates", Some(&json!({})))
        .await;
    assert_eq!(theirs["count"], 0, "{theirs}");
    let (status, refused) = keyed
        .send_as(
            OTHER,
            "POST",
            "/create_sandbox",
            Some(&json!({"name": "borrowed", "template": "team-kit"})),
        )
        .await;
    assert_eq!(status, 404, "{refused}");
    let (status, _) = keyed
        .send_as(
            OTHER,
            "POST",
            "/delete_template",
            Some(&json!({"name": "team-kit"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, own) = keyed
        .send_as(
            OTHER,
            "POST",
            "/create_template",
            Some(&json!({"name": "team-kit", "setup_commands": ["echo other-tenant > who.txt"]})),
        )
        .await;
    assert_eq!(status, 200, "{own}");
    let (status, created) = keyed
        .send_as(
            OTHER,
            "POST",
            "/create_sandbox",
            Some(&json!({"name": "theirs", "template": "team-kit"})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let (_, out) = keyed
        .send_as(
            OTHER,
            "POST",
            "/execute_shell",
            Some(&json!({"sandbox_id": "theirs", "command": "cat who.txt"})),
        )
        .await;
    assert_eq!(out["stdout"], "other-tenant\n", "its own template: {out}");
    // The first tenant's template is unchanged.
    let (_, ours) = keyed
        .send_as(VIEWER, "POST", "/list_templates", Some(&json!({})))
        .await;
    assert_eq!(
        ours["templates"][0]["setup_commands"],
        json!(["echo default-tenant > who.txt"])
    );
}

/// A configured template the drivers cannot serve stops the server at start-up.
#[actix_web::test]
async fn a_configured_template_with_an_unknown_language_stops_the_server() {
    let (mut config, _dir) = test_config(Db::Sqlite).await.unwrap();
    config.templates.insert(
        "old".into(),
        serde_json::from_value(json!({"language": "cobol"})).unwrap(),
    );
    let error = match daytona_mcp::app::Application::build(config).await {
        Ok(_) => panic!("the server started with an invalid template"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("templates.old.language"), "{error}");
}

/// Over MCP: the template tools are listed with their schemas and hints, and a sandbox made
/// from a template over MCP lists its setup jobs, which `get_job` reads.
#[actix_web::test]
async fn mcp_clients_create_and_use_templates() {
    let app = crate::helpers::spawn_app(Db::Sqlite).await.unwrap();
    let session = app.mcp_session("2025-11-25").await;
    let listed = session.call(1, "tools/list", json!({})).await;
    let tools = listed.result()["tools"].as_array().unwrap().clone();
    let tool = |name: &str| -> Value {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed"))
    };
    for (name, read_only, destructive) in [
        ("create_template", false, false),
        ("list_templates", true, false),
        ("delete_template", false, true),
    ] {
        let t = tool(name);
        assert_eq!(t["annotations"]["readOnlyHint"], read_only, "{name}");
        assert_eq!(t["annotations"]["destructiveHint"], destructive, "{name}");
        assert_eq!(t["inputSchema"]["type"], "object", "{name}");
        assert!(!t["description"].as_str().unwrap().is_empty());
    }
    let create = tool("create_template");
    assert_eq!(create["inputSchema"]["required"], json!(["name"]));
    for field in ["name", "setup_commands", "environment_vars", "git_repo"] {
        assert!(
            create["inputSchema"]["properties"][field]["description"].is_string(),
            "{field}: {create}"
        );
    }
    let sandbox = tool("create_sandbox");
    assert!(sandbox["inputSchema"]["properties"]["template"].is_object());
    assert!(sandbox["inputSchema"]["properties"]["setup_commands"].is_object());
    assert!(
        sandbox["inputSchema"]["properties"]["setup_jobs"].is_null(),
        "server-set fields are not in the schema"
    );

    let made = session
        .tool(
            2,
            "create_template",
            json!({"name": "mcp-kit", "setup_commands": ["echo set-up-over-mcp"]}),
        )
        .await;
    assert_eq!(made["isError"], false, "{made}");
    let created = session
        .tool(
            3,
            "create_sandbox",
            json!({"name": "mcp-made", "template": "mcp-kit"}),
        )
        .await;
    assert_eq!(created["isError"], false, "{created}");
    let setup = created["structuredContent"]["setup_jobs"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();
    let job = session
        .tool(4, "get_job", json!({"job_id": setup, "wait_s": 30}))
        .await;
    assert_eq!(job["structuredContent"]["status"], "succeeded", "{job}");
    assert_eq!(
        job["structuredContent"]["result"]["stdout"],
        "set-up-over-mcp\n"
    );
    let unknown = session
        .tool(5, "create_sandbox", json!({"template": "no-kit"}))
        .await;
    assert_eq!(unknown["isError"], true, "{unknown}");
    assert_eq!(crate::access::tool_error(&unknown)["field"], "template");
}

async fn setup_jobs_are_made_once_and_fail_with_their_sandbox(db: Db) {
    let Some(app) = crate::helpers::spawn_app(db).await else {
        return;
    };
    let count_shells = || async {
        let (_, listed) = app.get_json("/v1/jobs?tool=execute_shell&limit=200").await;
        listed["jobs"].as_array().unwrap().len()
    };
    // A replayed idempotency key makes no second set of setup jobs (setup_commands given
    // directly, without a template).
    let request = json!({
        "tool": "create_sandbox",
        "arguments": {"name": "once", "setup_commands": ["echo a", "echo b"]},
        "idempotency_key": "create-once",
    });
    let (status, first) = app.call("/v1/jobs", request.clone()).await;
    assert_eq!(status, 202, "{first}");
    let (_, again) = app.call("/v1/jobs", request).await;
    assert_eq!(again["job_id"], first["job_id"]);
    let job = app.wait(first["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let setup = job["result"]["setup_jobs"].as_array().unwrap().clone();
    assert_eq!(setup.len(), 2, "{job}");
    for id in &setup {
        let done = app.wait(id.as_str().unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    assert_eq!(count_shells().await, 2, "one set of setup jobs");

    // A creation that fails (its clone does) takes its sandbox away; its setup jobs then fail
    // `not_found` without running anything.
    let (status, failed) = app
        .call(
            "/create_sandbox",
            json!({
                "name": "doomed",
                "git_repo": "/no/such/repository",
                "setup_commands": ["echo never"],
            }),
        )
        .await;
    assert_ne!(status, 200, "{failed}");
    let (_, listed) = app.get_json("/v1/jobs?tool=execute_shell&limit=200").await;
    let orphan = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["sandbox"] == "doomed")
        .unwrap_or_else(|| panic!("no setup job of the failed creation: {listed}"))
        .clone();
    let orphan = app.wait(orphan["job_id"].as_str().unwrap()).await;
    assert_eq!(orphan["status"], "failed", "{orphan}");
    assert_eq!(orphan["error"]["reason"], "not_found", "{orphan}");
    assert!(orphan["result"].is_null(), "{orphan}");
}
