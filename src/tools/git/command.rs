//! Running git in a sandbox: the environment that keeps it non-interactive and predictable,
//! configuration through `GIT_CONFIG_*`, the credential header scoped to one server, the
//! isolated mode of every run that carries it (fixed environment, no system or global
//! configuration, no helpers, hooks, proxies or redirects), and the redaction of every trace of
//! the token from what git prints.

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
    pub fn needles(&self) -> Vec<String> {
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

/// Configuration of every run that carries a token (and of the checks that decide whether it
/// may): nothing the repository, the sandbox's home directory or the sandbox's variables set
/// may run a program, keep the credential, or send the request anywhere but the server of the
/// URL. The local `.git/config` is checked against an allowlist before such a run (see
/// `trust.rs`); global and system configuration are not read at all.
const ISOLATED_CONFIG: [(&str, &str); 15] = [
    ("credential.helper", ""),
    ("core.askPass", ""),
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    // An empty proxy turns proxies off, including those of `http_proxy`-style variables.
    ("http.proxy", ""),
    ("http.sslVerify", "true"),
    // A redirect (or dumb-HTTP alternates) would carry the header to another server.
    ("http.followRedirects", "false"),
    ("protocol.allow", "never"),
    ("protocol.http.allow", "always"),
    ("protocol.https.allow", "always"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("push.recurseSubmodules", "no"),
    ("transfer.bundleURI", "false"),
];

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
    /// Run with a fixed environment (none of the sandbox's variables), without system and
    /// global configuration, and with [`ISOLATED_CONFIG`]: every run that carries a token, and
    /// the checks that must see the repository as that run will.
    pub isolated: bool,
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

    /// An isolated run (see [`GitCommand::isolated`]).
    pub fn isolated(
        args: Vec<String>,
        working_directory: Option<String>,
        timeout: Duration,
    ) -> Self {
        GitCommand {
            isolated: true,
            ..GitCommand::new(args, working_directory, timeout)
        }
    }

    /// Sends `credential` to the HTTP(S) server of `url` only, and isolates the run. Returns
    /// `false` (and changes nothing) for other remotes, which get no credential.
    pub fn authenticate(&mut self, credential: &Credential, url: &str) -> bool {
        let Some(origin) = remote::http_origin(url) else {
            return false;
        };
        self.isolated = true;
        self.config.push((
            format!("http.{origin}.extraHeader"),
            format!("Authorization: Basic {}", credential.basic()),
        ));
        self.needles.extend(credential.needles());
        true
    }

    /// The environment for git: the sandbox's variables unless the run is isolated, then what
    /// keeps git non-interactive and predictable, then this run's configuration.
    fn environment(&self, sandbox: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env = if self.isolated {
            // Only the driver's fixed variables (PATH, HOME, …) and those below: no proxies,
            // no GIT_SSL_NO_VERIFY, GIT_ASKPASS, GIT_DIR or GIT_TRACE from the sandbox.
            BTreeMap::new()
        } else {
            sandbox.clone()
        };
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
        if self.isolated {
            // `$HOME/.gitconfig` is the sandbox's own file; /etc/gitconfig is not ours either.
            env.insert("GIT_CONFIG_NOSYSTEM".into(), "1".into());
            env.insert("GIT_CONFIG_GLOBAL".into(), "/dev/null".into());
        }
        env.extend(self.env.clone());
        let mut config: Vec<(String, String)> = vec![
            ("protocol.ext.allow".into(), "never".into()),
            ("core.quotePath".into(), "false".into()),
            ("color.ui".into(), "never".into()),
            ("core.pager".into(), "cat".into()),
        ];
        if self.isolated {
            config.extend(
                ISOLATED_CONFIG
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
        }
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
    let live = if buffered { sink() } else { output.clone() };
    let mut exec = env
        .driver_of(record)?
        .exec(
            record.driver_handle(),
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
        send_output(&output, &exec).await;
    }
    Ok(GitResult { exec })
}

/// An output channel whose chunks nobody reads: they are dropped.
pub(crate) fn sink() -> OutputTx {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    tx
}

/// Sends a finished run's (already redacted) stdout and stderr to `output`, each in one chunk.
pub(super) async fn send_output(output: &OutputTx, exec: &ExecResult) {
    for (stream, text) in [
        (Stream::Stdout, &exec.stdout),
        (Stream::Stderr, &exec.stderr),
    ] {
        if !text.is_empty() {
            // Followers are optional: a closed channel only means nobody listens.
            let _ = output
                .send((stream, Bytes::copy_from_slice(text.as_bytes())))
                .await;
        }
    }
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
    let root = match env.driver_of(record) {
        Ok(driver) => driver.workspace_root(record.driver_handle()),
        Err(_) => return url.to_string(),
    };
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

    fn config_of(env: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let n: usize = env["GIT_CONFIG_COUNT"].parse().unwrap();
        (0..n)
            .map(|i| {
                (
                    env[&format!("GIT_CONFIG_KEY_{i}")].clone(),
                    env[&format!("GIT_CONFIG_VALUE_{i}")].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn credentials_are_scoped_isolated_and_redacted() {
        let mut c = GitCommand::new(vec!["clone".into()], None, Duration::from_secs(5));
        let cred = Credential {
            token: "tok/en+1".into(),
            user: TOKEN_USER.into(),
        };
        assert!(c.authenticate(&cred, "https://git.example.com/a/r.git"));
        assert!(c.isolated);
        let env = c.environment(&BTreeMap::from([
            ("GIT_TRACE_CURL".into(), "1".into()),
            ("HTTPS_PROXY".into(), "http://evil:1".into()),
            ("GIT_SSL_NO_VERIFY".into(), "1".into()),
            (
                "GIT_CONFIG_PARAMETERS".into(),
                "'core.hooksPath'='/x'".into(),
            ),
        ]));
        for k in [
            "GIT_TRACE_CURL",
            "HTTPS_PROXY",
            "GIT_SSL_NO_VERIFY",
            "GIT_CONFIG_PARAMETERS",
        ] {
            assert!(!env.contains_key(k), "{k} reached an isolated run");
        }
        assert_eq!(env["GIT_CONFIG_NOSYSTEM"], "1");
        assert_eq!(env["GIT_CONFIG_GLOBAL"], "/dev/null");
        let config = config_of(&env);
        assert!(
            config
                .iter()
                .any(|(k, v)| k == "http.https://git.example.com/.extraHeader"
                    && v.starts_with("Authorization: Basic "))
        );
        for (key, value) in ISOLATED_CONFIG {
            assert!(config.iter().any(|(k, v)| k == key && v == value), "{key}");
        }
        let text = format!("x tok/en+1 y {} z tok%2Fen%2B1", cred.basic());
        assert_eq!(redact(&text, &c.needles), "x *** y *** z ***");
        // No header for a non-HTTP remote, and the run stays as it was.
        let mut local = GitCommand::new(vec![], None, Duration::from_secs(5));
        assert!(!local.authenticate(&cred, "/workspace/r.git"));
        assert!(local.config.is_empty() && !local.isolated);
    }

    #[test]
    fn plain_runs_keep_the_sandbox_variables() {
        let c = GitCommand::new(vec!["status".into()], None, Duration::from_secs(5));
        let env = c.environment(&BTreeMap::from([("MY_VAR".into(), "1".into())]));
        assert_eq!(env["MY_VAR"], "1");
        assert!(!env.contains_key("GIT_CONFIG_GLOBAL"));
        assert!(
            !config_of(&env)
                .iter()
                .any(|(k, _)| k == "credential.helper")
        );
    }
}
