//! What MCP handlers answer: tool results (structured, errors the model can read), the job
//! handle, the mapping from a finished job to a tool result, and from the shared error table
//! ([`ApiError`]) to a tool error or a JSON-RPC error. The bottom of `http/mcp/`: it imports
//! nothing of its siblings but `protocol`, and `tools`, `job_tools`, `tasks` and `sse` all use
//! it.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::{Value, json};

use super::protocol::{Revision, RpcError};
use crate::http::error::{ApiError, is_fault, public_job_error};
use crate::store::{Job, JobState};

/// The JSON-RPC code of a request refused for the caller's role (in the range JSON-RPC leaves
/// to servers); its data carries `{"reason": "forbidden"}`.
pub(crate) const FORBIDDEN: i64 = -32003;

/// What a method handler answers.
pub(crate) enum Outcome {
    /// A result, wrapped into the JSON-RPC answer.
    Json(Value),
    /// A protocol error.
    Error(RpcError),
    /// A response already built (an SSE stream).
    Http(HttpResponse),
}

/// A tool result with structured content (which must match the tool's output schema) and the
/// same JSON as text.
pub(crate) fn structured_result(structured: &Value, is_error: bool) -> Value {
    json!({
        "content": [{"type": "text", "text": structured.to_string()}],
        "structuredContent": structured,
        "isError": is_error,
    })
}

/// A failure without output that matches the schema: text only (clients validate structured
/// content against the output schema even on errors).
pub(crate) fn error_result(error: &Value) -> Value {
    json!({
        "content": [{"type": "text", "text": error.to_string()}],
        "isError": true,
    })
}

/// The handle of a job that is not finished.
pub(crate) fn job_handle(job: &Job, message: &str) -> Value {
    json!({"job_id": job.id, "status": job.state, "message": message})
}

/// What a call that ran as `job` answers: its output, an `isError` result for what the tool
/// could not do, or a protocol error when the server itself failed.
pub(crate) fn job_result(job: &Job) -> Result<Value, RpcError> {
    if !job.state.is_terminal() {
        return Ok(structured_result(
            &job_handle(
                job,
                "still running after the longest synchronous wait; read the result with get_job",
            ),
            false,
        ));
    }
    if let Some(error) = &job.error
        && is_fault(error)
    {
        // The fault's text stays with the operator (see `public_job_error`).
        return Err(RpcError::new(
            StatusCode::OK,
            -32603,
            public_job_error(job.id, error).message,
        ));
    }
    match (job.state, &job.result) {
        (JobState::Succeeded, Some(result)) => Ok(structured_result(result, false)),
        (_, Some(result)) => Ok(structured_result(result, true)),
        (state, None) => {
            let error = match &job.error {
                Some(error) => json!(error),
                None => json!({"reason": state.as_str(), "message": format!("the job {state}")}),
            };
            Ok(error_result(&json!({"job_id": job.id, "error": error})))
        }
    }
}

/// The answer to a call the tool refused: a protocol error in 2025-06-18 for bad arguments, else
/// a tool result the model can read.
pub(crate) fn refused(
    revision: Revision,
    reason: &str,
    message: String,
    field: Option<String>,
) -> Outcome {
    if revision == Revision::V2025_06_18 && reason == "invalid_argument" {
        let mut error = RpcError::invalid_params(message);
        if let Some(field) = field {
            error = error.with_data(json!({ "field": field }));
        }
        return Outcome::Error(error);
    }
    let mut error = json!({"reason": reason, "message": message});
    if let Some(field) = field {
        error["field"] = json!(field);
    }
    Outcome::Json(error_result(&json!({ "error": error })))
}

/// A tool call refused with an error of the shared table: a tool error with the same code as
/// REST's (`reason`), or a JSON-RPC internal error for a server fault (logged here).
pub(crate) fn refused_with(
    revision: Revision,
    error: ApiError,
    request_id: Option<&str>,
) -> Result<Outcome, RpcError> {
    match error.parts() {
        Some((_, code, message, field)) => Ok(refused(
            revision,
            code,
            message.to_string(),
            field.map(str::to_string),
        )),
        None => {
            tracing::error!(error = %error, "an MCP request failed");
            Err(RpcError::internal(request_id))
        }
    }
}

/// A protocol-level refusal (task methods) with an error of the shared table: not found is
/// `-32602`, as the tasks spec words it, a role too low [`FORBIDDEN`], bad arguments `-32602`,
/// a server fault `-32603` (logged here).
pub(crate) fn rpc_error(error: ApiError, request_id: Option<&str>) -> RpcError {
    match error.parts() {
        Some((StatusCode::FORBIDDEN, code, message, _)) => {
            RpcError::new(StatusCode::OK, FORBIDDEN, message.to_string())
                .with_data(json!({ "reason": code }))
        }
        Some((_, _, message, field)) => {
            let error = RpcError::invalid_params(message.to_string());
            match field {
                Some(field) => error.with_data(json!({ "field": field })),
                None => error,
            }
        }
        None => {
            tracing::error!(error = %error, "an MCP request failed");
            RpcError::internal(request_id)
        }
    }
}
