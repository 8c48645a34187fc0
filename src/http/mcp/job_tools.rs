//! The job tools: `get_job`, `cancel_job` and `list_jobs`, for MCP clients without task
//! support. They read and cancel the caller's jobs directly (they are not jobs themselves), so
//! they answer at once and never run in the background.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::protocol::RpcError;
use super::tools::{error_result, refused, structured_result};
use super::{Ctx, Outcome};
use crate::http::error::ApiError;
use crate::http::jobs::{ListQuery, job_view, list_page};
use crate::store::CancelOutcome;
use crate::tools::args;

const GET_JOB: &str = "get_job";
const CANCEL_JOB: &str = "cancel_job";
const LIST_JOBS: &str = "list_jobs";

pub(crate) fn is_job_tool(name: &str) -> bool {
    matches!(name, GET_JOB | CANCEL_JOB | LIST_JOBS)
}

const STATES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

/// The JSON schema of a job as `get_job` and `list_jobs` show it.
fn job_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "tool": {"type": "string"},
            "status": {"type": "string", "enum": STATES},
            "sandbox": {"type": ["string", "null"]},
            "attempts": {"type": "integer"},
            "created_at": {"type": "string"},
            "started_at": {"type": ["string", "null"]},
            "finished_at": {"type": ["string", "null"]},
            "exit_code": {"type": ["integer", "null"]},
            "result": {"description": "The tool's output, once it has one."},
            "error": {
                "type": ["object", "null"],
                "description": "Why the job did not succeed: {reason, message, field?}."
            }
        },
        "required": ["job_id", "tool", "status"]
    })
}

/// The job tools as `tools/list` shows them.
pub(crate) fn descriptors() -> Vec<Value> {
    let hints = |read_only: bool| {
        json!({
            "readOnlyHint": read_only,
            "destructiveHint": !read_only,
            "idempotentHint": true,
            "openWorldHint": false,
        })
    };
    vec![
        json!({
            "name": GET_JOB,
            "description": "Read a job started by any tool call (with background: true, or one \
                            still running): its status, and its result or error once it ended. \
                            wait_s waits up to that many seconds for it to end.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "job_id": {"type": "string", "description": "The job id a call returned."},
                    "wait_s": {
                        "type": "number",
                        "minimum": 0,
                        "description": "Seconds to wait for the job to end before answering."
                    }
                },
                "required": ["job_id"],
                "additionalProperties": false
            },
            "outputSchema": job_schema(),
            "annotations": hints(true),
        }),
        json!({
            "name": CANCEL_JOB,
            "description": "Cancel a job: a queued job never runs; a running command is killed \
                            with every process it started. A finished job is left as it is.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "job_id": {"type": "string", "description": "The job to cancel."}
                },
                "required": ["job_id"],
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "job_id": {"type": "string"},
                    "status": {"type": "string", "enum": STATES},
                    "cancelled": {
                        "type": "boolean",
                        "description": "False when the job had already finished."
                    },
                    "message": {"type": "string"}
                },
                "required": ["job_id", "status", "cancelled", "message"]
            },
            "annotations": hints(false),
        }),
        json!({
            "name": LIST_JOBS,
            "description": "List your jobs, newest first, optionally of one sandbox, state or \
                            tool. Pass next_cursor back as cursor for the next page.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "sandbox_id": {"type": "string", "description": "Sandbox id or name."},
                    "state": {"type": "string", "enum": STATES},
                    "tool": {"type": "string"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    "cursor": {"type": "string"}
                },
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "jobs": {"type": "array", "items": job_schema()},
                    "next_cursor": {"type": ["string", "null"]}
                },
                "required": ["jobs", "next_cursor"]
            },
            "annotations": hints(true),
        }),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetJobArgs {
    job_id: String,
    wait_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelJobArgs {
    job_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListJobsArgs {
    sandbox_id: Option<String>,
    state: Option<String>,
    tool: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Why a job tool could not do what was asked, before it touched anything.
struct Refusal {
    reason: &'static str,
    message: String,
    field: Option<String>,
}

impl Refusal {
    fn invalid(field: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            reason: "invalid_argument",
            message: message.into(),
            field: Some(field.to_string()),
        }
    }
}

impl From<args::InvalidInput> for Refusal {
    fn from(e: args::InvalidInput) -> Refusal {
        Refusal {
            reason: "invalid_argument",
            message: e.message,
            field: e.field,
        }
    }
}

fn parse_id(raw: &str) -> Result<Uuid, Refusal> {
    Uuid::parse_str(raw)
        .map_err(|_| Refusal::invalid("job_id", format!("`{raw}` is not a job id (a UUID)")))
}

fn not_found(id: Uuid) -> Outcome {
    Outcome::Json(error_result(&json!({
        "error": {"reason": "not_found", "message": format!("job {id} not found"), "field": "job_id"}
    })))
}

/// Runs a job tool.
pub(crate) async fn call(ctx: &Ctx, name: &str, arguments: Value) -> Result<Outcome, RpcError> {
    let run = match name {
        GET_JOB => get_job(ctx, &arguments).await,
        CANCEL_JOB => cancel_job(ctx, &arguments).await,
        _ => list_jobs(ctx, &arguments).await,
    };
    match run {
        Ok(outcome) => Ok(outcome),
        Err(Ok(refusal)) => Ok(refused(ctx, refusal.reason, refusal.message, refusal.field)),
        Err(Err(e)) => Err(e),
    }
}

/// A job tool's failure: a refusal of the arguments, or a protocol error.
type ToolError = Result<Refusal, RpcError>;

fn store_failure(ctx: &Ctx, e: impl std::fmt::Display) -> ToolError {
    tracing::error!(error = %e, "a job tool failed");
    Err(RpcError::internal(ctx.caller.request_id.as_deref()))
}

async fn get_job(ctx: &Ctx, arguments: &Value) -> Result<Outcome, ToolError> {
    let a: GetJobArgs = args::parse(arguments).map_err(|e| Ok(e.into()))?;
    let id = parse_id(&a.job_id).map_err(Ok)?;
    let max = ctx.state.config.server.sync_wait_max_s as f64;
    let wait = match a.wait_s {
        None => 0.0,
        Some(w) if (0.0..=max).contains(&w) => w,
        Some(_) => {
            return Err(Ok(Refusal::invalid(
                "wait_s",
                format!("wait_s must be between 0 and {max} seconds"),
            )));
        }
    };
    let tenant = ctx.caller.tenant.as_str();
    let job = if wait > 0.0 {
        ctx.state
            .queue
            .wait(Some(tenant), id, Duration::from_secs_f64(wait))
            .await
    } else {
        ctx.state.queue.store().job(Some(tenant), id).await
    };
    match job {
        Ok(Some(job)) => Ok(Outcome::Json(structured_result(&job_view(&job), false))),
        Ok(None) => Ok(not_found(id)),
        Err(e) => Err(store_failure(ctx, e)),
    }
}

async fn cancel_job(ctx: &Ctx, arguments: &Value) -> Result<Outcome, ToolError> {
    let a: CancelJobArgs = args::parse(arguments).map_err(|e| Ok(e.into()))?;
    let id = parse_id(&a.job_id).map_err(Ok)?;
    let outcome = match ctx.state.queue.cancel(&ctx.caller.tenant, id).await {
        Ok(Some(outcome)) => outcome,
        Ok(None) => return Ok(not_found(id)),
        Err(e) => return Err(store_failure(ctx, e)),
    };
    let entry = ctx
        .caller
        .entry("jobs.cancel", None, Some(id), "accepted", None);
    if let Err(e) = ctx.state.queue.store().append_audit(&entry).await {
        tracing::error!(error = %e, "cannot write audit row for a cancel");
    }
    let (job, cancelled, message) = match &outcome {
        CancelOutcome::Cancelled(job) => (job, true, "cancelled before it started".to_string()),
        CancelOutcome::Requested(job) => (
            job,
            true,
            "cancel requested; the running command is being killed".to_string(),
        ),
        CancelOutcome::AlreadyFinished(job) => (
            job,
            false,
            format!("already finished as {}; nothing to cancel", job.state),
        ),
    };
    Ok(Outcome::Json(structured_result(
        &json!({"job_id": job.id, "status": job.state, "cancelled": cancelled, "message": message}),
        false,
    )))
}

async fn list_jobs(ctx: &Ctx, arguments: &Value) -> Result<Outcome, ToolError> {
    let a: ListJobsArgs = args::parse(arguments).map_err(|e| Ok(e.into()))?;
    let query = ListQuery {
        sandbox: a.sandbox_id,
        state: a.state,
        tool: a.tool,
        limit: a.limit,
        cursor: a.cursor,
        ..ListQuery::default()
    };
    match list_page(&ctx.state, &ctx.caller.tenant, &query).await {
        Ok(page) => Ok(Outcome::Json(structured_result(&page, false))),
        Err(ApiError::Client { message, field, .. }) => Err(Ok(Refusal {
            reason: "invalid_argument",
            // The jobs API names its query parameter; the tool's argument is `sandbox_id`.
            field: field.map(|f| {
                if f == "sandbox" {
                    "sandbox_id".into()
                } else {
                    f
                }
            }),
            message,
        })),
        Err(e) => Err(store_failure(ctx, e)),
    }
}
