//! Who may do what: roles, and the API keys that carry them.

use serde::{Deserialize, Serialize};

/// Roles, ordered: each includes the ones before it (the seed's `permission:` levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Lists and reads.
    Viewer,
    /// Creates, runs, writes, deletes.
    Developer,
    /// Everything, including the audit log and keys.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }
}
