//! PostgreSQL backend: several nodes share one database.
//!
//! Claims use `FOR UPDATE SKIP LOCKED` so nodes never wait on each other's candidate rows; enqueue
//! takes a transaction-scoped advisory lock on the workspace so that, within a workspace, `seq`
//! order is commit order (FIFO holds even for concurrent submitters); enqueue and completion send
//! `NOTIFY` so other nodes wake at once.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::signals::{SharedSignals, Signal, SignalHub, next_backoff};

use super::{
    ApiKeyRecord, AuditEntry, AuditFilter, AuditRecord, Backend, CancelOutcome, Completion,
    Enqueued, Job, JobError, JobFilter, JobState, NewJob, OutputChunk, Quota, QuotaKind, Rescued,
    Result, SandboxCount, SandboxFilter, SandboxRecord, Secret, SnapshotRecord, StateCount, Store,
    StoreError, Stream, TemplateRecord, Written,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

// The channels of the wake-up stream (see `signals.rs`). Only this file knows them.
/// Jobs may have become runnable (payload empty).
const CHANNEL_JOBS: &str = "daytona_mcp_jobs";
/// Jobs changed state (payload: job ids separated by commas; see [`DONE_IDS_PER_NOTICE`]).
const CHANNEL_DONE: &str = "daytona_mcp_done";
/// Most job ids in one `done` notice: a completion of a batch sends one notice per this many
/// jobs instead of one per job, so PostgreSQL queues, and every listening backend reads and
/// sends, a few notices per batch. 200 ids of 36 characters and their commas stay well below
/// the 8,000 bytes a payload may hold.
const DONE_IDS_PER_NOTICE: i64 = 200;
/// A running job's cancellation was requested (payload: job id).
const CHANNEL_CANCEL: &str = "daytona_mcp_cancel";
/// A batch of a job's output was stored (payload: job id).
const CHANNEL_OUTPUT: &str = "daytona_mcp_output";

/// The signals a notification carries: one, or one per job id of a `done` notice; none for a
/// payload that is not what its channel sends.
fn signals_of(channel: &str, payload: &str) -> Vec<Signal> {
    let id = || Uuid::parse_str(payload).ok();
    let signal = match channel {
        // Completions name their node; enqueues, cancels and rescues send no payload.
        CHANNEL_JOBS if payload.is_empty() => Some(Signal::JobsReady),
        CHANNEL_JOBS => Some(Signal::JobsFinished {
            node: payload.into(),
        }),
        CHANNEL_DONE => {
            return payload
                .split(',')
                .filter_map(|id| Uuid::parse_str(id).ok())
                .map(Signal::JobChanged)
                .collect();
        }
        CHANNEL_CANCEL => id().map(Signal::CancelRequested),
        CHANNEL_OUTPUT => id().map(Signal::Output),
        _ => None,
    };
    signal.into_iter().collect()
}

/// Feeds `hub` from `LISTEN` on one connection of the store's pool until `stop`. A lost
/// connection is re-established (with backoff while the database cannot be reached), and every
/// reconnect, successful or not, sends [`Signal::Resync`]: notifications sent meanwhile are gone.
async fn listen(pool: PgPool, hub: SignalHub, stop: CancellationToken) {
    let mut backoff = Duration::ZERO;
    loop {
        match listen_connected(&pool, &hub, &stop, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = next_backoff(backoff).as_millis() as u64,
                "the notification listener lost the database; reconnecting")
            }
        }
        hub.send(Signal::Resync);
        backoff = next_backoff(backoff);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

async fn listen_connected(
    pool: &PgPool,
    hub: &SignalHub,
    stop: &CancellationToken,
    backoff: &mut Duration,
) -> std::result::Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([CHANNEL_JOBS, CHANNEL_DONE, CHANNEL_CANCEL, CHANNEL_OUTPUT])
        .await?;
    *backoff = Duration::ZERO;
    // Whatever happened before this connection listened was not heard.
    hub.send(Signal::Resync);
    loop {
        let notification = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            n = listener.try_recv() => n?,
        };
        match notification {
            Some(n) => {
                for signal in signals_of(n.channel(), n.payload()) {
                    hub.send(signal);
                }
            }
            // The connection dropped and the listener has already re-established it.
            None => {
                tracing::warn!("the notification listener reconnected");
                hub.send(Signal::Resync);
            }
        }
    }
}

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The queue's hot path (claims and completions): two connections that run every statement
    /// on its generic plan. These statements have one fixed shape whose custom plans come out
    /// the same as the generic one (checked with `EXPLAIN EXECUTE`), yet PostgreSQL kept
    /// re-planning them on every execution: 1.0–1.6 ms of a 2.7 ms claim of 25. The main pool
    /// keeps custom plans, which the listings' optional filters (`$1 IS NULL OR …`) need.
    hot: PgPool,
    /// The wake-up stream, fed by a `LISTEN` connection of `pool` once someone subscribes.
    signals: SharedSignals,
}

impl PgStore {
    /// A cancel of a job of `tenant` (any tenant when `None`), with `audit` inserted in the
    /// same transaction when the job exists.
    async fn cancel_with(
        &self,
        tenant: Option<&str>,
        id: Uuid,
        now: DateTime<Utc>,
        audit: Option<AuditEntry>,
    ) -> Result<Option<CancelOutcome>> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(
            "SELECT * FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) FOR UPDATE",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let job = job_from_row(&row)?;
        let outcome = match job.state {
            JobState::Queued => {
                let row = sqlx::query(
                    "UPDATE jobs SET state = 'cancelled', finished_at = $1, error = $2 \
                     WHERE id = $3 RETURNING *",
                )
                .bind(now)
                .bind(Json(super::cancelled_error()))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                notify(&mut tx, CHANNEL_DONE, &id.to_string()).await?;
                // The cancelled job may have been the head of its workspace.
                notify(&mut tx, CHANNEL_JOBS, "").await?;
                CancelOutcome::Cancelled(job_from_row(&row)?)
            }
            JobState::Running => {
                let row = sqlx::query(
                    "UPDATE jobs SET cancel_requested = TRUE WHERE id = $1 RETURNING *",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                notify(&mut tx, CHANNEL_DONE, &id.to_string()).await?;
                notify(&mut tx, CHANNEL_CANCEL, &id.to_string()).await?;
                CancelOutcome::Requested(job_from_row(&row)?)
            }
            _ => CancelOutcome::AlreadyFinished(job),
        };
        if let Some(audit) = audit {
            insert_audit(&mut tx, &super::cancel_audit_entry(audit, &outcome)).await?;
        }
        tx.commit().await?;
        Ok(Some(outcome))
    }

    /// One claim statement, its workspace heads chosen by `heads`. When two nodes raced for the
    /// head of a workspace, the unique index refused the second running job and rolled that
    /// statement back: the invariant held, and the loser runs the statement again (the winner
    /// has committed, so the next run passes that workspace by). A claim that comes back short
    /// must mean that nothing else was claimable (the dispatcher relies on it), so a lost race
    /// is not answered with an empty claim while the statement can still win; after
    /// [`CLAIM_RACES`] lost races in a row it is, and the poll claims again.
    async fn claim_with(
        &self,
        node: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease: Duration,
        heads: Heads<'_>,
    ) -> Result<Vec<PgRow>> {
        static WINDOW: LazyLock<String> = LazyLock::new(|| {
            CLAIM
                .replace("{heads}", CLAIM_HEADS_WINDOW)
                .replace("{free}", CLAIM_FREE_WINDOW)
        });
        static ALL: LazyLock<String> = LazyLock::new(|| {
            CLAIM
                .replace("{heads}", CLAIM_HEADS_ALL)
                .replace("{free}", "TRUE")
        });
        static OF: LazyLock<String> = LazyLock::new(|| {
            CLAIM
                .replace("{heads}", CLAIM_HEADS_OF)
                .replace("{free}", "FALSE")
        });
        let sql: &'static str = match heads {
            Heads::Window(_) => &WINDOW,
            Heads::All => &ALL,
            Heads::Of(_) => &OF,
        };
        for _ in 0..CLAIM_RACES {
            let query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(node)
                .bind(super::lease_until(now, lease))
                .bind(i64::from(limit));
            let query = match heads {
                Heads::Window(window) => query.bind(window),
                Heads::All => query.bind(0i64),
                Heads::Of(workspaces) => query.bind(workspaces),
            };
            match query.fetch_all(&self.hot).await {
                Ok(rows) => return Ok(rows),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    tracing::debug!("claim lost a race for a workspace head: {e}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Vec::new())
    }

    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore> {
        PgStore::connect_with(url, max_connections, super::DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// Opens the pool; a statement waits up to `acquire_timeout` for a connection.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<PgStore> {
        // Queue statements are short; JIT compilation would cost more than it saves.
        let options = PgConnectOptions::from_str(url)?.options([("jit", "off")]);
        // One connection more than asked for: the notification listener holds one for good.
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2) + 1)
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await?;
        // The dispatcher's claim and the completer's write, side by side. Lazy: a node opens
        // them with its first claim, and a store used only to read or migrate never does.
        let hot = PgPoolOptions::new()
            .max_connections(HOT_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(options.options([("plan_cache_mode", "force_generic_plan")]));
        Ok(PgStore {
            pool,
            hot,
            signals: SharedSignals::default(),
        })
    }
}

fn job_from_row(row: &PgRow) -> Result<Job> {
    // The columns a completion writes are decoded in one place, `written_from_row`.
    let written = written_from_row(row)?;
    Ok(Job {
        id: written.id,
        seq: row.try_get("seq")?,
        tenant: row.try_get("tenant")?,
        workspace: row.try_get("workspace")?,
        tool: row.try_get("tool")?,
        arguments: row.try_get("arguments")?,
        state: written.state,
        priority: row.try_get("priority")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        retry_safe: row.try_get("retry_safe")?,
        timeout_s: row.try_get("timeout_s")?,
        run_after: written.run_after,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: written.finished_at,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        cancel_requested: written.cancel_requested,
        idempotency_key: row.try_get("idempotency_key")?,
        result: written.result,
        error: written.error,
        exit_code: written.exit_code,
        request_id: row.try_get("request_id")?,
        node: row.try_get("node")?,
    })
}

/// The listing of [`Store::list_jobs`] (`$1` tenant, `$2` workspace, `$3` state, `$4` tool, `$5`
/// the cursor's `seq`, `$6` the limit), newest first. No index holds every job ordered by `seq`:
/// each submission, claim and completion would write an entry into it. The finished jobs are in
/// `jobs_tenant_seq` and `jobs_workspace_state`, the queued ones in `jobs_tenant_queued` and
/// `jobs_queued_workspace`, the running ones in the running index (a few per node); migrations
/// `jobs_history_indexes` and `jobs_history_finished_only` took the open jobs out of the history
/// indexes, which saved a claim and a completion two entries each, then a submission two more.
/// So a listing merges three parts, each from its own indexes (for every tenant, the newest `$6`
/// of each tenant: an admin's listing), and a state filter reads only its part. Each part names
/// its states literally, as the partial indexes do, so that the planner can use them.
fn list_jobs_sql(one_tenant: bool, state: Option<JobState>) -> &'static str {
    const FILTERS: &str = "($2::text IS NULL OR workspace = $2) \
         AND ($3::text IS NULL OR state = $3) AND ($4::text IS NULL OR tool = $4) \
         AND ($5::bigint IS NULL OR seq < $5)";
    const FINISHED: &str = "state IN ('succeeded', 'failed', 'cancelled')";
    const QUEUED: &str = "state = 'queued'";
    const ONE_TENANT: &str = "(SELECT * FROM jobs WHERE tenant = $1 AND {states} \
         AND {filters} ORDER BY seq DESC LIMIT $6)";
    // `$1::text IS NULL` (always true here) gives `$1` its type when no other part names it.
    const EVERY_TENANT: &str = "(WITH RECURSIVE tenants AS ( \
             (SELECT tenant FROM jobs WHERE {states} AND $1::text IS NULL \
              ORDER BY tenant LIMIT 1) \
             UNION ALL \
             SELECT (SELECT j.tenant FROM jobs j WHERE {states} \
                     AND j.tenant > t.tenant ORDER BY j.tenant LIMIT 1) \
             FROM tenants t WHERE t.tenant IS NOT NULL) \
         SELECT page.* FROM tenants t CROSS JOIN LATERAL ( \
             SELECT * FROM jobs WHERE tenant = t.tenant AND {states} AND {filters} \
             ORDER BY seq DESC LIMIT $6) page)";
    const RUNNING: &str = "(SELECT * FROM jobs WHERE state = 'running' \
         AND ($1::text IS NULL OR tenant = $1) AND {filters} ORDER BY seq DESC LIMIT $6)";
    // By tenant scope (one, every), then by the parts a state filter needs (all three, the
    // finished jobs, the queued ones, the running ones).
    static QUERIES: LazyLock<[[String; 4]; 2]> = LazyLock::new(|| {
        [ONE_TENANT, EVERY_TENANT].map(|scope| {
            let finished = scope.replace("{states}", FINISHED);
            let queued = scope.replace("{states}", QUEUED);
            [
                vec![finished.as_str(), queued.as_str(), RUNNING],
                vec![finished.as_str()],
                vec![queued.as_str()],
                vec![RUNNING],
            ]
            .map(|parts| {
                let union = parts.join(" UNION ALL ").replace("{filters}", FILTERS);
                format!("SELECT * FROM ({union}) j ORDER BY seq DESC LIMIT $6")
            })
        })
    });
    let parts = match state {
        None => 0,
        Some(JobState::Queued) => 2,
        Some(JobState::Running) => 3,
        Some(_) => 1,
    };
    &QUERIES[usize::from(!one_tenant)][parts]
}

/// Retention's next jobs to delete: up to `$2` finished before `$1`. `finished_at IS NOT NULL`
/// is the predicate of the partial BRIN index `jobs_finished`, which the planner then uses.
const PRUNE_CANDIDATES: &str = "SELECT id FROM jobs WHERE finished_at IS NOT NULL \
     AND finished_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED";

/// A claim's rows as jobs, in claim order.
fn claimed_jobs(rows: &[PgRow]) -> Result<Vec<Job>> {
    let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
    super::job::sort_in_claim_order(&mut jobs);
    Ok(jobs)
}

fn written_from_row(row: &PgRow) -> Result<Written> {
    let state: String = row.try_get("state")?;
    Ok(Written {
        id: row.try_get("id")?,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("jobs.state: {state}")))?,
        run_after: row.try_get("run_after")?,
        finished_at: row.try_get("finished_at")?,
        cancel_requested: row.try_get("cancel_requested")?,
        result: row.try_get("result")?,
        error: row
            .try_get::<Option<Json<JobError>>, _>("error")?
            .map(|j| j.0),
        exit_code: row.try_get("exit_code")?,
    })
}

fn sandbox_from_row(row: &PgRow) -> Result<SandboxRecord> {
    Ok(SandboxRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        driver: row.try_get("driver")?,
        language: row.try_get("language")?,
        status: row.try_get("status")?,
        image: row.try_get("image")?,
        git_repo: row.try_get("git_repo")?,
        git_branch: row.try_get("git_branch")?,
        environment_vars: row
            .try_get::<Json<std::collections::BTreeMap<String, String>>, _>("environment_vars")?
            .0,
        labels: row
            .try_get::<Json<std::collections::BTreeMap<String, String>>, _>("labels")?
            .0,
        resources: row.try_get("resources")?,
        persistent: row.try_get("persistent")?,
        auto_stop_minutes: row.try_get("auto_stop_minutes")?,
        created_at: row.try_get("created_at")?,
        last_accessed: row.try_get("last_accessed")?,
        network: row.try_get("network")?,
        git_token: row
            .try_get::<Option<String>, _>("git_token")?
            .map(Secret::new),
        creating_job: row.try_get("creating_job")?,
        handle: row.try_get("driver_handle")?,
        node: row.try_get("node")?,
    })
}

/// Inserts a template row; [`StoreError::Conflict`] when the tenant has the name.
async fn insert_template_row(conn: &mut PgConnection, t: &TemplateRecord) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO templates (tenant, name, fields, environment_vars, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&t.tenant)
    .bind(&t.name)
    .bind(jsonb_safe(t.fields.clone()))
    .bind(Json(&t.environment_vars))
    .bind(t.created_at)
    .execute(conn)
    .await;
    super::conflict_on_unique(result, || format!("template named `{}`", t.name)).map(|_| ())
}

fn template_from_row(row: &PgRow) -> Result<TemplateRecord> {
    Ok(TemplateRecord {
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        fields: row.try_get("fields")?,
        environment_vars: row
            .try_get::<Json<std::collections::BTreeMap<String, String>>, _>("environment_vars")?
            .0,
        created_at: row.try_get("created_at")?,
    })
}

/// Inserts a sandbox row, reserved by `creating_job` if given.
async fn insert_sandbox_row(
    conn: &mut PgConnection,
    s: &SandboxRecord,
    creating_job: Option<Uuid>,
) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO sandboxes (id, tenant, name, driver, language, status, image, git_repo, \
         git_branch, environment_vars, labels, resources, persistent, auto_stop_minutes, \
         created_at, last_accessed, network, git_token, creating_job, driver_handle, node) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21)",
    )
    .bind(&s.id)
    .bind(&s.tenant)
    .bind(&s.name)
    .bind(&s.driver)
    .bind(&s.language)
    .bind(&s.status)
    .bind(&s.image)
    .bind(&s.git_repo)
    .bind(&s.git_branch)
    .bind(Json(&s.environment_vars))
    .bind(Json(&s.labels))
    .bind(&s.resources)
    .bind(s.persistent)
    .bind(s.auto_stop_minutes)
    .bind(s.created_at)
    .bind(s.last_accessed)
    .bind(s.network)
    .bind(s.git_token.as_ref().map(Secret::expose))
    .bind(creating_job)
    .bind(&s.handle)
    .bind(&s.node)
    .execute(conn)
    .await;
    super::conflict_on_unique(result, || format!("sandbox named `{}`", s.name)).map(|_| ())
}

fn audit_from_row(row: &PgRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        entry: AuditEntry {
            at: row.try_get("at")?,
            request_id: row.try_get("request_id")?,
            tenant: row.try_get("tenant")?,
            key_id: row.try_get("key_id")?,
            client_addr: row.try_get("client_addr")?,
            action: row.try_get("action")?,
            workspace: row.try_get("workspace")?,
            job_id: row.try_get("job_id")?,
            outcome: row.try_get("outcome")?,
            duration_ms: row.try_get("duration_ms")?,
            args_digest: row.try_get("args_digest")?,
            args_summary: row.try_get("args_summary")?,
        },
    })
}

/// Connections of [`PgStore::hot`]: one claim and one completion write at a time per node.
const HOT_CONNECTIONS: u32 = 2;

/// Runs of one claim statement that may lose a race for a workspace head before the claim
/// gives up until the next poll (see `PgStore::claim_with`).
const CLAIM_RACES: usize = 3;

/// Largest claim that first tries [`CLAIM_HEADS_WINDOW`].
const WINDOW_CLAIM_MAX: u32 = 128;

/// The claim: candidates come from two index-ordered sources, ready jobs without a workspace and
/// `{heads}` (the first queued job of each workspace that has no running job); the best `$4`
/// of them are locked, skipping rows another node holds, and claimed. `$5` is the window of
/// [`CLAIM_HEADS_WINDOW`]; `{free}` bounds the jobs without a workspace.
///
/// The candidates are carried by `ctid`, the address of the row version the index scans found,
/// so locking and updating them are direct reads of those tuples instead of an index descent
/// each (measured: 15 % of the instructions PostgreSQL spent per keyed job). This is safe within
/// one statement: a version the statement's snapshot sees cannot be vacuumed away under it, and
/// when another transaction updated the row meanwhile, `FOR UPDATE` follows the update to the
/// latest version and rechecks `state = 'queued'` on it (a job another node claimed or a caller
/// cancelled is skipped). A row whose latest version the snapshot does not see is not claimed by
/// this statement (the update's read of that address finds nothing visible); it stays queued
/// for the next claim.
const CLAIM: &str = "WITH {heads}, \
     free AS ( \
         SELECT ctid, seq, priority FROM jobs f \
         WHERE state = 'queued' AND workspace IS NULL AND run_after <= $1 \
           AND (node IS NULL OR node = $2) AND {free} \
         ORDER BY priority DESC, seq LIMIT $4), \
     candidates AS ( \
         SELECT ctid FROM (SELECT ctid, seq, priority FROM free \
                          UNION ALL SELECT ctid, seq, priority FROM heads) c \
         ORDER BY priority DESC, seq LIMIT $4), \
     locked AS ( \
         SELECT ctid FROM jobs \
         WHERE ctid = ANY(ARRAY(SELECT ctid FROM candidates)) AND state = 'queued' \
         FOR UPDATE SKIP LOCKED) \
     UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = $1, \
         lease_owner = $2, lease_expires_at = $3 \
     WHERE ctid = ANY(ARRAY(SELECT ctid FROM locked)) \
     RETURNING *";

/// Both heads queries test "is this workspace running a job?" with `NOT EXISTS (… OFFSET 0)`:
/// the `OFFSET` keeps the test a per-workspace probe of `jobs_one_running_per_workspace`. Without
/// it the planner may turn the test into an anti join, and with statistics taken while few jobs
/// ran it materializes every running job and compares each with each workspace (measured: 380,000
/// comparisons, 65 ms of an 85 ms claim of 512 with 512 jobs running).
///
/// Workspace heads among the `$5` oldest queued workspace jobs (index `jobs_queued_keyed`): the
/// window is a prefix of the claim's order, so a workspace's first job in it is its first queued
/// job, its head (`DISTINCT ON`, no probe per job). One probe per workspace of the window ("is it
/// running a job?"), however many workspaces have queued jobs. A head outside a full window
/// ranks after the window's last job, so jobs without a workspace are taken only up to that rank
/// ([`CLAIM_FREE_WINDOW`]): every job this claim takes is then among the best, and the full
/// walk claims whatever ranks after.
const CLAIM_HEADS_WINDOW: &str = "win AS ( \
         SELECT ctid, seq, priority, workspace, run_after, node FROM jobs \
         WHERE state = 'queued' AND workspace IS NOT NULL \
         ORDER BY priority DESC, seq LIMIT $5), \
     firsts AS ( \
         SELECT DISTINCT ON (workspace) ctid, seq, priority, workspace, run_after, node FROM win \
         ORDER BY workspace, priority DESC, seq), \
     heads AS ( \
         SELECT w.ctid, w.seq, w.priority FROM firsts w \
         WHERE w.run_after <= $1 AND (w.node IS NULL OR w.node = $2) \
           AND NOT EXISTS (SELECT 1 FROM jobs r \
                           WHERE r.workspace = w.workspace AND r.state = 'running' \
                           OFFSET 0))";

/// Jobs without a workspace that rank before the last job of a full window.
const CLAIM_FREE_WINDOW: &str = "((SELECT count(*) FROM win) < $5 \
     OR EXISTS (SELECT 1 FROM (SELECT priority, seq FROM win \
                               ORDER BY priority, seq DESC LIMIT 1) b \
                WHERE f.priority > b.priority OR (f.priority = b.priority AND f.seq < b.seq)))";

/// Every workspace's head, found by a loose index scan over the workspaces with queued jobs, so
/// a long backlog in one workspace costs one probe, not a scan. Each step of the scan reads the
/// next workspace's head row itself (`jobs_queued_workspace` is ordered by workspace, then the
/// claim's order), its `run_after`, `node` and `ctid` included, so a workspace costs one probe
/// for its head and one for "is it running a job?". (`$5` is unused.)
const CLAIM_HEADS_ALL: &str = "RECURSIVE ws AS ( \
         (SELECT workspace, priority, seq, ctid, run_after, node FROM jobs \
          WHERE state = 'queued' AND workspace IS NOT NULL AND $5::bigint >= 0 \
          ORDER BY workspace, priority DESC, seq LIMIT 1) \
         UNION ALL \
         SELECT n.workspace, n.priority, n.seq, n.ctid, n.run_after, n.node FROM ws \
         CROSS JOIN LATERAL ( \
             SELECT j.workspace, j.priority, j.seq, j.ctid, j.run_after, j.node FROM jobs j \
             WHERE j.state = 'queued' AND j.workspace > ws.workspace \
             ORDER BY j.workspace, j.priority DESC, j.seq LIMIT 1) n), \
     heads AS ( \
         SELECT ws.ctid, ws.seq, ws.priority FROM ws \
         WHERE ws.run_after <= $1 AND (ws.node IS NULL OR ws.node = $2) \
           AND NOT EXISTS (SELECT 1 FROM jobs r \
                           WHERE r.workspace = ws.workspace AND r.state = 'running' \
                           OFFSET 0))";

/// The heads of the workspaces in `$5` (a text array), one probe each for the head and one for
/// "is it running a job?"; `{free}` is `FALSE` (no job without a workspace is a candidate).
const CLAIM_HEADS_OF: &str = "heads AS ( \
         SELECT h.ctid, h.seq, h.priority FROM unnest($5::text[]) AS w(workspace) \
         CROSS JOIN LATERAL ( \
             SELECT j.ctid, j.seq, j.priority, j.run_after, j.node FROM jobs j \
             WHERE j.state = 'queued' AND j.workspace = w.workspace \
             ORDER BY j.priority DESC, j.seq LIMIT 1) h \
         WHERE h.run_after <= $1 AND (h.node IS NULL OR h.node = $2) \
           AND NOT EXISTS (SELECT 1 FROM jobs r \
                           WHERE r.workspace = w.workspace AND r.state = 'running' \
                           OFFSET 0))";

/// Which workspace heads a claim statement considers.
#[derive(Clone, Copy)]
enum Heads<'a> {
    /// The heads among the oldest queued workspace jobs ([`CLAIM_HEADS_WINDOW`]).
    Window(i64),
    /// Every workspace's head ([`CLAIM_HEADS_ALL`]).
    All,
    /// These workspaces' heads only ([`CLAIM_HEADS_OF`]).
    Of(&'a [String]),
}

const INSERT_JOB: &str = "INSERT INTO jobs (id, tenant, workspace, tool, arguments, state, \
     priority, attempts, max_attempts, retry_safe, timeout_s, run_after, created_at, \
     idempotency_key, request_id, node, args_digest) VALUES ($1, $2, $3, $4, $5, 'queued', $6, 0, \
     $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// The job insert, returning the row unless the tenant already used the idempotency key.
const INSERT_JOB_IDEMPOTENT: &str = "INSERT INTO jobs (id, tenant, workspace, tool, arguments, \
     state, priority, attempts, max_attempts, retry_safe, timeout_s, run_after, created_at, \
     idempotency_key, request_id, node, args_digest) VALUES ($1, $2, $3, $4, $5, 'queued', $6, 0, \
     $7, $8, $9, $10, $11, $12, $13, $14, $15) \
     ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
     RETURNING *";

/// Whether a string or key anywhere in `value` holds U+0000.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn replace_nul(value: &mut Value) {
    match value {
        Value::String(s) => *s = s.replace('\0', "\u{fffd}"),
        Value::Array(items) => items.iter_mut().for_each(replace_nul),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (k, mut v) in entries {
                replace_nul(&mut v);
                map.insert(k.replace('\0', "\u{fffd}"), v);
            }
        }
        _ => {}
    }
}

/// `value` as `jsonb` can hold it. jsonb refuses U+0000 in strings ("unsupported Unicode escape
/// sequence"), which a command's output or a caller's text may contain; refusing it would make
/// the job's completion fail on every retry, so it is stored as U+FFFD instead.
fn jsonb_safe(mut value: Value) -> Value {
    if has_nul(&value) {
        replace_nul(&mut value);
    }
    value
}

fn bind_new_job<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    job: &NewJob,
    now: DateTime<Utc>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(job.id)
        .bind(job.tenant.clone())
        .bind(job.workspace.clone())
        .bind(job.tool.clone())
        .bind(jsonb_safe(job.arguments.clone()))
        .bind(job.priority)
        .bind(job.max_attempts)
        .bind(job.retry_safe)
        .bind(job.timeout_s)
        .bind(job.run_after)
        .bind(now)
        .bind(job.idempotency_key.clone())
        .bind(job.request_id.clone())
        .bind(job.node.clone())
        .bind(job.args_digest.clone())
}

async fn insert_audit(conn: &mut PgConnection, entry: &AuditEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, request_id, tenant, key_id, client_addr, action, workspace, \
         job_id, outcome, duration_ms, args_digest, args_summary) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(entry.at)
    .bind(&entry.request_id)
    .bind(&entry.tenant)
    .bind(&entry.key_id)
    .bind(&entry.client_addr)
    .bind(&entry.action)
    .bind(&entry.workspace)
    .bind(entry.job_id)
    .bind(&entry.outcome)
    .bind(entry.duration_ms)
    .bind(&entry.args_digest)
    .bind(entry.args_summary.clone().map(jsonb_safe))
    .execute(conn)
    .await?;
    Ok(())
}

async fn notify(conn: &mut PgConnection, channel: &str, payload: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

async fn rescue_jobs(
    conn: &mut PgConnection,
    jobs: Vec<Job>,
    now: DateTime<Utc>,
) -> Result<Vec<Rescued>> {
    let mut rescued = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (state, error) = super::rescue_target(&job);
        let finished_at = state.is_terminal().then_some(now);
        sqlx::query(
            "UPDATE jobs SET state = $1, run_after = $2, finished_at = $3, \
             error = COALESCE($4, error), lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $5 AND state = 'running'",
        )
        .bind(state.as_str())
        .bind(now)
        .bind(finished_at)
        .bind(error.map(Json))
        .bind(job.id)
        .execute(&mut *conn)
        .await?;
        notify(&mut *conn, CHANNEL_DONE, &job.id.to_string()).await?;
        rescued.push(Rescued {
            id: job.id,
            tool: job.tool,
            state,
        });
    }
    if !rescued.is_empty() {
        notify(&mut *conn, CHANNEL_JOBS, "").await?;
    }
    Ok(rescued)
}

/// One submission's rows, inside the caller's transaction (which holds the tenant and workspace
/// locks): the job (or, for a used idempotency key, the earlier job), the quota check, the
/// sandbox row and the audit row. An error leaves the transaction to be rolled back (whole, or
/// to the job's savepoint in a batch).
async fn enqueue_rows(
    conn: &mut PgConnection,
    job: NewJob,
    mut audit: AuditEntry,
    now: DateTime<Utc>,
) -> Result<Enqueued> {
    let inserted = bind_new_job(sqlx::query(INSERT_JOB_IDEMPOTENT), &job, now)
        .fetch_optional(&mut *conn)
        .await?;
    let (stored, created) = match inserted {
        Some(row) => (job_from_row(&row)?, true),
        None => {
            let row = sqlx::query("SELECT * FROM jobs WHERE tenant = $1 AND idempotency_key = $2")
                .bind(&job.tenant)
                .bind(&job.idempotency_key)
                .fetch_one(&mut *conn)
                .await?;
            let earlier = job_from_row(&row)?;
            super::check_replay(&job, &earlier, row.try_get("args_digest")?)?;
            (earlier, false)
        }
    };
    if created {
        // The followers come right after the job, in its workspace's order; the quota check
        // below counts them.
        for (follower, follower_audit) in &job.followers {
            bind_new_job(sqlx::query(INSERT_JOB_IDEMPOTENT), follower, now)
                .fetch_optional(&mut *conn)
                .await?;
            insert_audit(conn, follower_audit).await?;
        }
    }
    if let (true, Some(quota)) = (created, &job.quota) {
        check_quota(conn, &job, quota).await?;
    }
    if let (true, Some(sandbox)) = (created, &job.sandbox) {
        // An error rolls back the transaction (or the job's savepoint): no job without its
        // sandbox row.
        insert_sandbox_row(conn, sandbox, Some(stored.id)).await?;
    }
    if let (true, Some(template)) = (created, &job.template) {
        insert_template_row(conn, template).await?;
    }
    audit.job_id = Some(stored.id);
    if !created {
        audit.outcome = "replayed".into();
    }
    insert_audit(conn, &audit).await?;
    Ok(Enqueued {
        job: stored,
        created,
    })
}

/// Each submission in its own savepoint: a refusal undoes that job's rows alone and is its
/// outcome; an outage ends the batch. Returns the outcomes with the submissions' indices.
async fn enqueue_each(
    conn: &mut PgConnection,
    items: Vec<(usize, (NewJob, AuditEntry))>,
    now: DateTime<Utc>,
) -> Result<Vec<(usize, Result<Enqueued>)>> {
    let mut outcomes = Vec::with_capacity(items.len());
    for (n, (i, (job, audit))) in items.into_iter().enumerate() {
        // One round trip: release the previous job's savepoint and take this one's.
        let savepoint = if n == 0 {
            "SAVEPOINT batch_job"
        } else {
            "RELEASE batch_job; SAVEPOINT batch_job"
        };
        sqlx::raw_sql(savepoint).execute(&mut *conn).await?;
        match enqueue_rows(conn, job, audit, now).await {
            Ok(enqueued) => outcomes.push((i, Ok(enqueued))),
            // Undoes this job's rows only (its failed statement aborted just the
            // subtransaction); the savepoint stays and is released by the next job.
            Err(e) if e.is_per_job() => {
                sqlx::raw_sql("ROLLBACK TO batch_job")
                    .execute(&mut *conn)
                    .await?;
                outcomes.push((i, Err(e)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(outcomes)
}

/// The plain submissions' rows in one statement: the workspaces' advisory locks (`$1`, sorted,
/// taken before any row is written), the jobs (one insert over arrays, so one prepared
/// statement whatever the batch's size), the audit rows of the jobs it inserted, and one `jobs`
/// notice if it inserted any. Returns the inserted jobs' ids and `seq`s: the rest of each row
/// is what was bound ([`NewJob::inserted`]), and sending whole rows back cost both sides a
/// copy of every column.
macro_rules! insert_plain {
    ($on_conflict:literal) => {
        concat!(
            "WITH locks AS ( \
         SELECT count(pg_advisory_xact_lock(k)) AS n FROM ( \
             SELECT DISTINCT hashtextextended(w, 0) AS k FROM unnest($1::text[]) w \
             ORDER BY k OFFSET 0) l), \
     ins AS ( \
         INSERT INTO jobs (id, tenant, workspace, tool, arguments, state, priority, attempts, \
             max_attempts, retry_safe, timeout_s, run_after, created_at, idempotency_key, \
             request_id, node, args_digest) \
         SELECT j.id, j.tenant, j.workspace, j.tool, j.arguments, 'queued', j.priority, 0, \
             j.max_attempts, j.retry_safe, j.timeout_s, j.run_after, $2, j.idempotency_key, \
             j.request_id, j.node, j.args_digest \
         FROM locks, unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::jsonb[], \
             $8::int4[], $9::int4[], $10::bool[], $11::int8[], $12::timestamptz[], $13::text[], \
             $14::text[], $15::text[], $16::text[]) WITH ORDINALITY \
             AS j(id, tenant, workspace, tool, arguments, priority, max_attempts, retry_safe, \
                  timeout_s, run_after, idempotency_key, request_id, node, args_digest, ord) \
         WHERE locks.n >= 0 \
         ORDER BY j.ord \
         ",
            $on_conflict,
            "RETURNING id, seq), \
     audit AS ( \
         INSERT INTO audit_log (at, request_id, tenant, key_id, client_addr, action, workspace, \
             job_id, outcome, duration_ms, args_digest, args_summary) \
         SELECT a.at, a.request_id, a.tenant, a.key_id, a.client_addr, a.action, a.workspace, \
             a.job_id, a.outcome, a.duration_ms, a.args_digest, a.args_summary \
         FROM unnest($17::timestamptz[], $18::text[], $19::text[], $20::text[], $21::text[], \
             $22::text[], $23::text[], $24::uuid[], $25::text[], $26::int8[], $27::text[], \
             $28::jsonb[]) WITH ORDINALITY \
             AS a(at, request_id, tenant, key_id, client_addr, action, workspace, job_id, \
                  outcome, duration_ms, args_digest, args_summary, ord) \
         WHERE a.job_id IN (SELECT id FROM ins) \
         ORDER BY a.ord), \
     notice AS ( \
         SELECT count(pg_notify($29, '')) AS n FROM (SELECT 1 FROM ins LIMIT 1) s) \
     SELECT ins.id, ins.seq FROM ins, notice"
        )
    };
}
/// [`insert_plain!`] for a batch with idempotency keys: a job whose key is taken is not inserted.
const INSERT_PLAIN: &str = insert_plain!(
    "ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
);
/// [`INSERT_PLAIN`] for a batch without idempotency keys: no row can conflict, and leaving out
/// `ON CONFLICT` spares each row the speculative insertion (a pre-check of the unique index and
/// a `HEAP_CONFIRM` WAL record per job).
const INSERT_PLAIN_KEYLESS: &str = insert_plain!("");

/// Inserts audit rows, one multi-row statement.
async fn insert_audits(conn: &mut PgConnection, audits: &[AuditEntry]) -> Result<()> {
    let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "INSERT INTO audit_log (at, request_id, tenant, key_id, client_addr, action, \
         workspace, job_id, outcome, duration_ms, args_digest, args_summary) ",
    );
    insert.push_values(audits, |mut b, entry| {
        b.push_bind(entry.at)
            .push_bind(entry.request_id.clone())
            .push_bind(entry.tenant.clone())
            .push_bind(entry.key_id.clone())
            .push_bind(entry.client_addr.clone())
            .push_bind(entry.action.clone())
            .push_bind(entry.workspace.clone())
            .push_bind(entry.job_id)
            .push_bind(entry.outcome.clone())
            .push_bind(entry.duration_ms)
            .push_bind(entry.args_digest.clone())
            .push_bind(entry.args_summary.clone().map(jsonb_safe));
    });
    insert.build().execute(conn).await?;
    Ok(())
}

/// The plain submissions of a batch (no sandbox row, no quota; see `super::split_plain`):
/// [`INSERT_PLAIN`] writes the jobs, their audit rows and the notice in one statement, taking
/// the advisory locks of `lock_workspaces` first (empty when the caller's transaction holds
/// them). A job whose idempotency key is taken (by an earlier job, by one before it in this
/// insert, or by another node's transaction, which the unique index waits for) is not
/// inserted; it is then a replay of that job, or, with other arguments, refused
/// (`IdempotencyMismatch`) with no row of its own, so no savepoint is needed. Only a batch with
/// idempotency keys can have such jobs, and only those cost more statements (the earlier job,
/// the replays' audit rows). `conn` is a transaction, or, for a batch without idempotency keys,
/// a connection outside one: the statement then commits alone, before its answer arrives.
/// Outcomes in the order of `plain`.
async fn enqueue_plain(
    conn: &mut PgConnection,
    plain: &[(usize, (NewJob, AuditEntry))],
    lock_workspaces: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Enqueued>>> {
    let jobs = || plain.iter().map(|(_, (job, _))| job);
    let audits = || plain.iter().map(|(_, (job, audit))| (job, audit));
    let arguments: Vec<Value> = jobs().map(|j| jsonb_safe(j.arguments.clone())).collect();
    let statement = if jobs().any(|j| j.idempotency_key.is_some()) {
        INSERT_PLAIN
    } else {
        INSERT_PLAIN_KEYLESS
    };
    let rows = sqlx::query(statement)
        .bind(lock_workspaces)
        .bind(now)
        .bind(jobs().map(|j| j.id).collect::<Vec<_>>())
        .bind(jobs().map(|j| j.tenant.clone()).collect::<Vec<_>>())
        .bind(jobs().map(|j| j.workspace.clone()).collect::<Vec<_>>())
        .bind(jobs().map(|j| j.tool.clone()).collect::<Vec<_>>())
        .bind(&arguments)
        .bind(jobs().map(|j| j.priority).collect::<Vec<_>>())
        .bind(jobs().map(|j| j.max_attempts).collect::<Vec<_>>())
        .bind(jobs().map(|j| j.retry_safe).collect::<Vec<_>>())
        .bind(jobs().map(|j| j.timeout_s).collect::<Vec<_>>())
        .bind(jobs().map(|j| j.run_after).collect::<Vec<_>>())
        .bind(
            jobs()
                .map(|j| j.idempotency_key.clone())
                .collect::<Vec<_>>(),
        )
        .bind(jobs().map(|j| j.request_id.clone()).collect::<Vec<_>>())
        .bind(jobs().map(|j| j.node.clone()).collect::<Vec<_>>())
        .bind(jobs().map(|j| j.args_digest.clone()).collect::<Vec<_>>())
        .bind(audits().map(|(_, a)| a.at).collect::<Vec<_>>())
        .bind(
            audits()
                .map(|(_, a)| a.request_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(audits().map(|(_, a)| a.tenant.clone()).collect::<Vec<_>>())
        .bind(audits().map(|(_, a)| a.key_id.clone()).collect::<Vec<_>>())
        .bind(
            audits()
                .map(|(_, a)| a.client_addr.clone())
                .collect::<Vec<_>>(),
        )
        .bind(audits().map(|(_, a)| a.action.clone()).collect::<Vec<_>>())
        .bind(
            audits()
                .map(|(_, a)| a.workspace.clone())
                .collect::<Vec<_>>(),
        )
        // Each job's own audit row names it; it is written only if the job is inserted.
        .bind(audits().map(|(j, _)| j.id).collect::<Vec<_>>())
        .bind(audits().map(|(_, a)| a.outcome.clone()).collect::<Vec<_>>())
        .bind(audits().map(|(_, a)| a.duration_ms).collect::<Vec<_>>())
        .bind(
            audits()
                .map(|(_, a)| a.args_digest.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            audits()
                .map(|(_, a)| a.args_summary.clone().map(jsonb_safe))
                .collect::<Vec<_>>(),
        )
        .bind(CHANNEL_JOBS)
        .fetch_all(&mut *conn)
        .await?;
    let mut seqs = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        seqs.insert(row.try_get::<Uuid, _>("id")?, row.try_get::<i64, _>("seq")?);
    }
    let mut outcomes = Vec::with_capacity(plain.len());
    let mut replays = Vec::new();
    for ((_, (job, audit)), arguments) in plain.iter().zip(arguments) {
        let outcome = match seqs.get(&job.id) {
            // `jsonb` keeps what `arguments` hold (numbers at any precision, keys as a map):
            // the values bound are those stored.
            Some(&seq) => Ok(Enqueued {
                job: job.inserted(arguments, seq, now),
                created: true,
            }),
            None => {
                let row =
                    sqlx::query("SELECT * FROM jobs WHERE tenant = $1 AND idempotency_key = $2")
                        .bind(&job.tenant)
                        .bind(&job.idempotency_key)
                        .fetch_one(&mut *conn)
                        .await?;
                let earlier = job_from_row(&row)?;
                let outcome =
                    super::check_replay(job, &earlier, row.try_get("args_digest")?).map(|()| {
                        Enqueued {
                            job: earlier,
                            created: false,
                        }
                    });
                if let Ok(enqueued) = &outcome {
                    let mut audit = audit.clone();
                    audit.job_id = Some(enqueued.job.id);
                    audit.outcome = "replayed".into();
                    replays.push(audit);
                }
                outcome
            }
        };
        outcomes.push(outcome);
    }
    if !replays.is_empty() {
        insert_audits(conn, &replays).await?;
    }
    Ok(outcomes)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(super::PING_TIMEOUT, ping).await {
            Ok(result) => result.map(|_| ()).map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
        }
    }

    fn signals(&self) -> broadcast::Receiver<Signal> {
        let rx = self.signals.hub.subscribe();
        let (pool, hub) = (self.pool.clone(), self.signals.hub.clone());
        self.signals
            .feeder
            .start_once(move |stop| listen(pool, hub, stop));
        rx
    }

    async fn enqueue(&self, job: NewJob, audit: AuditEntry) -> Result<Enqueued> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        if job.quota.is_some() {
            // Serialises the quota checks of one tenant's enqueues (taken before the workspace
            // lock, always in this order, so the two locks cannot deadlock).
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))")
                .bind(format!("tenant-quota:{}", job.tenant))
                .execute(&mut *tx)
                .await?;
        }
        if let Some(workspace) = &job.workspace {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(workspace)
                .execute(&mut *tx)
                .await?;
        }
        let enqueued = enqueue_rows(&mut tx, job, audit, now).await?;
        if enqueued.created {
            notify(&mut tx, CHANNEL_JOBS, "").await?;
        }
        tx.commit().await?;
        Ok(enqueued)
    }

    async fn enqueue_batch(
        &self,
        batch: Vec<(NewJob, AuditEntry)>,
    ) -> Result<Vec<Result<Enqueued>>> {
        let now = Utc::now();
        // The batch's advisory locks, all up front and in one global order: tenant quota locks
        // before workspace locks (as a single enqueue takes them), each class sorted by lock
        // key, so batches and single enqueues on any node cannot deadlock. The workspace locks
        // keep "FIFO order is commit order" across nodes.
        let mut tenants: Vec<String> = batch
            .iter()
            .filter(|(job, _)| job.quota.is_some())
            .map(|(job, _)| format!("tenant-quota:{}", job.tenant))
            .collect();
        let mut workspaces: Vec<String> = batch
            .iter()
            .filter_map(|(job, _)| job.workspace.clone())
            .collect();
        tenants.sort();
        tenants.dedup();
        workspaces.sort();
        workspaces.dedup();
        let (plain, other) = super::split_plain(batch);
        // Whether the plain submissions' shared statement already failed once.
        let mut shared_failed = false;
        if other.is_empty() {
            // Only plain submissions (the common case): one statement takes the workspace locks
            // and writes every row. Without idempotency keys nothing else can follow, so it
            // runs outside an explicit transaction and commits alone: one round trip for the
            // batch, and its answer arrives only after the commit.
            let keyed = plain
                .iter()
                .any(|(_, (job, _))| job.idempotency_key.is_some());
            let attempt = if keyed {
                // Replays read the earlier job and write their audit rows after the insert,
                // in the same transaction.
                match self.pool.begin().await {
                    Ok(mut tx) => match enqueue_plain(&mut tx, &plain, &workspaces, now).await {
                        Ok(done) => tx.commit().await.map(|()| done).map_err(StoreError::from),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e.into()),
                }
            } else {
                match self.pool.acquire().await {
                    Ok(mut conn) => enqueue_plain(&mut conn, &plain, &workspaces, now).await,
                    Err(e) => Err(e.into()),
                }
            };
            match attempt {
                // `plain` is the whole batch, in its order.
                Ok(done) => return Ok(done),
                // Nothing of it was committed (a bad value in one job): each job gets its own
                // savepoint below.
                Err(e) if e.is_per_job() => {
                    tracing::debug!(error = %e, "a batch's shared insert failed; one savepoint per job");
                    shared_failed = true;
                }
                Err(e) => return Err(e),
            }
        }
        let mut tx = self.pool.begin().await?;
        if !tenants.is_empty() || !workspaces.is_empty() {
            sqlx::query(
                "SELECT pg_advisory_xact_lock(k) FROM ( \
                     SELECT class, k FROM ( \
                         SELECT DISTINCT 0 AS class, hashtextextended(t, 1) AS k \
                         FROM unnest($1::text[]) t \
                         UNION \
                         SELECT 1, hashtextextended(w, 0) FROM unnest($2::text[]) w) u \
                     ORDER BY class, k OFFSET 0) ordered",
            )
            .bind(&tenants)
            .bind(&workspaces)
            .fetch_all(&mut *tx)
            .await?;
        }
        let mut outcomes: Vec<Option<Result<Enqueued>>> = Vec::new();
        outcomes.resize_with(plain.len() + other.len(), || None);
        for (i, outcome) in enqueue_each(&mut tx, other, now).await? {
            outcomes[i] = Some(outcome);
        }
        if !plain.is_empty() && !shared_failed {
            sqlx::raw_sql("SAVEPOINT batch_plain")
                .execute(&mut *tx)
                .await?;
            // The locks are held already; the statement's own `jobs` notice covers its rows.
            match enqueue_plain(&mut tx, &plain, &[], now).await {
                Ok(done) => {
                    for ((i, _), outcome) in plain.iter().zip(done) {
                        outcomes[*i] = Some(outcome);
                    }
                }
                // A statement of the shared inserts failed (a bad value in one job): undo them
                // and give each of these jobs its own savepoint instead.
                Err(e) if e.is_per_job() => {
                    sqlx::raw_sql("ROLLBACK TO batch_plain")
                        .execute(&mut *tx)
                        .await?;
                    shared_failed = true;
                }
                Err(e) => return Err(e),
            }
        }
        if shared_failed {
            for (i, outcome) in enqueue_each(&mut tx, plain, now).await? {
                outcomes[i] = Some(outcome);
            }
        }
        let outcomes: Vec<Result<Enqueued>> = outcomes
            .into_iter()
            .map(|o| o.expect("every submission has an outcome"))
            .collect();
        if outcomes.iter().any(|o| matches!(o, Ok(e) if e.created)) {
            // Deduplicated with the shared statement's notice by PostgreSQL (same channel and
            // payload in one transaction).
            notify(&mut tx, CHANNEL_JOBS, "").await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<()> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        for job in &jobs {
            bind_new_job(sqlx::query(INSERT_JOB), job, now)
                .execute(&mut *tx)
                .await?;
        }
        notify(&mut tx, CHANNEL_JOBS, "").await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim(
        &self,
        node: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The window first: the heads of free workspaces among the oldest queued workspace
        // jobs. When it yields a full claim, those are exactly the best `limit` candidates (any
        // head outside the window ranks after every job in it); when it comes back short, the
        // full walk over every workspace claims the rest.
        // A large claim takes most workspaces' heads anyway, and there the walk is the cheaper
        // plan (measured: 512 of 1,000 workspaces took 40 ms by the walk, 60-70 ms by a window of
        // 1,088), so only small claims try the window.
        let mut rows = if limit <= WINDOW_CLAIM_MAX {
            let window = i64::from(limit) * 2 + 64;
            self.claim_with(node, limit, now, lease, Heads::Window(window))
                .await?
        } else {
            Vec::new()
        };
        if rows.len() < limit as usize {
            let rest = limit - rows.len() as u32;
            match self.claim_with(node, rest, now, lease, Heads::All).await {
                Ok(more) => rows.extend(more),
                // The window's jobs are committed as claimed: returning an error now would strand
                // them until their leases ran out, so they are returned and the walk waits for
                // the next claim.
                Err(e) if !rows.is_empty() => {
                    tracing::warn!(error = %e, "claim: the walk after the window failed");
                }
                Err(e) => return Err(e),
            }
        }
        claimed_jobs(&rows)
    }

    async fn claim_heads(
        &self,
        node: &str,
        workspaces: &[String],
        limit: u32,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<Job>> {
        if limit == 0 || workspaces.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .claim_with(node, limit, now, lease, Heads::Of(workspaces))
            .await?;
        claimed_jobs(&rows)
    }

    async fn heartbeat(
        &self,
        node: &str,
        ids: &[Uuid],
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1 \
             WHERE state = 'running' AND lease_owner = $2 AND id = ANY($3) \
             RETURNING id, cancel_requested",
        )
        .bind(super::lease_until(now, lease))
        .bind(node)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let mut cancelled = Vec::new();
        for row in rows {
            if row.try_get::<bool, _>("cancel_requested")? {
                cancelled.push(row.try_get("id")?);
            }
        }
        Ok(cancelled)
    }

    async fn complete(
        &self,
        node: &str,
        completions: &[Completion],
        now: DateTime<Utc>,
    ) -> Result<Vec<Written>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        // The batch as one array per column (binary uuids, states, outcomes, exit codes and
        // retry times): parsing it as one JSON document cost PostgreSQL 7 % of its instructions
        // per job. U+0000 becomes U+FFFD in outcomes, as everywhere in `jsonb`.
        let rows: Vec<_> = completions.iter().map(Completion::row).collect();
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let states: Vec<&str> = rows.iter().map(|r| r.state).collect();
        let results: Vec<Option<Value>> = rows
            .iter()
            .map(|r| r.result.map(|v| jsonb_safe(v.clone())))
            .collect();
        let errors: Vec<Option<Value>> = rows
            .iter()
            .map(|r| {
                r.error
                    .as_ref()
                    .map(|e| jsonb_safe(serde_json::to_value(e).expect("job errors serialize")))
            })
            .collect();
        let exit_codes: Vec<Option<i32>> = rows.iter().map(|r| r.exit_code).collect();
        let run_afters: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.run_after).collect();
        // One statement, so one round trip and one commit for the whole batch: the update, the
        // written jobs' ids in `done` notices of up to `DONE_IDS_PER_NOTICE` each, and one
        // `jobs` notice naming this node (a finished job may unblock the next job of its
        // workspace for another node; this node's dispatcher already knows). The notices go out
        // with the commit.
        let written = sqlx::query(
            "WITH written AS ( \
                 UPDATE jobs SET \
                     state = c.state, \
                     finished_at = CASE WHEN c.state = 'queued' THEN jobs.finished_at ELSE $7 END, \
                     result = CASE WHEN c.state = 'queued' THEN jobs.result ELSE c.result END, \
                     error = c.error, \
                     exit_code = CASE WHEN c.state = 'queued' THEN jobs.exit_code \
                                      ELSE c.exit_code END, \
                     run_after = COALESCE(c.run_after, jobs.run_after), \
                     cancel_requested = CASE WHEN c.state = 'queued' THEN FALSE \
                                             ELSE jobs.cancel_requested END, \
                     lease_owner = NULL, lease_expires_at = NULL \
                 FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[], $5::integer[], \
                             $6::timestamptz[]) \
                      AS c(id, state, result, error, exit_code, run_after) \
                 WHERE jobs.id = c.id AND jobs.state = 'running' AND jobs.lease_owner = $8 \
                 RETURNING jobs.id, jobs.state, jobs.run_after, jobs.finished_at, \
                     jobs.cancel_requested, jobs.result, jobs.error, jobs.exit_code), \
             done AS ( \
                 SELECT count(pg_notify($9, ids)) AS n FROM ( \
                     SELECT string_agg(id::text, ',') AS ids FROM ( \
                         SELECT id, (row_number() OVER () - 1) / $11 AS part FROM written) w \
                     GROUP BY part) d), \
             finished AS ( \
                 SELECT count(pg_notify($10, $8)) AS n FROM (SELECT 1 FROM written LIMIT 1) w) \
             SELECT written.* FROM written, done, finished",
        )
        .bind(ids)
        .bind(states)
        .bind(results)
        .bind(errors)
        .bind(exit_codes)
        .bind(run_afters)
        .bind(now)
        .bind(node)
        .bind(CHANNEL_DONE)
        .bind(CHANNEL_JOBS)
        .bind(DONE_IDS_PER_NOTICE)
        .fetch_all(&self.hot)
        .await?;
        written.iter().map(written_from_row).collect()
    }

    async fn cancel(
        &self,
        tenant: &str,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<CancelOutcome>> {
        self.cancel_with(Some(tenant), id, now, None).await
    }

    async fn cancel_audited(
        &self,
        tenant: Option<&str>,
        id: Uuid,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<Option<CancelOutcome>> {
        self.cancel_with(tenant, id, now, Some(audit)).await
    }

    async fn job(&self, tenant: Option<&str>, id: Uuid) -> Result<Option<Job>> {
        let row =
            sqlx::query("SELECT * FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)")
                .bind(id)
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let sql = list_jobs_sql(filter.tenant.is_some(), filter.state);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&filter.tenant)
            .bind(&filter.workspace)
            .bind(filter.state.map(JobState::as_str))
            .bind(&filter.tool)
            .bind(filter.before_seq)
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn has_open_job(&self, workspace: &str, tool: &str) -> Result<bool> {
        // Queued jobs from `jobs_queued_workspace`, the running one from the running index
        // (`jobs_workspace_state` holds finished jobs only).
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE workspace = $1 AND tool = $2 \
                            AND state = 'queued') \
                 OR EXISTS (SELECT 1 FROM jobs WHERE workspace = $1 AND tool = $2 \
                            AND state = 'running') AS open",
        )
        .bind(workspace)
        .bind(tool)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("open")?)
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<Rescued>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE state = 'running' AND lease_expires_at < $1 \
             FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        let rescued = rescue_jobs(&mut tx, jobs, now).await?;
        tx.commit().await?;
        Ok(rescued)
    }

    async fn recover_node(&self, node: &str, now: DateTime<Utc>) -> Result<Vec<Rescued>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE state = 'running' AND lease_owner = $1 FOR UPDATE",
        )
        .bind(node)
        .fetch_all(&mut *tx)
        .await?;
        let jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        let rescued = rescue_jobs(&mut tx, jobs, now).await?;
        tx.commit().await?;
        Ok(rescued)
    }

    async fn node_alive(&self, node: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (id, started_at, heartbeat_at) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE \
             SET heartbeat_at = GREATEST(nodes.heartbeat_at, EXCLUDED.heartbeat_at)",
        )
        .bind(node)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fail_jobs_of_gone_nodes(
        &self,
        gone_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Rescued>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT j.id, j.tool, j.node, n.heartbeat_at AS node_seen FROM jobs j \
             LEFT JOIN nodes n ON n.id = j.node \
             WHERE j.state = 'queued' AND j.node IS NOT NULL \
               AND (n.heartbeat_at IS NULL OR n.heartbeat_at < $1) \
             ORDER BY j.seq LIMIT $2 FOR UPDATE OF j SKIP LOCKED",
        )
        .bind(gone_before)
        .bind(super::NODE_GONE_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut failed = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.try_get("id")?;
            let node: String = row.try_get("node")?;
            let error = super::node_gone_error(&node, row.try_get("node_seen")?);
            sqlx::query(
                "UPDATE jobs SET state = 'failed', finished_at = $1, error = $2 \
                 WHERE id = $3 AND state = 'queued'",
            )
            .bind(now)
            .bind(Json(error))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            notify(&mut tx, CHANNEL_DONE, &id.to_string()).await?;
            failed.push(Rescued {
                id,
                tool: row.try_get("tool")?,
                state: JobState::Failed,
            });
        }
        tx.commit().await?;
        Ok(failed)
    }

    async fn job_counts(&self) -> Result<Vec<StateCount>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(StateCount {
                    state: JobState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("jobs.state: {state}")))?,
                    count: row.try_get("n")?,
                })
            })
            .collect()
    }

    async fn oldest_runnable(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let oldest: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT MIN(q.run_after) FROM jobs q WHERE q.state = 'queued' AND q.run_after <= $1 \
             AND (q.workspace IS NULL OR NOT EXISTS (SELECT 1 FROM jobs r \
                  WHERE r.workspace = q.workspace AND r.state = 'running'))",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(oldest)
    }

    async fn prune(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // Rows another node's retention pass holds are skipped, not waited for. Any `limit`
        // of the jobs past the cut-off go, in table order: the BRIN index on `finished_at`
        // finds the block ranges that hold them, and the sweep repeats until none is left.
        let ids: Vec<Uuid> = sqlx::query_scalar(PRUNE_CANDIDATES)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        sqlx::query("DELETE FROM job_output WHERE job_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM jobs WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    async fn append_output(&self, chunks: &[OutputChunk]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in chunks {
            sqlx::query(
                "INSERT INTO job_output (job_id, seq, stream, data, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(chunk.job_id)
            .bind(chunk.seq)
            .bind(chunk.stream.as_str())
            .bind(&chunk.data)
            .bind(chunk.at)
            .execute(&mut *tx)
            .await?;
        }
        // One notification per job and batch: followers on other nodes re-read the output.
        let mut jobs: Vec<Uuid> = chunks.iter().map(|c| c.job_id).collect();
        jobs.sort_unstable();
        jobs.dedup();
        sqlx::query("SELECT pg_notify($1, id::text) FROM unnest($2::uuid[]) AS id")
            .bind(CHANNEL_OUTPUT)
            .bind(&jobs)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn output(&self, job_id: Uuid, after_seq: i64) -> Result<Vec<OutputChunk>> {
        let rows = sqlx::query(
            "SELECT seq, stream, data, created_at FROM job_output \
             WHERE job_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(job_id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let stream: String = row.try_get("stream")?;
                Ok(OutputChunk {
                    job_id,
                    seq: row.try_get("seq")?,
                    stream: Stream::parse(&stream).ok_or_else(|| {
                        StoreError::Corrupt(format!("job_output.stream: {stream}"))
                    })?,
                    data: row.try_get("data")?,
                    at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn insert_sandbox(&self, s: &SandboxRecord) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        insert_sandbox_row(&mut conn, s, None).await
    }

    async fn sandbox(&self, tenant: &str, id_or_name: &str) -> Result<Option<SandboxRecord>> {
        let row = sqlx::query(
            "SELECT * FROM sandboxes WHERE tenant = $1 AND (id = $2 OR name = $2) \
             ORDER BY (id = $2) DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sandbox_from_row).transpose()
    }

    async fn list_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<SandboxRecord>> {
        let rows = sqlx::query("SELECT * FROM sandboxes WHERE tenant = $1 ORDER BY created_at, id")
            .bind(&filter.tenant)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = sandbox_from_row(row)?;
            if filter.matches(&record) {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn set_sandbox_status(&self, id: &str, status: &str) -> Result<()> {
        sqlx::query("UPDATE sandboxes SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_sandbox_handle(&self, id: &str, handle: &str) -> Result<()> {
        sqlx::query("UPDATE sandboxes SET driver_handle = $1 WHERE id = $2")
            .bind(handle)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn touch_sandbox(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE sandboxes SET last_accessed = GREATEST(last_accessed, $1) WHERE id = $2",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_sandbox(&self, id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM sandboxes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn template(&self, tenant: &str, name: &str) -> Result<Option<TemplateRecord>> {
        let row = sqlx::query("SELECT * FROM templates WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(template_from_row).transpose()
    }

    async fn list_templates(&self, tenant: &str) -> Result<Vec<TemplateRecord>> {
        let rows = sqlx::query("SELECT * FROM templates WHERE tenant = $1 ORDER BY name")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(template_from_row).collect()
    }

    async fn delete_template(&self, tenant: &str, name: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM templates WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn sandbox_counts(&self) -> Result<Vec<SandboxCount>> {
        let rows = sqlx::query(
            "SELECT driver, status, COUNT(*) AS n FROM sandboxes GROUP BY driver, status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SandboxCount {
                    driver: row.try_get("driver")?,
                    status: row.try_get("status")?,
                    count: row.try_get("n")?,
                })
            })
            .collect()
    }

    async fn insert_snapshot(
        &self,
        snapshot: &SnapshotRecord,
        quota: Option<&Quota>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some((limit, quota)) = quota.and_then(|q| q.max_disk_bytes.map(|l| (l, q))) {
            // The lock `enqueue` takes for the tenant's quota checks.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))")
                .bind(format!("tenant-quota:{}", snapshot.tenant))
                .execute(&mut *tx)
                .await?;
            let total = disk_total(&mut tx, &snapshot.tenant, quota).await?;
            if total.saturating_add(snapshot.size_bytes.max(0) as u64) > limit {
                return Err(StoreError::QuotaExceeded {
                    kind: QuotaKind::Disk,
                    limit,
                });
            }
        }
        let result = sqlx::query(
            "INSERT INTO snapshots (id, tenant, name, sandbox_id, sandbox_name, driver, node, \
             size_bytes, digest, entries, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&snapshot.id)
        .bind(&snapshot.tenant)
        .bind(&snapshot.name)
        .bind(&snapshot.sandbox_id)
        .bind(&snapshot.sandbox_name)
        .bind(&snapshot.driver)
        .bind(&snapshot.node)
        .bind(snapshot.size_bytes)
        .bind(&snapshot.digest)
        .bind(snapshot.entries)
        .bind(snapshot.created_at)
        .execute(&mut *tx)
        .await;
        super::conflict_on_unique(result, || format!("snapshot `{}`", snapshot.id))?;
        tx.commit().await?;
        Ok(())
    }

    async fn snapshot(&self, tenant: &str, id: &str) -> Result<Option<SnapshotRecord>> {
        let row = sqlx::query("SELECT * FROM snapshots WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    async fn list_snapshots(
        &self,
        tenant: &str,
        sandbox_id: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM snapshots WHERE tenant = $1 \
             AND ($2::TEXT IS NULL OR sandbox_id = $2) ORDER BY created_at, id",
        )
        .bind(tenant)
        .bind(sandbox_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    async fn delete_snapshot(&self, tenant: &str, id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM snapshots WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        insert_audit(&mut conn, entry).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log \
             WHERE ($1::text IS NULL OR tenant = $1) AND ($2::timestamptz IS NULL OR at >= $2) \
               AND ($3::timestamptz IS NULL OR at < $3) AND ($4::text IS NULL OR key_id = $4) \
               AND ($5::text IS NULL OR workspace = $5) AND ($6::text IS NULL OR action = $6) \
               AND ($7::bigint IS NULL OR id > $7) \
               AND ($9::text IS NULL OR right(workspace, length($9) + 1) = '/' || $9) \
               AND ($10::text IS NULL OR outcome = $10) \
             ORDER BY id LIMIT $8",
        )
        .bind(&filter.tenant)
        .bind(filter.since)
        .bind(filter.until)
        .bind(&filter.key_id)
        .bind(&filter.workspace)
        .bind(&filter.action)
        .bind(filter.after_id)
        .bind(i64::from(filter.limit))
        .bind(&filter.sandbox)
        .bind(&filter.outcome)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // Transaction-local (`true`): the trigger lets a DELETE through only for rows older
        // than this horizon, and only until this transaction ends.
        sqlx::query("SELECT set_config('daytona_mcp.audit_prune_before', $1, true)")
            .bind(before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "INSERT INTO api_keys (id, tenant, role, name, digest, created_at, expires_at, \
                 revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.id)
        .bind(&key.tenant)
        .bind(&key.role)
        .bind(&key.name)
        .bind(&key.digest)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(key.revoked_at)
        .execute(&mut *tx)
        .await;
        super::conflict_on_unique(result, || format!("API key `{}`", key.id))?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn revoke_api_key(
        &self,
        id: &str,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let revoked =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        if revoked {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }
    async fn running_jobs(&self, tenant: &str) -> Result<u64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE tenant = $1 AND state = 'running'")
                .bind(tenant)
                .fetch_one(&self.pool)
                .await?;
        Ok(n as u64)
    }

    async fn unclaim(
        &self,
        node: &str,
        ids: &[Uuid],
        run_after: DateTime<Utc>,
    ) -> Result<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = attempts - 1, started_at = NULL, \
                 lease_owner = NULL, lease_expires_at = NULL, run_after = $1 \
             WHERE state = 'running' AND lease_owner = $2 AND id = ANY($3) \
             RETURNING id",
        )
        .bind(run_after)
        .bind(node)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }
}

/// The tenant's disk total for `quotas.max_disk`: its sandboxes' disk quotas plus the sizes of
/// its snapshots.
async fn disk_total(conn: &mut PgConnection, tenant: &str, quota: &Quota) -> Result<u64> {
    let rows: Vec<(Json<Value>,)> =
        sqlx::query_as("SELECT resources FROM sandboxes WHERE tenant = $1")
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
    let mut total: u64 = 0;
    for (Json(resources),) in rows {
        total = total.saturating_add(quota.disk_bytes_of(&resources));
    }
    let (snapshots,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(SUM(size_bytes), 0)::BIGINT FROM snapshots WHERE tenant = $1",
    )
    .bind(tenant)
    .fetch_one(&mut *conn)
    .await?;
    Ok(total.saturating_add(snapshots.max(0) as u64))
}

fn snapshot_from_row(row: &PgRow) -> Result<SnapshotRecord> {
    Ok(SnapshotRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        sandbox_id: row.try_get("sandbox_id")?,
        sandbox_name: row.try_get("sandbox_name")?,
        driver: row.try_get("driver")?,
        node: row.try_get("node")?,
        size_bytes: row.try_get("size_bytes")?,
        digest: row.try_get("digest")?,
        entries: row.try_get("entries")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Refuses an enqueue beyond the tenant's quota (under the tenant's advisory lock); runs after
/// the job's insert and before its sandbox's, so the new job is counted and the new sandbox is
/// not.
async fn check_quota(conn: &mut PgConnection, job: &NewJob, quota: &Quota) -> Result<()> {
    if let (Some(limit), Some(_)) = (quota.max_sandboxes, &job.sandbox) {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sandboxes WHERE tenant = $1")
            .bind(&job.tenant)
            .fetch_one(&mut *conn)
            .await?;
        if n as u64 >= limit {
            return Err(StoreError::QuotaExceeded {
                kind: QuotaKind::Sandboxes,
                limit,
            });
        }
    }
    if let (Some(limit), Some(sandbox)) = (quota.max_disk_bytes, &job.sandbox) {
        let total = disk_total(conn, &job.tenant, quota)
            .await?
            .saturating_add(quota.disk_bytes_of(&sandbox.resources));
        if total > limit {
            return Err(StoreError::QuotaExceeded {
                kind: QuotaKind::Disk,
                limit,
            });
        }
    }
    if let Some(limit) = quota.max_active_jobs {
        let (n,): (i64,) = sqlx::query_as(
            // Two small partial indexes: the tenant's queued jobs, and the running jobs.
            "SELECT (SELECT COUNT(*) FROM jobs WHERE tenant = $1 AND state = 'queued') \
                  + (SELECT COUNT(*) FROM jobs WHERE tenant = $1 AND state = 'running')",
        )
        .bind(&job.tenant)
        .fetch_one(&mut *conn)
        .await?;
        if n as u64 > limit {
            return Err(StoreError::QuotaExceeded {
                kind: QuotaKind::ActiveJobs,
                limit,
            });
        }
    }
    Ok(())
}

fn api_key_from_row(row: &PgRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        role: row.try_get("role")?,
        name: row.try_get("name")?,
        digest: row.try_get("digest")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `done` notice names one job or many; every well-formed id is a signal of its own.
    #[test]
    fn a_done_notice_carries_every_job_it_names() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            signals_of(CHANNEL_DONE, &a.to_string()),
            vec![Signal::JobChanged(a)]
        );
        assert_eq!(
            signals_of(CHANNEL_DONE, &format!("{a},not-an-id,{b}")),
            vec![Signal::JobChanged(a), Signal::JobChanged(b)]
        );
        assert_eq!(signals_of(CHANNEL_DONE, ""), vec![]);
        assert_eq!(
            signals_of(CHANNEL_JOBS, "n1"),
            vec![Signal::JobsFinished { node: "n1".into() }]
        );
        assert_eq!(signals_of(CHANNEL_JOBS, ""), vec![Signal::JobsReady]);
        assert_eq!(signals_of("elsewhere", &a.to_string()), vec![]);
    }

    /// Every listing's parts are read from indexes, and retention's candidates from
    /// `jobs_finished`: each names its states as a partial index does, or the planner cannot
    /// use the index and reads the whole table. Checked on the migrated schema with sequential
    /// scans disabled (then one appears in a plan only when no index serves the part), for each
    /// scope, state filter, workspace filter and cursor.
    #[tokio::test]
    async fn every_listing_reads_its_parts_from_indexes() {
        use sqlx::Connection;
        let Ok(admin) = std::env::var("DAYTONA_MCP_TEST_POSTGRES") else {
            assert_ne!(
                std::env::var("DAYTONA_MCP_REQUIRE_POSTGRES").as_deref(),
                Ok("1"),
                "PostgreSQL tests are required but DAYTONA_MCP_TEST_POSTGRES is not set"
            );
            return;
        };
        let admin: PgConnectOptions = admin.parse().unwrap();
        let name = format!("dmcp_test_{}", Uuid::new_v4().simple());
        let mut server = PgConnection::connect_with(&admin).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut server)
            .await
            .unwrap();
        let mut conn = PgConnection::connect_with(&admin.clone().database(&name))
            .await
            .unwrap();
        MIGRATOR.run(&mut conn).await.unwrap();
        sqlx::raw_sql("SET enable_seqscan = off")
            .execute(&mut conn)
            .await
            .unwrap();
        let mut scanned = Vec::new();
        let states = [
            None,
            Some(JobState::Queued),
            Some(JobState::Running),
            Some(JobState::Succeeded),
            Some(JobState::Cancelled),
        ];
        for (one_tenant, state) in [true, false]
            .into_iter()
            .flat_map(|one| states.map(move |state| (one, state)))
        {
            let sql = list_jobs_sql(one_tenant, state);
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "PREPARE listing (text, text, text, text, bigint, bigint) AS {sql}"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            let tenant = if one_tenant { "'t1'" } else { "NULL" };
            let state_arg = state.map_or("NULL".to_string(), |s| format!("'{}'", s.as_str()));
            for (workspace, before) in [("NULL", "NULL"), ("'t1/w'", "NULL"), ("NULL", "100")] {
                let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "EXPLAIN EXECUTE listing ({tenant}, {workspace}, {state_arg}, NULL, \
                     {before}, 50)"
                )))
                .fetch_all(&mut conn)
                .await
                .unwrap();
                let plan = plan.join("\n");
                if plan.contains("Seq Scan") {
                    scanned.push(format!(
                        "one tenant {one_tenant}, state {state:?}, workspace {workspace}, \
                         before {before}:\n{plan}"
                    ));
                }
            }
            sqlx::raw_sql("DEALLOCATE listing")
                .execute(&mut conn)
                .await
                .unwrap();
        }
        // Retention's candidates, from the partial BRIN index.
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN {}",
            PRUNE_CANDIDATES.replace("$1", "now()").replace("$2", "100")
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let plan = plan.join("\n");
        if !plan.contains("jobs_finished") {
            scanned.push(format!("retention:\n{plan}"));
        }
        conn.close().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
            .execute(&mut server)
            .await
            .unwrap();
        assert!(scanned.is_empty(), "{}", scanned.join("\n\n"));
    }
}
