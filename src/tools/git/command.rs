//! Running git in a sandbox: the environment that keeps it non-interactive and predictable,
//! configuration through `GIT_CONFIG_*`, the credential header scoped to one server, and the
//! redaction of every trace of the token from what git prints.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::remote;
use crate::drivers::paths::WORKSPACE;
use crate::drivers::{DriverError, ExecIo, ExecRequest, ExecResult, Program};
use crate::output::{OutputTx, Stream};
use crate::store::SandboxRecord;
use crate::tools::ToolEnv;

/// The user name sent with a token when the URL names none (GitHub's convention; GitLab and
/// most servers accept any user name with a token).
pub(crate) const TOKEN_USER: &str = "x-access-token";

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
pub(super) fn redact(text: &str, needles: &[String]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
