//! Chaos tests: several real `daytona-mcp serve` processes (the built binary) on random loopback
//! ports, each with its own data dir and node id, on one PostgreSQL database, under load from
//! the jobs API, while nodes are SIGKILLed and the database is restarted or its connections
//! are killed. Each test asserts the queue's guarantees on what it accepted: every accepted id
//! reaches a terminal state, no execution runs twice, no two executions of a sandbox overlap.
//!
//! The tests of this binary run one at a time (`serial`): each starts several servers and keeps
//! them busy, and the machine has few cores.

#[path = "../support/mod.rs"]
mod support;

mod harness;
mod load;
mod orphans;

mod drain;
mod idempotency;
mod kill_one;
mod pg_restart;
mod pool;
mod three_nodes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Held by each test for its whole run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Where sandbox `id`'s execution log is: in the data dir of the node whose driver made it.
/// Returns the node's index too; `None` when no node has the sandbox.
pub fn log_of(data_dirs: &[&Path], id: &str) -> Option<(usize, PathBuf)> {
    data_dirs.iter().enumerate().find_map(|(i, dir)| {
        let sandbox = dir.join("sandboxes").join(id);
        sandbox.is_dir().then(|| (i, sandbox.join(load::LOG)))
    })
}

/// Creates `count` sandboxes named `<prefix>00`, `<prefix>01`… on `node`; returns their names
/// and, by name, where each one's execution log is.
pub async fn sandboxes_with_logs(
    node: &harness::Node,
    prefix: &str,
    count: usize,
) -> (Vec<String>, BTreeMap<String, PathBuf>) {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i:02}")).collect();
    let mut logs = BTreeMap::new();
    for name in &names {
        let id = node.create_sandbox(name).await;
        let (_, path) = log_of(&[&node.spec.data_dir], &id).expect("the sandbox's directory");
        logs.insert(name.clone(), path);
    }
    (names, logs)
}

/// Every sandbox's log lines, by sandbox name.
pub fn read_logs(paths: &BTreeMap<String, PathBuf>) -> BTreeMap<String, Vec<String>> {
    paths
        .iter()
        .map(|(name, path)| (name.clone(), load::read_log(path)))
        .collect()
}
