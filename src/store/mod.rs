//! Persistence for jobs, their output, sandboxes and the audit log.
//!
//! One trait, [`Store`], with a backend per database: [`sqlite::SqliteStore`] (the embedded
//! default) and [`postgres::PgStore`] (several nodes). [`connect`] picks the backend from the URL
//! scheme. Both pass the same conformance suite (`tests/store_conformance.rs`).
//!
//! Architecture invariant: the store knows nothing of tools, HTTP or drivers. It stores what it is
//! given and enforces the queue's rules (one running job per workspace, FIFO claims, leases) in SQL.

pub mod api_key;
pub mod audit;
pub mod job;
pub mod postgres;
pub mod quota;
pub mod sandbox;
pub mod signals;
pub mod snapshot;
pub mod sqlite;
pub mod template;
mod wal_checkpoint;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use api_key::ApiKeyRecord;
pub use audit::{AuditEntry, AuditFilter, AuditRecord};
pub use job::{
    CancelOutcome, Completion, ErrorReason, Finish, Job, JobError, JobFilter, JobState, NewJob,
    OutputChunk, Rescued, Stream, Written,
};
pub use quota::{Quota, QuotaKind};
pub use sandbox::{CREATING, SandboxCount, SandboxFilter, SandboxRecord, Secret};
pub use signals::Signal;
pub use snapshot::SnapshotRecord;
pub use template::TemplateRecord;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint other than idempotency refused the write (a sandbox name is taken).
    #[error("{0} already exists")]
    Conflict(String),
    /// The database cannot be reached or cannot serve now (connection refused or lost, pool
    /// exhausted, server shutting down, too many connections, SQLite busy): the write did not
    /// happen and may be retried later. Transports answer 503 with `Retry-After`.
    #[error("the database is unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// An idempotency key the tenant already used, with other arguments: nothing inserted.
    #[error("idempotency key `{key}` was already used for job {job_id} with other arguments")]
    IdempotencyMismatch { key: String, job_id: Uuid },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded; a bug or a hand-edited database.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("unsupported database url `{0}`: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    /// The enqueue would take the tenant beyond a [`Quota`]; nothing was inserted.
    #[error("the tenant has reached its limit of {limit} {}", kind.what())]
    QuotaExceeded { kind: QuotaKind, limit: u64 },
}

/// The one place where sqlx errors are sorted: connection-class failures become
/// [`StoreError::Unavailable`], everything else [`StoreError::Database`].
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        if is_unavailable(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

/// A write's result, with a unique-index violation turned into [`StoreError::Conflict`] naming
/// `what` (a sandbox, template, snapshot or key that exists already); both backends use it.
fn conflict_on_unique<T>(
    result: std::result::Result<T, sqlx::Error>,
    what: impl FnOnce() -> String,
) -> Result<T> {
    match result {
        Ok(v) => Ok(v),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Conflict(what()))
        }
        Err(e) => Err(e.into()),
    }
}

impl StoreError {
    /// A copy of this error for each caller of a failed batch (sqlx errors are not `Clone`):
    /// the same variant, so an outage still answers 503, with the same message.
    pub fn shared(&self) -> StoreError {
        let message = || match self {
            StoreError::Unavailable(e) | StoreError::Database(e) => e.to_string(),
            other => other.to_string(),
        };
        match self {
            StoreError::Conflict(what) => StoreError::Conflict(what.clone()),
            StoreError::Unavailable(_) => {
                StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(message())))
            }
            StoreError::IdempotencyMismatch { key, job_id } => StoreError::IdempotencyMismatch {
                key: key.clone(),
                job_id: *job_id,
            },
            StoreError::QuotaExceeded { kind, limit } => StoreError::QuotaExceeded {
                kind: *kind,
                limit: *limit,
            },
            StoreError::Corrupt(what) => StoreError::Corrupt(what.clone()),
            StoreError::UnsupportedUrl(url) => StoreError::UnsupportedUrl(url.clone()),
            StoreError::Database(_) | StoreError::Migrate(_) => {
                StoreError::Database(sqlx::Error::Protocol(message()))
            }
        }
    }

    /// Whether a batched enqueue rolls back only this job (to its savepoint) and goes on with
    /// the others: every error but an outage, which ends the whole batch.
    pub(crate) fn is_per_job(&self) -> bool {
        !self.is_unavailable()
    }

    /// Whether the database was unavailable (retry later), rather than the request wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Whether `e` says the database cannot be reached or cannot serve now.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| unavailable_code(&code)),
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs of class 08 (connection exception), `admin_shutdown`, `crash_shutdown`,
/// `cannot_connect_now` and `too_many_connections`; SQLite's `BUSY` and `LOCKED` (primary codes
/// 5 and 6, also inside extended codes) once its busy timeout is spent. A SQLSTATE always has
/// five characters and SQLite's codes at most four digits, so a numeric SQLSTATE such as
/// `22021` (a NUL in a text value) is not read as a SQLite code.
fn unavailable_code(code: &str) -> bool {
    if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300") {
        return true;
    }
    code.len() < 5
        && code
            .parse::<u32>()
            .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6))
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The result of an enqueue: the stored job and whether this call created it.
#[derive(Clone, Debug, PartialEq)]
pub struct Enqueued {
    pub job: Job,
    /// `false` when the idempotency key matched an earlier job, which is returned instead.
    pub created: bool,
}

/// Count of jobs in one state, for the `jobs{state}` gauge.
#[derive(Clone, Debug, PartialEq)]
pub struct StateCount {
    pub state: JobState,
    pub count: i64,
}

/// Persistence used by the queue, the tools and the audit log.
///
/// Every method is one transaction. Timestamps are passed in by callers where the rules depend
/// on them (leases, rescues), so that tests can move time.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    fn backend(&self) -> Backend;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;

    /// Checks that the database answers, within two seconds ([`StoreError::Unavailable`] when
    /// not).
    async fn ping(&self) -> Result<()>;

    /// Subscribes to the store's wake-up stream (see [`signals`]): hints, sent after commit, of
    /// runnable jobs, changed jobs, cancel requests and stored output, from this node and (on
    /// PostgreSQL) every other node sharing the database. Subscribe before reading what is
    /// waited for; on [`Signal::Resync`] or a lag, re-read it.
    fn signals(&self) -> tokio::sync::broadcast::Receiver<Signal>;

    // ---- jobs -------------------------------------------------------------------------------

    /// Inserts the job, its audit row and its sandbox row (`NewJob::sandbox`) in one
    /// transaction. With an idempotency key already used by the tenant, inserts only the audit
    /// row and returns the earlier job with `created: false`, unless both jobs have an
    /// `args_digest` and they differ: then [`StoreError::IdempotencyMismatch`], nothing
    /// inserted. [`StoreError::Conflict`] (nothing inserted) when the sandbox's name is taken;
    /// [`StoreError::QuotaExceeded`] (nothing inserted) when a new job would exceed
    /// `NewJob::quota`, checked in the same transaction under a per-tenant lock (a replay is
    /// never refused). The unique index decides between concurrent submitters, on any node.
    async fn enqueue(&self, job: NewJob, audit: AuditEntry) -> Result<Enqueued>;

    /// [`Store::enqueue`] of several submissions in one transaction (group commit), each with
    /// the exact outcome it would have had alone, in order: a refusal of one
    /// ([`StoreError::IdempotencyMismatch`], [`StoreError::Conflict`],
    /// [`StoreError::QuotaExceeded`], another statement error) is rolled back to a savepoint
    /// taken before that job and leaves the others in place. The submissions of a batch are
    /// concurrent: jobs that insert a sandbox row or carry a quota are written first, then the
    /// plain ones in shared multi-row inserts, each group in the order given (on PostgreSQL a
    /// batch of plain submissions only is one statement, which without idempotency keys commits
    /// on its own; a refused value there reruns the batch with a savepoint per job). The outer
    /// error (the database unavailable, the commit failed) means that nothing of the batch is
    /// committed.
    async fn enqueue_batch(
        &self,
        batch: Vec<(NewJob, AuditEntry)>,
    ) -> Result<Vec<Result<Enqueued>>>;

    /// Inserts many jobs in one transaction (no audit rows, no sandbox rows, no idempotency keys
    /// honoured beyond the unique constraint). Meant for bulk loads and benchmarks.
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<()>;

    /// Moves up to `limit` runnable jobs to `running` under a lease held by `node`, in priority
    /// then FIFO order. A job is runnable when it is queued, its `run_after` has passed and, if it
    /// has a workspace, no job of that workspace is running and it is the workspace's first
    /// queued job. Returned in claim order.
    async fn claim(
        &self,
        node: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<Job>>;

    /// Extends the leases of `ids` held by `node`. Returns the ids among them whose cancellation
    /// was requested, so a node learns of cancels made on other nodes.
    async fn heartbeat(
        &self,
        node: &str,
        ids: &[Uuid],
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<Uuid>>;

    /// Claims for `node` the heads of `workspaces` (each one's first queued job, when it is
    /// ready, `node` may run it and its workspace runs nothing), best first, at most `limit`,
    /// and nothing else. A node that finished the running jobs of these workspaces calls it
    /// instead of [`Store::claim`] while nothing else can have become claimable: it then takes
    /// what a full claim would, without looking at every workspace with queued jobs.
    async fn claim_heads(
        &self,
        node: &str,
        workspaces: &[String],
        limit: u32,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<Job>>;

    /// Applies finishes for jobs `node` is running, in one transaction. A completion for a job
    /// that is no longer running under `node`'s lease is ignored (it was rescued meanwhile).
    /// Returns what was written to the jobs that were updated, as stored.
    async fn complete(
        &self,
        node: &str,
        completions: &[Completion],
        now: DateTime<Utc>,
    ) -> Result<Vec<Written>>;

    /// Cancels a queued job, or marks a running one for killing.
    async fn cancel(
        &self,
        tenant: &str,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<CancelOutcome>>;

    /// [`Store::cancel`] of a job of `tenant` (any tenant when `None`) that also inserts
    /// `audit` in the same transaction, when the job exists: the row gets the job's id and
    /// workspace, and as outcome what the cancel did (`cancelled`, `cancel_requested` or
    /// `already_finished`). Nothing is written for a job that does not exist.
    async fn cancel_audited(
        &self,
        tenant: Option<&str>,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<Option<CancelOutcome>>;

    /// One job of `tenant` (any tenant when `None`).
    async fn job(&self, tenant: Option<&str>, id: Uuid) -> Result<Option<Job>>;

    /// A page of jobs, newest first.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;

    /// Whether `workspace` has a queued or running job for `tool`.
    async fn has_open_job(&self, workspace: &str, tool: &str) -> Result<bool>;

    /// Resolves running jobs whose lease expired before `now`: retry-safe jobs with attempts left
    /// go back to `queued`, the rest end `failed` with reason `interrupted`.
    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<Rescued>>;

    /// The same resolution for every job `node` left running, whatever its lease (start-up).
    async fn recover_node(&self, node: &str, now: DateTime<Utc>) -> Result<Vec<Rescued>>;

    /// Records that `node` is alive now (its row in `nodes`, created on the first call). Every
    /// node calls it on start and on each heartbeat tick.
    async fn node_alive(&self, node: &str, now: DateTime<Utc>) -> Result<()>;

    /// Fails, with reason `node_gone`, up to [`NODE_GONE_BATCH`] queued jobs bound to a node
    /// (`NewJob::node`) whose last sign of life is older than `gone_before`, or which never
    /// recorded one: no other node can run them. Returns them.
    async fn fail_jobs_of_gone_nodes(
        &self,
        gone_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Rescued>>;

    /// Counts of jobs per state.
    async fn job_counts(&self) -> Result<Vec<StateCount>>;

    /// Since when the longest-waiting runnable job has been runnable: the earliest `run_after`
    /// of queued jobs that may run by `now` and whose workspace has no running job (a job
    /// waiting behind its workspace's running job is not late; one waiting for a free worker
    /// is). `None` when no job is runnable. Feeds `oldest_runnable_job_age_seconds`.
    async fn oldest_runnable(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>>;

    /// Deletes up to `limit` finished jobs (any of them: oldest first on SQLite, table order
    /// on PostgreSQL) that finished before `before`, with
    /// their output; their idempotency keys go with them. Returns how many jobs went; fewer
    /// than `limit` means nothing older is left. Bounded, so that one call holds the database
    /// briefly however large the backlog (the retention loop calls it until it runs dry).
    async fn prune(&self, before: DateTime<Utc>, limit: u32) -> Result<u64>;

    // ---- output ----------------------------------------------------------------------------

    async fn append_output(&self, chunks: &[OutputChunk]) -> Result<()>;

    /// Output chunks of a job with `seq > after_seq`, in order.
    async fn output(&self, job_id: Uuid, after_seq: i64) -> Result<Vec<OutputChunk>>;

    // ---- sandboxes -------------------------------------------------------------------------

    /// Inserts a sandbox (without `creating_job`); [`StoreError::Conflict`] if the tenant already
    /// has the name.
    async fn insert_sandbox(&self, sandbox: &SandboxRecord) -> Result<()>;

    /// A sandbox of `tenant` by id, or else by name.
    async fn sandbox(&self, tenant: &str, id_or_name: &str) -> Result<Option<SandboxRecord>>;

    async fn list_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<SandboxRecord>>;

    async fn set_sandbox_status(&self, id: &str, status: &str) -> Result<()>;

    /// Records the driver's handle of the sandbox (see [`SandboxRecord::handle`]).
    async fn set_sandbox_handle(&self, id: &str, handle: &str) -> Result<()>;

    /// Records that a job used the sandbox.
    async fn touch_sandbox(&self, id: &str, at: DateTime<Utc>) -> Result<()>;

    /// Deletes the row; `false` if there was none.
    async fn delete_sandbox(&self, id: &str) -> Result<bool>;

    async fn sandbox_counts(&self) -> Result<Vec<SandboxCount>>;

    // ---- templates -------------------------------------------------------------------------
    // A template is inserted only with the job that creates it (`NewJob::template`).

    /// The template `name` of `tenant`.
    async fn template(&self, tenant: &str, name: &str) -> Result<Option<TemplateRecord>>;

    /// The templates of `tenant`, by name.
    async fn list_templates(&self, tenant: &str) -> Result<Vec<TemplateRecord>>;

    /// Deletes the template; `false` if there was none.
    async fn delete_template(&self, tenant: &str, name: &str) -> Result<bool>;

    // ---- audit -----------------------------------------------------------------------------

    /// Inserts a snapshot's row. With `quota` limiting disk, refuses (`QuotaExceeded`, nothing
    /// written) when the tenant's sandboxes' disk quotas plus its snapshots, this one included,
    /// would exceed it; checked in the insert's transaction, under the lock `enqueue` takes for
    /// the tenant's quota checks.
    async fn insert_snapshot(&self, snapshot: &SnapshotRecord, quota: Option<&Quota>)
    -> Result<()>;

    /// The tenant's snapshot `id`.
    async fn snapshot(&self, tenant: &str, id: &str) -> Result<Option<SnapshotRecord>>;

    /// The tenant's snapshots, oldest first; only those of sandbox `sandbox_id` when given.
    async fn list_snapshots(
        &self,
        tenant: &str,
        sandbox_id: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>>;

    /// Deletes the tenant's snapshot `id`; whether it existed.
    async fn delete_snapshot(&self, tenant: &str, id: &str) -> Result<bool>;

    async fn append_audit(&self, entry: &AuditEntry) -> Result<()>;

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;

    /// Deletes audit rows older than `before` (the retention). The only way rows leave the
    /// audit log: the database refuses every other delete and every update. The horizon is set
    /// inside this method's transaction and does not outlive it.
    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64>;

    // ---- API keys ----------------------------------------------------------------------------

    /// Inserts a key and its audit row in one transaction; [`StoreError::Conflict`] (nothing
    /// inserted) when the id is taken.
    async fn insert_api_key(&self, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<()>;

    /// One key by id, revoked and expired ones included (the caller decides).
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>>;

    /// Every key, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>>;

    /// Marks a key revoked at `at` and writes its audit row, in one transaction; `false` (and
    /// no audit row) when there is no such key or it was revoked already.
    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>, audit: &AuditEntry)
    -> Result<bool>;

    // ---- per-tenant running limit -------------------------------------------------------------

    /// How many jobs of `tenant` are running (on any node).
    async fn running_jobs(&self, tenant: &str) -> Result<u64>;

    /// Puts jobs that `node` has just claimed back in the queue as if never claimed (attempt
    /// and start undone, lease cleared), not to run before `run_after`. Their `seq`, and so
    /// their place in their workspace's order, is kept. Jobs no longer running under `node`'s
    /// lease are left alone. Returns the ids put back.
    async fn unclaim(
        &self,
        node: &str,
        ids: &[Uuid],
        run_after: DateTime<Utc>,
    ) -> Result<Vec<Uuid>>;
}

/// A database URL whose `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }

    /// The full URL, password included. Only for opening connections.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`: the one in the user info
    /// (`user:password@`) and query parameters such as `password=` or `sslpassword=`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url.as_str(), None),
        };
        let mut out = redact_user_info(base);
        if let Some(query) = query {
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                        format!("{key}=***")
                    }
                    _ => param.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        out
    }
}

fn redact_user_info(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}://{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// How long a statement waits for a connection unless the configuration says otherwise.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Store::ping`] waits before it reports the database unavailable.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens the store the URL's scheme names. Does not run migrations.
pub async fn connect(url: &DatabaseUrl, max_connections: u32) -> Result<Arc<dyn Store>> {
    connect_with(url, max_connections, DEFAULT_ACQUIRE_TIMEOUT).await
}

/// [`connect`] with the time a statement may wait for a connection (`acquire_timeout`) before
/// it fails with [`StoreError::Unavailable`].
pub async fn connect_with(
    url: &DatabaseUrl,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<Arc<dyn Store>> {
    let raw = url.expose();
    if raw.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::connect(raw, max_connections).await?,
        ))
    } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect_with(raw, max_connections, acquire_timeout).await?,
        ))
    } else {
        Err(StoreError::UnsupportedUrl(url.redacted()))
    }
}

/// Converts a lease length to a chrono duration, saturating on absurd values.
pub(crate) fn lease_until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::days(365))
}

/// The message recorded on a job that was running when its node stopped.
pub(crate) fn interrupted_error(tool: &str) -> job::JobError {
    job::JobError::new(
        ErrorReason::Interrupted,
        format!(
            "the server running this job stopped before it finished; `{tool}` is not safe to \
             repeat, so it was not run again"
        ),
    )
}

/// The message recorded on a retry-safe job whose node stopped and which has no attempts left.
pub(crate) fn exhausted_error(tool: &str, attempts: i32) -> job::JobError {
    job::JobError::new(
        ErrorReason::Interrupted,
        format!(
            "the server running this job stopped before it finished; `{tool}` was already tried \
             {attempts} time(s), the most allowed"
        ),
    )
}

/// What happens to a running job whose node stopped: retry-safe jobs with attempts left go back to
/// the queue; every other job fails with reason `interrupted`. Shared by both backends.
pub(crate) fn rescue_target(job: &Job) -> (JobState, Option<JobError>) {
    if job.retry_safe && job.attempts < job.max_attempts {
        (JobState::Queued, None)
    } else if job.retry_safe {
        (
            JobState::Failed,
            Some(exhausted_error(&job.tool, job.attempts)),
        )
    } else {
        (JobState::Failed, Some(interrupted_error(&job.tool)))
    }
}

/// Splits a batch into its plain submissions (no sandbox or template row, no followers, no quota:
/// checked by the unique idempotency index alone, so they can share multi-row inserts) and the others (each in its
/// own savepoint), both with their indices in the batch. The others are written first: the
/// submissions of one batch are concurrent (a caller waits for its answer before it submits
/// again), so any order among them is an order they could have arrived in.
#[allow(clippy::type_complexity)]
pub(crate) fn split_plain(
    batch: Vec<(NewJob, AuditEntry)>,
) -> (
    Vec<(usize, (NewJob, AuditEntry))>,
    Vec<(usize, (NewJob, AuditEntry))>,
) {
    batch.into_iter().enumerate().partition(|(_, (job, _))| {
        job.sandbox.is_none()
            && job.quota.is_none()
            && job.template.is_none()
            && job.followers.is_empty()
    })
}

/// Refuses to replay `earlier` for `job` (same tenant and idempotency key) when both digests are
/// known and differ: the key was reused for another request. Nothing is written then (the
/// caller's transaction rolls back).
pub(crate) fn check_replay(
    job: &NewJob,
    earlier: &Job,
    earlier_digest: Option<String>,
) -> Result<()> {
    match (&job.args_digest, earlier_digest) {
        (Some(new), Some(old)) if *new != old => Err(StoreError::IdempotencyMismatch {
            key: job.idempotency_key.clone().unwrap_or_default(),
            job_id: earlier.id,
        }),
        _ => Ok(()),
    }
}

/// Most jobs one pass of [`Store::fail_jobs_of_gone_nodes`] fails.
pub const NODE_GONE_BATCH: i64 = 1000;

/// The error recorded on a queued job whose node is gone.
pub(crate) fn node_gone_error(node: &str, last_seen: Option<DateTime<Utc>>) -> JobError {
    let seen = match last_seen {
        Some(at) => format!("was last seen at {}", at.format("%Y-%m-%dT%H:%M:%SZ")),
        None => "has never been seen".to_string(),
    };
    JobError::new(
        ErrorReason::NodeGone,
        format!(
            "this job's sandbox lives on node `{node}`, which {seen} (longer ago than \
             queue.node_horizon_s); no other node can run it: start that node again, or create \
             the sandbox anew"
        ),
    )
}

/// The audit row of a cancel, completed with what the cancel did (shared by both backends).
pub(crate) fn cancel_audit_entry(mut audit: AuditEntry, outcome: &CancelOutcome) -> AuditEntry {
    let (job, what) = match outcome {
        CancelOutcome::Cancelled(job) => (job, "cancelled"),
        CancelOutcome::Requested(job) => (job, "cancel_requested"),
        CancelOutcome::AlreadyFinished(job) => (job, "already_finished"),
    };
    audit.job_id = Some(job.id);
    audit.workspace = job.workspace.clone();
    audit.outcome = what.to_string();
    audit
}

/// The error recorded on a queued job that a caller cancelled.
pub(crate) fn cancelled_error() -> JobError {
    JobError::new(ErrorReason::Cancelled, "cancelled before it started")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_in_url() {
        let url = DatabaseUrl::new("postgres://app:s3cret@db.internal:5432/jobs");
        assert_eq!(url.redacted(), "postgres://app:***@db.internal:5432/jobs");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(!format!("{url}").contains("s3cret"));
    }

    #[test]
    fn redacts_password_query_parameters() {
        let url = DatabaseUrl::new("postgres://app@db/jobs?sslmode=require&password=s3cret&x=1");
        assert_eq!(
            url.redacted(),
            "postgres://app@db/jobs?sslmode=require&password=***&x=1"
        );
        let both = DatabaseUrl::new("postgres://app:a@db/jobs?sslpassword=b");
        assert_eq!(
            both.redacted(),
            "postgres://app:***@db/jobs?sslpassword=***"
        );
    }

    #[test]
    fn connection_class_errors_are_unavailable() {
        for code in ["08006", "08001", "57P01", "57P03", "53300", "5", "517", "6"] {
            assert!(unavailable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "40001", "22021", "22P05", "19", "2067"] {
            assert!(!unavailable_code(code), "{code}");
        }
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(
            StoreError::from(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()))
                .is_unavailable()
        );
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_unavailable());
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        for raw in [
            "postgres://app@db/jobs",
            "sqlite://./data/x.db",
            "postgres://db/jobs",
        ] {
            assert_eq!(DatabaseUrl::new(raw).redacted(), raw);
        }
    }
}
