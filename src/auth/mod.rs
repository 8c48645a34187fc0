//! Who may do what: roles, and the credentials that carry them. The HTTP authenticator
//! (`http/auth.rs`) finds a credential on a request; this module checks it: API keys stored in
//! the database ([`keys`]), OIDC/OAuth2 bearer tokens ([`oidc`]), and the per-key request rate
//! ([`rate`]).

pub mod keys;
pub mod oidc;
pub mod rate;

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

    /// A role by its name (`viewer`, `developer`, `admin`).
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "developer" => Some(Role::Developer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}
