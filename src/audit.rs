//! Audit rows for requests: who asked for what, with a digest of the arguments and a summary
//! that carries no secrets (no file contents, no command text, no environment values).

use chrono::Utc;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use crate::auth::Role;
use crate::store::AuditEntry;

/// The tenant of keys from the environment or the generated key file.
pub const DEFAULT_TENANT: &str = "default";

/// Who is asking: the one identity of a request, whatever transport it came over and however
/// it was authenticated. The HTTP layer's authentication middleware builds it (see
/// `http::auth::caller_for`, the one place that turns an authenticated key into a `Caller` for
/// a request) and puts it into the request's extensions; the tools, the jobs service and the
/// audit log read it from there.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    /// Whose sandboxes and jobs the caller sees and creates.
    pub tenant: String,
    /// A non-secret name of the key (or token) that authenticated the caller, for audit rows.
    pub key_id: Option<String>,
    /// What the caller may do.
    pub role: Role,
    /// The client's IP address.
    pub address: Option<String>,
    /// The request's id (`X-Request-Id`), carried into jobs and audit rows.
    pub request_id: Option<String>,
}

impl Default for Caller {
    /// Nobody in particular: the `default` tenant with the least role. Only a base for
    /// struct-update syntax; authenticated callers come from [`Caller::authenticated`].
    fn default() -> Caller {
        Caller {
            tenant: DEFAULT_TENANT.into(),
            key_id: None,
            role: Role::Viewer,
            address: None,
            request_id: None,
        }
    }
}

impl Caller {
    /// The caller a valid key (or token) stands for, before the request's own details
    /// (address, request id) are added: what every authenticator produces.
    pub fn authenticated(
        tenant: impl Into<String>,
        key_id: impl Into<String>,
        role: Role,
    ) -> Caller {
        Caller {
            tenant: tenant.into(),
            key_id: Some(key_id.into()),
            role,
            ..Caller::default()
        }
    }

    /// A caller for work that did not come over HTTP (tests, benchmarks, the CLI): trusted, so
    /// an admin of `tenant`.
    pub fn internal(tenant: impl Into<String>) -> Caller {
        Caller {
            tenant: tenant.into(),
            role: Role::Admin,
            ..Caller::default()
        }
    }

    /// Whether the caller's role is at least `role`.
    pub fn may(&self, role: Role) -> bool {
        self.role >= role
    }

    /// An audit row for `action` by this caller.
    pub fn entry(
        &self,
        action: &str,
        workspace: Option<String>,
        job_id: Option<Uuid>,
        outcome: &str,
        args: Option<&Value>,
    ) -> AuditEntry {
        AuditEntry {
            at: Utc::now(),
            request_id: self.request_id.clone(),
            tenant: self.tenant.clone(),
            key_id: self.key_id.clone(),
            client_addr: self.address.clone(),
            action: action.to_string(),
            workspace,
            job_id,
            outcome: outcome.to_string(),
            duration_ms: None,
            args_digest: args.map(digest),
            args_summary: args.map(summarize),
        }
    }
}

/// SHA-256 of the arguments' JSON text, hex-encoded: proves what was asked without storing it.
pub fn digest(args: &Value) -> String {
    hex::encode(Sha256::digest(args.to_string().as_bytes()))
}

/// Fields whose values are identifiers or settings, safe to keep verbatim.
const KEPT: &[&str] = &[
    "sandbox_id",
    "name",
    "language",
    "operation",
    "working_directory",
    "timeout_s",
    "file_path",
    "destination",
    "encoding",
    "recursive",
    "branch",
    "git_branch",
    "persistent",
    "state",
    "image",
    "auto_stop_minutes",
    "background",
];

/// A redacted summary: kept fields verbatim, maps as their keys, text as its length, URLs
/// without credentials.
pub fn summarize(args: &Value) -> Value {
    let Some(obj) = args.as_object() else {
        return json!({"redacted": true});
    };
    let mut out = Map::new();
    for (key, value) in obj {
        let summary = match value {
            _ if KEPT.contains(&key.as_str()) => match value {
                Value::String(s) if s.len() > 256 => json!(format!("<{} bytes>", s.len())),
                other => other.clone(),
            },
            Value::String(s) if key.ends_with("url") || key == "git_repo" => {
                json!(strip_credentials(s))
            }
            Value::String(s) => json!(format!("<{} bytes>", s.len())),
            Value::Object(map) => json!({ "keys": map.keys().collect::<Vec<_>>() }),
            Value::Array(items) => json!(format!("<{} items>", items.len())),
            other => other.clone(),
        };
        out.insert(key.clone(), summary);
    }
    Value::Object(out)
}

/// Removes `user:password@` from a URL.
pub fn strip_credentials(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..]);
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keeps_ids_and_hides_contents() {
        let args = json!({
            "sandbox_id": "sb-1",
            "command": "export TOKEN=hunter2",
            "code": "print(1)",
            "env": {"TOKEN": "hunter2"},
            "environment_vars": {"API_KEY": "s3cret"},
            "git_repo": "https://user:tok@github.com/a/b.git",
            "timeout_s": 5
        });
        let s = summarize(&args);
        let text = s.to_string();
        assert_eq!(s["sandbox_id"], "sb-1");
        assert_eq!(s["timeout_s"], 5);
        assert_eq!(s["command"], "<20 bytes>");
        assert_eq!(s["env"]["keys"], json!(["TOKEN"]));
        assert_eq!(s["git_repo"], "https://***@github.com/a/b.git");
        for secret in ["hunter2", "s3cret", "tok@", "print"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[test]
    fn digest_is_stable_and_distinguishes() {
        let a = json!({"x": 1});
        assert_eq!(digest(&a), digest(&json!({"x": 1})));
        assert_ne!(digest(&a), digest(&json!({"x": 2})));
        assert_eq!(digest(&a).len(), 64);
    }
}
