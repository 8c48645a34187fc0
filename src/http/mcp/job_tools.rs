//! The job tools: `get_job`, `cancel_job` and `list_jobs`, for MCP clients without task
//! support. They translate to the jobs service (they are not jobs themselves), so they answer
//! at once and never run in the background.

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use super::protocol::RpcError;
use super::results::{Outcome, refused_with, structured_result};
use crate::audit::{Caller, Role};
use crate::http::error::ApiError;
use crate::http::views::job_view;
use crate::jobs::ListRequest;
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

/// The least role of each job tool (the jobs service checks it again on every call).
fn min_role(name: &str) -> Role {
    match name {
        CANCEL_JOB => Role::Developer,
        _ => Role::Viewer,
    }
}

/// The job tools as `tools/list` shows them to `caller`: those its role may call.
pub(crate) fn descriptors(caller: &Caller) -> Vec<Value> {
    let mut tools = all_descriptors();
    tools.retain(|t| t["name"].as_str().is_some_and(|n| caller.may(min_role(n))));
    tools
}

fn all_descriptors() -> Vec<Value> {
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

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::bad_request("job_id", format!("`{raw}` is not a job id (a UUID)")))
}

/// Runs a job tool: its refusals are tool errors with the codes of the shared table.
pub(crate) async fn call(ctx: &Ctx, name: &str, arguments: Value) -> Result<Outcome, RpcError> {
    let run = match name {
        GET_JOB => get_job(ctx, &arguments).await,
        CANCEL_JOB => cancel_job(ctx, &arguments).await,
        _ => list_jobs(ctx, &arguments).await,
    };
    match run {
        Ok(result) => Ok(Outcome::Json(structured_result(&result, false))),
        Err(error) => refused_with(ctx.revision, error, ctx.caller.request_id.as_deref()),
    }
}

async fn get_job(ctx: &Ctx, arguments: &Value) -> Result<Value, ApiError> {
    let a: GetJobArgs = args::parse(arguments)?;
    let id = parse_id(&a.job_id)?;
    let jobs = ctx.state.jobs();
    let wait = jobs.check_wait("wait_s", a.wait_s)?;
    let job = jobs.get(&ctx.caller, id, wait).await?;
    Ok(job_view(&job))
}

async fn cancel_job(ctx: &Ctx, arguments: &Value) -> Result<Value, ApiError> {
    let a: CancelJobArgs = args::parse(arguments)?;
    let id = parse_id(&a.job_id)?;
    let outcome = ctx.state.jobs().cancel(&ctx.caller, id).await?;
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
    Ok(json!({"job_id": job.id, "status": job.state, "cancelled": cancelled, "message": message}))
}

async fn list_jobs(ctx: &Ctx, arguments: &Value) -> Result<Value, ApiError> {
    let a: ListJobsArgs = args::parse(arguments)?;
    let request = ListRequest {
        sandbox: a.sandbox_id,
        state: a.state,
        tool: a.tool,
        limit: a.limit,
        cursor: a.cursor,
        tenant: None,
    };
    let page = ctx.state.jobs().list(&ctx.caller, &request).await?;
    Ok(json!({
        "jobs": page.jobs.iter().map(job_view).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    }))
}
