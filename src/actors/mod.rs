//! The worker side of the queue: a dispatcher that claims runnable jobs and hands each to the
//! actor of its workspace, supervised actors that run one job at a time, a completer that writes
//! outcomes in batches, and the lease keepers (heartbeat and rescuer).
//!
//! Architecture invariant: actors hold no job state that is not in the database. A job is claimed
//! (→ `running`, with a lease) before an actor sees it, and an actor that dies loses nothing the
//! rescuer cannot resolve. What runs a job is an [`Executor`]; the pool knows nothing of tools.

mod completer;
mod dispatcher;
pub mod lease;
mod runner;
mod workspace;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::output::OutputTx;
use crate::queue::{JobEvent, Queue};
use crate::store::{self, Job, JobError};

/// What an executor says about one run of a job.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The tool did its work (a command that exited non-zero still succeeded as a job).
    Succeeded {
        result: Value,
        exit_code: Option<i32>,
    },
    /// The tool could not do what was asked.
    Failed {
        error: JobError,
        result: Option<Value>,
        exit_code: Option<i32>,
    },
    /// The job's cancellation token fired and the tool stopped.
    Cancelled {
        result: Option<Value>,
        exit_code: Option<i32>,
    },
    /// Something the tool depends on is unavailable for now; retried with backoff while the job
    /// has attempts left.
    Transient { error: JobError },
}

/// What an executor gets besides the job: a way to stop, a place for output, a time limit.
#[derive(Debug)]
pub struct JobContext {
    /// Fires when a caller cancels the job or the server shuts down.
    pub cancel: CancellationToken,
    /// Live output; the pool streams it to followers and stores it.
    pub output: OutputTx,
    /// The job's time limit; the executor enforces it on what it runs.
    pub timeout: Duration,
}

/// Runs one job. Implemented by the tools layer, and by benchmarks and tests.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn execute(&self, job: &Job, ctx: JobContext) -> Outcome;

    /// The actor of `workspace` was dropped after `actor_idle` without work: free what runs
    /// for it between jobs. Nothing by default.
    async fn workspace_idle(&self, _workspace: &str) {}
}

/// Settings of the worker pool.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Stable identity of this node; leases carry it and start-up recovery looks for it.
    pub node_id: String,
    /// Most jobs running at once on this node.
    pub concurrency: usize,
    /// Most jobs taken in one claim.
    pub claim_batch: u32,
    /// Backstop poll when no wake-up arrives.
    pub poll_interval: Duration,
    /// How long a claim is valid without a heartbeat.
    pub lease: Duration,
    /// How long a node may go without a heartbeat before the queued jobs bound to it (its
    /// local sandboxes') fail with reason `node_gone`.
    pub node_horizon: Duration,
    pub heartbeat_interval: Duration,
    pub rescue_interval: Duration,
    /// How long an idle workspace actor lives.
    pub actor_idle: Duration,
    /// Most output bytes stored per job for replay.
    pub stored_output_limit: usize,
    /// Extra time past a job's timeout before the pool abandons a tool that ignores it.
    pub timeout_grace: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Per-tenant running limits applied to each claim (`quotas.max_running_jobs`).
    pub running_limits: crate::quota::RunningLimits,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            node_id: "node-1".into(),
            concurrency: 64,
            claim_batch: 64,
            poll_interval: Duration::from_secs(2),
            lease: Duration::from_secs(60),
            node_horizon: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(15),
            rescue_interval: Duration::from_secs(30),
            actor_idle: Duration::from_secs(60),
            stored_output_limit: 8 * 1024 * 1024,
            timeout_grace: Duration::from_secs(15),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            running_limits: Default::default(),
        }
    }
}

/// A running worker pool. Dropping it does not stop it; call [`Pool::shutdown`].
#[derive(Debug)]
pub struct Pool {
    queue: Queue,
    /// Stops claiming and the background loops.
    stop: CancellationToken,
    /// Fires every running job's cancellation token (the end of a graceful shutdown).
    abort: CancellationToken,
    /// Stops the heartbeat, last of all, once no job runs here any more.
    halt: CancellationToken,
    permits: Arc<Semaphore>,
    concurrency: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pool {
    /// Resolves jobs this node left running in a previous life, then starts the dispatcher,
    /// completer, heartbeat, rescuer and the relay of the store's signals.
    /// Must be called inside an actix system: workspace actors are actix actors.
    pub async fn start(
        queue: Queue,
        executor: Arc<dyn Executor>,
        metrics: Metrics,
        config: PoolConfig,
    ) -> store::Result<Pool> {
        // Alive before anything is claimed or submitted here, so no other node takes this one
        // for gone.
        queue
            .store()
            .node_alive(&config.node_id, chrono::Utc::now())
            .await?;
        let recovered = queue
            .store()
            .recover_node(&config.node_id, chrono::Utc::now())
            .await?;
        for r in &recovered {
            tracing::warn!(job_id = %r.id, tool = %r.tool, state = %r.state,
                "resolved a job left running by a previous process of this node");
            queue.events().publish(r.id, JobEvent::Changed);
        }
        lease::record_rescued(&metrics, &recovered);

        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let halt = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(config.concurrency));
        let (finished_tx, finished_rx) = tokio::sync::mpsc::unbounded_channel();
        let (completer, completer_task) = completer::Completer::start(
            queue.clone(),
            config.node_id.clone(),
            metrics.clone(),
            finished_tx,
        );
        let runner = Arc::new(runner::Runner::new(
            queue.clone(),
            executor,
            metrics.clone(),
            completer,
            abort.clone(),
            &config,
        ));
        let dispatcher = dispatcher::Dispatcher::new(
            queue.clone(),
            runner,
            metrics.clone(),
            permits.clone(),
            finished_rx,
            stop.clone(),
            &config,
        );
        let mut tasks = vec![
            completer_task,
            actix_rt::spawn(dispatcher.run()),
            tokio::spawn(lease::heartbeat_loop(
                queue.clone(),
                config.node_id.clone(),
                config.lease,
                config.heartbeat_interval,
                halt.clone(),
            )),
            tokio::spawn(
                lease::Rescuer::new(queue.clone(), metrics.clone())
                    .with_node_horizon(config.node_horizon)
                    .with_own_leases(config.node_id.clone(), config.lease)
                    .run(config.rescue_interval, stop.clone()),
            ),
        ];
        tasks.push(tokio::spawn(crate::queue::listen::run(
            queue.clone(),
            config.node_id.clone(),
            stop.clone(),
        )));
        queue.wake();
        Ok(Pool {
            queue,
            stop,
            abort,
            halt,
            permits,
            concurrency: config.concurrency,
            tasks,
        })
    }

    /// Stops claiming, lets running jobs finish for up to `grace`, then cancels the rest (they
    /// end as interrupted, or go back to the queue if they are safe to repeat) and waits for
    /// their outcomes to be written.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        let all_idle = self
            .permits
            .clone()
            .acquire_many_owned(self.concurrency as u32);
        let all_idle = match tokio::time::timeout(grace, all_idle).await {
            Ok(permits) => permits.ok(),
            Err(_) => {
                let running = self.queue.running().ids().len();
                tracing::warn!(running, "grace period over; cancelling running jobs");
                self.abort.cancel();
                tokio::time::timeout(
                    Duration::from_secs(10),
                    self.permits
                        .clone()
                        .acquire_many_owned(self.concurrency as u32),
                )
                .await
                .ok()
                .and_then(Result::ok)
            }
        };
        if all_idle.is_none() {
            tracing::error!("some jobs did not finish; the next start of this node resolves them");
        }
        self.halt.cancel();
        // Abort, then wait for each task to be dropped inside the runtime: a task dropped later,
        // while the runtime itself shuts down, could release a database connection where no
        // runtime can take it back.
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Jobs running on this node now.
    pub fn running(&self) -> usize {
        self.concurrency - self.permits.available_permits()
    }
}
