//! Several nodes on one PostgreSQL database: two `Application`s in this process, each with its
//! own data dir (so its own node id and its own local sandboxes), sharing one fresh database.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::helpers::{Db, TestApp, TestDir, spawn_with, test_config};

/// Two nodes on one fresh database. The second node's `TestDir` owns the database, so the first
/// node can be stopped (its directory kept) while the database lives on.
async fn two_nodes(tune: impl Fn(&mut daytona_mcp::config::Config)) -> Option<(TestApp, TestApp)> {
    let (mut b, dir_b) = test_config(Db::Postgres).await?;
    let (mut a, dir_a) = test_config(Db::Sqlite).await.unwrap();
    a.database.url = b.database.url.clone();
    // One key, one tenant: both nodes serve the same callers.
    b.auth.api_key = a.auth.api_key.clone();
    tune(&mut a);
    tune(&mut b);
    let node_a = spawn_with(a, dir_a).await;
    let node_b = spawn_with(b, dir_b).await;
    Some((node_a, node_b))
}

fn node_id(app: &TestApp) -> String {
    std::fs::read_to_string(app.data_dir.join("node-id"))
        .unwrap()
        .trim()
        .to_string()
}

/// A local sandbox's jobs run only on the node that holds it, whichever node accepted them; a
/// synchronous caller on the other node is answered when the job ends there, woken by the
/// completion's notification (faster than its one-second re-read could).
#[actix_web::test]
async fn local_sandbox_jobs_run_on_their_node_and_wake_callers_elsewhere() {
    let Some((a, b)) = two_nodes(|_| {}).await else {
        return;
    };
    let on_a = a.sandbox("on-a").await;
    let on_b = b.sandbox("on-b").await;
    // Each sandbox's files are on its node's disk only: a file written there tells the nodes
    // apart (a job run on the wrong node would not find it).
    a.shell(&on_a, "echo node-a > whoami").await;
    b.shell(&on_b, "echo node-b > whoami").await;
    let (a_dir, b_dir) = ("node-a\n".to_string(), "node-b\n".to_string());

    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let out = b.shell(&on_a, "cat whoami").await;
        fastest = fastest.min(started.elapsed());
        assert_eq!(out["stdout"], a_dir.as_str(), "ran outside node a: {out}");
    }
    // The waiter re-reads the job once a second; an answer well inside that came from the
    // cross-node wake-up.
    assert!(
        fastest < Duration::from_millis(900),
        "synchronous calls across nodes took {fastest:?} at best"
    );
    let out = a.shell(&on_b, "cat whoami").await;
    assert_eq!(out["stdout"], b_dir.as_str(), "{out}");

    // Asynchronous jobs submitted to the wrong node: bound to the right one, run there.
    let mut jobs = Vec::new();
    for i in 0..6 {
        let (via, sandbox) = if i % 2 == 0 { (&b, &on_a) } else { (&a, &on_b) };
        jobs.push((
            via.submit(
                "execute_shell",
                json!({"sandbox_id": sandbox, "command": "cat whoami"}),
            )
            .await,
            if i % 2 == 0 { &a_dir } else { &b_dir },
            if i % 2 == 0 { node_id(&a) } else { node_id(&b) },
        ));
    }
    for (job, dir, node) in jobs {
        let done = a.wait(&job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["result"]["stdout"], dir.as_str(), "{done}");
        assert_eq!(done["node"], node.as_str(), "{done}");
    }
    // Listing runs on any node and shows the other node's sandboxes as their rows say, never
    // `missing` for want of their files here.
    for node in [&a, &b] {
        let (status, list) = node.call("/list_sandboxes", json!({})).await;
        assert_eq!(status, 200, "{list}");
        let statuses: Vec<&str> = list["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["running", "running"], "{list}");
    }
    // A job without a sandbox is bound to no node.
    let listed = b.submit("list_sandboxes", json!({})).await;
    assert_eq!(a.wait(&listed).await["node"], serde_json::Value::Null);
}

/// Events on one node of a job running on another: output arrives while the job still runs (a
/// notification per stored output batch), then the end.
#[actix_web::test]
async fn events_stream_another_nodes_output_live() {
    let Some((a, b)) = two_nodes(|_| {}).await else {
        return;
    };
    let on_b = b.sandbox("streams").await;
    let job = a
        .submit(
            "execute_shell",
            json!({"sandbox_id": on_b, "command": "echo first; sleep 3; echo second"}),
        )
        .await;
    let response = a
        .authed(a.client.get(a.url(&format!("/v1/jobs/{job}/events"))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains("first") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("output in time")
            .expect("stream open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("second"), "{seen}");
    let (_, now) = a.get_json(&format!("/v1/jobs/{job}")).await;
    assert_eq!(now["status"], "running", "the output came live: {now}");
    while !seen.contains("event: end") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the end in time")
            .expect("stream open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("second"), "{seen}");
}

/// A node gone for good: the queued jobs of its local sandboxes fail `node_gone`, naming it,
/// once it has been silent for `queue.node_horizon_s`; other work goes on.
#[actix_web::test]
async fn jobs_of_a_gone_nodes_sandboxes_fail_after_the_horizon() {
    let Some((a, b)) = two_nodes(|c| {
        c.queue.heartbeat_s = 1;
        c.queue.node_horizon_s = 2;
        c.queue.rescue_interval_s = 1;
    })
    .await
    else {
        return;
    };
    let on_a = a.sandbox("left-behind").await;
    let gone = node_id(&a);
    let _dir: TestDir = a.stop();
    let started = Instant::now();
    let job = b
        .submit(
            "execute_shell",
            json!({"sandbox_id": on_a, "command": "echo never"}),
        )
        .await;
    let done = b.wait(&job).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["reason"], "node_gone", "{done}");
    let message = done["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("node `{gone}`")), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // The surviving node still runs its own work.
    let on_b = b.sandbox("still-here").await;
    assert_eq!(b.shell(&on_b, "echo ok").await["stdout"], "ok\n");
}

/// A node died holding leases (its jobs are `running` under its name, leases expired): a
/// surviving node's rescuer resolves them within its interval. The retry-safe job runs again
/// there as attempt two; the execution ends `interrupted` and is never run again.
#[actix_web::test]
async fn a_surviving_node_rescues_a_dead_nodes_expired_leases() {
    let Some((mut config, dir)) = test_config(Db::Postgres).await else {
        return;
    };
    config.queue.rescue_interval_s = 1;
    let url = config.database.url.clone();
    let survivor = spawn_with(config, dir).await;
    let sandbox = survivor.sandbox("rescued").await;

    // What the dead node left: two jobs it claimed with a one-second lease, never renewed.
    let store = daytona_mcp::store::connect(&daytona_mcp::store::DatabaseUrl::new(url), 2)
        .await
        .unwrap();
    let mut safe = daytona_mcp::store::NewJob::new("default", "list_sandboxes", json!({}));
    safe.retry_safe = true;
    safe.max_attempts = 3;
    let mut unsafe_exec = daytona_mcp::store::NewJob::new(
        "default",
        "execute_shell",
        json!({"sandbox_id": sandbox, "command": "echo twice >> ran.txt"}),
    );
    unsafe_exec.workspace = Some("default/rescued".into());
    let ids = [safe.id, unsafe_exec.id];
    // Due in two seconds, so the survivor (which wakes on the enqueue) cannot take them yet;
    // the dead node claimed them "at" that time, with a one-second lease.
    let due = chrono::Utc::now() + chrono::Duration::seconds(2);
    safe.run_after = due;
    unsafe_exec.run_after = due;
    store.enqueue_many(vec![safe, unsafe_exec]).await.unwrap();
    let mut claimed: Vec<_> = store
        .claim("dead-node", 10, due, Duration::from_secs(1))
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    claimed.sort();
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(claimed, expected);
    let started = Instant::now();
    let again = survivor.wait(&ids[0].to_string()).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["attempts"], 2, "{again}");
    let failed = survivor.wait(&ids[1].to_string()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["reason"], "interrupted", "{failed}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let files = survivor.shell(&sandbox, "ls").await;
    assert!(
        !files["stdout"].as_str().unwrap().contains("ran.txt"),
        "the execution never ran again: {files}"
    );
}

/// A cancel accepted by one node kills the job running on another at once (the cancel's
/// notification), well before that node's next heartbeat would tell it.
#[actix_web::test]
async fn a_cancel_through_one_node_kills_the_job_on_another() {
    let Some((a, b)) = two_nodes(|c| c.queue.heartbeat_s = 30).await else {
        return;
    };
    let on_b = b.sandbox("cancel-me").await;
    let job = a
        .submit(
            "execute_shell",
            json!({"sandbox_id": on_b, "command": "sleep 60"}),
        )
        .await;
    a.wait_for_state(&job, "running").await;
    let started = Instant::now();
    let (status, body) = a.call(&format!("/v1/jobs/{job}/cancel"), json!({})).await;
    assert!(status < 300, "{status}: {body}");
    let done = a.wait(&job).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}: the heartbeat, not the notification, carried the cancel",
        started.elapsed()
    );
}
