//! `GET /v1/jobs/{id}/events`: a job's state changes and output as Server-Sent Events, live,
//! after a replay of what was already captured. `Last-Event-ID` (an output sequence number)
//! resumes after a disconnect.
//!
//! Events: `state` (the job), `output` (`{seq, stream, text}` or `{seq, stream, base64}` when a
//! chunk is not UTF-8), and a final `end` (the finished job) before the stream closes.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::auth::caller_of;
use super::error::ApiError;
use super::jobs::{job_view, parse_job_id};
use crate::output::Stream;
use crate::queue::{Followed, follow};

/// After this long without an event, the stream sends a comment so proxies keep the connection
/// (and a client that went away is noticed).
const KEEPALIVE: Duration = Duration::from_secs(15);

pub async fn stream(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_job_id(&id)?;
    let tenant = caller_of(&req).tenant;
    let after = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    // Subscribe before reading, so nothing between the read and the subscription is missed.
    let events = state.queue.events().subscribe(id);
    let job = state
        .queue
        .store()
        .job(Some(&tenant), id)
        .await?
        .ok_or_else(|| ApiError::not_found("job_not_found", format!("job {id} not found")))?;
    let followed = follow(state.queue.clone(), tenant, job, events, after);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    actix_rt::spawn(relay(followed, tx));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, actix_web::Error>)))
}

use futures::StreamExt;

fn frame(event: &str, id: Option<i64>, data: &Value) -> Bytes {
    let mut text = String::new();
    if let Some(id) = id {
        text.push_str(&format!("id: {id}\n"));
    }
    text.push_str(&format!("event: {event}\ndata: {data}\n\n"));
    Bytes::from(text)
}

fn output_data(seq: i64, stream: Stream, data: &[u8]) -> Value {
    match std::str::from_utf8(data) {
        Ok(text) => json!({"seq": seq, "stream": stream, "text": text}),
        Err(_) => json!({
            "seq": seq,
            "stream": stream,
            "base64": base64::engine::general_purpose::STANDARD.encode(data),
        }),
    }
}

/// Turns what the follower reports into SSE frames until the job ends or the client leaves.
async fn relay(mut followed: mpsc::Receiver<Followed>, tx: mpsc::Sender<Bytes>) {
    loop {
        let item = tokio::select! {
            item = tokio::time::timeout(KEEPALIVE, followed.recv()) => item,
            // actix drops the response as soon as the client closes its connection: stop at
            // once (dropping `followed` stops the follower too), even while the job is silent.
            () = tx.closed() => return,
        };
        let item = match item {
            Ok(Some(item)) => item,
            // The follower stopped (store failure): end the stream.
            Ok(None) => return,
            Err(_) => {
                if tx
                    .send(Bytes::from_static(b": keep-alive\n\n"))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        let (bytes, last) = match item {
            Followed::State(job) => (frame("state", None, &job_view(&job)), false),
            Followed::Output { seq, stream, data } => (
                frame("output", Some(seq), &output_data(seq, stream, &data)),
                false,
            ),
            Followed::End(job) => (frame("end", None, &job_view(&job)), true),
        };
        if tx.send(bytes).await.is_err() || last {
            return;
        }
    }
}
