//! Request ids, request spans and HTTP metrics (labelled by route template, never raw path).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use tracing::Instrument;

use super::AppState;

/// The id of the request: the caller's `X-Request-Id` when it is sane, else a fresh UUID.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestId(pub String);

const REQUEST_ID: &str = "x-request-id";

tokio::task_local! {
    /// The id of the request being served, for answers built without the request at hand
    /// (a 500's body names it).
    static CURRENT_REQUEST_ID: String;
}

/// The id of the request this task serves, if it serves one.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

fn sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The `method` label of a request: the standard methods by name, anything else `other`, so
/// that a caller cannot create a metrics series per made-up method.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Every route template the server registers, with its methods (`http::configure` and
/// `http::configure_metrics`): their `http_requests_total{status="200"}` series start at 0, so
/// that the family is there from start-up and the first request shows in `rate()`.
/// `tests/api/monitoring.rs` checks that each is routed.
pub const ROUTES: &[(&str, &str)] = &[
    ("/healthz", "GET"),
    ("/readyz", "GET"),
    ("/mcp", "POST"),
    ("/mcp", "GET"),
    ("/mcp", "DELETE"),
    ("/", "POST"),
    ("/schema", "GET"),
    ("/v1/jobs", "POST"),
    ("/v1/jobs", "GET"),
    ("/v1/jobs/{id}", "GET"),
    ("/v1/jobs/{id}/cancel", "POST"),
    ("/v1/jobs/{id}/events", "GET"),
    ("/v1/audit", "GET"),
    ("/{tool}/schema", "GET"),
    ("/{tool}", "POST"),
];

/// Zero-initialises the request counters of [`ROUTES`] and of `/metrics` (on whichever
/// listener serves it: both count requests the same way).
pub fn init_route_series(metrics: &crate::metrics::Metrics) {
    let metrics_route = [("/metrics", "GET")];
    for (route, method) in ROUTES.iter().chain(metrics_route.iter()) {
        metrics
            .http_requests_total
            .with_label_values(&[route, method, "200"]);
    }
}

/// Bytes of the path kept in the request span (and so in every log line of the request).
const LOGGED_PATH: usize = 256;

/// Middleware: assigns the request id, opens the request span, records metrics.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = method_label(req.method());
    let span = tracing::info_span!("http", request_id = %request_id, method = %method,
        path = %super::denials::truncated(req.path(), LOGGED_PATH));
    let started = Instant::now();
    let mut res = CURRENT_REQUEST_ID
        .scope(request_id.clone(), next.call(req).instrument(span.clone()))
        .await?;
    // A route template (bounded by the routes registered), never the raw path.
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status();
    if let Some(state) = state {
        state
            .metrics
            .http_requests_total
            .with_label_values(&[route.as_str(), method, status.as_str()])
            .inc();
        state
            .metrics
            .http_request_duration_seconds
            .with_label_values(&[route.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    span.in_scope(|| {
        tracing::debug!(status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64,
            route = %route, "request done");
    });
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        for raw in ["ZZMETHOD1", "ZZMETHOD2", "get"] {
            let method = Method::from_bytes(raw.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{raw}");
        }
    }
}
