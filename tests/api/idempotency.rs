//! Idempotency keys: a repetition (also while the job runs, also through another node) returns
//! the original job; the same key with other arguments is refused with 409.

use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_app, spawn_with, test_config};
use crate::on_both_databases;

on_both_databases!(a_key_reused_for_another_request_is_refused);

async fn post_keyed(app: &TestApp, path: &str, key: &str, body: &Value) -> (u16, bool, Value) {
    let response = app
        .authed(app.client.post(app.url(path)))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (
        status,
        replayed,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn assert_reused(status: u16, body: &Value, original: &str) {
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused", "{body}");
    assert_eq!(body["error"]["field"], "idempotency_key", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(original),
        "names the original job: {message}"
    );
}

async fn a_key_reused_for_another_request_is_refused(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let sandbox = app.sandbox("idem").await;

    // Jobs API: the same request while the first still runs is the same job.
    let slow = json!({
        "tool": "execute_shell",
        "arguments": {"sandbox_id": sandbox, "command": "echo run >> runs.txt; sleep 1"},
        "idempotency_key": "nightly-1",
    });
    let (status, first) = app.call("/v1/jobs", slow.clone()).await;
    assert_eq!(status, 202, "{first}");
    let original = first["job_id"].as_str().unwrap().to_string();
    app.wait_for_state(&original, "running").await;
    let (status, again) = app.call("/v1/jobs", slow).await;
    assert_eq!(
        (status, again["job_id"].as_str()),
        (202, Some(original.as_str()))
    );
    // Key order in the arguments does not make another request.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"idempotency_key":"nightly-1","arguments":{{"command":"echo run >> runs.txt; sleep 1","sandbox_id":"{sandbox}"}},"tool":"execute_shell"}}"#
    ))
    .unwrap();
    let (status, same) = app.call("/v1/jobs", reordered).await;
    assert_eq!(
        (status, same["job_id"].as_str()),
        (202, Some(original.as_str()))
    );
    // Other arguments, or another tool, under the same key: 409, nothing enqueued.
    let (status, refused) = app
        .call(
            "/v1/jobs",
            json!({
                "tool": "execute_shell",
                "arguments": {"sandbox_id": sandbox, "command": "rm -rf ./*"},
                "idempotency_key": "nightly-1",
            }),
        )
        .await;
    assert_reused(status, &refused, &original);
    let (status, refused) = app
        .call(
            "/v1/jobs",
            json!({"tool": "list_sandboxes", "arguments": {}, "idempotency_key": "nightly-1"}),
        )
        .await;
    assert_reused(status, &refused, &original);
    app.wait(&original).await;

    // REST with the Idempotency-Key header: a synchronous repetition answers the original
    // result; other arguments are refused the same way.
    let call = json!({"sandbox_id": sandbox, "command": "echo rest >> runs.txt; echo done"});
    let (status, replayed, body) = post_keyed(&app, "/execute_shell", "rest-1", &call).await;
    assert_eq!((status, replayed), (200, false), "{body}");
    assert_eq!(body["stdout"], "done\n");
    let (status, _, body) = post_keyed(&app, "/execute_shell", "rest-1", &call).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stdout"], "done\n");
    let (status, _, first_rest) = post_keyed(
        &app,
        "/execute_shell",
        "rest-1",
        &json!({"sandbox_id": sandbox, "command": "echo rest >> runs.txt; echo done", "background": true}),
    )
    .await;
    assert_eq!(
        status, 202,
        "a background repetition is the same request: {first_rest}"
    );
    let (status, _, body) = post_keyed(
        &app,
        "/execute_shell",
        "rest-1",
        &json!({"sandbox_id": sandbox, "command": "echo other"}),
    )
    .await;
    assert_reused(status, &body, first_rest["job_id"].as_str().unwrap());

    let out = app.shell(&sandbox, "cat runs.txt").await;
    assert_eq!(out["stdout"], "run\nrest\n", "each request ran once");
}

/// Concurrent submissions with one key through two nodes: one job, run once; the database's
/// unique index decides.
#[actix_web::test]
async fn one_key_through_two_nodes_is_one_job() {
    let Some((mut b, dir_b)) = test_config(Db::Postgres).await else {
        return;
    };
    let (mut a, dir_a) = test_config(Db::Sqlite).await.unwrap();
    a.database.url = b.database.url.clone();
    b.auth.api_key = a.auth.api_key.clone();
    let a = spawn_with(a, dir_a).await;
    let b = spawn_with(b, dir_b).await;
    let sandbox = a.sandbox("shared").await;
    let body = json!({
        "tool": "execute_shell",
        "arguments": {"sandbox_id": sandbox, "command": "echo ran >> once.txt"},
        "idempotency_key": "fan-out",
    });
    let calls = (0..10).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        let body = body.clone();
        async move { node.call("/v1/jobs", body).await }
    });
    let answers = futures::future::join_all(calls).await;
    let mut ids: Vec<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 202, "{body}");
            body["job_id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one job: {ids:?}");
    assert_eq!(b.wait(&ids[0]).await["status"], "succeeded");
    assert_eq!(a.shell(&sandbox, "cat once.txt").await["stdout"], "ran\n");
}
