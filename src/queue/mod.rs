//! The job queue as the rest of the server sees it: enqueue, wait, cancel, follow.
//!
//! [`Queue`] wraps the [`Store`] (the record) with the in-process signals that make it fast: a
//! wake-up for the dispatcher when work arrives, an [`EventHub`] for waiters and event streams,
//! and the [`CancelRegistry`] of jobs this node is running. The store's own wake-up stream
//! (`Store::signals`, relayed by [`listen`]) brings the same signals from other nodes; a slow poll
//! backs all of them up.

pub mod events;
pub mod follow;
pub mod listen;
pub mod retention;
pub mod submit;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{self, AuditEntry, CancelOutcome, Enqueued, Job, NewJob, Store};
pub use events::{EventHub, JobEvent};
pub use follow::{Followed, Followers, follow};

/// Cancellation tokens of the jobs this node is running, by job id.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    tokens: Mutex<HashMap<Uuid, CancellationToken>>,
}

impl CancelRegistry {
    /// Registers a job that starts running here and returns its token, which also fires when
    /// `parent` does (the pool's shutdown).
    pub fn register(&self, id: Uuid, parent: &CancellationToken) -> CancellationToken {
        let token = parent.child_token();
        self.tokens
            .lock()
            .expect("cancel registry lock poisoned")
            .insert(id, token.clone());
        token
    }

    pub fn remove(&self, id: Uuid) {
        self.tokens
            .lock()
            .expect("cancel registry lock poisoned")
            .remove(&id);
    }

    /// Fires the job's token if it runs here; `false` otherwise.
    pub fn cancel(&self, id: Uuid) -> bool {
        match self
            .tokens
            .lock()
            .expect("cancel registry lock poisoned")
            .get(&id)
        {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Ids of the jobs running here, for heartbeats.
    pub fn ids(&self) -> Vec<Uuid> {
        self.tokens
            .lock()
            .expect("cancel registry lock poisoned")
            .keys()
            .copied()
            .collect()
    }

    pub fn contains(&self, id: Uuid) -> bool {
        self.tokens
            .lock()
            .expect("cancel registry lock poisoned")
            .contains_key(&id)
    }
}

/// The queue facade shared by the HTTP layer, the tools and the worker pool.
#[derive(Debug, Clone)]
pub struct Queue {
    store: Arc<dyn Store>,
    events: Arc<EventHub>,
    /// Wakes the dispatcher; a stored permit means a wake-up is never lost.
    wake: Arc<Notify>,
    /// Counts the wake-ups that may have made jobs claimable other than this node's own
    /// completions (enqueues, cancels, retries coming due, other nodes' completions, rescues,
    /// lost signals): while it stands still, the only new candidates are the next jobs of the
    /// workspaces this node just finished (see the dispatcher).
    changes: Arc<AtomicU64>,
    running: Arc<CancelRegistry>,
    /// How often a waiter re-reads the store when no event arrives (covers missed signals).
    backstop: Duration,
    /// The followers running on this node.
    followers: Arc<Followers>,
    /// Groups concurrent submissions into shared transactions (see [`submit`]).
    submitter: Arc<submit::Submitter>,
}

impl Queue {
    pub fn new(store: Arc<dyn Store>, backstop: Duration) -> Queue {
        Queue {
            store: store.clone(),
            events: Arc::new(EventHub::new()),
            wake: Arc::new(Notify::new()),
            changes: Arc::default(),
            running: Arc::new(CancelRegistry::default()),
            backstop,
            followers: Arc::default(),
            submitter: submit::Submitter::new(
                store,
                submit::DEFAULT_MAX_BATCH,
                submit::DEFAULT_WAIT,
            ),
        }
    }

    /// Sets the most submissions one transaction takes (`queue.submit_batch`; 1: each
    /// submission commits on its own, as before group commit).
    pub fn with_submit_batch(self, max_batch: usize) -> Queue {
        self.with_submitter(max_batch, submit::DEFAULT_WAIT)
    }

    /// [`Queue::with_submit_batch`], and how long a submission waits to be taken into a
    /// transaction before it is refused as unavailable (`database.acquire_timeout_ms`).
    pub fn with_submitter(mut self, max_batch: usize, wait: Duration) -> Queue {
        self.submitter = submit::Submitter::new(self.store.clone(), max_batch, wait);
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn events(&self) -> &Arc<EventHub> {
        &self.events
    }

    pub fn followers(&self) -> &Arc<Followers> {
        &self.followers
    }

    pub fn running(&self) -> &Arc<CancelRegistry> {
        &self.running
    }

    pub(crate) fn wake_handle(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Wakes the dispatcher to look for runnable jobs, anywhere.
    pub fn wake(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Wakes the dispatcher after this node's completer wrote outcomes: the jobs that may have
    /// become claimable are the next ones of those jobs' workspaces, which the dispatcher is
    /// told of with each outcome.
    pub(crate) fn wake_after_own_completions(&self) {
        self.wake.notify_one();
    }

    /// How many wake-ups from elsewhere there have been ([`Queue::wake`]).
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Commits the job (and its audit row), then wakes the dispatcher. The id is only returned
    /// after the commit. Concurrent calls share transactions (group commit, [`submit`]), each
    /// with its own outcome.
    pub async fn enqueue(&self, job: NewJob, audit: AuditEntry) -> store::Result<Enqueued> {
        let enqueued = self.submitter.submit(job, audit).await?;
        if enqueued.created {
            self.wake();
        }
        Ok(enqueued)
    }

    /// Cancels a queued job, or kills a running one (here at once; on another node through its
    /// notification listener or its next heartbeat).
    pub async fn cancel(&self, tenant: &str, id: Uuid) -> store::Result<Option<CancelOutcome>> {
        let outcome = self.store.cancel(tenant, id, Utc::now()).await?;
        self.cancelled(id, &outcome);
        Ok(outcome)
    }

    /// [`Queue::cancel`] with its audit row written in the same transaction as the state change
    /// (see [`Store::cancel_audited`]); `tenant: None` reaches every tenant's job (an admin).
    pub async fn cancel_audited(
        &self,
        tenant: Option<&str>,
        id: Uuid,
        audit: AuditEntry,
    ) -> store::Result<Option<CancelOutcome>> {
        let outcome = self
            .store
            .cancel_audited(tenant, id, Utc::now(), audit)
            .await?;
        self.cancelled(id, &outcome);
        Ok(outcome)
    }

    /// What follows a cancel's commit on this node: waiters learn of a cancelled job, the
    /// dispatcher looks again, a running job here is killed.
    fn cancelled(&self, id: Uuid, outcome: &Option<CancelOutcome>) {
        match outcome {
            Some(CancelOutcome::Cancelled(job)) => {
                self.events
                    .publish(id, JobEvent::Finished(Arc::new(job.clone())));
                // The cancelled job may have been the head of its workspace.
                self.wake();
            }
            Some(CancelOutcome::Requested(_)) => {
                self.running.cancel(id);
            }
            _ => {}
        }
    }

    /// Waits until the job is terminal or `timeout` passes, and returns it as it then is.
    /// `None` if the job does not exist for this tenant.
    pub async fn wait(
        &self,
        tenant: Option<&str>,
        id: Uuid,
        timeout: Duration,
    ) -> store::Result<Option<Job>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.events.subscribe(id);
        let mut last_seen = None;
        loop {
            let job = match self.store.job(tenant, id).await {
                Ok(Some(job)) => job,
                Ok(None) => return Ok(None),
                // A database outage does not end the wait: the job is committed and will end;
                // the wait re-reads at the backstop until the deadline, then answers with what
                // it last saw (or the outage when it saw nothing).
                Err(e) if e.is_unavailable() => {
                    if tokio::time::Instant::now() >= deadline {
                        return last_seen.map(Some).ok_or(e);
                    }
                    let pause = (tokio::time::Instant::now() + self.backstop).min(deadline);
                    tokio::time::sleep_until(pause).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if job.state.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(Some(job));
            }
            last_seen = Some(job.clone());
            let next_check = (tokio::time::Instant::now() + self.backstop).min(deadline);
            loop {
                tokio::select! {
                    event = rx.recv() => match event {
                        Ok(JobEvent::Finished(job)) if tenant.is_none_or(|t| t == job.tenant) => {
                            return Ok(Some(Job::clone(&job)));
                        }
                        Ok(JobEvent::Finished(_)) => break,
                        Ok(JobEvent::Changed) => break,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            rx = self.events.subscribe(id);
                            break;
                        }
                    },
                    _ = tokio::time::sleep_until(next_check) => break,
                }
            }
        }
    }
}
