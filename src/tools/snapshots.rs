//! Snapshot tools: `snapshot_sandbox`, `list_snapshots`, `restore_snapshot`,
//! `delete_snapshot`, and the restore behind `create_sandbox {from_snapshot}` (a fork).
//!
//! A snapshot is the sandbox's files as a tar stream (`Driver::export_files`), checked with the
//! archive rules (`drivers::archive`: an archive that a restore would refuse is refused when
//! taken), compressed into this node's data dir (`archives.rs`) and recorded with its size and
//! digest (`snapshots` table), where its size counts against the tenant's `quotas.max_disk`. A
//! restore checks the digest, then hands the tar stream to `Driver::import_files`, which checks
//! every entry again and replaces the sandbox's files all at once or not at all.

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::archives::Scratch;
use super::args::{
    self, InvalidInput, ListSnapshotsArgs, RestoreSnapshotArgs, SnapshotArgs, SnapshotSandboxArgs,
    schema_of,
};
use super::outputs::{
    DeleteSnapshotOutput, ListSnapshotsOutput, RestoreSnapshotOutput, SnapshotSandboxOutput,
    SnapshotSummary,
};
use super::{
    Annotations, Plan, Target, Tool, ToolEnv, ToolSpec, ToolsConfig, driver_failure, failed,
    find_sandbox, store_failure, stored_args, succeeded,
};
use crate::actors::{JobContext, Outcome};
use crate::auth::Role;
use crate::store::{ErrorReason, Job, SandboxRecord, SnapshotRecord, StoreError};

fn rfc3339(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn summary(s: SnapshotRecord) -> SnapshotSummary {
    SnapshotSummary {
        snapshot_id: s.id,
        name: s.name,
        sandbox_id: s.sandbox_id,
        sandbox_name: s.sandbox_name,
        size_bytes: s.size_bytes.max(0) as u64,
        digest: s.digest,
        entries: s.entries.max(0) as u64,
        created_at: rfc3339(s.created_at),
    }
}

fn plan(arguments: Value, target: Target) -> Plan {
    Plan::new(arguments, target, true)
}

/// The job tenant's snapshot `id`, or the outcome that ends the job (another tenant's is not
/// found, like a missing one).
async fn find_snapshot(env: &ToolEnv, job: &Job, id: &str) -> Result<SnapshotRecord, Outcome> {
    match env.store.snapshot(&job.tenant, id).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(failed(
            ErrorReason::NotFound,
            format!("snapshot `{id}` not found"),
        )),
        Err(e) => Err(store_failure(job, e)),
    }
}

/// Checks that the snapshot's archive is on this node (archives live in the data dir of the
/// node that took them).
fn check_here(env: &ToolEnv, snapshot: &SnapshotRecord) -> Result<(), Outcome> {
    if env.archives.holds(&snapshot.id) {
        return Ok(());
    }
    let message = if snapshot.node != env.node_id {
        format!(
            "snapshot `{}` is kept in the data dir of node `{}`, and this job ran on node \
             `{}`; snapshots can be restored only on the node that took them",
            snapshot.id, snapshot.node, env.node_id
        )
    } else {
        format!(
            "the archive of snapshot `{}` is missing from this server's data dir",
            snapshot.id
        )
    };
    Err(failed(ErrorReason::NotFound, message))
}

/// Replaces the files of `record` with those of `snapshot`: digest, then the driver's checked
/// import. Nothing changes on any error.
pub(super) async fn restore_into(
    env: &ToolEnv,
    record: &SandboxRecord,
    snapshot: &SnapshotRecord,
    ctx: &JobContext,
) -> Result<u64, Outcome> {
    check_here(env, snapshot)?;
    let driver = env.driver_of(record).map_err(driver_failure)?;
    let scratch: Scratch = env
        .archives
        .open_verified(
            &snapshot.id,
            snapshot.size_bytes.max(0) as u64,
            &snapshot.digest,
        )
        .await
        .map_err(driver_failure)?;
    let limits = env.config.resources.limits(&record.resources);
    // Not abandoned on cancel: the import's last step swaps the files in, and an import left
    // running behind a job reported cancelled could still do so. It ends at its deadline.
    driver
        .import_files(record.driver_handle(), scratch.path(), &limits, ctx.timeout)
        .await
        .map(|s| s.entries)
        .map_err(driver_failure)
}

pub(super) struct SnapshotSandbox {
    spec: ToolSpec,
}

impl SnapshotSandbox {
    pub(super) fn new() -> SnapshotSandbox {
        SnapshotSandbox {
            spec: ToolSpec {
                name: "snapshot_sandbox",
                description: "Snapshot a sandbox's files (names, bytes, modes, symlinks, empty \
                    directories) into a compressed archive on the server, after the sandbox's \
                    earlier jobs. Returns its snapshot_id, for restore_snapshot and \
                    create_sandbox {from_snapshot}. Its size counts against your disk quota.",
                input_schema: schema_of::<SnapshotSandboxArgs>(),
                output_schema: schema_of::<SnapshotSandboxOutput>(),
                annotations: Annotations {
                    read_only_hint: false,
                    destructive_hint: false,
                    idempotent_hint: false,
                    open_world_hint: false,
                },
                min_role: Role::Developer,
            },
        }
    }
}

#[async_trait]
impl Tool for SnapshotSandbox {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, mut arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let parsed: SnapshotSandboxArgs = args::parse(&arguments)?;
        if parsed.snapshot_id.is_some() {
            return Err(InvalidInput::field(
                "snapshot_id",
                "snapshot_id is chosen by the server; give a name instead",
            ));
        }
        if let Some(name) = &parsed.name {
            if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
                return Err(InvalidInput::field(
                    "name",
                    "name must be 1-200 characters without control characters",
                ));
            }
        }
        // Chosen now, so a re-run after a crash makes (or finds) the same snapshot.
        arguments["snapshot_id"] = json!(format!(
            "snap-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..20]
        ));
        Ok(plan(arguments, Target::Sandbox(parsed.sandbox_id)))
    }

    async fn run(&self, env: &ToolEnv, job: &Job, ctx: JobContext) -> Outcome {
        let args: SnapshotSandboxArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let Some(id) = args.snapshot_id else {
            return failed(ErrorReason::InvalidArgument, "the job has no snapshot_id");
        };
        // A re-run of a job whose snapshot was recorded.
        match env.store.snapshot(&job.tenant, &id).await {
            Ok(Some(done)) => return snapshot_taken(done),
            Ok(None) => {}
            Err(e) => return store_failure(job, e),
        }
        let record = match find_sandbox(env, job, &args.sandbox_id).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let driver = match env.driver_of(&record) {
            Ok(d) => d.clone(),
            Err(e) => return driver_failure(e),
        };
        let scratch = match env.archives.scratch() {
            Ok(s) => s,
            Err(e) => return driver_failure(e),
        };
        let exported = tokio::select! {
            r = driver.export_files(record.driver_handle(), scratch.path(), ctx.timeout) => r,
            () = ctx.cancel.cancelled() => {
                return failed(ErrorReason::Cancelled, "the snapshot was cancelled");
            }
        };
        if let Err(e) = exported {
            return driver_failure(e);
        }
        // Refuse now what a restore would refuse (a symlink pointing out of the sandbox).
        let path = scratch.path().to_path_buf();
        let checked = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&path)
                .map_err(|e| crate::drivers::DriverError::internal("cannot read the snapshot", e))
                .and_then(|f| crate::drivers::archive::check(std::io::BufReader::new(f)))
        })
        .await;
        let checked = match checked {
            Ok(Ok(summary)) => summary,
            Ok(Err(e)) => return not_snapshotted(e),
            Err(e) => return failed(ErrorReason::Internal, format!("snapshot check failed: {e}")),
        };
        let sealed = match env.archives.seal(&id, scratch.path()).await {
            Ok(s) => s,
            Err(e) => return driver_failure(e),
        };
        drop(scratch);
        let snapshot = SnapshotRecord {
            id: id.clone(),
            tenant: job.tenant.clone(),
            name: args.name,
            sandbox_id: record.id.clone(),
            sandbox_name: record.name.clone(),
            driver: record.driver.clone(),
            node: env.node_id.clone(),
            size_bytes: sealed.size_bytes as i64,
            digest: sealed.digest,
            entries: checked.entries as i64,
            created_at: Utc::now(),
        };
        let quota = env.quotas.for_tenant(&job.tenant);
        match env.store.insert_snapshot(&snapshot, quota.as_ref()).await {
            Ok(()) => snapshot_taken(snapshot),
            Err(StoreError::QuotaExceeded { limit, .. }) => {
                let _ = env.archives.remove(&id).await;
                failed(
                    ErrorReason::ExecutionError,
                    format!(
                        "quota exceeded: the snapshot takes {} bytes, and with it this tenant's \
                         sandboxes' disk quotas and snapshots would exceed its limit of {:.1} \
                         GiB (quotas.max_disk); delete a snapshot (delete_snapshot) or a \
                         sandbox, then retry; no snapshot was kept",
                        snapshot.size_bytes,
                        limit as f64 / (1u64 << 30) as f64
                    ),
                )
            }
            Err(e) => {
                let _ = env.archives.remove(&id).await;
                store_failure(job, e)
            }
        }
    }
}

/// A snapshot refused because the sandbox holds what a restore would refuse.
fn not_snapshotted(error: crate::drivers::DriverError) -> Outcome {
    match error {
        crate::drivers::DriverError::InvalidArgument { message, .. } => failed(
            ErrorReason::InvalidArgument,
            message.replace(
                "the snapshot's archive is refused: ",
                "the sandbox cannot be snapshotted: ",
            ),
        ),
        other => driver_failure(other),
    }
}

fn snapshot_taken(snapshot: SnapshotRecord) -> Outcome {
    let message = format!(
        "snapshot `{}` of sandbox `{}` taken: {} entries, {} bytes",
        snapshot.id, snapshot.sandbox_name, snapshot.entries, snapshot.size_bytes
    );
    succeeded(
        &SnapshotSandboxOutput {
            snapshot: summary(snapshot),
            message,
        },
        None,
    )
}

pub(super) struct ListSnapshots {
    spec: ToolSpec,
}

impl ListSnapshots {
    pub(super) fn new() -> ListSnapshots {
        ListSnapshots {
            spec: ToolSpec {
                name: "list_snapshots",
                description: "List your snapshots (oldest first), optionally only those of one \
                    sandbox: id, name, the sandbox taken, size, digest, creation time.",
                input_schema: schema_of::<ListSnapshotsArgs>(),
                output_schema: schema_of::<ListSnapshotsOutput>(),
                annotations: Annotations {
                    read_only_hint: true,
                    destructive_hint: false,
                    idempotent_hint: true,
                    open_world_hint: false,
                },
                min_role: Role::Viewer,
            },
        }
    }
}

#[async_trait]
impl Tool for ListSnapshots {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let _: ListSnapshotsArgs = args::parse(&arguments)?;
        Ok(plan(arguments, Target::None))
    }

    async fn run(&self, env: &ToolEnv, job: &Job, _ctx: JobContext) -> Outcome {
        let args: ListSnapshotsArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        // A name is resolved to its sandbox; an unknown reference may be a deleted sandbox's id.
        let sandbox = match &args.sandbox_id {
            None => None,
            Some(reference) => match env.store.sandbox(&job.tenant, reference).await {
                Ok(Some(record)) => Some(record.id),
                Ok(None) => Some(reference.clone()),
                Err(e) => return store_failure(job, e),
            },
        };
        let records = match env
            .store
            .list_snapshots(&job.tenant, sandbox.as_deref())
            .await
        {
            Ok(r) => r,
            Err(e) => return store_failure(job, e),
        };
        let snapshots: Vec<SnapshotSummary> = records.into_iter().map(summary).collect();
        let count = snapshots.len();
        succeeded(
            &ListSnapshotsOutput {
                snapshots,
                count,
                message: format!("{count} snapshot(s)"),
            },
            None,
        )
    }
}

pub(super) struct RestoreSnapshot {
    spec: ToolSpec,
}

impl RestoreSnapshot {
    pub(super) fn new() -> RestoreSnapshot {
        RestoreSnapshot {
            spec: ToolSpec {
                name: "restore_snapshot",
                description: "Replace a sandbox's files with a snapshot's, after the sandbox's \
                    earlier jobs: files written since are lost. The archive's digest and every \
                    entry are checked first; a refused or failed restore leaves the sandbox as \
                    it was.",
                input_schema: schema_of::<RestoreSnapshotArgs>(),
                output_schema: schema_of::<RestoreSnapshotOutput>(),
                annotations: Annotations {
                    read_only_hint: false,
                    destructive_hint: true,
                    idempotent_hint: true,
                    open_world_hint: false,
                },
                min_role: Role::Developer,
            },
        }
    }
}

#[async_trait]
impl Tool for RestoreSnapshot {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let parsed: RestoreSnapshotArgs = args::parse(&arguments)?;
        Ok(plan(arguments, Target::Sandbox(parsed.sandbox_id)))
    }

    async fn run(&self, env: &ToolEnv, job: &Job, ctx: JobContext) -> Outcome {
        let args: RestoreSnapshotArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let snapshot = match find_snapshot(env, job, &args.snapshot_id).await {
            Ok(s) => s,
            Err(outcome) => return outcome,
        };
        let record = match find_sandbox(env, job, &args.sandbox_id).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        match restore_into(env, &record, &snapshot, &ctx).await {
            Ok(entries) => succeeded(
                &RestoreSnapshotOutput {
                    message: format!(
                        "sandbox `{}` restored from snapshot `{}` ({entries} entries)",
                        record.name, snapshot.id
                    ),
                    snapshot_id: snapshot.id,
                    sandbox_id: record.id,
                    entries,
                },
                None,
            ),
            Err(outcome) => outcome,
        }
    }
}

pub(super) struct DeleteSnapshot {
    spec: ToolSpec,
}

impl DeleteSnapshot {
    pub(super) fn new() -> DeleteSnapshot {
        DeleteSnapshot {
            spec: ToolSpec {
                name: "delete_snapshot",
                description: "Delete a snapshot and its archive, freeing its share of your disk \
                    quota. Sandboxes restored or forked from it keep their files.",
                input_schema: schema_of::<SnapshotArgs>(),
                output_schema: schema_of::<DeleteSnapshotOutput>(),
                annotations: Annotations {
                    read_only_hint: false,
                    destructive_hint: true,
                    idempotent_hint: true,
                    open_world_hint: false,
                },
                min_role: Role::Developer,
            },
        }
    }
}

#[async_trait]
impl Tool for DeleteSnapshot {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let _: SnapshotArgs = args::parse(&arguments)?;
        Ok(plan(arguments, Target::None))
    }

    async fn run(&self, env: &ToolEnv, job: &Job, _ctx: JobContext) -> Outcome {
        let args: SnapshotArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let snapshot = match find_snapshot(env, job, &args.snapshot_id).await {
            Ok(s) => s,
            Err(outcome) => return outcome,
        };
        let mut message = format!("snapshot `{}` deleted", snapshot.id);
        if snapshot.node == env.node_id {
            if let Err(e) = env.archives.remove(&snapshot.id).await {
                return driver_failure(e);
            }
        } else {
            message.push_str(&format!(
                "; its archive is in the data dir of node `{}`, which removes it only by hand",
                snapshot.node
            ));
        }
        match env.store.delete_snapshot(&job.tenant, &snapshot.id).await {
            Ok(_) => succeeded(
                &DeleteSnapshotOutput {
                    snapshot_id: snapshot.id,
                    success: true,
                    message,
                },
                None,
            ),
            Err(e) => store_failure(job, e),
        }
    }
}

/// The snapshot a `create_sandbox {from_snapshot}` forks, for the job's tenant.
pub(super) async fn fork_source(
    env: &ToolEnv,
    job: &Job,
    id: &str,
) -> Result<SnapshotRecord, Outcome> {
    find_snapshot(env, job, id).await
}
