//! Per-tenant limits that the store checks inside the enqueue transaction, so that two
//! concurrent submissions cannot both take the last place (see `Store::enqueue`).

/// Limits for one enqueue (`NewJob::quota`); `None` fields are unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Most sandboxes the tenant may have; checked when the job creates one.
    pub max_sandboxes: Option<u64>,
    /// Most queued and running jobs the tenant may have, this one included.
    pub max_active_jobs: Option<u64>,
}

/// What a refused enqueue ran out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaKind {
    Sandboxes,
    ActiveJobs,
}

impl QuotaKind {
    /// The setting that raises it, for messages.
    pub fn setting(self) -> &'static str {
        match self {
            QuotaKind::Sandboxes => "quotas.max_sandboxes",
            QuotaKind::ActiveJobs => "quotas.max_active_jobs",
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            QuotaKind::Sandboxes => "sandboxes",
            QuotaKind::ActiveJobs => "queued and running jobs",
        }
    }
}
