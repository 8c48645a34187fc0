//! A command whose output holds a NUL byte still completes, and so does the sandbox's next job
//! (PostgreSQL's jsonb cannot hold U+0000; the store keeps it as U+FFFD there).

use serde_json::json;

use crate::helpers::{Db, spawn_app};

async fn a_nul_byte_in_output_does_not_stop_the_job(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let id = app.sandbox("nul").await;
    let job = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "printf 'a\\0b'; printf 'c\\0' >&2; exit 3"}),
        )
        .await;
    let done = app.wait(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let stdout = done["result"]["stdout"].as_str().unwrap();
    assert!(stdout == "a\0b" || stdout == "a\u{fffd}b", "{stdout:?}");
    assert_eq!(done["exit_code"], 3, "{done}");
    let next = app.shell(&id, "echo next").await;
    assert_eq!(next["stdout"], "next\n");
}

crate::on_both_databases!(a_nul_byte_in_output_does_not_stop_the_job);
