//! Kill -9 under load, one node: 520 asynchronous jobs over 20 sandboxes (executions that log
//! their own start and end inside the sandbox, mixed with retry-safe tools), SIGKILL while
//! executions run, restart on the same data dir: every accepted id terminal, no execution twice,
//! no overlap within a sandbox, retry-safe jobs done, interrupted executions failed once.

use std::time::{Duration, Instant};

use crate::harness::{Node, NodeSpec, Timing, new_key};
use crate::load::{Load, open_executions, plan, targets, verify, wait_terminal};
use crate::{read_logs, serial, support};

const SANDBOXES: usize = 20;
const JOBS: usize = 520;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_under_load_on_postgres() {
    let _serial = serial().await;
    let Some(database) = support::fresh_postgres().await else {
        return;
    };
    kill9_under_load(Some(database.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_under_load_on_sqlite() {
    let _serial = serial().await;
    kill9_under_load(None).await;
}

async fn kill9_under_load(database_url: Option<String>) {
    let root = tempfile::tempdir().unwrap();
    let key = new_key();
    let mut node = Node::start(NodeSpec::new(
        0,
        root.path(),
        database_url,
        &key,
        &Timing::default(),
        &[],
    ))
    .await;
    let (names, logs) = crate::sandboxes_with_logs(&node, "k", SANDBOXES).await;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let to = targets(vec![node.base.clone()]);
    let load = Load::start(
        &key,
        to.clone(),
        plan(&run, &names, JOBS),
        8,
        Duration::ZERO,
    );
    load.wait_accepted(200, Duration::from_secs(120)).await;

    // Kill while executions run: some sandbox logs end in a start line.
    let paths: Vec<_> = logs.values().cloned().collect();
    let started = Instant::now();
    while open_executions(&paths) < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no executions running under load; node log:\n{}",
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kill9();
    to.write().unwrap()[0] = None;
    let accepted_at_kill = load.accepted();

    node.restart().await;
    to.write().unwrap()[0] = Some(node.base.clone());
    let seen = load.finish(false).await;
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    assert_eq!(
        seen.accepted.len(),
        JOBS,
        "every planned job accepted in the end"
    );

    let jobs = wait_terminal(&key, &to, &seen.accepted, Duration::from_secs(180)).await;
    let verdicts = verify(&seen.accepted, &jobs, &read_logs(&logs), &[], &[]);
    eprintln!("verdicts: {verdicts:?}");
    assert!(
        verdicts.violations.is_empty(),
        "{} violations, e.g. {:#?}",
        verdicts.violations.len(),
        &verdicts.violations[..verdicts.violations.len().min(20)]
    );
    // The kill hit running executions, which failed instead of running again.
    assert!(
        verdicts.exec_interrupted >= 1,
        "no execution was interrupted: {verdicts:?} ({accepted_at_kill} accepted at the kill)"
    );
    assert_eq!(
        verdicts.exec_succeeded + verdicts.exec_interrupted + verdicts.safe_succeeded,
        JOBS,
        "{verdicts:?}"
    );
}
