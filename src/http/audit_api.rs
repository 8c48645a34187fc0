//! `GET /v1/audit`: the audit log, oldest first, one page at a time (admins only).
//!
//! Filters: `since`, `until` (RFC 3339; `since` inclusive, `until` exclusive), `actor` (a key
//! id), `tenant`, `sandbox` (a sandbox name, in any tenant unless `tenant` is given too),
//! `tool` (the action: a tool name, `jobs.cancel`, or `METHOD /path` for a refused request),
//! `outcome`; `limit` (1–1000, default 100) and `cursor` (the `next_cursor` of the previous
//! page). `daytona-mcp audit export` takes the same filters.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::caller_of;
use super::error::ApiError;
use crate::audit::Role;
use crate::store::AuditFilter;

/// Most rows in one page.
const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
    tenant: Option<String>,
    sandbox: Option<String>,
    tool: Option<String>,
    outcome: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn time(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::bad_request(
                    field,
                    format!("{field} must be an RFC 3339 time, e.g. 2026-12-01T15:00:00Z"),
                )
            })
    })
    .transpose()
}

/// `GET /v1/audit`.
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_of(&req);
    if !caller.may(Role::Admin) {
        let entry = caller.entry("audit.list", None, None, "denied", None);
        if let Err(e) = state.queue.store().append_audit(&entry).await {
            tracing::error!(error = %e, "cannot write the audit row of a refused request");
        }
        return Err(ApiError::forbidden(
            "reading the audit log needs the admin role",
        ));
    }
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let after_id = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::bad_request("cursor", "cursor is not one this server issued")
            })
        })
        .transpose()?;
    let (workspace, sandbox) = match (&query.tenant, query.sandbox) {
        (Some(tenant), Some(name)) => (Some(crate::tools::workspace_key(tenant, &name)), None),
        (_, sandbox) => (None, sandbox),
    };
    let filter = AuditFilter {
        tenant: query.tenant,
        since: time("since", query.since.as_deref())?,
        until: time("until", query.until.as_deref())?,
        key_id: query.actor,
        workspace,
        action: query.tool,
        sandbox,
        outcome: query.outcome,
        after_id,
        limit,
    };
    let rows = state.queue.store().list_audit(&filter).await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"rows": rows, "next_cursor": next_cursor})))
}
