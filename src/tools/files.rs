//! `file_operation`: read, write, append, list, delete, mkdir, move, stat and exists on a
//! sandbox's files. Content travels as UTF-8 text or base64 bytes, never through a shell; the
//! driver resolves every path beneath the sandbox root by descriptor.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::args::{self, Encoding, FileOperation, FileOperationArgs, InvalidInput, schema_of};
use super::outputs::{FileEntry, FileOperationOutput};
use super::{
    Annotations, Plan, Target, Tool, ToolEnv, ToolSpec, ToolsConfig, driver_failure, find_sandbox,
    stored_args, succeeded,
};
use crate::actors::{JobContext, Outcome};
use crate::auth::Role;
use crate::drivers::files::{Entry, EntryKind, FileOp, FileRequest, FileResult};
use crate::drivers::paths::sandbox_relative;
use crate::store::{ErrorReason, Job, JobError};

/// Most entries `list` returns.
const MAX_LIST_ENTRIES: usize = 10_000;

pub(super) struct FileOperationTool {
    spec: ToolSpec,
}

impl FileOperationTool {
    pub(super) fn new() -> FileOperationTool {
        FileOperationTool {
            spec: ToolSpec {
                name: "file_operation",
                description: "Read, write, append, list, delete, mkdir, move, stat or check the \
                    existence of files in a sandbox. Paths are relative to the sandbox root or \
                    absolute under /workspace; `..` above the root, symlinks that lead outside \
                    and special files (FIFOs, devices) are refused. Content is UTF-8 text, or \
                    any bytes with encoding \"base64\". Writes create missing parent \
                    directories; mkdir creates parents too.",
                input_schema: schema_of::<FileOperationArgs>(),
                output_schema: schema_of::<FileOperationOutput>(),
                // One tool for reads and writes: the hints must hold for every operation, so it
                // claims to write and possibly destroy (delete, overwrite) but not the outside
                // world.
                annotations: Annotations {
                    read_only_hint: false,
                    destructive_hint: true,
                    idempotent_hint: false,
                    open_world_hint: false,
                },
                // Reads (read, list, stat, exists) are a viewer's; see `required_role`.
                min_role: Role::Viewer,
            },
        }
    }
}

/// Decodes `content` for a write: UTF-8 text as is, base64 as bytes.
fn decode(content: &str, encoding: Encoding) -> Result<Vec<u8>, InvalidInput> {
    match encoding {
        Encoding::Utf8 => Ok(content.as_bytes().to_vec()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|e| {
                InvalidInput::field("content", format!("content is not valid base64: {e}"))
            }),
    }
}

/// Checks the combination of fields for the operation, before anything is stored.
fn validate(a: &FileOperationArgs, config: &ToolsConfig) -> Result<(), InvalidInput> {
    let relative = sandbox_relative("file_path", &a.file_path)
        .map_err(|e| InvalidInput::field("file_path", e.to_string()))?;
    let op = a.operation;
    let writes = matches!(op, FileOperation::Write | FileOperation::Append);
    match (&a.content, writes) {
        (None, true) => {
            return Err(InvalidInput::field(
                "content",
                format!(
                    "content is required for {} (use \"\" for an empty file)",
                    op.as_str()
                ),
            ));
        }
        (Some(_), false) => {
            return Err(InvalidInput::field(
                "content",
                format!(
                    "content is only used by write and append, not {}",
                    op.as_str()
                ),
            ));
        }
        (Some(content), true) => {
            let bytes = decode(content, a.encoding)?;
            if bytes.len() as u64 > config.file_limit_bytes {
                return Err(InvalidInput::field(
                    "content",
                    format!(
                        "content is {} bytes, over the {}-byte limit of file_operation",
                        bytes.len(),
                        config.file_limit_bytes
                    ),
                ));
            }
        }
        (None, false) => {}
    }
    match (&a.destination, op) {
        (None, FileOperation::Move) => {
            return Err(InvalidInput::field(
                "destination",
                "destination is required for move",
            ));
        }
        (Some(destination), FileOperation::Move) => {
            let to = sandbox_relative("destination", destination)
                .map_err(|e| InvalidInput::field("destination", e.to_string()))?;
            if to.as_os_str().is_empty() && relative.as_os_str().is_empty() {
                return Err(InvalidInput::field(
                    "destination",
                    "cannot move the sandbox root",
                ));
            }
        }
        (Some(_), _) => {
            return Err(InvalidInput::field(
                "destination",
                format!("destination is only used by move, not {}", op.as_str()),
            ));
        }
        (None, _) => {}
    }
    if a.recursive && !matches!(op, FileOperation::Delete | FileOperation::Mkdir) {
        return Err(InvalidInput::field(
            "recursive",
            format!(
                "recursive applies to delete (and mkdir), not {}",
                op.as_str()
            ),
        ));
    }
    if relative.as_os_str().is_empty()
        && matches!(
            op,
            FileOperation::Delete
                | FileOperation::Move
                | FileOperation::Write
                | FileOperation::Append
        )
    {
        return Err(InvalidInput::field(
            "file_path",
            format!(
                "file_path names the sandbox root, which {} cannot act on",
                op.as_str()
            ),
        ));
    }
    Ok(())
}

fn rfc3339(at: std::time::SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn entry_view(e: Entry) -> FileEntry {
    FileEntry {
        is_dir: e.kind == EntryKind::Directory,
        kind: e.kind.as_str().to_string(),
        mode: format!("{:04o}", e.mode),
        modified: rfc3339(e.modified),
        name: e.name,
        size: e.size,
        link_target: e.link_target,
    }
}

#[async_trait]
impl Tool for FileOperationTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let a: FileOperationArgs = args::parse(&arguments)?;
        validate(&a, config)?;
        // Reads are ordered too: a read submitted after a write sees it.
        let retry_safe = a.operation.is_read_only() || a.operation == FileOperation::Mkdir;
        Ok(Plan {
            arguments,
            target: Target::Sandbox(a.sandbox_id),
            retry_safe,
            timeout_s: None,
            secret: None,
            sandbox: None,
            template: None,
            setup_commands: Vec::new(),
        })
    }

    fn required_role(&self, arguments: &Value) -> Role {
        match args::parse::<FileOperationArgs>(arguments) {
            Ok(a) if a.operation.is_read_only() => Role::Viewer,
            _ => Role::Developer,
        }
    }

    async fn run(&self, env: &ToolEnv, job: &Job, ctx: JobContext) -> Outcome {
        let a: FileOperationArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let record = match find_sandbox(env, job, &a.sandbox_id).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let path = match sandbox_relative("file_path", &a.file_path) {
            Ok(p) => p,
            Err(e) => return driver_failure(e),
        };
        let op = match a.operation {
            FileOperation::Read => FileOp::Read {
                max_bytes: env.config.file_limit_bytes,
            },
            FileOperation::Write | FileOperation::Append => {
                let content = match decode(a.content.as_deref().unwrap_or(""), a.encoding) {
                    Ok(c) => c,
                    Err(e) => return invalid(e),
                };
                FileOp::Write {
                    content,
                    append: a.operation == FileOperation::Append,
                }
            }
            FileOperation::List => FileOp::List {
                max_entries: MAX_LIST_ENTRIES,
            },
            FileOperation::Delete => FileOp::Delete {
                recursive: a.recursive,
            },
            FileOperation::Mkdir => FileOp::Mkdir,
            FileOperation::Move => {
                match sandbox_relative("destination", a.destination.as_deref().unwrap_or("")) {
                    Ok(destination) => FileOp::Move { destination },
                    Err(e) => return driver_failure(e),
                }
            }
            FileOperation::Stat => FileOp::Stat,
            FileOperation::Exists => FileOp::Exists,
        };
        let request = FileRequest {
            path,
            op,
            disk_quota: env.config.resources.limits(&record.resources).disk_bytes,
        };
        let timeout = ctx.timeout.max(Duration::from_secs(1));
        let driver = match env.driver_of(&record) {
            Ok(d) => d,
            Err(e) => return driver_failure(e),
        };
        let result = match driver.file(record.driver_handle(), request, timeout).await {
            Ok(r) => r,
            Err(e) => return driver_failure(e),
        };
        let mut out = FileOperationOutput {
            sandbox_id: record.id,
            operation: a.operation.as_str().to_string(),
            file_path: a.file_path.clone(),
            success: true,
            ..FileOperationOutput::default()
        };
        let path = &a.file_path;
        match result {
            FileResult::Content(bytes) => {
                out.size = Some(bytes.len() as u64);
                let text = match a.encoding {
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(&bytes),
                    Encoding::Utf8 => match String::from_utf8(bytes) {
                        Ok(text) => text,
                        Err(e) => {
                            return invalid(InvalidInput::field(
                                "encoding",
                                format!(
                                    "`{path}` is not valid UTF-8 text (invalid byte at offset \
                                     {}); read it with encoding \"base64\"",
                                    e.utf8_error().valid_up_to()
                                ),
                            ));
                        }
                    },
                };
                out.encoding = Some(
                    match a.encoding {
                        Encoding::Utf8 => "utf8",
                        Encoding::Base64 => "base64",
                    }
                    .to_string(),
                );
                out.message = format!("read {} bytes from `{path}`", out.size.unwrap_or(0));
                out.content = Some(text);
            }
            FileResult::Written { size } => {
                out.size = Some(size);
                out.message = if a.operation == FileOperation::Append {
                    format!("appended to `{path}`, now {size} bytes")
                } else {
                    format!("wrote {size} bytes to `{path}`")
                };
            }
            FileResult::Entries { entries, truncated } => {
                out.files = Some(entries.iter().map(|e| e.name.clone()).collect());
                out.message = if truncated {
                    format!(
                        "`{path}` has more than {MAX_LIST_ENTRIES} entries; the first \
                         {MAX_LIST_ENTRIES} by name are listed"
                    )
                } else {
                    format!("{} entries in `{path}`", entries.len())
                };
                out.entries = Some(entries.into_iter().map(entry_view).collect());
                out.truncated = Some(truncated);
            }
            FileResult::Deleted { removed } => {
                out.removed = Some(removed);
                out.message = if removed == 1 {
                    format!("deleted `{path}`")
                } else {
                    format!("deleted `{path}` ({removed} entries)")
                };
            }
            FileResult::Created { created } => {
                out.message = if created {
                    format!("created directory `{path}`")
                } else {
                    format!("directory `{path}` already exists")
                };
            }
            FileResult::Moved { destination } => {
                let destination = destination.display().to_string();
                out.message = format!("moved `{path}` to `{destination}`");
                out.destination = Some(destination);
            }
            FileResult::Stat(entry) => {
                out.size = Some(entry.size);
                out.message = format!("`{path}` is a {}", entry.kind.as_str().replace('_', " "));
                out.entry = Some(entry_view(entry));
            }
            FileResult::Exists(kind) => {
                out.exists = Some(kind.is_some());
                out.message = match kind {
                    Some(kind) => format!("`{path}` exists ({})", kind.as_str().replace('_', " ")),
                    None => format!("`{path}` does not exist"),
                };
            }
        }
        succeeded(&out, None)
    }
}

fn invalid(e: InvalidInput) -> Outcome {
    let error = JobError::new(ErrorReason::InvalidArgument, e.message);
    Outcome::Failed {
        error: match e.field {
            Some(field) => error.with_field(field),
            None => error,
        },
        result: None,
        exit_code: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> ToolsConfig {
        ToolsConfig {
            default_timeout_s: 300,
            max_timeout_s: 3600,
            output_limit_bytes: 1 << 20,
            max_attempts: 3,
            file_limit_bytes: 16,
            allow_network: false,
            resources: Default::default(),
            drivers: Default::default(),
            templates: Default::default(),
        }
    }

    fn plan(arguments: Value) -> Result<Plan, InvalidInput> {
        FileOperationTool::new().plan(arguments, &config())
    }

    #[test]
    fn fields_are_checked_per_operation() {
        let cases = [
            (
                json!({"sandbox_id": "s", "operation": "write", "file_path": "a"}),
                "content",
            ),
            (
                json!({"sandbox_id": "s", "operation": "read", "file_path": "a", "content": "x"}),
                "content",
            ),
            (
                json!({"sandbox_id": "s", "operation": "move", "file_path": "a"}),
                "destination",
            ),
            (
                json!({"sandbox_id": "s", "operation": "read", "file_path": "../../etc/passwd"}),
                "file_path",
            ),
            (
                json!({"sandbox_id": "s", "operation": "read", "file_path": "/etc/passwd"}),
                "file_path",
            ),
            (
                json!({"sandbox_id": "s", "operation": "write", "file_path": "a",
                       "content": "!!", "encoding": "base64"}),
                "content",
            ),
            (
                json!({"sandbox_id": "s", "operation": "write", "file_path": "a",
                       "content": "x".repeat(17)}),
                "content",
            ),
            (
                json!({"sandbox_id": "s", "operation": "chmod", "file_path": "a"}),
                "operation",
            ),
            (
                json!({"sandbox_id": "s", "operation": "delete", "file_path": "/workspace"}),
                "file_path",
            ),
        ];
        for (arguments, field) in cases {
            let err = plan(arguments.clone()).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{arguments}: {err:?}");
        }
    }

    #[test]
    fn reads_are_retry_safe_and_writes_are_not() {
        let read = plan(json!({"sandbox_id": "s", "operation": "read", "file_path": "a"})).unwrap();
        assert!(read.retry_safe);
        assert_eq!(read.target, Target::Sandbox("s".into()));
        let append = plan(
            json!({"sandbox_id": "s", "operation": "append", "file_path": "a",
                                  "content": ""}),
        )
        .unwrap();
        assert!(!append.retry_safe);
    }
}
