//! Server-Sent Events framing and keep-alive, for every stream the server sends: the jobs
//! API's `/v1/jobs/{id}/events` and the MCP streams (a streamed call, a session's standalone
//! `GET` stream, a resumed stream).

use std::time::Duration;

use actix_web::HttpResponse;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

/// After this long without an event, a stream sends a comment: proxies keep the connection,
/// and a client that went away is noticed.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(15);

/// The comment a stream sends when nothing else happened for [`KEEPALIVE`].
pub(crate) fn keep_alive() -> Bytes {
    Bytes::from_static(b": keep-alive\n\n")
}

/// A comment (ignored by clients), e.g. the first bytes of a stream that has nothing to say yet.
pub(crate) fn comment(text: &'static str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
}

/// One event: an optional `id`, an optional `event` name, and `data` (one line of JSON).
pub(crate) fn event(name: Option<&str>, id: Option<&str>, data: &Value) -> Bytes {
    let mut text = String::new();
    if let Some(id) = id {
        text.push_str("id: ");
        text.push_str(id);
        text.push('\n');
    }
    if let Some(name) = name {
        text.push_str("event: ");
        text.push_str(name);
        text.push('\n');
    }
    text.push_str(&format!("data: {data}\n\n"));
    Bytes::from(text)
}

/// An event without data that only sets the id to resume from and the reconnection delay.
pub(crate) fn priming(id: &str, retry_ms: u64) -> Bytes {
    Bytes::from(format!("id: {id}\nretry: {retry_ms}\ndata: \n\n"))
}

/// An SSE response reading its frames from `rx`.
pub(crate) fn response(rx: mpsc::Receiver<Bytes>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, actix_web::Error>))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_framed() {
        assert_eq!(
            event(Some("state"), None, &json!({"a": 1})),
            Bytes::from("event: state\ndata: {\"a\":1}\n\n")
        );
        assert_eq!(
            event(None, Some("7"), &json!(1)),
            Bytes::from("id: 7\ndata: 1\n\n")
        );
        assert_eq!(
            priming("s-1", 1000),
            Bytes::from("id: s-1\nretry: 1000\ndata: \n\n")
        );
    }
}
