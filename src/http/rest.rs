//! The LangSwarm-style REST routes: `GET /schema`, `GET /<tool>/schema`, `POST /<tool>`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::caller_of;
use super::error::ApiError;
use super::{AppState, accepted, idempotency_header, parse_object, read_body};
use crate::jobs::take_background;
use crate::store::{Job, JobState};
use crate::tools::Submission;

/// `GET /schema`: the tool list.
pub async fn schema(state: web::Data<AppState>) -> HttpResponse {
    let tasks: Vec<Value> = state
        .tools
        .specs()
        .map(|spec| {
            json!({
                "name": spec.name,
                "description": spec.description,
                "path": format!("/{}", spec.name),
                "schema_path": format!("/{}/schema", spec.name),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "tool": "daytona_mcp",
        "description": "Self-hosted development sandboxes: create sandboxes, run code and shell \
                        commands in them, as jobs that are never lost.",
        "tasks": tasks,
    }))
}

/// `GET /<tool>/schema`.
pub async fn tool_schema(
    state: web::Data<AppState>,
    tool: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let spec = state.tools.spec(&tool).ok_or_else(|| {
        ApiError::not_found(
            "unknown_tool",
            format!("unknown tool `{tool}`; GET /schema lists the tools"),
        )
    })?;
    Ok(HttpResponse::Ok().json(json!({
        "name": spec.name,
        "description": spec.description,
        "input_schema": spec.input_schema,
        "output_schema": spec.output_schema,
        "annotations": spec.annotations,
    })))
}

#[derive(Debug, Deserialize)]
pub struct CallQuery {
    #[serde(rename = "async")]
    asynchronous: Option<bool>,
}

/// Whether the request asks for an asynchronous answer (`Prefer: respond-async`).
fn prefers_async(req: &HttpRequest) -> bool {
    req.headers().get_all("prefer").any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split([',', ';'])
                .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        })
    })
}

/// `POST /<tool>`: runs the tool and answers its output (or 202 with the job id).
pub async fn call_tool(
    state: web::Data<AppState>,
    req: HttpRequest,
    tool: web::Path<String>,
    query: web::Query<CallQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tool = tool.into_inner();
    if state.tools.spec(&tool).is_none() {
        return Err(ApiError::not_found(
            "unknown_tool",
            format!("unknown tool `{tool}`; GET /schema lists the tools"),
        ));
    }
    let body = read_body(payload, state.config.server.body_limit_bytes).await?;
    let mut arguments = parse_object(&body)?;
    let background = take_background(&mut arguments)?;
    let respond_async = background || query.asynchronous.unwrap_or(false) || prefers_async(&req);
    let caller = caller_of(&req);
    let enqueued = state
        .tools
        .submit(Submission {
            tool,
            arguments,
            caller: caller.clone(),
            idempotency_key: idempotency_header(&req)?,
            priority: 0,
            timeout_s: None,
        })
        .await?;
    if respond_async {
        return Ok(accepted(&enqueued.job, !enqueued.created));
    }
    let jobs = state.jobs();
    let job = match jobs.wait(&caller, enqueued.job.id, jobs.max_wait()).await {
        Ok(job) => job,
        // Pruned meanwhile (retention): answer what was enqueued.
        Err(crate::jobs::JobsError::NotFound(_)) => enqueued.job,
        Err(e) => return Err(e.into()),
    };
    Ok(result_response(&job))
}

/// The answer for a job a caller waited on: its result when it has one, an error status when
/// it ended without one, 202 when it is still going.
pub(crate) fn result_response(job: &Job) -> HttpResponse {
    if !job.state.is_terminal() {
        return accepted(job, false);
    }
    let mut response = match (&job.result, job.state, &job.error) {
        (Some(result), _, _) => HttpResponse::Ok().json(result),
        (None, JobState::Cancelled, _) => actix_web::ResponseError::error_response(&ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "cancelled",
            "the job was cancelled before it produced a result",
        )),
        (None, _, Some(error)) => {
            actix_web::ResponseError::error_response(&ApiError::from_job_error(job.id, error))
        }
        (None, _, None) => HttpResponse::Ok().json(json!({})),
    };
    if let Ok(value) = job.id.to_string().parse() {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-job-id"),
            value,
        );
    }
    response
}
