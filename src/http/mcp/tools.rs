//! `tools/list` and `tools/call`: the server's tools as MCP tools, calls as jobs, jobs' ends as
//! tool results.
//!
//! Every queue tool (the ones in [`crate::tools`]) is listed with its input schema plus a
//! `background` flag, an output schema that also admits the job handle a background call
//! returns, and its annotations. The job tools (`get_job`, `cancel_job`, `list_jobs`) come
//! from [`super::job_tools`]: they read the queue directly and are not jobs themselves.
//!
//! Errors follow the revision's rules: an unknown tool or a malformed call is a JSON-RPC error;
//! what the tool could not do is a result with `isError: true`. Arguments the tool refuses are a
//! `-32602` error in 2025-06-18 and an `isError` result from 2025-11-25 on (SEP-1303), so a
//! model can read the message and correct itself. A non-zero exit code is a normal result.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::job_tools;
use super::protocol::{Revision, RpcError, TASKS_EXTENSION};
use super::results::{Outcome, job_handle, job_result, refused, refused_with, structured_result};
use super::{Ctx, sse, tasks};
use crate::http::error::ApiError;
use crate::jobs::take_background;
use crate::store::Job;
use crate::tools::{Submission, SubmitError, ToolSpec};

/// The JSON schema of the handle a background call (or a call still running when the
/// synchronous wait ends) returns instead of the tool's output.
fn job_handle_schema() -> Value {
    json!({
        "type": "object",
        "description": "The job running the call, when it was started in the background or is \
                        still running: read it with get_job.",
        "properties": {
            "job_id": {"type": "string", "description": "Pass to get_job or cancel_job."},
            "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
            "message": {"type": "string"}
        },
        "required": ["job_id", "status", "message"]
    })
}

/// Removes the `format`s schemars adds for Rust number types (`uint64`, `double`…): they are not
/// JSON Schema formats, and validators such as ajv (the TypeScript SDK's) warn about each one.
/// The range they imply stays (`minimum: 0`).
fn strip_number_formats(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            let rust_number = object
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| {
                    matches!(
                        f,
                        "uint"
                            | "uint8"
                            | "uint16"
                            | "uint32"
                            | "uint64"
                            | "int8"
                            | "int16"
                            | "int32"
                            | "int64"
                            | "float"
                            | "double"
                    )
                });
            if rust_number {
                object.remove("format");
            }
            object.values_mut().for_each(strip_number_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_number_formats),
        _ => {}
    }
}

/// A queue tool's MCP input schema: its own, plus `background`.
fn input_schema(spec: &ToolSpec) -> Value {
    let mut schema = spec.input_schema.clone();
    strip_number_formats(&mut schema);
    if let Some(properties) = schema.as_object_mut().and_then(|s| {
        s.entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
    }) {
        properties.insert(
            "background".into(),
            json!({
                "type": "boolean",
                "default": false,
                "description": "Start the call as a job and answer at once with its job_id \
                                (read it later with get_job) instead of waiting for the result."
            }),
        );
    }
    schema
}

/// A queue tool's MCP output schema: its output, or the job handle.
fn output_schema(spec: &ToolSpec) -> Value {
    let mut output = spec.output_schema.clone();
    strip_number_formats(&mut output);
    let defs = output.as_object_mut().and_then(|o| o.remove("$defs"));
    let mut schema = json!({"type": "object", "anyOf": [output, job_handle_schema()]});
    if let Some(defs) = defs {
        schema["$defs"] = defs;
    }
    schema
}

/// The tools as `tools/list` shows them in `revision` to the caller, in name order: only the
/// tools the caller's role may call (a tool some of whose operations it may call is listed).
pub(crate) fn descriptors(ctx: &Ctx) -> Vec<Value> {
    let task_support = ctx.revision == Revision::V2025_11_25;
    let mut tools: Vec<Value> = ctx
        .state
        .tools
        .specs()
        .filter(|spec| ctx.caller.may(spec.min_role))
        .map(|spec| {
            let mut tool = json!({
                "name": spec.name,
                "description": spec.description,
                "inputSchema": input_schema(spec),
                "outputSchema": output_schema(spec),
                "annotations": spec.annotations,
            });
            if task_support {
                tool["execution"] = json!({"taskSupport": "optional"});
            }
            tool
        })
        .collect();
    for mut tool in job_tools::descriptors(&ctx.caller) {
        if task_support {
            tool["execution"] = json!({"taskSupport": "forbidden"});
        }
        tools.push(tool);
    }
    tools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    tools
}

/// Cursors are opaque to clients: the name of the last tool of the previous page, encoded.
fn encode_cursor(after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("tools:{after}"))
}

fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("tools:")
        .map(str::to_string)
}

/// `tools/list`: one page of tools.
pub(crate) fn list(ctx: &Ctx, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let after = match params.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) => Some(
            decode_cursor(cursor)
                .ok_or_else(|| RpcError::invalid_params("invalid cursor: use a nextCursor"))?,
        ),
        Some(_) => return Err(RpcError::invalid_params("cursor must be a string")),
    };
    let page_size = ctx.state.config.mcp.page_size;
    let tools: Vec<Value> = descriptors(ctx)
        .into_iter()
        .filter(|t| {
            after
                .as_deref()
                .is_none_or(|a| t["name"].as_str() > Some(a))
        })
        .collect();
    let more = tools.len() > page_size;
    let page: Vec<Value> = tools.into_iter().take(page_size).collect();
    let mut result = json!({ "tools": page });
    if more && let Some(last) = page.last().and_then(|t| t["name"].as_str()) {
        result["nextCursor"] = json!(encode_cursor(last));
    }
    if ctx.revision.is_modern() {
        // The list changes only when the server is upgraded; it is the same for every caller,
        // but it is only served to authenticated ones.
        result["ttlMs"] = json!(300_000);
        result["cacheScope"] = json!("private");
    }
    Ok(result)
}

/// How a tools/call asks to run.
enum Mode {
    /// Wait for the result.
    Wait,
    /// Answer the job handle at once (`background: true`).
    Background,
    /// Answer a task (2025-11-25 `params.task`, or a 2026 client with the tasks extension).
    Task,
}

/// `tools/call`.
pub(crate) async fn call(
    ctx: &Ctx,
    id: &Value,
    params: &Map<String, Value>,
) -> Result<Outcome, RpcError> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("tools/call needs `name`, a string"))?;
    let mut arguments = match params.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(a)) => Value::Object(a.clone()),
        Some(_) => return Err(RpcError::invalid_params("`arguments` must be an object")),
    };
    let task_requested = match (ctx.revision, params.get("task")) {
        (Revision::V2025_11_25, Some(Value::Object(task))) => {
            if task.get("ttl").is_some_and(|t| !t.is_null() && !t.is_u64()) {
                return Err(RpcError::invalid_params(
                    "task.ttl must be a number of milliseconds",
                ));
            }
            true
        }
        (Revision::V2025_11_25, Some(Value::Null) | None) => false,
        (Revision::V2025_11_25, Some(_)) => {
            return Err(RpcError::invalid_params("`task` must be an object"));
        }
        (Revision::V2026_07_28, _) => ctx.declares_extension(TASKS_EXTENSION),
        (Revision::V2025_06_18, _) => false,
    };
    if job_tools::is_job_tool(name) {
        if task_requested && ctx.revision == Revision::V2025_11_25 {
            return Err(RpcError::new(
                actix_web::http::StatusCode::OK,
                -32601,
                format!("tool `{name}` does not support task-augmented execution"),
            ));
        }
        return job_tools::call(ctx, name, arguments).await;
    }
    let Some(spec) = ctx.state.tools.spec(name) else {
        return Err(RpcError::invalid_params(format!("Unknown tool: {name}")));
    };
    let background = match take_background(&mut arguments) {
        Ok(b) => b,
        Err(_) => {
            return Ok(refused(
                ctx.revision,
                "invalid_argument",
                "background must be a boolean".into(),
                Some("background".into()),
            ));
        }
    };
    let mode = if background {
        Mode::Background
    } else if task_requested {
        Mode::Task
    } else {
        Mode::Wait
    };
    let submitted = ctx
        .state
        .tools
        .submit(Submission {
            tool: spec.name.to_string(),
            arguments,
            caller: ctx.caller.clone(),
            idempotency_key: None,
            priority: 0,
            timeout_s: None,
        })
        .await;
    let job = match submitted {
        Ok(enqueued) => enqueued.job,
        Err(SubmitError::UnknownTool(name)) => {
            return Err(RpcError::invalid_params(format!("Unknown tool: {name}")));
        }
        Err(SubmitError::QuotaExceeded { kind, limit }) => {
            let (message, retry_after_s) = SubmitError::quota_answer(kind, limit);
            return Ok(refused(
                ctx.revision,
                "quota_exceeded",
                format!("{message} (in {retry_after_s} s or later)"),
                None,
            ));
        }
        Err(SubmitError::Store(e)) if e.is_unavailable() => {
            tracing::warn!(error = %e, "cannot enqueue an MCP tool call: the database is unavailable");
            return Err(RpcError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                -32000,
                "the database is unavailable; retry in a few seconds",
            ));
        }
        // The same codes as REST (`invalid_argument`, `not_found`, `conflict`, `forbidden`,
        // `idempotency_key_reused`).
        Err(e) => {
            return refused_with(
                ctx.revision,
                ApiError::from(e),
                ctx.caller.request_id.as_deref(),
            );
        }
    };
    match mode {
        Mode::Background => Ok(Outcome::Json(structured_result(
            &job_handle(
                &job,
                "started in the background; read the result with get_job, stop it with cancel_job",
            ),
            false,
        ))),
        Mode::Task => Ok(Outcome::Json(tasks::created(ctx, &job))),
        Mode::Wait => wait(ctx, id, job).await,
    }
}

/// Waits for a synchronous call: streams progress when the client asked for it and accepts
/// SSE, else answers JSON once the job ends.
async fn wait(ctx: &Ctx, id: &Value, job: Job) -> Result<Outcome, RpcError> {
    let in_flight = ctx.state.mcp.in_flight.register(ctx, id, job.id);
    if ctx.accepts_sse && (ctx.progress_token.is_some() || ctx.log_level.is_some()) {
        return Ok(Outcome::Http(sse::stream_call(ctx, id, job, in_flight)));
    }
    // On 2026-07-28 a client that goes away cancels its call; the guard fires when actix drops
    // this future because the connection closed.
    let cancel_on_drop = ctx
        .revision
        .is_modern()
        .then(|| CancelOnDrop::new(ctx, job.id));
    let jobs = ctx.state.jobs();
    let waited = jobs.wait(&ctx.caller, job.id, jobs.max_wait()).await;
    if let Some(guard) = cancel_on_drop {
        guard.disarm();
    }
    drop(in_flight);
    match waited {
        Ok(job) => job_result(&job).map(Outcome::Json),
        Err(crate::jobs::JobsError::NotFound(_)) => Err(RpcError::invalid_params(format!(
            "job {} disappeared (pruned)",
            job.id
        ))),
        Err(e) => {
            tracing::error!(error = %e, "cannot wait for an MCP tool call");
            Err(RpcError::internal(ctx.caller.request_id.as_deref()))
        }
    }
}

/// Cancels a job when dropped armed: the request that waited for it was abandoned.
pub(crate) struct CancelOnDrop {
    jobs: crate::jobs::Jobs,
    caller: crate::audit::Caller,
    id: uuid::Uuid,
    armed: bool,
}

impl CancelOnDrop {
    pub(crate) fn new(ctx: &Ctx, id: uuid::Uuid) -> CancelOnDrop {
        CancelOnDrop {
            jobs: ctx.state.jobs(),
            caller: ctx.caller.clone(),
            id,
            armed: true,
        }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let jobs = self.jobs.clone();
        let caller = self.caller.clone();
        let id = self.id;
        // A plain tokio task: this may run while a worker's local task set is being torn down,
        // where spawning a local task would panic. Without a runtime there is nobody to cancel
        // for (the server is stopping; the job then ends as its shutdown decides).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        tracing::info!(job_id = %id, "the client went away; cancelling its call");
        runtime.spawn(async move {
            if let Err(e) = jobs.cancel_abandoned(&caller, id).await {
                tracing::warn!(error = %e, job_id = %id, "cannot cancel an abandoned call");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_number_formats_are_removed_and_others_kept() {
        let mut schema = json!({"properties": {
            "n": {"type": "integer", "format": "uint64", "minimum": 0},
            "x": {"anyOf": [{"type": "number", "format": "double"}]},
            "when": {"type": "string", "format": "date-time"}
        }});
        strip_number_formats(&mut schema);
        assert_eq!(
            schema["properties"]["n"],
            json!({"type": "integer", "minimum": 0})
        );
        assert!(
            schema["properties"]["x"]["anyOf"][0]
                .get("format")
                .is_none()
        );
        assert_eq!(schema["properties"]["when"]["format"], "date-time");
    }
}
