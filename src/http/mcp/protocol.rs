//! JSON-RPC 2.0 as MCP uses it: the protocol revisions this server speaks, the one message a POST
//! carries (with the leniency real clients need), MCP's request headers, and protocol errors.

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use base64::Engine;
use serde_json::{Map, Value, json};

/// The `_meta` key of a modern request's protocol version.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` key of a modern request's client capabilities.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// The `_meta` key of a modern request's client description.
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// The `_meta` key of a modern request's log level (no key: no log messages).
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// The `_meta` key of the server's description on modern results.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// The `_meta` key linking a message to a task (2025-11-25).
pub const META_RELATED_TASK: &str = "io.modelcontextprotocol/related-task";
/// The id of the 2026-07-28 tasks extension.
pub const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// A protocol revision this server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Revision {
    /// Sessions with an `initialize` handshake; no tasks.
    V2025_06_18,
    /// Sessions; core tasks (experimental); SSE polling.
    V2025_11_25,
    /// Stateless: every request carries its version and capabilities in `_meta`.
    V2026_07_28,
}

impl Revision {
    /// Every revision served, newest first (the order of `supportedVersions`).
    pub const ALL: [Revision; 3] = [
        Revision::V2026_07_28,
        Revision::V2025_11_25,
        Revision::V2025_06_18,
    ];

    /// The newest revision with an `initialize` handshake, offered to clients that ask for a
    /// version this server does not serve.
    pub const LATEST_LEGACY: Revision = Revision::V2025_11_25;

    pub fn as_str(self) -> &'static str {
        match self {
            Revision::V2025_06_18 => "2025-06-18",
            Revision::V2025_11_25 => "2025-11-25",
            Revision::V2026_07_28 => "2026-07-28",
        }
    }

    pub fn parse(s: &str) -> Option<Revision> {
        Revision::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether requests of this revision are stateless (no session, `_meta` on every request).
    pub fn is_modern(self) -> bool {
        self == Revision::V2026_07_28
    }

    /// The versions this server serves, newest first.
    pub fn supported() -> Vec<&'static str> {
        Revision::ALL.iter().map(|r| r.as_str()).collect()
    }
}

/// Whether `version` names a revision of the handshake era, served or not. Requests whose
/// `MCP-Protocol-Version` header is anything else are routed to the stateless (modern) path,
/// which then explains what is wrong with them.
pub fn is_handshake_version(version: &str) -> bool {
    matches!(
        version,
        "2024-11-05" | "2025-03-26" | "2025-06-18" | "2025-11-25"
    )
}

/// A protocol error: a JSON-RPC error object and the HTTP status it is sent with.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    pub status: StatusCode,
}

impl RpcError {
    pub fn new(status: StatusCode, code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
            status,
        }
    }

    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    /// The body was not JSON.
    pub fn parse_error(message: impl Into<String>) -> RpcError {
        RpcError::new(StatusCode::BAD_REQUEST, -32700, message)
    }

    /// The body was JSON but not a valid request.
    pub fn invalid_request(message: impl Into<String>) -> RpcError {
        RpcError::new(StatusCode::BAD_REQUEST, -32600, message)
    }

    /// The method does not exist (in this revision). The modern revision answers it with 404.
    pub fn method_not_found(method: &str, revision: Revision) -> RpcError {
        let status = if revision.is_modern() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        RpcError::new(
            status,
            -32601,
            format!(
                "method `{method}` is not available in protocol revision {}",
                revision.as_str()
            ),
        )
    }

    /// Bad parameters of a known method (unknown tool, task not found, bad cursor…).
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(StatusCode::OK, -32602, message)
    }

    /// A modern request whose `_meta` lacks what every request must carry.
    pub fn malformed_meta(message: impl Into<String>) -> RpcError {
        RpcError::new(StatusCode::BAD_REQUEST, -32602, message)
    }

    /// The server failed; details are in its log, not in the answer.
    pub fn internal(request_id: Option<&str>) -> RpcError {
        let message = crate::http::error::fault_message(request_id);
        RpcError::new(StatusCode::INTERNAL_SERVER_ERROR, -32603, message)
    }

    /// A modern request's headers disagree with its body (SEP-2243).
    pub fn header_mismatch(message: impl Into<String>) -> RpcError {
        RpcError::new(
            StatusCode::BAD_REQUEST,
            -32020,
            format!("Header mismatch: {}", message.into()),
        )
    }

    /// The request needs a client capability it did not declare.
    pub fn missing_capability(message: impl Into<String>, required: Value) -> RpcError {
        RpcError::new(StatusCode::BAD_REQUEST, -32021, message)
            .with_data(json!({ "requiredCapabilities": required }))
    }

    /// A modern request names a version this server does not serve.
    pub fn unsupported_version(requested: &Value) -> RpcError {
        RpcError::new(
            StatusCode::BAD_REQUEST,
            -32022,
            "Unsupported protocol version",
        )
        .with_data(json!({
            "supported": Revision::supported(),
            "requested": requested,
        }))
    }

    /// A legacy request without the session id its session needs.
    pub fn session_required() -> RpcError {
        RpcError::new(
            StatusCode::BAD_REQUEST,
            -32000,
            "Bad Request: Mcp-Session-Id header is required; send `initialize` first (or, for \
             protocol revision 2026-07-28, send the per-request `_meta` and headers)",
        )
    }

    /// A session id this server does not know (never issued, ended, or expired).
    pub fn session_not_found() -> RpcError {
        RpcError::new(
            StatusCode::NOT_FOUND,
            -32001,
            "Session not found: it ended or expired; send `initialize` again without a session id",
        )
    }

    /// A legacy request naming a protocol version this server does not serve.
    pub fn unsupported_version_header(version: &str) -> RpcError {
        RpcError::new(
            StatusCode::BAD_REQUEST,
            -32000,
            format!(
                "Bad Request: unsupported MCP-Protocol-Version `{version}` (supported versions: {})",
                Revision::supported().join(", ")
            ),
        )
    }

    /// The JSON-RPC error object.
    pub fn to_object(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        error
    }
}

/// What one POST body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Expects an answer.
    Request,
    /// Expects none (answered `202 Accepted`).
    Notification,
    /// A client's answer to a server request (this server sends none).
    Response,
}

/// One parsed JSON-RPC message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub kind: Kind,
    /// A string or an integer; `Null` for a LangSwarm-style call that carries none.
    pub id: Option<Value>,
    pub method: String,
    /// The parameters object (empty when absent).
    pub params: Map<String, Value>,
    /// The body had no `"jsonrpc"` member: a lenient client (LangSwarm's `mcpremote`), served
    /// without a session.
    pub lenient: bool,
}

impl Message {
    /// The request's `_meta` object, if any.
    pub fn meta(&self) -> Option<&Map<String, Value>> {
        self.params.get("_meta").and_then(Value::as_object)
    }

    /// Whether the request carries the per-request `_meta` of the stateless revision.
    pub fn has_modern_meta(&self) -> bool {
        self.meta()
            .is_some_and(|m| m.contains_key(META_PROTOCOL_VERSION))
    }

    /// A string parameter, if present and a string.
    pub fn str_param(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Value::as_str)
    }
}

/// Whether a JSON value is a valid request id (a string or an integer).
fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// Parses the one message a POST carries. The error carries the message's id when it is known,
/// so that the answer can echo it.
pub fn parse_message(body: &[u8]) -> Result<Message, (Option<Value>, RpcError)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err((
            None,
            RpcError::invalid_request("the body is empty; send one JSON-RPC message"),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| (None, RpcError::parse_error(format!("Parse error: {e}"))))?;
    let mut object = match value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return Err((
                None,
                RpcError::invalid_request(
                    "batching is not supported (MCP removed it in 2025-06-18): send one \
                     JSON-RPC message per POST",
                ),
            ));
        }
        _ => {
            return Err((
                None,
                RpcError::invalid_request("the body must be a JSON-RPC message (a JSON object)"),
            ));
        }
    };
    let lenient = !object.contains_key("jsonrpc");
    let id = object.remove("id");
    let id = match id {
        None => None,
        Some(Value::Null) if lenient => Some(Value::Null),
        Some(id) if valid_id(&id) => Some(id),
        Some(_) => {
            return Err((
                None,
                RpcError::invalid_request("`id` must be a string or an integer"),
            ));
        }
    };
    let fail = |message: &str| Err((id.clone(), RpcError::invalid_request(message)));
    match object.get("jsonrpc") {
        None => {}
        Some(Value::String(v)) if v == "2.0" => {}
        Some(_) => return fail("`jsonrpc` must be \"2.0\""),
    }
    let params = match object.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => {
            return Err((
                id.clone(),
                RpcError::invalid_params("`params` must be an object"),
            ));
        }
    };
    match object.remove("method") {
        Some(Value::String(method)) => Ok(Message {
            kind: if id.is_some() {
                Kind::Request
            } else {
                Kind::Notification
            },
            id,
            method,
            params,
            lenient,
        }),
        Some(_) => fail("`method` must be a string"),
        None if object.contains_key("result") || object.contains_key("error") => {
            if id.is_none() {
                return fail("a response must carry the `id` of the request it answers");
            }
            Ok(Message {
                kind: Kind::Response,
                id,
                method: String::new(),
                params,
                lenient,
            })
        }
        // LangSwarm's `mcp_call` posts `{"name": T, "arguments": {…}}`: a tools/call.
        None if lenient && object.get("name").is_some_and(Value::is_string) => {
            let mut params = params;
            for key in ["name", "arguments", "_meta"] {
                if let Some(value) = object.remove(key) {
                    params.insert(key.to_string(), value);
                }
            }
            Ok(Message {
                kind: Kind::Request,
                id: Some(id.unwrap_or(Value::Null)),
                method: "tools/call".into(),
                params,
                lenient,
            })
        }
        None => fail("`method` is missing"),
    }
}

/// A successful answer.
pub fn success(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error answer; without a known id the member is left out.
pub fn failure(id: Option<&Value>, error: &RpcError) -> Value {
    let mut body = json!({"jsonrpc": "2.0", "error": error.to_object()});
    if let Some(id) = id {
        body["id"] = id.clone();
    }
    body
}

/// A notification.
pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// A header as text; `Err` when it is present but not visible ASCII (after trimming spaces).
pub fn header<'a>(req: &'a HttpRequest, name: &str) -> Result<Option<&'a str>, RpcError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| RpcError::invalid_request(format!("header {name} is not ASCII text"))),
    }
}

/// Encodes a value for a modern header (`Mcp-Name`): as is when it is plain visible ASCII with
/// no surrounding space, else `=?base64?…?=` (SEP-2243); [`decode_header_value`] reverses it.
pub fn encode_header_value(value: &str) -> String {
    let plain = !value.is_empty()
        && value.trim() == value
        && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        && !(value.starts_with("=?") && value.ends_with("?="));
    if plain {
        value.to_string()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    }
}

/// Decodes a modern header value: `=?base64?…?=` carries UTF-8 that plain ASCII cannot (SEP-2243).
pub fn decode_header_value(raw: &str) -> Option<String> {
    let raw = raw.trim();
    match raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(raw.to_string()),
    }
}

/// The levels of `logging/setLevel` and `notifications/message`, least severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl LogLevel {
    const ALL: [LogLevel; 8] = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Notice,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Critical,
        LogLevel::Alert,
        LogLevel::Emergency,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Notice => "notice",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
            LogLevel::Alert => "alert",
            LogLevel::Emergency => "emergency",
        }
    }

    pub fn parse(s: &str) -> Option<LogLevel> {
        LogLevel::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_responses() {
        let m = parse_message(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert_eq!((m.kind, m.lenient), (Kind::Request, false));
        let m =
            parse_message(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(m.kind, Kind::Notification);
        let m = parse_message(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(m.kind, Kind::Response);
    }

    #[test]
    fn batches_and_bad_ids_are_refused() {
        let (_, e) = parse_message(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err();
        assert_eq!(e.code, -32600);
        assert!(e.message.contains("batching"));
        let (_, e) = parse_message(br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#).unwrap_err();
        assert_eq!(e.code, -32600);
        let (_, e) = parse_message(b"{").unwrap_err();
        assert_eq!(e.code, -32700);
        let (id, e) =
            parse_message(br#"{"jsonrpc":"2.0","id":7,"method":"x","params":[1]}"#).unwrap_err();
        assert_eq!((id, e.code), (Some(json!(7)), -32602));
    }

    #[test]
    fn langswarm_bodies_are_understood() {
        let m = parse_message(br#"{"method":"tools/list","id":"list-1"}"#).unwrap();
        assert!(m.lenient);
        assert_eq!(m.kind, Kind::Request);
        let m = parse_message(br#"{"name":"list_sandboxes","arguments":{}}"#).unwrap();
        assert_eq!(m.method, "tools/call");
        assert_eq!(m.id, Some(Value::Null));
        assert_eq!(m.params["name"], "list_sandboxes");
    }

    #[test]
    fn header_values_decode() {
        assert_eq!(decode_header_value("  a_tool "), Some("a_tool".into()));
        assert_eq!(
            decode_header_value("=?base64?w6l0w6k=?="),
            Some("été".into())
        );
        assert_eq!(decode_header_value("=?base64?***?="), None);
    }
}
