//! Per-tenant limits that the store checks inside the enqueue transaction, so that two
//! concurrent submissions cannot both take the last place (see `Store::enqueue`).

/// Limits for one enqueue (`NewJob::quota`); `None` fields are unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Most sandboxes the tenant may have; checked when the job creates one.
    pub max_sandboxes: Option<u64>,
    /// Most queued and running jobs the tenant may have, this one included.
    pub max_active_jobs: Option<u64>,
    /// Most disk quota, in bytes, the tenant's sandboxes may have in total (the new one
    /// included); checked when the job creates a sandbox.
    pub max_disk_bytes: Option<u64>,
    /// The disk quota of a sandbox whose `resources` ask for none (`sandbox.disk_limit`).
    pub default_disk_bytes: Option<u64>,
}

impl Quota {
    /// Whether any limit is set.
    pub fn limits_anything(&self) -> bool {
        self.max_sandboxes.is_some()
            || self.max_active_jobs.is_some()
            || self.max_disk_bytes.is_some()
    }

    /// The disk quota of a sandbox whose stored request is `resources` (`disk_gb`, else the
    /// default); 0 for one without a quota.
    pub fn disk_bytes_of(&self, resources: &serde_json::Value) -> u64 {
        resources
            .get("disk_gb")
            .and_then(serde_json::Value::as_f64)
            .map(|gb| (gb * (1u64 << 30) as f64) as u64)
            .or(self.default_disk_bytes)
            .unwrap_or(0)
    }
}

/// What a refused enqueue ran out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaKind {
    Sandboxes,
    ActiveJobs,
    Disk,
}

impl QuotaKind {
    /// The setting that raises it, for messages.
    pub fn setting(self) -> &'static str {
        match self {
            QuotaKind::Sandboxes => "quotas.max_sandboxes",
            QuotaKind::ActiveJobs => "quotas.max_active_jobs",
            QuotaKind::Disk => "quotas.max_disk",
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            QuotaKind::Sandboxes => "sandboxes",
            QuotaKind::ActiveJobs => "queued and running jobs",
            QuotaKind::Disk => "bytes of sandbox disk quota",
        }
    }
}
