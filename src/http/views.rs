//! How jobs look in every HTTP answer: the jobs API, the REST routes' 202s, the SSE events and
//! the MCP job tools all show a job through [`job_view`].

use serde_json::{Value, json};
use uuid::Uuid;

use super::error::{ApiError, public_job_error};
use crate::audit::summarize;
use crate::store::Job;

/// A job as the API shows it. Arguments appear only as a redacted summary.
pub(crate) fn job_view(job: &Job) -> Value {
    json!({
        "job_id": job.id,
        "tool": job.tool,
        "status": job.state,
        "sandbox": job.workspace.as_deref().and_then(|w| w.split_once('/')).map(|(_, name)| name),
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "timeout_s": job.timeout_s,
        "created_at": job.created_at,
        "run_after": job.run_after,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "cancel_requested": job.cancel_requested,
        "idempotency_key": job.idempotency_key,
        "request_id": job.request_id,
        // The node the job is bound to (its sandbox is on that node's disk); null: any node.
        "node": job.node,
        "exit_code": job.exit_code,
        "result": job.result,
        "error": job.error.as_ref().map(|e| public_job_error(job.id, e)),
        "arguments": summarize(&job.arguments),
        "status_url": format!("/v1/jobs/{}", job.id),
        "events_url": format!("/v1/jobs/{}/events", job.id),
    })
}

pub(crate) fn parse_job_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::bad_request("id", format!("`{raw}` is not a job id (a UUID)")))
}
