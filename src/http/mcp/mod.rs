//! The MCP endpoint: JSON-RPC 2.0 over Streamable HTTP at `/mcp` (and `POST /`), serving
//! protocol revisions 2025-06-18, 2025-11-25 and 2026-07-28 on one endpoint (the 2025 handshake
//! revisions and the stateless one side by side).
//!
//! How a POST is routed:
//! - with `Mcp-Session-Id`: the legacy session it names (404 when unknown or expired);
//! - with the per-request `_meta` of 2026-07-28, or an `MCP-Protocol-Version` header that is not
//!   a 2025-era version: the stateless revision, checked in the spec's order (`_meta` → -32602,
//!   headers → -32020, version → -32022);
//! - `initialize`: a new legacy session (the version is negotiated; the id comes back in
//!   `Mcp-Session-Id`);
//! - a body without `"jsonrpc"` (LangSwarm's `mcpremote`): served as 2025-11-25 without a
//!   session;
//! - anything else: 400, a session is required.
//!
//! `GET` opens a session's standalone stream (or resumes a POST stream with `Last-Event-ID`);
//! `DELETE` ends a session. Both answer 405 to a stateless client. Tool calls are jobs (see
//! [`tools`]); tasks are jobs too (see [`tasks`]).

pub mod guard;
mod inflight;
mod job_tools;
pub mod protocol;
mod results;
pub mod session;
mod sse;
mod tasks;
mod tools;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use self::guard::error_response;
use self::inflight::InFlight;
use self::protocol::{
    Kind, LogLevel, META_CLIENT_CAPABILITIES, META_LOG_LEVEL, META_PROTOCOL_VERSION,
    META_SERVER_INFO, Message, Revision, RpcError, decode_header_value, failure, header,
    is_handshake_version, parse_message, success,
};
use self::results::Outcome;
use self::session::{Session, Sessions};
use super::AppState;
use super::auth::caller_of;
use crate::audit::Caller;
use crate::config::Config;

/// What the MCP endpoint keeps between requests.
#[derive(Debug)]
pub struct McpState {
    /// Legacy sessions of this node.
    pub sessions: Sessions,
    /// Synchronous calls that `notifications/cancelled` can cancel.
    pub in_flight: InFlight,
}

impl McpState {
    pub fn new(config: &Config) -> McpState {
        McpState {
            sessions: Sessions::new(
                Duration::from_secs(config.mcp.session_idle_s),
                config.mcp.max_sessions,
                config.mcp.max_sessions_per_key,
            ),
            in_flight: InFlight::default(),
        }
    }
}

/// What a request is served with, once routed.
pub(crate) struct Ctx {
    pub state: web::Data<AppState>,
    pub caller: Caller,
    pub revision: Revision,
    /// The legacy session, if the request has one.
    pub session: Option<Arc<Session>>,
    /// The client's capabilities: the session's, or the request's own (2026-07-28).
    pub client_capabilities: Value,
    /// The log level the client asked for (`logging/setLevel`, or the request's `_meta`).
    pub log_level: Option<LogLevel>,
    /// `params._meta.progressToken`.
    pub progress_token: Option<Value>,
    /// The client accepts an SSE answer.
    pub accepts_sse: bool,
    /// Who the request's ids belong to, for `notifications/cancelled`.
    scope: String,
}

impl Ctx {
    /// Whether the client declared extension `id` in its capabilities.
    pub fn declares_extension(&self, id: &str) -> bool {
        self.client_capabilities
            .get("extensions")
            .and_then(|e| e.get(id))
            .is_some()
    }

    pub fn scope(&self) -> String {
        self.scope.clone()
    }
}

/// The server's description.
fn server_info() -> Value {
    json!({
        "name": "daytona-mcp",
        "title": "daytona-mcp: self-hosted development sandboxes",
        "version": env!("CARGO_PKG_VERSION"),
    })
}

const INSTRUCTIONS: &str = "Create a sandbox with create_sandbox, then run shell commands \
    (execute_shell) or programs (execute_code) in it by its sandbox_id or name; a non-zero \
    exit_code is a normal result. Every call is a job: pass background: true to get a job_id at \
    once, then read it with get_job (wait_s waits) or stop it with cancel_job; list_jobs lists \
    them. Send a progressToken to receive progress and the output as it is produced.";

/// Adds what every result of the stateless revision carries: `resultType` and the server's
/// description in `_meta`. Legacy results are left exactly as they are (`ping` must be `{}`).
pub(crate) fn decorate(revision: Revision, mut result: Value) -> Value {
    if !revision.is_modern() {
        return result;
    }
    if let Some(object) = result.as_object_mut() {
        object
            .entry("resultType")
            .or_insert_with(|| json!("complete"));
        let meta = object.entry("_meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(META_SERVER_INFO.into(), server_info());
        }
    }
    result
}

fn answer(id: Option<&Value>, error: &RpcError) -> HttpResponse {
    let mut response = HttpResponse::build(error.status);
    // A 503 (the database is unavailable) says when to retry, as the REST answers do.
    if error.status == actix_web::http::StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header((
            actix_web::http::header::RETRY_AFTER,
            crate::http::error::RETRY_AFTER_S,
        ));
    }
    response.json(failure(id, error))
}

fn accepted() -> HttpResponse {
    HttpResponse::Accepted().finish()
}

/// Whether an `Accept` header lists a media type (or a wildcard covering it).
fn accepts(req: &HttpRequest, media: &str) -> bool {
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    req.headers().get_all(header::ACCEPT).any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|item| {
                let item = item
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                item == media || item == "*/*" || item == format!("{kind}/*")
            })
        })
    })
}

/// `POST /mcp` and `POST /`: one JSON-RPC message.
pub async fn post(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    // The media type (JSON) was checked for every route by `cross_site::guard`.
    let has_accept = req.headers().contains_key(header::ACCEPT);
    let accepts_sse = accepts(&req, "text/event-stream");
    if has_accept && !accepts_sse && !accepts(&req, "application/json") {
        return answer(
            None,
            &RpcError::new(
                StatusCode::NOT_ACCEPTABLE,
                -32000,
                "Not Acceptable: the client must accept application/json and text/event-stream",
            ),
        );
    }
    let limit = state.config.server.body_limit_bytes;
    let body = match super::read_body(payload, limit).await {
        Ok(body) => body,
        Err(super::error::ApiError::Client {
            status, message, ..
        }) => return answer(None, &RpcError::new(status, -32600, message)),
        Err(_) => return answer(None, &RpcError::internal(None)),
    };
    let message = match parse_message(&body) {
        Ok(message) => message,
        Err((id, error)) => return answer(id.as_ref(), &error),
    };
    match route(state, &req, message, accepts_sse).await {
        Ok(response) => response,
        Err((id, error)) => answer(id.as_ref(), &error),
    }
}

type Routed = Result<HttpResponse, (Option<Value>, RpcError)>;

async fn route(
    state: web::Data<AppState>,
    req: &HttpRequest,
    message: Message,
    accepts_sse: bool,
) -> Routed {
    let id = message.id.clone();
    let fail = |error: RpcError| Err((id.clone(), error));
    let caller = caller_of(req);
    let session_header = match header(req, "mcp-session-id") {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let version_header = match header(req, "mcp-protocol-version") {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    if let Some(session_id) = session_header {
        let Some(session) = state.mcp.sessions.get(session_id, &caller.tenant) else {
            return fail(RpcError::session_not_found());
        };
        if let Some(version) = version_header
            && Revision::parse(version).is_none_or(Revision::is_modern)
        {
            return fail(RpcError::unsupported_version_header(version));
        }
        if message.method == "initialize" {
            return fail(RpcError::invalid_request(
                "Invalid Request: this session is already initialized; send initialize without \
                 Mcp-Session-Id to start another",
            ));
        }
        let ctx = legacy_ctx(state, caller, Some(session), &message, accepts_sse);
        return legacy(ctx, message).await;
    }
    let modern =
        message.has_modern_meta() || version_header.is_some_and(|v| !is_handshake_version(v));
    if modern {
        return modern_request(state, req, caller, message, version_header, accepts_sse).await;
    }
    if message.method == "initialize" {
        return initialize(&state, &caller, &message);
    }
    if message.lenient {
        let ctx = legacy_ctx(state, caller, None, &message, accepts_sse);
        return legacy(ctx, message).await;
    }
    if message.kind == Kind::Response {
        return Ok(accepted());
    }
    fail(RpcError::session_required())
}

fn progress_token(message: &Message) -> Option<Value> {
    message
        .meta()
        .and_then(|m| m.get("progressToken"))
        .filter(|t| t.is_string() || t.is_i64() || t.is_u64())
        .cloned()
}

fn legacy_ctx(
    state: web::Data<AppState>,
    caller: Caller,
    session: Option<Arc<Session>>,
    message: &Message,
    accepts_sse: bool,
) -> Ctx {
    let (revision, capabilities, log_level, scope) = match &session {
        Some(s) => (
            s.revision,
            s.client_capabilities.clone(),
            s.log_level(),
            format!("session:{}", s.id),
        ),
        None => (
            Revision::LATEST_LEGACY,
            json!({}),
            None,
            sessionless_scope(&caller),
        ),
    };
    Ctx {
        progress_token: progress_token(message),
        state,
        caller,
        revision,
        session,
        client_capabilities: capabilities,
        log_level,
        accepts_sse,
        scope,
    }
}

fn sessionless_scope(caller: &Caller) -> String {
    format!(
        "caller:{}|{}|{}",
        caller.tenant,
        caller.key_id.as_deref().unwrap_or(""),
        caller.address.as_deref().unwrap_or("")
    )
}

/// The length of `value` as JSON text, without building the text.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("counting JSON cannot fail");
    count.0
}

/// `initialize`: negotiates the version and opens a session.
fn initialize(state: &AppState, caller: &Caller, message: &Message) -> Routed {
    let Some(id) = message.id.clone() else {
        return Err((
            None,
            RpcError::invalid_request("initialize is a request: give it an id"),
        ));
    };
    // The client's version when this server serves it, else the newest legacy one: a client
    // that cannot use it disconnects.
    let revision = message
        .str_param("protocolVersion")
        .and_then(Revision::parse)
        .filter(|r| !r.is_modern())
        .unwrap_or(Revision::LATEST_LEGACY);
    let empty = json!({});
    let capabilities = message
        .params
        .get("capabilities")
        .filter(|c| c.is_object())
        .unwrap_or(&empty);
    let client_info = message.params.get("clientInfo").unwrap_or(&Value::Null);
    // The session keeps these for its life: refuse what no client needs, so that sessions
    // cannot be made to hold much memory.
    for (field, value, max) in [
        (
            "capabilities",
            capabilities,
            session::MAX_CAPABILITIES_BYTES,
        ),
        ("clientInfo", client_info, session::MAX_CLIENT_INFO_BYTES),
    ] {
        let size = json_size(value);
        if size > max {
            return Err((
                Some(id),
                RpcError::invalid_params(format!(
                    "Invalid params: {field} is {size} bytes of JSON; at most {max} bytes are \
                     accepted"
                )),
            ));
        }
    }
    let session = state.mcp.sessions.create(
        &caller.tenant,
        caller.key_id.as_deref(),
        revision,
        client_info,
        capabilities.clone(),
    );
    let mut server_capabilities = json!({
        "logging": {},
        "tools": {"listChanged": false},
    });
    if revision == Revision::V2025_11_25 {
        server_capabilities["tasks"] = json!({
            "list": {},
            "cancel": {},
            "requests": {"tools": {"call": {}}},
        });
    }
    let result = json!({
        "protocolVersion": revision.as_str(),
        "capabilities": server_capabilities,
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    });
    tracing::debug!(session = %session.id, version = revision.as_str(), "MCP session opened");
    Ok(HttpResponse::Ok()
        .insert_header(("mcp-session-id", session.id.clone()))
        .json(success(&id, result)))
}

/// Serves a request of the 2025 revisions.
async fn legacy(ctx: Ctx, message: Message) -> Routed {
    match message.kind {
        Kind::Response => return Ok(accepted()),
        Kind::Notification => {
            if message.method == "notifications/cancelled" {
                cancel_request(&ctx, &message.params).await;
            }
            return Ok(accepted());
        }
        Kind::Request => {}
    }
    let id = message.id.clone().unwrap_or(Value::Null);
    let params = &message.params;
    let outcome = match message.method.as_str() {
        "ping" => Ok(Outcome::Json(json!({}))),
        "tools/list" => tools::list(&ctx, params).map(Outcome::Json),
        "tools/call" => tools::call(&ctx, &id, params).await,
        "logging/setLevel" => set_level(&ctx, params).map(Outcome::Json),
        "tasks/get" if tasks::is_task_method("tasks/get", ctx.revision) => {
            tasks::get(&ctx, params).await.map(Outcome::Json)
        }
        "tasks/result" if tasks::is_task_method("tasks/result", ctx.revision) => {
            tasks::result(&ctx, params).await.map(Outcome::Json)
        }
        "tasks/list" if tasks::is_task_method("tasks/list", ctx.revision) => {
            tasks::list(&ctx, params).await.map(Outcome::Json)
        }
        "tasks/cancel" if tasks::is_task_method("tasks/cancel", ctx.revision) => {
            tasks::cancel(&ctx, params).await.map(Outcome::Json)
        }
        method => Err(RpcError::method_not_found(method, ctx.revision)),
    };
    Ok(respond(&ctx, &id, outcome))
}

/// Turns a handler's outcome into the HTTP answer.
fn respond(ctx: &Ctx, id: &Value, outcome: Result<Outcome, RpcError>) -> HttpResponse {
    match outcome {
        Ok(Outcome::Json(result)) => {
            HttpResponse::Ok().json(success(id, decorate(ctx.revision, result)))
        }
        Ok(Outcome::Http(response)) => response,
        Ok(Outcome::Error(error)) | Err(error) => answer(Some(id), &error),
    }
}

/// `logging/setLevel` (legacy only).
fn set_level(ctx: &Ctx, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let level = params
        .get("level")
        .and_then(Value::as_str)
        .and_then(LogLevel::parse)
        .ok_or_else(|| {
            RpcError::invalid_params(
                "`level` must be one of debug, info, notice, warning, error, critical, alert, \
                 emergency",
            )
        })?;
    if let Some(session) = &ctx.session {
        session.set_log_level(level);
    }
    Ok(json!({}))
}

/// `notifications/cancelled`: cancels the job behind a request still in flight.
async fn cancel_request(ctx: &Ctx, params: &Map<String, Value>) {
    let Some(request_id) = params.get("requestId") else {
        return;
    };
    let Some((tenant, job)) = ctx.state.mcp.in_flight.job(&ctx.scope, request_id) else {
        // Unknown or already answered: nothing to do (the spec says to ignore it).
        return;
    };
    tracing::info!(job_id = %job, "notifications/cancelled: cancelling the call's job");
    // The in-flight entry is this caller's own call (its scope holds tenant and key).
    let caller = crate::audit::Caller {
        tenant,
        ..ctx.caller.clone()
    };
    if let Err(e) = ctx.state.jobs().cancel_abandoned(&caller, job).await {
        tracing::warn!(error = %e, job_id = %job, "cannot cancel a job for notifications/cancelled");
    }
}

/// Serves a request of the stateless revision, after checking what it must carry.
async fn modern_request(
    state: web::Data<AppState>,
    req: &HttpRequest,
    caller: Caller,
    message: Message,
    version_header: Option<&str>,
    accepts_sse: bool,
) -> Routed {
    let id = message.id.clone();
    let fail = |error: RpcError| Err((id.clone(), error));
    match message.kind {
        Kind::Notification => return Ok(accepted()),
        Kind::Response => {
            return fail(RpcError::invalid_request(
                "clients must not send JSON-RPC responses in protocol revision 2026-07-28",
            ));
        }
        Kind::Request => {}
    }
    // 1. The per-request `_meta`.
    let Some(meta) = message.meta() else {
        return fail(RpcError::malformed_meta(
            "params._meta is required in protocol revision 2026-07-28 (with \
             io.modelcontextprotocol/protocolVersion and clientCapabilities)",
        ));
    };
    let Some(meta_version) = meta.get(META_PROTOCOL_VERSION) else {
        return fail(RpcError::malformed_meta(format!(
            "params._meta[\"{META_PROTOCOL_VERSION}\"] is required"
        )));
    };
    let Some(capabilities) = meta.get(META_CLIENT_CAPABILITIES).filter(|c| c.is_object()) else {
        return fail(RpcError::malformed_meta(format!(
            "params._meta[\"{META_CLIENT_CAPABILITIES}\"] is required (an object; {{}} for none)"
        )));
    };
    let Some(meta_version_str) = meta_version.as_str() else {
        return fail(RpcError::malformed_meta(format!(
            "params._meta[\"{META_PROTOCOL_VERSION}\"] must be a string"
        )));
    };
    // 2. The headers must repeat the body.
    match version_header {
        None => {
            return fail(RpcError::header_mismatch(
                "the MCP-Protocol-Version header is required",
            ));
        }
        Some(v) if v != meta_version_str => {
            return fail(RpcError::header_mismatch(format!(
                "MCP-Protocol-Version `{v}` differs from _meta protocolVersion `{meta_version_str}`"
            )));
        }
        Some(_) => {}
    }
    if let Err(e) = check_method_headers(req, &message) {
        return fail(e);
    }
    // 3. The version must be one this path serves.
    if Revision::parse(meta_version_str) != Some(Revision::V2026_07_28) {
        return fail(RpcError::unsupported_version(meta_version));
    }
    let log_level = match meta.get(META_LOG_LEVEL) {
        None | Some(Value::Null) => None,
        Some(level) => match level.as_str().and_then(LogLevel::parse) {
            Some(level) => Some(level),
            None => {
                return fail(RpcError::invalid_params(format!(
                    "params._meta[\"{META_LOG_LEVEL}\"] is not a log level"
                )));
            }
        },
    };
    let ctx = Ctx {
        progress_token: progress_token(&message),
        scope: sessionless_scope(&caller),
        state,
        caller,
        revision: Revision::V2026_07_28,
        session: None,
        client_capabilities: capabilities.clone(),
        log_level,
        accepts_sse,
    };
    let id = message.id.clone().unwrap_or(Value::Null);
    let params = &message.params;
    let outcome = match message.method.as_str() {
        "server/discover" => Ok(Outcome::Json(discover())),
        "tools/list" => tools::list(&ctx, params).map(Outcome::Json),
        "tools/call" => tools::call(&ctx, &id, params).await,
        "tasks/get" => tasks::get(&ctx, params).await.map(Outcome::Json),
        "tasks/cancel" => tasks::cancel(&ctx, params).await.map(Outcome::Json),
        "tasks/update" => tasks::update(&ctx, params).await.map(Outcome::Json),
        method => Err(RpcError::method_not_found(method, ctx.revision)),
    };
    Ok(respond(&ctx, &id, outcome))
}

/// `Mcp-Method` must name the body's method, and `Mcp-Name` its tool or task (SEP-2243).
fn check_method_headers(req: &HttpRequest, message: &Message) -> Result<(), RpcError> {
    match header(req, "mcp-method")? {
        None => {
            return Err(RpcError::header_mismatch(
                "the Mcp-Method header is required",
            ));
        }
        Some(method) if method != message.method => {
            return Err(RpcError::header_mismatch(format!(
                "Mcp-Method `{method}` differs from the body's method `{}`",
                message.method
            )));
        }
        Some(_) => {}
    }
    let named = match message.method.as_str() {
        "tools/call" | "prompts/get" => message.params.get("name"),
        "resources/read" => message.params.get("uri"),
        m if m.starts_with("tasks/") => message.params.get("taskId"),
        _ => return Ok(()),
    };
    let name_header = header(req, "mcp-name")?;
    match (named.and_then(Value::as_str), name_header) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(RpcError::header_mismatch(
            "the Mcp-Name header is required for this method",
        )),
        (Some(name), Some(raw)) => match decode_header_value(raw) {
            Some(decoded) if decoded == name => Ok(()),
            _ => Err(RpcError::header_mismatch(format!(
                "Mcp-Name does not match the body's `{name}`"
            ))),
        },
    }
}

/// `server/discover` (2026-07-28).
fn discover() -> Value {
    json!({
        "supportedVersions": Revision::supported(),
        "capabilities": {
            "logging": {},
            "tools": {"listChanged": false},
            "extensions": {protocol::TASKS_EXTENSION: {}},
        },
        "instructions": INSTRUCTIONS,
        "ttlMs": 300_000,
        "cacheScope": "public",
    })
}

/// The session a `GET` or `DELETE` names, or the answer for a request without one: 405 for a
/// stateless client (which has nothing to open or end), 400 for a legacy one.
fn session_of(state: &AppState, req: &HttpRequest) -> Result<Arc<Session>, HttpResponse> {
    let fail = |e: RpcError| error_response(&e);
    let session_header = header(req, "mcp-session-id").map_err(fail)?;
    let version_header = header(req, "mcp-protocol-version").map_err(fail)?;
    let Some(session_id) = session_header else {
        if version_header.is_some_and(is_handshake_version) {
            return Err(fail(RpcError::session_required()));
        }
        return Err(HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "POST"))
            .json(failure(
                None,
                &RpcError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    -32000,
                    "Method Not Allowed: without a session (protocol revision 2026-07-28), \
                     only POST is served",
                ),
            )));
    };
    let tenant = caller_of(req).tenant;
    state
        .mcp
        .sessions
        .get(session_id, &tenant)
        .ok_or_else(|| fail(RpcError::session_not_found()))
}

/// `GET /mcp`: the session's standalone SSE stream, or a POST stream resumed after
/// `Last-Event-ID`.
pub async fn get(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = match session_of(&state, &req) {
        Ok(session) => session,
        Err(response) => return response,
    };
    if !accepts(&req, "text/event-stream") {
        return error_response(&RpcError::new(
            StatusCode::NOT_ACCEPTABLE,
            -32000,
            "Not Acceptable: the client must accept text/event-stream",
        ));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    if let Some(last) = req.headers().get("last-event-id") {
        let Some((log, seq)) = last.to_str().ok().and_then(|id| session.stream_of(id)) else {
            return error_response(&RpcError::invalid_request(
                "Last-Event-ID names no stream of this session (it may have expired)",
            ));
        };
        actix_rt::spawn(log.relay(Some(seq), tx, sse::KEEPALIVE));
        return sse::response(rx);
    }
    session.attach_standalone(tx.clone());
    let session = Arc::downgrade(&session);
    actix_rt::spawn(async move {
        if tx
            .send(crate::http::sse::comment("stream open"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::time::sleep(sse::KEEPALIVE).await;
            // The stream ends with its session, or when a newer GET replaced it.
            let current = session.upgrade().is_some_and(|s| s.is_standalone(&tx));
            if !current || tx.send(crate::http::sse::keep_alive()).await.is_err() {
                return;
            }
        }
    });
    sse::response(rx)
}

/// `DELETE /mcp`: ends a session. Its jobs go on; they are the caller's, not the session's.
pub async fn delete(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = match session_of(&state, &req) {
        Ok(session) => session,
        Err(response) => return response,
    };
    state.mcp.sessions.remove(&session.id, &session.tenant);
    tracing::debug!(session = %session.id, "MCP session ended");
    HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .finish()
}
