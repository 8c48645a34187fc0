//! The relay: MCP messages read from stdin (one JSON-RPC message per line, the MCP stdio
//! transport) are posted to a server's Streamable HTTP endpoint, and what it answers (a JSON
//! message, or the messages of an SSE stream) is written to stdout, one per line.
//!
//! What an HTTP client of the endpoint would do, the relay does for the stdio client:
//! - the `initialize` handshake opens a session: its `Mcp-Session-Id` and negotiated version go
//!   on every later request, a `GET` stream carries the session's own notifications, and the
//!   session is ended (`DELETE`) when stdin closes;
//! - a request of the stateless revision (its `_meta` names the protocol version) gets the
//!   headers that revision requires (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`), and
//!   `notifications/cancelled` for it closes its HTTP request, which is how that revision
//!   cancels;
//! - requests run concurrently (a long tool call does not hold up a `ping`), except
//!   `initialize`, whose session the next messages need.
//!
//! Failures become JSON-RPC errors for the request they concern, never a dead pipe: a line that
//! is not JSON (-32700), a line over the size limit (-32600), a server that cannot be reached
//! or answers something other than MCP (-32000, saying what to check). When stdin closes, the
//! requests still in flight are answered, then the session is ended and the relay returns.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::sse::SseParser;
use crate::http::mcp::protocol::{META_PROTOCOL_VERSION, encode_header_value};

/// Where the relay sends what it reads.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The server's MCP endpoint, e.g. `http://127.0.0.1:8001/mcp`.
    pub url: reqwest::Url,
    /// The API key, sent as `Authorization: Bearer`; `None` sends none.
    pub key: Option<String>,
    /// The longest line (message) read from stdin.
    pub max_message_bytes: usize,
}

/// Why the relay stopped.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// stdin closed (the client is done).
    InputClosed,
    /// stdout closed (the client is gone).
    OutputClosed,
    /// The `stop` future completed (a signal, or the embedded server stopped).
    Stopped,
}

/// A 2025-revision session opened by `initialize`.
#[derive(Clone, Debug)]
struct Session {
    id: String,
    version: String,
}

struct Relay {
    http: reqwest::Client,
    config: RelayConfig,
    session: Mutex<Option<Session>>,
    /// The session id of an `initialize` answer, until its result names the version.
    opening: Mutex<Option<String>>,
    /// The session's standalone `GET` stream.
    listener: Mutex<Option<AbortHandle>>,
    /// Messages for stdout.
    out: mpsc::Sender<Value>,
}

/// A request being relayed, for `notifications/cancelled`.
struct InFlight {
    task: AbortHandle,
    /// A stateless (2026-07-28) request: cancelled by closing its HTTP request.
    stateless: bool,
}

/// Relays `input` to the server and its answers to `output` until stdin closes, stdout
/// closes or `stop` completes.
pub async fn run<R, W>(
    config: RelayConfig,
    input: R,
    output: W,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Ended>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let (out, out_rx) = mpsc::channel::<Value>(256);
    let mut writer = Some(tokio::spawn(write_lines(output, out_rx)));
    let relay = Arc::new(Relay {
        http,
        session: Mutex::new(None),
        opening: Mutex::new(None),
        listener: Mutex::new(None),
        out,
        config: config.clone(),
    });
    let mut lines = LineReader::new(BufReader::new(input), config.max_message_bytes);
    let mut tasks: JoinSet<Option<String>> = JoinSet::new();
    let mut in_flight: HashMap<String, InFlight> = HashMap::new();
    tokio::pin!(stop);
    let mut input_open = true;
    let ended = loop {
        if !input_open && tasks.is_empty() {
            // stdin closed and every request answered.
            break Ended::InputClosed;
        }
        tokio::select! {
            () = &mut stop => break Ended::Stopped,
            _ = async { writer.as_mut().expect("writer runs").await }, if writer.is_some() => {
                writer = None;
                break Ended::OutputClosed;
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(Some(key)) = done {
                    in_flight.remove(&key);
                }
            }
            line = lines.next(), if input_open => match line {
                Ok(None) => {
                    input_open = false;
                }
                Ok(Some(Line::TooLong)) => {
                    relay.reply_error(
                        Value::Null,
                        -32600,
                        format!(
                            "Invalid Request: a message is longer than {} bytes",
                            config.max_message_bytes
                        ),
                    )
                    .await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read stdin");
                    input_open = false;
                }
                Ok(Some(Line::Text(line))) => {
                    relay.accept(line, &mut tasks, &mut in_flight).await;
                }
            },
        }
    };
    if ended != Ended::InputClosed {
        tasks.abort_all();
    }
    while tasks.join_next().await.is_some() {}
    relay.end_session().await;
    drop(relay);
    if let Some(writer) = writer {
        // Everything queued is written before returning.
        let _ = writer.await;
    }
    Ok(ended)
}

/// A line read from stdin.
#[derive(Debug, PartialEq)]
enum Line {
    Text(String),
    /// A line over the limit, skipped up to its end.
    TooLong,
}

/// Reads lines of at most `max` bytes; a longer one is skipped (never held in memory) and the
/// lines after it are read as usual. A line that is not UTF-8 is read lossily, which makes it
/// a parse error rather than the end of input.
struct LineReader<R> {
    reader: R,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    fn new(reader: R, max: usize) -> LineReader<R> {
        LineReader { reader, max }
    }

    /// The next line, or `None` at the end of input. Cancel-safe only between lines: the
    /// relay's loop polls it to completion or drops it at the end.
    async fn next(&mut self) -> std::io::Result<Option<Line>> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                // The end of input; a last line without a newline still counts.
                return Ok(match (too_long, line.is_empty()) {
                    (true, _) => Some(Line::TooLong),
                    (false, true) => None,
                    (false, false) => Some(Line::Text(String::from_utf8_lossy(&line).into_owned())),
                });
            }
            let (chunk, ended) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            if !too_long {
                if line.len() + chunk.len() > self.max {
                    too_long = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            let consumed = ended.unwrap_or(available.len());
            self.reader.consume(consumed);
            if ended.is_some() {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(if too_long {
                    Line::TooLong
                } else {
                    Line::Text(String::from_utf8_lossy(&line).into_owned())
                }));
            }
        }
    }
}

/// Writes each message as one line, flushing each: a client waits for whole lines.
async fn write_lines<W: AsyncWrite + Unpin>(mut output: W, mut rx: mpsc::Receiver<Value>) {
    while let Some(message) = rx.recv().await {
        let mut line = serde_json::to_vec(&message).expect("JSON values serialize");
        line.push(b'\n');
        if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
            return;
        }
    }
}

/// `params._meta`'s protocol version: set on every request of the stateless revision.
fn modern_version(message: &Value) -> Option<&str> {
    message
        .get("params")?
        .get("_meta")?
        .get(META_PROTOCOL_VERSION)?
        .as_str()
}

/// What `Mcp-Name` must repeat for a method (SEP-2243).
fn named(message: &Value, method: &str) -> Option<String> {
    let params = message.get("params")?;
    let value = match method {
        "tools/call" | "prompts/get" => params.get("name"),
        "resources/read" => params.get("uri"),
        m if m.starts_with("tasks/") => params.get("taskId"),
        _ => None,
    }?;
    value.as_str().map(str::to_string)
}

/// An error and its causes, on one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = std::error::Error::source(source.expect("checked"));
    }
    text
}

impl Relay {
    async fn send(&self, message: Value) {
        // A closed channel means stdout is gone; the main loop notices.
        let _ = self.out.send(message).await;
    }

    async fn reply_error(&self, id: Value, code: i64, message: String) {
        self.send(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
            .await;
    }

    /// Takes one line from stdin.
    async fn accept(
        self: &Arc<Self>,
        line: String,
        tasks: &mut JoinSet<Option<String>>,
        in_flight: &mut HashMap<String, InFlight>,
    ) {
        if line.trim().is_empty() {
            return;
        }
        let message: Value = match serde_json::from_str(&line) {
            Ok(message) => message,
            Err(e) => {
                self.reply_error(Value::Null, -32700, format!("Parse error: {e}"))
                    .await;
                return;
            }
        };
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string);
        if method.as_deref() == Some("initialize") {
            // The next messages need the session this opens.
            self.forward(message).await;
            return;
        }
        if method.as_deref() == Some("notifications/cancelled")
            && let Some(request) = message.pointer("/params/requestId")
            && in_flight
                .get(&request.to_string())
                .is_some_and(|call| call.stateless)
        {
            // The stateless revision cancels a call when its request is closed, and then
            // answers nothing, as the client expects of a cancelled request.
            if let Some(call) = in_flight.remove(&request.to_string()) {
                call.task.abort();
            }
            return;
        }
        let key = method
            .as_ref()
            .and(message.get("id"))
            .map(|id| id.to_string());
        let stateless = modern_version(&message).is_some();
        let relay = self.clone();
        let task_key = key.clone();
        let task = tasks.spawn(async move {
            relay.forward(message).await;
            task_key
        });
        if let Some(key) = key {
            in_flight.insert(key, InFlight { task, stateless });
        }
    }

    /// Posts one message and relays the answer.
    async fn forward(self: &Arc<Self>, message: Value) {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // The id of a request (an answer is expected); notifications and responses have none.
        let id = message.get("id").filter(|_| !method.is_empty()).cloned();
        // What is neither a request, a notification nor a response (a batch, a bare value)
        // gets whatever the server answers (an error with a null id).
        let expects_answer = id.is_some() || !message.is_object();
        let mut request = self
            .http
            .post(self.config.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(serde_json::to_vec(&message).expect("JSON values serialize"));
        if let Some(key) = &self.config.key {
            request = request.bearer_auth(key);
        }
        if let Some(version) = modern_version(&message) {
            request = request
                .header("mcp-protocol-version", version)
                .header("mcp-method", &method);
            if let Some(name) = named(&message, &method) {
                request = request.header("mcp-name", encode_header_value(&name));
            }
        } else if method != "initialize"
            && let Some(session) = self.session.lock().expect("not poisoned").clone()
        {
            request = request
                .header("mcp-session-id", session.id)
                .header("mcp-protocol-version", session.version);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let text = format!(
                    "cannot reach the daytona-mcp server at {}: {}; is it running (`daytona-mcp \
                     serve`)? check --url",
                    self.config.url,
                    describe(&e)
                );
                tracing::warn!("{text}");
                if let Some(id) = id {
                    self.reply_error(id, -32000, text).await;
                }
                return;
            }
        };
        if method == "initialize" {
            *self.opening.lock().expect("not poisoned") = response
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
        }
        self.deliver(id, expects_answer, &method, response).await;
    }

    /// Relays an HTTP answer: nothing (202), a JSON message, or an SSE stream's messages.
    async fn deliver(
        self: &Arc<Self>,
        id: Option<Value>,
        expects_answer: bool,
        method: &str,
        response: reqwest::Response,
    ) {
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            let mut parser = SseParser::default();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        for data in parser.push(&bytes) {
                            match serde_json::from_str::<Value>(&data) {
                                Ok(message) => self.emit(message).await,
                                Err(e) => tracing::warn!(error = %e, "an SSE event is not JSON"),
                            }
                        }
                    }
                    Err(e) => {
                        if let Some(id) = id {
                            self.reply_error(
                                id,
                                -32000,
                                format!(
                                    "the connection to the daytona-mcp server broke during the \
                                     answer: {}",
                                    describe(&e)
                                ),
                            )
                            .await;
                        }
                        return;
                    }
                }
            }
            return;
        }
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                if let Some(id) = id {
                    self.reply_error(
                        id,
                        -32000,
                        format!("cannot read the server's answer: {}", describe(&e)),
                    )
                    .await;
                }
                return;
            }
        };
        let parsed = serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(|v| v.get("jsonrpc").is_some());
        match (parsed, id) {
            (Some(mut answer), None) if expects_answer => {
                // JSON-RPC answers carry an id, null when the request's is unknown.
                if answer.get("error").is_some() && answer.get("id").is_none() {
                    answer["id"] = Value::Null;
                }
                self.emit(answer).await;
            }
            (Some(mut answer), Some(id)) => {
                if status == reqwest::StatusCode::UNAUTHORIZED {
                    answer["error"]["message"] = json!(format!(
                        "the daytona-mcp server refused the key (HTTP 401): set \
                         DAYTONA_MCP_API_KEY to its API key (by default in its data dir's \
                         admin.key); the server said: {}",
                        answer["error"]["message"].as_str().unwrap_or("")
                    ));
                }
                // Errors the server gives before reading the body carry no id.
                if answer.get("id").is_none_or(Value::is_null) {
                    answer["id"] = id;
                }
                self.emit(answer).await;
            }
            (None, Some(id)) if !(status.is_success() && body.is_empty()) => {
                self.reply_error(
                    id,
                    -32000,
                    format!(
                        "the server at {} answered HTTP {status} ({}), not an MCP message: is \
                         --url the server's MCP endpoint (…/mcp)?",
                        self.config.url,
                        if content_type.is_empty() {
                            "no content type"
                        } else {
                            &content_type
                        }
                    ),
                )
                .await;
            }
            (answer, _) => {
                // A notification's or response's answer: 202, or an error nobody waits for.
                if !status.is_success() {
                    tracing::debug!(%status, method, ?answer, "the server refused a notification");
                }
            }
        }
    }

    /// Writes a message from the server; an `initialize` result also opens the session.
    async fn emit(self: &Arc<Self>, message: Value) {
        if let Some(version) = message
            .pointer("/result/protocolVersion")
            .and_then(Value::as_str)
            && let Some(id) = self.opening.lock().expect("not poisoned").take()
        {
            let session = Session {
                id,
                version: version.to_string(),
            };
            *self.session.lock().expect("not poisoned") = Some(session.clone());
            self.listen(session);
        }
        self.send(message).await;
    }

    /// Opens the session's standalone `GET` stream, which carries what the server sends
    /// outside any request (task status notifications), and relays it.
    fn listen(self: &Arc<Self>, session: Session) {
        let relay = self.clone();
        let task = tokio::spawn(async move {
            let mut request = relay
                .http
                .get(relay.config.url.clone())
                .header(ACCEPT, "text/event-stream")
                .header("mcp-session-id", &session.id)
                .header("mcp-protocol-version", &session.version);
            if let Some(key) = &relay.config.key {
                request = request.bearer_auth(key);
            }
            let Ok(response) = request.send().await else {
                return;
            };
            if response.status().is_success() {
                relay.deliver(None, false, "GET", response).await;
            }
        });
        if let Some(previous) = self
            .listener
            .lock()
            .expect("not poisoned")
            .replace(task.abort_handle())
        {
            previous.abort();
        }
    }

    /// Ends the session, if one was opened (its jobs go on: they are not the session's).
    async fn end_session(&self) {
        if let Some(listener) = self.listener.lock().expect("not poisoned").take() {
            listener.abort();
        }
        let Some(session) = self.session.lock().expect("not poisoned").take() else {
            return;
        };
        let mut request = self
            .http
            .delete(self.config.url.clone())
            .timeout(Duration::from_secs(2))
            .header("mcp-session-id", &session.id)
            .header("mcp-protocol-version", &session.version);
        if let Some(key) = &self.config.key {
            request = request.bearer_auth(key);
        }
        if let Err(e) = request.send().await {
            tracing::debug!(error = %describe(&e), "cannot end the MCP session");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_skipped_and_reading_goes_on() {
        let input: &[u8] = b"short\r\n0123456789abc\nok\n\nlast";
        let mut lines = LineReader::new(BufReader::with_capacity(4, input), 8);
        let mut read = Vec::new();
        while let Some(line) = lines.next().await.unwrap() {
            read.push(line);
        }
        assert_eq!(
            read,
            [
                Line::Text("short".into()),
                Line::TooLong,
                Line::Text("ok".into()),
                Line::Text(String::new()),
                Line::Text("last".into()),
            ]
        );
    }

    #[test]
    fn stateless_requests_are_recognised_and_named() {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "execute_shell", "_meta": {META_PROTOCOL_VERSION: "2026-07-28"}}});
        assert_eq!(modern_version(&call), Some("2026-07-28"));
        assert_eq!(named(&call, "tools/call").as_deref(), Some("execute_shell"));
        let legacy = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        assert_eq!(modern_version(&legacy), None);
        assert_eq!(named(&legacy, "tools/list"), None);
        let task = json!({"params": {"taskId": "t-1"}});
        assert_eq!(named(&task, "tasks/get").as_deref(), Some("t-1"));
    }
}
