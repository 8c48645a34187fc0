//! Group commit of submissions: concurrent enqueues share one transaction.
//!
//! Every submission (HTTP REST, MCP, the jobs API: all through `Tools::submit`) ends in
//! [`Submitter::submit`]. The caller puts its job and audit row on a shared list and awaits a
//! oneshot answer. When no flush is running, it starts one: a spawned task that takes whatever
//! is waiting (up to `max_batch`), commits it with [`Store::enqueue_batch`] (one transaction,
//! a savepoint per job), answers each caller with its own outcome after the commit, and goes on
//! while submissions keep arriving; submissions that arrive during a commit wait for the next
//! one, which is what groups them. A lone submission is committed at once (no delay) by
//! [`Store::enqueue`], or on PostgreSQL, when it inserts no sandbox row and carries no quota, as
//! a batch of one (a single statement), so a quiet server pays nothing for batching.
//!
//! What stays exact: an id is answered only after its row is committed; each job gets the
//! outcome it would have had alone (replay, 409 mismatch, sandbox name conflict, quota), and one
//! job's refusal does not fail the others; a failed transaction (the database unavailable, the
//! commit failed) answers every caller of that batch with the same typed error, never an id.
//! Order: a caller submits its next job only after the answer to its previous one, so its jobs
//! are in successive batches, committed in that order; submissions in flight together are
//! concurrent, and any order among them is one they could have arrived in. On SQLite one flush
//! runs at a time; on PostgreSQL [`PG_FLUSHES`] run in parallel, and the store's workspace lock
//! keeps a workspace's `seq` order its commit order, across nodes too. The flush is a spawned
//! task, not the first caller's future, so a caller that goes away (a closed HTTP connection)
//! cannot abandon the others' transaction.
//!
//! A submission waits for a place in a transaction no longer than a statement waits for a
//! database connection (`database.acquire_timeout_ms`): when the flush is stuck (a locked table,
//! a hung database), a submission not yet taken into a batch is withdrawn and answered with the
//! typed outage (503), as an exhausted pool answers without batching; one already taken waits
//! for its transaction's outcome, since it may commit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::store::{self, AuditEntry, Backend, Enqueued, NewJob, Store};

/// The default of `queue.submit_batch`: the most submissions one transaction takes.
pub const DEFAULT_MAX_BATCH: usize = 64;

/// How long a submission waits for a transaction to take it, unless set
/// ([`Submitter::with_wait`]); the default of `database.acquire_timeout_ms`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Flushes in flight at once on PostgreSQL (each holds one pooled connection while it runs).
/// Parallel batches keep every guarantee: a caller's next submission waits for the answer to
/// its previous one, so it can never be in a batch that overtakes it, and the workspace lock
/// orders commits of one workspace.
pub const PG_FLUSHES: usize = 2;

type Answer = oneshot::Sender<store::Result<Enqueued>>;

/// Submissions waiting for the next flush (each with a ticket, to withdraw it), and whether a
/// flush task is running.
#[derive(Debug, Default)]
struct Waiting {
    jobs: Vec<(u64, NewJob, AuditEntry, Answer)>,
    next_ticket: u64,
    /// Flush tasks running now.
    flushing: usize,
}

/// The node's submission batcher (see the module documentation).
#[derive(Debug)]
pub struct Submitter {
    store: Arc<dyn Store>,
    /// The most submissions per transaction; 1 commits each submission on its own.
    max_batch: usize,
    /// The longest a submission waits to be taken into a transaction.
    wait: Duration,
    /// Flushes (transactions) in flight at once: 1 on SQLite, whose single writer would queue
    /// more anyway; [`PG_FLUSHES`] on PostgreSQL, where batches of different workspaces commit
    /// in parallel.
    max_flushes: usize,
    waiting: Mutex<Waiting>,
}

impl Submitter {
    pub fn new(store: Arc<dyn Store>, max_batch: usize, wait: Duration) -> Arc<Submitter> {
        let max_flushes = match store.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => PG_FLUSHES,
        };
        Arc::new(Submitter {
            store,
            max_flushes,
            max_batch: max_batch.max(1),
            wait,
            waiting: Mutex::default(),
        })
    }

    /// Commits the job and its audit row, possibly together with other callers' submissions,
    /// and answers after the commit.
    pub async fn submit(
        self: &Arc<Self>,
        job: NewJob,
        audit: AuditEntry,
    ) -> store::Result<Enqueued> {
        if self.max_batch == 1 {
            return self.store.enqueue(job, audit).await;
        }
        let (tx, mut rx) = oneshot::channel();
        let (ticket, start) = {
            let mut waiting = self.waiting.lock().expect("submitter lock poisoned");
            let ticket = waiting.next_ticket;
            waiting.next_ticket += 1;
            waiting.jobs.push((ticket, job, audit, tx));
            let start = waiting.flushing < self.max_flushes;
            if start {
                waiting.flushing += 1;
            }
            (ticket, start)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.flush().await });
        }
        if let Ok(answer) = tokio::time::timeout(self.wait, &mut rx).await {
            return match answer {
                Ok(outcome) => outcome,
                Err(_) => Err(store::StoreError::Unavailable(sqlx::Error::WorkerCrashed)),
            };
        }
        {
            let mut waiting = self.waiting.lock().expect("submitter lock poisoned");
            if let Some(i) = waiting.jobs.iter().position(|(t, ..)| *t == ticket) {
                // Never taken into a transaction: nothing of it can be committed.
                waiting.jobs.remove(i);
                return Err(store::StoreError::Unavailable(sqlx::Error::PoolTimedOut));
            }
        }
        // Taken into a transaction that is still running: its outcome is the answer.
        match rx.await {
            Ok(outcome) => outcome,
            // The flush task ended without answering (it panicked): whether the job was
            // committed is unknown, so no id; the caller may retry with its idempotency key.
            Err(_) => Err(store::StoreError::Unavailable(sqlx::Error::WorkerCrashed)),
        }
    }

    /// Commits batches until no submission is waiting.
    async fn flush(&self) {
        let _reset = FlushGuard(self);
        loop {
            let batch = {
                let mut waiting = self.waiting.lock().expect("submitter lock poisoned");
                if waiting.jobs.is_empty() {
                    waiting.flushing -= 1;
                    return;
                }
                let n = waiting.jobs.len().min(self.max_batch);
                waiting.jobs.drain(..n).collect::<Vec<_>>()
            };
            self.commit(batch).await;
        }
    }

    /// One transaction for the batch, then each caller's answer.
    async fn commit(&self, mut batch: Vec<(u64, NewJob, AuditEntry, Answer)>) {
        // A lone submission commits through `Store::enqueue`, except a plain one on PostgreSQL,
        // where a batch of one is a single statement (see `Store::enqueue_batch`) instead of a
        // transaction of several.
        let plain_on_pg = self.store.backend() == Backend::Postgres
            && batch
                .iter()
                .all(|(_, job, ..)| job.sandbox.is_none() && job.quota.is_none());
        if batch.len() == 1 && !plain_on_pg {
            let (_, job, audit, answer) = batch.pop().expect("one submission");
            let _ = answer.send(self.store.enqueue(job, audit).await);
            return;
        }
        let (rows, answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|(_, job, audit, answer)| ((job, audit), answer))
            .unzip();
        match self.store.enqueue_batch(rows).await {
            Ok(outcomes) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(outcome);
                }
            }
            Err(e) => {
                if e.is_unavailable() {
                    tracing::warn!(error = %e, jobs = answers.len(), "a batch of submissions was not committed: the database is unavailable");
                } else {
                    tracing::error!(error = %e, jobs = answers.len(), "a batch of submissions was not committed");
                }
                for answer in answers {
                    let _ = answer.send(Err(e.shared()));
                }
            }
        }
    }
}

/// Ends a flush that panicked cleanly: the callers still waiting get an error (their answers are
/// dropped) and the next submission starts a fresh flush, instead of all hanging.
struct FlushGuard<'a>(&'a Submitter);

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut waiting = self.0.waiting.lock().unwrap_or_else(|p| p.into_inner());
            waiting.jobs.clear();
            waiting.flushing -= 1;
        }
    }
}
