//! Sandbox lifecycle tools: create, list, inspect, delete.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::args::{
    self, CreateSandboxArgs, InvalidInput, ListSandboxesArgs, SandboxArgs, SandboxName, schema_of,
};
use super::git::{self, GitCommand};
use super::outputs::{
    CreateSandboxOutput, DeleteSandboxOutput, ListSandboxesOutput, SandboxInfoOutput,
    SandboxSummary,
};
use super::secrets::{HELD, STORED};
use super::{
    Annotations, Plan, Target, Tool, ToolEnv, ToolSpec, ToolsConfig, driver_failure, failed,
    find_sandbox, store_failure, stored_args, succeeded,
};
use crate::actors::{JobContext, Outcome};
use crate::auth::Role;
use crate::drivers::{Driver, SandboxSpec};
use crate::store::{CREATING, ErrorReason, Job, SandboxFilter, SandboxRecord, Secret, StoreError};

/// Sandbox status once usable.
const RUNNING: &str = "running";
const DELETING: &str = "deleting";

fn rfc3339(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) struct CreateSandbox {
    spec: ToolSpec,
}

impl CreateSandbox {
    pub(super) fn new() -> CreateSandbox {
        CreateSandbox {
            spec: ToolSpec {
                name: "create_sandbox",
                description: "Create a development sandbox with its own processes, no network \
                    unless asked for, and resource limits: an isolated directory on the server \
                    (driver `local`) or a Daytona sandbox (driver `daytona`), as the server \
                    offers. Returns its id; its name works wherever an id is accepted. \
                    `template` starts from a template (list_templates); `setup_commands` run \
                    once after creation, in order, as jobs listed in `setup_jobs`.",
                input_schema: schema_of::<CreateSandboxArgs>(),
                output_schema: schema_of::<CreateSandboxOutput>(),
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
impl Tool for CreateSandbox {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn prepare(
        &self,
        env: &ToolEnv,
        tenant: &str,
        arguments: Value,
    ) -> Result<Value, super::SubmitError> {
        super::templates::expand(env, tenant, arguments).await
    }

    fn plan(&self, mut arguments: Value, config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let parsed: CreateSandboxArgs = args::parse(&arguments)?;
        if !parsed.setup_jobs.is_empty() {
            return Err(InvalidInput::field(
                "setup_jobs",
                "setup_jobs is set by the server; give setup_commands",
            ));
        }
        super::templates::fields::check_setup_commands("setup_commands", &parsed.setup_commands)?;
        let driver = match &parsed.driver {
            None => config.drivers.default.clone(),
            Some(name) if config.drivers.languages.contains_key(name) => name.clone(),
            Some(name) => {
                let known: Vec<&str> = config
                    .drivers
                    .languages
                    .keys()
                    .map(String::as_str)
                    .collect();
                return Err(InvalidInput::field(
                    "driver",
                    format!(
                        "driver `{name}` is not run by this server; available: {}",
                        known.join(", ")
                    ),
                ));
            }
        };
        config.drivers.check_language(&driver, &parsed.language)?;
        args::check_env("environment_vars", &parsed.environment_vars)?;
        if parsed.network && !config.allow_network {
            return Err(InvalidInput::field(
                "network",
                "network access for sandboxes is disabled by the operator \
                 (sandbox.allow_network = false)",
            ));
        }
        let mut secret = None;
        let mut git_repo = None;
        match (&parsed.git_repo, &parsed.git_branch) {
            (Some(url), branch) => {
                let url = git::remote::parse("git_repo", url)?;
                secret = url.password;
                arguments["git_repo"] = json!(url.url);
                git_repo = Some(url.url);
                if let Some(branch) = branch {
                    git::check_branch("git_branch", branch)?;
                }
            }
            (None, Some(_)) => {
                return Err(InvalidInput::field(
                    "git_branch",
                    "git_branch needs git_repo",
                ));
            }
            (None, None) => {}
        }
        if parsed.from_snapshot.is_some() && parsed.git_repo.is_some() {
            return Err(InvalidInput::field(
                "from_snapshot",
                "a sandbox starts either from a snapshot or from a clone of git_repo, not both",
            ));
        }
        if let Some(token) = &parsed.git_token {
            git::check_token("git_token", token)?;
            if secret.is_some() {
                return Err(InvalidInput::field(
                    "git_token",
                    "give the token either in git_token or in git_repo, not both",
                ));
            }
            secret = Some(token.clone());
        }
        if let Some(r) = &parsed.resources {
            config.resources.check(r)?;
        }
        // The name is decided now, so the job's workspace key and any re-run agree on it.
        let name = match parsed.name {
            Some(name) => name,
            None => {
                let generated = format!(
                    "sandbox-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                );
                arguments["name"] = json!(generated);
                SandboxName::parse("name", &generated)?
            }
        };
        // Values are stored once, on the sandbox row inserted with the job; the job keeps the
        // names (see `secrets::STORED`).
        if !parsed.environment_vars.is_empty() {
            let names: BTreeMap<&String, &str> = parsed
                .environment_vars
                .keys()
                .map(|k| (k, STORED))
                .collect();
            arguments["environment_vars"] = json!(names);
        }
        if secret.is_some() {
            arguments["git_token"] = json!(STORED);
        }
        let now = Utc::now();
        let sandbox = SandboxRecord {
            id: format!("sb-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            // Set by `Tools::submit`.
            tenant: String::new(),
            name: name.as_str().to_string(),
            driver,
            language: parsed.language.to_ascii_lowercase(),
            status: CREATING.into(),
            image: parsed.image,
            git_repo,
            git_branch: parsed.git_branch,
            environment_vars: parsed.environment_vars,
            labels: parsed.labels,
            resources: serde_json::to_value(parsed.resources.unwrap_or_default())
                .expect("resources serialize"),
            persistent: parsed.persistent,
            auto_stop_minutes: parsed.auto_stop_minutes.map(|m| m as i32),
            created_at: now,
            last_accessed: now,
            network: parsed.network,
            git_token: secret.map(Secret::new),
            creating_job: None,
            handle: None,
            // Set by `Tools::submit`.
            node: None,
        };
        Ok(Plan {
            arguments,
            target: Target::NewSandbox(name.as_str().to_string()),
            retry_safe: true,
            timeout_s: None,
            secret: None,
            sandbox: Some(sandbox),
            template: None,
            setup_commands: parsed.setup_commands,
        })
    }

    async fn run(&self, env: &ToolEnv, job: &Job, ctx: JobContext) -> Outcome {
        let args: CreateSandboxArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let name = args
            .name
            .as_ref()
            .map(|n| n.as_str().to_string())
            .expect("plan always sets a name");
        let conflict = || {
            failed(
                ErrorReason::Conflict,
                format!("a sandbox named `{name}` already exists"),
            )
        };
        let record = match env.store.sandbox(&job.tenant, &name).await {
            // The row inserted with this job: create the sandbox it describes (again, after a
            // crash mid-creation), unless an earlier attempt already finished it.
            Ok(Some(existing)) if existing.creating_job == Some(job.id) => {
                match existing.status.as_str() {
                    CREATING => existing,
                    RUNNING => return created(env, existing, &args),
                    _ => return conflict(),
                }
            }
            // A job enqueued before rows were inserted at submission, re-run after a crash.
            Ok(Some(existing))
                if existing.status == CREATING && existing.creating_job.is_none() =>
            {
                existing
            }
            Ok(Some(_)) => return conflict(),
            Ok(None) if stored_with_sandbox(&args) => {
                return failed(
                    ErrorReason::NotFound,
                    format!(
                        "the record of sandbox `{name}`, made when this call was accepted, is                          gone; submit the call again"
                    ),
                );
            }
            Ok(None) => match insert_for_legacy_job(env, job, &args, &name).await {
                Ok(record) => record,
                Err(outcome) => return outcome,
            },
            Err(e) => return store_failure(job, e),
        };
        let mut record = record;
        let driver = match env.driver_of(&record) {
            Ok(d) => d.clone(),
            Err(e) => return abandon(env, None, &record, driver_failure(e), false).await,
        };
        let spec = SandboxSpec {
            id: record.id.clone(),
            name: record.name.clone(),
            language: record.language.clone(),
            image: record.image.clone(),
            limits: env.config.resources.limits(&record.resources),
            network: record.network,
            labels: record.labels.clone(),
            auto_stop_minutes: record.auto_stop_minutes.map(|m| m.max(0) as u32),
        };
        if record.git_repo.is_some() {
            // A re-run after a crash mid-clone starts from an empty sandbox.
            if let Err(e) = driver.delete(record.driver_handle()).await {
                return abandon(env, Some(&driver), &record, driver_failure(e), false).await;
            }
        }
        match driver.create(&spec).await {
            Ok(made) => {
                if record.handle.as_deref() != Some(made.handle.as_str()) {
                    if let Err(e) = env.store.set_sandbox_handle(&record.id, &made.handle).await {
                        let outcome = store_failure(job, e);
                        record.handle = Some(made.handle);
                        return abandon(env, Some(&driver), &record, outcome, true).await;
                    }
                    record.handle = Some(made.handle);
                }
            }
            Err(e) => return abandon(env, Some(&driver), &record, driver_failure(e), false).await,
        }
        if let Some(snapshot) = &args.from_snapshot {
            let restored = match super::snapshots::fork_source(env, job, snapshot).await {
                Ok(source) => super::snapshots::restore_into(env, &record, &source, &ctx).await,
                Err(outcome) => Err(outcome),
            };
            if let Err(outcome) = restored {
                return abandon(env, Some(&driver), &record, outcome, true).await;
            }
        }
        if let Some(url) = record.git_repo.clone() {
            if let Err(outcome) = clone_at_creation(env, &record, &url, ctx).await {
                return abandon(env, Some(&driver), &record, outcome, true).await;
            }
        }
        if let Err(e) = env.store.set_sandbox_status(&record.id, RUNNING).await {
            return abandon(env, Some(&driver), &record, store_failure(job, e), true).await;
        }
        created(env, record, &args)
    }
}

/// Whether the job's stored arguments hold placeholders for values kept on its sandbox row
/// (jobs enqueued since rows are inserted at submission).
fn stored_with_sandbox(args: &CreateSandboxArgs) -> bool {
    args.git_token.as_deref() == Some(STORED) || args.environment_vars.values().any(|v| v == STORED)
}

/// The row of a `create_sandbox` job enqueued before rows were inserted at submission (its
/// arguments hold the values; a token given with the call is in the vault).
async fn insert_for_legacy_job(
    env: &ToolEnv,
    job: &Job,
    args: &CreateSandboxArgs,
    name: &str,
) -> Result<SandboxRecord, Outcome> {
    let held_token = match args.git_token.as_deref() {
        Some(HELD) => match env.secrets.get(job.id) {
            Some(token) => Some(token),
            None => {
                return Err(failed(
                    ErrorReason::ExecutionError,
                    "the git token given with this call is no longer available: it is held                      only in the memory of the server that accepted the call, which has                      restarted or is another node; submit the call again",
                ));
            }
        },
        Some(other) => Some(other.to_string()),
        None => None,
    };
    let now = Utc::now();
    let record = SandboxRecord {
        id: format!("sb-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
        tenant: job.tenant.clone(),
        name: name.to_string(),
        driver: env.drivers.default_name().to_string(),
        language: args.language.to_ascii_lowercase(),
        status: CREATING.into(),
        image: args.image.clone(),
        git_repo: args.git_repo.clone(),
        git_branch: args.git_branch.clone(),
        environment_vars: args.environment_vars.clone(),
        labels: args.labels.clone(),
        resources: serde_json::to_value(args.resources.clone().unwrap_or_default())
            .expect("resources serialize"),
        persistent: args.persistent,
        auto_stop_minutes: args.auto_stop_minutes.map(|m| m as i32),
        created_at: now,
        last_accessed: now,
        network: args.network,
        git_token: held_token.map(Secret::new),
        creating_job: None,
        handle: None,
        node: env.node_of_driver(env.drivers.default_name()),
    };
    match env.store.insert_sandbox(&record).await {
        Ok(()) => Ok(record),
        Err(StoreError::Conflict(_)) => Err(failed(
            ErrorReason::Conflict,
            format!("a sandbox named `{name}` already exists"),
        )),
        Err(e) => Err(store_failure(job, e)),
    }
}

/// Gives up on creating `record`: removes its row (and its files when `remove_files`), unless
/// the failure is transient, whose retry finishes the same row.
async fn abandon(
    env: &ToolEnv,
    driver: Option<&std::sync::Arc<dyn Driver>>,
    record: &SandboxRecord,
    outcome: Outcome,
    remove_files: bool,
) -> Outcome {
    // `workspace_creation_failures_total` counts jobs that end failed (`Metrics::record_end`),
    // not attempts.
    if matches!(outcome, Outcome::Transient { .. }) {
        return outcome;
    }
    if let (true, Some(driver)) = (remove_files, driver) {
        let _ = driver.delete(record.driver_handle()).await;
    }
    let _ = env.store.delete_sandbox(&record.id).await;
    outcome
}

/// The answer for a created sandbox (made from `args`).
fn created(env: &ToolEnv, record: SandboxRecord, args: &CreateSandboxArgs) -> Outcome {
    let mut message = format!("sandbox `{}` created", record.name);
    let template = args.template.clone();
    if let Some(name) = &template {
        message.push_str(&format!(" from template `{name}`"));
    }
    let setup_jobs = args.setup_jobs.clone();
    if !setup_jobs.is_empty() {
        message.push_str(&format!(
            "; {} setup command(s) queued in order: read them with get_job (setup_jobs)",
            setup_jobs.len()
        ));
    }
    if let Some(url) = &record.git_repo {
        message.push_str(&format!("; cloned {url}"));
    }
    let uses_images = env
        .driver_of(&record)
        .is_ok_and(|d| d.capabilities().images);
    if record.image.is_some() && !uses_images {
        message.push_str(&format!(
            "; `image` is recorded but the {} driver does not use images",
            record.driver
        ));
    }
    succeeded(
        &CreateSandboxOutput {
            sandbox_id: record.id,
            name: record.name,
            language: record.language,
            status: RUNNING.into(),
            preview_url: None,
            message,
            created_at: rfc3339(record.created_at),
            template,
            setup_jobs,
        },
        None,
    )
}

/// Clones the sandbox's `git_repo` into its root, with its token if it has one (and the
/// repository is served over HTTP(S), the only remotes a token is sent to).
async fn clone_at_creation(
    env: &ToolEnv,
    record: &SandboxRecord,
    url: &str,
    ctx: JobContext,
) -> Result<(), Outcome> {
    let inside = git::as_seen_inside(env, record, url);
    let timeout = ctx.timeout.max(Duration::from_secs(1));
    let result = match &record.git_token {
        Some(token) if git::remote::http_origin(&inside).is_some() => {
            git::clone_with_token(
                env,
                record,
                &inside,
                record.git_branch.as_deref(),
                ".",
                None,
                token.expose(),
                timeout,
                &ctx,
            )
            .await
        }
        _ => {
            let args = git::clone_args(&inside, record.git_branch.as_deref(), Some("."));
            let command = GitCommand::new(args, None, timeout);
            git::run_git(env, record, command, ctx.output, ctx.cancel).await
        }
    }
    .map_err(driver_failure)?;
    if result.success() {
        return Ok(());
    }
    let mut message = if result.exec.timed_out {
        format!("cloning {url} timed out")
    } else {
        format!("cloning {url} failed: {}", result.reason())
    };
    if let Some(hint) = git::network_hint(record, &result.exec.stderr) {
        message.push_str("; ");
        message.push_str(hint);
    }
    message.push_str("; the sandbox was not created");
    Err(failed(ErrorReason::ExecutionError, message))
}

pub(super) struct ListSandboxes {
    spec: ToolSpec,
}

impl ListSandboxes {
    pub(super) fn new() -> ListSandboxes {
        ListSandboxes {
            spec: ToolSpec {
                name: "list_sandboxes",
                description: "List your sandboxes, optionally filtered by labels and status.",
                input_schema: schema_of::<ListSandboxesArgs>(),
                output_schema: schema_of::<ListSandboxesOutput>(),
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
impl Tool for ListSandboxes {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let _: ListSandboxesArgs = args::parse(&arguments)?;
        Ok(Plan {
            arguments,
            target: Target::None,
            retry_safe: true,
            timeout_s: None,
            secret: None,
            sandbox: None,
            template: None,
            setup_commands: Vec::new(),
        })
    }

    async fn run(&self, env: &ToolEnv, job: &Job, _ctx: JobContext) -> Outcome {
        let args: ListSandboxesArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let filter = SandboxFilter {
            tenant: job.tenant.clone(),
            labels: args.labels,
            status: args.state,
        };
        let records = match env.store.list_sandboxes(&filter).await {
            Ok(r) => r,
            Err(e) => return store_failure(job, e),
        };
        // One listing per driver that can list, instead of one question per sandbox.
        let mut listings: BTreeMap<String, Option<BTreeMap<String, String>>> = BTreeMap::new();
        for r in &records {
            if !listings.contains_key(&r.driver) {
                let listing = match env.driver_of(r) {
                    Ok(driver) => driver.statuses().await.ok().flatten(),
                    Err(_) => None,
                };
                listings.insert(r.driver.clone(), listing);
            }
        }
        let mut sandboxes: Vec<SandboxSummary> = Vec::with_capacity(records.len());
        for r in records {
            let listed = listings.get(&r.driver).and_then(Option::as_ref);
            let (status, disk_bytes) = observed(env, &r, false, listed).await;
            sandboxes.push(SandboxSummary {
                sandbox_id: r.id,
                name: r.name,
                language: r.language,
                status,
                created_at: rfc3339(r.created_at),
                labels: r.labels,
                last_accessed: rfc3339(r.last_accessed),
                disk_bytes,
                network: r.network,
            });
        }
        let count = sandboxes.len();
        succeeded(
            &ListSandboxesOutput {
                sandboxes,
                count,
                message: format!("{count} sandbox(es)"),
            },
            None,
        )
    }
}

pub(super) struct GetSandboxInfo {
    spec: ToolSpec,
}

impl GetSandboxInfo {
    pub(super) fn new() -> GetSandboxInfo {
        GetSandboxInfo {
            spec: ToolSpec {
                name: "get_sandbox_info",
                description: "Show a sandbox: status, timestamps, labels, environment variable \
                    names (values masked), resources and how limits are enforced, disk usage.",
                input_schema: schema_of::<SandboxArgs>(),
                output_schema: schema_of::<SandboxInfoOutput>(),
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

/// The sandbox's status as the driver sees it (`missing` when a usable sandbox is gone from the
/// driver), and its disk usage: measured now when `fresh`, else the last known figure (measured
/// once if there is none).
/// `listed` is the driver's listing of every sandbox's status, when it has one.
async fn observed(
    env: &ToolEnv,
    record: &SandboxRecord,
    fresh: bool,
    listed: Option<&BTreeMap<String, String>>,
) -> (String, Option<u64>) {
    let Ok(driver) = env.driver_of(record) else {
        return (record.status.clone(), None);
    };
    let handle = record.driver_handle();
    // Rows still being created or deleted say more than the driver can; a sandbox on another
    // node's disk cannot be looked at from here (its own jobs run there), so its row speaks.
    let elsewhere = record.node.as_deref().is_some_and(|n| n != env.node_id);
    if record.status != RUNNING || elsewhere {
        return (record.status.clone(), None);
    }
    let status = match listed {
        Some(listing) => Ok(listing.get(handle).cloned()),
        None => driver.status(handle).await,
    };
    let status = match status {
        Ok(Some(status)) => status,
        Ok(None) => return ("missing".to_string(), None),
        // The backend cannot tell now: show what the server last knew.
        Err(e) => {
            tracing::debug!(sandbox = %record.id, error = %e, "driver cannot tell a status");
            return (record.status.clone(), None);
        }
    };
    let disk = match driver.known_disk_usage(handle) {
        Some(bytes) if !fresh => Some(bytes),
        _ => driver.disk_usage(handle).await.ok(),
    };
    (status, disk)
}

/// The sandbox a job of a `SandboxArgs` tool names, for the job's tenant.
async fn named_sandbox(env: &ToolEnv, job: &Job) -> Result<SandboxRecord, Outcome> {
    let args: SandboxArgs = stored_args(job)?;
    find_sandbox(env, job, &args.sandbox_id).await
}

/// Masks every value: secrets are never echoed back.
fn masked(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    env.keys().map(|k| (k.clone(), "***".to_string())).collect()
}

#[async_trait]
impl Tool for GetSandboxInfo {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let parsed: SandboxArgs = args::parse(&arguments)?;
        // Reading does not wait behind a long command in the same sandbox.
        Ok(Plan {
            arguments,
            target: Target::SandboxUnordered(parsed.sandbox_id),
            retry_safe: true,
            timeout_s: None,
            secret: None,
            sandbox: None,
            template: None,
            setup_commands: Vec::new(),
        })
    }

    async fn run(&self, env: &ToolEnv, job: &Job, _ctx: JobContext) -> Outcome {
        let record = match named_sandbox(env, job).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let driver = match env.driver_of(&record) {
            Ok(d) => d,
            Err(e) => return driver_failure(e),
        };
        let (status, disk_bytes) = observed(env, &record, true, None).await;
        let limits = env.config.resources.limits(&record.resources);
        let mut report =
            serde_json::to_value(driver.limits_report(&limits)).expect("reports serialize");
        report["wall_time_s"] = json!({
            "value": env.config.max_timeout_s,
            "enforced_by": format!(
                "timer: at a call's timeout_s (default {}, at most {}) {}",
                env.config.default_timeout_s,
                env.config.max_timeout_s,
                driver.timeout_enforcement()
            ),
        });
        let over_quota =
            matches!((disk_bytes, limits.disk_bytes), (Some(used), Some(quota)) if used > quota);
        let mut message = format!("sandbox `{}` is {status}", record.name);
        if over_quota {
            message.push_str(
                "; it is over its disk quota, so writes are refused until files are deleted",
            );
        }
        succeeded(
            &SandboxInfoOutput {
                message,
                sandbox_id: record.id,
                name: record.name,
                language: record.language,
                status,
                created_at: rfc3339(record.created_at),
                last_accessed: rfc3339(record.last_accessed),
                preview_url: None,
                git_repo: record.git_repo,
                environment_vars: masked(&record.environment_vars),
                labels: record.labels,
                resources: json!({
                    "requested": record.resources,
                    "limits": report,
                    "enforcement": driver.enforcement(),
                }),
                disk_bytes,
                disk_quota_bytes: limits.disk_bytes,
                over_quota,
                driver: record.driver,
                network: record.network,
                git_token_configured: record.git_token.is_some(),
                git_branch: record.git_branch,
            },
            None,
        )
    }
}

pub(super) struct DeleteSandbox {
    spec: ToolSpec,
}

impl DeleteSandbox {
    pub(super) fn new() -> DeleteSandbox {
        DeleteSandbox {
            spec: ToolSpec {
                name: "delete_sandbox",
                description: "Delete a sandbox and all its files. Waits for the sandbox's \
                    earlier jobs to finish first.",
                input_schema: schema_of::<SandboxArgs>(),
                output_schema: schema_of::<DeleteSandboxOutput>(),
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
impl Tool for DeleteSandbox {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let parsed: SandboxArgs = args::parse(&arguments)?;
        Ok(Plan {
            arguments,
            target: Target::Sandbox(parsed.sandbox_id),
            retry_safe: true,
            timeout_s: None,
            secret: None,
            sandbox: None,
            template: None,
            setup_commands: Vec::new(),
        })
    }

    async fn run(&self, env: &ToolEnv, job: &Job, _ctx: JobContext) -> Outcome {
        let record = match named_sandbox(env, job).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        if let Err(e) = env.store.set_sandbox_status(&record.id, DELETING).await {
            return store_failure(job, e);
        }
        let driver = match env.driver_of(&record) {
            Ok(d) => d,
            Err(e) => return driver_failure(e),
        };
        if let Err(e) = driver.delete(record.driver_handle()).await {
            return driver_failure(e);
        }
        if let Err(e) = env.store.delete_sandbox(&record.id).await {
            return store_failure(job, e);
        }
        succeeded(
            &DeleteSandboxOutput {
                sandbox_id: record.id,
                success: true,
                message: format!("sandbox `{}` deleted", record.name),
            },
            None,
        )
    }
}
