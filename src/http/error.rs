//! Errors as HTTP responses: a status and `{"error": {"code", "message", "field"?}}`. Caller
//! mistakes are 4xx with a message that says what to fix; server faults are a 500 that names
//! the request id and never carries internals.
//!
//! This is the one table of error codes: REST, the jobs API and MCP (whose tool errors carry
//! the same `code` as `reason`) all turn [`SubmitError`] and [`JobsError`] into an
//! [`ApiError`] here. The vocabulary (README "Errors"): `invalid_argument`, `invalid_json`,
//! `not_found` (with `field` naming what was not found: `sandbox_id`, `job_id`),
//! `unknown_tool`, `unauthenticated` (401), `forbidden` (403), `conflict`, `already_finished`,
//! `payload_too_large`, `internal`, and the reasons of failed jobs.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use uuid::Uuid;

use super::telemetry::current_request_id;
use crate::jobs::JobsError;
use crate::store::{ErrorReason, JobError, StoreError};
use crate::tools::SubmitError;

/// The message of a server fault's answer: what happened in general, and the request id under
/// which the log has the details (the current request's when `request_id` is `None`).
pub(crate) fn fault_message(request_id: Option<&str>) -> String {
    match request_id.map(str::to_string).or_else(current_request_id) {
        Some(id) => format!(
            "the server failed to handle this request; its log has the details under request id \
             {id}"
        ),
        None => "the server failed to handle this request; its log has the details".into(),
    }
}

/// Whether a job error is a server fault (`internal`, `panic`), whose text (database errors,
/// panic messages, host paths) must not reach callers.
pub(crate) fn is_fault(error: &JobError) -> bool {
    matches!(error.reason, ErrorReason::Internal | ErrorReason::Panic)
}

/// A job's error as callers see it, in every API: a server fault keeps its reason and loses its
/// text. The tools layer already stores `internal` failures with a generic message (their
/// details go to the log under the job id); panics keep their text in the job's row and the log,
/// for the operator.
pub(crate) fn public_job_error(job_id: Uuid, error: &JobError) -> JobError {
    if !is_fault(error) {
        return error.clone();
    }
    JobError::new(
        error.reason,
        format!(
            "the server failed while running job {job_id} ({}); its log has the details under \
             that job id",
            error.reason.as_str()
        ),
    )
}

/// An error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A caller error with a stable code.
    #[error("{message}")]
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// 429: a rate or quota exceeded; answered with `Retry-After`.
    #[error("{message}")]
    Limited {
        code: &'static str,
        message: String,
        retry_after_s: u64,
    },
    /// A server fault; logged with details, answered without them.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Client {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_request(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Client {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_argument",
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 403: the caller is known, its role is too low.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// The code, message and field of a caller error (`None` for a server fault).
    pub fn parts(&self) -> Option<(StatusCode, &'static str, &str, Option<&str>)> {
        match self {
            ApiError::Client {
                status,
                code,
                message,
                field,
            } => Some((*status, code, message, field.as_deref())),
            ApiError::Limited { code, message, .. } => {
                Some((StatusCode::TOO_MANY_REQUESTS, code, message, None))
            }
            ApiError::Unexpected(_) => None,
        }
    }

    /// The answer for a job that ended without a result. A server fault is logged with the
    /// request id and answered without its text.
    pub fn from_job_error(job_id: Uuid, error: &JobError) -> ApiError {
        let (status, code) = match error.reason {
            ErrorReason::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_argument"),
            ErrorReason::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorReason::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorReason::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ErrorReason::Cancelled => (StatusCode::CONFLICT, "cancelled"),
            ErrorReason::Interrupted => (StatusCode::SERVICE_UNAVAILABLE, "interrupted"),
            ErrorReason::Panic => (StatusCode::INTERNAL_SERVER_ERROR, "panic"),
            ErrorReason::DriverUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "driver_unavailable")
            }
            ErrorReason::NodeGone => (StatusCode::SERVICE_UNAVAILABLE, "node_gone"),
            ErrorReason::ExecutionError => (StatusCode::UNPROCESSABLE_ENTITY, "execution_error"),
            ErrorReason::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if is_fault(error) {
            tracing::error!(job_id = %job_id, reason = error.reason.as_str(),
                error = %error.message, "the job failed with a server fault");
            return ApiError::Client {
                status,
                code,
                message: fault_message(None),
                field: None,
            };
        }
        ApiError::Client {
            status,
            code,
            message: error.message.clone(),
            field: error.field.clone(),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::UnknownTool(name) => ApiError::not_found(
                "unknown_tool",
                format!("unknown tool `{name}`; GET /schema lists the tools"),
            ),
            SubmitError::Invalid(invalid) => ApiError::Client {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_argument",
                message: invalid.message,
                field: invalid.field,
            },
            SubmitError::SandboxNotFound(reference) => ApiError::Client {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!("sandbox `{reference}` not found"),
                field: Some("sandbox_id".into()),
            },
            SubmitError::Forbidden { tool, required } => ApiError::forbidden(format!(
                "`{tool}` with these arguments needs the {} role",
                required.as_str()
            )),
            SubmitError::SandboxExists(name) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("a sandbox named `{name}` already exists"),
            ),
            SubmitError::TemplateNotFound(name) => ApiError::Client {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!(
                    "template `{name}` not found: list_templates shows the templates you can use"
                ),
                field: Some("template".into()),
            },
            SubmitError::TemplateExists { name, in_config } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                if in_config {
                    format!(
                        "a template named `{name}` is defined in the server's configuration, \
                         which a stored template cannot replace or shadow; choose another name"
                    )
                } else {
                    format!(
                        "a template named `{name}` already exists; delete_template it first to \
                         replace it"
                    )
                },
            ),
            SubmitError::QuotaExceeded { kind, limit } => {
                let (message, retry_after_s) = SubmitError::quota_answer(kind, limit);
                ApiError::Limited {
                    code: "quota_exceeded",
                    message,
                    retry_after_s,
                }
            }
            SubmitError::Store(e) => e.into(),
        }
    }
}

/// The code of the answer for an unavailable database; its answers carry `Retry-After`.
pub(crate) const DATABASE_UNAVAILABLE: &str = "database_unavailable";

/// Seconds a caller is asked to wait when the database is unavailable.
pub(crate) const RETRY_AFTER_S: &str = "5";
impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> ApiError {
        match e {
            JobsError::NotFound(id) => ApiError::Client {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!("job {id} not found"),
                field: Some("job_id".into()),
            },
            JobsError::Forbidden { action, required } => {
                ApiError::forbidden(format!("{action} needs the {} role", required.as_str()))
            }
            JobsError::Invalid(invalid) => ApiError::Client {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_argument",
                message: invalid.message,
                field: invalid.field,
            },
            JobsError::Store(e) => ApiError::from(e),
        }
    }
}

impl From<crate::tools::InvalidInput> for ApiError {
    fn from(invalid: crate::tools::InvalidInput) -> ApiError {
        ApiError::Client {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_argument",
            message: invalid.message,
            field: invalid.field,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "the database is unavailable; answering 503");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    DATABASE_UNAVAILABLE,
                    "the database is unavailable; retry in a few seconds (with the same \
                     Idempotency-Key, a retried submission cannot run twice)",
                )
            }
            StoreError::IdempotencyMismatch { key, job_id } => ApiError::Client {
                status: StatusCode::CONFLICT,
                code: "idempotency_key_reused",
                message: format!(
                    "the idempotency key `{key}` was already used for job {job_id} with other \
                     arguments or another tool; use a new key for a different request"
                ),
                field: Some("idempotency_key".into()),
            },
            e => ApiError::Unexpected(e.into()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Client {
                status,
                code,
                message,
                field,
            } => {
                let mut error = json!({"code": code, "message": message});
                if let Some(field) = field {
                    error["field"] = json!(field);
                }
                let mut response = HttpResponse::build(*status);
                if *code == DATABASE_UNAVAILABLE {
                    response.insert_header((actix_web::http::header::RETRY_AFTER, RETRY_AFTER_S));
                }
                if *status == StatusCode::UNAUTHORIZED {
                    // Every 401, on every route, says how to authenticate (RFC 6750).
                    response.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
                }
                response.json(json!({ "error": error }))
            }
            ApiError::Limited {
                code,
                message,
                retry_after_s,
            } => HttpResponse::TooManyRequests()
                .insert_header(("retry-after", retry_after_s.to_string()))
                .json(json!({"error": {"code": code, "message": message}})),
            ApiError::Unexpected(e) => {
                tracing::error!(error = ?e, "request failed");
                HttpResponse::InternalServerError().json(json!({
                    "error": {"code": "internal", "message": fault_message(None)}
                }))
            }
        }
    }
}
