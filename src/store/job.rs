//! The job record and the closed set of states a job moves through.
//!
//! `docs/state_machine.md` draws every transition listed on [`JobState`].

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use crate::output::Stream;

use super::sandbox::SandboxRecord;

/// Where a job is in its life. The set is closed: no other value is ever stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted and committed, waiting for a worker. Entered by enqueue, by a retry of a transient
    /// failure (with `run_after` in the future), or by a rescue of a retry-safe job whose node
    /// died. Left by a claim (→ `running`) or a cancel (→ `cancelled`).
    Queued,
    /// Claimed by exactly one node, which holds a lease and heartbeats it. At most one job per
    /// workspace is in this state (a unique index enforces it). Left by completion (→ a terminal
    /// state), by a transient failure or rescue (→ `queued`), or by an expired lease on a job that
    /// is not safe to repeat (→ `failed` with reason `interrupted`).
    Running,
    /// Terminal. The tool ran to completion; a non-zero exit code is still a success of the job.
    Succeeded,
    /// Terminal. The tool could not do what was asked: bad input found late, a timeout, a panic, an
    /// interruption, or transient failures that exhausted `max_attempts`.
    Failed,
    /// Terminal. A caller cancelled the job while it was queued, or killed it while running.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The name stored in the database and shown on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or caller-supplied state name.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Whether the job can never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job did not succeed. The codes are stable: callers and alerts match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// The arguments were wrong in a way only execution could tell.
    InvalidArgument,
    /// The sandbox (or another named object) does not exist.
    NotFound,
    /// The request conflicts with existing state (a sandbox name already taken).
    Conflict,
    /// The per-call time limit was reached and the process group was killed.
    Timeout,
    /// A caller cancelled the job.
    Cancelled,
    /// The node running the job stopped; the job was not re-run because repeating it is unsafe.
    Interrupted,
    /// The tool code panicked; the workspace actor was restarted.
    Panic,
    /// The driver could not be reached after every attempt.
    DriverUnavailable,
    /// The job's sandbox lives on a node that has not been seen for longer than the horizon
    /// (`queue.node_horizon_s`); no other node can run it.
    NodeGone,
    /// The sandbox could not run what was asked (missing interpreter, spawn failure).
    ExecutionError,
    /// A bug or an unexpected failure of the server itself.
    Internal,
}

impl ErrorReason {
    /// Every reason (the `reason` label's closed set).
    pub const ALL: [ErrorReason; 11] = [
        ErrorReason::InvalidArgument,
        ErrorReason::NotFound,
        ErrorReason::Conflict,
        ErrorReason::Timeout,
        ErrorReason::Cancelled,
        ErrorReason::Interrupted,
        ErrorReason::Panic,
        ErrorReason::DriverUnavailable,
        ErrorReason::NodeGone,
        ErrorReason::ExecutionError,
        ErrorReason::Internal,
    ];

    /// The stable code, as used in metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::InvalidArgument => "invalid_argument",
            ErrorReason::NotFound => "not_found",
            ErrorReason::Conflict => "conflict",
            ErrorReason::Timeout => "timeout",
            ErrorReason::Cancelled => "cancelled",
            ErrorReason::Interrupted => "interrupted",
            ErrorReason::Panic => "panic",
            ErrorReason::DriverUnavailable => "driver_unavailable",
            ErrorReason::NodeGone => "node_gone",
            ErrorReason::ExecutionError => "execution_error",
            ErrorReason::Internal => "internal",
        }
    }
}

/// The error recorded on a job that did not succeed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobError {
    /// Stable machine-readable code.
    pub reason: ErrorReason,
    /// Human-readable explanation, lowercase, no trailing period.
    pub message: String,
    /// The input field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl JobError {
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> JobError {
        JobError {
            reason,
            message: message.into(),
            field: None,
        }
    }

    /// The same error, blaming `field`.
    pub fn with_field(mut self, field: impl Into<String>) -> JobError {
        self.field = Some(field.into());
        self
    }
}

/// A fresh job id: a UUIDv7 whose 74 bits after the millisecond timestamp are all random.
/// `Uuid::now_v7` would put a counter there that increments within a millisecond, making ids of
/// the same millisecond predictable from one another; job ids double as MCP task ids, which must
/// not be guessable.
pub fn new_job_id() -> Uuid {
    Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext))
}

/// A job about to be enqueued. Everything the queue needs is decided before the insert.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: Uuid,
    pub tenant: String,
    /// Serialization key; `None` runs without ordering against other jobs.
    pub workspace: Option<String>,
    pub tool: String,
    pub arguments: Value,
    /// Larger runs first within the ready set and within a workspace.
    pub priority: i32,
    pub max_attempts: i32,
    /// Whether the job may be re-run after its node died mid-flight.
    pub retry_safe: bool,
    pub timeout_s: i64,
    pub run_after: DateTime<Utc>,
    pub idempotency_key: Option<String>,
    /// A sandbox row to insert in the same transaction (`create_sandbox`: the sandbox the job
    /// will create, status [`super::sandbox::CREATING`], holding what must not be stored with
    /// the job, such as environment values). Its `creating_job` becomes this job's id. Not
    /// inserted when the idempotency key replays an earlier job; a name the tenant already has
    /// refuses the whole enqueue with [`super::StoreError::Conflict`].
    pub sandbox: Option<SandboxRecord>,
    /// A template row to insert in the same transaction (`create_template`), holding the
    /// environment values the job's arguments do not. Not inserted on a replay; a name the
    /// tenant already has refuses the whole enqueue with [`super::StoreError::Conflict`].
    pub template: Option<super::TemplateRecord>,
    /// Jobs enqueued right after this one in the same transaction, each with its audit row
    /// (the setup commands of a `create_sandbox`): they share its fate (none without it, none
    /// on a replay) and, in its workspace, come after it in order. They carry no idempotency
    /// key or quota of their own; the quota check of this job counts them.
    pub followers: Vec<(NewJob, super::AuditEntry)>,
    /// The id of the request that submitted the job (`X-Request-Id`), kept with it so that
    /// the request, the job and their log lines share one id.
    pub request_id: Option<String>,
    /// The only node that may claim the job: the node whose disk holds the job's sandbox (a
    /// node-local driver's). `None`: any node.
    pub node: Option<String>,
    /// What the caller asked for, as a digest (tool and canonical arguments): a repeated
    /// idempotency key replays the earlier job only when its digest is the same (or unknown).
    pub args_digest: Option<String>,
    /// The tenant's limits, checked inside the enqueue transaction; `None`: unlimited.
    pub quota: Option<super::Quota>,
}

impl NewJob {
    /// The job a plain insert of this submission stores, without reading the row back: the
    /// database chose only `seq`; `arguments` are the ones bound (after the store's own
    /// changes to them, such as PostgreSQL's replacement of U+0000), and timestamps are kept
    /// to the microsecond. `a_batch_answers_its_jobs_as_stored` (store conformance) holds
    /// both stores to it.
    pub(crate) fn inserted(&self, arguments: Value, seq: i64, created_at: DateTime<Utc>) -> Job {
        Job {
            id: self.id,
            seq,
            tenant: self.tenant.clone(),
            workspace: self.workspace.clone(),
            tool: self.tool.clone(),
            arguments,
            state: JobState::Queued,
            priority: self.priority,
            attempts: 0,
            max_attempts: self.max_attempts,
            retry_safe: self.retry_safe,
            timeout_s: self.timeout_s,
            run_after: stored_instant(self.run_after),
            created_at: stored_instant(created_at),
            started_at: None,
            finished_at: None,
            lease_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            idempotency_key: self.idempotency_key.clone(),
            result: None,
            error: None,
            exit_code: None,
            request_id: self.request_id.clone(),
            node: self.node.clone(),
        }
    }

    /// A job with default scheduling for `tool`, ready to run now.
    pub fn new(tenant: impl Into<String>, tool: impl Into<String>, arguments: Value) -> NewJob {
        NewJob {
            id: new_job_id(),
            tenant: tenant.into(),
            workspace: None,
            tool: tool.into(),
            arguments,
            priority: 0,
            max_attempts: 1,
            retry_safe: false,
            timeout_s: 300,
            run_after: Utc::now(),
            idempotency_key: None,
            sandbox: None,
            template: None,
            followers: Vec::new(),
            request_id: None,
            node: None,
            args_digest: None,
            quota: None,
        }
    }
}

/// `at` as both stores keep timestamps: whole microseconds (rounded down, as both do for the
/// instants after 2000 that jobs carry).
pub(crate) fn stored_instant(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or_default()
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: Uuid,
    /// Enqueue order assigned by the database; FIFO within a workspace follows it.
    pub seq: i64,
    pub tenant: String,
    pub workspace: Option<String>,
    pub tool: String,
    pub arguments: Value,
    pub state: JobState,
    pub priority: i32,
    pub attempts: i32,
    pub max_attempts: i32,
    pub retry_safe: bool,
    pub timeout_s: i64,
    pub run_after: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    pub idempotency_key: Option<String>,
    pub result: Option<Value>,
    pub error: Option<JobError>,
    pub exit_code: Option<i32>,
    /// The id of the request that submitted it, if one did.
    pub request_id: Option<String>,
    /// The only node that may claim the job (see [`NewJob::node`]); `None`: any node.
    pub node: Option<String>,
}

/// How a running job ends (or goes back to the queue).
#[derive(Clone, Debug, PartialEq)]
pub enum Finish {
    /// → `succeeded`.
    Succeeded {
        result: Value,
        exit_code: Option<i32>,
    },
    /// → `failed`. A result may still be attached (a timed-out command's partial output).
    Failed {
        error: JobError,
        result: Option<Value>,
        exit_code: Option<i32>,
    },
    /// → `cancelled`, with whatever output the killed command produced.
    Cancelled {
        result: Option<Value>,
        exit_code: Option<i32>,
    },
    /// → `queued` again, not before `run_after` (a transient failure with attempts left).
    Retry {
        error: JobError,
        run_after: DateTime<Utc>,
    },
}

impl Finish {
    /// The state the job is in after this finish is applied.
    pub fn state(&self) -> JobState {
        match self {
            Finish::Succeeded { .. } => JobState::Succeeded,
            Finish::Failed { .. } => JobState::Failed,
            Finish::Cancelled { .. } => JobState::Cancelled,
            Finish::Retry { .. } => JobState::Queued,
        }
    }
}

/// One completion as the columns it writes. A batch of these is applied by a single statement,
/// one round trip per batch instead of one per job: SQLite reads it as a JSON array
/// (`json_each`), PostgreSQL as one array per column (`unnest`).
#[derive(Debug, Serialize)]
pub struct CompletionRow<'a> {
    pub id: Uuid,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// For a retry: when the job may run again (PostgreSQL binds it as it is)…
    #[serde(skip)]
    pub run_after: Option<DateTime<Utc>>,
    /// …and the same instant in microseconds since the epoch (SQLite reads it from the JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_after_us: Option<i64>,
}

impl Completion {
    /// The columns this completion writes.
    pub fn row(&self) -> CompletionRow<'_> {
        let mut row = CompletionRow {
            id: self.id,
            state: self.finish.state().as_str(),
            result: None,
            error: None,
            exit_code: None,
            run_after: None,
            run_after_us: None,
        };
        match &self.finish {
            Finish::Succeeded { result, exit_code } => {
                row.result = Some(result);
                row.exit_code = *exit_code;
            }
            Finish::Failed {
                error,
                result,
                exit_code,
            } => {
                row.result = result.as_ref();
                row.error = Some(error.clone());
                row.exit_code = *exit_code;
            }
            Finish::Cancelled { result, exit_code } => {
                row.result = result.as_ref();
                row.error = Some(JobError::new(
                    ErrorReason::Cancelled,
                    "cancelled while running; its process group was killed",
                ));
                row.exit_code = *exit_code;
            }
            Finish::Retry { error, run_after } => {
                row.error = Some(error.clone());
                row.run_after = Some(*run_after);
                row.run_after_us = Some(run_after.timestamp_micros());
            }
        }
        row
    }
}

/// One finished job reported by the node holding its lease.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub id: Uuid,
    pub finish: Finish,
}

/// Puts claimed jobs in claim order: priority first, then `seq` (both stores' claims return rows
/// in no particular order).
pub(crate) fn sort_in_claim_order(jobs: &mut [Job]) {
    jobs.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.seq));
}

/// What a completion wrote to one job, read back as stored (a NUL in an outcome comes back as
/// the store keeps it). A running job's other columns do not change under its lease, so the
/// store returns only these and [`Written::apply`] puts them over the claimed copy the node
/// already holds: sending each finished row back whole cost PostgreSQL 5 % of its instructions
/// per job (benches/pg/instructions.sh), for columns the completer had in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    pub id: Uuid,
    pub state: JobState,
    pub run_after: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    pub result: Option<Value>,
    pub error: Option<JobError>,
    pub exit_code: Option<i32>,
}

impl Written {
    /// The job as the store now holds it, given the copy its claim returned: the written
    /// columns, and no lease.
    pub fn apply(self, claimed: Job) -> Job {
        debug_assert_eq!(claimed.id, self.id, "a completion applied to another job");
        Job {
            state: self.state,
            run_after: self.run_after,
            finished_at: self.finished_at,
            cancel_requested: self.cancel_requested,
            result: self.result,
            error: self.error,
            exit_code: self.exit_code,
            lease_owner: None,
            lease_expires_at: None,
            ..claimed
        }
    }
}

/// What a cancel request did.
#[derive(Clone, Debug, PartialEq)]
pub enum CancelOutcome {
    /// The job was queued and is now `cancelled`.
    Cancelled(Job),
    /// The job is running; `cancel_requested` is set and the node running it must kill it.
    Requested(Job),
    /// The job had already finished; nothing changed.
    AlreadyFinished(Job),
}

/// What the rescuer did with one job whose node stopped heartbeating.
#[derive(Clone, Debug, PartialEq)]
pub struct Rescued {
    pub id: Uuid,
    pub tool: String,
    /// `queued` (re-run later) or `failed` (reason `interrupted`).
    pub state: JobState,
}

/// Filters for listing jobs; results are newest first.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub tenant: Option<String>,
    pub workspace: Option<String>,
    pub state: Option<JobState>,
    pub tool: Option<String>,
    /// Only jobs enqueued before this `seq` (the cursor of the previous page).
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// A piece of a job's captured output, numbered from 1 in the order it was produced.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputChunk {
    pub job_id: Uuid,
    pub seq: i64,
    pub stream: Stream,
    pub data: Vec<u8>,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_of_one_millisecond_are_not_sequential() {
        // `rand_a` (the 12 bits after the version) is where a v7 counter would start: ids of one
        // millisecond would share or increment it.
        let parts = |u: Uuid| {
            let v = u128::from_be_bytes(*u.as_bytes());
            ((v >> 80) as u64, ((v >> 64) & 0xfff) as u64)
        };
        let ids: Vec<Uuid> = (0..256).map(|_| new_job_id()).collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        let mut same_ms = 0;
        let mut counter_like = 0;
        for pair in ids.windows(2) {
            let ((ms_a, ra), (ms_b, rb)) = (parts(pair[0]), parts(pair[1]));
            if ms_a == ms_b {
                same_ms += 1;
                if rb == ra || rb == ra + 1 {
                    counter_like += 1;
                }
            }
        }
        assert!(same_ms > 0, "the loop is fast enough to share milliseconds");
        assert!(
            counter_like * 10 < same_ms,
            "{counter_like} of {same_ms} look counted"
        );
    }
}
