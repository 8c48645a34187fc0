//! Audit rows: one per state-changing, executing or denied request.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// An audit row before insertion. Carries no secrets: arguments appear only as a digest and a
/// redacted summary built by `audit::summarize`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub tenant: String,
    pub key_id: Option<String>,
    pub client_addr: Option<String>,
    /// The tool or API action, e.g. `execute_shell` or `jobs.cancel`.
    pub action: String,
    pub workspace: Option<String>,
    pub job_id: Option<Uuid>,
    /// `accepted`, `denied`, `succeeded`, `failed`, …
    pub outcome: String,
    pub duration_ms: Option<i64>,
    pub args_digest: Option<String>,
    pub args_summary: Option<Value>,
}

/// A stored audit row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// Filters for reading the audit log, oldest first.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub tenant: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub key_id: Option<String>,
    pub workspace: Option<String>,
    pub action: Option<String>,
    /// Only rows of a sandbox of this name, in any tenant (the name part of the workspace key
    /// `<tenant>/<name>`).
    pub sandbox: Option<String>,
    /// Only rows with this outcome (`accepted`, `denied`, `cancelled`, …).
    pub outcome: Option<String>,
    /// Only rows with an id greater than this (the cursor of the previous page).
    pub after_id: Option<i64>,
    pub limit: u32,
}
