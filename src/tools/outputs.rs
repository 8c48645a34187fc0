//! Tool outputs. The seed's fields come first; the rest are additions. These types are the
//! tools' `outputSchema`s.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CreateSandboxOutput {
    pub sandbox_id: String,
    pub name: String,
    pub language: String,
    pub status: String,
    pub preview_url: Option<String>,
    pub message: String,
    /// RFC 3339.
    pub created_at: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SandboxSummary {
    pub sandbox_id: String,
    pub name: String,
    pub language: String,
    pub status: String,
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ListSandboxesOutput {
    pub sandboxes: Vec<SandboxSummary>,
    pub count: usize,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SandboxInfoOutput {
    pub sandbox_id: String,
    pub name: String,
    pub language: String,
    pub status: String,
    pub created_at: String,
    pub last_accessed: String,
    pub preview_url: Option<String>,
    pub git_repo: Option<String>,
    /// Variable names with masked values: secrets are never echoed back.
    pub environment_vars: BTreeMap<String, String>,
    pub message: String,
    pub labels: BTreeMap<String, String>,
    /// Requested resources and how the driver enforces limits.
    pub resources: Value,
    /// Bytes used by the sandbox's files, when the driver can tell.
    pub disk_bytes: Option<u64>,
    pub driver: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct DeleteSandboxOutput {
    pub sandbox_id: String,
    pub success: bool,
    pub message: String,
}

/// Output of `execute_shell` and `execute_code`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ExecOutput {
    pub sandbox_id: String,
    /// The exit code (128 + signal when a signal ended it); null when the server killed the
    /// command for its timeout or a cancel.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Seconds.
    pub execution_time: f64,
    pub message: String,
    pub timed_out: bool,
    /// Whether stdout or stderr was cut at the output limit (full output: the job's events).
    pub truncated: bool,
    pub cancelled: bool,
    /// The resource limit that ended the command, if one did ("memory", "cpu time", "file size").
    pub limit_exceeded: Option<String>,
}
