//! What a web page in the operator's browser could make the server do: the first middleware of
//! the main listener, on every route (REST, jobs, MCP, operations, unknown paths).
//!
//! - **`Origin`** (DNS-rebinding and cross-site request protection): a request from a browser
//!   page carries its page's origin; one that is not allowed gets 403 before anything else
//!   (authentication included) and is audited as refused. Requests without an `Origin` (every
//!   non-browser client) pass.
//! - **JSON bodies**: a POST with a `Content-Type` other than JSON (`application/json`,
//!   `…+json`) gets 415, so neither a plain HTML form (`application/x-www-form-urlencoded`,
//!   `multipart/form-data`, `text/plain`: the types a browser sends cross-site without a CORS
//!   preflight) nor `curl -d` without `-H 'Content-Type: application/json'` is read as JSON.
//!   A POST *without* `Content-Type` is accepted as JSON, for clients that send none. A browser
//!   can send one too (`fetch` with an `ArrayBuffer` or `Blob` body sets no type and needs no
//!   preflight), so that case rests on the `Origin` check: browsers add `Origin` to every
//!   cross-site POST (a value of `null` included, which no policy but `*` allows).
//!
//! - **CORS**, on the MCP endpoint only (`/mcp` and `/`), and only for origins the operator
//!   listed in `server.allowed_origins` (or `*`): nothing is opened by default. A preflight
//!   (`OPTIONS` with `Access-Control-Request-Method`) carries no key, so it is answered here,
//!   before authentication: 204 with the MCP methods and headers allowed. Every answer to an
//!   allowed origin then names it (`Access-Control-Allow-Origin`) and exposes the MCP headers
//!   (`Mcp-Session-Id`, …), refusals included, so a page can read a 401. The origin that CORS
//!   opens to is exactly the one the `Origin` check lets through: one policy for both.
//!
//! Answers are JSON-RPC errors on the MCP endpoint (`/mcp`, `POST /`) and the REST error shape
//! elsewhere.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

use super::auth::audit_denied;
use super::error::ApiError;
use super::mcp::guard::error_response;
use super::mcp::protocol::RpcError;

/// Which `Origin` values are accepted.
#[derive(Clone, Debug)]
pub struct OriginPolicy {
    any: bool,
    /// Lowercase serialized origins.
    allowed: Vec<String>,
    /// Whether the operator listed origins (or `*`): only then does the MCP endpoint answer
    /// CORS, since the loopback default is the server's own origin, which needs none.
    cors: bool,
}

impl OriginPolicy {
    /// The configured origins, or the loopback origins on `port` when none are configured.
    pub fn new(configured: &[String], port: u16) -> OriginPolicy {
        if configured.iter().any(|o| o == "*") {
            return OriginPolicy {
                any: true,
                allowed: Vec::new(),
                cors: true,
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
            cors: !configured.is_empty(),
        }
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.any || self.allowed.contains(&origin.trim().to_ascii_lowercase())
    }

    /// Whether the MCP endpoint answers CORS for the origins it allows.
    pub fn cors(&self) -> bool {
        self.cors
    }
}

/// The request headers a page may send to the MCP endpoint: the keys, the body's type, and
/// the Streamable HTTP headers of every revision served.
const CORS_ALLOW_HEADERS: &str = "Authorization, X-API-Key, Content-Type, Accept, \
    Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID";
/// The answer headers a page may read: the session, the negotiated version, and why a key
/// was refused.
const CORS_EXPOSE_HEADERS: &str =
    "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate, Retry-After";
/// How long a browser may reuse a preflight's answer, in seconds.
const CORS_MAX_AGE_S: &str = "600";

/// Whether the request is for the MCP endpoint's paths (any method).
fn is_mcp_path(req: &ServiceRequest) -> bool {
    matches!(req.path(), "/mcp" | "/")
}

/// Adds what every CORS answer to `origin` carries.
fn add_cors_headers(headers: &mut header::HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(CORS_EXPOSE_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The answer to a preflight of the MCP endpoint: 204, with the CORS headers when the endpoint
/// is opened to this origin (without them the browser refuses the request itself).
fn preflight_answer(req: &ServiceRequest, origin: Option<&HeaderValue>) -> HttpResponse {
    let mut response = HttpResponse::NoContent().finish();
    if let Some(origin) = origin {
        let methods = if req.path() == "/mcp" {
            "GET, POST, DELETE"
        } else {
            "POST"
        };
        let headers = response.headers_mut();
        add_cors_headers(headers, origin);
        for (name, value) in [
            (header::ACCESS_CONTROL_ALLOW_METHODS, methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, CORS_ALLOW_HEADERS),
            (header::ACCESS_CONTROL_MAX_AGE, CORS_MAX_AGE_S),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// Whether a `Content-Type` value names JSON (`application/json`, `application/*+json`).
pub(crate) fn is_json(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Whether the request is for the MCP endpoint, which answers in JSON-RPC.
fn is_mcp(req: &ServiceRequest) -> bool {
    req.path() == "/mcp" || (req.path() == "/" && req.method() == Method::POST)
}

fn refusal(
    req: &ServiceRequest,
    status: StatusCode,
    code: &'static str,
    message: &str,
) -> HttpResponse {
    if is_mcp(req) {
        error_response(&RpcError::new(status, -32000, message))
    } else {
        ApiError::new(status, code, message).error_response()
    }
}

/// Middleware: refuses foreign origins (403) and POST bodies that are not JSON (415), and
/// answers CORS on the MCP endpoint for the configured origins.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = super::state_of(&req);
    let origin = req.headers().get(header::ORIGIN).cloned();
    if let Some(origin) = &origin {
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| state.origins.allows(origin));
        if !allowed {
            audit_denied(&state, &req, " (origin refused)").await;
            let response = refusal(
                &req,
                StatusCode::FORBIDDEN,
                "origin_refused",
                "Forbidden: this Origin is not allowed (see server.allowed_origins)",
            );
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    // The origin this answer opens CORS to: an allowed one, on the MCP endpoint, when the
    // operator configured origins.
    let cors_origin = origin.filter(|_| state.origins.cors() && is_mcp_path(&req));
    if req.method() == Method::OPTIONS
        && is_mcp_path(&req)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let response = preflight_answer(&req, cors_origin.as_ref());
        return Ok(req.into_response(response).map_into_right_body());
    }
    if req.method() == Method::POST
        && let Some(content_type) = req.headers().get(header::CONTENT_TYPE)
        && !content_type.to_str().is_ok_and(is_json)
    {
        let mut response = refusal(
            &req,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported Media Type: the body must be JSON, sent with `Content-Type: \
             application/json` (with curl: -H 'Content-Type: application/json', or --json)",
        );
        if let Some(origin) = &cors_origin {
            add_cors_headers(response.headers_mut(), origin);
        }
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    if let Some(origin) = &cors_origin {
        add_cors_headers(response.headers_mut(), origin);
    }
    Ok(response.map_into_left_body())
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

    #[test]
    fn cors_only_for_configured_origins() {
        assert!(!OriginPolicy::new(&[], 8001).cors());
        assert!(OriginPolicy::new(&["http://localhost:6274".to_string()], 8001).cors());
        assert!(OriginPolicy::new(&["*".to_string()], 8001).cors());
    }

    #[test]
    fn json_media_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "text/json+json",
            "",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }
}
