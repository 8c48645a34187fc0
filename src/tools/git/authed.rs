//! clone, push and pull with a token, split so that while the token is present only git and its
//! transport run, and only against a URL the server trusts:
//! - clone: `clone --no-checkout` with the token, then `checkout` without it;
//! - pull: `fetch` of one branch with the token, then `merge FETCH_HEAD` without it;
//! - push: `push` of one branch with the token, then the remote-tracking ref (and upstream)
//!   recorded without it.
//!
//! Checkouts and merges run whatever the repository and the sandbox's home configure (filters,
//! hooks): they run in token-free git processes with the sandbox's own variables, like any
//! command the caller could run. The token goes only to the host of the sandbox's recorded
//! `git_repo` or of a `repository_url` given with the call; a remote *name* is resolved from
//! the local configuration (which must pass `trust.rs`'s allowlist) and used only when it points
//! at `git_repo`, and then git is given `git_repo` itself, not the name.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::command::{
    Credential, GitCommand, GitResult, TOKEN_USER, as_seen_inside, run_git, send_output, sink,
};
use super::input::clone_target;
use super::refs::{check_branch, is_remote_name};
use super::remote;
use super::trust::LocalConfig;
use crate::actors::{JobContext, Outcome};
use crate::drivers::{DriverError, ExecResult};
use crate::output::OutputTx;
use crate::store::{ErrorReason, JobError, SandboxRecord};
use crate::tools::args::{GitOperation, GitOperationArgs};
use crate::tools::{ToolEnv, driver_failure, failed};

/// Several git runs that make one operation. Every run is buffered and redacted; the output of
/// steps is sent as one block at the end, the output of checks is not part of it.
pub(crate) struct Session<'a> {
    env: &'a ToolEnv,
    record: &'a SandboxRecord,
    cancel: CancellationToken,
    deadline: Instant,
    needles: Vec<String>,
    transcript: ExecResult,
}

impl<'a> Session<'a> {
    pub fn new(
        env: &'a ToolEnv,
        record: &'a SandboxRecord,
        credential: &Credential,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> Session<'a> {
        Session {
            env,
            record,
            cancel,
            deadline: Instant::now() + timeout,
            needles: credential.needles(),
            transcript: ExecResult {
                exit_code: Some(0),
                stdout: String::new(),
                stderr: String::new(),
                truncated: false,
                timed_out: false,
                cancelled: false,
                limit_exceeded: None,
                duration: Duration::ZERO,
            },
        }
    }

    /// Runs a check; its output is not part of the operation's.
    pub async fn check(&self, mut command: GitCommand) -> Result<GitResult, DriverError> {
        command.timeout = self
            .deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        command.needles.extend(self.needles.iter().cloned());
        run_git(self.env, self.record, command, sink(), self.cancel.clone()).await
    }

    /// Runs a step of the operation; `true` if it succeeded.
    pub async fn step(&mut self, command: GitCommand) -> Result<bool, DriverError> {
        let result = self.check(command).await?;
        let t = &mut self.transcript;
        let exec = result.exec;
        t.stdout.push_str(&exec.stdout);
        t.stderr.push_str(&exec.stderr);
        t.exit_code = exec.exit_code;
        t.truncated |= exec.truncated;
        t.timed_out |= exec.timed_out;
        t.cancelled |= exec.cancelled;
        t.limit_exceeded = exec.limit_exceeded.or(t.limit_exceeded.take());
        t.duration += exec.duration;
        Ok(exec.exit_code == Some(0) && !exec.timed_out && !exec.cancelled)
    }

    /// The operation's result; its output is sent to `output` now.
    pub async fn finish(self, output: OutputTx) -> GitResult {
        let exec = self.transcript;
        send_output(&output, &exec).await;
        GitResult { exec }
    }
}

/// The credential for `url`: its user name, else the token's usual one.
fn credential_for(url: &str, token: &str) -> Credential {
    Credential {
        user: remote::user(url).unwrap_or_else(|| TOKEN_USER.to_string()),
        token: token.to_string(),
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// `dir` under the working directory `base` (both as the driver takes them).
fn under(base: Option<&str>, dir: &str) -> Option<String> {
    match (base, dir) {
        (base, ".") => base.map(str::to_string),
        (None, dir) => Some(dir.to_string()),
        (Some(base), dir) => Some(format!("{}/{dir}", base.trim_end_matches('/'))),
    }
}

/// Clones `url` into `directory` (under `working_directory`) with the token, then checks the
/// files out without it. `url` must be an HTTP(S) URL (others get no token).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn clone(
    env: &ToolEnv,
    record: &SandboxRecord,
    url: &str,
    branch: Option<&str>,
    directory: &str,
    working_directory: Option<String>,
    token: &str,
    timeout: Duration,
    ctx: &JobContext,
) -> Result<GitResult, DriverError> {
    let credential = credential_for(url, token);
    let mut session = Session::new(env, record, &credential, timeout, ctx.cancel.clone());
    let mut args = argv(&["clone", "--no-checkout"]);
    if let Some(branch) = branch {
        args.push(format!("--branch={branch}"));
    }
    args.extend(["--".to_string(), url.to_string(), directory.to_string()]);
    let mut command = GitCommand::new(args, working_directory.clone(), timeout);
    command.authenticate(&credential, url);
    if session.step(command).await? {
        let checkout_dir = under(working_directory.as_deref(), directory);
        // An empty repository has nothing to check out.
        let head = session
            .check(GitCommand::new(
                argv(&["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]),
                checkout_dir.clone(),
                timeout,
            ))
            .await?;
        if head.success() {
            session
                .step(GitCommand::new(
                    argv(&["checkout", "--force", "HEAD", "--"]),
                    checkout_dir,
                    timeout,
                ))
                .await?;
        }
    }
    Ok(session.finish(ctx.output.clone()).await)
}

/// Where a push or pull with a token goes.
enum Destination {
    /// A URL given with the call.
    Given(String),
    /// Remote `name`, which points at the sandbox's `git_repo`: git is given that URL.
    Trusted { name: String, url: String },
}

fn refuse(message: String) -> Outcome {
    Outcome::Failed {
        error: JobError::new(ErrorReason::ExecutionError, message).with_field("repository_url"),
        result: None,
        exit_code: None,
    }
}

/// Runs `a` (clone, push or pull) with `token`. `Ok(None)`: the remote is not HTTP(S), so the
/// token is not used and the operation runs as any other.
pub(super) async fn run(
    env: &ToolEnv,
    record: &SandboxRecord,
    a: &GitOperationArgs,
    token: &str,
    timeout: Duration,
    ctx: &JobContext,
) -> Result<Option<GitResult>, Outcome> {
    if a.operation == GitOperation::Clone {
        let url = a.repository_url.as_deref().unwrap_or_default();
        if remote::http_origin(url).is_none() {
            return Ok(None);
        }
        let (working_directory, directory) = match clone_target(a).ok().flatten() {
            // The target is root-relative; run from the root.
            Some(target) => (None, target),
            None => match remote::clone_directory(url) {
                Some(dir) => (a.working_directory.clone(), dir),
                None => {
                    return Err(Outcome::Failed {
                        error: JobError::new(
                            ErrorReason::InvalidArgument,
                            "cannot tell which directory to clone into from repository_url; \
                             give directory",
                        )
                        .with_field("directory"),
                        result: None,
                        exit_code: None,
                    });
                }
            },
        };
        return clone(
            env,
            record,
            url,
            a.branch.as_deref(),
            &directory,
            working_directory,
            token,
            timeout,
            ctx,
        )
        .await
        .map(Some)
        .map_err(driver_failure);
    }
    push_or_pull(env, record, a, token, timeout, ctx)
        .await
        .map_err(|e| match e {
            Refusal::Outcome(outcome) => outcome,
            Refusal::Driver(e) => driver_failure(e),
        })
}

enum Refusal {
    Outcome(Outcome),
    Driver(DriverError),
}

impl From<DriverError> for Refusal {
    fn from(e: DriverError) -> Refusal {
        Refusal::Driver(e)
    }
}

impl From<Outcome> for Refusal {
    fn from(o: Outcome) -> Refusal {
        Refusal::Outcome(o)
    }
}

async fn push_or_pull(
    env: &ToolEnv,
    record: &SandboxRecord,
    a: &GitOperationArgs,
    token: &str,
    timeout: Duration,
    ctx: &JobContext,
) -> Result<Option<GitResult>, Refusal> {
    let wd = a.working_directory.clone();
    if let Some(url) = a.repository_url.as_deref() {
        if !is_remote_name(url) && remote::http_origin(url).is_none() {
            // A local URL gets no token.
            return Ok(None);
        }
    }
    // The checks run isolated like the token's run, so they see the repository as it will.
    let probe = Credential {
        user: TOKEN_USER.into(),
        token: token.to_string(),
    };
    let mut session = Session::new(env, record, &probe, timeout, ctx.cancel.clone());
    let listing = session
        .check(GitCommand::isolated(
            argv(&["config", "--local", "--no-includes", "--null", "--list"]),
            wd.clone(),
            timeout,
        ))
        .await?;
    if !listing.success() {
        // Not a repository (or an unreadable one): git's own answer, without the token.
        return Ok(Some(listing));
    }
    let config = LocalConfig::parse(&listing.exec.stdout);
    let head = session
        .check(GitCommand::isolated(
            argv(&["symbolic-ref", "--quiet", "HEAD"]),
            wd.clone(),
            timeout,
        ))
        .await?;
    let current = head
        .success()
        .then(|| head.exec.stdout.trim().strip_prefix("refs/heads/"))
        .flatten()
        .filter(|b| check_branch("branch", b).is_ok())
        .map(str::to_string);

    let destination = match a.repository_url.as_deref() {
        Some(url) if !is_remote_name(url) => Destination::Given(url.to_string()),
        name => {
            let name = name
                .map(str::to_string)
                .or_else(|| {
                    let b = current.as_deref()?;
                    config
                        .get(&format!("branch.{b}.remote"))
                        .filter(|r| is_remote_name(r))
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "origin".to_string());
            let urls = config.all(&format!("remote.{name}.url"));
            if urls.iter().all(|u| remote::http_origin(u).is_none()) {
                // A local remote (or none): no token to send.
                return Ok(None);
            }
            let trusted = record
                .git_repo
                .as_deref()
                .map(|g| as_seen_inside(env, record, g));
            match trusted {
                Some(t) if urls.iter().all(|u| remote::same_repository(u, &t)) => {
                    Destination::Trusted { name, url: t }
                }
                Some(_) => {
                    let shown = urls
                        .iter()
                        .find_map(|u| remote::http_origin(u))
                        .unwrap_or_default();
                    return Err(refuse(format!(
                        "remote `{name}` points to {shown}, not to the sandbox's git_repo, so the \
                         token was not sent; a token goes only to git_repo or to a \
                         repository_url given with the call"
                    ))
                    .into());
                }
                None => {
                    return Err(refuse(format!(
                        "the sandbox has no git_repo, so a token is sent only to a \
                         repository_url given with the call, not to remote `{name}`"
                    ))
                    .into());
                }
            }
        }
    };
    // Only now that a token will be sent: the configuration it would be sent with.
    if let Some(key) = config.disallowed_key() {
        return Err(failed(
            ErrorReason::ExecutionError,
            format!(
                "the repository's .git/config sets `{key}`, which could send the token elsewhere \
                 or run a program while git holds it, so the token was not used; remove it \
                 (git config --unset-all {key}) or use the repository without a token"
            ),
        )
        .into());
    }
    let url = match &destination {
        Destination::Given(url) | Destination::Trusted { url, .. } => url.clone(),
    };
    let credential = credential_for(&url, token);
    let authed = |args: Vec<String>| {
        let mut command = GitCommand::new(args, wd.clone(), timeout);
        command.authenticate(&credential, &url);
        command
    };
    let plain = |args: Vec<String>| GitCommand::new(args, wd.clone(), timeout);
    let s = |x: &str| x.to_string();

    match (a.operation, &destination) {
        (GitOperation::Push, Destination::Given(url)) => {
            let mut args = vec![s("push")];
            if a.branch.is_some() {
                args.push(s("--set-upstream"));
            }
            args.extend([s("--end-of-options"), url.clone()]);
            args.extend(a.branch.iter().cloned());
            session.step(authed(args)).await?;
        }
        (GitOperation::Push, Destination::Trusted { name, url }) => {
            let Some(branch) = a.branch.clone().or(current) else {
                return Err(failed(
                    ErrorReason::ExecutionError,
                    "HEAD is not on a branch; give branch to push",
                )
                .into());
            };
            let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
            if session
                .step(authed(vec![
                    s("push"),
                    s("--end-of-options"),
                    url.clone(),
                    refspec,
                ]))
                .await?
            {
                // What a push to the named remote records, done without the token.
                let mut bookkeeping = vec![vec![
                    s("update-ref"),
                    format!("refs/remotes/{name}/{branch}"),
                    format!("refs/heads/{branch}"),
                ]];
                if a.branch.is_some() {
                    bookkeeping.push(vec![
                        s("config"),
                        format!("branch.{branch}.remote"),
                        name.clone(),
                    ]);
                    bookkeeping.push(vec![
                        s("config"),
                        format!("branch.{branch}.merge"),
                        format!("refs/heads/{branch}"),
                    ]);
                }
                for args in bookkeeping {
                    if !session.step(plain(args)).await? {
                        break;
                    }
                }
            }
        }
        (GitOperation::Pull, destination) => {
            let fetch = match destination {
                Destination::Given(url) => {
                    let mut args = vec![s("fetch"), s("--end-of-options"), url.clone()];
                    args.extend(a.branch.iter().cloned());
                    args
                }
                Destination::Trusted { name, url } => {
                    let branch = match &a.branch {
                        Some(b) => b.clone(),
                        None => upstream(&config, current.as_deref(), name).ok_or_else(|| {
                            failed(
                                ErrorReason::ExecutionError,
                                format!(
                                    "the current branch has no upstream branch on `{name}`; \
                                     give branch to pull"
                                ),
                            )
                        })?,
                    };
                    vec![
                        s("fetch"),
                        s("--end-of-options"),
                        url.clone(),
                        format!("+refs/heads/{branch}:refs/remotes/{name}/{branch}"),
                    ]
                }
            };
            if session.step(authed(fetch)).await? {
                session
                    .step(plain(vec![s("merge"), s("--no-edit"), s("FETCH_HEAD")]))
                    .await?;
            }
        }
        _ => unreachable!("only clone, push and pull carry a token"),
    }
    Ok(Some(session.finish(ctx.output.clone()).await))
}

/// The branch of remote `name` that `current` tracks, if it tracks one there.
fn upstream(config: &LocalConfig, current: Option<&str>, name: &str) -> Option<String> {
    let current = current?;
    if config.get(&format!("branch.{current}.remote"))? != name {
        return None;
    }
    let merge = config.get(&format!("branch.{current}.merge"))?;
    let branch = merge.strip_prefix("refs/heads/")?;
    check_branch("branch", branch).ok()?;
    Some(branch.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_the_branch_config() {
        let config = LocalConfig::parse(
            "branch.main.remote\norigin\0branch.main.merge\nrefs/heads/trunk\0\
             branch.odd.remote\norigin\0branch.odd.merge\nrefs/tags/v1\0",
        );
        assert_eq!(
            upstream(&config, Some("main"), "origin").as_deref(),
            Some("trunk")
        );
        assert_eq!(upstream(&config, Some("main"), "upstream"), None);
        assert_eq!(upstream(&config, Some("odd"), "origin"), None);
        assert_eq!(upstream(&config, None, "origin"), None);
    }

    #[test]
    fn directories_join_the_working_directory() {
        assert_eq!(under(None, "."), None);
        assert_eq!(
            under(Some("/workspace/a/"), "r").as_deref(),
            Some("/workspace/a/r")
        );
        assert_eq!(under(None, "r").as_deref(), Some("r"));
    }
}
