//! A small MCP client for the tests: raw HTTP, so that every header and status is visible.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::TestApp;

pub const MODERN: &str = "2026-07-28";

/// An answer: status, headers, and the JSON body (or `Null`).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON-RPC result, asserting there is one.
    pub fn result(&self) -> &Value {
        assert!(
            self.body.get("result").is_some(),
            "expected a result, got {} {}",
            self.status,
            self.body
        );
        &self.body["result"]
    }

    /// The JSON-RPC error code, asserting there is one.
    pub fn error_code(&self) -> i64 {
        self.body["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("expected an error, got {} {}", self.status, self.body))
    }
}

/// One SSE event: its id and parsed data (`Null` for an empty data line).
#[derive(Clone, Debug)]
pub struct Event {
    pub id: Option<String>,
    pub data: Value,
    pub retry: Option<u64>,
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// Reads SSE events until `stop` says so, the stream ends, or 60 s pass.
pub async fn read_events(
    response: reqwest::Response,
    mut stop: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "expected an SSE answer"
    );
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the SSE stream went on for too long");
        let Some(chunk) = chunk else {
            return events;
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let raw: String = buffer.drain(..end + 2).collect();
            let mut event = Event {
                id: None,
                data: Value::Null,
                retry: None,
            };
            let mut data = String::new();
            let mut fields = 0;
            for line in raw.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    event.id = Some(v.trim().to_string());
                    fields += 1;
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                    fields += 1;
                } else if let Some(v) = line.strip_prefix("retry:") {
                    event.retry = v.trim().parse().ok();
                    fields += 1;
                }
            }
            if fields == 0 {
                continue; // a comment (keep-alive)
            }
            if !data.is_empty() {
                event.data = serde_json::from_str(&data).unwrap();
            }
            let done = stop(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }
}

/// Whether an event is the answer to request `id`.
pub fn is_answer(event: &Event, id: &Value) -> bool {
    event.data.get("id") == Some(id)
        && (event.data.get("result").is_some() || event.data.get("error").is_some())
}

impl TestApp {
    /// A POST to `/mcp` with the key, both media types accepted, and `headers`.
    pub fn mcp_request(&self, headers: &[(&str, &str)], body: &Value) -> reqwest::RequestBuilder {
        let mut request = self
            .authed(self.client.post(self.url("/mcp")))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    }

    pub async fn mcp(&self, headers: &[(&str, &str)], body: &Value) -> Answer {
        answer(self.mcp_request(headers, body).send().await.unwrap()).await
    }

    /// Opens a legacy session at `version` and sends `notifications/initialized`.
    pub async fn mcp_session(&self, version: &str) -> LegacySession<'_> {
        let init = self
            .mcp(
                &[],
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": version,
                    "capabilities": {},
                    "clientInfo": {"name": "daytona-mcp-tests", "version": "1"}
                }}),
            )
            .await;
        assert_eq!(init.status, 200, "{}", init.body);
        assert_eq!(init.result()["protocolVersion"], version);
        let id = init.header("mcp-session-id").unwrap().to_string();
        let session = LegacySession {
            app: self,
            id,
            version: version.to_string(),
        };
        let initialized = session
            .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(initialized.status, 202);
        session
    }

    /// A 2026-07-28 request: the `_meta` and headers the revision requires.
    pub fn modern_request(
        &self,
        id: Value,
        method: &str,
        params: Value,
    ) -> reqwest::RequestBuilder {
        self.modern_request_with(id, method, params, json!({}))
    }

    /// A 2026-07-28 request declaring `capabilities`.
    pub fn modern_request_with(
        &self,
        id: Value,
        method: &str,
        mut params: Value,
        capabilities: Value,
    ) -> reqwest::RequestBuilder {
        let meta = params
            .as_object_mut()
            .unwrap()
            .entry("_meta")
            .or_insert_with(|| json!({}));
        meta["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
        meta["io.modelcontextprotocol/clientCapabilities"] = capabilities;
        meta["io.modelcontextprotocol/clientInfo"] = json!({"name": "tests", "version": "1"});
        let mut headers = vec![("mcp-protocol-version", MODERN.to_string())];
        headers.push(("mcp-method", method.to_string()));
        if let Some(name) = params
            .get("name")
            .or_else(|| params.get("taskId"))
            .and_then(Value::as_str)
        {
            headers.push(("mcp-name", name.to_string()));
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut request = self
            .authed(self.client.post(self.url("/mcp")))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request
    }

    pub async fn modern(&self, id: Value, method: &str, params: Value) -> Answer {
        answer(
            self.modern_request(id, method, params)
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

/// A legacy session of a test app.
pub struct LegacySession<'a> {
    pub app: &'a TestApp,
    pub id: String,
    pub version: String,
}

impl LegacySession<'_> {
    pub fn request(&self, body: &Value) -> reqwest::RequestBuilder {
        self.app.mcp_request(
            &[
                ("mcp-session-id", &self.id),
                ("mcp-protocol-version", &self.version),
            ],
            body,
        )
    }

    pub async fn send(&self, body: &Value) -> Answer {
        answer(self.request(body).send().await.unwrap()).await
    }

    /// Sends request `method` with `params` and returns the answer.
    pub async fn call(&self, id: i64, method: &str, params: Value) -> Answer {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }

    /// Calls a tool and returns its result (asserting there is one).
    pub async fn tool(&self, id: i64, name: &str, arguments: Value) -> Value {
        let answer = self
            .call(
                id,
                "tools/call",
                json!({"name": name, "arguments": arguments}),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.result().clone()
    }
}
