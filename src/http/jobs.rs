//! The jobs API: create, read (with long-poll), list, cancel.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::caller_of;
use super::error::ApiError;
use super::views::{job_view, parse_job_id};
use super::{
    AppState, accepted, check_idempotency_key, idempotency_header, parse_object, read_body,
};
use crate::jobs::{ListRequest, take_background};
use crate::store::CancelOutcome;
use crate::tools::{Submission, args};

const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

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
    take_background(&mut arguments)?;
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
    /// Another tenant's job, or `*` for any tenant (admins only).
    tenant: Option<String>,
}

/// `?tenant=` of the routes of one job.
#[derive(Debug, Deserialize)]
pub struct TenantQuery {
    pub(crate) tenant: Option<String>,
}

/// `GET /v1/jobs/{id}[?wait=SECONDS]`.
pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_job_id(&id)?;
    let jobs = state.jobs();
    let wait = jobs.check_wait("wait", query.wait)?;
    let job = jobs
        .get_in(&caller_of(&req), query.tenant.as_deref(), id, wait)
        .await?;
    Ok(HttpResponse::Ok().json(job_view(&job)))
}

/// Filters and paging of a job listing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    workspace: Option<String>,
    sandbox: Option<String>,
    state: Option<String>,
    tool: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    /// Another tenant's jobs (admins only).
    tenant: Option<String>,
}

/// `GET /v1/jobs`: newest first, one page at a time.
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let request = ListRequest {
        sandbox: query.workspace.or(query.sandbox),
        state: query.state,
        tool: query.tool,
        limit: query.limit,
        cursor: query.cursor,
        tenant: query.tenant,
    };
    let page = state.jobs().list(&caller_of(&req), &request).await?;
    Ok(HttpResponse::Ok().json(json!({
        "jobs": page.jobs.iter().map(job_view).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

/// `POST /v1/jobs/{id}/cancel`.
pub async fn cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_job_id(&id)?;
    let outcome = state
        .jobs()
        .cancel_in(&caller_of(&req), query.tenant.as_deref(), id)
        .await?;
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
