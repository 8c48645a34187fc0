//! Runs one claimed job from start to submitted outcome. Shared by workspace actors and by jobs
//! without a workspace.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::FutureExt;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::completer::Completer;
use super::{Executor, JobContext, Outcome, PoolConfig};
use crate::metrics::Metrics;
use crate::output::Stream;
use crate::queue::{JobEvent, Queue};
use crate::store::{ErrorReason, Finish, Job, JobError, JobState, OutputChunk};

/// Output buffered before a write to the store, in bytes.
const FLUSH_BYTES: usize = 256 * 1024;
/// Longest time captured output waits before it is written to the store.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Everything needed to run a job; one per pool, shared by all actors.
pub(crate) struct Runner {
    queue: Queue,
    executor: Arc<dyn Executor>,
    metrics: Metrics,
    completer: Completer,
    /// Fired at the end of a graceful shutdown; running jobs then stop as interrupted.
    abort: CancellationToken,
    stored_output_limit: usize,
    timeout_grace: Duration,
    backoff_base: Duration,
    backoff_max: Duration,
}

impl Runner {
    /// What runs the jobs.
    pub(crate) fn executor(&self) -> Arc<dyn Executor> {
        self.executor.clone()
    }

    pub(crate) fn new(
        queue: Queue,
        executor: Arc<dyn Executor>,
        metrics: Metrics,
        completer: Completer,
        abort: CancellationToken,
        config: &PoolConfig,
    ) -> Runner {
        Runner {
            queue,
            executor,
            metrics,
            completer,
            abort,
            stored_output_limit: config.stored_output_limit,
            timeout_grace: config.timeout_grace,
            backoff_base: config.backoff_base,
            backoff_max: config.backoff_max,
        }
    }

    /// Runs the job and submits its outcome. Returns `true` if the executor panicked, so that
    /// the caller (a workspace actor) can restart itself. Everything the job logs is in a `job`
    /// span carrying the job's id and the id of the request that submitted it, so one request
    /// id finds the request's lines and the job's.
    pub(crate) async fn run(&self, job: Job, permit: OwnedSemaphorePermit) -> bool {
        let span = tracing::info_span!("job", job_id = %job.id, tool = %job.tool,
            request_id = tracing::field::Empty);
        if let Some(request_id) = &job.request_id {
            span.record("request_id", request_id.as_str());
        }
        self.run_in_span(job, permit).instrument(span).await
    }

    async fn run_in_span(&self, job: Job, permit: OwnedSemaphorePermit) -> bool {
        let waited_since = job.created_at.max(job.run_after);
        let waited = (job.started_at.unwrap_or_else(Utc::now) - waited_since)
            .to_std()
            .unwrap_or_default();
        self.metrics
            .queue_wait_seconds
            .with_label_values(&[job.tool.as_str()])
            .observe(waited.as_secs_f64());

        let cancel = self.queue.running().register(job.id, &self.abort);
        if job.cancel_requested {
            cancel.cancel();
        }
        self.queue
            .events()
            .publish(job.id, JobEvent::State(JobState::Running));

        let started = Instant::now();
        let timeout = Duration::from_secs(job.timeout_s.max(1) as u64);
        let (output_tx, output_rx) = mpsc::channel(64);
        let ctx = JobContext {
            cancel: cancel.clone(),
            output: output_tx,
            timeout,
        };
        let execution = tokio::time::timeout(
            timeout + self.timeout_grace,
            AssertUnwindSafe(self.executor.execute(&job, ctx)).catch_unwind(),
        );
        let (executed, ()) = tokio::join!(execution, self.pump_output(&job, output_rx));

        let mut panicked = false;
        let outcome = match executed {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(panic)) => {
                panicked = true;
                let message = panic_message(panic.as_ref());
                tracing::error!(job_id = %job.id, tool = %job.tool, panic = %message,
                    "tool panicked; restarting its workspace actor");
                Outcome::Failed {
                    error: JobError::new(
                        ErrorReason::Panic,
                        format!("the tool panicked: {message}"),
                    ),
                    result: None,
                    exit_code: None,
                }
            }
            Err(_) => Outcome::Failed {
                error: JobError::new(
                    ErrorReason::Timeout,
                    format!(
                        "the tool did not stop within its time limit of {}s",
                        timeout.as_secs()
                    ),
                ),
                result: None,
                exit_code: None,
            },
        };
        let finish = self.finish_for(&job, outcome);
        tracing::debug!(state = %finish.state(), elapsed_ms = started.elapsed().as_millis() as u64,
            "job done");
        self.completer
            .submit(job, finish, started.elapsed(), permit)
            .await;
        panicked
    }

    /// Turns an executor's outcome into the store's finish: transient failures retry with
    /// exponential backoff and jitter while attempts remain; a stop caused by shutdown (not by a
    /// caller) is an interruption.
    fn finish_for(&self, job: &Job, outcome: Outcome) -> Finish {
        match outcome {
            Outcome::Succeeded { result, exit_code } => Finish::Succeeded { result, exit_code },
            Outcome::Failed {
                error,
                result,
                exit_code,
            } => Finish::Failed {
                error,
                result,
                exit_code,
            },
            Outcome::Cancelled { result, exit_code } if self.abort.is_cancelled() => {
                if job.retry_safe && job.attempts < job.max_attempts {
                    Finish::Retry {
                        error: JobError::new(
                            ErrorReason::Interrupted,
                            "the server shut down while this job was running",
                        ),
                        run_after: Utc::now(),
                    }
                } else {
                    Finish::Failed {
                        error: crate::store::interrupted_error(&job.tool),
                        result,
                        exit_code,
                    }
                }
            }
            Outcome::Cancelled { result, exit_code } => Finish::Cancelled { result, exit_code },
            Outcome::Transient { error } if job.attempts < job.max_attempts => Finish::Retry {
                run_after: Utc::now()
                    + chrono::Duration::from_std(self.backoff(job.attempts)).unwrap_or_default(),
                error,
            },
            Outcome::Transient { error } => Finish::Failed {
                error: JobError::new(
                    error.reason,
                    format!(
                        "{} (gave up after {} attempt(s))",
                        error.message, job.attempts
                    ),
                ),
                result: None,
                exit_code: None,
            },
        }
    }

    /// Delay before retry number `attempts`: base · 2^(attempts−1), capped, times a jitter
    /// factor in [0.5, 1.5) so that many failing jobs do not retry in lockstep.
    fn backoff(&self, attempts: i32) -> Duration {
        let exp = attempts.clamp(1, 20) as u32 - 1;
        let raw = self
            .backoff_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.backoff_max);
        raw.mul_f64(rand::rng().random_range(0.5..1.5))
    }

    /// Streams output to followers as it comes and writes it to the store in batches, up to the
    /// stored-output limit. Ends when the executor drops its sender.
    async fn pump_output(&self, job: &Job, mut rx: mpsc::Receiver<(Stream, bytes::Bytes)>) {
        let mut seq = 0i64;
        let mut stored = 0usize;
        let mut pending: Vec<OutputChunk> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut flush_at: Option<tokio::time::Instant> = None;
        loop {
            let received = match flush_at {
                Some(at) => tokio::select! {
                    received = rx.recv() => received,
                    _ = tokio::time::sleep_until(at) => {
                        self.flush(&mut pending, &mut pending_bytes).await;
                        flush_at = None;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some((stream, data)) = received else {
                break;
            };
            let room = self.stored_output_limit.saturating_sub(stored);
            if room == 0 {
                continue;
            }
            let data = data.slice(..data.len().min(room));
            stored += data.len();
            seq += 1;
            self.queue.events().publish(
                job.id,
                JobEvent::Output {
                    seq,
                    stream,
                    data: data.clone(),
                },
            );
            pending_bytes += data.len();
            pending.push(OutputChunk {
                job_id: job.id,
                seq,
                stream,
                data: data.to_vec(),
                at: Utc::now(),
            });
            if pending_bytes >= FLUSH_BYTES {
                self.flush(&mut pending, &mut pending_bytes).await;
                flush_at = None;
            } else if flush_at.is_none() {
                flush_at = Some(tokio::time::Instant::now() + FLUSH_EVERY);
            }
        }
        self.flush(&mut pending, &mut pending_bytes).await;
    }

    async fn flush(&self, pending: &mut Vec<OutputChunk>, pending_bytes: &mut usize) {
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.queue.store().append_output(pending).await {
            // Stored output serves replay only; the job's result keeps its own capped copy.
            tracing::warn!(error = %e, "cannot store job output; replay will miss it");
        }
        pending.clear();
        *pending_bytes = 0;
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}
