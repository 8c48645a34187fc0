//! Secrets that come with a call (a git token) but must not be stored with its job.
//!
//! Job arguments are persisted and shown (summarised) by the jobs API, so a tool's `plan` takes
//! the secret out of the arguments, leaving [`HELD`] in its place, and [`super::Tools::submit`]
//! puts it here under the job's id before the job is enqueued. The executor reads it when the
//! job runs and drops it when the job ends.
//!
//! Limitation: the vault is this process's memory. A job claimed by another node (several nodes
//! on one PostgreSQL), or run after this node restarted, finds no secret and fails with a
//! message saying so; secrets configured on the sandbox (`create_sandbox.git_token`) have no
//! such limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Plan;

/// What stored arguments hold where a secret was.
pub const HELD: &str = "<held in memory, not stored>";

/// What a `create_sandbox` job's stored arguments hold where a value is kept on the sandbox row
/// inserted with the job (environment values, the git token): stored once, not with the job.
pub const STORED: &str = "<stored with the sandbox, not with the job>";

/// What a `create_template` job's stored arguments hold where an environment value is kept on
/// the template row inserted with the job.
pub const STORED_WITH_TEMPLATE: &str = "<stored with the template, not with the job>";

/// Longest a secret waits for its job; jobs that never ran (cancelled while queued, lost) leave
/// entries that are swept after this.
const MAX_AGE: Duration = Duration::from_secs(48 * 3600);

/// Per-job secrets held in memory.
#[derive(Default)]
pub struct SecretVault {
    entries: Mutex<HashMap<Uuid, (String, Instant)>>,
}

impl std::fmt::Debug for SecretVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("SecretVault").field("held", &n).finish()
    }
}

impl SecretVault {
    pub fn put(&self, job: Uuid, secret: String) {
        let mut entries = self.entries.lock().expect("vault lock");
        entries.retain(|_, (_, at)| at.elapsed() < MAX_AGE);
        entries.insert(job, (secret, Instant::now()));
    }

    /// The job's secret, left in place for a retry of the same job.
    pub fn get(&self, job: Uuid) -> Option<String> {
        let entries = self.entries.lock().expect("vault lock");
        entries.get(&job).map(|(secret, _)| secret.clone())
    }

    pub fn remove(&self, job: Uuid) {
        self.entries.lock().expect("vault lock").remove(&job);
    }
}

/// Moves the string at `field` of a plan's arguments into the plan's secret, leaving [`HELD`].
pub fn hold(plan: &mut Plan, field: &str, secret: String) {
    plan.arguments[field] = serde_json::Value::String(HELD.to_string());
    plan.secret = Some(secret);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_kept_per_job_until_removed() {
        let vault = SecretVault::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        vault.put(a, "tok-a".into());
        assert_eq!(vault.get(a).as_deref(), Some("tok-a"));
        assert_eq!(vault.get(a).as_deref(), Some("tok-a"));
        assert_eq!(vault.get(b), None);
        vault.remove(a);
        assert_eq!(vault.get(a), None);
        assert!(!format!("{vault:?}").contains("tok"));
    }
}
