//! Sandbox lifecycle tools: create, list, inspect, delete.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::args::{
    self, CreateSandboxArgs, InvalidInput, ListSandboxesArgs, SandboxArgs, SandboxName, schema_of,
};
use super::outputs::{
    CreateSandboxOutput, DeleteSandboxOutput, ListSandboxesOutput, SandboxInfoOutput,
    SandboxSummary,
};
use super::{
    Annotations, Plan, Target, Tool, ToolEnv, ToolSpec, ToolsConfig, driver_failure, failed,
    stored_args, succeeded,
};
use crate::actors::{JobContext, Outcome};
use crate::auth::Role;
use crate::drivers::SandboxSpec;
use crate::drivers::local::languages;
use crate::store::{ErrorReason, Job, SandboxFilter, SandboxRecord, StoreError};

/// Sandbox status while the driver creates it.
const CREATING: &str = "creating";
/// Sandbox status once usable.
const RUNNING: &str = "running";
const DELETING: &str = "deleting";

fn rfc3339(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn store_failure(e: StoreError) -> Outcome {
    failed(ErrorReason::Internal, format!("database error: {e}"))
}

/// Looks the sandbox up for the job's tenant.
async fn find(env: &ToolEnv, job: &Job, reference: &str) -> Result<SandboxRecord, Outcome> {
    match env.store.sandbox(&job.tenant, reference).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(failed(
            ErrorReason::NotFound,
            format!("sandbox `{reference}` not found"),
        )),
        Err(e) => Err(store_failure(e)),
    }
}

pub(super) struct CreateSandbox {
    spec: ToolSpec,
}

impl CreateSandbox {
    pub(super) fn new() -> CreateSandbox {
        CreateSandbox {
            spec: ToolSpec {
                name: "create_sandbox",
                description: "Create a development sandbox: an isolated directory with its own \
                    processes, no network, and resource limits. Returns its id; its name works \
                    wherever an id is accepted.",
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

    fn plan(&self, mut arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let parsed: CreateSandboxArgs = args::parse(&arguments)?;
        if !languages::is_known(&parsed.language) {
            return Err(InvalidInput::field(
                "language",
                format!(
                    "unsupported language `{}`; supported: {}",
                    parsed.language,
                    languages::known().join(", ")
                ),
            ));
        }
        args::check_env("environment_vars", &parsed.environment_vars)?;
        if parsed.git_repo.is_some() || parsed.git_branch.is_some() {
            return Err(InvalidInput::field(
                "git_repo",
                "cloning at creation is not supported by this server yet; create the sandbox, \
                 then clone inside it",
            ));
        }
        if let Some(r) = &parsed.resources {
            for (field, value) in [("resources.cpu", r.cpu), ("resources.disk_gb", r.disk_gb)] {
                if value.is_some_and(|v| v.is_nan() || v <= 0.0) {
                    return Err(InvalidInput::field(
                        field,
                        format!("{field} must be positive"),
                    ));
                }
            }
            if r.memory_mb == Some(0) {
                return Err(InvalidInput::field(
                    "resources.memory_mb",
                    "resources.memory_mb must be positive",
                ));
            }
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
        Ok(Plan {
            arguments,
            target: Target::NewSandbox(name.as_str().to_string()),
            retry_safe: true,
            timeout_s: None,
        })
    }

    async fn run(&self, env: &ToolEnv, job: &Job, _ctx: JobContext) -> Outcome {
        let args: CreateSandboxArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let name = args
            .name
            .as_ref()
            .map(|n| n.as_str().to_string())
            .expect("plan always sets a name");
        let now = Utc::now();
        let record = match env.store.sandbox(&job.tenant, &name).await {
            // A re-run of this job after a crash mid-creation: finish what it started.
            Ok(Some(existing)) if existing.status == CREATING && existing.name == name => existing,
            Ok(Some(_)) => {
                return failed(
                    ErrorReason::Conflict,
                    format!("a sandbox named `{name}` already exists"),
                );
            }
            Ok(None) => {
                let record = SandboxRecord {
                    id: format!("sb-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
                    tenant: job.tenant.clone(),
                    name: name.clone(),
                    driver: env.driver.name().to_string(),
                    language: args.language.to_ascii_lowercase(),
                    status: CREATING.into(),
                    image: args.image.clone(),
                    git_repo: None,
                    git_branch: None,
                    environment_vars: args.environment_vars.clone(),
                    labels: args.labels.clone(),
                    resources: serde_json::to_value(args.resources.clone().unwrap_or_default())
                        .expect("resources serialize"),
                    persistent: args.persistent,
                    auto_stop_minutes: args.auto_stop_minutes.map(|m| m as i32),
                    created_at: now,
                    last_accessed: now,
                };
                match env.store.insert_sandbox(&record).await {
                    Ok(()) => record,
                    Err(StoreError::Conflict(_)) => {
                        return failed(
                            ErrorReason::Conflict,
                            format!("a sandbox named `{name}` already exists"),
                        );
                    }
                    Err(e) => return store_failure(e),
                }
            }
            Err(e) => return store_failure(e),
        };
        let spec = SandboxSpec {
            id: record.id.clone(),
            name: record.name.clone(),
            language: record.language.clone(),
        };
        if let Err(e) = env.driver.create(&spec).await {
            env.metrics.workspace_creation_failures_total.inc();
            let _ = env.store.delete_sandbox(&record.id).await;
            return driver_failure(e);
        }
        if let Err(e) = env.store.set_sandbox_status(&record.id, RUNNING).await {
            env.metrics.workspace_creation_failures_total.inc();
            return store_failure(e);
        }
        let mut message = format!("sandbox `{}` created", record.name);
        if record.image.is_some() && env.driver.name() == "local" {
            message.push_str("; `image` is recorded but the local driver does not use images");
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
            },
            None,
        )
    }
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
            Err(e) => return store_failure(e),
        };
        let sandboxes: Vec<SandboxSummary> = records
            .into_iter()
            .map(|r| SandboxSummary {
                sandbox_id: r.id,
                name: r.name,
                language: r.language,
                status: r.status,
                created_at: rfc3339(r.created_at),
                labels: r.labels,
            })
            .collect();
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
        })
    }

    async fn run(&self, env: &ToolEnv, job: &Job, _ctx: JobContext) -> Outcome {
        let args: SandboxArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let record = match find(env, job, &args.sandbox_id).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let disk_bytes = env.driver.disk_usage(&record.id).await.ok();
        succeeded(
            &SandboxInfoOutput {
                message: format!("sandbox `{}` is {}", record.name, record.status),
                sandbox_id: record.id,
                name: record.name,
                language: record.language,
                status: record.status,
                created_at: rfc3339(record.created_at),
                last_accessed: rfc3339(record.last_accessed),
                preview_url: None,
                git_repo: record.git_repo,
                environment_vars: masked(&record.environment_vars),
                labels: record.labels,
                resources: json!({
                    "requested": record.resources,
                    "enforcement": env.enforcement,
                }),
                disk_bytes,
                driver: record.driver,
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
        })
    }

    async fn run(&self, env: &ToolEnv, job: &Job, _ctx: JobContext) -> Outcome {
        let args: SandboxArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let record = match find(env, job, &args.sandbox_id).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        if let Err(e) = env.store.set_sandbox_status(&record.id, DELETING).await {
            return store_failure(e);
        }
        if let Err(e) = env.driver.delete(&record.id).await {
            return driver_failure(e);
        }
        if let Err(e) = env.store.delete_sandbox(&record.id).await {
            return store_failure(e);
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
