//! The per-workspace actor: runs its workspace's jobs one at a time, in the order the dispatcher
//! delivers them, under an actix supervisor that restarts it after a panic.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::OwnedSemaphorePermit;

use super::runner::Runner;
use crate::metrics::Metrics;
use crate::store::Job;

/// Runs one claimed job.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Run {
    pub job: Job,
    pub permit: OwnedSemaphorePermit,
}

/// One actor per workspace with work on this node.
pub(crate) struct WorkspaceActor {
    /// The serialization key this actor owns (for logs).
    workspace: String,
    runner: Arc<Runner>,
    metrics: Metrics,
}

impl WorkspaceActor {
    /// Starts the actor under a supervisor on the current arbiter.
    pub(crate) fn start(
        workspace: String,
        runner: Arc<Runner>,
        metrics: Metrics,
    ) -> Addr<WorkspaceActor> {
        Supervisor::start(move |_| WorkspaceActor {
            workspace,
            runner,
            metrics,
        })
    }
}

impl Actor for WorkspaceActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        tracing::debug!(workspace = %self.workspace, "workspace actor started");
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        tracing::debug!(workspace = %self.workspace, "workspace actor stopped");
    }
}

impl Supervised for WorkspaceActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.metrics.actor_restarts_total.inc();
        tracing::warn!(workspace = %self.workspace, "workspace actor restarted after a panic");
    }
}

impl Handler<Run> for WorkspaceActor {
    type Result = ();

    fn handle(&mut self, msg: Run, ctx: &mut Context<Self>) {
        let runner = self.runner.clone();
        // `wait` blocks the mailbox until the job is done: one job at a time per workspace,
        // beside the database's own guarantee.
        ctx.wait(
            async move { runner.run(msg.job, msg.permit).await }
                .into_actor(self)
                .map(|panicked, _actor, ctx| {
                    if panicked {
                        // The supervisor sees the stop, builds a fresh context and calls
                        // `restarting`; queued messages survive in the mailbox.
                        ctx.stop();
                    }
                }),
        );
    }
}
