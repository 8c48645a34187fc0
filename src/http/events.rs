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
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::AppState;
use super::auth::caller_of;
use super::error::ApiError;
use super::jobs::{job_view, parse_job_id};
use crate::output::Stream;
use crate::queue::JobEvent;
use crate::store::{Job, OutputChunk};

/// How often the stream re-reads the store (jobs running on another node) and, every
/// `KEEPALIVE_TICKS`, sends a comment so proxies keep the connection.
const TICK: Duration = Duration::from_secs(1);
const KEEPALIVE_TICKS: u32 = 15;

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
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let follower = Follower {
        state: state.into_inner(),
        tenant,
        id,
        last_seq: after,
        tx,
    };
    actix_rt::spawn(follower.run(job, events));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, actix_web::Error>)))
}

use futures::StreamExt;

/// Why following stopped.
enum Stop {
    /// The client went away.
    Gone,
    /// The store failed.
    Failed,
}

struct Follower {
    state: std::sync::Arc<AppState>,
    tenant: String,
    id: Uuid,
    /// The last output sequence number sent.
    last_seq: i64,
    tx: mpsc::Sender<Bytes>,
}

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

impl Follower {
    async fn send(&self, bytes: Bytes) -> Result<(), Stop> {
        self.tx.send(bytes).await.map_err(|_| Stop::Gone)
    }

    async fn send_output(&mut self, seq: i64, stream: Stream, data: &[u8]) -> Result<(), Stop> {
        if seq <= self.last_seq {
            return Ok(());
        }
        self.send(frame("output", Some(seq), &output_data(seq, stream, data)))
            .await?;
        self.last_seq = seq;
        Ok(())
    }

    /// Sends stored output after `last_seq`.
    async fn replay(&mut self) -> Result<(), Stop> {
        let chunks: Vec<OutputChunk> = self
            .state
            .queue
            .store()
            .output(self.id, self.last_seq)
            .await
            .map_err(|_| Stop::Failed)?;
        for chunk in chunks {
            self.send_output(chunk.seq, chunk.stream, &chunk.data)
                .await?;
        }
        Ok(())
    }

    async fn reload(&self) -> Result<Job, Stop> {
        self.state
            .queue
            .store()
            .job(Some(&self.tenant), self.id)
            .await
            .ok()
            .flatten()
            .ok_or(Stop::Failed)
    }

    async fn run(mut self, job: Job, events: broadcast::Receiver<JobEvent>) {
        let _ = self.follow(job, events).await;
    }

    async fn follow(
        &mut self,
        job: Job,
        mut events: broadcast::Receiver<JobEvent>,
    ) -> Result<(), Stop> {
        let mut last_state = job.state;
        self.send(frame("state", None, &job_view(&job))).await?;
        self.replay().await?;
        if job.state.is_terminal() {
            return self.finish().await;
        }
        let mut ticks = 0u32;
        let mut tick = tokio::time::interval(TICK);
        tick.tick().await;
        loop {
            let recheck = tokio::select! {
                event = events.recv() => match event {
                    Ok(JobEvent::Output { seq, stream, data }) => {
                        if seq > self.last_seq + 1 {
                            // A gap: chunks produced before we subscribed; they reach the store
                            // within a flush interval.
                            self.replay().await?;
                        }
                        self.send_output(seq, stream, &data).await?;
                        false
                    }
                    Ok(JobEvent::State(_) | JobEvent::Finished(_) | JobEvent::Changed) => true,
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => {
                        events = self.state.queue.events().subscribe(self.id);
                        true
                    }
                },
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks % KEEPALIVE_TICKS == 0 {
                        self.send(Bytes::from_static(b": keep-alive\n\n")).await?;
                    }
                    true
                }
            };
            if !recheck {
                continue;
            }
            let job = self.reload().await?;
            if job.state.is_terminal() {
                return self.finish().await;
            }
            self.replay().await?;
            if job.state != last_state {
                last_state = job.state;
                self.send(frame("state", None, &job_view(&job))).await?;
            }
        }
    }

    /// Sends the rest of the output and the finished job, then ends the stream.
    async fn finish(&mut self) -> Result<(), Stop> {
        self.replay().await?;
        let job = self.reload().await?;
        self.send(frame("end", None, &job_view(&job))).await
    }
}
