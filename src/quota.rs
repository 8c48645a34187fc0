//! The per-tenant limit on running jobs (`quotas.max_running_jobs`), applied to each claim.
//!
//! A claim takes the best runnable jobs whatever their tenant; afterwards, for each tenant with
//! a limit, the jobs beyond it go back to the queue ([`Store::unclaim`]) for a short
//! [`DEFER`]: their `seq` is kept, so each stays first in its workspace's order, and their
//! `run_after` keeps the next claims from taking them again at once, so a tenant at its limit
//! does not crowd other tenants out of a claim batch. The count is read after the claim has
//! committed, so of two nodes claiming at once the later one sees both claims: the limit can
//! be undershot for a moment, never exceeded.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::QuotaConfig;
use crate::store::{Job, Result, Store};

/// How long a job put back for its tenant's running limit waits before it is claimable again.
pub const DEFER: Duration = Duration::from_secs(1);

/// The running limit of each tenant.
#[derive(Clone, Debug, Default)]
pub struct RunningLimits {
    default: Option<u64>,
    tenants: HashMap<String, Option<u64>>,
}

impl RunningLimits {
    pub fn from_config(quotas: &QuotaConfig) -> RunningLimits {
        RunningLimits {
            default: Some(quotas.max_running_jobs).filter(|n| *n > 0),
            tenants: quotas
                .tenants
                .iter()
                .filter_map(|(name, t)| {
                    t.max_running_jobs
                        .map(|n| (name.clone(), Some(n).filter(|n| *n > 0)))
                })
                .collect(),
        }
    }

    /// `tenant`'s limit, if it has one.
    pub fn of(&self, tenant: &str) -> Option<u64> {
        match self.tenants.get(tenant) {
            Some(own) => *own,
            None => self.default,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.tenants.values().all(Option::is_none)
    }
}

/// Of `claimed` (in claim order), the jobs within their tenants' running limits; the others are
/// put back in the queue until `now + DEFER`.
pub async fn admit(
    store: &dyn Store,
    node: &str,
    limits: &RunningLimits,
    claimed: Vec<Job>,
    now: DateTime<Utc>,
) -> Result<Vec<Job>> {
    if limits.is_empty() || claimed.is_empty() {
        return Ok(claimed);
    }
    // Per limited tenant, its claimed jobs in claim order.
    let mut by_tenant: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, job) in claimed.iter().enumerate() {
        if limits.of(&job.tenant).is_some() {
            by_tenant.entry(&job.tenant).or_default().push(i);
        }
    }
    let mut deferred = Vec::new();
    for (tenant, indexes) in by_tenant {
        let limit = limits.of(tenant).expect("only limited tenants are grouped");
        let running = store.running_jobs(tenant).await?;
        let excess = running.saturating_sub(limit) as usize;
        // The last claimed go back first: the claim order is the queue's.
        deferred.extend(indexes.iter().rev().take(excess).map(|&i| claimed[i].id));
    }
    if deferred.is_empty() {
        return Ok(claimed);
    }
    let run_after = now + chrono::Duration::from_std(DEFER).expect("a second fits");
    let put_back = store.unclaim(node, &deferred, run_after).await?;
    tracing::debug!(
        jobs = put_back.len(),
        "claimed jobs put back for their tenants' running limits"
    );
    Ok(claimed
        .into_iter()
        .filter(|job| !put_back.contains(&job.id))
        .collect())
}
