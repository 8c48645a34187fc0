//! `/.well-known/oauth-protected-resource` (RFC 9728), as the MCP authorization spec uses it:
//! tells OAuth-speaking clients which authorization server issues tokens for this server.
//! Public by design (clients read it before they have a token); it says only what the
//! configuration says. Served only when SSO is configured (`auth.oidc.issuer`).

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::AppState;
use super::error::ApiError;

/// The document's path; `…/mcp` (the path-suffixed form of RFC 9728 §3.1) answers too.
pub const PROTECTED_RESOURCE: &str = "/.well-known/oauth-protected-resource";

pub async fn protected_resource(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let Some(oidc) = state.auth.oidc() else {
        return Err(ApiError::not_found(
            "not_found",
            "single sign-on is not configured on this server (auth.oidc.issuer)",
        ));
    };
    let resource = if state.config.auth.oidc.resource.is_empty() {
        let info = req.connection_info();
        format!("{}://{}/mcp", info.scheme(), info.host())
    } else {
        state.config.auth.oidc.resource.clone()
    };
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "max-age=300"))
        .json(json!({
            "resource": resource,
            "authorization_servers": [oidc.issuer()],
            "bearer_methods_supported": ["header"],
            "resource_name": "daytona-mcp",
        })))
}
