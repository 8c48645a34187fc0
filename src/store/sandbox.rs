//! The sandbox record: what the server knows about a sandbox, whichever driver made it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// A sandbox as stored. The driver owns the sandbox itself; this row is the server's index of it.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub tenant: String,
    /// Unique per tenant; callers may use it wherever an id is accepted.
    pub name: String,
    pub driver: String,
    pub language: String,
    pub status: String,
    pub image: Option<String>,
    pub git_repo: Option<String>,
    pub git_branch: Option<String>,
    /// Applied to every command; values are secrets and never echoed in full.
    pub environment_vars: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub resources: Value,
    pub persistent: bool,
    pub auto_stop_minutes: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub last_accessed: DateTime<Utc>,
    /// Whether the sandbox's commands may use the network.
    pub network: bool,
    /// Token for the sandbox's HTTPS git remotes; never shown, logged or audited.
    pub git_token: Option<Secret>,
    /// The job that creates the sandbox, when the row was inserted with it (see
    /// [`crate::store::NewJob::sandbox`]). Set by the store, ignored by `insert_sandbox`.
    pub creating_job: Option<Uuid>,
    /// The driver's own name for the sandbox (Daytona assigns its own ids), set once the driver
    /// has made it; `None` until then, and on rows older than handles (the local driver's
    /// handle is the id). Callers never see it: `id` stays ours and stable.
    pub handle: Option<String>,
    /// The node whose disk holds the sandbox (node-local drivers); its jobs run only there.
    /// `None`: any node can reach it (Daytona), or a row from before nodes were recorded.
    pub node: Option<String>,
}

impl SandboxRecord {
    /// What the sandbox's driver calls it: its handle, or our id where it has none.
    pub fn driver_handle(&self) -> &str {
        self.handle.as_deref().unwrap_or(&self.id)
    }
}

/// The status of a sandbox row that its creating job has not made usable yet. The store knows
/// it only for one rule: such a row reserved by a job (`creating_job`) is deleted when that job
/// ends failed or cancelled.
pub const CREATING: &str = "creating";

/// A secret value whose `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Filters for listing sandboxes of one tenant.
#[derive(Clone, Debug, Default)]
pub struct SandboxFilter {
    pub tenant: String,
    /// Every pair must match.
    pub labels: BTreeMap<String, String>,
    pub status: Option<String>,
}

impl SandboxFilter {
    /// Whether `record` passes the label and status filters (the tenant is matched in SQL).
    pub fn matches(&self, record: &SandboxRecord) -> bool {
        self.status.as_ref().is_none_or(|s| &record.status == s)
            && self
                .labels
                .iter()
                .all(|(k, v)| record.labels.get(k) == Some(v))
    }
}

/// Count of sandboxes per driver and status, for the `workspace_count` gauge.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxCount {
    pub driver: String,
    pub status: String,
    pub count: i64,
}
