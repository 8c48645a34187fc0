//! `git_operation`, and the git clone of `create_sandbox`.
//!
//! git runs inside the sandbox, with the sandbox's isolation and network setting, as an argv:
//! caller values are single arguments after `--`/`--end-of-options` or travel on stdin (commit
//! messages) and in the environment (author). Branch names follow git's rules and never start
//! with `-`; URLs are checked and lose their passwords before being stored (see `remote.rs`).
//!
//! A token for HTTPS remotes reaches git as an `Authorization` header through
//! `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` (the environment, which other
//! users cannot read, rather than the command line, which `ps` shows), scoped to the remote's
//! server. While it is in use, hooks and credential helpers are off, git's output is buffered
//! and every trace of the token is replaced by `***` before the output is streamed, stored or
//! returned.

mod refs;
pub(crate) mod remote;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::args::{self, GitOperation, GitOperationArgs, InvalidInput, schema_of};
use super::outputs::{Commit, GitOperationOutput};
use super::secrets::{self, HELD};
use super::{
    Annotations, Plan, Target, Tool, ToolEnv, ToolSpec, ToolsConfig, driver_failure, failed,
    find_sandbox, succeeded,
};
use crate::actors::{JobContext, Outcome};
use crate::auth::Role;
use crate::drivers::paths::{WORKSPACE, sandbox_relative};
use crate::drivers::{DriverError, ExecIo, ExecRequest, ExecResult, Program};
use crate::output::{OutputTx, Stream};
use crate::store::{ErrorReason, Job, JobError, SandboxRecord};
pub use refs::check_branch;

/// The user name sent with a token when the URL names none (GitHub's convention; GitLab and
/// most servers accept any user name with a token).
pub(crate) const TOKEN_USER: &str = "x-access-token";
/// Default and largest `log` length.
const DEFAULT_LOG_LIMIT: u32 = 20;
const MAX_LOG_LIMIT: u32 = 1000;
/// Field and record separators of the `log` format.
const FIELD_SEP: char = '\u{1f}';
const RECORD_SEP: char = '\u{1e}';

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
                min_role: Role::Developer,
            },
        }
    }
}

/// Refuses NUL and, for one-line values, control characters.
fn check_text(field: &str, value: &str, one_line: bool) -> Result<(), InvalidInput> {
    if value.contains('\0') {
        return Err(InvalidInput::field(
            field,
            format!("{field} contains a NUL byte"),
        ));
    }
    if one_line && value.chars().any(char::is_control) {
        return Err(InvalidInput::field(
            field,
            format!("{field} contains a control character (such as a newline)"),
        ));
    }
    Ok(())
}

/// Checks a token's shape (it travels in an HTTP header).
pub(crate) fn check_token(field: &str, token: &str) -> Result<(), InvalidInput> {
    if token.is_empty() || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidInput::field(
            field,
            format!("{field} must be non-empty, without spaces or control characters"),
        ));
    }
    Ok(())
}

/// A remote for push and pull: a name (`origin`) or a checked URL.
fn check_remote(field: &str, value: &str) -> Result<remote::RemoteUrl, InvalidInput> {
    if refs::is_remote_name(value) {
        return Ok(remote::RemoteUrl {
            url: value.to_string(),
            password: None,
        });
    }
    remote::parse(field, value)
}

fn validate(a: &GitOperationArgs) -> Result<Option<String>, InvalidInput> {
    use GitOperation as G;
    let op = a.operation;
    let not_for = |field: &str| {
        Err(InvalidInput::field(
            field,
            format!("{field} is not used by git {}", op.as_str()),
        ))
    };
    if let Some(dir) = &a.working_directory {
        sandbox_relative("working_directory", dir)
            .map_err(|e| InvalidInput::field("working_directory", e.to_string()))?;
    }
    if let Some(branch) = &a.branch {
        check_branch("branch", branch)?;
    }
    for (i, file) in a.files.iter().enumerate() {
        if file.is_empty() {
            return Err(InvalidInput::field(format!("files[{i}]"), "an empty path"));
        }
        check_text(&format!("files[{i}]"), file, false)?;
    }
    for (field, value) in [
        ("author_name", &a.author_name),
        ("author_email", &a.author_email),
    ] {
        if let Some(value) = value {
            check_text(field, value, true)?;
            if value.contains(['<', '>']) {
                return Err(InvalidInput::field(
                    field,
                    format!("{field} cannot contain < or >"),
                ));
            }
        }
    }
    let mut password = None;
    match (&a.repository_url, op) {
        (None, G::Clone) => {
            return Err(InvalidInput::field(
                "repository_url",
                "repository_url is required for clone",
            ));
        }
        (Some(url), G::Clone) => password = remote::parse("repository_url", url)?.password,
        (Some(url), G::Push | G::Pull) => password = check_remote("repository_url", url)?.password,
        (Some(_), _) => return not_for("repository_url"),
        (None, _) => {}
    }
    match (&a.commit_message, op) {
        (None, G::Commit) => {
            return Err(InvalidInput::field(
                "commit_message",
                "commit_message is required for commit",
            ));
        }
        (Some(m), G::Commit) => {
            check_text("commit_message", m, false)?;
            if m.trim().is_empty() {
                return Err(InvalidInput::field(
                    "commit_message",
                    "commit_message is empty",
                ));
            }
        }
        (Some(_), _) => return not_for("commit_message"),
        (None, _) => {}
    }
    if a.directory.is_some() && op != G::Clone {
        return not_for("directory");
    }
    if a.directory.is_some() {
        clone_target(a)?;
    }
    if !a.files.is_empty() && !matches!(op, G::Add | G::Commit | G::Diff | G::Checkout) {
        return not_for("files");
    }
    if a.create && op != G::Checkout {
        return not_for("create");
    }
    if a.staged && op != G::Diff {
        return not_for("staged");
    }
    if op == G::Checkout {
        if a.branch.is_none() && a.files.is_empty() {
            return Err(InvalidInput::field(
                "branch",
                "checkout needs a branch (or files to restore)",
            ));
        }
        if a.create && !a.files.is_empty() {
            return Err(InvalidInput::field(
                "create",
                "create cannot be combined with files",
            ));
        }
    }
    match (a.limit, op) {
        (Some(0), G::Log) => {
            return Err(InvalidInput::field("limit", "limit must be at least 1"));
        }
        (Some(n), G::Log) if n > MAX_LOG_LIMIT => {
            return Err(InvalidInput::field(
                "limit",
                format!("limit must be at most {MAX_LOG_LIMIT}"),
            ));
        }
        (Some(_), G::Log) | (None, _) => {}
        (Some(_), _) => return not_for("limit"),
    }
    if let Some(token) = &a.token {
        if !matches!(op, G::Clone | G::Push | G::Pull) {
            return not_for("token");
        }
        if password.is_some() {
            return Err(InvalidInput::field(
                "token",
                "give the token either in `token` or in repository_url, not both",
            ));
        }
        check_token("token", token)?;
        password = Some(token.clone());
    }
    Ok(password)
}

/// A token and the user name it goes with.
#[derive(Clone, Debug)]
pub(crate) struct Credential {
    pub token: String,
    pub user: String,
}

impl Credential {
    fn basic(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.token))
    }

    /// Every form the token could appear in output.
    fn needles(&self) -> Vec<String> {
        let mut needles = vec![self.token.clone(), self.basic()];
        let encoded = self
            .token
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>();
        needles.push(encoded);
        needles.retain(|n| !n.is_empty());
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        needles
    }
}

/// Replaces every needle in `text` with `***`.
fn redact(text: &str, needles: &[String]) -> String {
    let mut out = text.to_string();
    for needle in needles {
        if out.contains(needle.as_str()) {
            out = out.replace(needle.as_str(), "***");
        }
    }
    out
}

/// One git invocation in a sandbox.
#[derive(Debug, Default)]
pub(crate) struct GitCommand {
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Configuration for this run only, through `GIT_CONFIG_*`.
    pub config: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    pub working_directory: Option<String>,
    pub timeout: Duration,
    /// Strings to remove from the output.
    pub needles: Vec<String>,
}

impl GitCommand {
    pub fn new(args: Vec<String>, working_directory: Option<String>, timeout: Duration) -> Self {
        GitCommand {
            args,
            working_directory,
            timeout,
            ..GitCommand::default()
        }
    }

    /// Sends `credential` to the HTTP(S) server of `url` only; no effect for other remotes.
    pub fn authenticate(&mut self, credential: &Credential, url: &str) {
        let Some(origin) = remote::http_origin(url) else {
            return;
        };
        self.config.push((
            format!("http.{origin}.extraHeader"),
            format!("Authorization: Basic {}", credential.basic()),
        ));
        // While the token is present, nothing the repository configured may run or keep it.
        self.config
            .push(("credential.helper".into(), String::new()));
        self.config
            .push(("core.hooksPath".into(), "/dev/null".into()));
        self.config.push(("core.fsmonitor".into(), "false".into()));
        self.needles.extend(credential.needles());
    }

    /// The environment for git: the sandbox's variables, then what keeps git non-interactive
    /// and predictable, then this run's configuration.
    fn environment(&self, sandbox: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env = sandbox.clone();
        if !self.needles.is_empty() {
            // Tracing could print the header, and configuration from the sandbox's variables
            // could undo the settings below; neither applies while the token is present.
            env.retain(|k, _| {
                !k.starts_with("GIT_TRACE")
                    && !matches!(
                        k.as_str(),
                        "GIT_CURL_VERBOSE"
                            | "GIT_CONFIG_PARAMETERS"
                            | "GIT_ASKPASS"
                            | "SSH_ASKPASS"
                    )
            });
            env.insert("GIT_TRACE_REDACT".into(), "1".into());
        }
        for (k, v) in [
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_PAGER", "cat"),
            ("PAGER", "cat"),
            ("GIT_EDITOR", "true"),
            // Used only when no user.email is configured.
            ("EMAIL", "sandbox@daytona-mcp.invalid"),
        ] {
            env.insert(k.into(), v.into());
        }
        env.extend(self.env.clone());
        let mut config: Vec<(String, String)> = vec![
            ("protocol.ext.allow".into(), "never".into()),
            ("core.quotePath".into(), "false".into()),
            ("color.ui".into(), "never".into()),
            ("core.pager".into(), "cat".into()),
        ];
        config.extend(self.config.iter().cloned());
        env.retain(|k, _| !k.starts_with("GIT_CONFIG_KEY_") && !k.starts_with("GIT_CONFIG_VALUE_"));
        env.insert("GIT_CONFIG_COUNT".into(), config.len().to_string());
        for (i, (k, v)) in config.into_iter().enumerate() {
            env.insert(format!("GIT_CONFIG_KEY_{i}"), k);
            env.insert(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        env
    }
}

/// What came of a git run, with credentials already removed.
#[derive(Debug)]
pub(crate) struct GitResult {
    pub exec: ExecResult,
}

impl GitResult {
    pub fn success(&self) -> bool {
        self.exec.exit_code == Some(0) && !self.exec.timed_out && !self.exec.cancelled
    }

    /// stdout, then stderr.
    pub fn output(&self) -> String {
        match (self.exec.stdout.is_empty(), self.exec.stderr.is_empty()) {
            (_, true) => self.exec.stdout.clone(),
            (true, false) => self.exec.stderr.clone(),
            (false, false) => format!("{}\n{}", self.exec.stdout.trim_end(), self.exec.stderr),
        }
    }

    /// The last line git wrote to stderr (usually the reason of a failure).
    pub fn reason(&self) -> String {
        self.exec
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    }
}

/// Runs `git` in the sandbox. Output is streamed live to `output` unless a credential is in
/// use; then it is buffered, redacted, and sent once git has finished.
pub(crate) async fn run_git(
    env: &ToolEnv,
    record: &SandboxRecord,
    command: GitCommand,
    output: OutputTx,
    cancel: CancellationToken,
) -> Result<GitResult, DriverError> {
    let mut argv = vec!["git".to_string()];
    argv.extend(command.args.iter().cloned());
    let request = ExecRequest {
        program: Program::Argv(argv),
        working_directory: command.working_directory.clone(),
        env: command.environment(&record.environment_vars),
        stdin: command.stdin.clone(),
        timeout: command.timeout,
        output_limit: env.config.output_limit_bytes,
        network: record.network,
        limits: env.config.resources.limits(&record.resources),
    };
    let buffered = !command.needles.is_empty();
    let live = if buffered {
        // Nobody reads this channel's output as it comes; it is dropped.
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        tx
    } else {
        output.clone()
    };
    let mut exec = env
        .driver
        .exec(
            &record.id,
            request,
            ExecIo {
                output: live,
                cancel,
            },
        )
        .await?;
    if buffered {
        exec.stdout = redact(&exec.stdout, &command.needles);
        exec.stderr = redact(&exec.stderr, &command.needles);
        for (stream, text) in [
            (Stream::Stdout, &exec.stdout),
            (Stream::Stderr, &exec.stderr),
        ] {
            if !text.is_empty() {
                let _ = output
                    .send((stream, Bytes::copy_from_slice(text.as_bytes())))
                    .await;
            }
        }
    }
    Ok(GitResult { exec })
}

/// The args of a `git clone`.
pub(crate) fn clone_args(url: &str, branch: Option<&str>, directory: Option<&str>) -> Vec<String> {
    let mut args = vec!["clone".to_string()];
    if let Some(branch) = branch {
        args.push(format!("--branch={branch}"));
    }
    args.push("--".into());
    args.push(url.to_string());
    if let Some(dir) = directory {
        args.push(dir.to_string());
    }
    args
}

/// `url` as the sandbox's commands must see it: a path or `file://` URL under `/workspace` is
/// rewritten to where the driver really shows the sandbox's files (the same place under
/// bubblewrap; the host directory under Landlock).
pub(crate) fn as_seen_inside(env: &ToolEnv, record: &SandboxRecord, url: &str) -> String {
    let root = env.driver.workspace_root(&record.id);
    for prefix in ["file://", ""] {
        if let Some(rest) = url.strip_prefix(prefix) {
            if rest == WORKSPACE || rest.starts_with(&format!("{WORKSPACE}/")) {
                return format!("{prefix}{root}{}", &rest[WORKSPACE.len()..]);
            }
        }
    }
    url.to_string()
}

/// A hint for failures that look like a missing network.
pub(crate) fn network_hint(record: &SandboxRecord, stderr: &str) -> Option<&'static str> {
    let offline = [
        "Could not resolve host",
        "Network is unreachable",
        "Couldn't connect to server",
        "Failed to connect",
        "Connection refused",
        "Temporary failure in name resolution",
    ];
    (!record.network && offline.iter().any(|s| stderr.contains(s))).then_some(
        "the sandbox has no network access; create it with `network: true` (the operator must \
         allow it with sandbox.allow_network)",
    )
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

/// Parses `log` output in the format `%H␟%an␟%ae␟%aI␟%s␞`.
fn parse_log(stdout: &str) -> Vec<Commit> {
    stdout
        .split(RECORD_SEP)
        .filter_map(|record| {
            let mut f = record.trim_start_matches('\n').split(FIELD_SEP);
            Some(Commit {
                hash: f.next().filter(|h| !h.is_empty())?.to_string(),
                author_name: f.next()?.to_string(),
                author_email: f.next()?.to_string(),
                date: f.next()?.to_string(),
                subject: f.next()?.trim_end_matches('\n').to_string(),
            })
        })
        .collect()
}

/// Where a clone goes, relative to the sandbox root: `directory` (absolute under /workspace,
/// or relative to `working_directory`). `None`: git names it after the repository.
fn clone_target(a: &GitOperationArgs) -> Result<Option<String>, InvalidInput> {
    let Some(dir) = &a.directory else {
        return Ok(None);
    };
    let joined = if dir.starts_with('/') {
        dir.clone()
    } else {
        format!("{}/{dir}", a.working_directory.as_deref().unwrap_or("."))
    };
    let relative = sandbox_relative("directory", &joined)
        .map_err(|e| InvalidInput::field("directory", e.to_string()))?;
    let text = relative.to_string_lossy().into_owned();
    Ok(Some(if text.is_empty() { ".".into() } else { text }))
}

/// Builds the git command for a call (without credentials).
fn command_for(a: &GitOperationArgs, timeout: Duration) -> GitCommand {
    use GitOperation as G;
    let s = |x: &str| x.to_string();
    let mut literal_paths = false;
    let mut working_directory = a.working_directory.clone();
    let args: Vec<String> = match a.operation {
        G::Clone => {
            let target = clone_target(a).ok().flatten();
            if target.is_some() {
                // The target is root-relative; run from the root.
                working_directory = None;
            }
            clone_args(
                a.repository_url.as_deref().unwrap_or_default(),
                a.branch.as_deref(),
                target.as_deref(),
            )
        }
        G::Status => vec![s("status")],
        G::Add if a.files.is_empty() => vec![s("add"), s("--all")],
        G::Add => {
            literal_paths = true;
            [s("add"), s("--")]
                .into_iter()
                .chain(a.files.iter().cloned())
                .collect()
        }
        G::Commit => {
            let mut v = vec![s("commit"), s("--file=-")];
            if !a.files.is_empty() {
                literal_paths = true;
                v.push(s("--"));
                v.extend(a.files.iter().cloned());
            }
            v
        }
        G::Push | G::Pull => {
            let mut v = if a.operation == G::Push {
                vec![s("push")]
            } else {
                vec![s("pull"), s("--no-rebase"), s("--no-edit")]
            };
            if a.operation == G::Push && a.branch.is_some() {
                v.push(s("--set-upstream"));
            }
            if a.repository_url.is_some() || a.branch.is_some() {
                v.push(s("--end-of-options"));
                v.push(a.repository_url.clone().unwrap_or_else(|| s("origin")));
                v.extend(a.branch.iter().cloned());
            }
            v
        }
        G::Checkout if a.files.is_empty() => {
            let mut v = vec![s("checkout")];
            if a.create {
                v.push(s("-b"));
            }
            v.extend(a.branch.iter().cloned());
            v.push(s("--"));
            v
        }
        G::Checkout => {
            literal_paths = true;
            let mut v = vec![s("checkout")];
            v.extend(a.branch.iter().cloned());
            v.push(s("--"));
            v.extend(a.files.iter().cloned());
            v
        }
        G::Branch => match &a.branch {
            Some(branch) => vec![s("branch"), s("--end-of-options"), branch.clone()],
            None => vec![
                s("branch"),
                s("--list"),
                s("--all"),
                s("--format=%(HEAD) %(refname:short)"),
            ],
        },
        G::Log => {
            let mut v = vec![
                s("log"),
                format!("--max-count={}", a.limit.unwrap_or(DEFAULT_LOG_LIMIT)),
                format!(
                    "--format=%H{FIELD_SEP}%an{FIELD_SEP}%ae{FIELD_SEP}%aI{FIELD_SEP}%s{RECORD_SEP}"
                ),
                s("--end-of-options"),
            ];
            v.extend(a.branch.iter().cloned());
            v.push(s("--"));
            v
        }
        G::Diff => {
            literal_paths = !a.files.is_empty();
            let mut v = vec![s("diff")];
            if a.staged {
                v.push(s("--cached"));
            }
            v.push(s("--end-of-options"));
            v.extend(a.branch.iter().cloned());
            v.push(s("--"));
            v.extend(a.files.iter().cloned());
            v
        }
    };
    let mut command = GitCommand::new(args, working_directory, timeout);
    if literal_paths {
        command
            .env
            .insert("GIT_LITERAL_PATHSPECS".into(), "1".into());
    }
    if a.operation == G::Commit {
        command.stdin = a.commit_message.clone().map(String::into_bytes);
        if let Some(name) = &a.author_name {
            command.env.insert("GIT_AUTHOR_NAME".into(), name.clone());
            command
                .env
                .insert("GIT_COMMITTER_NAME".into(), name.clone());
        }
        if let Some(email) = &a.author_email {
            command.env.insert("GIT_AUTHOR_EMAIL".into(), email.clone());
            command
                .env
                .insert("GIT_COMMITTER_EMAIL".into(), email.clone());
        }
    }
    command
}

#[async_trait]
impl Tool for GitOperationTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let a: GitOperationArgs = args::parse(&arguments)?;
        let secret = validate(&a)?;
        let retry_safe = matches!(
            a.operation,
            GitOperation::Status | GitOperation::Log | GitOperation::Diff
        ) || (a.operation == GitOperation::Branch && a.branch.is_none());
        let mut plan = Plan {
            arguments,
            target: Target::Sandbox(a.sandbox_id.clone()),
            retry_safe,
            timeout_s: a.timeout_s,
            secret: None,
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
        let mut command = command_for(&a, timeout);
        let token = match call_token(env, job, a.token.as_deref(), &record) {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        let networked = matches!(
            a.operation,
            GitOperation::Clone | GitOperation::Push | GitOperation::Pull
        );
        if let (Some(token), true) = (token, networked) {
            let url = match (&a.repository_url, a.operation) {
                (Some(url), GitOperation::Clone) => Some(url.clone()),
                (Some(url), _) if !refs::is_remote_name(url) => Some(url.clone()),
                (name, _) => {
                    remote_url(env, &record, &a, name.as_deref().unwrap_or("origin"), &ctx).await
                }
            };
            if let Some(url) = url {
                let credential = Credential {
                    user: remote::user(&url).unwrap_or_else(|| TOKEN_USER.to_string()),
                    token,
                };
                command.authenticate(&credential, &url);
            }
        }
        let result = match run_git(env, &record, command, ctx.output, ctx.cancel).await {
            Ok(r) => r,
            Err(e) => return driver_failure(e),
        };
        outcome(&a, record, result)
    }
}

/// The URL of remote `name` of the repository, for scoping a credential.
async fn remote_url(
    env: &ToolEnv,
    record: &SandboxRecord,
    a: &GitOperationArgs,
    name: &str,
    ctx: &JobContext,
) -> Option<String> {
    let command = GitCommand::new(
        vec![
            "remote".into(),
            "get-url".into(),
            "--".into(),
            name.to_string(),
        ],
        a.working_directory.clone(),
        Duration::from_secs(30),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let result = run_git(env, record, command, tx, ctx.cancel.clone())
        .await
        .ok()?;
    result
        .success()
        .then(|| result.exec.stdout.trim().to_string())
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
                            &c.hash[..c.hash.len().min(12)],
                            c.date,
                            c.author_name,
                            c.author_email,
                            c.subject
                        )
                    })
                    .collect();
                out.commits = Some(commits);
            }
            GitOperation::Branch if a.branch.is_none() => {
                let mut branches = Vec::new();
                for line in result.exec.stdout.lines() {
                    let (head, name) = line.split_at(line.len().min(2));
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

    #[test]
    fn hostile_values_stay_single_arguments() {
        let a: GitOperationArgs = args::parse(&json!({"sandbox_id": "s", "operation": "commit",
            "commit_message": "-m\n$(touch x); `id` 'q' \"d\"", "files": ["-rf", "a b"]}))
        .unwrap();
        let c = command_for(&a, Duration::from_secs(5));
        assert_eq!(c.args, ["commit", "--file=-", "--", "-rf", "a b"]);
        assert_eq!(
            c.stdin.as_deref(),
            Some("-m\n$(touch x); `id` 'q' \"d\"".as_bytes())
        );
    }

    #[test]
    fn credentials_are_scoped_and_redacted() {
        let mut c = GitCommand::new(vec!["clone".into()], None, Duration::from_secs(5));
        let cred = Credential {
            token: "tok/en+1".into(),
            user: TOKEN_USER.into(),
        };
        c.authenticate(&cred, "https://git.example.com/a/r.git");
        let env = c.environment(&BTreeMap::from([
            ("GIT_TRACE_CURL".into(), "1".into()),
            (
                "GIT_CONFIG_PARAMETERS".into(),
                "'core.hooksPath'='/x'".into(),
            ),
        ]));
        assert!(!env.contains_key("GIT_TRACE_CURL"));
        assert!(!env.contains_key("GIT_CONFIG_PARAMETERS"));
        let keys: Vec<&String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("GIT_CONFIG_KEY_"))
            .map(|(_, v)| v)
            .collect();
        assert!(keys.contains(&&"http.https://git.example.com/.extraHeader".to_string()));
        let text = format!("x tok/en+1 y {} z tok%2Fen%2B1", cred.basic());
        assert_eq!(redact(&text, &c.needles), "x *** y *** z ***");
        // No header for a non-HTTP remote.
        let mut local = GitCommand::new(vec![], None, Duration::from_secs(5));
        local.authenticate(&cred, "/workspace/r.git");
        assert!(local.config.is_empty());
    }

    #[test]
    fn log_output_parses() {
        let out = format!(
            "abc{f}Ann{f}a@x{f}2026-01-01T00:00:00+00:00{f}first line{r}\ndef{f}Bob{f}b@x{f}2026-01-02T00:00:00+00:00{f}second{r}\n",
            f = FIELD_SEP,
            r = RECORD_SEP
        );
        let commits = parse_log(&out);
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[1].hash, "def");
        assert_eq!(commits[1].subject, "second");
    }
}
