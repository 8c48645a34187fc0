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
    /// The template the sandbox was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The job ids of the setup commands, in order: each an `execute_shell` job of this
    /// sandbox, queued before any later call's (read them with get_job).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup_jobs: Vec<String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SandboxSummary {
    pub sandbox_id: String,
    pub name: String,
    pub language: String,
    pub status: String,
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    /// When a job last used the sandbox, RFC 3339.
    pub last_accessed: String,
    /// Bytes used by the sandbox's files (last measurement).
    pub disk_bytes: Option<u64>,
    pub network: bool,
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
    /// `requested` (as asked at creation), `limits` (each effective limit with `value` and
    /// `enforced_by`), `enforcement` (isolation, cgroup version and controllers, rlimits).
    pub resources: Value,
    /// Bytes used by the sandbox's files, measured now.
    pub disk_bytes: Option<u64>,
    /// The sandbox's disk quota; null when it has none.
    pub disk_quota_bytes: Option<u64>,
    /// Whether the sandbox uses more than its disk quota.
    pub over_quota: bool,
    pub driver: String,
    /// Whether the sandbox's commands may use the network.
    pub network: bool,
    /// Whether a git token is configured for the sandbox (its value is never shown).
    pub git_token_configured: bool,
    pub git_branch: Option<String>,
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

/// One commit, as `git_operation` `log` shows it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Commit {
    pub hash: String,
    pub author_name: String,
    pub author_email: String,
    /// Author date, RFC 3339.
    pub date: String,
    pub subject: String,
}

/// Output of `git_operation`.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct GitOperationOutput {
    pub sandbox_id: String,
    pub operation: String,
    /// Whether git exited with 0.
    pub success: bool,
    /// What git printed (stdout, then stderr), with any credential replaced by `***`.
    pub output: String,
    pub message: String,
    /// git's exit code; null when it was killed (timeout, cancel).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// log: the commits, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits: Option<Vec<Commit>>,
    /// branch (list): branch names, remote-tracking ones as `remotes/<remote>/<name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<String>>,
    /// branch (list): the checked-out branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_branch: Option<String>,
}

/// One file or directory, as `file_operation` shows it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct FileEntry {
    pub name: String,
    /// Bytes (for a symlink, the length of its target text).
    pub size: u64,
    pub is_dir: bool,
    /// file, directory, symlink, fifo, socket, char_device or block_device.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits in octal, e.g. "0644".
    pub mode: String,
    /// Last modification, RFC 3339.
    pub modified: String,
    /// Where a symlink points, as written in the link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// Output of `file_operation`. Fields other than the seed's appear when the operation has them.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct FileOperationOutput {
    pub sandbox_id: String,
    pub operation: String,
    pub file_path: String,
    pub success: bool,
    /// read: the content, in `encoding`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// list: entry names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    pub message: String,
    /// list: the entries with their details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<FileEntry>>,
    /// read: how `content` is encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// read, write, append: the file's size in bytes afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// exists: the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// stat: the entry (a symlink is described, not followed); exists: its type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<FileEntry>,
    /// move: where the entry ended up (relative to the sandbox root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// list: whether the directory had more entries than were returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// delete: entries removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
}

/// One snapshot.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SnapshotSummary {
    pub snapshot_id: String,
    pub name: Option<String>,
    /// The sandbox it was taken of (which may since be deleted).
    pub sandbox_id: String,
    pub sandbox_name: String,
    /// Bytes of the compressed archive; counted against the tenant's disk quota.
    pub size_bytes: u64,
    /// SHA-256 of the archive, checked before every restore.
    pub digest: String,
    /// Files, directories and links in it.
    pub entries: u64,
    /// RFC 3339.
    pub created_at: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SnapshotSandboxOutput {
    #[serde(flatten)]
    pub snapshot: SnapshotSummary,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ListSnapshotsOutput {
    pub snapshots: Vec<SnapshotSummary>,
    pub count: usize,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RestoreSnapshotOutput {
    pub snapshot_id: String,
    pub sandbox_id: String,
    /// Entries restored.
    pub entries: u64,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct DeleteSnapshotOutput {
    pub snapshot_id: String,
    pub success: bool,
    pub message: String,
}
