//! What every MCP request passes before it is read: the `Origin` check (DNS-rebinding
//! protection: a web page must not drive a local server from a browser) and authentication,
//! both answered as JSON-RPC errors.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

use super::protocol::{RpcError, failure};
use crate::http::auth::{audit_denied, authenticate_request};
use crate::http::error::ApiError;

/// Which `Origin` values are accepted. Requests without an `Origin` (every non-browser client)
/// pass; a browser's request from any other origin gets 403.
#[derive(Clone, Debug)]
pub struct OriginPolicy {
    any: bool,
    /// Lowercase serialized origins.
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// The configured origins, or the loopback origins on `port` when none are configured.
    pub fn new(configured: &[String], port: u16) -> OriginPolicy {
        if configured.iter().any(|o| o == "*") {
            return OriginPolicy {
                any: true,
                allowed: Vec::new(),
            };
        }
        let allowed = if configured.is_empty() {
            ["localhost", "127.0.0.1", "[::1]"]
                .iter()
                .flat_map(|host| {
                    ["http", "https"]
                        .iter()
                        .map(move |scheme| format!("{scheme}://{host}:{port}"))
                })
                .collect()
        } else {
            configured
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect()
        };
        OriginPolicy {
            any: false,
            allowed,
        }
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.any || self.allowed.contains(&origin.trim().to_ascii_lowercase())
    }
}

/// A JSON-RPC error answer without an id (the body was not read yet).
pub(crate) fn error_response(error: &RpcError) -> HttpResponse {
    HttpResponse::build(error.status).json(failure(None, error))
}

/// Middleware of the MCP routes: a foreign `Origin` gets 403, a missing or wrong key 401.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = crate::http::state_of(&req);
    if let Some(origin) = req.headers().get("origin") {
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| state.mcp.origins.allows(origin));
        if !allowed {
            // A refused request is audited like one without a valid key.
            audit_denied(&state, &req, " (origin refused)").await;
            let error = RpcError::new(
                StatusCode::FORBIDDEN,
                -32000,
                "Forbidden: this Origin is not allowed (see server.allowed_origins)",
            );
            return Ok(req
                .into_response(error_response(&error))
                .map_into_right_body());
        }
    }
    if let Err(error) = authenticate_request(&state, &req).await {
        let response = match &error {
            ApiError::Client {
                status, message, ..
            } => {
                let mut response = error_response(&RpcError::new(*status, -32000, message.clone()));
                if *status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        actix_web::http::header::WWW_AUTHENTICATE,
                        actix_web::http::header::HeaderValue::from_static("Bearer"),
                    );
                }
                response
            }
            ApiError::Unexpected(_) => error.error_response(),
        };
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_by_default() {
        let policy = OriginPolicy::new(&[], 8001);
        assert!(policy.allows("http://localhost:8001"));
        assert!(policy.allows("http://127.0.0.1:8001"));
        assert!(policy.allows("http://[::1]:8001"));
        assert!(!policy.allows("http://localhost:9999"));
        assert!(!policy.allows("http://evil.example.com"));
        assert!(!policy.allows("null"));
    }

    #[test]
    fn configured_origins_replace_the_default() {
        let policy = OriginPolicy::new(&["https://App.example.com/".to_string()], 8001);
        assert!(policy.allows("https://app.example.com"));
        assert!(!policy.allows("http://localhost:8001"));
        assert!(OriginPolicy::new(&["*".to_string()], 1).allows("http://anything"));
    }
}
