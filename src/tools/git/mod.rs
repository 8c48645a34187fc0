//! `git_operation`, and the git clone of `create_sandbox`.
//!
//! git runs inside the sandbox, with the sandbox's isolation and network setting, as an argv:
//! caller values are single arguments after `--`/`--end-of-options` or travel on stdin (commit
//! messages) and in the environment (author). Branch names follow git's rules and never start
//! with `-`; URLs are checked and lose their passwords before being stored (see `remote.rs`).
//!
//! A token for HTTPS remotes reaches git as an `Authorization` header through
//! `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` (the environment, which other
//! users cannot read, rather than the command line, which `ps` shows), scoped to one server:
//! that of the sandbox's recorded `git_repo` or of a `repository_url` given with the call, never
//! one that the sandbox's own configuration names (`authed.rs`, `trust.rs`). A run that carries
//! it is isolated (`command.rs`): a fixed environment, no system or global configuration, no
//! helpers, hooks, proxies or redirects, only git and its transport; its output is buffered and
//! every trace of the token is replaced by `***` before the output is streamed, stored or
//! returned.

mod authed;
mod command;
mod input;
mod operations;
mod refs;
pub(crate) mod remote;
mod trust;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::args::{self, GitOperation, GitOperationArgs, InvalidInput, schema_of};
use super::outputs::GitOperationOutput;
use super::secrets::{self, HELD};
use super::{
    Annotations, Plan, Target, Tool, ToolEnv, ToolSpec, ToolsConfig, driver_failure, failed,
    find_sandbox, succeeded,
};
use crate::actors::{JobContext, Outcome};
use crate::auth::Role;
use crate::store::{ErrorReason, Job, JobError, SandboxRecord};
pub(crate) use authed::clone as clone_with_token;
pub(crate) use command::{
    GitCommand, GitResult, as_seen_inside, clone_args, network_hint, run_git,
};
pub(crate) use input::check_token;
use input::{check_remote, validate};
use operations::{command_for, parse_log};
pub use refs::check_branch;

pub(super) struct GitOperationTool {
    spec: ToolSpec,
}

impl GitOperationTool {
    pub(super) fn new() -> GitOperationTool {
        GitOperationTool {
            spec: ToolSpec {
                name: "git_operation",
                description: "Run git in a sandbox: clone, status, add, commit, push, pull, \
                    checkout, branch, log, diff. git runs inside the sandbox with its isolation \
                    (no network unless the sandbox was created with network: true). Values are \
                    passed to git as arguments, never through a shell. A `token` for HTTPS \
                    remotes is sent as a header, never stored with the job or shown.",
                input_schema: schema_of::<GitOperationArgs>(),
                output_schema: schema_of::<GitOperationOutput>(),
                // checkout of files discards changes; clone, push and pull reach remotes.
                annotations: Annotations {
                    read_only_hint: false,
                    destructive_hint: true,
                    idempotent_hint: false,
                    open_world_hint: true,
                },
                // Read-only operations (status, log, diff, listing branches) are a viewer's; see
                // `required_role`.
                min_role: Role::Viewer,
            },
        }
    }
}

/// The token for a call: the call's own (held in the vault), else the sandbox's.
pub(crate) fn call_token(
    env: &ToolEnv,
    job: &Job,
    given: Option<&str>,
    record: &SandboxRecord,
) -> Result<Option<String>, Outcome> {
    match given {
        Some(HELD) => env.secrets.get(job.id).map(Some).ok_or_else(|| {
            failed(
                ErrorReason::ExecutionError,
                "the token given with this call is no longer available: it is held only in the \
                 memory of the server that accepted the call, which has restarted or is another \
                 node; submit the call again, or configure the token on the sandbox \
                 (create_sandbox.git_token)",
            )
        }),
        Some(other) => Ok(Some(other.to_string())),
        None => Ok(record.git_token.as_ref().map(|t| t.expose().to_string())),
    }
}

/// Whether the operation only reads the repository: status, log, diff, and listing branches.
fn is_read_only(a: &GitOperationArgs) -> bool {
    matches!(
        a.operation,
        GitOperation::Status | GitOperation::Log | GitOperation::Diff
    ) || (a.operation == GitOperation::Branch && a.branch.is_none())
}

#[async_trait]
impl Tool for GitOperationTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let a: GitOperationArgs = args::parse(&arguments)?;
        let secret = validate(&a)?;
        let retry_safe = is_read_only(&a);
        let mut plan = Plan {
            arguments,
            target: Target::Sandbox(a.sandbox_id.clone()),
            retry_safe,
            timeout_s: a.timeout_s,
            secret: None,
            sandbox: None,
            template: None,
            setup_commands: Vec::new(),
        };
        if let Some(secret) = secret {
            // The URL is stored without its password; the token waits in memory.
            if let Some(url) = &a.repository_url {
                let stripped = if a.operation == GitOperation::Clone {
                    remote::parse("repository_url", url)?.url
                } else {
                    check_remote("repository_url", url)?.url
                };
                plan.arguments["repository_url"] = Value::String(stripped);
            }
            secrets::hold(&mut plan, "token", secret);
        }
        Ok(plan)
    }

    fn required_role(&self, arguments: &Value) -> Role {
        match args::parse::<GitOperationArgs>(arguments) {
            Ok(a) if is_read_only(&a) => Role::Viewer,
            _ => Role::Developer,
        }
    }

    async fn run(&self, env: &ToolEnv, job: &Job, ctx: JobContext) -> Outcome {
        let a: GitOperationArgs = match super::stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let record = match find_sandbox(env, job, &a.sandbox_id).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let timeout = a
            .timeout_s
            .map_or(ctx.timeout, Duration::from_secs_f64)
            .max(Duration::from_secs(1));
        let mut a = a;
        if let Some(url) = a.repository_url.take() {
            a.repository_url = Some(as_seen_inside(env, &record, &url));
        }
        let token = match call_token(env, job, a.token.as_deref(), &record) {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        let networked = matches!(
            a.operation,
            GitOperation::Clone | GitOperation::Push | GitOperation::Pull
        );
        let authed = match (token, networked) {
            (Some(token), true) => {
                match authed::run(env, &record, &a, &token, timeout, &ctx).await {
                    Ok(result) => result,
                    Err(outcome) => return outcome,
                }
            }
            _ => None,
        };
        let result = match authed {
            Some(result) => result,
            // No token, or a remote that gets none: git runs as any command.
            None => match run_git(
                env,
                &record,
                command_for(&a, timeout),
                ctx.output,
                ctx.cancel,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => return driver_failure(e),
            },
        };
        outcome(&a, record, result)
    }
}

fn outcome(a: &GitOperationArgs, record: SandboxRecord, result: GitResult) -> Outcome {
    let op = a.operation.as_str();
    let success = result.success();
    let mut out = GitOperationOutput {
        sandbox_id: record.id.clone(),
        operation: op.to_string(),
        success,
        output: result.output(),
        message: String::new(),
        exit_code: result.exec.exit_code,
        stdout: result.exec.stdout.clone(),
        stderr: result.exec.stderr.clone(),
        timed_out: result.exec.timed_out,
        ..GitOperationOutput::default()
    };
    out.message = if result.exec.timed_out {
        format!("git {op} timed out and was killed")
    } else if result.exec.cancelled {
        format!("git {op} was cancelled")
    } else if success {
        format!("git {op} succeeded")
    } else {
        let mut m = format!(
            "git {op} failed (exit code {}): {}",
            result.exec.exit_code.unwrap_or(-1),
            result.reason()
        );
        if let Some(hint) = network_hint(&record, &result.exec.stderr) {
            m.push_str("; ");
            m.push_str(hint);
        }
        m
    };
    if success {
        match a.operation {
            GitOperation::Log => {
                let commits = parse_log(&result.exec.stdout);
                out.output = commits
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {} {} <{}> {}\n",
                            c.hash.chars().take(12).collect::<String>(),
                            c.date,
                            c.author_name,
                            c.author_email,
                            c.subject
                        )
                    })
                    .collect();
                out.commits = Some(commits);
                // git's NUL-separated fields, one per line (stored results hold no NUL).
                out.stdout = result.exec.stdout.replace('\0', "\n");
            }
            GitOperation::Branch if a.branch.is_none() => {
                let mut branches = Vec::new();
                for line in result.exec.stdout.lines() {
                    // `%(HEAD) ` is two ASCII bytes; `get` keeps any other line from panicking.
                    let (head, name) = (line.get(..2).unwrap_or(""), line.get(2..).unwrap_or(""));
                    if head.starts_with('*') {
                        out.current_branch = Some(name.to_string());
                    }
                    if !name.is_empty() {
                        branches.push(name.to_string());
                    }
                }
                out.branches = Some(branches);
            }
            _ => {}
        }
    }
    let result_value = serde_json::to_value(&out).expect("outputs serialize");
    if result.exec.timed_out {
        Outcome::Failed {
            error: JobError::new(ErrorReason::Timeout, out.message),
            result: Some(result_value),
            exit_code: None,
        }
    } else if result.exec.cancelled {
        Outcome::Cancelled {
            result: Some(result_value),
            exit_code: None,
        }
    } else {
        succeeded(&out, out.exit_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> ToolsConfig {
        ToolsConfig {
            default_timeout_s: 300,
            max_timeout_s: 3600,
            output_limit_bytes: 1 << 20,
            max_attempts: 3,
            file_limit_bytes: 1 << 20,
            allow_network: false,
            resources: Default::default(),
            drivers: Default::default(),
            templates: Default::default(),
        }
    }

    fn plan(arguments: Value) -> Result<Plan, InvalidInput> {
        GitOperationTool::new().plan(arguments, &config())
    }

    #[test]
    fn tokens_leave_the_stored_arguments() {
        let p = plan(json!({"sandbox_id": "s", "operation": "clone",
            "repository_url": "https://bob:ghp_secret@example.com/r.git"}))
        .unwrap();
        assert_eq!(p.secret.as_deref(), Some("ghp_secret"));
        assert_eq!(
            p.arguments["repository_url"],
            "https://bob@example.com/r.git"
        );
        assert_eq!(p.arguments["token"], HELD);
        assert!(!p.arguments.to_string().contains("ghp_secret"));
        let p = plan(json!({"sandbox_id": "s", "operation": "push", "token": "tok123"})).unwrap();
        assert_eq!(p.secret.as_deref(), Some("tok123"));
        assert!(!p.arguments.to_string().contains("tok123"));
        assert!(!p.retry_safe);
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (
                json!({"sandbox_id": "s", "operation": "clone"}),
                "repository_url",
            ),
            (
                json!({"sandbox_id": "s", "operation": "clone", "repository_url": "ext::sh -c id"}),
                "repository_url",
            ),
            (
                json!({"sandbox_id": "s", "operation": "commit"}),
                "commit_message",
            ),
            (
                json!({"sandbox_id": "s", "operation": "checkout", "branch": "-b"}),
                "branch",
            ),
            (
                json!({"sandbox_id": "s", "operation": "checkout", "branch": "a\nb"}),
                "branch",
            ),
            (
                json!({"sandbox_id": "s", "operation": "status", "token": "t"}),
                "token",
            ),
            (
                json!({"sandbox_id": "s", "operation": "log", "limit": 0}),
                "limit",
            ),
            (
                json!({"sandbox_id": "s", "operation": "commit", "commit_message": "m",
                       "author_name": "a\nb"}),
                "author_name",
            ),
            (
                json!({"sandbox_id": "s", "operation": "push", "repository_url": "--mirror"}),
                "repository_url",
            ),
            (
                json!({"sandbox_id": "s", "operation": "checkout"}),
                "branch",
            ),
        ];
        for (arguments, field) in cases {
            let err = plan(arguments.clone()).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{arguments}: {err:?}");
        }
    }
}
