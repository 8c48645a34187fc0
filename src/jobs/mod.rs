//! The jobs service: every operation on existing jobs (get, wait, list, cancel, follow), for
//! every transport. It sits beside [`Tools::submit`](crate::tools::Tools::submit), which makes
//! jobs; REST, the jobs API, the MCP job tools, MCP tasks and the SSE event stream are thin
//! translators over the two.
//!
//! Each method takes the request's [`Caller`] and does, in one place:
//! - the role check (reading is a viewer's, cancelling a developer's; a refusal is audited);
//! - the tenant scope: a caller sees only its tenant's jobs, and another tenant's job is
//!   [`JobsError::NotFound`], never "forbidden", so that nothing says it exists; an admin may
//!   ask for another tenant's jobs, or every tenant's ([`ALL_TENANTS`]), with the `tenant`
//!   argument of the `*_in` methods (the jobs API's `?tenant=`);
//! - the audit row: a cancel's row is written in the same transaction as the state change
//!   ([`Queue::cancel_audited`]), as an enqueue's is.
//!
//! Architecture invariant: this module knows nothing of HTTP or MCP.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::audit::{Caller, Role};
use crate::queue::{Followed, Queue, follow};
use crate::store::{CancelOutcome, Job, JobFilter, JobState, StoreError};
use crate::tools::{InvalidInput, workspace_key};

/// Most jobs in one page.
pub const MAX_PAGE: u32 = 200;
/// Jobs in a page unless the caller asks for another number.
pub const DEFAULT_PAGE: u32 = 50;

/// The `tenant` an admin names to reach every tenant's jobs.
pub const ALL_TENANTS: &str = "*";

/// The audit action of a cancel, whichever transport asked for it.
pub const CANCEL_ACTION: &str = "jobs.cancel";

/// Why a jobs operation did nothing.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// No such job for this caller (it may be another tenant's).
    #[error("job {0} not found")]
    NotFound(Uuid),
    /// The caller's role is below what the operation needs.
    #[error("{action} needs the {} role", required.as_str())]
    Forbidden {
        action: &'static str,
        required: Role,
    },
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a listing asks for; the fields are as callers wrote them and checked here.
#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    /// A sandbox id or name (the jobs API's `workspace` or `sandbox`, MCP's `sandbox_id`).
    pub sandbox: Option<String>,
    pub state: Option<String>,
    pub tool: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Another tenant's jobs: only an admin may ask.
    pub tenant: Option<String>,
}

/// One page of jobs, newest first.
#[derive(Clone, Debug)]
pub struct Page {
    pub jobs: Vec<Job>,
    /// Give it back as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// Removes `background` from a call's arguments and returns it (every transport accepts it;
/// the jobs API ignores it, as every job there is answered at once).
pub fn take_background(arguments: &mut Value) -> Result<bool, InvalidInput> {
    match arguments
        .as_object_mut()
        .and_then(|o| o.remove("background"))
    {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(InvalidInput::field(
            "background",
            "background must be a boolean",
        )),
    }
}

/// The jobs service; cheap to make (it holds the queue, which is shared handles).
#[derive(Clone, Debug)]
pub struct Jobs {
    queue: Queue,
    /// The longest a caller may wait for a job to end in one request.
    max_wait: Duration,
}

impl Jobs {
    pub fn new(queue: Queue, max_wait: Duration) -> Jobs {
        Jobs { queue, max_wait }
    }

    /// The longest wait a caller may ask for.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Checks a wait in seconds that a caller asked for under the name `field`.
    pub fn check_wait(&self, field: &str, seconds: Option<f64>) -> Result<Duration, InvalidInput> {
        let max = self.max_wait.as_secs_f64();
        match seconds {
            None => Ok(Duration::ZERO),
            Some(w) if (0.0..=max).contains(&w) => Ok(Duration::from_secs_f64(w)),
            Some(_) => Err(InvalidInput::field(
                field,
                format!("{field} must be between 0 and {max} seconds"),
            )),
        }
    }

    /// Refuses a caller below `required`, with an audit row; `job` is the job concerned.
    async fn require(
        &self,
        caller: &Caller,
        action: &'static str,
        required: Role,
        job: Option<Uuid>,
    ) -> Result<(), JobsError> {
        if caller.may(required) {
            return Ok(());
        }
        let entry = caller.entry(action, None, job, "denied", None);
        if let Err(e) = self.queue.store().append_audit(&entry).await {
            tracing::error!(error = %e, action, "cannot write the audit row of a refused request");
        }
        Err(JobsError::Forbidden { action, required })
    }

    /// The tenant a lookup is scoped to (`None`: every tenant): the caller's own unless an
    /// admin asked for another one, or for every one with [`ALL_TENANTS`].
    async fn scope(
        &self,
        caller: &Caller,
        action: &'static str,
        asked: Option<&str>,
    ) -> Result<Option<String>, JobsError> {
        match asked {
            None => Ok(Some(caller.tenant.clone())),
            Some(own) if own == caller.tenant => Ok(Some(own.to_string())),
            Some(other) => {
                self.require(caller, action, Role::Admin, None).await?;
                Ok((other != ALL_TENANTS).then(|| other.to_string()))
            }
        }
    }

    /// The caller's job `id`, as it is now, or after waiting up to `wait` for it to end.
    pub async fn get(&self, caller: &Caller, id: Uuid, wait: Duration) -> Result<Job, JobsError> {
        self.get_in(caller, None, id, wait).await
    }

    /// [`Jobs::get`] in tenant `tenant` (see [`Jobs::scope`]).
    pub async fn get_in(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        id: Uuid,
        wait: Duration,
    ) -> Result<Job, JobsError> {
        self.require(caller, "jobs.get", Role::Viewer, Some(id))
            .await?;
        let scope = self.scope(caller, "jobs.get", tenant).await?;
        let job = if wait.is_zero() {
            self.queue.store().job(scope.as_deref(), id).await?
        } else {
            self.queue
                .wait(scope.as_deref(), id, wait.min(self.max_wait))
                .await?
        };
        job.ok_or(JobsError::NotFound(id))
    }

    /// Waits up to `wait` (at most the longest synchronous wait) for the caller's job to end:
    /// what a synchronous call does after submitting.
    pub async fn wait(&self, caller: &Caller, id: Uuid, wait: Duration) -> Result<Job, JobsError> {
        self.get(caller, id, wait).await
    }

    /// A page of the caller's jobs (an admin's: every tenant's, or `request.tenant`'s).
    pub async fn list(&self, caller: &Caller, request: &ListRequest) -> Result<Page, JobsError> {
        self.require(caller, "jobs.list", Role::Viewer, None)
            .await?;
        let limit = request.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(InvalidInput::field(
                "limit",
                format!("limit must be between 1 and {MAX_PAGE}"),
            )
            .into());
        }
        let tenant = self
            .scope(caller, "jobs.list", request.tenant.as_deref())
            .await?;
        let state = request
            .state
            .as_deref()
            .map(|s| {
                JobState::parse(s).ok_or_else(|| {
                    InvalidInput::field(
                        "state",
                        format!(
                            "`{s}` is not a job state (queued, running, succeeded, failed, \
                             cancelled)"
                        ),
                    )
                })
            })
            .transpose()?;
        let before_seq = request
            .cursor
            .as_deref()
            .map(|c| {
                c.parse::<i64>().map_err(|_| {
                    InvalidInput::field("cursor", "cursor is not one this server issued")
                })
            })
            .transpose()?;
        let workspace = match (&request.sandbox, &tenant) {
            (None, _) => None,
            (Some(reference), Some(tenant)) => {
                // A sandbox id is shown as its name's workspace; a deleted sandbox by its name.
                let name = match self.queue.store().sandbox(tenant, reference).await? {
                    Some(sandbox) => sandbox.name,
                    None => reference.clone(),
                };
                Some(workspace_key(tenant, &name))
            }
            (Some(_), None) => {
                return Err(InvalidInput::field(
                    "tenant",
                    "listing one sandbox's jobs across every tenant needs the tenant too",
                )
                .into());
            }
        };
        let jobs = self
            .queue
            .store()
            .list_jobs(&JobFilter {
                tenant,
                workspace,
                state,
                tool: request.tool.clone(),
                before_seq,
                limit,
            })
            .await?;
        let next_cursor = (jobs.len() == limit as usize)
            .then(|| jobs.last().map(|j| j.seq.to_string()))
            .flatten();
        Ok(Page { jobs, next_cursor })
    }

    /// Cancels the caller's job: a queued one at once, a running one by killing its command.
    /// Needs the developer role; the audit row is written with the state change.
    pub async fn cancel(&self, caller: &Caller, id: Uuid) -> Result<CancelOutcome, JobsError> {
        self.cancel_in(caller, None, id).await
    }

    /// [`Jobs::cancel`] in tenant `tenant` (see [`Jobs::scope`]).
    pub async fn cancel_in(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        id: Uuid,
    ) -> Result<CancelOutcome, JobsError> {
        self.require(caller, CANCEL_ACTION, Role::Developer, Some(id))
            .await?;
        let scope = self.scope(caller, CANCEL_ACTION, tenant).await?;
        self.cancel_scoped(caller, scope.as_deref(), id).await
    }

    /// Cancels a call the caller itself started and then abandoned (it closed its stream, or
    /// sent `notifications/cancelled`): the caller was allowed to start it, so no role is
    /// checked again; the cancel is audited like any other.
    pub async fn cancel_abandoned(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<CancelOutcome, JobsError> {
        self.cancel_scoped(caller, Some(&caller.tenant), id).await
    }

    async fn cancel_scoped(
        &self,
        caller: &Caller,
        scope: Option<&str>,
        id: Uuid,
    ) -> Result<CancelOutcome, JobsError> {
        let audit = caller.entry(CANCEL_ACTION, None, Some(id), "accepted", None);
        self.queue
            .cancel_audited(scope, id, audit)
            .await?
            .ok_or(JobsError::NotFound(id))
    }

    /// Follows the caller's job (state changes and output after sequence number `after`, live)
    /// until it ends or the receiver is dropped.
    pub async fn follow(
        &self,
        caller: &Caller,
        id: Uuid,
        after: i64,
    ) -> Result<mpsc::Receiver<Followed>, JobsError> {
        self.follow_in(caller, None, id, after).await
    }

    /// [`Jobs::follow`] in tenant `tenant` (see [`Jobs::scope`]).
    pub async fn follow_in(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        id: Uuid,
        after: i64,
    ) -> Result<mpsc::Receiver<Followed>, JobsError> {
        self.require(caller, "jobs.events", Role::Viewer, Some(id))
            .await?;
        let scope = self.scope(caller, "jobs.events", tenant).await?;
        // Subscribe before reading, so nothing between the read and the subscription is missed.
        let events = self.queue.events().subscribe(id);
        let job = self
            .queue
            .store()
            .job(scope.as_deref(), id)
            .await?
            .ok_or(JobsError::NotFound(id))?;
        let tenant = job.tenant.clone();
        Ok(follow(self.queue.clone(), tenant, job, events, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn background_is_taken_out_and_checked() {
        let mut args = json!({"background": true, "command": "x"});
        assert!(take_background(&mut args).unwrap());
        assert_eq!(args, json!({"command": "x"}));
        let mut args = json!({"background": "yes"});
        assert_eq!(
            take_background(&mut args).unwrap_err().field.as_deref(),
            Some("background")
        );
        assert!(!take_background(&mut json!({})).unwrap());
    }
}
