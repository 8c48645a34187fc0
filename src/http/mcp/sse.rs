//! Server-Sent Events: a synchronous `tools/call` that streams `notifications/progress`
//! (queued → running → each output chunk) and the output as `notifications/message` log lines
//! before its result, and the framing shared with the standalone `GET` stream.
//!
//! In a legacy session the events go to the session's [`EventLog`]: the response relays them,
//! and a client whose connection dropped resumes with `GET` + `Last-Event-ID`; the job goes on
//! either way (a disconnect is not a cancellation in 2025), and the producer follows it until
//! it ends or the session does (then nobody can resume the stream). Without a session the
//! events go straight to the response; on 2026-07-28 a closed stream cancels the job, as that
//! revision requires.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::inflight::InFlightGuard;
use super::protocol::{LogLevel, Revision, RpcError, failure, notification, success};
use super::results::job_result;
use super::session::EventLog;
use super::{Ctx, decorate};
use crate::audit::Caller;
use crate::http::AppState;
pub(crate) use crate::http::sse::{KEEPALIVE, response};
use crate::http::sse::{event, keep_alive};
use crate::jobs::JobsError;
use crate::output::Stream;
use crate::queue::Followed;

/// How soon a client should reconnect after its stream dropped (sent with the priming event).
const RETRY_MS: u64 = 1000;

/// One SSE event carrying a JSON-RPC message.
pub(crate) fn frame(id: Option<&str>, message: &Value) -> Bytes {
    event(None, id, message)
}

/// The priming event of a 2025-11-25 stream: an id to resume from, the reconnection delay, no
/// message.
fn priming(id: &str) -> Bytes {
    crate::http::sse::priming(id, RETRY_MS)
}

/// Where a streamed call's events go.
enum Sink {
    /// Straight to the response; a failed send means the client went away.
    Direct(mpsc::Sender<Bytes>),
    /// To a session's resumable log (never fails).
    Log(Arc<EventLog>),
}

impl Sink {
    /// Sends one message; `false` when the client went away.
    async fn send(&self, message: &Value) -> bool {
        match self {
            Sink::Direct(tx) => tx.send(frame(None, message)).await.is_ok(),
            Sink::Log(log) => {
                log.push(|id| frame(Some(id), message));
                true
            }
        }
    }

    /// Keeps a direct stream alive; `false` when the client went away.
    async fn keepalive(&self) -> bool {
        match self {
            Sink::Direct(tx) => tx.send(keep_alive()).await.is_ok(),
            // The relay of each reader keeps its own connection alive.
            Sink::Log(_) => true,
        }
    }

    /// Resolves when the client went away; for a log, which outlives its readers, when its
    /// session ended.
    async fn closed(&self) {
        match self {
            Sink::Direct(tx) => tx.closed().await,
            Sink::Log(log) => log.abandoned().await,
        }
    }

    fn finish(&self) {
        if let Sink::Log(log) = self {
            log.finish();
        }
    }
}

/// What a streamed call reports besides its result.
struct Reporter {
    progress_token: Option<Value>,
    /// Output becomes log messages when this level lets `info` through.
    log_level: Option<LogLevel>,
    progress: u64,
}

impl Reporter {
    async fn progress(&mut self, sink: &Sink, message: String) -> bool {
        let Some(token) = &self.progress_token else {
            return true;
        };
        self.progress += 1;
        sink.send(&notification(
            "notifications/progress",
            json!({"progressToken": token, "progress": self.progress, "message": message}),
        ))
        .await
    }

    async fn output(&mut self, sink: &Sink, stream: Stream, data: &[u8]) -> bool {
        let name = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        if !self
            .progress(sink, format!("{name}: {} bytes", data.len()))
            .await
        {
            return false;
        }
        if self.log_level.is_none_or(|level| level > LogLevel::Info) {
            return true;
        }
        sink.send(&notification(
            "notifications/message",
            json!({
                "level": "info",
                "logger": name,
                "data": String::from_utf8_lossy(data),
            }),
        ))
        .await
    }
}

/// Everything the producer of a streamed call needs, owned (it outlives the request handler).
struct Producer {
    state: web::Data<AppState>,
    caller: Caller,
    revision: Revision,
    job: Uuid,
    request: Value,
    sink: Sink,
    reporter: Reporter,
    request_id: Option<String>,
    _in_flight: InFlightGuard,
}

/// Answers a synchronous `tools/call` of `job` as an SSE stream.
pub(crate) fn stream_call(
    ctx: &Ctx,
    id: &Value,
    job: crate::store::Job,
    in_flight: InFlightGuard,
) -> HttpResponse {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let sink = match &ctx.session {
        Some(session) => {
            let log = session.open_stream();
            if session.revision >= Revision::V2025_11_25 {
                log.push(priming);
            }
            actix_rt::spawn(log.clone().relay(None, tx, KEEPALIVE));
            Sink::Log(log)
        }
        None => Sink::Direct(tx),
    };
    let producer = Producer {
        state: ctx.state.clone(),
        caller: ctx.caller.clone(),
        revision: ctx.revision,
        job: job.id,
        request: id.clone(),
        sink,
        reporter: Reporter {
            progress_token: ctx.progress_token.clone(),
            // 2026-07-28 sends log messages only on request; a 2025 stream sends the output at
            // `info` unless logging/setLevel asked for less.
            log_level: if ctx.revision.is_modern() {
                ctx.log_level
            } else {
                Some(ctx.log_level.unwrap_or(LogLevel::Info))
            },
            progress: 0,
        },
        request_id: ctx.caller.request_id.clone(),
        _in_flight: in_flight,
    };
    actix_rt::spawn(producer.run());
    response(rx)
}

impl Producer {
    async fn run(mut self) {
        if !self.stream().await && self.revision.is_modern() {
            tracing::info!(job_id = %self.job, "the client closed its stream; cancelling its call");
            let jobs = self.state.jobs();
            if let Err(e) = jobs.cancel_abandoned(&self.caller, self.job).await {
                tracing::warn!(error = %e, job_id = %self.job, "cannot cancel an abandoned call");
            }
        }
        self.sink.finish();
    }

    /// Streams until the result is sent (`true`) or the client went away (`false`).
    async fn stream(&mut self) -> bool {
        let mut followed = match self.state.jobs().follow(&self.caller, self.job, 0).await {
            Ok(followed) => followed,
            Err(JobsError::NotFound(_)) => {
                return self
                    .fail(RpcError::invalid_params("the job disappeared"))
                    .await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot follow a streamed call's job");
                return self
                    .fail(RpcError::internal(self.request_id.as_deref()))
                    .await;
            }
        };
        loop {
            // The response is dropped as soon as actix sees the connection close, even while the
            // command is silent: `closed` notices that at once.
            let item = tokio::select! {
                item = tokio::time::timeout(KEEPALIVE, followed.recv()) => item,
                () = self.sink.closed() => return false,
            };
            let item = match item {
                Ok(Some(item)) => item,
                Ok(None) => {
                    tracing::error!(job_id = %self.job, "following a streamed call failed");
                    return self
                        .fail(RpcError::internal(self.request_id.as_deref()))
                        .await;
                }
                Err(_) => {
                    if !self.sink.keepalive().await {
                        return false;
                    }
                    continue;
                }
            };
            let delivered = match item {
                Followed::State(job) => {
                    self.reporter
                        .progress(&self.sink, job.state.as_str().to_string())
                        .await
                }
                Followed::Output { stream, data, .. } => {
                    self.reporter.output(&self.sink, stream, &data).await
                }
                Followed::End(job) => {
                    let answer = match job_result(&job) {
                        Ok(result) => success(&self.request, decorate(self.revision, result)),
                        Err(error) => failure(Some(&self.request), &error),
                    };
                    return self.sink.send(&answer).await;
                }
            };
            if !delivered {
                return false;
            }
        }
    }

    async fn fail(&self, error: RpcError) -> bool {
        self.sink.send(&failure(Some(&self.request), &error)).await
    }
}
