//! Lease keeping: this node's heartbeat for the jobs it runs, and the rescuer that resolves jobs
//! whose node stopped heartbeating (on any node).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::queue::{JobEvent, Queue};
use crate::store::{self, ErrorReason, Rescued};

/// Every `interval`: records that this node is alive (the `nodes` row other nodes judge it
/// gone by), extends the leases of the jobs running here, and kills those whose cancellation
/// was requested through another node.
pub async fn heartbeat_loop(
    queue: Queue,
    node: String,
    lease: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = queue.store().node_alive(&node, Utc::now()).await {
            tracing::error!(error = %e, "cannot record this node's heartbeat");
        }
        let ids = queue.running().ids();
        if ids.is_empty() {
            continue;
        }
        match queue
            .store()
            .heartbeat(&node, &ids, Utc::now(), lease)
            .await
        {
            Ok(cancel) => {
                for id in cancel {
                    queue.running().cancel(id);
                }
            }
            Err(e) => tracing::error!(error = %e, "heartbeat failed; leases may expire"),
        }
    }
}

/// Finds running jobs with expired leases and resolves them: retry-safe jobs go back to the
/// queue, others fail with reason `interrupted`.
#[derive(Debug, Clone)]
pub struct Rescuer {
    queue: Queue,
    /// A job the rescuer fails never reaches the completer: it is counted here.
    metrics: Metrics,
    /// How long a node may go without a heartbeat before its queued jobs fail `node_gone`;
    /// `None`: never.
    node_horizon: Option<Duration>,
    /// This node and its lease length: its own running jobs' leases are renewed before each
    /// pass, so that after a database outage longer than the lease this node's rescuer does not
    /// fail the jobs it is still running (`None`: no renewal, as in tests of the rescuer alone).
    own: Option<(String, Duration)>,
}

/// Counts the jobs a rescue failed (`failures_total`, reason `interrupted`).
pub(crate) fn record_rescued(metrics: &Metrics, rescued: &[Rescued]) {
    for r in rescued {
        metrics.record_end(&r.tool, r.state, Some(ErrorReason::Interrupted), None);
    }
}

impl Rescuer {
    pub fn new(queue: Queue, metrics: Metrics) -> Rescuer {
        Rescuer {
            queue,
            metrics,
            node_horizon: None,
            own: None,
        }
    }

    /// Renews `node`'s running jobs' leases (by `lease`) before each pass.
    pub fn with_own_leases(mut self, node: String, lease: Duration) -> Rescuer {
        self.own = Some((node, lease));
        self
    }

    /// Also fails the queued jobs of nodes silent for longer than `horizon`.
    pub fn with_node_horizon(mut self, horizon: Duration) -> Rescuer {
        self.node_horizon = Some(horizon);
        self
    }

    /// One pass, as of `now`: expired leases of any node, then (with a horizon) the queued jobs
    /// of gone nodes. Returns both.
    pub async fn run_once(&self, now: DateTime<Utc>) -> store::Result<Vec<Rescued>> {
        if let Some((node, lease)) = &self.own {
            let ids = self.queue.running().ids();
            if !ids.is_empty() {
                for id in self
                    .queue
                    .store()
                    .heartbeat(node, &ids, now, *lease)
                    .await?
                {
                    self.queue.running().cancel(id);
                }
            }
        }
        let mut rescued = self.rescue_leases(now).await?;
        if let Some(horizon) = self.node_horizon {
            let gone_before = now - chrono::Duration::from_std(horizon).unwrap_or_default();
            let failed = self
                .queue
                .store()
                .fail_jobs_of_gone_nodes(gone_before, now)
                .await?;
            for r in &failed {
                tracing::warn!(job_id = %r.id, tool = %r.tool,
                    "failed a queued job: the node holding its sandbox is gone");
                self.queue.events().publish(r.id, JobEvent::Changed);
                self.metrics
                    .record_end(&r.tool, r.state, Some(ErrorReason::NodeGone), None);
            }
            rescued.extend(failed);
        }
        Ok(rescued)
    }

    async fn rescue_leases(&self, now: DateTime<Utc>) -> store::Result<Vec<Rescued>> {
        let rescued = self.queue.store().rescue_expired(now).await?;
        for r in &rescued {
            tracing::warn!(job_id = %r.id, tool = %r.tool, state = %r.state,
                "rescued a job whose lease expired");
            self.queue.events().publish(r.id, JobEvent::Changed);
        }
        record_rescued(&self.metrics, &rescued);
        if !rescued.is_empty() {
            self.queue.wake();
        }
        Ok(rescued)
    }

    /// Runs a pass every `interval` until `stop`.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.run_once(Utc::now()).await {
                tracing::error!(error = %e, "rescuer pass failed");
            }
        }
    }
}
