//! What only the daytona driver has: the fake CLI's contract and JSON, the command line that
//! reaches Daytona, Daytona down, back and hanging, a stopped sandbox, and a server that runs
//! sandboxes of both drivers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cases::HOSTILE;
use crate::harness::{Fake, Harness, use_fake};
use crate::helpers::{Db, spawn_with, test_config};
use crate::schema;

/// The fake's `info` and `list` JSON are Daytona's `Sandbox` and `ListSandboxesResponse`.
#[actix_web::test]
async fn the_fakes_json_follows_daytonas_openapi_schema() {
    let h = Harness::daytona().await;
    let id = h.app.sandbox("schema-a").await;
    h.app.sandbox("schema-b").await;
    let doc = schema::excerpt();
    let info = h.fake().info(&id);
    assert_eq!(
        schema::validate(&doc, "Sandbox", &info),
        Vec::<String>::new()
    );
    for args in [
        &["list", "-f", "json"][..],
        &["list", "-f", "json", "-l", "1"][..],
    ] {
        let out = h.fake().run(args);
        assert!(out.status.success());
        let page: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            schema::validate(&doc, "ListSandboxesResponse", &page),
            Vec::<String>::new()
        );
    }
    let out = h.fake().run(&["list", "-f", "json", "-l", "1"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["nextCursor"].is_string(), "{page}");
}

/// The forms the seed used do not exist; the fake refuses them as the real CLI does.
#[actix_web::test]
async fn the_fake_refuses_forms_the_real_cli_does_not_have() {
    let (_, dir) = test_config(Db::Sqlite).await.unwrap();
    let fake = Fake::new(dir.path().join("home"));
    fake.control(json!({}));
    let out = fake.run(&["create", "--name", "real"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [
        &["exec", "real", "echo hi"][..],
        &["create", "https://github.com/x/y", "--name", "n"],
        &["create", "--name", "n", "--branch", "main"],
        &["delete", "real", "--force"],
        &["server"],
        &["profile", "use", "local"],
        &["list", "--output", "json"],
    ] {
        let out = fake.run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("Error: "), "{args:?}: {stderr}");
    }
    // The real forms work.
    let out = fake.run(&["exec", "real", "--", "echo", "hi"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let out = fake.run(&["exec", "real", "--", "sh", "-c", "'exit 4'"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(fake.run(&["delete", "real"]).status.success());
}

/// Hostile text reaches the sandbox only inside base64 tokens: no exec command line the CLI
/// got holds any of it, or any shell syntax outside the wrapper's constant script.
#[actix_web::test]
async fn caller_text_never_reaches_the_clis_command_line() {
    let h = Harness::daytona().await;
    let id = h.app.sandbox("argv").await;
    let (_, out) = h
        .shell(
            &id,
            &format!("printf '%s' \"$V\" # {HOSTILE}"),
            json!({"env": {"V": HOSTILE}, "stdin": HOSTILE}),
        )
        .await;
    assert_eq!(out["stdout"], HOSTILE, "{out}");
    h.file_ok(
        &id,
        "write",
        "$(touch pwned) it's",
        json!({"content": HOSTILE}),
    )
    .await;
    let execs: Vec<Vec<String>> = h
        .fake()
        .calls()
        .into_iter()
        .filter(|c| c.first().map(String::as_str) == Some("exec"))
        .collect();
    assert!(execs.len() >= 3, "{execs:?}");
    for call in execs {
        let dash = call.iter().position(|a| a == "--").unwrap();
        let line = &call[dash + 1..];
        assert_eq!(line[0], "sh");
        assert_eq!(line[1], "-c");
        assert!(line[2].starts_with('\'') && line[2].ends_with('\''));
        assert!(!line[2][1..line[2].len() - 1].contains('\''));
        for token in &line[3..] {
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=_".contains(&b)),
                "caller text in the command line: {token}"
            );
        }
    }
}

/// The CLI is a host-side process: its environment is ours (API URL and key, a minimal PATH,
/// HOME), whatever the caller sets; the caller's variables reach the sandbox only.
#[actix_web::test]
async fn no_caller_variable_reaches_the_clis_environment() {
    let h = Harness::daytona().await;
    let (_, created) = h
        .app
        .call(
            "/create_sandbox",
            json!({"name": "env", "environment_vars": {"SANDBOX_SECRET": "sandbox-secret-value"}}),
        )
        .await;
    let id = created["sandbox_id"].as_str().unwrap().to_string();
    let (_, out) = h
        .shell(
            &id,
            "printf '%s %s' \"$SANDBOX_SECRET\" \"$LD_PRELOAD\"",
            json!({"env": {"LD_PRELOAD": "/tmp/evil.so", "PATH_EXTRA": "call-secret-value"}}),
        )
        .await;
    assert_eq!(out["stdout"], "sandbox-secret-value /tmp/evil.so", "{out}");
    let allowed = [
        "PATH",
        "HOME",
        "LANG",
        "NO_COLOR",
        "DAYTONA_API_URL",
        "DAYTONA_API_KEY",
    ];
    let runs = h.fake().environments();
    assert!(!runs.is_empty());
    for env in runs {
        for (k, v) in &env {
            // The fake's own interpreter may add a variable or two; none of them is ours.
            assert!(
                allowed.contains(&k.as_str()) || k == "PWD" || k == "SHLVL" || k == "_",
                "{k} reached the CLI"
            );
            let v = v.as_str().unwrap_or("");
            for secret in ["sandbox-secret-value", "/tmp/evil.so", "call-secret-value"] {
                assert!(!v.contains(secret), "{k}={v}");
            }
        }
        assert_eq!(env["PATH"], "/usr/local/bin:/usr/bin:/bin");
        assert_eq!(env["DAYTONA_API_KEY"], "***", "the key was given");
    }
}

fn readyz_check(body: &Value) -> &str {
    body["drivers"]["daytona"]["check"].as_str().unwrap_or("")
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{driver=\"daytona\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Daytona down: jobs are retried with backoff, then fail clearly after `max_attempts`;
/// `/readyz` and the metrics say so. Daytona back: the next job succeeds, `/readyz` recovers.
#[actix_web::test]
async fn daytona_down_then_back() {
    let h = Harness::daytona_with(|c| c.queue.max_attempts = 3).await;
    let id = h.app.sandbox("flaky").await;
    let (status, ready) = h.app.get_json("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(readyz_check(&ready), "ok");
    assert!(
        ready["drivers"]["daytona"]["details"]["cli_version"]
            .as_str()
            .unwrap()
            .contains("0.216"),
        "{ready}"
    );
    assert!(
        !ready.to_string().contains(&h.fake().api_key),
        "the key is shown"
    );

    h.fake().control(json!({"down": true}));
    let job = h
        .app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "echo hi"}),
        )
        .await;
    let done = h.app.wait(&job).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["reason"], "driver_unavailable", "{done}");
    let message = done["error"]["message"].as_str().unwrap();
    assert!(message.contains("connection refused"), "{message}");
    assert!(message.contains("gave up after 3 attempt(s)"), "{message}");
    assert_eq!(done["attempts"], 3, "{done}");
    let (status, ready) = h.app.get_json("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(readyz_check(&ready), "failed");
    let metrics = h.app.metrics().await;
    assert_eq!(
        metric(&metrics, "daytona_mcp_driver_available"),
        Some(0.0),
        "{metrics}"
    );
    assert!(metric(&metrics, "daytona_mcp_driver_unavailable_total").unwrap() >= 3.0);

    h.fake().control(json!({}));
    let (_, out) = h.shell(&id, "echo back", json!({})).await;
    assert_eq!(out["stdout"], "back\n", "{out}");
    let (status, ready) = h.app.get_json("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(readyz_check(&ready), "ok");
    let metrics = h.app.metrics().await;
    assert_eq!(metric(&metrics, "daytona_mcp_driver_available"), Some(1.0));
}

/// Daytona down for one attempt only: the retry succeeds.
#[actix_web::test]
async fn a_retry_after_daytona_comes_back_succeeds() {
    let h = Harness::daytona_with(|c| c.queue.max_attempts = 5).await;
    let id = h.app.sandbox("comes-back").await;
    h.fake().control(json!({"down": true}));
    let job = h
        .app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "echo retried"}),
        )
        .await;
    // The first attempt fails and the job waits for its retry.
    for _ in 0..200 {
        let (_, j) = h.app.get_json(&format!("/v1/jobs/{job}")).await;
        if j["attempts"].as_i64() >= Some(1) && j["status"] == "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.fake().control(json!({}));
    let done = h.app.wait(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["stdout"], "retried\n");
    assert!(done["attempts"].as_i64().unwrap() >= 2, "{done}");
}

/// A wrong API key is "unavailable" too (not logged in), and the key is never stored.
#[actix_web::test]
async fn a_refused_key_is_unavailable_and_no_key_is_stored() {
    let h = Harness::daytona_with(|c| c.queue.max_attempts = 1).await;
    let id = h.app.sandbox("keyed").await;
    let fake = h.fake();
    std::fs::write(
        fake.state().join("control.json"),
        json!({"api_key": "another key"}).to_string(),
    )
    .unwrap();
    let (_, out) = h.shell(&id, "echo x", json!({})).await;
    assert_eq!(out["error"]["code"], "driver_unavailable", "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("login"),
        "{out}"
    );
    let dir = h.app.data_dir.clone();
    let key = fake.api_key.clone();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "the API key is in {}",
                entry.path().display()
            );
        }
    }
}

/// Daytona hanging: every CLI call is killed at its deadline, and the job fails clearly.
#[actix_web::test]
async fn daytona_hanging_times_out() {
    let h = Harness::daytona_with(|c| {
        c.queue.max_attempts = 1;
        c.daytona.command_timeout_s = 2;
    })
    .await;
    let id = h.app.sandbox("hangs").await;
    h.fake().control(json!({"hang": true}));
    let (_, out) = h.shell(&id, "echo never", json!({"timeout_s": 1})).await;
    assert_eq!(out["error"]["code"], "timeout", "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(message.contains("did not answer"), "{message}");
    // Non-exec calls are retried as unavailable, then fail.
    let (_, out) = h
        .app
        .call("/get_sandbox_info", json!({"sandbox_id": id}))
        .await;
    assert_eq!(out["status"], "running", "what the server last knew: {out}");
    let (status, ready) = h.app.get_json("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    h.fake().control(json!({}));
}

/// A call to a stopped sandbox starts it.
#[actix_web::test]
async fn a_stopped_sandbox_is_started_by_the_next_call() {
    let h = Harness::daytona().await;
    let id = h.app.sandbox("sleepy").await;
    let out = h.fake().run(&["stop", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, info) = h
        .app
        .call("/get_sandbox_info", json!({"sandbox_id": id}))
        .await;
    assert_eq!(info["status"], "stopped", "{info}");
    let (_, listed) = h.app.call("/list_sandboxes", json!({})).await;
    assert_eq!(listed["sandboxes"][0]["status"], "stopped", "{listed}");
    let (_, out) = h.shell(&id, "echo awake", json!({})).await;
    assert_eq!(out["stdout"], "awake\n", "{out}");
    assert_eq!(h.fake().info(&id)["state"], "started");
    let starts = h
        .fake()
        .calls()
        .iter()
        .filter(|c| c.first().map(String::as_str) == Some("start"))
        .count();
    assert_eq!(starts, 1);
}

/// The sandbox's id is ours; Daytona's id is kept as the handle and used for every call.
#[actix_web::test]
async fn calls_use_daytonas_id_and_the_listing_follows_cursors() {
    let h = Harness::daytona().await;
    h.fake().control(json!({"page_size": 1}));
    let a = h.app.sandbox("cursor-a").await;
    let b = h.app.sandbox("cursor-b").await;
    let handle = h.fake().info(&a)["id"].as_str().unwrap().to_string();
    assert_ne!(handle, a);
    h.shell(&a, "true", json!({})).await;
    let calls = h.fake().calls();
    let exec = calls.iter().rev().find(|c| c[0] == "exec").unwrap();
    assert_eq!(exec[1], handle, "exec names Daytona's id");
    let (_, listed) = h.app.call("/list_sandboxes", json!({})).await;
    assert_eq!(listed["count"], 2);
    for s in listed["sandboxes"].as_array().unwrap() {
        assert_eq!(s["status"], "running", "{listed}");
    }
    let lists: Vec<Vec<String>> = h
        .fake()
        .calls()
        .into_iter()
        .filter(|c| c[0] == "list")
        .collect();
    assert!(
        lists.iter().any(|c| c.contains(&"-c".to_string())),
        "the listing followed nextCursor: {lists:?}"
    );
    let _ = b;
}

/// One server, a sandbox on each driver, each call routed to its sandbox's driver.
#[actix_web::test]
async fn a_sandbox_of_each_driver_in_one_server() {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    let fake = Fake::new(dir.path().join("operator-home"));
    use_fake(&mut config, &fake);
    config.sandbox.drivers = vec!["local".into(), "daytona".into()];
    config.sandbox.driver = "local".into();
    let app = spawn_with(config, dir).await;

    let (_, on_local) = app.call("/create_sandbox", json!({"name": "here"})).await;
    let local_id = on_local["sandbox_id"].as_str().unwrap().to_string();
    let (status, on_daytona) = app
        .call(
            "/create_sandbox",
            json!({"name": "there", "driver": "daytona"}),
        )
        .await;
    assert_eq!(status, 200, "{on_daytona}");
    let daytona_id = on_daytona["sandbox_id"].as_str().unwrap().to_string();
    let (status, bad) = app
        .call(
            "/create_sandbox",
            json!({"name": "nowhere", "driver": "docker"}),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["error"]["field"], "driver");

    for (id, marker) in [(&local_id, "local-file"), (&daytona_id, "daytona-file")] {
        let (_, out) = app
            .call(
                "/execute_shell",
                json!({"sandbox_id": id, "command": format!("echo {marker} > {marker}")}),
            )
            .await;
        assert_eq!(out["exit_code"], 0, "{out}");
    }
    let local_root = app.data_dir.join("sandboxes").join(&local_id);
    let handle = fake.info(&daytona_id)["id"].as_str().unwrap().to_string();
    let daytona_root = fake
        .state()
        .join("sandboxes")
        .join(&handle)
        .join("home/workspace");
    assert!(local_root.join("local-file").exists());
    assert!(!local_root.join("daytona-file").exists());
    assert!(daytona_root.join("daytona-file").exists());
    assert!(!daytona_root.join("local-file").exists());
    assert!(
        fake.calls().iter().all(|c| !c.contains(&local_id)),
        "the local sandbox reached Daytona"
    );
    for (id, driver) in [(&local_id, "local"), (&daytona_id, "daytona")] {
        let (_, info) = app
            .call("/get_sandbox_info", json!({"sandbox_id": id}))
            .await;
        assert_eq!(info["driver"], driver, "{info}");
    }
    let (_, ready) = app.get_json("/readyz").await;
    assert_eq!(ready["driver"], "local");
    assert_eq!(ready["drivers"]["local"]["check"], "ok", "{ready}");
    assert_eq!(ready["drivers"]["daytona"]["check"], "ok", "{ready}");
}

/// A sandbox deleted behind the server's back is `missing`, and calls to it are `not_found`.
#[actix_web::test]
async fn a_sandbox_gone_from_daytona_is_not_found() {
    let h = Harness::daytona().await;
    let id = h.app.sandbox("vanished").await;
    let out = h.fake().run(&["delete", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, info) = h
        .app
        .call("/get_sandbox_info", json!({"sandbox_id": id}))
        .await;
    assert_eq!(info["status"], "missing", "{info}");
    let (status, out) = h.shell(&id, "echo x", json!({})).await;
    assert_eq!(status, 404, "{out}");
    assert_eq!(out["error"]["code"], "not_found", "{out}");
    let (status, deleted) = h
        .app
        .call("/delete_sandbox", json!({"sandbox_id": id}))
        .await;
    assert_eq!(
        status, 200,
        "deleting what Daytona no longer has succeeds: {deleted}"
    );
}

/// A missing CLI does not stop the server: `/readyz` reports it, and calls fail as
/// unavailable after their retries.
#[actix_web::test]
async fn a_missing_cli_is_reported_and_not_fatal() {
    let h = Harness::daytona_with(|c| {
        c.daytona.cli_path = "/nonexistent/daytona".into();
        c.queue.max_attempts = 2;
    })
    .await;
    let (status, ready) = h.app.get_json("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(readyz_check(&ready), "failed");
    assert!(ready["drivers"]["daytona"]["details"]["cli_version"].is_null());
    let (status, out) = h
        .app
        .call("/create_sandbox", json!({"name": "no-cli"}))
        .await;
    assert_eq!(status, 503, "{out}");
    assert_eq!(out["error"]["code"], "driver_unavailable", "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot be started"), "{message}");
    assert!(message.contains("gave up after 2 attempt(s)"), "{message}");
    // The name is free again: the failed creation took its row along.
    let (_, listed) = h.app.call("/list_sandboxes", json!({})).await;
    assert_eq!(listed["count"], 0, "{listed}");
}

/// `Application::build_with` runs the drivers it is given, whatever the configuration names:
/// here the configuration says `local`, and the injected daytona driver serves every sandbox.
#[actix_web::test]
async fn an_injected_driver_serves_the_sandboxes() {
    use daytona_mcp::drivers::Drivers;
    use daytona_mcp::drivers::daytona::{DaytonaConfig, DaytonaDriver};

    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    let fake = Fake::new(dir.path().join("operator-home"));
    use_fake(&mut config, &fake);
    assert_eq!(config.sandbox.driver, "local");
    let make: crate::helpers::MakeDrivers = Box::new(|config| {
        Box::pin(async move {
            let driver = DaytonaDriver::start(DaytonaConfig::from_config(&config).unwrap()).await;
            Drivers::single(std::sync::Arc::new(driver))
        })
    });
    let app = crate::helpers::spawn_with_drivers(config, dir, Some(make)).await;
    let (_, ready) = app.get_json("/readyz").await;
    assert_eq!(ready["driver"], "daytona", "{ready}");
    let id = app.sandbox("injected").await;
    let (_, info) = app
        .call("/get_sandbox_info", json!({"sandbox_id": id}))
        .await;
    assert_eq!(info["driver"], "daytona");
    assert_eq!(fake.info(&id)["name"], id.as_str());
    assert!(!app.data_dir.join("sandboxes").join(&id).exists());
}

/// A tampered archive is refused by the server before anything reaches the Daytona sandbox:
/// entries climbing out, absolute paths, a link out and a file through it. The workspace and
/// the fake's state outside it are unchanged, and a fork of a local sandbox's snapshot onto
/// Daytona (one server running both drivers) holds the same files.
#[actix_web::test]
async fn tampered_archives_never_reach_the_sandbox() {
    use crate::support::tree::{Raw, crafted, manifest};
    use sha2::Digest;
    use sqlx::Connection;
    let h = Harness::daytona_with(|config| {
        config.sandbox.drivers = vec!["daytona".into(), "local".into()];
    })
    .await;
    let app = &h.app;
    let (status, local) = app
        .call(
            "/create_sandbox",
            json!({"name": "on-local", "driver": "local"}),
        )
        .await;
    assert_eq!(status, 200, "{local}");
    let local = local["sandbox_id"].as_str().unwrap().to_string();
    let (status, made) = h
        .shell(&local, crate::cases::SNAPSHOT_FILES, json!({}))
        .await;
    assert_eq!(made["exit_code"], 0, "{status} {made}");
    let (status, snap) = app
        .call("/snapshot_sandbox", json!({"sandbox_id": local}))
        .await;
    assert_eq!(status, 200, "{snap}");
    let snapshot = snap["snapshot_id"].as_str().unwrap().to_string();
    let (status, fork) = app
        .call(
            "/create_sandbox",
            json!({"name": "on-daytona", "from_snapshot": snapshot}),
        )
        .await;
    assert_eq!(status, 200, "{fork}");
    let remote = fork["sandbox_id"].as_str().unwrap().to_string();
    let workspace = h.workspace_on_host(&remote);
    let local_root = app.data_dir.join("sandboxes").join(&local);
    assert_eq!(manifest(&workspace), manifest(&local_root));

    let before = manifest(&workspace);
    let state_before = manifest(&h.fake().state().join("sandboxes"));
    let url = format!("sqlite://{}", app.data_dir.join("daytona-mcp.db").display());
    let planted: Raw = (b"planted.txt", tar::EntryType::Regular, b"", b"planted");
    let cases: Vec<Vec<Raw>> = vec![
        vec![planted, (b"../x", tar::EntryType::Regular, b"", b"pwned")],
        vec![planted, (b"/tmp/x", tar::EntryType::Regular, b"", b"pwned")],
        vec![
            planted,
            (b"out", tar::EntryType::Symlink, b"/tmp", b""),
            (b"out/x", tar::EntryType::Regular, b"", b"pwned"),
        ],
    ];
    for entries in cases {
        let bytes = crafted(&entries);
        let archive = app
            .data_dir
            .join("snapshots")
            .join(format!("{snapshot}.tar.gz"));
        std::fs::write(&archive, &bytes).unwrap();
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE snapshots SET size_bytes = ?, digest = ? WHERE id = ?")
            .bind(bytes.len() as i64)
            .bind(hex::encode(sha2::Sha256::digest(&bytes)))
            .bind(&snapshot)
            .execute(&mut conn)
            .await
            .unwrap();
        let (status, refused) = app
            .call(
                "/restore_snapshot",
                json!({"snapshot_id": snapshot, "sandbox_id": remote}),
            )
            .await;
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("refused"),
            "{refused}"
        );
        assert_eq!(manifest(&workspace), before);
    }
    // Nothing of the fake's sandboxes changed (their workspaces, homes and /tmp).
    assert_eq!(manifest(&h.fake().state().join("sandboxes")), state_before);
}
