//! The HTTP front: routes, shared state, and the helpers handlers share.
//!
//! Architecture invariant: only this module knows HTTP and MCP/JSON-RPC. Handlers turn
//! requests into [`Submission`](crate::tools::Submission)s and job ids into responses.

mod audit_api;
pub mod auth;
pub mod cross_site;
pub mod denials;
pub mod error;
mod events;
mod jobs;
pub mod mcp;
mod ops;
mod rest;
mod sse;
pub mod telemetry;
mod views;
pub mod well_known;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::{Value, json};

use self::auth::Authenticator;
use self::error::ApiError;
use crate::config::Config;
use crate::drivers::Drivers;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::tools::Tools;

/// What every handler may use.
#[derive(Debug)]
pub struct AppState {
    pub tools: Tools,
    pub queue: Queue,
    pub auth: Authenticator,
    pub metrics: Metrics,
    pub config: Arc<Config>,
    /// Every driver of the server (for `/readyz` and `/metrics`).
    pub drivers: Drivers,
    /// Start-up warnings shown by `/readyz` (e.g. isolation disabled).
    pub warnings: Vec<String>,
    /// Whether `/metrics` is served on the main listener.
    pub metrics_on_main: bool,
    /// Which browser origins may call (every route).
    pub origins: cross_site::OriginPolicy,
    /// Sessions and in-flight calls of the MCP endpoint.
    pub mcp: mcp::McpState,
    /// The sampled audit rows of refused requests.
    pub denials: Arc<denials::DenialLog>,
}

impl AppState {
    /// The jobs service over this server's queue.
    pub(crate) fn jobs(&self) -> crate::jobs::Jobs {
        crate::jobs::Jobs::new(
            self.queue.clone(),
            std::time::Duration::from_secs(self.config.server.sync_wait_max_s),
        )
    }
}

/// Registers every route. Health and metrics are open; everything else needs a key.
pub fn configure(cfg: &mut web::ServiceConfig, metrics_on_main: bool) {
    cfg.route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route(
            well_known::PROTECTED_RESOURCE,
            web::get().to(well_known::protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            web::get().to(well_known::protected_resource),
        );
    if metrics_on_main {
        cfg.route("/metrics", web::get().to(ops::metrics));
    }
    // MCP: its own guard (the key), answering in JSON-RPC. Registered before the scope below,
    // whose `/{tool}` would otherwise take `POST /mcp`. (`cross_site::guard`, wrapped around the
    // whole app, checks `Origin` and the media type of every route first.)
    cfg.service(
        web::resource("/mcp")
            .wrap(from_fn(mcp::guard::guard))
            .route(web::post().to(mcp::post))
            .route(web::get().to(mcp::get))
            .route(web::delete().to(mcp::delete)),
    )
    .service(
        web::resource("/")
            .wrap(from_fn(mcp::guard::guard))
            .route(web::post().to(mcp::post)),
    );
    cfg.service(
        web::scope("")
            .wrap(from_fn(auth::require_key))
            .route("/schema", web::get().to(rest::schema))
            .route("/v1/jobs", web::post().to(jobs::create))
            .route("/v1/jobs", web::get().to(jobs::list))
            .route("/v1/jobs/{id}", web::get().to(jobs::get))
            .route("/v1/jobs/{id}/cancel", web::post().to(jobs::cancel))
            .route("/v1/jobs/{id}/events", web::get().to(events::stream))
            .route("/v1/audit", web::get().to(audit_api::list))
            .route("/{tool}/schema", web::get().to(rest::tool_schema))
            .route("/{tool}", web::post().to(rest::call_tool))
            .default_service(web::to(not_found)),
    );
}

/// Routes of the separate metrics listener.
pub fn configure_metrics(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(ops::metrics))
        .route("/healthz", web::get().to(ops::healthz));
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(
        "not_found",
        format!(
            "no route for {} {}",
            req.method(),
            denials::truncated(req.path(), 256)
        ),
    ))
}

/// The shared state, from a middleware's request (registered on every app).
pub(crate) fn state_of(req: &actix_web::dev::ServiceRequest) -> web::Data<AppState> {
    req.app_data::<web::Data<AppState>>()
        .expect("app state is registered")
        .clone()
}

/// Reads a request body up to `limit` bytes, answering 413 beyond it.
pub(crate) async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the {limit}-byte limit"),
        )
    };
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => too_large(),
            other => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read the request body: {other}"),
            ),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON object body; an empty body is `{}`.
pub(crate) fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    Ok(value)
}

/// The `Idempotency-Key` header, checked.
pub(crate) fn idempotency_header(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    match req.headers().get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key = v.to_str().map_err(|_| {
                ApiError::bad_request("Idempotency-Key", "Idempotency-Key must be printable ASCII")
            })?;
            check_idempotency_key("Idempotency-Key", key).map(Some)
        }
    }
}

pub(crate) fn check_idempotency_key(field: &str, key: &str) -> Result<String, ApiError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            field,
            format!("{field} must be 1-255 printable ASCII characters without spaces"),
        ));
    }
    Ok(key.to_string())
}

/// The `202 Accepted` answer for a job.
pub(crate) fn accepted(job: &crate::store::Job, replayed: bool) -> HttpResponse {
    let status_url = format!("/v1/jobs/{}", job.id);
    let mut response = HttpResponse::Accepted();
    response.insert_header(("location", status_url.clone()));
    if replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    response.json(json!({
        "job_id": job.id,
        "status": job.state,
        "status_url": status_url,
        "events_url": format!("/v1/jobs/{}/events", job.id),
    }))
}
