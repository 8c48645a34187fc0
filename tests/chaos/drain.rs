//! Draining a node with SIGTERM, two nodes on one PostgreSQL: the node stops taking work,
//! lets running jobs finish within `server.shutdown_grace_s`, interrupts what outlasts the grace
//! (an execution fails `interrupted`, never re-run), exits cleanly, and leaves the queued jobs of
//! its own sandboxes queued (no other node takes them) until it is back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Node, Timing, new_key};
use crate::{serial, support};

/// `server.shutdown_grace_s` as the harness sets it.
const GRACE_S: u64 = 5;

async fn submit(node: &Node, sandbox: &str, command: &str) -> String {
    let a = node
        .post(
            "/v1/jobs",
            &json!({"tool": "execute_shell",
                    "arguments": {"sandbox_id": sandbox, "command": command}}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 202, "{}", a.body);
    a.body["job_id"].as_str().unwrap().to_string()
}

async fn status_of(node: &Node, id: &str, wait: u32) -> Value {
    node.job(id, wait).await.unwrap().body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_a_node() {
    let _serial = serial().await;
    let Some(database) = support::fresh_postgres().await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let key = new_key();
    let mut nodes = Node::start_many(
        2,
        root.path(),
        Some(database.url.clone()),
        &key,
        &Timing::default(),
        &[],
    )
    .await;
    // Both sandboxes live on n1; every job is submitted through n0.
    nodes[1].create_sandbox("short").await;
    nodes[1].create_sandbox("long").await;
    let short = submit(&nodes[0], "short", "sleep 2; echo finished").await;
    let long = submit(&nodes[0], "long", "sleep 600").await;
    let behind = submit(&nodes[0], "long", "echo after").await;
    let started = Instant::now();
    for id in [&short, &long] {
        while status_of(&nodes[0], id, 0).await["status"] != "running" {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "job {id} never ran"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let sent = Instant::now();
    let exit = nodes[1].terminate();
    let took = sent.elapsed();
    assert!(exit.success(), "the drained node exited with {exit}");
    assert!(
        took >= Duration::from_secs(GRACE_S - 1) && took < Duration::from_secs(GRACE_S + 15),
        "the drain took {took:?} with a grace of {GRACE_S} s"
    );

    // Finished within the grace: succeeded. Outlasted it: interrupted, not re-run.
    let s = status_of(&nodes[0], &short, 5).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["result"]["stdout"], "finished\n");
    let l = status_of(&nodes[0], &long, 5).await;
    assert_eq!(l["status"], "failed", "{l}");
    assert_eq!(l["error"]["reason"], "interrupted", "{l}");
    assert_eq!(l["attempts"], 1, "{l}");
    // The job queued behind it is bound to n1: n0 leaves it queued.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = status_of(&nodes[0], &behind, 0).await;
    assert_eq!(b["status"], "queued", "{b}");

    // Back on the same data dir (so the same node id), n1 runs it.
    nodes[1].restart().await;
    let b = status_of(&nodes[0], &behind, 30).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    assert_eq!(b["result"]["stdout"], "after\n");
}
