//! The jobs API: create, read (with long-poll), list, cancel.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::caller_of;
use super::error::{ApiError, public_job_error};
use super::{
    AppState, accepted, check_idempotency_key, idempotency_header, parse_object, read_body,
};
use crate::audit::summarize;
use crate::store::{CancelOutcome, Job, JobFilter, JobState};
use crate::tools::{Submission, args, workspace_key};

/// Most jobs in one page.
const MAX_PAGE: u32 = 200;
const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

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

fn job_not_found(id: Uuid) -> ApiError {
    ApiError::not_found("job_not_found", format!("job {id} not found"))
}

/// Body of `POST /v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    tool: String,
    #[serde(default)]
    arguments: Option<Value>,
    idempotency_key: Option<String>,
    priority: Option<i32>,
    timeout_s: Option<f64>,
}

/// `POST /v1/jobs`: enqueues a tool call and answers 202 at once.
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, state.config.server.body_limit_bytes).await?;
    let body = parse_object(&body)?;
    let request: CreateJob = args::parse(&body).map_err(|e| ApiError::Client {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_argument",
        message: e.message,
        field: e.field,
    })?;
    let mut arguments = request.arguments.unwrap_or_else(|| json!({}));
    if !arguments.is_object() {
        return Err(ApiError::bad_request(
            "arguments",
            "arguments must be a JSON object",
        ));
    }
    // `background` means nothing here: every job is answered at once.
    super::rest::take_background(&mut arguments)?;
    let priority = request.priority.unwrap_or(0);
    if !PRIORITY_RANGE.contains(&priority) {
        return Err(ApiError::bad_request(
            "priority",
            "priority must be between -1000 and 1000 (larger runs first)",
        ));
    }
    let idempotency_key = match (request.idempotency_key, idempotency_header(&req)?) {
        (Some(body), Some(header)) if body != header => {
            return Err(ApiError::bad_request(
                "idempotency_key",
                "idempotency_key and the Idempotency-Key header differ",
            ));
        }
        (Some(body), _) => Some(check_idempotency_key("idempotency_key", &body)?),
        (None, header) => header,
    };
    let enqueued = state
        .tools
        .submit(Submission {
            tool: request.tool,
            arguments,
            caller: caller_of(&req),
            idempotency_key,
            priority,
            timeout_s: request.timeout_s,
        })
        .await?;
    Ok(accepted(&enqueued.job, !enqueued.created))
}

#[derive(Debug, Deserialize)]
pub struct GetQuery {
    wait: Option<f64>,
}

/// `GET /v1/jobs/{id}[?wait=SECONDS]`.
pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_job_id(&id)?;
    let caller = caller_of(&req);
    let max = state.config.server.sync_wait_max_s as f64;
    let wait = match query.wait {
        None => 0.0,
        Some(w) if (0.0..=max).contains(&w) => w,
        Some(_) => {
            return Err(ApiError::bad_request(
                "wait",
                format!("wait must be between 0 and {max} seconds"),
            ));
        }
    };
    let job = if wait > 0.0 {
        state
            .queue
            .wait(Some(&caller.tenant), id, Duration::from_secs_f64(wait))
            .await?
    } else {
        state.queue.store().job(Some(&caller.tenant), id).await?
    };
    let job = job.ok_or_else(|| job_not_found(id))?;
    Ok(HttpResponse::Ok().json(job_view(&job)))
}

/// Filters and paging of a job listing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub(crate) workspace: Option<String>,
    pub(crate) sandbox: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) tool: Option<String>,
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<String>,
}

/// `GET /v1/jobs`: newest first, one page at a time.
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(&req);
    Ok(HttpResponse::Ok().json(list_page(&state, &caller.tenant, &query).await?))
}

/// A page of `tenant`'s jobs: `{jobs, next_cursor}`. Shared with the MCP `list_jobs` tool.
pub(crate) async fn list_page(
    state: &AppState,
    tenant: &str,
    query: &ListQuery,
) -> Result<Value, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let job_state = query
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "state",
                    format!(
                        "`{s}` is not a job state (queued, running, succeeded, failed, cancelled)"
                    ),
                )
            })
        })
        .transpose()?;
    let before_seq = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::bad_request("cursor", "cursor is not one this server issued")
            })
        })
        .transpose()?;
    let workspace = match query.workspace.as_deref().or(query.sandbox.as_deref()) {
        None => None,
        Some(reference) => {
            // A sandbox id is shown as its name's workspace; a deleted sandbox by its name.
            let name = match state.queue.store().sandbox(tenant, reference).await? {
                Some(sandbox) => sandbox.name,
                None => reference.to_string(),
            };
            Some(workspace_key(tenant, &name))
        }
    };
    let jobs = state
        .queue
        .store()
        .list_jobs(&JobFilter {
            tenant: Some(tenant.to_string()),
            workspace,
            state: job_state,
            tool: query.tool.clone(),
            before_seq,
            limit,
        })
        .await?;
    let next_cursor = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| j.seq.to_string()))
        .flatten();
    Ok(json!({
        "jobs": jobs.iter().map(job_view).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    }))
}

/// `POST /v1/jobs/{id}/cancel`.
pub async fn cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_job_id(&id)?;
    let caller = caller_of(&req);
    let outcome = state
        .queue
        .cancel(&caller.tenant, id)
        .await?
        .ok_or_else(|| job_not_found(id))?;
    let entry = caller.entry("jobs.cancel", None, Some(id), "accepted", None);
    if let Err(e) = state.queue.store().append_audit(&entry).await {
        tracing::error!(error = %e, "cannot write audit row for a cancel");
    }
    let (status, job, message) = match &outcome {
        CancelOutcome::Cancelled(job) => (StatusCode::OK, job, "cancelled before it started"),
        CancelOutcome::Requested(job) => (
            StatusCode::ACCEPTED,
            job,
            "cancel requested; the running command is being killed",
        ),
        CancelOutcome::AlreadyFinished(job) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_finished",
                format!("job {id} already finished as {}", job.state),
            ));
        }
    };
    Ok(HttpResponse::build(status).json(json!({
        "job_id": job.id,
        "status": job.state,
        "message": message,
        "status_url": format!("/v1/jobs/{}", job.id),
    })))
}
