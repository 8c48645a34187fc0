//! Writes job outcomes to the store in batches and tells everyone who cares.
//!
//! Completing jobs one transaction each caps throughput at the database's commit rate; the
//! completer takes whatever outcomes have piled up since its last write (up to [`MAX_BATCH`])
//! and writes them in one transaction. An outcome is never dropped: a failed write is retried
//! until it succeeds, while the jobs' leases keep being heartbeated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::queue::{JobEvent, Queue};
use crate::store::{Completion, Finish, Job, JobState, Written};

/// Most outcomes written in one transaction.
const MAX_BATCH: usize = 512;

/// Sent to the dispatcher when a job's outcome is written.
#[derive(Debug)]
pub(crate) struct Finished {
    pub workspace: Option<String>,
}

struct Pending {
    job: Job,
    finish: Finish,
    ran_for: Duration,
    /// Held until the outcome is written, so the concurrency limit counts jobs the database
    /// still shows as running.
    _permit: OwnedSemaphorePermit,
}

/// Handle for submitting outcomes.
#[derive(Clone)]
pub(crate) struct Completer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Completer {
    pub(crate) fn start(
        queue: Queue,
        node: String,
        metrics: Metrics,
        finished: mpsc::UnboundedSender<Finished>,
    ) -> (Completer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(rx, queue, node, metrics, finished));
        (Completer { tx }, task)
    }

    pub(crate) async fn submit(
        &self,
        job: Job,
        finish: Finish,
        ran_for: Duration,
        permit: OwnedSemaphorePermit,
    ) {
        let pending = Pending {
            job,
            finish,
            ran_for,
            _permit: permit,
        };
        if self.tx.send(pending).is_err() {
            tracing::error!("completer stopped; the outcome is left to start-up recovery");
        }
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    queue: Queue,
    node: String,
    metrics: Metrics,
    finished: mpsc::UnboundedSender<Finished>,
) {
    let mut batch: Vec<Pending> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let completions: Vec<Completion> = batch
            .iter()
            .map(|p| Completion {
                id: p.job.id,
                finish: p.finish.clone(),
            })
            .collect();
        let mut delay = Duration::from_millis(100);
        let written = loop {
            match queue
                .store()
                .complete(&node, &completions, Utc::now())
                .await
            {
                Ok(written) => break written,
                Err(e) => {
                    tracing::error!(error = %e, jobs = completions.len(),
                        "cannot write job outcomes; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        let mut written: HashMap<Uuid, Written> = written.into_iter().map(|w| (w.id, w)).collect();
        // The dispatcher first: the permits and the `Finished` reports go out, and the completer
        // yields, so that the next claim is on its way to the database while these outcomes are
        // published (measured: the node's one thread did this bookkeeping for every outcome
        // before the dispatcher could claim again, and the database sat idle 1-3 ms each time).
        let mut done = Vec::with_capacity(batch.len());
        for pending in batch.drain(..) {
            let (job, ran_for) = (pending.job, pending.ran_for);
            drop(pending._permit);
            queue.running().remove(job.id);
            let _ = finished.send(Finished {
                workspace: job.workspace.clone(),
            });
            done.push((job, ran_for));
        }
        // Finished jobs may have unblocked the next job of their workspaces (each `Finished`
        // above names one).
        queue.wake_after_own_completions();
        tokio::task::yield_now().await;
        for (claimed, ran_for) in done {
            let id = claimed.id;
            match written.remove(&id) {
                Some(written) => {
                    let job = written.apply(claimed);
                    if job.state == JobState::Queued {
                        wake_at(&queue, job.run_after);
                    }
                    record_metrics(&metrics, &job, ran_for);
                    let event = if job.state.is_terminal() {
                        JobEvent::Finished(Arc::new(job))
                    } else {
                        JobEvent::State(job.state)
                    };
                    queue.events().publish(id, event);
                }
                // The lease expired and another node (or the rescuer) resolved the job first.
                None => {
                    tracing::warn!(job_id = %id, "outcome not written: the job was no longer ours");
                    queue.events().publish(id, JobEvent::Changed);
                }
            }
        }
    }
}

/// Wakes the dispatcher when a retried job becomes runnable, instead of waiting for the poll.
fn wake_at(queue: &Queue, at: chrono::DateTime<Utc>) {
    let delay = (at - Utc::now()).to_std().unwrap_or_default();
    let queue = queue.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        queue.wake();
    });
}

fn record_metrics(metrics: &Metrics, job: &Job, ran_for: Duration) {
    metrics.record_end(
        &job.tool,
        job.state,
        job.error.as_ref().map(|e| e.reason),
        Some(ran_for),
    );
}
