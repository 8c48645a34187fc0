//! Pool exhaustion: while every connection of a node's pool is stuck behind a lock another
//! session holds on the `jobs` table, further submissions are answered 503 with `Retry-After`
//! once `database.acquire_timeout_ms` has passed (never a 500, never a hung request),
//! `/healthz` stays 200, and once the lock is released the stuck submissions complete, with
//! ids that exist, and new ones are accepted again.

use std::time::Duration;

use serde_json::json;
use sqlx::Connection;

use crate::harness::{Node, NodeSpec, Timing, new_key};
use crate::{serial, support};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exhausted_pool_answers_503_and_recovers() {
    let _serial = serial().await;
    let Some(database) = support::fresh_postgres().await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let key = new_key();
    let node = Node::start(NodeSpec::new(
        0,
        root.path(),
        Some(database.url.clone()),
        &key,
        &Timing::default(),
        &[
            ("DAYTONA_MCP_DATABASE__MAX_CONNECTIONS".into(), "2".into()),
            (
                "DAYTONA_MCP_DATABASE__ACQUIRE_TIMEOUT_MS".into(),
                "1000".into(),
            ),
        ],
    ))
    .await;
    let body = json!({"tool": "list_sandboxes", "arguments": {}});
    let a = node.post("/v1/jobs", &body).await.unwrap();
    assert_eq!(a.status, 202, "{}", a.body);

    // Another session takes the jobs table: every statement of the node on it waits, holding
    // its pooled connection.
    let mut locker = sqlx::PgConnection::connect(&database.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    // Staggered, so that later submissions arrive once both of the node's group-commit
    // transactions hold a connection stuck behind the lock, and wait for a place in one (claims
    // and completions have connections of their own, so nothing else fills the pool).
    let submissions: Vec<_> = (0..12u64)
        .map(|i| {
            let (base, key) = (node.base.clone(), key.clone());
            let body = json!({"tool": "list_sandboxes", "arguments": {},
                              "idempotency_key": format!("pool-{i}")});
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100 * i)).await;
                let r = crate::harness::client(Duration::from_secs(30))
                    .post(format!("{base}/v1/jobs"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .expect("a submission answers");
                crate::harness::answer(r).await.unwrap()
            })
        })
        .collect();
    // Past the acquire timeout the waiting ones are refused; liveness is unaffected.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let health = node.get("/healthz").await.unwrap();
    assert_eq!(health.status, 200);
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();

    let mut refused = 0;
    let mut ids = Vec::new();
    for s in submissions {
        let a = s.await.unwrap();
        match a.status {
            202 => ids.push(a.body["job_id"].as_str().unwrap().to_string()),
            503 => {
                assert!(
                    a.retry_after
                        .as_deref()
                        .is_some_and(|v| v.parse::<u64>().is_ok()),
                    "503 without Retry-After: {a:?}"
                );
                refused += 1;
            }
            other => panic!("a submission answered {other}: {}", a.body),
        }
    }
    assert!(
        refused >= 1,
        "no submission was refused while the pool was exhausted"
    );
    // The stuck ones went through once the lock was gone, and their jobs exist and end.
    for id in &ids {
        let j = node.job(id, 30).await.unwrap();
        assert_eq!(j.status, 200, "{}", j.body);
        assert_eq!(j.body["status"], "succeeded", "{}", j.body);
    }
    let a = node.post("/v1/jobs", &body).await.unwrap();
    assert_eq!(a.status, 202, "accepted again after the lock: {}", a.body);
}
