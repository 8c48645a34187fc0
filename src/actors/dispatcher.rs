//! The dispatcher: claims runnable jobs while this node has capacity and routes each to the
//! actor of its workspace (started on demand, dropped when idle), or straight onto the runtime
//! when the job has no workspace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::PoolConfig;
use super::completer::Finished;
use super::runner::Runner;
use super::workspace::{Run, WorkspaceActor};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::store::Job;

struct ActorEntry {
    addr: Addr<WorkspaceActor>,
    /// Jobs sent to the actor whose outcome is not yet written.
    in_flight: usize,
    idle_since: Instant,
}

pub(crate) struct Dispatcher {
    queue: Queue,
    runner: Arc<Runner>,
    metrics: Metrics,
    /// One permit per job running on this node (the global concurrency limit).
    permits: Arc<Semaphore>,
    finished: mpsc::UnboundedReceiver<Finished>,
    stop: CancellationToken,
    actors: HashMap<String, ActorEntry>,
    node: String,
    claim_batch: u32,
    lease: Duration,
    poll_interval: Duration,
    actor_idle: Duration,
    /// The pause after the last failed claim (zero after a success).
    claim_backoff: Duration,
    running_limits: crate::quota::RunningLimits,
    /// Whether the next claim must look at every workspace ([`Store::claim`]). It need not
    /// while the last such claim came back short (it took every job then claimable) and
    /// nothing has happened since that could make others claimable but this node's own
    /// completions: the only candidates are then the next jobs of the workspaces in `freed`,
    /// which [`Store::claim_heads`] takes with one probe each instead of a walk over every
    /// workspace with queued jobs.
    ///
    /// [`Store::claim`]: crate::store::Store::claim
    /// [`Store::claim_heads`]: crate::store::Store::claim_heads
    full_claim_due: bool,
    /// [`Queue::changes`] when the last claim started.
    seen_changes: u64,
    /// When the last full claim started: one is due at least every `poll_interval`, the
    /// backstop for what no wake-up announces (a job whose `run_after` came, a lost signal).
    last_full_claim: Instant,
    /// Workspaces whose job this node finished since the last claim.
    freed: Vec<String>,
}

impl Dispatcher {
    pub(crate) fn new(
        queue: Queue,
        runner: Arc<Runner>,
        metrics: Metrics,
        permits: Arc<Semaphore>,
        finished: mpsc::UnboundedReceiver<Finished>,
        stop: CancellationToken,
        config: &PoolConfig,
    ) -> Dispatcher {
        Dispatcher {
            queue,
            runner,
            metrics,
            permits,
            finished,
            stop,
            actors: HashMap::new(),
            node: config.node_id.clone(),
            claim_batch: config.claim_batch.max(1),
            lease: config.lease,
            poll_interval: config.poll_interval,
            actor_idle: config.actor_idle,
            claim_backoff: Duration::ZERO,
            running_limits: config.running_limits.clone(),
            full_claim_due: true,
            seen_changes: 0,
            last_full_claim: Instant::now(),
            freed: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        let wake = self.queue.wake_handle().clone();
        let mut reap = tokio::time::interval(self.actor_idle.max(Duration::from_millis(100)) / 2);
        while !self.stop.is_cancelled() {
            let more = self.claim_and_route().await;
            if more {
                // A full batch: there may be more ready work; take finished reports and go on.
                self.drain_finished();
                continue;
            }
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = wake.notified() => {}
                Some(done) = self.finished.recv() => {
                    self.on_finished(done);
                    self.drain_finished();
                }
                // The backstop (a poll_interval since the last full claim makes the next one
                // full): jobs whose `run_after` came, signals that never arrived.
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = reap.tick() => self.reap_idle(),
            }
        }
        tracing::debug!("dispatcher stopped");
    }

    /// Claims as many jobs as there are free permits (up to a batch). Returns whether the
    /// claim came back full, meaning more work may be waiting.
    async fn claim_and_route(&mut self) -> bool {
        let free = self
            .permits
            .available_permits()
            .min(self.claim_batch as usize);
        if free == 0 {
            return false;
        }
        // Read before the claim: a change that lands while it runs makes the next one full.
        let changes = self.queue.changes();
        if changes != self.seen_changes || self.last_full_claim.elapsed() >= self.poll_interval {
            self.seen_changes = changes;
            self.full_claim_due = true;
        }
        let store = self.queue.store();
        let claimed = if self.full_claim_due {
            self.freed.clear();
            self.last_full_claim = Instant::now();
            store
                .claim(&self.node, free as u32, Utc::now(), self.lease)
                .await
        } else if self.freed.is_empty() {
            // Nothing can have become claimable since the last claim took all there was.
            return false;
        } else {
            let mut freed = std::mem::take(&mut self.freed);
            freed.sort_unstable();
            freed.dedup();
            store
                .claim_heads(&self.node, &freed, free as u32, Utc::now(), self.lease)
                .await
        };
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(e) => {
                self.full_claim_due = true;
                // Backs off while the database is away (100 ms doubling to 5 s), so an outage
                // costs a few log lines, not one per poll; the first success resets it.
                self.claim_backoff = (self.claim_backoff * 2)
                    .clamp(Duration::from_millis(100), Duration::from_secs(5));
                tracing::error!(error = %e, retry_in_ms = self.claim_backoff.as_millis() as u64,
                    "claim failed; retrying");
                tokio::select! {
                    _ = self.stop.cancelled() => {}
                    _ = tokio::time::sleep(self.claim_backoff) => {}
                }
                return false;
            }
        };
        self.claim_backoff = Duration::ZERO;
        let full = jobs.len() == free;
        // A full claim may have left claimable jobs behind; a short one took them all.
        self.full_claim_due = full;
        let limits = &self.running_limits;
        let jobs = if limits.is_empty() {
            jobs
        } else {
            let claimed = jobs.clone();
            // Jobs over a tenant's running limit go back to the queue, claimable again.
            self.full_claim_due = true;
            match crate::quota::admit(store.as_ref(), &self.node, limits, jobs, Utc::now()).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    // Claimed is claimed: running them beats leaving them unstarted until
                    // their leases run out.
                    tracing::error!(error = %e, "cannot apply the tenants' running limits");
                    claimed
                }
            }
        };
        for job in jobs {
            let permit = self
                .permits
                .clone()
                .try_acquire_owned()
                .expect("only the dispatcher takes permits, and it counted them first");
            self.route(job, permit);
        }
        full
    }

    fn route(&mut self, job: Job, permit: OwnedSemaphorePermit) {
        let Some(workspace) = job.workspace.clone() else {
            let runner = self.runner.clone();
            actix_rt::spawn(async move {
                runner.run(job, permit).await;
            });
            return;
        };
        let entry = self.actors.entry(workspace.clone()).or_insert_with(|| {
            self.metrics.active_actors.inc();
            ActorEntry {
                addr: WorkspaceActor::start(
                    workspace.clone(),
                    self.runner.clone(),
                    self.metrics.clone(),
                ),
                in_flight: 0,
                idle_since: Instant::now(),
            }
        });
        entry.in_flight += 1;
        if let Err(err) = entry.addr.try_send(Run { job, permit }) {
            // The actor is gone for good (its supervisor could not restart it); start a fresh
            // one and hand it the job.
            tracing::error!(%workspace, "workspace actor unreachable; starting a new one");
            let msg = match err {
                actix::dev::SendError::Full(msg) | actix::dev::SendError::Closed(msg) => msg,
            };
            entry.addr =
                WorkspaceActor::start(workspace, self.runner.clone(), self.metrics.clone());
            entry.addr.do_send(msg);
        }
    }

    fn on_finished(&mut self, done: Finished) {
        if let Some(workspace) = done.workspace {
            if let Some(entry) = self.actors.get_mut(&workspace) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
                if entry.in_flight == 0 {
                    entry.idle_since = Instant::now();
                }
            }
            self.freed.push(workspace);
        }
    }

    fn drain_finished(&mut self) {
        while let Ok(done) = self.finished.try_recv() {
            self.on_finished(done);
        }
    }

    /// Drops actors idle for longer than `actor_idle`; with its last address gone, an actor
    /// stops once its mailbox is empty.
    fn reap_idle(&mut self) {
        let idle = self.actor_idle;
        let mut reaped: Vec<String> = Vec::new();
        self.actors.retain(|key, e| {
            let keep = e.in_flight > 0 || e.idle_since.elapsed() < idle;
            if !keep {
                reaped.push(key.clone());
            }
            keep
        });
        if !reaped.is_empty() {
            self.metrics.active_actors.sub(reaped.len() as i64);
            // The executor frees what it keeps for these workspaces (a sandbox's agent) off
            // the dispatcher's loop; a job arriving meanwhile starts a fresh one.
            let executor = self.runner.executor();
            actix_rt::spawn(async move {
                for workspace in reaped {
                    executor.workspace_idle(&workspace).await;
                }
            });
        }
    }
}
