//! Timeouts kill whole process trees; fork bombs and output floods are contained; the server
//! stays healthy.

use serde_json::json;

use crate::helpers::{Db, eventually, processes_with, spawn_app};

#[actix_web::test]
async fn timeout_kills_the_command_and_its_children() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("timeouts").await;
    let marker = format!("mark{}", uuid::Uuid::new_v4().simple());
    // A background child, a detached grandchild in its own session, and a foreground sleep,
    // each carrying the marker in its command line.
    let command = "cp \"$(command -v sleep)\" \"./$MARK\"; \
         \"./$MARK\" 1000 & \
         setsid \"./$MARK\" 1001 & \
         \"./$MARK\" 1002";
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": command, "timeout_s": 1.5, "env": {"MARK": marker}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["timed_out"], true);
    assert!(out["exit_code"].is_null());
    assert!(
        out["message"].as_str().unwrap().contains("timed out"),
        "{out}"
    );
    let exec_time = out["execution_time"].as_f64().unwrap();
    assert!(exec_time >= 1.5, "ended before its timeout: {exec_time}");
    assert!(
        eventually(5, || processes_with(&marker).is_empty()).await,
        "processes survived: {:?}",
        processes_with(&marker)
    );
    // The job itself records the timeout.
    let (_, page) = app
        .get_json("/v1/jobs?sandbox=timeouts&tool=execute_shell")
        .await;
    let job = &page["jobs"][0];
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["reason"], "timeout");
    assert_eq!(job["result"]["timed_out"], true);
}

#[actix_web::test]
async fn a_finished_command_leaves_no_background_processes() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("leftovers").await;
    let marker = format!("mark{}", uuid::Uuid::new_v4().simple());
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "env": {"MARK": marker},
                   "command": "cp \"$(command -v sleep)\" \"./$MARK\"; \"./$MARK\" 1000 & echo started"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "started\n");
    assert_eq!(out["exit_code"], 0);
    assert!(
        eventually(5, || processes_with(&marker).is_empty()).await,
        "background process outlived its command: {:?}",
        processes_with(&marker)
    );
}

#[actix_web::test]
async fn fork_bomb_is_contained() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("bomb").await;
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "bomb() { bomb | bomb & }; bomb; sleep 3; echo survived", "timeout_s": 8}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    // The bomb hit the process limit instead of taking the machine down.
    assert!(
        out["stderr"].as_str().unwrap().contains("fork")
            || out["stderr"]
                .as_str()
                .unwrap()
                .contains("Resource temporarily unavailable"),
        "{out}"
    );
    // The server and the sandbox still work.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let again = app.shell(&id, "echo still here").await;
    assert_eq!(again["stdout"], "still here\n");
}

#[actix_web::test]
async fn output_flood_is_capped_and_flagged() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("flood").await;
    // 5 MiB of output finishes, capped at the 1 MiB default per stream.
    let out = app
        .shell(&id, "head -c 5242880 /dev/zero | tr '\\0' a; echo done >&2")
        .await;
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["stdout"].as_str().unwrap().len(), 1024 * 1024);
    assert_eq!(out["stderr"], "done\n");
    // An endless flood ends at its timeout with capped output.
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "yes flood", "timeout_s": 2}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(out["timed_out"], true);
    assert_eq!(out["truncated"], true);
    assert!(out["stdout"].as_str().unwrap().len() <= 1024 * 1024);
    assert!(
        out["stdout"]
            .as_str()
            .unwrap()
            .starts_with("flood\nflood\n")
    );
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[actix_web::test]
async fn memory_hog_is_stopped() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("hog").await;
    // Three times the default 2 GiB limit.
    let (status, out) = app
        .call(
            "/execute_code",
            json!({"sandbox_id": id, "language": "python",
                   "code": "b = bytearray(6 * 1024**3)\nprint('allocated')", "timeout_s": 60}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(!out["stdout"].as_str().unwrap().contains("allocated"));
    assert!(
        out["stderr"].as_str().unwrap().contains("MemoryError")
            || out["limit_exceeded"] == "memory",
        "{out}"
    );
    let again = app.shell(&id, "echo ok").await;
    assert_eq!(again["stdout"], "ok\n");
}
