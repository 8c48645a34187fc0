//! API keys as stored: an id and a digest, never the key itself.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One API key. The store keeps the SHA-256 digest of the key (hex), never the key; the id is
/// the key's public part, which the key carries so that a lookup needs no scan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant: String,
    /// `viewer`, `developer` or `admin` (the store does not interpret it).
    pub role: String,
    pub name: Option<String>,
    /// Hex SHA-256 of the whole key; not serialized (`keys list` never shows it).
    #[serde(skip)]
    pub digest: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}
