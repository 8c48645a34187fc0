//! One idempotency key, two nodes: 20 concurrent identical submissions (10 through each node)
//! make one job, which runs once; the same key with different arguments is refused with 409 on
//! either node, also after the job finished.

use std::collections::BTreeSet;

use serde_json::json;

use crate::harness::{Node, Timing, new_key};
use crate::load::{EXEC, read_log};
use crate::{log_of, serial, support};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_across_two_nodes_makes_one_job() {
    let _serial = serial().await;
    let Some(database) = support::fresh_postgres().await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let key = new_key();
    let nodes = Node::start_many(
        2,
        root.path(),
        Some(database.url.clone()),
        &key,
        &Timing::default(),
        &[],
    )
    .await;
    let id = nodes[0].create_sandbox("idem").await;
    let dirs: Vec<_> = nodes.iter().map(|n| n.spec.data_dir.as_path()).collect();
    let (_, log) = log_of(&dirs, &id).expect("some node holds the sandbox");

    let marker = format!("once{}", uuid::Uuid::new_v4().simple());
    let body = |marker: &str| {
        json!({"tool": "execute_shell", "idempotency_key": "chaos-idem-1",
               "arguments": {"sandbox_id": "idem", "command": EXEC, "env": {"MARK": marker}}})
    };
    let same = body(&marker);
    let answers = futures::future::join_all((0..20).map(|i| {
        let node = &nodes[i % 2];
        let same = &same;
        async move { node.post("/v1/jobs", same).await.expect("the node answers") }
    }))
    .await;
    let mut ids = BTreeSet::new();
    for a in &answers {
        assert_eq!(a.status, 202, "{}", a.body);
        ids.insert(a.body["job_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "one key made several jobs: {ids:?}");
    let job_id = ids.into_iter().next().unwrap();

    // The same key with other arguments, while the job may still run and after it finished.
    let other = body("another-marker");
    for node in &nodes {
        let a = node.post("/v1/jobs", &other).await.unwrap();
        assert_eq!(
            a.status, 409,
            "same key, other arguments on {}: {}",
            node.spec.name, a.body
        );
    }
    let mut job = nodes[1].job(&job_id, 30).await.unwrap().body;
    for _ in 0..6 {
        if job["status"] == "succeeded" || job["status"] == "failed" {
            break;
        }
        job = nodes[1].job(&job_id, 30).await.unwrap().body;
    }
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let lines = read_log(&log);
    assert_eq!(
        lines,
        vec![format!("start {marker}"), format!("end {marker}")],
        "the job ran exactly once"
    );
    for node in &nodes {
        let a = node.post("/v1/jobs", &other).await.unwrap();
        assert_eq!(
            a.status, 409,
            "after the end, on {}: {}",
            node.spec.name, a.body
        );
        let a = node.post("/v1/jobs", &same).await.unwrap();
        assert_eq!(a.status, 202, "{}", a.body);
        assert_eq!(a.body["job_id"], job_id.as_str());
    }
}
