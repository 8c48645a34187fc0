//! Cancelling queued and running jobs.

use serde_json::json;

use crate::helpers::{Db, eventually, processes_with, spawn_app};

#[actix_web::test]
async fn cancel_queued_and_running_jobs() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("cancels").await;
    let marker = format!("mark{}", uuid::Uuid::new_v4().simple());
    let running = app
        .submit(
            "execute_shell",
            // The marker travels in the environment, so only the copied `sleep` carries it in
            // its command line (not the shell or bubblewrap).
            json!({"sandbox_id": id, "env": {"MARK": marker},
                   "command": "cp \"$(command -v sleep)\" \"./$MARK\"; echo begun; \"./$MARK\" 300"}),
        )
        .await;
    let queued = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "echo never > never.txt"}),
        )
        .await;
    app.wait_for_state(&running, "running").await;
    // The copied `sleep` itself (`cp`, which runs before the `echo`, carries the marker too).
    let sleeping = format!("./{marker} 300");
    assert!(eventually(5, || !processes_with(&sleeping).is_empty()).await);

    // The queued job is cancelled on the spot.
    let (status, body) = app
        .call(&format!("/v1/jobs/{queued}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    // The running one is killed, with its whole process tree.
    let (status, body) = app
        .call(&format!("/v1/jobs/{running}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let done = app.wait(&running).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["result"]["cancelled"], true);
    assert_eq!(done["result"]["stdout"], "begun\n");
    assert_eq!(done["error"]["reason"], "cancelled");
    assert!(
        eventually(5, || processes_with(&marker).is_empty()).await,
        "{:?}",
        processes_with(&marker)
    );
    let queued_job = app.wait(&queued).await;
    assert_eq!(queued_job["status"], "cancelled");
    assert!(
        queued_job["started_at"].is_null(),
        "a cancelled queued job never starts"
    );
    // Cancelling again is a conflict, and the workspace keeps working.
    let (status, body) = app
        .call(&format!("/v1/jobs/{running}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_finished");
    let out = app.shell(&id, "ls never.txt 2>&1; echo next").await;
    assert!(
        out["stdout"].as_str().unwrap().contains("No such file"),
        "{out}"
    );
}
