//! The snapshot record: one archive of a sandbox's files (`snapshot_sandbox`).

use chrono::{DateTime, Utc};

/// A snapshot as stored. The archive itself lives in the data dir of `node`; the row is what
/// counts against the tenant's disk quota and what lookups (per tenant) find.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotRecord {
    /// `snap-…`, what callers use.
    pub id: String,
    pub tenant: String,
    /// The caller's label for it, if any (not unique).
    pub name: Option<String>,
    /// The sandbox it was taken of (which may since be gone).
    pub sandbox_id: String,
    pub sandbox_name: String,
    /// The driver of that sandbox.
    pub driver: String,
    /// The node whose data dir holds the archive.
    pub node: String,
    /// The archive's size in bytes (compressed), counted against `quotas.max_disk`.
    pub size_bytes: i64,
    /// SHA-256 of the archive, hex; checked before every restore.
    pub digest: String,
    /// How many entries (files, directories, links) the archive holds.
    pub entries: i64,
    pub created_at: DateTime<Utc>,
}
