//! Tasks, backed by the job queue: a task id is a job id, a task's status is its job's state.
//!
//! Two dialects share the queue:
//! - 2025-11-25 core tasks: `tools/call` with `params.task` answers `{task}`; `tasks/get`,
//!   `tasks/result` (waits for the end), `tasks/list`, `tasks/cancel`; and
//!   `notifications/tasks/status` on the session's standalone stream when a task ends.
//! - the 2026-07-28 extension `io.modelcontextprotocol/tasks`: a client that declares it gets a
//!   flat task for every queue tool call; `tasks/get` carries the result or error, `tasks/cancel`
//!   acknowledges, `tasks/update` says that no input is ever pending.
//!
//! Every lookup is scoped to the caller's tenant: another tenant's task is "not found". Job
//! ids are UUIDv7: besides the time, 74 bits from the operating system's random source.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use base64::Engine;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::Ctx;
use super::protocol::{META_RELATED_TASK, Revision, RpcError, TASKS_EXTENSION, notification};
use super::results::{job_result, rpc_error};
use super::session::Session;
use crate::http::error::ApiError;
use crate::http::sse;
use crate::jobs::{JobsError, ListRequest};
use crate::store::{CancelOutcome, Job, JobState};

/// How often a client should poll a working task.
const POLL_INTERVAL_MS: u64 = 1000;
/// Longest a cancel waits for a running command to be killed before answering.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// A task's status in the MCP vocabulary.
fn status(job: &Job) -> &'static str {
    match job.state {
        JobState::Queued | JobState::Running => "working",
        JobState::Succeeded => "completed",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

fn status_message(job: &Job) -> String {
    match job.state {
        JobState::Queued => "queued: waiting for its sandbox or a free worker".into(),
        JobState::Running => "running".into(),
        JobState::Cancelled => "cancelled".into(),
        JobState::Succeeded | JobState::Failed => job
            .result
            .as_ref()
            .and_then(|r| r.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                job.error
                    .as_ref()
                    .map(|e| crate::http::error::public_job_error(job.id, e).message)
            })
            .unwrap_or_else(|| job.state.as_str().to_string()),
    }
}

/// How long a task stays readable, in milliseconds: the job retention (`null` = forever).
fn ttl_ms(ctx: &Ctx) -> Value {
    match ctx.state.config.queue.retention_hours {
        0 => Value::Null,
        hours => json!(hours * 3_600_000),
    }
}

fn last_updated(job: &Job) -> chrono::DateTime<chrono::Utc> {
    job.finished_at.or(job.started_at).unwrap_or(job.created_at)
}

/// A 2025-11-25 `Task`.
fn task_2025(ctx: &Ctx, job: &Job) -> Value {
    json!({
        "taskId": job.id,
        "status": status(job),
        "statusMessage": status_message(job),
        "createdAt": job.created_at,
        "lastUpdatedAt": last_updated(job),
        "ttl": ttl_ms(ctx),
        "pollInterval": POLL_INTERVAL_MS,
    })
}

/// A 2026-07-28 extension `Task`.
fn task_2026(ctx: &Ctx, job: &Job) -> Value {
    json!({
        "taskId": job.id,
        "status": status(job),
        "statusMessage": status_message(job),
        "createdAt": job.created_at,
        "lastUpdatedAt": last_updated(job),
        "ttlMs": ttl_ms(ctx),
        "pollIntervalMs": POLL_INTERVAL_MS,
    })
}

/// The answer to a `tools/call` that became a task.
pub(crate) fn created(ctx: &Ctx, job: &Job) -> Value {
    if ctx.revision.is_modern() {
        let mut task = task_2026(ctx, job);
        task["resultType"] = json!("task");
        return task;
    }
    if let Some(session) = &ctx.session {
        watch(ctx, session, job.id);
    }
    json!({ "task": task_2025(ctx, job) })
}

/// Sends `notifications/tasks/status` on the session's standalone stream when the task ends,
/// if that stream is open now. Optional in the spec: clients poll either way.
fn watch(ctx: &Ctx, session: &Arc<Session>, id: Uuid) {
    if !session.has_standalone() {
        return;
    }
    let session = Arc::downgrade(session);
    let jobs = ctx.state.jobs();
    let ctx_ttl = ttl_ms(ctx);
    let caller = ctx.caller.clone();
    actix_rt::spawn(async move {
        loop {
            let job = match jobs.get(&caller, id, Duration::from_secs(60)).await {
                Ok(job) => job,
                _ => return,
            };
            let Some(session) = session.upgrade() else {
                return;
            };
            if job.state.is_terminal() {
                let mut task = json!({
                    "taskId": job.id,
                    "status": status(&job),
                    "statusMessage": status_message(&job),
                    "createdAt": job.created_at,
                    "lastUpdatedAt": last_updated(&job),
                    "pollInterval": POLL_INTERVAL_MS,
                });
                task["ttl"] = ctx_ttl;
                session.send_standalone(sse::event(
                    None,
                    None,
                    &notification("notifications/tasks/status", task),
                ));
                return;
            }
        }
    });
}

/// `params.taskId`, parsed; anything else is a task this caller cannot have.
fn task_id(params: &Map<String, Value>) -> Result<Uuid, RpcError> {
    let raw = params
        .get("taskId")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("`taskId` is required (a string)"))?;
    Uuid::parse_str(raw).map_err(|_| not_found())
}

fn not_found() -> RpcError {
    RpcError::invalid_params("Failed to retrieve task: Task not found")
}

/// A jobs service refusal as a task method's error: another tenant's task is "not found".
fn refusal(ctx: &Ctx, error: JobsError) -> RpcError {
    match error {
        JobsError::NotFound(_) => not_found(),
        other => rpc_error(ApiError::from(other), ctx.caller.request_id.as_deref()),
    }
}

/// The caller's task, after waiting up to `wait` for it to end.
async fn load(ctx: &Ctx, id: Uuid, wait: Duration) -> Result<Job, RpcError> {
    ctx.state
        .jobs()
        .get(&ctx.caller, id, wait)
        .await
        .map_err(|e| refusal(ctx, e))
}

/// On 2026-07-28, task methods need the extension in the request's capabilities.
fn require_extension(ctx: &Ctx) -> Result<(), RpcError> {
    if ctx.revision.is_modern() && !ctx.declares_extension(TASKS_EXTENSION) {
        return Err(RpcError::missing_capability(
            format!("task methods need the {TASKS_EXTENSION} extension in clientCapabilities"),
            json!({"extensions": {TASKS_EXTENSION: {}}}),
        ));
    }
    Ok(())
}

/// `tasks/get`.
pub(crate) async fn get(ctx: &Ctx, params: &Map<String, Value>) -> Result<Value, RpcError> {
    require_extension(ctx)?;
    let job = load(ctx, task_id(params)?, Duration::ZERO).await?;
    if !ctx.revision.is_modern() {
        return Ok(task_2025(ctx, &job));
    }
    let mut task = task_2026(ctx, &job);
    match job.state {
        JobState::Succeeded | JobState::Failed => match job_result(&job) {
            Ok(mut result) => {
                result["resultType"] = json!("complete");
                task["status"] = json!("completed");
                task["result"] = result;
            }
            Err(error) => {
                task["status"] = json!("failed");
                task["error"] = error.to_object();
            }
        },
        _ => {}
    }
    Ok(task)
}

/// `tasks/result` (2025-11-25): waits for the task to end, then answers what the call would
/// have answered.
pub(crate) async fn result(ctx: &Ctx, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let id = task_id(params)?;
    let wait = ctx.state.jobs().max_wait();
    let job = load(ctx, id, wait).await?;
    if !job.state.is_terminal() {
        return Err(RpcError::new(
            StatusCode::OK,
            -32000,
            format!(
                "task {id} is still working after {} s; call tasks/result again",
                wait.as_secs()
            ),
        ));
    }
    let mut result = job_result(&job)?;
    result["_meta"] = json!({ META_RELATED_TASK: {"taskId": id} });
    Ok(result)
}

fn encode_cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("tasks:{seq}"))
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("tasks:")?
        .parse()
        .ok()
}

/// `tasks/list` (2025-11-25): the caller's tasks, newest first.
pub(crate) async fn list(ctx: &Ctx, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let before_seq = match params.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(
            decode_cursor(c)
                .ok_or_else(|| RpcError::invalid_params("invalid cursor: use a nextCursor"))?,
        ),
        Some(_) => return Err(RpcError::invalid_params("cursor must be a string")),
    };
    let limit = ctx.state.config.mcp.page_size.clamp(1, 200) as u32;
    let request = ListRequest {
        limit: Some(limit),
        cursor: before_seq.map(|seq| seq.to_string()),
        ..ListRequest::default()
    };
    let jobs = ctx
        .state
        .jobs()
        .list(&ctx.caller, &request)
        .await
        .map_err(|e| refusal(ctx, e))?
        .jobs;
    let mut result = json!({
        "tasks": jobs.iter().map(|j| task_2025(ctx, j)).collect::<Vec<_>>(),
    });
    if jobs.len() == limit as usize
        && let Some(last) = jobs.last()
    {
        result["nextCursor"] = json!(encode_cursor(last.seq));
    }
    Ok(result)
}

/// `tasks/cancel`.
pub(crate) async fn cancel(ctx: &Ctx, params: &Map<String, Value>) -> Result<Value, RpcError> {
    require_extension(ctx)?;
    let id = task_id(params)?;
    let outcome = ctx
        .state
        .jobs()
        .cancel(&ctx.caller, id)
        .await
        .map_err(|e| refusal(ctx, e))?;
    if let CancelOutcome::AlreadyFinished(job) = &outcome {
        if ctx.revision.is_modern() {
            // Cancelling is cooperative and idempotent in the extension: nothing to do.
            return Ok(json!({}));
        }
        return Err(RpcError::invalid_params(format!(
            "Cannot cancel task: already in terminal status '{}'",
            status(job)
        )));
    }
    if ctx.revision.is_modern() {
        return Ok(json!({}));
    }
    // 2025-11-25: the answer shows the task cancelled, so wait for the kill to land.
    let job = load(ctx, id, CANCEL_WAIT).await?;
    Ok(task_2025(ctx, &job))
}

/// `tasks/update` (2026-07-28 extension): delivers input a task asked for. No task of this
/// server ever asks for input, so the answer says so instead of silently dropping the input.
pub(crate) async fn update(ctx: &Ctx, params: &Map<String, Value>) -> Result<Value, RpcError> {
    require_extension(ctx)?;
    let job = load(ctx, task_id(params)?, Duration::ZERO).await?;
    Err(RpcError::invalid_params(format!(
        "task {} is not waiting for input (status: {}): this server's tools never ask for \
         input, so there is nothing to update",
        job.id,
        status(&job)
    ))
    .with_data(json!({"taskId": job.id, "status": status(&job)})))
}

/// Whether `method` is a task method in `revision`.
pub(crate) fn is_task_method(method: &str, revision: Revision) -> bool {
    match revision {
        Revision::V2025_06_18 => false,
        Revision::V2025_11_25 => matches!(
            method,
            "tasks/get" | "tasks/result" | "tasks/list" | "tasks/cancel"
        ),
        Revision::V2026_07_28 => matches!(method, "tasks/get" | "tasks/cancel" | "tasks/update"),
    }
}
