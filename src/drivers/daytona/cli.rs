//! Running the `daytona` CLI: argv only (no shell), a fixed environment (the API URL and key,
//! a minimal `PATH` and `HOME`, never a caller's variable), at most `max_concurrent` processes
//! at once, each killed (its whole process group) at its deadline or on cancel; and telling
//! the CLI's failures apart: no such sandbox, a sandbox that is not started, Daytona
//! unavailable (CLI missing, not logged in, server unreachable), anything else.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::drivers::Health;

/// `PATH` of the CLI process (it runs no other program; the directory of a bare name is found
/// on the server's own `PATH` at start-up).
const CLI_PATH_VAR: &str = "/usr/local/bin:/usr/bin:/bin";

/// Most bytes read from one CLI process per stream (exec results are bounded by the wrapper's
/// own limit; this only guards the server against a misbehaving CLI).
const MAX_CLI_OUTPUT: usize = 256 << 20;

/// How the CLI is run.
#[derive(Clone)]
pub struct CliSettings {
    pub program: PathBuf,
    pub api_url: Option<String>,
    pub api_key: Option<String>,
    pub home: PathBuf,
    pub max_concurrent: usize,
}

impl std::fmt::Debug for CliSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliSettings")
            .field("program", &self.program)
            .field("api_url", &self.api_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("home", &self.home)
            .field("max_concurrent", &self.max_concurrent)
            .finish()
    }
}

/// What one CLI run printed and how it ended.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The CLI's error message: stderr without cobra's `Error: ` prefix, else stdout.
    pub fn message(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            String::from_utf8_lossy(&self.stdout).into_owned()
        } else {
            self.stderr.clone()
        };
        let line = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .find(|l| l.starts_with("Error:"))
            .or_else(|| text.lines().map(str::trim).find(|l| !l.is_empty()))
            .unwrap_or("")
            .to_string();
        let line = line
            .strip_prefix("Error:")
            .unwrap_or(&line)
            .trim()
            .to_string();
        let mut end = line.len().min(500);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line[..end].to_string()
    }
}

/// Why a CLI run gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The CLI cannot be started (missing, not executable).
    #[error("the daytona CLI `{program}` cannot be started: {error}")]
    Missing { program: String, error: String },
    /// It did not finish before its deadline and was killed.
    #[error("the daytona CLI did not answer within {0}s and was killed")]
    TimedOut(u64),
    /// The caller cancelled; the CLI was killed.
    #[error("cancelled")]
    Cancelled,
    #[error("cannot run the daytona CLI: {0}")]
    Io(String),
}

/// What a failed CLI run means.
#[derive(Debug, PartialEq)]
pub enum Failure {
    /// The sandbox (or what was named) does not exist.
    NotFound,
    /// The sandbox exists but is not started (stopped, archived, …): start it and try again.
    NotStarted,
    /// Starting or stopping right now: wait and try again.
    Busy,
    /// Daytona cannot be reached or refused our credentials: worth retrying later.
    Unavailable,
    /// Anything else.
    Other,
}

/// Classifies a failed run by the CLI's message. The CLI prints the API's error text (or Go's
/// transport error) after `Error:` and exits 1, so the message is all there is to go on.
pub fn classify(message: &str) -> Failure {
    let m = message.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    // A sandbox's name or id may contain digits, so status codes only count with their text.
    if any(&[
        "is stopped",
        "is archived",
        "is archiving",
        "is paused",
        "not running (state",
    ]) {
        Failure::NotStarted
    } else if any(&[
        "is starting",
        "is stopping",
        "is being created",
        "is resuming",
    ]) {
        Failure::Busy
    } else if any(&["not found", "does not exist", "has been destroyed"]) {
        Failure::NotFound
    } else if any(&[
        "connection refused",
        "dial tcp",
        "no such host",
        "i/o timeout",
        "connection reset",
        "timeout awaiting",
        "tls handshake",
        ": eof",
        "unexpected eof",
        "bad gateway",
        "service unavailable",
        "gateway timeout",
        "unauthorized",
        "forbidden",
        "daytona login",
        "not logged in",
        "no active profile",
        "api key",
        "server unreachable",
    ]) {
        Failure::Unavailable
    } else {
        Failure::Other
    }
}

/// The CLI, shared by every call of the driver.
#[derive(Debug)]
pub struct Cli {
    settings: CliSettings,
    permits: Arc<Semaphore>,
    /// 0: unknown, 1: answered, 2: unavailable.
    available: AtomicU8,
    unavailable_total: AtomicU64,
}

impl Cli {
    pub fn new(settings: CliSettings) -> Cli {
        Cli {
            permits: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
            settings,
            available: AtomicU8::new(0),
            unavailable_total: AtomicU64::new(0),
        }
    }

    pub fn health(&self) -> Health {
        Health {
            available: match self.available.load(Ordering::Relaxed) {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
            unavailable_total: self.unavailable_total.load(Ordering::Relaxed),
        }
    }

    /// Records that Daytona answered (any answer but "unavailable").
    pub fn saw_answer(&self) {
        self.available.store(1, Ordering::Relaxed);
    }

    /// Records that Daytona could not be reached.
    pub fn saw_unavailable(&self) {
        self.available.store(2, Ordering::Relaxed);
        self.unavailable_total.fetch_add(1, Ordering::Relaxed);
    }

    /// The fixed environment of every CLI process.
    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), CLI_PATH_VAR.into()),
            ("HOME".into(), self.settings.home.clone().into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        if let Some(url) = &self.settings.api_url {
            env.push(("DAYTONA_API_URL".into(), url.into()));
        }
        if let Some(key) = &self.settings.api_key {
            env.push(("DAYTONA_API_KEY".into(), key.into()));
        }
        env
    }

    /// Runs the CLI with `args` until it exits, `timeout` passes or `cancel` fires.
    pub async fn run(
        &self,
        args: &[String],
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<CliOutput, CliError> {
        let _permit = tokio::select! {
            permit = self.permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = cancel.cancelled() => return Err(CliError::Cancelled),
        };
        let mut command = tokio::process::Command::new(&self.settings.program);
        command
            .args(args)
            .env_clear()
            .envs(self.environment())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                self.saw_unavailable();
                return Err(CliError::Missing {
                    program: self.settings.program.display().to_string(),
                    error: e.to_string(),
                });
            }
        };
        let pid = child.id();
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let read_out = async move {
            let mut buf = Vec::new();
            let _ = (&mut stdout)
                .take(MAX_CLI_OUTPUT as u64)
                .read_to_end(&mut buf)
                .await;
            buf
        };
        let read_err = async move {
            let mut buf = Vec::new();
            let _ = (&mut stderr)
                .take(MAX_CLI_OUTPUT as u64)
                .read_to_end(&mut buf)
                .await;
            buf
        };
        let finished = async {
            let (out, err, status) = tokio::join!(read_out, read_err, child.wait());
            (out, err, status)
        };
        let outcome = tokio::select! {
            done = finished => Ok(done),
            () = tokio::time::sleep(timeout) => Err(CliError::TimedOut(timeout.as_secs())),
            () = cancel.cancelled() => Err(CliError::Cancelled),
        };
        match outcome {
            Ok((out, err, status)) => {
                let status = status.map_err(|e| CliError::Io(e.to_string()))?;
                Ok(CliOutput {
                    code: status.code(),
                    stdout: out,
                    stderr: String::from_utf8_lossy(&err).into_owned(),
                })
            }
            Err(e) => {
                // The whole group: the CLI and anything it started.
                if let Some(pid) = pid {
                    // SAFETY: kill(2) with a negative pid signals the process group the child
                    // leads (it was made a group leader with `process_group(0)`).
                    unsafe {
                        libc::kill(-(pid as i32), libc::SIGKILL);
                    }
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_told_apart_by_the_clis_message() {
        for (message, failure) in [
            ("Sandbox with ID or name sb-1 not found", Failure::NotFound),
            (
                "sandbox is stopped. Start it with: daytona sandbox start sb-1",
                Failure::NotStarted,
            ),
            (
                "sandbox is starting. Please wait for it to be ready",
                Failure::Busy,
            ),
            (
                "Get \"http://127.0.0.1:3000/api/sandbox\": dial tcp 127.0.0.1:3000: connect: connection refused",
                Failure::Unavailable,
            ),
            (
                "Unauthorized - run 'daytona login' to reauthenticate",
                Failure::Unavailable,
            ),
            ("unknown flag: --force", Failure::Other),
            (
                "Sandbox with ID or name sb-0d2401424a334b63 not found",
                Failure::NotFound,
            ),
            ("Get \"http://d/api/sandbox\": EOF", Failure::Unavailable),
        ] {
            assert_eq!(classify(message), failure, "{message}");
        }
    }

    #[test]
    fn the_message_drops_cobras_prefix() {
        let out = CliOutput {
            code: Some(1),
            stdout: Vec::new(),
            stderr: "Error: sandbox is stopped\n".into(),
        };
        assert_eq!(out.message(), "sandbox is stopped");
    }

    #[test]
    fn the_key_is_not_printed() {
        let settings = CliSettings {
            program: "daytona".into(),
            api_url: Some("http://d:3000/api".into()),
            api_key: Some("dtn_secret".into()),
            home: "/root".into(),
            max_concurrent: 1,
        };
        assert!(!format!("{settings:?}").contains("dtn_secret"));
    }
}
