//! The template record: a tenant's stored preset for `create_sandbox` (`create_template`).
//!
//! The store knows a template's fields only as JSON (the tools layer owns their meaning); the
//! environment values are kept apart from them, as on a sandbox row, so that a listing can show
//! the names without the values.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A stored template. Unique per tenant and name.
#[derive(Clone, PartialEq)]
pub struct TemplateRecord {
    pub tenant: String,
    pub name: String,
    /// Every field of the template except the environment values (the tools layer's
    /// `TemplateFields`, with `environment_vars` removed).
    pub fields: Value,
    /// Applied to every sandbox made from the template; values are secrets, never echoed.
    pub environment_vars: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for TemplateRecord {
    /// Shows the environment's names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateRecord")
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("fields", &self.fields)
            .field(
                "environment_vars",
                &self.environment_vars.keys().collect::<Vec<_>>(),
            )
            .field("created_at", &self.created_at)
            .finish()
    }
}
