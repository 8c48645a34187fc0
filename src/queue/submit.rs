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
//! keeps a workspace's `seq` order its commit order, across nodes too. A flush takes its share
//! of what is waiting, not all of it: the waiting submissions are split evenly over the flush
//! slots not committing now, and a flush that leaves some behind starts the next flush itself.
//! Callers answered together submit again together, so without the split the first flush took
//! every one of them and the others found nothing: one transaction at a time, one database
//! backend busy, while the commit's WAL flush and the next statement could have overlapped.
//! The flush is a spawned task, not the first caller's future, so a caller that goes away (a
//! closed HTTP connection) cannot abandon the others' transaction.
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
    /// Flush tasks holding a batch now (taken, not yet answered).
    committing: usize,
}

impl Waiting {
    /// A flush's next batch: its share of the waiting submissions (see [`share`]), and whether
    /// it must start another flush for the rest; `None`, ending the flush, when nothing waits.
    #[allow(clippy::type_complexity)]
    fn take(
        &mut self,
        max_flushes: usize,
        max_batch: usize,
    ) -> Option<(Vec<(u64, NewJob, AuditEntry, Answer)>, bool)> {
        if self.jobs.is_empty() {
            self.flushing -= 1;
            return None;
        }
        let n = share(self.jobs.len(), max_flushes - self.committing).min(max_batch);
        let another = self.jobs.len() > n && self.flushing < max_flushes;
        if another {
            self.flushing += 1;
        }
        self.committing += 1;
        Some((self.jobs.drain(..n).collect(), another))
    }
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
            spawn_flush(self.clone());
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
    async fn flush(self: Arc<Self>) {
        let mut guard = FlushGuard {
            submitter: &self,
            committing: false,
        };
        loop {
            let taken = self
                .waiting
                .lock()
                .expect("submitter lock poisoned")
                .take(self.max_flushes, self.max_batch);
            let Some((batch, another)) = taken else {
                return;
            };
            guard.committing = true;
            if another {
                spawn_flush(self.clone());
            }
            self.commit(batch).await;
            self.waiting
                .lock()
                .expect("submitter lock poisoned")
                .committing -= 1;
            guard.committing = false;
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

/// The size of one flush's batch when `waiting` submissions are split over `free` flush slots
/// (the one taking counts as free): as even as whole submissions allow, never empty.
fn share(waiting: usize, free: usize) -> usize {
    waiting.div_ceil(free.max(1)).max(1)
}

/// Starts a flush task. A plain function, boxed, so that a flush can start the next one
/// without its future's type containing itself.
fn spawn_flush(submitter: Arc<Submitter>) {
    let flush: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(submitter.flush());
    tokio::spawn(flush);
}

/// Ends a flush that panicked cleanly: the callers still waiting get an error (their answers are
/// dropped) and the next submission starts a fresh flush, instead of all hanging.
struct FlushGuard<'a> {
    submitter: &'a Submitter,
    /// The flush holds a batch (counted in `Waiting::committing`).
    committing: bool,
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut waiting = self
                .submitter
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            waiting.jobs.clear();
            waiting.flushing -= 1;
            waiting.committing -= usize::from(self.committing);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Caller;

    fn waiting(n: usize) -> Waiting {
        let mut waiting = Waiting::default();
        for ticket in 0..n as u64 {
            let job = NewJob::new("t", "noop", serde_json::json!({}));
            let audit = Caller::internal("t").entry("noop", None, None, "accepted", None);
            waiting
                .jobs
                .push((ticket, job, audit, oneshot::channel().0));
        }
        waiting
    }

    /// Callers answered together submit again together: with two flush slots the first flush
    /// must leave half for a second one (which it starts), not take all and leave the second
    /// slot idle; with one slot (SQLite) a flush takes everything up to the batch limit.
    #[test]
    fn waiting_submissions_are_shared_over_the_free_flush_slots() {
        let mut w = waiting(50);
        w.flushing = 1;
        let (first, another) = w.take(2, 64).unwrap();
        assert_eq!((first.len(), another), (25, true));
        assert_eq!((w.flushing, w.committing), (2, 1));
        let (second, another) = w.take(2, 64).unwrap();
        assert_eq!((second.len(), another), (25, false));
        let tickets: Vec<u64> = first.iter().chain(&second).map(|s| s.0).collect();
        assert_eq!(tickets, (0..50).collect::<Vec<_>>(), "in arrival order");
        w.committing = 0;
        assert!(w.take(2, 64).is_none());
        assert_eq!(w.flushing, 1, "the flush that found nothing ended");

        // Both slots free but a second flush already started (by another submission): it
        // gets its share when it runs; none more is started.
        let mut w = waiting(7);
        w.flushing = 2;
        let (batch, another) = w.take(2, 64).unwrap();
        assert_eq!((batch.len(), another), (4, false));

        let mut w = waiting(100);
        w.flushing = 1;
        let (batch, another) = w.take(1, 64).unwrap();
        assert_eq!(
            (batch.len(), another),
            (64, false),
            "one slot: up to the batch limit"
        );
        w.committing = 0;
        let (batch, _) = w.take(3, 64).unwrap();
        assert_eq!(batch.len(), 12, "36 left over three free slots");
    }
}
