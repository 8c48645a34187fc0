//! Sandbox drivers: where sandboxes live and how commands run in them.
//!
//! Architecture invariant: drivers know nothing of the queue, of jobs or of HTTP. A driver gets
//! one operation (create, delete, exec) with everything it needs, and reports output and outcome.
//! Commands reach a driver as a [`Program`] (argv, a shell command the caller wrote, or source
//! code), never as a shell string assembled from caller input.

pub mod archive;
pub mod daytona;
pub mod files;
pub mod languages;
pub mod local;
pub mod paths;
mod registry;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use self::files::{FileRequest, FileResult};
use crate::output::OutputTx;
pub use registry::{Drivers, from_config};

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
    /// The backend did not answer in time (a hanging Daytona); not retried, since the
    /// operation may have taken effect.
    #[error("{0}")]
    Timeout(String),
    /// What ran the command broke while it ran (a persistent sandbox's agent died or spoke
    /// nonsense): that command fails, not retried (it may have taken effect); the next one
    /// gets a fresh sandbox.
    #[error("{0}")]
    Crashed(String),
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

/// What a new sandbox should be: everything the tools layer knows of it. A driver uses what its
/// backend can (the local driver has no images; Daytona enforces the resources itself).
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    /// Our stable id (the local driver's directory; Daytona's sandbox name).
    pub id: String,
    /// The caller's name, unique per tenant (not per driver backend).
    pub name: String,
    pub language: String,
    /// An image or snapshot to start from; `None`: the driver's default.
    pub image: Option<String>,
    /// Resources within the operator's maxima.
    pub limits: SandboxLimits,
    /// Whether the sandbox may use the network.
    pub network: bool,
    /// The caller's labels (kept in our database; a driver may pass on its own).
    pub labels: BTreeMap<String, String>,
    /// Minutes of inactivity after which the backend may stop the sandbox.
    pub auto_stop_minutes: Option<u32>,
}

/// What `Driver::create` made.
#[derive(Clone, Debug, PartialEq)]
pub struct Created {
    /// The driver's own name for the sandbox, used in every later call.
    pub handle: String,
}

/// What a driver can and cannot do, so that the tools layer words its answers truthfully.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Capabilities {
    /// A timeout or cancel kills every process the command started (not only the first).
    pub kills_process_tree: bool,
    /// Output reaches followers while the command runs (else once it ends).
    pub live_output: bool,
    /// `image` on `create_sandbox` is used.
    pub images: bool,
    /// The sandbox lives on the disk of the node that made it, so only that node can run its
    /// jobs (the local driver). `false`: any node reaches it (Daytona).
    pub node_local: bool,
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

/// The last thing a driver saw of its backend, for `/metrics` (no call to the backend).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Health {
    /// Whether the backend answered its last call; `None` before any.
    pub available: Option<bool>,
    /// Calls that found the backend unavailable since start-up.
    pub unavailable_total: u64,
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

/// A sandbox backend. Every call names a sandbox by its handle ([`Created::handle`]).
#[async_trait]
pub trait Driver: Send + Sync + std::fmt::Debug + 'static {
    /// The driver's name, as stored on sandbox rows (`local`, `daytona`).
    fn name(&self) -> &'static str;

    /// Whether the driver can serve requests now (for `/readyz`).
    async fn check(&self) -> Result<(), DriverError>;

    /// What `/readyz` shows of the driver besides its check (versions, the backend's URL).
    fn details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Warnings for `/readyz` (weakened isolation and the like).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// The last thing the driver saw of its backend.
    fn health(&self) -> Health {
        Health::default()
    }

    /// The language names `create_sandbox` and `execute_code` accept on this driver.
    fn languages(&self) -> Vec<&'static str> {
        languages::known()
    }

    /// How the driver enforces isolation and limits, as shown by `get_sandbox_info`.
    fn enforcement(&self) -> serde_json::Value;

    /// How a call's `timeout_s` is enforced, for `get_sandbox_info`.
    fn timeout_enforcement(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Creates the sandbox. Idempotent: creating an existing sandbox (same `spec.id`) again
    /// succeeds and returns the same handle.
    async fn create(&self, spec: &SandboxSpec) -> Result<Created, DriverError>;

    /// Deletes the sandbox and everything in it. Deleting a missing sandbox succeeds.
    async fn delete(&self, id: &str) -> Result<(), DriverError>;

    /// Whether the sandbox exists on the driver.
    async fn exists(&self, id: &str) -> Result<bool, DriverError>;

    /// The sandbox's status in our terms (`running`, `stopped`, …), `None` when the driver has
    /// no such sandbox.
    async fn status(&self, id: &str) -> Result<Option<String>, DriverError> {
        Ok(self.exists(id).await?.then(|| "running".to_string()))
    }

    /// Every sandbox's status by handle, when the driver can list them in one go (so that a
    /// listing does not ask once per sandbox); `None` when it cannot.
    async fn statuses(&self) -> Result<Option<BTreeMap<String, String>>, DriverError> {
        Ok(None)
    }

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

    /// The sandbox's workspace went idle on this node: free what the driver keeps running for
    /// it between commands (the local driver's persistent sandbox). Nothing by default.
    async fn release(&self, _id: &str) {}

    /// Runs a command in the sandbox until it exits, times out or is cancelled.
    async fn exec(
        &self,
        id: &str,
        request: ExecRequest,
        io: ExecIo,
    ) -> Result<ExecResult, DriverError>;

    /// Writes every file of the sandbox (regular files, directories, symlinks; names, modes and
    /// bytes as they are) as a tar stream into the host file `tar`, which the caller made
    /// empty. Never follows a symlink and never reads outside the sandbox.
    async fn export_files(
        &self,
        id: &str,
        tar: &std::path::Path,
        timeout: Duration,
    ) -> Result<archive::Summary, DriverError> {
        let _ = (id, tar, timeout);
        Err(DriverError::Unsupported(format!(
            "the {} driver cannot take snapshots",
            self.name()
        )))
    }

    /// Replaces the sandbox's files with those of the tar stream in the host file `tar`,
    /// checked entry by entry ([`archive::check`]'s rules) as it is unpacked. All or nothing:
    /// on any error the sandbox keeps its files as they were.
    async fn import_files(
        &self,
        id: &str,
        tar: &std::path::Path,
        limits: &SandboxLimits,
        timeout: Duration,
    ) -> Result<archive::Summary, DriverError> {
        let _ = (id, tar, limits, timeout);
        Err(DriverError::Unsupported(format!(
            "the {} driver cannot restore snapshots",
            self.name()
        )))
    }

    /// Performs one file operation on the sandbox's files, confined to them whatever symlinks
    /// the sandbox holds. `timeout` bounds long walks (recursive deletes).
    async fn file(
        &self,
        id: &str,
        request: FileRequest,
        timeout: Duration,
    ) -> Result<FileResult, DriverError>;
}
