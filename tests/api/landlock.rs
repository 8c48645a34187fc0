//! The Landlock isolation level (`local.isolation = "landlock"`): the same escape, injection and
//! git tests as under bubblewrap, and commands confined without namespaces: no capabilities,
//! `no_new_privs`, no access to the host's files, the server's data or other sandboxes, no
//! TCP, no signals to the server.

use serde_json::json;

use crate::files::{escapes_are_refused, hostile_strings_do_only_what_they_say};
use crate::git::git_round_trip;
use crate::helpers::{Db, TestApp, spawn_with, test_config};
use daytona_mcp::drivers::local::IsolationMode;

async fn landlock_app(db: Db) -> Option<TestApp> {
    let (mut config, dir) = test_config(db).await?;
    config.local.isolation = IsolationMode::Landlock;
    Some(spawn_with(config, dir).await)
}

async fn escapes(db: Db) {
    let Some(app) = landlock_app(db).await else {
        return;
    };
    escapes_are_refused(&app).await;
}

async fn hostile(db: Db) {
    let Some(app) = landlock_app(db).await else {
        return;
    };
    hostile_strings_do_only_what_they_say(&app).await;
}

async fn git(db: Db) {
    let Some(app) = landlock_app(db).await else {
        return;
    };
    git_round_trip(&app).await;
}

async fn commands_are_confined(db: Db) {
    let Some(app) = landlock_app(db).await else {
        return;
    };
    // The level is reported, with its weaker points, in /readyz and get_sandbox_info.
    let (_, ready) = app.get_json("/readyz").await;
    assert!(
        ready["warnings"].to_string().contains("Landlock"),
        "{ready}"
    );
    let a = app.sandbox("alice").await;
    let b = app.sandbox("bob").await;
    let (_, info) = app
        .call("/get_sandbox_info", json!({"sandbox_id": a}))
        .await;
    assert_eq!(
        info["resources"]["enforcement"]["isolation"], "landlock",
        "{info}"
    );
    assert_eq!(
        info["resources"]["enforcement"]["landlock"]["tcp_restricted"],
        true
    );

    // Work inside the sandbox and its temporary directory is normal.
    let out = app
        .shell(
            &a,
            "echo alice-secret > secret.txt && mkdir -p d && echo t > \"$TMPDIR/t\" && \
             cat secret.txt \"$TMPDIR/t\" && python3 -c 'print(6*7)'",
        )
        .await;
    assert_eq!(out["stdout"], "alice-secret\nt\n42\n", "{out}");
    let a_dir = app.data_dir.join("sandboxes").join(&a);

    // No capabilities, no new privileges.
    let out = app
        .shell(&b, "grep -E 'CapEff|CapBnd|NoNewPrivs' /proc/self/status")
        .await;
    let status = out["stdout"].as_str().unwrap();
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapBnd:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");

    // Nothing outside: host secrets, the database, the data dir, another sandbox.
    let db_file = app.data_dir.join("daytona-mcp.db");
    let probes = [
        "cat /etc/shadow".to_string(),
        format!("cat {}", db_file.display()),
        format!("ls {}", app.data_dir.display()),
        format!("cat {}/secret.txt", a_dir.display()),
        "ls /root".to_string(),
        "touch /usr/evil".to_string(),
        "touch /tmp/evil-landlock".to_string(),
        format!("touch {}/evil", app.data_dir.display()),
        format!("touch {}/evil", a_dir.display()),
        "mknod dev c 1 3".to_string(),
    ];
    for probe in &probes {
        let out = app.shell(&b, &format!("{probe} 2>&1; echo rc=$?")).await;
        let text = out["stdout"].as_str().unwrap();
        assert!(!text.ends_with("rc=0\n"), "`{probe}` succeeded: {text}");
        assert!(
            !text.contains("alice-secret") && !text.contains("SQLite format"),
            "{text}"
        );
    }
    assert!(!std::path::Path::new("/usr/evil").exists());
    assert!(!std::path::Path::new("/tmp/evil-landlock").exists());
    assert!(!app.data_dir.join("evil").exists());
    assert!(!a_dir.join("evil").exists());

    // No signals to the server (same user, outside the sandbox's domain).
    let out = app
        .shell(
            &b,
            &format!("kill -0 {} 2>&1; echo rc=$?", std::process::id()),
        )
        .await;
    assert!(out["stdout"].as_str().unwrap().ends_with("rc=1\n"), "{out}");

    // No TCP without network access.
    let code = format!(
        "import socket\ns = socket.socket()\ns.settimeout(3)\n\
         try:\n    s.connect(('127.0.0.1', {}))\n    print('CONNECTED')\n\
         except OSError as e:\n    print('refused', e.errno)\n",
        app.port
    );
    let (status, out) = app
        .call(
            "/execute_code",
            json!({"sandbox_id": b, "code": code, "language": "python"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert!(
        out["stdout"].as_str().unwrap().starts_with("refused"),
        "{out}"
    );

    // Limits still apply: a fork bomb is contained and the server stays healthy.
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": b, "command": "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived", "timeout_s": 8}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let again = app.shell(&b, "echo still here").await;
    assert_eq!(again["stdout"], "still here\n");
}

crate::on_both_databases!(escapes, hostile, git, commands_are_confined);

#[actix_web::test]
async fn auto_falls_back_to_landlock_and_explicit_levels_refuse_to_start_without_theirs() {
    // `auto` with a bubblewrap that does not work: Landlock, with a warning.
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.local.isolation = IsolationMode::Auto;
    config.local.bwrap_path = "/nonexistent/bwrap".into();
    let app = spawn_with(config, dir).await;
    let id = app.sandbox("fallback").await;
    let (_, info) = app
        .call("/get_sandbox_info", json!({"sandbox_id": id}))
        .await;
    assert_eq!(
        info["resources"]["enforcement"]["isolation"], "landlock",
        "{info}"
    );
    drop(app);

    // `bwrap` without a working bubblewrap: the server does not start.
    let (mut config, _dir) = test_config(Db::Sqlite).await.unwrap();
    config.local.isolation = IsolationMode::Bwrap;
    config.local.bwrap_path = "/nonexistent/bwrap".into();
    let err = daytona_mcp::app::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("bubblewrap"), "{err:#}");

    // `none` is allowed only when asked for, and says so in /readyz.
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.local.isolation = IsolationMode::None;
    let app = spawn_with(config, dir).await;
    let (_, ready) = app.get_json("/readyz").await;
    let warnings = ready["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("isolation is \"none\"")),
        "{ready}"
    );
}
