//! Command tools: `execute_shell` and `execute_code`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::args::{self, ExecuteCodeArgs, ExecuteShellArgs, InvalidInput, schema_of};
use super::outputs::ExecOutput;
use super::{
    Annotations, Plan, Target, Tool, ToolEnv, ToolSpec, ToolsConfig, driver_failure, find_sandbox,
    stored_args, succeeded,
};
use crate::actors::{JobContext, Outcome};
use crate::auth::Role;
use crate::drivers::paths::sandbox_relative;
use crate::drivers::{Capabilities, ExecIo, ExecRequest, ExecResult, Program};
use crate::store::{ErrorReason, Job, JobError};

/// What both command tools share once their arguments are parsed.
struct Command {
    sandbox_id: String,
    program: Option<Program>,
    language: Option<String>,
    code: Option<String>,
    working_directory: Option<String>,
    timeout_s: Option<f64>,
    env: std::collections::BTreeMap<String, String>,
    stdin: Option<String>,
}

fn annotations() -> Annotations {
    Annotations {
        read_only_hint: false,
        destructive_hint: true,
        idempotent_hint: false,
        open_world_hint: false,
    }
}

fn plan_command(
    arguments: Value,
    sandbox_id: String,
    env: &std::collections::BTreeMap<String, String>,
    timeout_s: Option<f64>,
    working_directory: Option<&str>,
) -> Result<Plan, InvalidInput> {
    args::check_env("env", env)?;
    if let Some(dir) = working_directory {
        sandbox_relative("working_directory", dir)
            .map_err(|e| InvalidInput::field("working_directory", e.to_string()))?;
    }
    Ok(Plan {
        arguments,
        target: Target::Sandbox(sandbox_id),
        // Running a command twice is never harmless.
        retry_safe: false,
        timeout_s,
        secret: None,
        sandbox: None,
        template: None,
        setup_commands: Vec::new(),
    })
}

/// Runs the command in the job's sandbox and shapes the outcome.
async fn run_command(env: &ToolEnv, job: &Job, ctx: JobContext, cmd: Command) -> Outcome {
    let record = match find_sandbox(env, job, &cmd.sandbox_id).await {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };
    let driver = match env.driver_of(&record) {
        Ok(d) => d,
        Err(e) => return driver_failure(e),
    };
    let program = match (cmd.program, cmd.code) {
        (Some(program), _) => program,
        (None, Some(source)) => Program::Code {
            language: cmd.language.unwrap_or_else(|| record.language.clone()),
            source,
        },
        (None, None) => unreachable!("a command has a program or code"),
    };
    // Decided before the run, on the code as posted; used only if it fails to compile.
    let command_like = match &program {
        Program::Code { language, source }
            if super::code_hint::reads_as_command_line(language, source) =>
        {
            Some(language.clone())
        }
        _ => None,
    };
    let mut vars = record.environment_vars.clone();
    vars.extend(cmd.env);
    let timeout = Duration::from_secs_f64(cmd.timeout_s.unwrap_or(job.timeout_s as f64));
    let request = ExecRequest {
        program,
        working_directory: cmd.working_directory,
        env: vars,
        stdin: cmd.stdin.map(String::into_bytes),
        timeout,
        output_limit: env.config.output_limit_bytes,
        network: record.network,
        limits: env.config.resources.limits(&record.resources),
    };
    let io = ExecIo {
        output: ctx.output,
        cancel: ctx.cancel,
    };
    let result = driver.exec(record.driver_handle(), request, io).await;
    match result {
        Ok(r) => exec_outcome(
            record.id,
            timeout,
            r,
            driver.capabilities(),
            command_like.as_deref(),
        ),
        Err(e) => driver_failure(e),
    }
}

/// Shapes a command's outcome. `command_like` is the language of code that reads as a shell
/// command line (see [`super::code_hint`]), for the hint when it failed to compile.
fn exec_outcome(
    sandbox_id: String,
    timeout: Duration,
    r: ExecResult,
    capabilities: Capabilities,
    command_like: Option<&str>,
) -> Outcome {
    let killed = if capabilities.kills_process_tree {
        "the command and all its child processes were killed"
    } else {
        "the command's process group was killed (processes that left it may still run)"
    };
    let mut message = if r.timed_out {
        format!("timed out after {}s; {killed}", timeout.as_secs_f64())
    } else if r.cancelled {
        format!("cancelled; {killed}")
    } else if r.limit_exceeded.as_deref() == Some("disk") {
        "killed: the sandbox went over its disk quota; delete files to free space (get_sandbox_info \
         shows usage and quota)"
            .to_string()
    } else if let Some(limit) = &r.limit_exceeded {
        format!(
            "killed: the sandbox's {limit} limit was exceeded (exit code {})",
            r.exit_code.unwrap_or(-1)
        )
    } else {
        match r.exit_code {
            Some(0) => "completed with exit code 0".to_string(),
            Some(code) => format!("exited with code {code}"),
            None => "ended without an exit code".to_string(),
        }
    };
    if let Some(language) = command_like
        && r.exit_code.is_some_and(|code| code != 0)
        && !r.timed_out
        && !r.cancelled
        && r.limit_exceeded.is_none()
        && super::code_hint::failed_to_compile(&r.stderr)
    {
        message = format!("{message}; {}", super::code_hint::hint(language));
    }
    let output = ExecOutput {
        sandbox_id,
        exit_code: r.exit_code,
        stdout: r.stdout,
        stderr: r.stderr,
        execution_time: (r.duration.as_secs_f64() * 1000.0).round() / 1000.0,
        message: message.clone(),
        timed_out: r.timed_out,
        truncated: r.truncated,
        cancelled: r.cancelled,
        limit_exceeded: r.limit_exceeded,
    };
    let result = serde_json::to_value(&output).expect("outputs serialize");
    if r.timed_out {
        Outcome::Failed {
            error: JobError::new(ErrorReason::Timeout, message),
            result: Some(result),
            exit_code: None,
        }
    } else if r.cancelled {
        Outcome::Cancelled {
            result: Some(result),
            exit_code: None,
        }
    } else {
        succeeded(&output, r.exit_code)
    }
}

pub(super) struct ExecuteShell {
    spec: ToolSpec,
}

impl ExecuteShell {
    pub(super) fn new() -> ExecuteShell {
        ExecuteShell {
            spec: ToolSpec {
                name: "execute_shell",
                description: "Run a shell command in a sandbox and return its exit code, stdout \
                    and stderr. A non-zero exit code is a normal result. The command and every \
                    process it starts are killed at the timeout.",
                input_schema: schema_of::<ExecuteShellArgs>(),
                output_schema: schema_of::<ExecOutput>(),
                annotations: annotations(),
                min_role: Role::Developer,
            },
        }
    }
}

#[async_trait]
impl Tool for ExecuteShell {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let a: ExecuteShellArgs = args::parse(&arguments)?;
        if a.command.trim().is_empty() {
            return Err(InvalidInput::field("command", "command is empty"));
        }
        plan_command(
            arguments,
            a.sandbox_id,
            &a.env,
            a.timeout_s,
            a.working_directory.as_deref(),
        )
    }

    async fn run(&self, env: &ToolEnv, job: &Job, ctx: JobContext) -> Outcome {
        let a: ExecuteShellArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let cmd = Command {
            sandbox_id: a.sandbox_id,
            program: Some(Program::Shell(a.command)),
            language: None,
            code: None,
            working_directory: a.working_directory,
            timeout_s: a.timeout_s,
            env: a.env,
            stdin: a.stdin,
        };
        run_command(env, job, ctx, cmd).await
    }
}

pub(super) struct ExecuteCode {
    spec: ToolSpec,
}

impl ExecuteCode {
    pub(super) fn new() -> ExecuteCode {
        ExecuteCode {
            spec: ToolSpec {
                name: "execute_code",
                description: "Run source code in a sandbox with the language's interpreter \
                    (python, javascript, bash, sh, and whatever else the sandbox has) and return \
                    its exit code, stdout and stderr.",
                input_schema: schema_of::<ExecuteCodeArgs>(),
                output_schema: schema_of::<ExecOutput>(),
                annotations: annotations(),
                min_role: Role::Developer,
            },
        }
    }
}

#[async_trait]
impl Tool for ExecuteCode {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let a: ExecuteCodeArgs = args::parse(&arguments)?;
        if let Some(language) = a
            .language
            .as_deref()
            .filter(|l| !config.drivers.any_accepts(l))
        {
            return Err(InvalidInput::field(
                "language",
                format!(
                    "unsupported language `{language}`; supported: {}",
                    config.drivers.all_languages().join(", ")
                ),
            ));
        }
        plan_command(
            arguments,
            a.sandbox_id,
            &a.env,
            a.timeout_s,
            a.working_directory.as_deref(),
        )
    }

    async fn run(&self, env: &ToolEnv, job: &Job, ctx: JobContext) -> Outcome {
        let a: ExecuteCodeArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let cmd = Command {
            sandbox_id: a.sandbox_id,
            program: None,
            language: a.language,
            code: Some(a.code),
            working_directory: a.working_directory,
            timeout_s: a.timeout_s,
            env: a.env,
            stdin: a.stdin,
        };
        run_command(env, job, ctx, cmd).await
    }
}
