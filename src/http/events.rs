//! `GET /v1/jobs/{id}/events`: a job's state changes and output as Server-Sent Events, live,
//! after a replay of what was already captured. `Last-Event-ID` (an output sequence number)
//! resumes after a disconnect.
//!
//! Events: `state` (the job), `output` (`{seq, stream, text}` or `{seq, stream, base64}` when a
//! chunk is not UTF-8), and a final `end` (the finished job) before the stream closes.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::auth::caller_of;
use super::error::ApiError;
use super::sse::{self, KEEPALIVE};
use super::views::{job_view, parse_job_id};
use crate::output::Stream;
use crate::queue::Followed;

pub async fn stream(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<super::jobs::TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_job_id(&id)?;
    let after = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let followed = state
        .jobs()
        .follow_in(&caller_of(&req), query.tenant.as_deref(), id, after)
        .await?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    actix_rt::spawn(relay(followed, tx));
    Ok(sse::response(rx))
}

fn frame(event: &str, id: Option<i64>, data: &Value) -> Bytes {
    sse::event(Some(event), id.map(|i| i.to_string()).as_deref(), data)
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
                if tx.send(sse::keep_alive()).await.is_err() {
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
