//! Job retention: finished jobs, their output and their idempotency keys (which live on the job
//! rows) are deleted once older than `queue.retention_hours`. The audit log is not touched; it
//! has its own retention (`audit.retention_days`).
//!
//! Every node runs one pass an hour (the first at start-up). A pass deletes in bounded batches,
//! each its own short transaction, until nothing old is left, so a large backlog never holds
//! the database for long; on PostgreSQL, nodes pruning at the same time skip each other's rows.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{self, Store};

/// Most jobs deleted per transaction.
pub const BATCH: u32 = 500;

/// How often a node prunes.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes every finished job older than `before`, `batch` at a time. Returns how many went.
pub async fn prune_all(store: &dyn Store, before: DateTime<Utc>, batch: u32) -> store::Result<u64> {
    let batch = batch.max(1);
    let mut total = 0;
    loop {
        let deleted = store.prune(before, batch).await?;
        total += deleted;
        if deleted < u64::from(batch) {
            return Ok(total);
        }
        // Lets other work at the database between batches.
        tokio::task::yield_now().await;
    }
}

/// Prunes jobs past `retention` every [`INTERVAL`], forever (the caller aborts the task).
pub async fn run(store: Arc<dyn Store>, retention: Duration) {
    let mut interval = tokio::time::interval(INTERVAL);
    loop {
        interval.tick().await;
        let before = Utc::now()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(3650));
        match prune_all(store.as_ref(), before, BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "pruned finished jobs past their retention"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning finished jobs failed; next pass in an hour")
            }
        }
    }
}
