//! SQLite backend: the embedded default.
//!
//! One writer connection (SQLite allows one writer at a time; queuing writers in the pool is
//! cheaper than retrying `SQLITE_BUSY`) and a pool of readers, in WAL mode. Timestamps are stored
//! as microseconds since the epoch.

use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::signals::{SharedSignals, Signal};
use super::wal_checkpoint::{Checkpointer, WRITER_BACKSTOP_PAGES};

use super::{
    ApiKeyRecord, AuditEntry, AuditFilter, AuditRecord, Backend, CancelOutcome, Completion,
    Enqueued, Job, JobFilter, JobState, NewJob, OutputChunk, Quota, QuotaKind, Rescued, Result,
    SandboxCount, SandboxFilter, SandboxRecord, Secret, SnapshotRecord, StateCount, Store,
    StoreError, Stream, TemplateRecord, Written,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The only connection that writes; serialises writers inside this process.
    writer: SqlitePool,
    /// Connections for reads, which WAL lets run beside the writer.
    reader: SqlitePool,
    /// The wake-up stream: one node per database, so signals stay in process.
    signals: SharedSignals,
    /// Copies the log into the database file beside the writer (none for an in-memory or
    /// temporary database, which has no log file).
    _checkpointer: Option<Arc<Checkpointer>>,
}

/// Whether `db` names a database file (not an in-memory or temporary database, which have no
/// files to protect and no log to checkpoint).
fn is_file(db: &std::path::Path) -> bool {
    !db.as_os_str().is_empty() && db != std::path::Path::new(":memory:")
}

/// Creates the database file with mode 0600 if it is missing (SQLite gives its `-wal` and
/// `-shm` files the database's mode), and takes group and other access away from existing ones.
fn private_files(db: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !is_file(db) {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = std::path::Path::new(&name);
        match std::fs::metadata(path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
            _ => {}
        }
    }
    Ok(())
}

impl SqliteStore {
    /// A cancel of a job of `tenant` (any tenant when `None`), with `audit` inserted in the
    /// same transaction when the job exists.
    async fn cancel_with(
        &self,
        tenant: Option<&str>,
        id: Uuid,
        now: DateTime<Utc>,
        audit: Option<AuditEntry>,
    ) -> Result<Option<CancelOutcome>> {
        let mut tx = self.begin().await?;
        let Some(row) =
            sqlx::query("SELECT * FROM jobs WHERE id = ? AND (? IS NULL OR tenant = ?)")
                .bind(id.to_string())
                .bind(tenant)
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
                    "UPDATE jobs SET state = 'cancelled', finished_at = ?, error = ? \
                     WHERE id = ? RETURNING *",
                )
                .bind(ts(now))
                .bind(json_text(&super::cancelled_error()))
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await?;
                CancelOutcome::Cancelled(job_from_row(&row)?)
            }
            JobState::Running => {
                let row =
                    sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = ? RETURNING *")
                        .bind(id.to_string())
                        .fetch_one(&mut *tx)
                        .await?;
                CancelOutcome::Requested(job_from_row(&row)?)
            }
            _ => CancelOutcome::AlreadyFinished(job),
        };
        if let Some(audit) = audit {
            insert_audit(&mut tx, &super::cancel_audit_entry(audit, &outcome)).await?;
        }
        tx.commit().await?;
        match &outcome {
            CancelOutcome::Cancelled(_) => {
                self.signals.hub.send(Signal::JobChanged(id));
                self.signals.hub.send(Signal::JobsReady);
            }
            CancelOutcome::Requested(_) => {
                self.signals.hub.send(Signal::JobChanged(id));
                self.signals.hub.send(Signal::CancelRequested(id));
            }
            CancelOutcome::AlreadyFinished(_) => {}
        }
        Ok(Some(outcome))
    }

    /// Opens (creating if needed) the database file named by `url`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                        e.kind(),
                        format!("cannot create {}: {e}", parent.display()),
                    )))
                })?;
            }
        }
        private_files(options.get_filename()).map_err(|e| {
            StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "cannot make {} private: {e}",
                    options.get_filename().display()
                ),
            )))
        })?;
        let on_disk = is_file(options.get_filename());
        // The writer leaves checkpoints to the background task but for a backstop.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", WRITER_BACKSTOP_PAGES),
            )
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options.clone().read_only(true))
            .await?;
        Ok(SqliteStore {
            writer,
            reader,
            signals: SharedSignals::default(),
            _checkpointer: on_disk.then(|| Arc::new(Checkpointer::start(options))),
        })
    }

    /// Signals the jobs a rescue resolved, and that their workspaces may run again.
    fn signal_rescued(&self, rescued: &[Rescued]) {
        for r in rescued {
            self.signals.hub.send(Signal::JobChanged(r.id));
        }
        if !rescued.is_empty() {
            self.signals.hub.send(Signal::JobsReady);
        }
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        // IMMEDIATE takes the write lock up front, so a second process (`daytona-mcp migrate`,
        // a CLI command) waits on busy_timeout instead of failing on lock upgrade.
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

fn ts(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_ts(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serializing plain data cannot fail")
}

fn parse_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// The job id in a row's `id` column (SQLite keeps it as text).
fn job_id_of(row: &SqliteRow) -> Result<Uuid> {
    let id: String = row.try_get("id")?;
    Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("jobs.id: {e}")))
}

fn written_from_row(row: &SqliteRow) -> Result<Written> {
    let state: String = row.try_get("state")?;
    Ok(Written {
        id: job_id_of(row)?,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("jobs.state: {state}")))?,
        run_after: from_ts(row.try_get("run_after")?),
        finished_at: row.try_get::<Option<i64>, _>("finished_at")?.map(from_ts),
        cancel_requested: row.try_get("cancel_requested")?,
        result: row
            .try_get::<Option<String>, _>("result")?
            .map(|t| parse_json("jobs.result", &t))
            .transpose()?,
        error: row
            .try_get::<Option<String>, _>("error")?
            .map(|t| parse_json("jobs.error", &t))
            .transpose()?,
        exit_code: row.try_get("exit_code")?,
    })
}

fn job_from_row(row: &SqliteRow) -> Result<Job> {
    // The columns a completion writes are decoded in one place, `written_from_row`.
    let written = written_from_row(row)?;
    Ok(Job {
        id: written.id,
        seq: row.try_get("seq")?,
        tenant: row.try_get("tenant")?,
        workspace: row.try_get("workspace")?,
        tool: row.try_get("tool")?,
        arguments: parse_json("jobs.arguments", &row.try_get::<String, _>("arguments")?)?,
        state: written.state,
        priority: row.try_get("priority")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        retry_safe: row.try_get("retry_safe")?,
        timeout_s: row.try_get("timeout_s")?,
        run_after: written.run_after,
        created_at: from_ts(row.try_get("created_at")?),
        started_at: row.try_get::<Option<i64>, _>("started_at")?.map(from_ts),
        finished_at: written.finished_at,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row
            .try_get::<Option<i64>, _>("lease_expires_at")?
            .map(from_ts),
        cancel_requested: written.cancel_requested,
        idempotency_key: row.try_get("idempotency_key")?,
        result: written.result,
        error: written.error,
        exit_code: written.exit_code,
        request_id: row.try_get("request_id")?,
        node: row.try_get("node")?,
    })
}

fn sandbox_from_row(row: &SqliteRow) -> Result<SandboxRecord> {
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
        environment_vars: parse_json(
            "sandboxes.environment_vars",
            &row.try_get::<String, _>("environment_vars")?,
        )?,
        labels: parse_json("sandboxes.labels", &row.try_get::<String, _>("labels")?)?,
        resources: parse_json(
            "sandboxes.resources",
            &row.try_get::<String, _>("resources")?,
        )?,
        persistent: row.try_get("persistent")?,
        auto_stop_minutes: row.try_get("auto_stop_minutes")?,
        created_at: from_ts(row.try_get("created_at")?),
        last_accessed: from_ts(row.try_get("last_accessed")?),
        network: row.try_get("network")?,
        git_token: row
            .try_get::<Option<String>, _>("git_token")?
            .map(Secret::new),
        creating_job: row
            .try_get::<Option<String>, _>("creating_job")?
            .map(|s| Uuid::parse_str(&s))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("sandboxes.creating_job: {e}")))?,
        handle: row.try_get("driver_handle")?,
        node: row.try_get("node")?,
    })
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        entry: AuditEntry {
            at: from_ts(row.try_get("at")?),
            request_id: row.try_get("request_id")?,
            tenant: row.try_get("tenant")?,
            key_id: row.try_get("key_id")?,
            client_addr: row.try_get("client_addr")?,
            action: row.try_get("action")?,
            workspace: row.try_get("workspace")?,
            job_id: row
                .try_get::<Option<String>, _>("job_id")?
                .map(|s| Uuid::parse_str(&s))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("audit_log.job_id: {e}")))?,
            outcome: row.try_get("outcome")?,
            duration_ms: row.try_get("duration_ms")?,
            args_digest: row.try_get("args_digest")?,
            args_summary: row
                .try_get::<Option<String>, _>("args_summary")?
                .map(|t| parse_json("audit_log.args_summary", &t))
                .transpose()?,
        },
    })
}

fn ids_json(ids: &[Uuid]) -> String {
    json_text(&ids.iter().map(|id| id.to_string()).collect::<Vec<_>>())
}

const INSERT_JOB: &str = "INSERT INTO jobs (id, tenant, workspace, tool, arguments, state, priority, \
     attempts, max_attempts, retry_safe, timeout_s, run_after, created_at, idempotency_key, \
     request_id, node, args_digest) VALUES (?, ?, ?, ?, ?, 'queued', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// The job insert, returning the row unless the tenant already used the idempotency key.
const INSERT_JOB_IDEMPOTENT: &str = "INSERT INTO jobs (id, tenant, workspace, tool, arguments, \
     state, priority, attempts, max_attempts, retry_safe, timeout_s, run_after, created_at, \
     idempotency_key, request_id, node, args_digest) \
     VALUES (?, ?, ?, ?, ?, 'queued', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, idempotency_key) DO NOTHING RETURNING *";

fn bind_new_job<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    job: &NewJob,
    now: DateTime<Utc>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    query
        .bind(job.id.to_string())
        .bind(job.tenant.clone())
        .bind(job.workspace.clone())
        .bind(job.tool.clone())
        .bind(json_text(&job.arguments))
        .bind(job.priority)
        .bind(job.max_attempts)
        .bind(job.retry_safe)
        .bind(job.timeout_s)
        .bind(ts(job.run_after))
        .bind(ts(now))
        .bind(job.idempotency_key.clone())
        .bind(job.request_id.clone())
        .bind(job.node.clone())
        .bind(job.args_digest.clone())
}

async fn insert_audit(conn: &mut SqliteConnection, entry: &AuditEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, request_id, tenant, key_id, client_addr, action, workspace, \
         job_id, outcome, duration_ms, args_digest, args_summary) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(ts(entry.at))
    .bind(&entry.request_id)
    .bind(&entry.tenant)
    .bind(&entry.key_id)
    .bind(&entry.client_addr)
    .bind(&entry.action)
    .bind(&entry.workspace)
    .bind(entry.job_id.map(|id| id.to_string()))
    .bind(&entry.outcome)
    .bind(entry.duration_ms)
    .bind(&entry.args_digest)
    .bind(entry.args_summary.as_ref().map(json_text))
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts a sandbox row, reserved by `creating_job` if given.
async fn insert_sandbox_row(
    conn: &mut SqliteConnection,
    s: &SandboxRecord,
    creating_job: Option<Uuid>,
) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO sandboxes (id, tenant, name, driver, language, status, image, git_repo, \
         git_branch, environment_vars, labels, resources, persistent, auto_stop_minutes, \
         created_at, last_accessed, network, git_token, creating_job, driver_handle, node) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .bind(json_text(&s.environment_vars))
    .bind(json_text(&s.labels))
    .bind(json_text(&s.resources))
    .bind(s.persistent)
    .bind(s.auto_stop_minutes)
    .bind(ts(s.created_at))
    .bind(ts(s.last_accessed))
    .bind(s.network)
    .bind(s.git_token.as_ref().map(Secret::expose))
    .bind(creating_job.map(|id| id.to_string()))
    .bind(&s.handle)
    .bind(&s.node)
    .execute(conn)
    .await;
    super::conflict_on_unique(result, || format!("sandbox named `{}`", s.name)).map(|_| ())
}

/// Inserts a template row; [`StoreError::Conflict`] when the tenant has the name.
async fn insert_template_row(conn: &mut SqliteConnection, t: &TemplateRecord) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO templates (tenant, name, fields, environment_vars, created_at) \
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&t.tenant)
    .bind(&t.name)
    .bind(json_text(&t.fields))
    .bind(json_text(&t.environment_vars))
    .bind(ts(t.created_at))
    .execute(conn)
    .await;
    super::conflict_on_unique(result, || format!("template named `{}`", t.name)).map(|_| ())
}

fn template_from_row(row: &SqliteRow) -> Result<TemplateRecord> {
    Ok(TemplateRecord {
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        fields: parse_json("fields", row.try_get("fields")?)?,
        environment_vars: parse_json("environment_vars", row.try_get("environment_vars")?)?,
        created_at: from_ts(row.try_get("created_at")?),
    })
}

/// The tenant's disk total for `quotas.max_disk`: its sandboxes' disk quotas plus the sizes of
/// its snapshots.
async fn disk_total(conn: &mut SqliteConnection, tenant: &str, quota: &Quota) -> Result<u64> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT resources FROM sandboxes WHERE tenant = ?")
        .bind(tenant)
        .fetch_all(&mut *conn)
        .await?;
    let mut total: u64 = 0;
    for (resources,) in rows {
        let resources = serde_json::from_str(&resources).unwrap_or(serde_json::Value::Null);
        total = total.saturating_add(quota.disk_bytes_of(&resources));
    }
    let (snapshots,): (i64,) =
        sqlx::query_as("SELECT COALESCE(SUM(size_bytes), 0) FROM snapshots WHERE tenant = ?")
            .bind(tenant)
            .fetch_one(&mut *conn)
            .await?;
    Ok(total.saturating_add(snapshots.max(0) as u64))
}

fn snapshot_from_row(row: &SqliteRow) -> Result<SnapshotRecord> {
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
        created_at: from_ts(row.try_get("created_at")?),
    })
}

/// Refuses an enqueue beyond the tenant's quota; runs after the job's insert and before its
/// sandbox's, so the new job is counted and the new sandbox is not.
async fn check_quota(conn: &mut SqliteConnection, job: &NewJob, quota: &Quota) -> Result<()> {
    if let (Some(limit), Some(_)) = (quota.max_sandboxes, &job.sandbox) {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sandboxes WHERE tenant = ?")
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
            "SELECT COUNT(*) FROM jobs WHERE tenant = ? AND state IN ('queued', 'running')",
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

/// Applies the rescue rule to each running job in `jobs`.
async fn rescue_jobs(
    conn: &mut SqliteConnection,
    jobs: Vec<Job>,
    now: DateTime<Utc>,
) -> Result<Vec<Rescued>> {
    let mut rescued = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (state, error) = super::rescue_target(&job);
        let finished_at = state.is_terminal().then_some(ts(now));
        sqlx::query(
            "UPDATE jobs SET state = ?, run_after = ?, finished_at = ?, \
             error = COALESCE(?, error), lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = ? AND state = 'running'",
        )
        .bind(state.as_str())
        .bind(ts(now))
        .bind(finished_at)
        .bind(error.as_ref().map(json_text))
        .bind(job.id.to_string())
        .execute(&mut *conn)
        .await?;
        rescued.push(Rescued {
            id: job.id,
            tool: job.tool,
            state,
        });
    }
    Ok(rescued)
}

/// One submission's rows, inside the caller's transaction: the job (or, for a used idempotency
/// key, the earlier job), the quota check, the sandbox row and the audit row. An error leaves
/// the transaction to be rolled back (whole, or to the job's savepoint in a batch).
async fn enqueue_rows(
    conn: &mut SqliteConnection,
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
            let row = sqlx::query("SELECT * FROM jobs WHERE tenant = ? AND idempotency_key = ?")
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
        // BEGIN IMMEDIATE holds the write lock: no other enqueue counts meanwhile.
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
    conn: &mut SqliteConnection,
    items: Vec<(usize, (NewJob, AuditEntry))>,
    now: DateTime<Utc>,
) -> Result<Vec<(usize, Result<Enqueued>)>> {
    let mut outcomes = Vec::with_capacity(items.len());
    for (i, (job, audit)) in items {
        sqlx::raw_sql("SAVEPOINT batch_job")
            .execute(&mut *conn)
            .await?;
        match enqueue_rows(conn, job, audit, now).await {
            Ok(enqueued) => {
                sqlx::raw_sql("RELEASE batch_job")
                    .execute(&mut *conn)
                    .await?;
                outcomes.push((i, Ok(enqueued)));
            }
            Err(e) if e.is_per_job() => {
                sqlx::raw_sql("ROLLBACK TO batch_job; RELEASE batch_job")
                    .execute(&mut *conn)
                    .await?;
                outcomes.push((i, Err(e)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(outcomes)
}

/// The plain submissions of a batch (no sandbox row, no quota; see `super::split_plain`) in
/// one multi-row job insert and one multi-row audit insert. A job whose idempotency key is taken
/// (by an earlier job, or by one before it in this insert) is not inserted; it is then a replay
/// of that job, or, with other arguments, refused (`IdempotencyMismatch`) with no row of its
/// own, so no savepoint is needed. Outcomes in the order of `plain`.
async fn enqueue_plain(
    conn: &mut SqliteConnection,
    plain: &[(usize, (NewJob, AuditEntry))],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Enqueued>>> {
    let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO jobs (id, tenant, workspace, tool, arguments, state, priority, attempts, \
         max_attempts, retry_safe, timeout_s, run_after, created_at, idempotency_key, \
         request_id, node, args_digest) ",
    );
    insert.push_values(plain, |mut b, (_, (job, _))| {
        b.push_bind(job.id.to_string())
            .push_bind(job.tenant.clone())
            .push_bind(job.workspace.clone())
            .push_bind(job.tool.clone())
            .push_bind(json_text(&job.arguments))
            .push("'queued'")
            .push_bind(job.priority)
            .push("0")
            .push_bind(job.max_attempts)
            .push_bind(job.retry_safe)
            .push_bind(job.timeout_s)
            .push_bind(ts(job.run_after))
            .push_bind(ts(now))
            .push_bind(job.idempotency_key.clone())
            .push_bind(job.request_id.clone())
            .push_bind(job.node.clone())
            .push_bind(job.args_digest.clone());
    });
    // Only what the database chose comes back (which jobs it inserted, their `seq`); the rest
    // of each row is what was bound, so the job is built from the submission. Returning and
    // decoding whole rows cost the single SQLite worker a copy of every column of every job
    // (measured: batched submissions 15-19k/s with `RETURNING *`, 17-27k/s without).
    insert.push(" ON CONFLICT (tenant, idempotency_key) DO NOTHING RETURNING id, seq");
    let rows = insert.build().fetch_all(&mut *conn).await?;
    let mut seqs = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        seqs.insert(job_id_of(row)?, row.try_get::<i64, _>("seq")?);
    }
    let mut outcomes = Vec::with_capacity(plain.len());
    let mut audits = Vec::with_capacity(plain.len());
    for (_, (job, audit)) in plain {
        let outcome = match seqs.get(&job.id) {
            // The arguments as their JSON text parses: the same value (serde_json writes what
            // it reads back, floats included with `float_roundtrip`).
            Some(&seq) => Ok(Enqueued {
                job: job.inserted(job.arguments.clone(), seq, now),
                created: true,
            }),
            None => {
                let row =
                    sqlx::query("SELECT * FROM jobs WHERE tenant = ? AND idempotency_key = ?")
                        .bind(&job.tenant)
                        .bind(&job.idempotency_key)
                        .fetch_one(&mut *conn)
                        .await?;
                let earlier = job_from_row(&row)?;
                super::check_replay(job, &earlier, row.try_get("args_digest")?).map(|()| Enqueued {
                    job: earlier,
                    created: false,
                })
            }
        };
        if let Ok(enqueued) = &outcome {
            let mut audit = audit.clone();
            audit.job_id = Some(enqueued.job.id);
            if !enqueued.created {
                audit.outcome = "replayed".into();
            }
            audits.push(audit);
        }
        outcomes.push(outcome);
    }
    if !audits.is_empty() {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO audit_log (at, request_id, tenant, key_id, client_addr, action, \
             workspace, job_id, outcome, duration_ms, args_digest, args_summary) ",
        );
        insert.push_values(&audits, |mut b, entry| {
            b.push_bind(ts(entry.at))
                .push_bind(entry.request_id.clone())
                .push_bind(entry.tenant.clone())
                .push_bind(entry.key_id.clone())
                .push_bind(entry.client_addr.clone())
                .push_bind(entry.action.clone())
                .push_bind(entry.workspace.clone())
                .push_bind(entry.job_id.map(|id| id.to_string()))
                .push_bind(entry.outcome.clone())
                .push_bind(entry.duration_ms)
                .push_bind(entry.args_digest.clone())
                .push_bind(entry.args_summary.as_ref().map(json_text));
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(outcomes)
}

/// The claim: the best `?4` runnable jobs (queued, ready, for any node or this one, and for a
/// workspace only its first queued job while it runs nothing). `{scope}` narrows the candidates
/// (to the workspaces of [`Store::claim_heads`]).
const CLAIM: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?1, \
         lease_owner = ?2, lease_expires_at = ?3 \
     WHERE seq IN ( \
         SELECT j.seq FROM jobs j \
         WHERE j.state = 'queued' AND j.run_after <= ?1 {scope}\
           AND (j.node IS NULL OR j.node = ?2) \
           AND (j.workspace IS NULL OR ( \
               NOT EXISTS (SELECT 1 FROM jobs r \
                           WHERE r.workspace = j.workspace AND r.state = 'running') \
               AND j.seq = (SELECT h.seq FROM jobs h \
                            WHERE h.workspace = j.workspace AND h.state = 'queued' \
                            ORDER BY h.priority DESC, h.seq LIMIT 1))) \
         ORDER BY j.priority DESC, j.seq LIMIT ?4) \
     RETURNING *";

impl SqliteStore {
    /// Runs one claim statement ([`CLAIM`] with its scope), `workspaces` bound as `?5`.
    async fn claim_with(
        &self,
        sql: &'static str,
        node: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease: Duration,
        workspaces: Option<String>,
    ) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // One statement, atomic on its own: no BEGIN/COMMIT round trips.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ts(now))
            .bind(node)
            .bind(ts(super::lease_until(now, lease)))
            .bind(i64::from(limit));
        if let Some(workspaces) = workspaces {
            query = query.bind(workspaces);
        }
        let rows = query.fetch_all(&self.writer).await?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        super::job::sort_in_claim_order(&mut jobs);
        Ok(jobs)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        let ping = sqlx::query("SELECT 1").execute(&self.reader);
        match tokio::time::timeout(super::PING_TIMEOUT, ping).await {
            Ok(result) => result.map(|_| ()).map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
        }
    }

    fn signals(&self) -> broadcast::Receiver<Signal> {
        self.signals.hub.subscribe()
    }

    async fn enqueue(&self, job: NewJob, audit: AuditEntry) -> Result<Enqueued> {
        let mut tx = self.begin().await?;
        let enqueued = enqueue_rows(&mut tx, job, audit, Utc::now()).await?;
        tx.commit().await?;
        if enqueued.created {
            self.signals.hub.send(Signal::JobsReady);
        }
        Ok(enqueued)
    }

    async fn enqueue_batch(
        &self,
        batch: Vec<(NewJob, AuditEntry)>,
    ) -> Result<Vec<Result<Enqueued>>> {
        let now = Utc::now();
        // BEGIN IMMEDIATE holds the write lock for the whole batch: the jobs commit together
        // and no other writer counts quotas meanwhile.
        let mut tx = self.begin().await?;
        let (plain, other) = super::split_plain(batch);
        let mut outcomes: Vec<Option<Result<Enqueued>>> = Vec::new();
        outcomes.resize_with(plain.len() + other.len(), || None);
        for (i, outcome) in enqueue_each(&mut tx, other, now).await? {
            outcomes[i] = Some(outcome);
        }
        if !plain.is_empty() {
            sqlx::raw_sql("SAVEPOINT batch_plain")
                .execute(&mut *tx)
                .await?;
            match enqueue_plain(&mut tx, &plain, now).await {
                Ok(done) => {
                    sqlx::raw_sql("RELEASE batch_plain")
                        .execute(&mut *tx)
                        .await?;
                    for ((i, _), outcome) in plain.iter().zip(done) {
                        outcomes[*i] = Some(outcome);
                    }
                }
                // A statement of the shared inserts failed (a bad value in one job): undo them
                // and give each of these jobs its own savepoint instead.
                Err(e) if e.is_per_job() => {
                    sqlx::raw_sql("ROLLBACK TO batch_plain; RELEASE batch_plain")
                        .execute(&mut *tx)
                        .await?;
                    for (i, outcome) in enqueue_each(&mut tx, plain, now).await? {
                        outcomes[i] = Some(outcome);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let outcomes: Vec<Result<Enqueued>> = outcomes
            .into_iter()
            .map(|o| o.expect("every submission has an outcome"))
            .collect();
        tx.commit().await?;
        if outcomes.iter().any(|o| matches!(o, Ok(e) if e.created)) {
            self.signals.hub.send(Signal::JobsReady);
        }
        Ok(outcomes)
    }

    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<()> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        for job in &jobs {
            bind_new_job(sqlx::query(INSERT_JOB), job, now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.signals.hub.send(Signal::JobsReady);
        Ok(())
    }

    async fn claim(
        &self,
        node: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<Job>> {
        static SQL: LazyLock<String> = LazyLock::new(|| CLAIM.replace("{scope}", ""));
        self.claim_with(&SQL, node, limit, now, lease, None).await
    }

    async fn claim_heads(
        &self,
        node: &str,
        workspaces: &[String],
        limit: u32,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<Job>> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            CLAIM.replace(
                "{scope}",
                "AND j.workspace IN (SELECT value FROM json_each(?5)) ",
            )
        });
        if workspaces.is_empty() {
            return Ok(Vec::new());
        }
        let workspaces = json_text(&workspaces);
        self.claim_with(&SQL, node, limit, now, lease, Some(workspaces))
            .await
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
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "UPDATE jobs SET lease_expires_at = ? \
             WHERE state = 'running' AND lease_owner = ? \
               AND id IN (SELECT value FROM json_each(?)) \
             RETURNING id, cancel_requested",
        )
        .bind(ts(super::lease_until(now, lease)))
        .bind(node)
        .bind(ids_json(ids))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut cancelled = Vec::new();
        for row in rows {
            if row.try_get::<bool, _>("cancel_requested")? {
                cancelled.push(job_id_of(&row)?);
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
        let rows: Vec<_> = completions.iter().map(Completion::row).collect();
        // One statement for the whole batch; a single statement is atomic without BEGIN.
        let written = sqlx::query(
            "UPDATE jobs SET \
                 state = c.state, \
                 finished_at = CASE WHEN c.state = 'queued' THEN jobs.finished_at ELSE ?2 END, \
                 result = CASE WHEN c.state = 'queued' THEN jobs.result ELSE c.result END, \
                 error = c.error, \
                 exit_code = CASE WHEN c.state = 'queued' THEN jobs.exit_code ELSE c.exit_code END, \
                 run_after = COALESCE(c.run_after, jobs.run_after), \
                 cancel_requested = CASE WHEN c.state = 'queued' THEN 0 ELSE jobs.cancel_requested END, \
                 lease_owner = NULL, lease_expires_at = NULL \
             FROM (SELECT value ->> '$.id' AS id, value ->> '$.state' AS state, \
                          value -> '$.result' AS result, value -> '$.error' AS error, \
                          value ->> '$.exit_code' AS exit_code, \
                          value ->> '$.run_after_us' AS run_after \
                   FROM json_each(?1)) AS c \
             WHERE jobs.id = c.id AND jobs.state = 'running' AND jobs.lease_owner = ?3 \
             RETURNING id, state, run_after, finished_at, cancel_requested, result, error, \
                 exit_code",
        )
        .bind(json_text(&rows))
        .bind(ts(now))
        .bind(node)
        .fetch_all(&self.writer)
        .await?;
        let written = written
            .iter()
            .map(written_from_row)
            .collect::<Result<Vec<_>>>()?;
        for job in &written {
            self.signals.hub.send(Signal::JobChanged(job.id));
        }
        if !written.is_empty() {
            // A finished job may unblock the next job of its workspace.
            self.signals
                .hub
                .send(Signal::JobsFinished { node: node.into() });
        }
        Ok(written)
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
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ? AND (? IS NULL OR tenant = ?)")
            .bind(id.to_string())
            .bind(tenant)
            .bind(tenant)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs \
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR workspace = ?2) \
               AND (?3 IS NULL OR state = ?3) AND (?4 IS NULL OR tool = ?4) \
               AND (?5 IS NULL OR seq < ?5) \
             ORDER BY seq DESC LIMIT ?6",
        )
        .bind(&filter.tenant)
        .bind(&filter.workspace)
        .bind(filter.state.map(JobState::as_str))
        .bind(&filter.tool)
        .bind(filter.before_seq)
        .bind(i64::from(filter.limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn has_open_job(&self, workspace: &str, tool: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE workspace = ? AND tool = ? \
             AND state IN ('queued', 'running')) AS open",
        )
        .bind(workspace)
        .bind(tool)
        .fetch_one(&self.reader)
        .await?;
        Ok(row.try_get("open")?)
    }

    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<Rescued>> {
        let mut tx = self.begin().await?;
        let rows =
            sqlx::query("SELECT * FROM jobs WHERE state = 'running' AND lease_expires_at < ?")
                .bind(ts(now))
                .fetch_all(&mut *tx)
                .await?;
        let jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        let rescued = rescue_jobs(&mut tx, jobs, now).await?;
        tx.commit().await?;
        self.signal_rescued(&rescued);
        Ok(rescued)
    }

    async fn recover_node(&self, node: &str, now: DateTime<Utc>) -> Result<Vec<Rescued>> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query("SELECT * FROM jobs WHERE state = 'running' AND lease_owner = ?")
            .bind(node)
            .fetch_all(&mut *tx)
            .await?;
        let jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        let rescued = rescue_jobs(&mut tx, jobs, now).await?;
        tx.commit().await?;
        self.signal_rescued(&rescued);
        Ok(rescued)
    }

    async fn node_alive(&self, node: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (id, started_at, heartbeat_at) VALUES (?1, ?2, ?2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = max(heartbeat_at, excluded.heartbeat_at)",
        )
        .bind(node)
        .bind(ts(now))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn fail_jobs_of_gone_nodes(
        &self,
        gone_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Rescued>> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT j.id, j.tool, j.node, n.heartbeat_at AS node_seen FROM jobs j \
             LEFT JOIN nodes n ON n.id = j.node \
             WHERE j.state = 'queued' AND j.node IS NOT NULL \
               AND (n.heartbeat_at IS NULL OR n.heartbeat_at < ?) \
             ORDER BY j.seq LIMIT ?",
        )
        .bind(ts(gone_before))
        .bind(super::NODE_GONE_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut failed = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let node: String = row.try_get("node")?;
            let seen = row.try_get::<Option<i64>, _>("node_seen")?.map(from_ts);
            let error = super::node_gone_error(&node, seen);
            sqlx::query(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? \
                 WHERE id = ? AND state = 'queued'",
            )
            .bind(ts(now))
            .bind(json_text(&error))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            failed.push(Rescued {
                id: Uuid::parse_str(&id)
                    .map_err(|e| StoreError::Corrupt(format!("jobs.id: {e}")))?,
                tool: row.try_get("tool")?,
                state: JobState::Failed,
            });
        }
        tx.commit().await?;
        for job in &failed {
            self.signals.hub.send(Signal::JobChanged(job.id));
        }
        Ok(failed)
    }

    async fn job_counts(&self) -> Result<Vec<StateCount>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.reader)
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
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(q.run_after) FROM jobs q WHERE q.state = 'queued' AND q.run_after <= ? \
             AND (q.workspace IS NULL OR NOT EXISTS (SELECT 1 FROM jobs r \
                  WHERE r.workspace = q.workspace AND r.state = 'running'))",
        )
        .bind(ts(now))
        .fetch_one(&self.reader)
        .await?;
        Ok(oldest.map(from_ts))
    }

    async fn prune(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        let mut tx = self.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? \
             ORDER BY finished_at LIMIT ?",
        )
        .bind(ts(before))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = json_text(&ids);
        sqlx::query("DELETE FROM job_output WHERE job_id IN (SELECT value FROM json_each(?))")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))")
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
        let mut tx = self.begin().await?;
        for chunk in chunks {
            sqlx::query(
                "INSERT OR IGNORE INTO job_output (job_id, seq, stream, data, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(chunk.job_id.to_string())
            .bind(chunk.seq)
            .bind(chunk.stream.as_str())
            .bind(&chunk.data)
            .bind(ts(chunk.at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let mut jobs: Vec<Uuid> = chunks.iter().map(|c| c.job_id).collect();
        jobs.sort_unstable();
        jobs.dedup();
        for id in jobs {
            self.signals.hub.send(Signal::Output(id));
        }
        Ok(())
    }

    async fn output(&self, job_id: Uuid, after_seq: i64) -> Result<Vec<OutputChunk>> {
        let rows = sqlx::query(
            "SELECT seq, stream, data, created_at FROM job_output \
             WHERE job_id = ? AND seq > ? ORDER BY seq",
        )
        .bind(job_id.to_string())
        .bind(after_seq)
        .fetch_all(&self.reader)
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
                    at: from_ts(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn insert_sandbox(&self, s: &SandboxRecord) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        insert_sandbox_row(&mut conn, s, None).await
    }

    async fn sandbox(&self, tenant: &str, id_or_name: &str) -> Result<Option<SandboxRecord>> {
        let row = sqlx::query(
            "SELECT * FROM sandboxes WHERE tenant = ?1 AND (id = ?2 OR name = ?2) \
             ORDER BY (id = ?2) DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(id_or_name)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(sandbox_from_row).transpose()
    }

    async fn list_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<SandboxRecord>> {
        let rows = sqlx::query("SELECT * FROM sandboxes WHERE tenant = ? ORDER BY created_at, id")
            .bind(&filter.tenant)
            .fetch_all(&self.reader)
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

    // Single statements below run on the writer without BEGIN/COMMIT: each is atomic on its
    // own, and holding the one writer connection for three round trips instead of one delays
    // every enqueue, claim and completion queued behind it.

    async fn set_sandbox_status(&self, id: &str, status: &str) -> Result<()> {
        sqlx::query("UPDATE sandboxes SET status = ? WHERE id = ?")
            .bind(status)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn set_sandbox_handle(&self, id: &str, handle: &str) -> Result<()> {
        sqlx::query("UPDATE sandboxes SET driver_handle = ? WHERE id = ?")
            .bind(handle)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn touch_sandbox(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE sandboxes SET last_accessed = MAX(last_accessed, ?) WHERE id = ?")
            .bind(ts(at))
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn delete_sandbox(&self, id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM sandboxes WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn template(&self, tenant: &str, name: &str) -> Result<Option<TemplateRecord>> {
        let row = sqlx::query("SELECT * FROM templates WHERE tenant = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(template_from_row).transpose()
    }

    async fn list_templates(&self, tenant: &str) -> Result<Vec<TemplateRecord>> {
        let rows = sqlx::query("SELECT * FROM templates WHERE tenant = ? ORDER BY name")
            .bind(tenant)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(template_from_row).collect()
    }

    async fn delete_template(&self, tenant: &str, name: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM templates WHERE tenant = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn sandbox_counts(&self) -> Result<Vec<SandboxCount>> {
        let rows = sqlx::query(
            "SELECT driver, status, COUNT(*) AS n FROM sandboxes GROUP BY driver, status",
        )
        .fetch_all(&self.reader)
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
        // BEGIN IMMEDIATE: no other writer counts quotas between the sum and the insert.
        let mut tx = self.begin().await?;
        if let Some((limit, quota)) = quota.and_then(|q| q.max_disk_bytes.map(|l| (l, q))) {
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
             size_bytes, digest, entries, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(ts(snapshot.created_at))
        .execute(&mut *tx)
        .await;
        super::conflict_on_unique(result, || format!("snapshot `{}`", snapshot.id))?;
        tx.commit().await?;
        Ok(())
    }

    async fn snapshot(&self, tenant: &str, id: &str) -> Result<Option<SnapshotRecord>> {
        let row = sqlx::query("SELECT * FROM snapshots WHERE tenant = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    async fn list_snapshots(
        &self,
        tenant: &str,
        sandbox_id: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM snapshots WHERE tenant = ?1 AND (?2 IS NULL OR sandbox_id = ?2) \
             ORDER BY created_at, id",
        )
        .bind(tenant)
        .bind(sandbox_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    async fn delete_snapshot(&self, tenant: &str, id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM snapshots WHERE tenant = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        insert_audit(&mut conn, entry).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log \
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR at >= ?2) \
               AND (?3 IS NULL OR at < ?3) AND (?4 IS NULL OR key_id = ?4) \
               AND (?5 IS NULL OR workspace = ?5) AND (?6 IS NULL OR action = ?6) \
               AND (?7 IS NULL OR id > ?7) \
               AND (?9 IS NULL OR substr(workspace, -(length(?9) + 1)) = '/' || ?9) \
               AND (?10 IS NULL OR outcome = ?10) \
             ORDER BY id LIMIT ?8",
        )
        .bind(&filter.tenant)
        .bind(filter.since.map(ts))
        .bind(filter.until.map(ts))
        .bind(&filter.key_id)
        .bind(&filter.workspace)
        .bind(&filter.action)
        .bind(filter.after_id)
        .bind(i64::from(filter.limit))
        .bind(&filter.sandbox)
        .bind(&filter.outcome)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin().await?;
        // The trigger lets a DELETE through only for rows older than this horizon.
        sqlx::query("INSERT OR REPLACE INTO audit_prune (id, before) VALUES (1, ?)")
            .bind(ts(before))
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM audit_log WHERE at < ?")
            .bind(ts(before))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM audit_prune")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.begin().await?;
        let result = sqlx::query(
            "INSERT INTO api_keys (id, tenant, role, name, digest, created_at, expires_at, \
                 revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(&key.tenant)
        .bind(&key.role)
        .bind(&key.name)
        .bind(&key.digest)
        .bind(ts(key.created_at))
        .bind(key.expires_at.map(ts))
        .bind(key.revoked_at.map(ts))
        .execute(&mut *tx)
        .await;
        super::conflict_on_unique(result, || format!("API key `{}`", key.id))?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn revoke_api_key(
        &self,
        id: &str,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let revoked =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(ts(at))
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
            sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE tenant = ? AND state = 'running'")
                .bind(tenant)
                .fetch_one(&self.reader)
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
                 lease_owner = NULL, lease_expires_at = NULL, run_after = ? \
             WHERE state = 'running' AND lease_owner = ? \
               AND id IN (SELECT value FROM json_each(?)) \
             RETURNING id",
        )
        .bind(ts(run_after))
        .bind(node)
        .bind(ids_json(ids))
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(job_id_of).collect()
    }
}

fn api_key_from_row(row: &SqliteRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        role: row.try_get("role")?,
        name: row.try_get("name")?,
        digest: row.try_get("digest")?,
        created_at: from_ts(row.try_get("created_at")?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(from_ts),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(from_ts),
    })
}
