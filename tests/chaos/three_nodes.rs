//! Three nodes on one PostgreSQL under the load of `kill_one`, one SIGKILLed mid-run and never
//! restarted. The survivors run everything they can with the same guarantees (every accepted id
//! terminal, no execution twice, no overlap within a sandbox), and the jobs of the dead node's
//! local sandboxes, which no other node can run, fail clearly once the node's lease horizon has
//! passed instead of waiting forever.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::{Node, Timing, new_key};
use crate::load::{Load, open_executions, plan, targets, verify, wait_terminal};
use crate::{log_of, read_logs, serial, support};

const NODES: usize = 3;
const SANDBOXES: usize = 21;
const JOBS: usize = 520;

/// The reasons a job of a dead node's sandbox may fail with: `interrupted` for what it was
/// running when it died, `node_gone` for what was still queued for it.
const DEAD_NODE_REASONS: &[&str] = &["node_gone", "interrupted"];

/// `queue.node_horizon_s` of the test's nodes: a node silent this long is gone.
const HORIZON_S: i64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_one_killed_for_good() {
    let _serial = serial().await;
    let Some(database) = support::fresh_postgres().await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let key = new_key();
    let timing = Timing::default();
    let mut nodes = Node::start_many(
        NODES,
        root.path(),
        Some(database.url.clone()),
        &key,
        &timing,
        &[(
            "DAYTONA_MCP_QUEUE__NODE_HORIZON_S".to_string(),
            HORIZON_S.to_string(),
        )],
    )
    .await;

    // Sandbox i is created through node i % 3, so each node's driver holds a third of them.
    let names: Vec<String> = (0..SANDBOXES).map(|i| format!("t{i:02}")).collect();
    let mut logs = BTreeMap::new();
    let mut owner = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let id = nodes[i % NODES].create_sandbox(name).await;
        let dirs: Vec<_> = nodes.iter().map(|n| n.spec.data_dir.as_path()).collect();
        let (node, path) = log_of(&dirs, &id).expect("some node holds the sandbox");
        logs.insert(name.clone(), path);
        owner.insert(name.clone(), node);
    }
    let victim = NODES - 1;
    let doomed: Vec<String> = owner
        .iter()
        .filter(|(_, n)| **n == victim)
        .map(|(name, _)| name.clone())
        .collect();
    assert!(!doomed.is_empty(), "the victim holds no sandbox: {owner:?}");

    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let to = targets(nodes.iter().map(|n| n.base.clone()).collect());
    let load = Load::start(
        &key,
        to.clone(),
        plan(&run, &names, JOBS),
        9,
        Duration::ZERO,
    );
    load.wait_accepted(200, Duration::from_secs(120)).await;

    // Kill the victim while it runs executions in its sandboxes.
    let victim_logs: Vec<_> = doomed.iter().map(|n| logs[n].clone()).collect();
    let started = Instant::now();
    while open_executions(&victim_logs) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the victim runs no executions; its log:\n{}",
            nodes[victim].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nodes[victim].kill9();
    let killed_at = chrono::Utc::now();
    to.write().unwrap()[victim] = None;

    let seen = load.finish(false).await;
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    assert_eq!(
        seen.accepted.len(),
        JOBS,
        "the survivors accepted every planned job"
    );

    let jobs = wait_terminal(&key, &to, &seen.accepted, Duration::from_secs(240)).await;
    let verdicts = verify(
        &seen.accepted,
        &jobs,
        &read_logs(&logs),
        &doomed,
        DEAD_NODE_REASONS,
    );
    eprintln!("verdicts: {verdicts:?}");
    assert!(
        verdicts.violations.is_empty(),
        "{} violations, e.g. {:#?}",
        verdicts.violations.len(),
        &verdicts.violations[..verdicts.violations.len().min(20)]
    );
    // Nothing of the survivors' sandboxes was interrupted; the dead node's queued jobs failed
    // with the dead-node reason, the ones it was running with `interrupted`.
    assert_eq!(verdicts.exec_interrupted, 0, "{verdicts:?}");
    assert!(
        verdicts
            .expected_failures
            .get("interrupted")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{verdicts:?}"
    );
    assert!(
        verdicts
            .expected_failures
            .get(DEAD_NODE_REASONS[0])
            .copied()
            .unwrap_or(0)
            >= 1,
        "{verdicts:?}"
    );
    // `node_gone` only after the horizon: the victim's last heartbeat was at most
    // `heartbeat_s` before the kill (half a second of slack for the clock reads).
    let earliest = killed_at + chrono::Duration::seconds(HORIZON_S - timing.heartbeat_s as i64)
        - chrono::Duration::milliseconds(500);
    for a in &seen.accepted {
        let job = &jobs[&a.id];
        if job["error"]["reason"] == DEAD_NODE_REASONS[0] {
            let finished: chrono::DateTime<chrono::Utc> =
                job["finished_at"].as_str().unwrap().parse().unwrap();
            assert!(
                finished >= earliest,
                "job {} failed node_gone at {finished}, before the horizon ({earliest}): {job}",
                a.id
            );
            assert!(
                job["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "node_gone without a message: {job}"
            );
        }
    }
    let failed: usize = verdicts.expected_failures.values().sum();
    assert_eq!(
        verdicts.exec_succeeded + verdicts.safe_succeeded + failed,
        JOBS,
        "{verdicts:?}"
    );
    for n in &mut nodes {
        n.kill9();
    }
}
