//! Sandbox drivers: where sandboxes live and how commands run in them.
//!
//! Architecture invariant: drivers know nothing of the queue, of jobs or of HTTP. A driver gets
//! one operation (create, delete, exec) with everything it needs, and reports output and outcome.
//! Commands reach a driver as a [`Program`] (argv, a shell command the caller wrote, or source
//! code), never as a shell string assembled from caller input.

pub mod files;
pub mod local;
pub mod paths;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use self::files::{FileRequest, FileResult};
use crate::output::OutputTx;

/// Errors a driver reports. The tools layer maps them to job errors.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The driver has no such sandbox.
    #[error("sandbox `{0}` does not exist on the driver")]
    NotFound(String),
    /// A caller-supplied value the driver cannot use; `field` names the input field.
    #[error("{message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    /// A path the caller named does not exist in the sandbox; `field` names the input field.
    #[error("{message}")]
    PathNotFound {
        field: &'static str,
        message: String,
    },
    /// A limit of the sandbox refused the operation (its disk quota).
    #[error("{0}")]
    LimitExceeded(String),
    /// The sandbox lacks what the request needs (an interpreter).
    #[error("{0}")]
    Unsupported(String),
    /// The driver's backend is unreachable for now; worth retrying.
    #[error("driver unavailable: {0}")]
    Unavailable(String),
    /// Anything else: an I/O failure on the host, a bug.
    #[error("{0}")]
    Internal(String),
}

impl DriverError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> DriverError {
        DriverError::InvalidArgument {
            field,
            message: message.into(),
        }
    }

    pub fn internal(context: &str, e: impl std::fmt::Display) -> DriverError {
        DriverError::Internal(format!("{context}: {e}"))
    }
}

/// What a new sandbox should be.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    pub id: String,
    pub name: String,
    pub language: String,
}

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub enum Program {
    /// The caller's own shell command, run by the sandbox's shell as `sh -c COMMAND`: the command
    /// is one argv element, never spliced into another string.
    Shell(String),
    /// Source code for an interpreter; the driver passes it as a file, never on a command line.
    Code { language: String, source: String },
    /// A program and its arguments, as is.
    Argv(Vec<String>),
}

/// One command execution.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    pub program: Program,
    /// Relative to the sandbox root, or absolute inside it; `None` is the root.
    pub working_directory: Option<String>,
    /// Variables set for the command (the sandbox's, then the call's).
    pub env: BTreeMap<String, String>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Bytes kept per stream in the result.
    pub output_limit: usize,
    /// Whether the command may use the network (the sandbox's setting, within the operator's).
    pub network: bool,
    /// The sandbox's resource limits.
    pub limits: SandboxLimits,
}

/// Resource limits of one sandbox: its request within the operator's maxima, or the operator's
/// defaults. Resolved by the tools layer and carried by every operation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SandboxLimits {
    /// Memory of a command's whole process tree.
    pub memory_bytes: u64,
    /// CPU cores.
    pub cpus: f64,
    /// Bytes the sandbox's files may use; `None`: no quota.
    pub disk_bytes: Option<u64>,
}

/// One limit as a driver enforces it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LimitReport {
    /// The limit (bytes, cores, processes, seconds), when it has one value.
    pub value: Option<f64>,
    /// How it is enforced here: `cgroup v1 memory`, `rlimit`, `check`…
    pub enforced_by: String,
}

/// Live channels of one execution.
#[derive(Debug)]
pub struct ExecIo {
    /// Output chunks as they arrive.
    pub output: OutputTx,
    /// Kills the command when fired.
    pub cancel: CancellationToken,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecResult {
    /// The exit code; `None` when the server killed the command (timeout, cancel).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Whether either stream was longer than the limit.
    pub truncated: bool,
    pub timed_out: bool,
    pub cancelled: bool,
    /// Set when a resource limit ended the command, naming it ("memory", "cpu time", …).
    pub limit_exceeded: Option<String>,
    pub duration: Duration,
}

/// What a driver last measured of one sandbox's resource use (the per-sandbox gauges of
/// `/metrics`). `None` where the driver does not measure that resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SandboxUsage {
    pub sandbox: String,
    /// Bytes used by the sandbox's files.
    pub disk_bytes: Option<u64>,
    /// Memory charged to the sandbox's running commands now.
    pub memory_bytes: Option<u64>,
    /// The memory limit those commands run under.
    pub memory_limit_bytes: Option<u64>,
}

/// A sandbox backend.
#[async_trait]
pub trait Driver: Send + Sync + std::fmt::Debug + 'static {
    /// The driver's name, as stored on sandbox rows (`local`, `daytona`).
    fn name(&self) -> &'static str;

    /// Whether the driver can serve requests now (for `/readyz`).
    async fn check(&self) -> Result<(), DriverError>;

    /// Creates the sandbox. Idempotent: creating an existing sandbox again succeeds.
    async fn create(&self, spec: &SandboxSpec) -> Result<(), DriverError>;

    /// Deletes the sandbox and everything in it. Deleting a missing sandbox succeeds.
    async fn delete(&self, id: &str) -> Result<(), DriverError>;

    /// Whether the sandbox exists on the driver.
    async fn exists(&self, id: &str) -> Result<bool, DriverError>;

    /// Bytes used by the sandbox's files, measured now.
    async fn disk_usage(&self, id: &str) -> Result<u64, DriverError>;

    /// Where the sandbox's files appear to its commands: `/workspace` when the driver mounts
    /// them there, else their real path (isolation levels without a mount namespace).
    fn workspace_root(&self, id: &str) -> String;

    /// The last known figure of [`Driver::disk_usage`], without measuring (for listings).
    fn known_disk_usage(&self, id: &str) -> Option<u64>;

    /// The last figures of every sandbox the driver measures, without measuring now (it is
    /// called on every scrape of `/metrics`). A driver that measures nothing reports nothing.
    fn usage(&self) -> Vec<SandboxUsage> {
        Vec::new()
    }

    /// How each limit of a sandbox with `limits` is enforced, by limit name.
    fn limits_report(&self, limits: &SandboxLimits) -> BTreeMap<&'static str, LimitReport>;

    /// Runs a command in the sandbox until it exits, times out or is cancelled.
    async fn exec(
        &self,
        id: &str,
        request: ExecRequest,
        io: ExecIo,
    ) -> Result<ExecResult, DriverError>;

    /// Performs one file operation on the sandbox's files, confined to them whatever symlinks
    /// the sandbox holds. `timeout` bounds long walks (recursive deletes).
    async fn file(
        &self,
        id: &str,
        request: FileRequest,
        timeout: Duration,
    ) -> Result<FileResult, DriverError>;
}
