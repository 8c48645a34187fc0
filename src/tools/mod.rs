//! The tools: what each one accepts, what it returns, how it is scheduled, and how it runs.
//!
//! [`Tools::submit`] validates a call and turns it into a job (choosing its workspace key, retry
//! safety and timeout); [`ToolExecutor`] runs a job by calling the driver. Architecture
//! invariant: this layer knows nothing of HTTP or MCP. Any front end (REST, MCP, the jobs API)
//! submits the same [`Submission`].

pub mod archives;
pub mod args;
mod code_hint;
mod exec;
mod files;
mod git;
pub mod idempotency;
pub mod outputs;
pub mod resources;
mod sandbox;
pub mod secrets;
mod snapshots;
pub mod templates;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::actors::{Executor, JobContext, Outcome};
use crate::audit::Caller;
use crate::auth::Role;
use crate::drivers::{Driver, DriverError, Drivers};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::store::{
    Enqueued, ErrorReason, Job, JobError, NewJob, SandboxRecord, Store, StoreError,
};
pub use args::InvalidInput;

/// MCP tool annotations: hints that are true for the tool.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotations {
    pub read_only_hint: bool,
    pub destructive_hint: bool,
    pub idempotent_hint: bool,
    pub open_world_hint: bool,
}

/// A tool's public description.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub input_schema: Value,
    pub output_schema: Value,
    pub annotations: Annotations,
    /// The least role allowed to call it.
    pub min_role: Role,
}

/// The workspace a call serializes on.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// No serialization.
    None,
    /// An existing sandbox, by id or name.
    Sandbox(String),
    /// An existing sandbox that must exist, but whose jobs this one need not wait for (reads).
    SandboxUnordered(String),
    /// A sandbox this call creates, by its name.
    NewSandbox(String),
}

/// How a validated call is scheduled.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The arguments to store (possibly completed, e.g. with a generated name).
    pub arguments: Value,
    pub target: Target,
    /// Whether re-running the job after a crash is harmless.
    pub retry_safe: bool,
    /// The call's own timeout, if it has one.
    pub timeout_s: Option<f64>,
    /// A secret taken out of `arguments` (see `secrets.rs`): held in memory for the job, never
    /// stored.
    pub secret: Option<String>,
    /// The sandbox row to insert with the job (`create_sandbox`): it holds what is stored with
    /// the sandbox and not with the job (environment values, the git token). `Tools::submit`
    /// sets its tenant and driver.
    pub sandbox: Option<crate::store::SandboxRecord>,
    /// The template row to insert with the job (`create_template`); `Tools::submit` sets its
    /// tenant.
    pub template: Option<crate::store::TemplateRecord>,
    /// Shell commands to enqueue as `execute_shell` jobs of the new sandbox right after the job,
    /// in the same transaction (`create_sandbox`'s setup commands).
    pub setup_commands: Vec<String>,
}

impl Plan {
    /// A plan with nothing but `arguments`, `target` and retry safety.
    pub fn new(arguments: Value, target: Target, retry_safe: bool) -> Plan {
        Plan {
            arguments,
            target,
            retry_safe,
            timeout_s: None,
            secret: None,
            sandbox: None,
            template: None,
            setup_commands: Vec::new(),
        }
    }
}

/// Settings the tools need.
#[derive(Clone, Debug)]
pub struct ToolsConfig {
    pub default_timeout_s: u64,
    pub max_timeout_s: u64,
    /// Bytes kept per output stream in a result.
    pub output_limit_bytes: usize,
    /// Attempts for transient failures (and rescues of retry-safe jobs).
    pub max_attempts: i32,
    /// Largest file `file_operation` reads or writes, in bytes.
    pub file_limit_bytes: u64,
    /// Whether sandboxes may be created with network access.
    pub allow_network: bool,
    /// Per-sandbox resource defaults and maxima.
    pub resources: resources::ResourcePolicy,
    /// The drivers this server runs, as submissions need to know them.
    pub drivers: DriverCatalog,
    /// The configuration's templates (`[templates.NAME]`), by name.
    pub templates: Arc<BTreeMap<String, args::TemplateFields>>,
}

/// What validation needs to know of the server's drivers (the drivers themselves run jobs).
#[derive(Clone, Debug, PartialEq)]
pub struct DriverCatalog {
    /// The driver of a `create_sandbox` that names none.
    pub default: String,
    /// The languages of each driver, by driver name.
    pub languages: BTreeMap<String, Vec<&'static str>>,
}

impl DriverCatalog {
    /// The catalog of `drivers`.
    pub fn of(drivers: &Drivers) -> DriverCatalog {
        DriverCatalog {
            default: drivers.default_name().to_string(),
            languages: drivers
                .iter()
                .map(|d| (d.name().to_string(), d.languages()))
                .collect(),
        }
    }

    /// Whether some driver accepts `language` (`execute_code` does not know its sandbox's
    /// driver at submission; the driver refuses what it cannot run).
    pub fn any_accepts(&self, language: &str) -> bool {
        let wanted = crate::drivers::languages::canonical(language);
        self.languages
            .values()
            .flatten()
            .any(|l| Some(*l) == wanted)
    }

    /// Every language some driver accepts, for error messages.
    pub fn all_languages(&self) -> Vec<&'static str> {
        let mut all: Vec<&'static str> = self.languages.values().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Checks `language` against the languages of `driver`.
    pub fn check_language(&self, driver: &str, language: &str) -> Result<(), InvalidInput> {
        let accepted = self.languages.get(driver).cloned().unwrap_or_default();
        let wanted = crate::drivers::languages::canonical(language);
        if accepted.iter().any(|l| Some(*l) == wanted) {
            return Ok(());
        }
        Err(InvalidInput::field(
            "language",
            format!(
                "unsupported language `{language}`; supported: {}",
                accepted.join(", ")
            ),
        ))
    }
}

impl Default for DriverCatalog {
    /// The local driver alone (for tests of validation).
    fn default() -> DriverCatalog {
        DriverCatalog {
            default: "local".into(),
            languages: BTreeMap::from([("local".to_string(), crate::drivers::languages::known())]),
        }
    }
}

/// What tools use while running.
#[derive(Debug)]
pub struct ToolEnv {
    pub store: Arc<dyn Store>,
    /// Every driver of the server; a sandbox's calls go to the driver on its row.
    pub drivers: Drivers,
    pub config: ToolsConfig,
    pub metrics: Metrics,
    /// Secrets of jobs (tokens given with a call), held in memory only.
    pub secrets: secrets::SecretVault,
    /// This node's id: recorded on the sandboxes of node-local drivers, whose jobs only this
    /// node may then claim.
    pub node_id: String,
    /// Snapshot archives in this node's data dir.
    pub archives: archives::Archives,
    /// Per-tenant limits, for the checks made while a job runs (a snapshot's size against
    /// `quotas.max_disk`).
    pub quotas: crate::config::QuotaConfig,
}

impl ToolEnv {
    /// The node a new sandbox of `driver` is bound to: this one when the driver keeps sandboxes
    /// on this node's disk (a capability, not a name check), else none (any node).
    pub(crate) fn node_of_driver(&self, driver: &str) -> Option<String> {
        self.drivers
            .get(driver)
            .is_some_and(|d| d.capabilities().node_local)
            .then(|| self.node_id.clone())
    }

    /// The driver of `record`; an error when this server does not run it (a row made under
    /// another configuration).
    pub(crate) fn driver_of(
        &self,
        record: &SandboxRecord,
    ) -> Result<&Arc<dyn Driver>, DriverError> {
        self.drivers.get(&record.driver).ok_or_else(|| {
            DriverError::Unsupported(format!(
                "sandbox `{}` runs on the `{}` driver, which this server does not run \
                     (sandbox.drivers: {})",
                record.name,
                record.driver,
                self.drivers.names().join(", ")
            ))
        })
    }
}

/// One tool.
#[async_trait]
pub trait Tool: Send + Sync + 'static {
    fn spec(&self) -> &ToolSpec;

    /// Completes the caller's arguments from what the server holds, before `plan` (a
    /// `create_sandbox` naming a template takes the template's fields). Default: unchanged.
    async fn prepare(
        &self,
        _env: &ToolEnv,
        _tenant: &str,
        arguments: Value,
    ) -> Result<Value, SubmitError> {
        Ok(arguments)
    }

    /// Validates the arguments and decides scheduling. Runs before anything is stored.
    fn plan(&self, arguments: Value, config: &ToolsConfig) -> Result<Plan, InvalidInput>;

    /// The least role allowed to make this call, given its validated arguments: the spec's
    /// `min_role` unless some operations of the tool need more (a `file_operation` read is a
    /// viewer's, a write a developer's).
    fn required_role(&self, _arguments: &Value) -> Role {
        self.spec().min_role
    }

    /// Runs the job.
    async fn run(&self, env: &ToolEnv, job: &Job, ctx: JobContext) -> Outcome;
}

/// A call to submit.
#[derive(Clone, Debug)]
pub struct Submission {
    pub tool: String,
    pub arguments: Value,
    pub caller: Caller,
    pub idempotency_key: Option<String>,
    pub priority: i32,
    /// A job-level timeout, used when the tool's own arguments set none.
    pub timeout_s: Option<f64>,
}

/// Why a submission was refused. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("unknown tool `{0}`")]
    UnknownTool(String),
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("sandbox `{0}` not found")]
    SandboxNotFound(String),
    /// The caller's role is below what the call needs (the refusal is audited).
    #[error("`{tool}` needs the {} role", required.as_str())]
    Forbidden { tool: String, required: Role },
    /// `create_sandbox` with a name the tenant already has.
    #[error("a sandbox named `{0}` already exists")]
    SandboxExists(String),
    /// `create_sandbox {template}` naming no template of the server or the tenant.
    #[error("template `{0}` not found")]
    TemplateNotFound(String),
    /// `create_template` with a name the tenant already has, or one of the configuration's.
    #[error("a template named `{name}` already exists")]
    TemplateExists { name: String, in_config: bool },
    /// The tenant is at a quota (`[quotas]`); nothing was enqueued.
    #[error("the tenant has reached its limit of {limit} {}", kind.what())]
    QuotaExceeded {
        kind: crate::store::QuotaKind,
        limit: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SubmitError {
    /// For a quota refusal: the message callers see and the seconds after which a retry may
    /// succeed (jobs finish on their own; sandboxes only go when deleted).
    pub fn quota_answer(kind: crate::store::QuotaKind, limit: u64) -> (String, u64) {
        use crate::store::QuotaKind;
        let (retry_after_s, how) = match kind {
            QuotaKind::Sandboxes => (60, "delete a sandbox (delete_sandbox) first"),
            QuotaKind::ActiveJobs => (5, "wait for some of its jobs to finish, or cancel some"),
            QuotaKind::Disk => (
                60,
                "delete a sandbox or a snapshot (delete_snapshot), or ask for a smaller disk \
                 (resources.disk_gb)",
            ),
        };
        let amount = match kind {
            QuotaKind::Disk => format!(
                "{:.1} GiB of sandbox disk quota and snapshots in total",
                limit as f64 / (1u64 << 30) as f64
            ),
            _ => format!("{limit} {}", kind.what()),
        };
        (
            format!(
                "quota exceeded: this tenant may have at most {amount} ({}); {how}, then retry",
                kind.setting()
            ),
            retry_after_s,
        )
    }
}

type Registry = BTreeMap<&'static str, Arc<dyn Tool>>;

/// The tool registry plus the queue it submits to.
#[derive(Clone)]
pub struct Tools {
    registry: Arc<Registry>,
    env: Arc<ToolEnv>,
    queue: Queue,
    /// Per-tenant limits, checked by the store inside the enqueue transaction.
    quotas: Arc<crate::config::QuotaConfig>,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tools")
            .field("tools", &self.registry.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The serialization key of a tenant's sandbox name.
pub fn workspace_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

impl Tools {
    pub fn new(env: ToolEnv, queue: Queue) -> Tools {
        let mut registry: Registry = BTreeMap::new();
        let tools: Vec<Arc<dyn Tool>> = vec![
            Arc::new(sandbox::CreateSandbox::new()),
            Arc::new(sandbox::ListSandboxes::new()),
            Arc::new(sandbox::GetSandboxInfo::new()),
            Arc::new(sandbox::DeleteSandbox::new()),
            Arc::new(exec::ExecuteShell::new()),
            Arc::new(exec::ExecuteCode::new()),
            Arc::new(files::FileOperationTool::new()),
            Arc::new(git::GitOperationTool::new()),
            Arc::new(templates::CreateTemplate::new()),
            Arc::new(templates::ListTemplates::new()),
            Arc::new(templates::DeleteTemplate::new()),
            Arc::new(snapshots::SnapshotSandbox::new()),
            Arc::new(snapshots::ListSnapshots::new()),
            Arc::new(snapshots::RestoreSnapshot::new()),
            Arc::new(snapshots::DeleteSnapshot::new()),
        ];
        for tool in tools {
            registry.insert(tool.spec().name, tool);
        }
        Tools {
            registry: Arc::new(registry),
            env: Arc::new(env),
            queue,
            quotas: Default::default(),
        }
    }

    /// Enforces `quotas` on submissions (`[quotas]`).
    pub fn with_quotas(mut self, quotas: crate::config::QuotaConfig) -> Tools {
        self.quotas = Arc::new(quotas);
        self
    }

    /// Every tool's spec, in name order (deterministic for `tools/list` and `/schema`).
    pub fn specs(&self) -> impl Iterator<Item = &ToolSpec> {
        self.registry.values().map(|t| t.spec())
    }

    pub fn spec(&self, name: &str) -> Option<&ToolSpec> {
        self.registry.get(name).map(|t| t.spec())
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn env(&self) -> &Arc<ToolEnv> {
        &self.env
    }

    /// The executor that runs jobs of these tools.
    pub fn executor(&self) -> Arc<dyn Executor> {
        Arc::new(ToolExecutor {
            registry: self.registry.clone(),
            env: self.env.clone(),
        })
    }

    /// Validates a call and enqueues it as a job (with its audit row, in one transaction).
    pub async fn submit(&self, submission: Submission) -> Result<Enqueued, SubmitError> {
        let tool = self
            .registry
            .get(submission.tool.as_str())
            .ok_or_else(|| SubmitError::UnknownTool(submission.tool.clone()))?;
        let config = &self.env.config;
        let caller = &submission.caller;
        let spec = tool.spec();
        if !caller.may(spec.min_role) {
            return Err(self
                .deny(caller, spec.name, spec.min_role, &submission.arguments)
                .await);
        }
        // Only a keyed submission needs to be recognised again.
        let args_digest = submission
            .idempotency_key
            .is_some()
            .then(|| idempotency::arguments_digest(tool.spec().name, &submission.arguments));
        let arguments = tool
            .prepare(&self.env, &submission.caller.tenant, submission.arguments)
            .await?;
        let plan = tool.plan(arguments, config)?;
        let required = tool.required_role(&plan.arguments);
        if !caller.may(required) {
            return Err(self
                .deny(caller, spec.name, required, &plan.arguments)
                .await);
        }
        let tenant = submission.caller.tenant.as_str();
        // The node that must run the job: the one holding its sandbox, if the sandbox is
        // node-local (a new sandbox's is decided below, from its driver).
        let (workspace, mut node) = match &plan.target {
            Target::None => (None, None),
            Target::NewSandbox(name) => (Some(workspace_key(tenant, name)), None),
            Target::Sandbox(reference) => {
                let (key, node) = self.sandbox_workspace(tenant, reference).await?;
                (Some(key), node)
            }
            Target::SandboxUnordered(reference) => {
                (None, self.sandbox_workspace(tenant, reference).await?.1)
            }
        };
        let timeout_s = plan
            .timeout_s
            .or(submission.timeout_s)
            .map(|t| check_timeout(t, config.max_timeout_s))
            .transpose()?
            .unwrap_or(config.default_timeout_s);
        let secret = plan.secret;
        let mut job = NewJob::new(tenant, tool.spec().name, plan.arguments);
        let creates = plan.sandbox.map(|mut sandbox| {
            sandbox.tenant = tenant.to_string();
            if sandbox.driver.is_empty() {
                sandbox.driver = self.env.drivers.default_name().to_string();
            }
            sandbox.node = self.env.node_of_driver(&sandbox.driver);
            node = sandbox.node.clone();
            sandbox
        });
        let created_name = creates.as_ref().map(|s| s.name.clone());
        let created_template = plan.template.map(|mut template| {
            template.tenant = tenant.to_string();
            template
        });
        if let Some(template) = &created_template {
            // A name means one template: a stored one never shadows the configuration's.
            if config.templates.contains_key(&template.name) {
                return Err(SubmitError::TemplateExists {
                    name: template.name.clone(),
                    in_config: true,
                });
            }
        }
        let template_name = created_template.as_ref().map(|t| t.name.clone());
        let sandbox_id = creates.as_ref().map(|s| s.id.clone());
        job.sandbox = creates;
        job.template = created_template;
        job.workspace = workspace.clone();
        job.priority = submission.priority;
        job.max_attempts = config.max_attempts.max(1);
        job.retry_safe = plan.retry_safe;
        job.timeout_s = timeout_s as i64;
        job.idempotency_key = submission.idempotency_key;
        job.request_id = submission.caller.request_id.clone();
        job.node = node;
        job.args_digest = args_digest;
        if let (Some(sandbox_id), false) = (&sandbox_id, plan.setup_commands.is_empty()) {
            job.followers = setup_jobs(
                &job,
                &submission.caller,
                sandbox_id,
                &plan.setup_commands,
                config.default_timeout_s as i64,
            );
            let ids: Vec<String> = job
                .followers
                .iter()
                .map(|(f, _)| f.id.to_string())
                .collect();
            job.arguments["setup_jobs"] = serde_json::json!(ids);
        }
        job.quota = self.quotas.for_tenant(tenant).map(|mut quota| {
            quota.default_disk_bytes = config.resources.default_disk_bytes;
            quota
        });
        if let (Some(quota), Some(sandbox)) = (&job.quota, &job.sandbox) {
            // A sandbox without a disk quota would make the tenant's total meaningless.
            if quota.max_disk_bytes.is_some() && quota.disk_bytes_of(&sandbox.resources) == 0 {
                return Err(SubmitError::Invalid(InvalidInput::field(
                    "resources.disk_gb",
                    "this tenant's sandboxes share a disk limit (quotas.max_disk), so each needs \
                     a disk quota: ask for one with resources.disk_gb",
                )));
            }
        }
        let audit = submission.caller.entry(
            tool.spec().name,
            workspace,
            Some(job.id),
            "accepted",
            Some(&job.arguments),
        );
        // The secret is in place before the job can be claimed; a replayed idempotent call
        // returns the original job, which has its own.
        let job_id = job.id;
        if let Some(secret) = secret {
            self.env.secrets.put(job_id, secret);
        }
        let mut denied = audit.clone();
        let enqueued = self.queue.enqueue(job, audit).await;
        if !matches!(&enqueued, Ok(e) if e.created) {
            self.env.secrets.remove(job_id);
        }
        match (enqueued, created_name) {
            (Err(StoreError::Conflict(_)), Some(name)) => Err(SubmitError::SandboxExists(name)),
            (Err(StoreError::Conflict(_)), None) if template_name.is_some() => {
                Err(SubmitError::TemplateExists {
                    name: template_name.unwrap_or_default(),
                    in_config: false,
                })
            }
            (Err(StoreError::QuotaExceeded { kind, limit }), _) => {
                // The refused enqueue rolled back its own audit row; the refusal gets one.
                denied.outcome = "denied".into();
                denied.job_id = None;
                denied.action = format!("{} (quota: {})", denied.action, kind.setting());
                if let Err(e) = self.env.store.append_audit(&denied).await {
                    tracing::warn!(error = %e, "cannot audit a quota refusal");
                }
                Err(SubmitError::QuotaExceeded { kind, limit })
            }
            (enqueued, _) => Ok(enqueued?),
        }
    }

    /// Records a call refused for the caller's role (an audit row with outcome `denied`, the
    /// arguments as digest and redacted summary) and returns the refusal.
    async fn deny(
        &self,
        caller: &Caller,
        tool: &'static str,
        required: Role,
        arguments: &Value,
    ) -> SubmitError {
        let entry = caller.entry(tool, None, None, "denied", Some(arguments));
        if let Err(e) = self.env.store.append_audit(&entry).await {
            tracing::error!(error = %e, tool, "cannot write the audit row of a refused call");
        }
        SubmitError::Forbidden {
            tool: tool.to_string(),
            required,
        }
    }

    /// The workspace key of an existing sandbox, or of one a queued `create_sandbox` will make,
    /// and the node bound to it (see [`SandboxRecord::node`]).
    async fn sandbox_workspace(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<(String, Option<String>), SubmitError> {
        if let Some(sandbox) = self.env.store.sandbox(tenant, reference).await? {
            return Ok((workspace_key(tenant, &sandbox.name), sandbox.node));
        }
        let key = workspace_key(tenant, reference);
        if self.env.store.has_open_job(&key, "create_sandbox").await? {
            return Ok((key, None));
        }
        Err(SubmitError::SandboxNotFound(reference.to_string()))
    }
}

/// The `execute_shell` jobs of a new sandbox's setup commands, each with its audit row: in the
/// sandbox's workspace, on its node, after `job` (the `create_sandbox`) and in order, with the
/// default timeout. Each is its own job: a failing one does not stop the ones after it, and a
/// failed creation leaves them to fail `not_found`.
fn setup_jobs(
    job: &NewJob,
    caller: &Caller,
    sandbox_id: &str,
    commands: &[String],
    timeout_s: i64,
) -> Vec<(NewJob, crate::store::AuditEntry)> {
    commands
        .iter()
        .map(|command| {
            let arguments = serde_json::json!({"sandbox_id": sandbox_id, "command": command});
            let mut setup = NewJob::new(job.tenant.clone(), "execute_shell", arguments);
            setup.workspace = job.workspace.clone();
            setup.priority = job.priority;
            setup.max_attempts = job.max_attempts;
            // Running a command twice is never harmless.
            setup.retry_safe = false;
            setup.timeout_s = timeout_s;
            setup.request_id = job.request_id.clone();
            setup.node = job.node.clone();
            let audit = caller.entry(
                "execute_shell",
                job.workspace.clone(),
                Some(setup.id),
                "accepted",
                Some(&setup.arguments),
            );
            (setup, audit)
        })
        .collect()
}

/// Checks a timeout in seconds and rounds it up to whole seconds.
fn check_timeout(seconds: f64, max: u64) -> Result<u64, InvalidInput> {
    if seconds.is_nan() || seconds <= 0.0 || seconds > max as f64 {
        return Err(InvalidInput::field(
            "timeout_s",
            format!("timeout_s must be more than 0 and at most {max} seconds, got {seconds}"),
        ));
    }
    Ok(seconds.ceil() as u64)
}

/// Records that a job used its sandbox (`last_accessed`), off the job's path: the caller need not
/// wait for this bookkeeping write.
fn record_access(env: &Arc<ToolEnv>, job: &Job) {
    let reference = job
        .arguments
        .get("sandbox_id")
        .or_else(|| {
            (job.tool == "create_sandbox")
                .then(|| job.arguments.get("name"))
                .flatten()
        })
        .and_then(Value::as_str);
    let Some(reference) = reference.map(str::to_string) else {
        return;
    };
    let store = env.store.clone();
    let tenant = job.tenant.clone();
    tokio::spawn(async move {
        let result = match store.sandbox(&tenant, &reference).await {
            Ok(Some(sandbox)) => store.touch_sandbox(&sandbox.id, chrono::Utc::now()).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record sandbox access");
        }
    });
}

/// Runs jobs by dispatching to their tool.
struct ToolExecutor {
    registry: Arc<Registry>,
    env: Arc<ToolEnv>,
}

#[async_trait]
impl Executor for ToolExecutor {
    async fn execute(&self, job: &Job, ctx: JobContext) -> Outcome {
        let outcome = match self.registry.get(job.tool.as_str()) {
            Some(tool) => without_internals(job, tool.run(&self.env, job, ctx).await),
            None => failed(
                ErrorReason::InvalidArgument,
                format!("unknown tool `{}`", job.tool),
            ),
        };
        // A retry of a transient failure runs again with the same secret; any other end is final.
        if !matches!(outcome, Outcome::Transient { .. }) {
            self.env.secrets.remove(job.id);
        }
        record_access(&self.env, job);
        outcome
    }

    async fn workspace_idle(&self, workspace: &str) {
        // The key is `<tenant>/<sandbox name>` (see `workspace_key`); names hold no `/`.
        let Some((tenant, name)) = workspace.rsplit_once('/') else {
            return;
        };
        if let Ok(Some(record)) = self.env.store.sandbox(tenant, name).await {
            if let Ok(driver) = self.env.driver_of(&record) {
                driver.release(record.driver_handle()).await;
            }
        }
    }
}

/// The job's tenant's sandbox `reference` (id or name), or the outcome that ends the job: the
/// one lookup of a sandbox by what a caller named.
pub(crate) async fn find_sandbox(
    env: &ToolEnv,
    job: &Job,
    reference: &str,
) -> Result<crate::store::SandboxRecord, Outcome> {
    match env.store.sandbox(&job.tenant, reference).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(failed(
            ErrorReason::NotFound,
            format!("sandbox `{reference}` not found"),
        )),
        Err(e) => Err(store_failure(job, e)),
    }
}

/// The message of a job that failed because the server itself did (a database or driver fault):
/// the details are in the log, under the job's id, and never in the job, which callers read.
pub(crate) const INTERNAL_FAILURE: &str =
    "the server failed while running this job; its log has the details under this job's id";

/// The outcome of a store error while running `job`: logged with the job's id, answered
/// without details. An unavailable database (a restart, a lost connection, an exhausted pool)
/// is transient: the job is retried with backoff instead of failing. That is safe because every
/// caller is a sandbox lookup before the job's side effects or a step of a retry-safe tool
/// (`create_sandbox`, `delete_sandbox`, listings).
pub(crate) fn store_failure(job: &Job, error: StoreError) -> Outcome {
    if error.is_unavailable() {
        tracing::warn!(job_id = %job.id, tool = %job.tool, error = %error,
            "database unavailable while running a job; it will be retried");
        return Outcome::Transient {
            error: JobError::new(
                ErrorReason::Internal,
                "the database was unavailable while this job started",
            ),
        };
    }
    tracing::error!(job_id = %job.id, tool = %job.tool, error = %error,
        "database error while running a job");
    failed(ErrorReason::Internal, INTERNAL_FAILURE)
}

/// Keeps internal details out of a job's error: an `internal` failure (a driver fault, whose
/// message may name host paths) is logged with the job's id and stored with a generic message.
fn without_internals(job: &Job, outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Failed {
            mut error,
            result,
            exit_code,
        } if error.reason == ErrorReason::Internal && error.message != INTERNAL_FAILURE => {
            tracing::error!(job_id = %job.id, tool = %job.tool, error = %error.message,
                "internal error while running a job");
            error.message = INTERNAL_FAILURE.to_string();
            Outcome::Failed {
                error,
                result,
                exit_code,
            }
        }
        other => other,
    }
}

/// A failed outcome without a result.
pub(crate) fn failed(reason: ErrorReason, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        error: JobError::new(reason, message),
        result: None,
        exit_code: None,
    }
}

/// The outcome of a driver error: transient ones are retried, the rest fail the job.
pub(crate) fn driver_failure(error: DriverError) -> Outcome {
    let message = error.to_string();
    match error {
        DriverError::NotFound(_) => failed(ErrorReason::NotFound, message),
        DriverError::InvalidArgument { field, .. } => Outcome::Failed {
            error: JobError::new(ErrorReason::InvalidArgument, message).with_field(field),
            result: None,
            exit_code: None,
        },
        DriverError::PathNotFound { field, .. } => Outcome::Failed {
            error: JobError::new(ErrorReason::NotFound, message).with_field(field),
            result: None,
            exit_code: None,
        },
        DriverError::LimitExceeded(_) => failed(ErrorReason::ExecutionError, message),
        DriverError::Unsupported(_) => failed(ErrorReason::ExecutionError, message),
        DriverError::Unavailable(_) => Outcome::Transient {
            error: JobError::new(ErrorReason::DriverUnavailable, message),
        },
        DriverError::Timeout(_) => failed(ErrorReason::Timeout, message),
        DriverError::Crashed(_) => failed(ErrorReason::ExecutionError, message),
        DriverError::Internal(_) => failed(ErrorReason::Internal, message),
    }
}

/// A successful outcome carrying `output` as the result.
pub(crate) fn succeeded<T: Serialize>(output: &T, exit_code: Option<i32>) -> Outcome {
    Outcome::Succeeded {
        result: serde_json::to_value(output).expect("tool outputs serialize"),
        exit_code,
    }
}

/// Parses stored arguments at run time. They were validated at submission, so a failure here
/// means the tool's input type changed under a queued job.
pub(crate) fn stored_args<T: serde::de::DeserializeOwned>(job: &Job) -> Result<T, Outcome> {
    args::parse(&job.arguments).map_err(|e| Outcome::Failed {
        error: JobError {
            reason: ErrorReason::InvalidArgument,
            message: e.message,
            field: e.field,
        },
        result: None,
        exit_code: None,
    })
}
