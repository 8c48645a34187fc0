//! The daytona driver: sandboxes on a self-hosted Daytona, driven through its `daytona` CLI
//! (the contract of the CLI's `create`, `info`, `list`, `delete`, `start`, `exec` and `version`,
//! v0.135 and later).
//!
//! - `cli.rs` runs the CLI (argv only, fixed environment, concurrency limit, deadlines) and
//!   tells its failures apart;
//! - `wrapper.rs` carries a command through `daytona exec` with nothing of the caller's in the
//!   joined command line, and brings back its exit code, stdout and stderr separately;
//! - `files.rs` performs file operations as wrapper commands;
//! - `state.rs` reads Daytona's `Sandbox` JSON and maps its states onto our statuses.
//!
//! A sandbox is created under Daytona's name `<our id>` (unique and stable, so a re-run after a
//! crash finds it) and called by Daytona's own id afterwards (the handle). A call to a stopped
//! sandbox starts it first. Daytona unreachable, the CLI missing or not logged in are
//! [`DriverError::Unavailable`] (the queue retries with backoff); a CLI that does not answer in
//! time is killed.

mod cli;
mod files;
mod snapshot;
mod state;
pub mod wrapper;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use self::cli::{Cli, CliError, CliOutput, CliSettings, Failure, classify};
pub use self::state::{DAYTONA_STATES, status_of};
use self::wrapper::{Frame, TooLarge, Wrapped};
use super::files::{FileOp, FileRequest, FileResult};
use super::{
    Capabilities, Created, Driver, DriverError, ExecIo, ExecRequest, ExecResult, Health,
    LimitReport, Program, SandboxLimits, SandboxSpec, languages,
};
use crate::config::Config;
use crate::output::Stream;

/// Extra seconds Daytona's own exec timeout and the CLI's deadline get beyond a command's
/// timeout, so that the wrapper's `timeout` (which reports what the command printed) fires
/// first.
const GRACE: Duration = Duration::from_secs(10);

/// Settings of the daytona driver.
#[derive(Clone, Debug)]
pub struct DaytonaConfig {
    pub cli: CliSettingsPublic,
    pub snapshot: Option<String>,
    pub target: Option<String>,
    /// Longest one CLI call may take beyond a command's own timeout.
    pub command_timeout: Duration,
    /// The directory in each sandbox that callers see as `/workspace`.
    pub workspace_dir: String,
}

/// How to run the CLI (the API key is redacted from `Debug`).
pub type CliSettingsPublic = CliSettings;

impl DaytonaConfig {
    /// The `[daytona]` section. A bare CLI name is resolved on the server's `PATH` now, since
    /// the CLI itself runs with a minimal one.
    pub fn from_config(config: &Config) -> anyhow::Result<DaytonaConfig> {
        let d = &config.daytona;
        let program = PathBuf::from(&d.cli_path);
        let program = if program.components().count() == 1 {
            let dirs: Vec<PathBuf> = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default();
            // Not found: kept as is, and reported by `/readyz` (Daytona may be installed later).
            languages::find_program(&d.cli_path, &dirs).unwrap_or(program)
        } else {
            program
        };
        let home = if d.cli_home.is_empty() {
            std::env::var_os("HOME").map_or_else(|| config.data_dir.clone(), PathBuf::from)
        } else {
            PathBuf::from(&d.cli_home)
        };
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        if let Some(snapshot) = nonempty(&d.snapshot) {
            check_snapshot("daytona.snapshot", &snapshot).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(DaytonaConfig {
            cli: CliSettings {
                program,
                api_url: nonempty(&d.api_url),
                api_key: nonempty(&d.api_key),
                home,
                max_concurrent: d.max_concurrent_cli,
            },
            snapshot: nonempty(&d.snapshot),
            target: nonempty(&d.target),
            command_timeout: Duration::from_secs(d.command_timeout_s),
            workspace_dir: d.workspace_dir.trim_end_matches('/').to_string(),
        })
    }
}

/// A snapshot name goes to the CLI as one flag value: letters, digits and `._-:/@`, not
/// starting with `-`.
fn check_snapshot(field: &'static str, name: &str) -> Result<(), DriverError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DriverError::invalid(
            field,
            format!(
                "{field} `{name}` is not a snapshot name (letters, digits and ._-:/@, not \
                 starting with -)"
            ),
        ))
    }
}

/// The daytona driver.
#[derive(Debug)]
pub struct DaytonaDriver {
    cli: Cli,
    config: DaytonaConfig,
    /// `daytona version`, once it has answered.
    version: std::sync::RwLock<Option<String>>,
}

impl DaytonaDriver {
    /// Builds the driver and asks the CLI its version; a CLI that is missing or failing is
    /// reported by `/readyz`, not fatal (Daytona may come up later).
    pub async fn start(config: DaytonaConfig) -> DaytonaDriver {
        let driver = DaytonaDriver {
            cli: Cli::new(config.cli.clone()),
            config,
            version: std::sync::RwLock::new(None),
        };
        match driver.refresh_version().await {
            Ok(version) => tracing::info!(cli = %driver.config.cli.program.display(),
                version = %version, api_url = ?driver.config.cli.api_url, "daytona driver ready"),
            Err(e) => tracing::warn!(error = %e,
                "the daytona CLI did not answer `daytona version`; sandboxes on Daytona are \
                 unavailable until it does"),
        }
        driver
    }

    async fn refresh_version(&self) -> Result<String, DriverError> {
        let out = self
            .cli_call(&["version".into()], Duration::from_secs(10))
            .await?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        *self.version.write().expect("not poisoned") = Some(version.clone());
        Ok(version)
    }

    /// Runs one CLI call that is not an `exec`, turning failures to start or answer into
    /// driver errors (a non-zero exit is returned for the caller to read).
    async fn cli_call(&self, args: &[String], timeout: Duration) -> Result<CliOutput, DriverError> {
        self.cli_call_cancellable(args, timeout, &CancellationToken::new())
            .await
    }

    async fn cli_call_cancellable(
        &self,
        args: &[String],
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<CliOutput, DriverError> {
        match self.cli.run(args, timeout, cancel).await {
            Ok(out) => {
                if !out.success() && classify(&out.message()) == Failure::Unavailable {
                    self.cli.saw_unavailable();
                } else {
                    self.cli.saw_answer();
                }
                Ok(out)
            }
            Err(e @ CliError::Missing { .. }) => Err(DriverError::Unavailable(e.to_string())),
            Err(e @ CliError::TimedOut(_)) => {
                self.cli.saw_unavailable();
                Err(DriverError::Unavailable(format!(
                    "{e} (daytona {}; daytona.command_timeout_s)",
                    args.first().map_or("", String::as_str)
                )))
            }
            Err(CliError::Cancelled) => Err(DriverError::Internal("cancelled".into())),
            Err(e @ CliError::Io(_)) => Err(DriverError::Unavailable(e.to_string())),
        }
    }

    /// The error of a failed non-exec call about sandbox `handle`.
    fn failure(&self, what: &str, handle: &str, out: &CliOutput) -> DriverError {
        let message = out.message();
        match classify(&message) {
            Failure::NotFound => DriverError::NotFound(handle.to_string()),
            Failure::Unavailable => DriverError::Unavailable(format!("daytona {what}: {message}")),
            Failure::Busy => DriverError::Unavailable(format!(
                "sandbox `{handle}` is busy on Daytona: {message}"
            )),
            Failure::NotStarted | Failure::Other => {
                DriverError::Internal(format!("daytona {what} {handle} failed: {message}"))
            }
        }
    }

    /// `info ID -f json`; `None` when Daytona has no such sandbox.
    async fn info(&self, handle: &str) -> Result<Option<state::Sandbox>, DriverError> {
        let out = self
            .cli_call(
                &["info".into(), handle.into(), "-f".into(), "json".into()],
                self.config.command_timeout,
            )
            .await?;
        if !out.success() {
            return match self.failure("info", handle, &out) {
                DriverError::NotFound(_) => Ok(None),
                other => Err(other),
            };
        }
        serde_json::from_slice(&out.stdout).map(Some).map_err(|e| {
            DriverError::Internal(format!(
                "daytona info printed JSON the driver cannot read: {e}"
            ))
        })
    }

    /// `start ID`, for a call that found its sandbox stopped.
    async fn start_sandbox(&self, handle: &str) -> Result<(), DriverError> {
        tracing::info!(
            sandbox = handle,
            "starting a stopped Daytona sandbox for a call"
        );
        let out = self
            .cli_call(
                &["start".into(), handle.into()],
                self.config.command_timeout,
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(self.failure("start", handle, &out))
        }
    }

    /// Runs `w` in sandbox `handle` through the wrapper. A stopped sandbox is started and the
    /// call made again; Daytona still starting or stopping is waited for a little.
    async fn run_wrapped(
        &self,
        handle: &str,
        w: &Wrapped<'_>,
        cancel: &CancellationToken,
    ) -> Result<Ran, DriverError> {
        let line = wrapper::command_line(w).map_err(|e| match e {
            TooLarge::Argument => DriverError::invalid(
                "command",
                format!(
                    "one argument, variable or the command is over the daytona driver's {} KiB \
                     limit per argument",
                    wrapper::MAX_ARG / 1024 * 3 / 4
                ),
            ),
            TooLarge::Total => DriverError::invalid(
                "command",
                format!(
                    "the command, its environment and stdin together are over the daytona \
                     driver's {} KiB limit",
                    wrapper::MAX_TOTAL / 1024 * 3 / 4
                ),
            ),
        })?;
        let mut args = vec![
            "exec".to_string(),
            handle.to_string(),
            "--timeout".to_string(),
            (w.timeout_s + GRACE.as_secs()).to_string(),
            "--".to_string(),
        ];
        args.extend(line);
        let deadline = Duration::from_secs(w.timeout_s) + GRACE + self.config.command_timeout;
        let mut started_it = false;
        for attempt in 0..5 {
            let began = Instant::now();
            let out = match self.cli.run(&args, deadline, cancel).await {
                Ok(out) => out,
                Err(CliError::Cancelled) => {
                    self.kill_command(handle, &w.nonce).await;
                    return Ok(Ran::Cancelled(began.elapsed()));
                }
                Err(CliError::TimedOut(s)) => {
                    // The command's own timeout should have ended it long before: Daytona
                    // itself does not answer.
                    self.cli.saw_unavailable();
                    self.kill_command(handle, &w.nonce).await;
                    return Err(DriverError::Timeout(format!(
                        "daytona did not answer within {s}s (the command's timeout of {}s, \
                         plus {}s); the command may have run in the sandbox",
                        w.timeout_s,
                        s - w.timeout_s
                    )));
                }
                Err(e @ CliError::Missing { .. }) | Err(e @ CliError::Io(_)) => {
                    return Err(DriverError::Unavailable(e.to_string()));
                }
            };
            let duration = began.elapsed();
            if let Some(frame) = wrapper::parse(&out.stdout, &w.nonce) {
                self.cli.saw_answer();
                return match frame {
                    Frame::Ran { .. } => Ok(Ran::Frame(frame, duration)),
                    Frame::NoWorkingDirectory => Err(DriverError::invalid(
                        "working_directory",
                        "working_directory does not exist in the sandbox",
                    )),
                    Frame::Setup => Err(DriverError::Internal(
                        "the sandbox has no writable /tmp for the driver's wrapper".into(),
                    )),
                };
            }
            let message = out.message();
            match classify(&message) {
                Failure::NotStarted if !started_it => {
                    self.cli.saw_answer();
                    self.start_sandbox(handle).await?;
                    started_it = true;
                }
                Failure::Busy if attempt < 4 => {
                    self.cli.saw_answer();
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Failure::NotFound => {
                    self.cli.saw_answer();
                    return Err(DriverError::NotFound(handle.to_string()));
                }
                Failure::Unavailable => {
                    self.cli.saw_unavailable();
                    return Err(DriverError::Unavailable(format!("daytona exec: {message}")));
                }
                _ if message.contains("execution timeout") => {
                    self.cli.saw_answer();
                    return Err(DriverError::Timeout(format!(
                        "Daytona's toolbox ended the command at its timeout: {message}"
                    )));
                }
                _ => {
                    self.cli.saw_answer();
                    return Err(DriverError::Internal(format!(
                        "daytona exec in {handle} gave no result (exit {:?}): {message}",
                        out.code
                    )));
                }
            }
        }
        Err(DriverError::Unavailable(format!(
            "sandbox `{handle}` did not become ready on Daytona"
        )))
    }

    /// Kills what a cancelled or abandoned call left running in the sandbox (best effort).
    async fn kill_command(&self, handle: &str, nonce: &str) {
        let mut args = vec![
            "exec".to_string(),
            handle.to_string(),
            "--timeout".to_string(),
            "10".to_string(),
            "--".to_string(),
        ];
        args.extend(wrapper::killer_line(nonce));
        let timeout = self.config.command_timeout.min(Duration::from_secs(30));
        if let Err(e) = self
            .cli
            .run(&args, timeout, &CancellationToken::new())
            .await
        {
            tracing::warn!(sandbox = handle, error = %e,
                "cannot kill a cancelled command in a Daytona sandbox");
        }
    }

    /// Runs one of the driver's constant scripts (`sh -c SCRIPT _ ARGS…`, the caller's values
    /// only as arguments) through the wrapper, from `/`, without the sandbox's variables.
    async fn run_script(
        &self,
        handle: &str,
        script: &'static str,
        args: &[&[u8]],
        stdin: &[u8],
        output_limit: usize,
        timeout: Duration,
    ) -> Result<Ran, DriverError> {
        let mut argv: Vec<&[u8]> = vec![b"sh", b"-c", script.as_bytes(), b"_"];
        argv.extend_from_slice(args);
        let w = Wrapped {
            nonce: nonce(),
            cwd: "/",
            output_limit,
            timeout_s: timeout.as_secs().max(1),
            env: Vec::new(),
            stdin,
            code: None,
            argv,
        };
        self.run_wrapped(handle, &w, &CancellationToken::new())
            .await
    }

    /// Runs the file script with `args` (and `stdin`), returning its stdout; a non-zero exit
    /// becomes the error [`files::error`] names.
    async fn file_script(
        &self,
        handle: &str,
        args: &[&[u8]],
        stdin: &[u8],
        output_limit: usize,
        timeout: Duration,
        shown_path: &str,
    ) -> Result<Vec<u8>, DriverError> {
        let field = "file_path";
        match self
            .run_script(handle, files::FILES, args, stdin, output_limit, timeout)
            .await?
        {
            Ran::Frame(
                Frame::Ran {
                    exit_code: 0,
                    stdout,
                    stdout_total,
                    ..
                },
                _,
            ) => {
                if stdout_total > stdout.len() as u64 {
                    return Err(DriverError::LimitExceeded(format!(
                        "`{shown_path}` is larger than file_operation's limit"
                    )));
                }
                Ok(stdout)
            }
            Ran::Frame(
                Frame::Ran {
                    timed_out: true, ..
                },
                _,
            ) => Err(DriverError::Timeout(format!(
                "the file operation on `{shown_path}` timed out"
            ))),
            Ran::Frame(
                Frame::Ran {
                    exit_code, stderr, ..
                },
                _,
            ) => Err(files::error(
                exit_code,
                field,
                shown_path,
                &String::from_utf8_lossy(&stderr),
            )),
            _ => Err(DriverError::Internal(
                "the file operation was cut off".into(),
            )),
        }
    }

    fn root(&self) -> &str {
        &self.config.workspace_dir
    }

    /// Runs the snapshot script with `args` (and `stdin`), returning its stdout; a non-zero
    /// exit is an error naming what failed.
    async fn snapshot_script(
        &self,
        handle: &str,
        args: &[&[u8]],
        stdin: &[u8],
        output_limit: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, DriverError> {
        match self
            .run_script(
                handle,
                snapshot::SNAPSHOT,
                args,
                stdin,
                output_limit,
                timeout,
            )
            .await?
        {
            Ran::Frame(
                Frame::Ran {
                    timed_out: true, ..
                },
                _,
            ) => Err(DriverError::Timeout(
                "the snapshot did not finish within the call's timeout".into(),
            )),
            Ran::Frame(
                Frame::Ran {
                    exit_code: 0,
                    stdout,
                    stdout_total,
                    ..
                },
                _,
            ) if stdout_total <= stdout.len() as u64 => Ok(stdout),
            Ran::Frame(
                Frame::Ran {
                    exit_code, stderr, ..
                },
                _,
            ) => {
                let what = match exit_code {
                    20 => "packing the sandbox's files with tar failed",
                    21 => "the sandbox cannot store the snapshot (is /tmp full?)",
                    22 | 23 => "unpacking the snapshot in the sandbox failed; nothing was changed",
                    24 => "replacing the sandbox's files failed part way",
                    _ => "the snapshot script failed",
                };
                Err(DriverError::Internal(format!(
                    "{what} (exit {exit_code}): {}",
                    String::from_utf8_lossy(&stderr).trim()
                )))
            }
            _ => Err(DriverError::Internal("the snapshot was cut off".into())),
        }
    }
}

/// What a wrapped command came to.
enum Ran {
    Frame(Frame, Duration),
    Cancelled(Duration),
}

/// A fresh nonce for one wrapped call.
fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[async_trait]
impl Driver for DaytonaDriver {
    fn name(&self) -> &'static str {
        "daytona"
    }

    /// Daytona answers a listing with our credentials (and the CLI its version, once).
    async fn check(&self) -> Result<(), DriverError> {
        if self.version.read().expect("not poisoned").is_none() {
            self.refresh_version().await?;
        }
        let timeout = self.config.command_timeout.min(Duration::from_secs(10));
        let out = self
            .cli_call(
                &[
                    "list".into(),
                    "-f".into(),
                    "json".into(),
                    "-l".into(),
                    "1".into(),
                ],
                timeout,
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(DriverError::Unavailable(format!(
                "daytona list: {}",
                out.message()
            )))
        }
    }

    fn details(&self) -> serde_json::Value {
        json!({
            "cli": self.config.cli.program.display().to_string(),
            "cli_version": *self.version.read().expect("not poisoned"),
            "api_url": self.config.cli.api_url,
            "api_key_configured": self.config.cli.api_key.is_some(),
            "snapshot": self.config.snapshot,
            "target": self.config.target,
        })
    }

    fn health(&self) -> Health {
        self.cli.health()
    }

    fn enforcement(&self) -> serde_json::Value {
        json!({
            "isolation": "daytona",
            "resources": "cpu, memory and disk are set on the Daytona sandbox at creation and \
                enforced by Daytona",
            "network": "without network access the sandbox is created with \
                --network-block-all, enforced by Daytona",
            "streams": "stdout and stderr are kept apart by the driver's wrapper; output \
                arrives when the command ends",
        })
    }

    fn timeout_enforcement(&self) -> &'static str {
        "the driver's wrapper kills the command's process group in the sandbox (`timeout`), \
         and Daytona's exec timeout follows"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kills_process_tree: false,
            live_output: false,
            images: true,
            node_local: false,
        }
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Created, DriverError> {
        // A re-run after a crash finds the sandbox it made under our id.
        let existing = self.info(&spec.id).await?;
        let sandbox = match existing {
            Some(sandbox) => sandbox,
            None => {
                let mut args = vec!["create".to_string(), format!("--name={}", spec.id)];
                if let Some(snapshot) = spec.image.as_ref().or(self.config.snapshot.as_ref()) {
                    check_snapshot("image", snapshot)?;
                    args.push(format!("--snapshot={snapshot}"));
                }
                if let Some(target) = &self.config.target {
                    args.push(format!("--target={target}"));
                }
                args.push(format!("--cpu={}", spec.limits.cpus.ceil().max(1.0) as u64));
                args.push(format!(
                    "--memory={}",
                    (spec.limits.memory_bytes >> 20).max(1)
                ));
                if let Some(disk) = spec.limits.disk_bytes {
                    args.push(format!("--disk={}", disk.div_ceil(1 << 30).max(1)));
                }
                if let Some(minutes) = spec.auto_stop_minutes {
                    args.push(format!("--auto-stop={minutes}"));
                }
                if !spec.network {
                    args.push("--network-block-all".into());
                }
                // Our id only: the caller's labels stay in our database (Daytona's label
                // flag splits values on commas).
                args.push(format!("--label=daytona-mcp.sandbox={}", spec.id));
                let out = self
                    .cli_call(
                        &args,
                        self.config.command_timeout + Duration::from_secs(120),
                    )
                    .await?;
                if !out.success() {
                    return Err(match self.failure("create", &spec.id, &out) {
                        DriverError::NotFound(_) => DriverError::invalid(
                            "image",
                            format!("Daytona refused the sandbox: {}", out.message()),
                        ),
                        other => other,
                    });
                }
                self.info(&spec.id).await?.ok_or_else(|| {
                    DriverError::Internal(format!(
                        "daytona create succeeded but info {} finds no sandbox",
                        spec.id
                    ))
                })?
            }
        };
        let handle = sandbox.id.clone();
        // The directory callers see as /workspace.
        let root = self.root().to_string();
        self.file_script(
            &handle,
            &[b"mkdir", root.as_bytes()],
            b"",
            64,
            self.config.command_timeout,
            "/workspace",
        )
        .await?;
        Ok(Created { handle })
    }

    async fn delete(&self, handle: &str) -> Result<(), DriverError> {
        let out = self
            .cli_call(
                &["delete".into(), handle.into()],
                self.config.command_timeout,
            )
            .await?;
        if out.success() {
            return Ok(());
        }
        match self.failure("delete", handle, &out) {
            DriverError::NotFound(_) => Ok(()),
            other => Err(other),
        }
    }

    async fn exists(&self, handle: &str) -> Result<bool, DriverError> {
        Ok(self.info(handle).await?.is_some())
    }

    async fn status(&self, handle: &str) -> Result<Option<String>, DriverError> {
        Ok(self
            .info(handle)
            .await?
            .map(|s| status_of(s.state.as_deref()).to_string()))
    }

    async fn statuses(&self) -> Result<Option<BTreeMap<String, String>>, DriverError> {
        let mut all = BTreeMap::new();
        let mut cursor: Option<String> = None;
        // Bounded: a Daytona that keeps handing out cursors cannot keep a listing forever.
        for _ in 0..1000 {
            let mut args: Vec<String> = vec!["list".into(), "-f".into(), "json".into()];
            if let Some(c) = &cursor {
                args.push("-c".into());
                args.push(c.clone());
            }
            let out = self.cli_call(&args, self.config.command_timeout).await?;
            if !out.success() {
                return Err(self.failure("list", "", &out));
            }
            let page: state::Page = serde_json::from_slice(&out.stdout).map_err(|e| {
                DriverError::Internal(format!(
                    "daytona list printed JSON the driver cannot read: {e}"
                ))
            })?;
            for item in page.items {
                all.insert(item.id, status_of(item.state.as_deref()).to_string());
            }
            match page.next_cursor.filter(|c| !c.is_empty()) {
                Some(next) => cursor = Some(next),
                None => return Ok(Some(all)),
            }
        }
        Ok(Some(all))
    }

    async fn disk_usage(&self, _handle: &str) -> Result<u64, DriverError> {
        Err(DriverError::Unsupported(
            "disk usage is Daytona's to enforce and is not measured".into(),
        ))
    }

    fn workspace_root(&self, _handle: &str) -> String {
        self.root().to_string()
    }

    fn known_disk_usage(&self, _handle: &str) -> Option<u64> {
        None
    }

    fn limits_report(&self, limits: &SandboxLimits) -> BTreeMap<&'static str, LimitReport> {
        let by = |what: &str| format!("daytona: the sandbox's {what}, set at creation");
        BTreeMap::from([
            (
                "memory_bytes",
                LimitReport {
                    value: Some(limits.memory_bytes as f64),
                    enforced_by: by("memory"),
                },
            ),
            (
                "cpus",
                LimitReport {
                    value: Some(limits.cpus.ceil().max(1.0)),
                    enforced_by: by("cpu quota (whole cores)"),
                },
            ),
            (
                "disk_bytes",
                LimitReport {
                    value: limits.disk_bytes.map(|d| d as f64),
                    enforced_by: by("disk size (whole GiB)"),
                },
            ),
        ])
    }

    async fn exec(
        &self,
        handle: &str,
        request: ExecRequest,
        io: ExecIo,
    ) -> Result<ExecResult, DriverError> {
        let relative = match &request.working_directory {
            Some(wd) if !wd.is_empty() => super::paths::sandbox_relative("working_directory", wd)?,
            _ => PathBuf::new(),
        };
        let cwd = files::absolute(self.root(), &relative);
        for (k, v) in &request.env {
            if v.contains('\0') {
                return Err(DriverError::invalid(
                    "env",
                    format!("the value of `{k}` contains a NUL byte"),
                ));
            }
        }
        let (argv, code): (Vec<Vec<u8>>, Option<(&str, &[u8])>) = match &request.program {
            Program::Argv(argv) if argv.is_empty() => {
                return Err(DriverError::invalid("command", "the command is empty"));
            }
            Program::Argv(argv) => (argv.iter().map(|a| a.as_bytes().to_vec()).collect(), None),
            Program::Shell(command) => (
                vec![b"sh".to_vec(), b"-c".to_vec(), command.as_bytes().to_vec()],
                None,
            ),
            Program::Code { language, source } => {
                let (program, args, extension) = languages::first_candidate(language)?;
                let mut argv = vec![program.as_bytes().to_vec()];
                argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
                (argv, Some((extension, source.as_bytes())))
            }
        };
        if argv.iter().any(|a| a.contains(&0)) {
            return Err(DriverError::invalid(
                "command",
                "a NUL byte cannot be passed to the sandbox",
            ));
        }
        let w = Wrapped {
            nonce: nonce(),
            cwd: &cwd,
            output_limit: request.output_limit,
            timeout_s: request.timeout.as_secs_f64().ceil().max(1.0) as u64,
            env: request
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            stdin: request.stdin.as_deref().unwrap_or(b""),
            code,
            argv: argv.iter().map(Vec::as_slice).collect(),
        };
        let ran = match self.run_wrapped(handle, &w, &io.cancel).await {
            Err(DriverError::InvalidArgument {
                field: "working_directory",
                ..
            }) => {
                return Err(DriverError::invalid(
                    "working_directory",
                    format!(
                        "working_directory `{}` does not exist in the sandbox",
                        request.working_directory.as_deref().unwrap_or("")
                    ),
                ));
            }
            other => other?,
        };
        match ran {
            Ran::Cancelled(duration) => Ok(ExecResult {
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                truncated: false,
                timed_out: false,
                cancelled: true,
                limit_exceeded: None,
                duration,
            }),
            Ran::Frame(
                Frame::Ran {
                    exit_code,
                    timed_out,
                    stdout_total,
                    stderr_total,
                    stdout,
                    stderr,
                },
                duration,
            ) => {
                // Followers get the output once, when the command has ended.
                for (stream, bytes) in [(Stream::Stdout, &stdout), (Stream::Stderr, &stderr)] {
                    if !bytes.is_empty() {
                        let _ = io
                            .output
                            .send((stream, Bytes::copy_from_slice(bytes)))
                            .await;
                    }
                }
                Ok(ExecResult {
                    exit_code: (!timed_out).then_some(exit_code),
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                    truncated: stdout_total > stdout.len() as u64
                        || stderr_total > stderr.len() as u64,
                    timed_out,
                    cancelled: false,
                    limit_exceeded: None,
                    duration,
                })
            }
            Ran::Frame(_, _) => Err(DriverError::Internal("the wrapper gave no result".into())),
        }
    }

    async fn export_files(
        &self,
        handle: &str,
        tar: &std::path::Path,
        timeout: Duration,
    ) -> Result<crate::drivers::archive::Summary, DriverError> {
        use std::io::Write;
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let remote = format!("/tmp/dmcp-snapshot-{}.tar", nonce());
        let (root, t) = (self.root().as_bytes(), remote.as_bytes());
        let out = self
            .snapshot_script(handle, &[b"pack", root, t], &[], 64, left())
            .await?;
        let size = files::number(&out)?;
        let result = async {
            let mut file = std::fs::File::options()
                .append(true)
                .open(tar)
                .map_err(|e| DriverError::internal("cannot write the snapshot", e))?;
            let mut offset: u64 = 0;
            while offset < size {
                let want = snapshot::READ_CHUNK.min((size - offset) as usize);
                let from = (offset + 1).to_string();
                let len = want.to_string();
                let chunk = self
                    .snapshot_script(
                        handle,
                        &[b"chunk", root, t, from.as_bytes(), len.as_bytes()],
                        &[],
                        want,
                        left(),
                    )
                    .await?;
                if chunk.len() != want {
                    return Err(DriverError::Internal(
                        "the sandbox's tar file changed while it was read".into(),
                    ));
                }
                file.write_all(&chunk)
                    .map_err(|e| DriverError::internal("cannot write the snapshot", e))?;
                offset += want as u64;
            }
            file.sync_all()
                .map_err(|e| DriverError::internal("cannot write the snapshot", e))?;
            Ok(())
        }
        .await;
        let _ = self
            .snapshot_script(handle, &[b"rm", root, t], &[], 64, Duration::from_secs(30))
            .await;
        result?;
        let file = std::fs::File::open(tar)
            .map_err(|e| DriverError::internal("cannot read the snapshot", e))?;
        crate::drivers::archive::check(std::io::BufReader::new(file))
    }

    async fn import_files(
        &self,
        handle: &str,
        tar: &std::path::Path,
        _limits: &SandboxLimits,
        timeout: Duration,
    ) -> Result<crate::drivers::archive::Summary, DriverError> {
        use std::io::Read;
        // Checked here too, whatever the caller did: nothing unsafe is sent.
        let file = std::fs::File::open(tar)
            .map_err(|e| DriverError::internal("cannot read the snapshot", e))?;
        let summary = crate::drivers::archive::check(std::io::BufReader::new(file))?;
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let id = nonce();
        let remote = format!("/tmp/dmcp-restore-{id}.tar");
        let (root, t) = (self.root().as_bytes(), remote.as_bytes());
        let mut file = std::fs::File::open(tar)
            .map_err(|e| DriverError::internal("cannot read the snapshot", e))?;
        // Chunks that keep each call's arguments under the command line's limit.
        let per_call = wrapper::MAX_TOTAL / 2 / 4 * 3;
        let mut buf = vec![0u8; per_call];
        let mut first = true;
        let sent = async {
            loop {
                let mut n = 0;
                while n < buf.len() {
                    let got = file
                        .read(&mut buf[n..])
                        .map_err(|e| DriverError::internal("cannot read the snapshot", e))?;
                    if got == 0 {
                        break;
                    }
                    n += got;
                }
                if n == 0 && !first {
                    return Ok(());
                }
                let flag: &[u8] = if first { b"1" } else { b"0" };
                self.snapshot_script(handle, &[b"put", root, t, flag], &buf[..n], 64, left())
                    .await?;
                first = false;
                if n < buf.len() {
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(e) = sent {
            let _ = self
                .snapshot_script(handle, &[b"rm", root, t], &[], 64, Duration::from_secs(30))
                .await;
            return Err(e);
        }
        let staging = format!(".dmcp-restore-{id}");
        self.snapshot_script(
            handle,
            &[b"unpack", root, t, staging.as_bytes()],
            &[],
            64 << 10,
            left(),
        )
        .await?;
        Ok(summary)
    }

    async fn file(
        &self,
        handle: &str,
        request: FileRequest,
        timeout: Duration,
    ) -> Result<FileResult, DriverError> {
        let path = files::absolute(self.root(), &request.path);
        let shown = if request.path.as_os_str().is_empty() {
            "/workspace".to_string()
        } else {
            request.path.display().to_string()
        };
        let p = path.as_bytes();
        let run = |args: Vec<Vec<u8>>, stdin: Vec<u8>, limit: usize| {
            let shown = shown.clone();
            async move {
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                self.file_script(handle, &refs, &stdin, limit, timeout, &shown)
                    .await
            }
        };
        let op = |name: &str| name.as_bytes().to_vec();
        match request.op {
            FileOp::Read { max_bytes } => {
                let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX - 1);
                let out = run(
                    vec![op("read"), p.to_vec(), max_bytes.to_string().into_bytes()],
                    Vec::new(),
                    limit.saturating_add(1),
                )
                .await?;
                Ok(FileResult::Content(out))
            }
            FileOp::Write { content, append } => {
                let temp = if append {
                    String::new()
                } else {
                    format!(".dmcp-write-{}", nonce())
                };
                // Chunks that keep each call's arguments under the command line's limit.
                let per_call = wrapper::MAX_TOTAL / 2 / 4 * 3;
                let chunks: Vec<&[u8]> = if content.is_empty() {
                    vec![&[]]
                } else {
                    content.chunks(per_call).collect()
                };
                let last = chunks.len() - 1;
                let mut size = 0;
                for (i, chunk) in chunks.iter().enumerate() {
                    let result = run(
                        vec![
                            op("put"),
                            p.to_vec(),
                            temp.as_bytes().to_vec(),
                            if i == 0 { op("1") } else { op("0") },
                            if i == last { op("1") } else { op("0") },
                        ],
                        chunk.to_vec(),
                        64,
                    )
                    .await;
                    match result {
                        Ok(out) if i == last => size = files::number(&out)?,
                        Ok(_) => {}
                        Err(e) => {
                            if !temp.is_empty() {
                                let _ = run(
                                    vec![op("abort"), p.to_vec(), temp.as_bytes().to_vec()],
                                    Vec::new(),
                                    64,
                                )
                                .await;
                            }
                            return Err(e);
                        }
                    }
                }
                Ok(FileResult::Written { size })
            }
            FileOp::List { max_entries } => {
                let out = run(vec![op("list"), p.to_vec()], Vec::new(), 256 << 20).await?;
                let mut entries = files::entries(&out)?;
                let truncated = entries.len() > max_entries;
                entries.truncate(max_entries);
                Ok(FileResult::Entries { entries, truncated })
            }
            FileOp::Delete { recursive } => {
                let flag = if recursive { op("1") } else { op("0") };
                let out = run(vec![op("delete"), p.to_vec(), flag], Vec::new(), 64).await?;
                Ok(FileResult::Deleted {
                    removed: files::number(&out)?,
                })
            }
            FileOp::Mkdir => {
                let out = run(vec![op("mkdir"), p.to_vec()], Vec::new(), 64).await?;
                Ok(FileResult::Created {
                    created: files::number(&out)? == 1,
                })
            }
            FileOp::Move { destination } => {
                let to = files::absolute(self.root(), &destination);
                let out = run(
                    vec![op("move"), p.to_vec(), to.into_bytes()],
                    Vec::new(),
                    64,
                )
                .await?;
                Ok(FileResult::Moved {
                    destination: files::moved_to(&out, &request.path, &destination),
                })
            }
            FileOp::Stat => {
                let out = run(vec![op("stat"), p.to_vec()], Vec::new(), 1 << 20).await?;
                let mut entries = files::entries(&out)?;
                let mut entry = entries
                    .pop()
                    .ok_or_else(|| DriverError::Internal("stat printed no entry".into()))?;
                if request.path.as_os_str().is_empty() {
                    entry.name = String::new();
                }
                Ok(FileResult::Stat(entry))
            }
            FileOp::Exists => {
                let out = run(vec![op("exists"), p.to_vec()], Vec::new(), 64).await?;
                Ok(FileResult::Exists(files::exists(&out)))
            }
        }
    }
}
