//! The local driver, the embedded default: each sandbox is a directory under the data dir, and
//! its commands run in a bubblewrap sandbox over it (see `isolation.rs`): one long-lived
//! sandbox per active workspace whose agent starts each command (`persistent.rs`, `agent.rs`,
//! with `local.persistent_sandbox`), or a fresh bubblewrap per command; inside a cgroup where
//! the machine allows one (`cgroup.rs`), under rlimits and a wall-clock timeout
//! (`process.rs`).
//!
//! Layout under the data dir:
//! - `sandboxes/<id>/` — the sandbox's files, seen as `/workspace` inside;
//! - `runtime/` — generated `/etc/passwd`, `/etc/group`, `/etc/hosts` for sandboxes;
//! - `run/<exec>/` — code files handed to interpreters, removed after each call;
//! - `run/agent-<n>/` — a persistent sandbox's code directory (seen as `/.daytona`).

pub mod agent;
mod beneath;
pub mod cgroup;
mod enforcement;
mod files;
pub mod isolation;
mod landlock;

pub mod paths;
mod persistent;
pub mod process;
mod snapshot;
mod spawn;
mod tree;
mod usage;
mod wire;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use self::cgroup::{CgroupLimits, CgroupManager};
use self::isolation::{Bwrap, HOST_ENV, Isolation, Mount, WORKSPACE};
use self::landlock::LandlockPolicy;
use self::process::{Rlimits, Spawn};
use self::usage::UsageCache;
use super::files::{FileOp, FileRequest, FileResult};
use super::languages;
use super::{
    Capabilities, Created, Driver, DriverError, ExecIo, ExecRequest, ExecResult, LimitReport,
    Program, SandboxLimits, SandboxSpec,
};

pub use crate::config::IsolationMode;

/// Limits of every command that are not per sandbox (memory, CPU and disk come with each
/// request, see [`SandboxLimits`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub max_processes: u64,
    pub max_file_size_bytes: u64,
    pub max_open_files: u64,
}

/// Settings of the local driver.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub data_dir: PathBuf,
    pub isolation: IsolationMode,
    /// bubblewrap to use; searched on `PATH` when `None`.
    pub bwrap_path: Option<PathBuf>,
    /// `PATH` inside sandboxes; also where interpreters are looked up.
    pub sandbox_path: String,
    pub limits: Limits,
    /// Use cgroups when the machine allows it.
    pub cgroups: bool,
    /// Under bubblewrap, keep one sandbox per active workspace whose agent starts each
    /// command, instead of a fresh bubblewrap per command.
    pub persistent_sandbox: bool,
    /// The agent binary (the daytona-mcp binary); `None`: the running executable.
    pub agent_path: Option<PathBuf>,
}

/// The local driver.
#[derive(Debug)]
pub struct LocalDriver {
    sandboxes: PathBuf,
    scratch: PathBuf,
    /// Per-sandbox temporary directories (Landlock only).
    tmp: PathBuf,
    isolation: Isolation,
    cgroups: Arc<CgroupManager>,
    sandbox_path: String,
    path_dirs: Vec<PathBuf>,
    /// The shell for `execute_shell` (bash, else sh), found once on the sandbox `PATH`.
    shell: Option<PathBuf>,
    limits: Limits,
    /// Disk usage per sandbox, for quotas and listings.
    usage: Arc<UsageCache>,
    /// Persistent sandboxes, when enabled under bubblewrap.
    residents: Option<persistent::Residents>,
}

pub use self::enforcement::{Enforcement, LandlockReport};

impl LocalDriver {
    /// Prepares the data dir and checks that the requested isolation works on this machine.
    pub fn new(config: LocalConfig) -> Result<LocalDriver, DriverError> {
        let sandboxes = config.data_dir.join("sandboxes");
        let scratch = config.data_dir.join("run");
        let runtime = config.data_dir.join("runtime");
        for dir in [&sandboxes, &scratch] {
            std::fs::create_dir_all(dir).map_err(|e| {
                DriverError::internal(&format!("cannot create {}", dir.display()), e)
            })?;
        }
        snapshot::sweep(&sandboxes);
        // Code files of calls that were running when the server stopped.
        if let Ok(entries) = std::fs::read_dir(&scratch) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let isolation = match config.isolation {
            IsolationMode::None => {
                tracing::warn!(
                    "local.isolation = \"none\": sandboxed commands run on the host as the \
                     server's user, confined only by rlimits and cgroups"
                );
                Isolation::None
            }
            IsolationMode::Bwrap => Isolation::Bwrap(set_up_bwrap(&config, &runtime, &scratch)?),
            IsolationMode::Landlock => {
                Isolation::Landlock(set_up_landlock(&config.data_dir, &scratch)?)
            }
            IsolationMode::Auto => match set_up_bwrap(&config, &runtime, &scratch) {
                Ok(bwrap) => Isolation::Bwrap(bwrap),
                Err(bwrap_error) => {
                    tracing::warn!(error = %bwrap_error, "bubblewrap is not usable; trying Landlock");
                    match set_up_landlock(&config.data_dir, &scratch) {
                        Ok(policy) => Isolation::Landlock(policy),
                        Err(landlock_error) => {
                            return Err(DriverError::Unavailable(format!(
                                "no isolation is available: {bwrap_error}; and {landlock_error}. \
                                 Install bubblewrap, enable Landlock, or set \
                                 local.isolation = \"none\" to run commands without isolation"
                            )));
                        }
                    }
                }
            },
        };
        if let Isolation::Landlock(policy) = &isolation {
            tracing::info!(
                abi = policy.abi(),
                tcp_restricted = policy.restricts_tcp(),
                signals_scoped = policy.scopes_signals(),
                "Landlock isolation: commands see the host's file system, confined to their \
                 sandbox, system directories and a few /etc files, with no capabilities"
            );
        }
        let cgroups = Arc::new(if config.cgroups {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(config.data_dir.as_os_str().as_encoded_bytes());
            let manager = CgroupManager::detect(&hex::encode(&digest[..6]));
            manager.sweep();
            manager
        } else {
            CgroupManager::disabled()
        });
        tracing::info!(isolation = isolation.name(), cgroup = ?cgroups.version(),
            controllers = ?cgroups.controllers(), "local driver ready");
        let path_dirs: Vec<PathBuf> = std::env::split_paths(&config.sandbox_path).collect();
        let residents = match (&isolation, config.persistent_sandbox) {
            (Isolation::Bwrap(_), true) => {
                let agent = match &config.agent_path {
                    Some(path) => path.clone(),
                    None => std::env::current_exe().map_err(|e| {
                        DriverError::internal("cannot find the agent binary (local.agent_path)", e)
                    })?,
                };
                if !agent.is_file() {
                    return Err(DriverError::Unavailable(format!(
                        "the sandbox agent binary {} (local.agent_path) is not a file",
                        agent.display()
                    )));
                }
                Some(persistent::Residents::new(
                    agent,
                    scratch.clone(),
                    config.limits.max_open_files,
                ))
            }
            _ => None,
        };
        Ok(LocalDriver {
            sandboxes,
            scratch,
            tmp: config.data_dir.join("tmp"),
            isolation,
            cgroups,
            shell: languages::find_program("bash", &path_dirs)
                .or_else(|| languages::find_program("sh", &path_dirs)),
            path_dirs,
            sandbox_path: config.sandbox_path,
            limits: config.limits,
            usage: Arc::default(),
            residents,
        })
    }

    /// How limits are enforced on this machine.
    pub fn enforcement_summary(&self) -> Enforcement {
        enforcement::summary(&self.isolation, &self.cgroups)
    }

    /// What `/readyz` warns about: no isolation at all, or Landlock's gaps on this kernel.
    fn isolation_warnings(&self) -> Vec<String> {
        match &self.isolation {
            Isolation::None => vec![
                "local.isolation is \"none\": sandboxed commands run on the host without \
                 namespaces"
                    .to_string(),
            ],
            Isolation::Landlock(policy) => {
                let mut warning = format!(
                    "isolation is Landlock (ABI {}): commands share the host's process list \
                     (/proc shows every host process's command line, other sandboxes' \
                     included, though not their environments or memory) and network \
                     namespace; ",
                    policy.abi()
                );
                warning.push_str(if policy.restricts_tcp() {
                    "TCP is refused without network access, UDP is not restricted"
                } else {
                    "the network is not restricted (Landlock ABI 4 needed)"
                });
                if !policy.scopes_signals() {
                    warning.push_str(
                        "; signals to same-user processes are not blocked (Landlock ABI 6 \
                         needed)",
                    );
                }
                vec![warning]
            }
            Isolation::Bwrap(_) => Vec::new(),
        }
    }

    /// The temporary directory of sandbox `id` under Landlock (outside its files, so that it
    /// neither shows in listings nor ends up in a repository).
    fn tmp_dir(&self, id: &str) -> PathBuf {
        self.tmp.join(id)
    }

    /// The host directory of sandbox `id`.
    pub fn sandbox_dir(&self, id: &str) -> Result<PathBuf, DriverError> {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(DriverError::invalid(
                "sandbox_id",
                format!("invalid sandbox id `{id}`"),
            ));
        }
        Ok(self.sandboxes.join(id))
    }

    /// The program and arguments for `program`, plus the code file to mount (kept in a scratch
    /// directory that lives as long as the returned guard). With `persistent`, the code file is
    /// returned instead (name, source), for the persistent sandbox's code directory.
    fn command(&self, program: &Program, persistent: bool) -> Result<Invocation, DriverError> {
        match program {
            Program::Argv(argv) if argv.is_empty() => {
                Err(DriverError::invalid("command", "the command is empty"))
            }
            Program::Argv(argv) => {
                // A bare program name is looked up on the sandbox `PATH` here: without bubblewrap
                // (which searches `PATH` itself) the command is started with `execve`.
                let mut argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
                if !argv[0].as_encoded_bytes().contains(&b'/') {
                    let name = argv[0].to_string_lossy().into_owned();
                    let found =
                        languages::find_program(&name, &self.path_dirs).ok_or_else(|| {
                            DriverError::Unsupported(format!(
                                "`{name}` is not installed in the sandbox (not on its PATH)"
                            ))
                        })?;
                    argv[0] = found.into();
                }
                Ok(Invocation {
                    argv,
                    mounts: Vec::new(),
                    scratch: None,
                    code: None,
                })
            }
            Program::Shell(command) => {
                let shell = self.shell.as_ref().ok_or_else(|| {
                    DriverError::Unsupported("the sandbox has no shell (bash or sh)".into())
                })?;
                Ok(Invocation {
                    argv: vec![shell.into(), "-c".into(), command.into()],
                    mounts: Vec::new(),
                    scratch: None,
                    code: None,
                })
            }
            Program::Code { language, source } => {
                let interpreter = languages::resolve(language, &self.path_dirs)?;
                let file_name = format!("main.{}", interpreter.extension);
                let mut argv: Vec<OsString> = vec![interpreter.program.into()];
                argv.extend(interpreter.args.into_iter().map(OsString::from));
                if persistent {
                    argv.push(format!("{}/{file_name}", persistent::CODE_INSIDE).into());
                    return Ok(Invocation {
                        argv,
                        mounts: Vec::new(),
                        scratch: None,
                        code: Some((file_name, source.clone())),
                    });
                }
                let scratch = Scratch::new(&self.scratch)?;
                let host_file = scratch.0.join(&file_name);
                std::fs::write(&host_file, source)
                    .map_err(|e| DriverError::internal("cannot write the code file", e))?;
                let (file_arg, mounts) = match self.isolation {
                    Isolation::Bwrap(_) => {
                        let inside = format!("/.daytona/{file_name}");
                        (
                            OsString::from(&inside),
                            vec![Mount {
                                host: host_file,
                                inside,
                            }],
                        )
                    }
                    Isolation::Landlock(_) | Isolation::None => {
                        (host_file.into_os_string(), Vec::new())
                    }
                };
                argv.push(file_arg);
                Ok(Invocation {
                    argv,
                    mounts,
                    scratch: Some(scratch),
                    code: None,
                })
            }
        }
    }
}

/// What the fresh path needs beyond the request (see [`LocalDriver::run_fresh`]).
struct Fresh<'a> {
    relative: &'a Path,
    host_cwd: PathBuf,
    tmp: &'a std::ffi::OsStr,
    env: Vec<(OsString, OsString)>,
    rlimits: Rlimits,
    cgroup: Option<Arc<cgroup::Cgroup>>,
}

impl LocalDriver {
    /// Runs a command in a process of its own: a fresh bubblewrap sandbox, or under Landlock
    /// or no isolation the command itself.
    async fn run_fresh(
        &self,
        dir: &Path,
        request: ExecRequest,
        fresh: Fresh<'_>,
        io: ExecIo,
    ) -> Result<ExecResult, DriverError> {
        let invocation = self.command(&request.program, false)?;
        let (argv, env, cwd, passed) = match &self.isolation {
            Isolation::Bwrap(bwrap) => {
                // The environment is the sandbox's only: the host-side bubblewrap process is
                // unconfined, so it gets a fixed environment and `/` as its working directory,
                // and reads its options (the environment among them) from a memory file.
                let inside = Path::new(WORKSPACE).join(fresh.relative);
                let options = bwrap.options(
                    dir,
                    &inside.to_string_lossy(),
                    &invocation.mounts,
                    request.network,
                    &fresh.env,
                );
                let encoded = isolation::encode_options(&options).ok_or_else(|| {
                    DriverError::invalid("command", "a NUL byte cannot be passed to the sandbox")
                })?;
                let file = spawn::memfd_with(c"bwrap-options", &encoded)
                    .map_err(|e| DriverError::internal("cannot pass options to bubblewrap", e))?;
                (
                    bwrap.argv(std::os::fd::AsRawFd::as_raw_fd(&file), &invocation.argv),
                    host_env(),
                    PathBuf::from("/"),
                    vec![file],
                )
            }
            // The process started is the command itself (confined before `execve` under
            // Landlock), so the environment is the command's.
            Isolation::Landlock(_) | Isolation::None => (
                invocation.argv.clone(),
                fresh.env,
                fresh.host_cwd,
                Vec::new(),
            ),
        };
        let confinement = match &self.isolation {
            Isolation::Landlock(policy) => {
                let extra: Vec<PathBuf> = invocation.scratch.iter().map(|s| s.0.clone()).collect();
                let ruleset = policy.ruleset(dir, Path::new(fresh.tmp), &extra, request.network)?;
                Some(spawn::Confinement {
                    ruleset,
                    drop_capabilities: policy.drop_capabilities,
                })
            }
            _ => None,
        };
        let result = process::run(
            Spawn {
                argv,
                env,
                cwd,
                stdin: request.stdin,
                rlimits: fresh.rlimits,
                cgroup: fresh.cgroup,
                confinement,
                pid_namespace: matches!(self.isolation, Isolation::Bwrap(_)),
                passed,
                timeout: request.timeout,
                output_limit: request.output_limit,
            },
            io,
        )
        .await;
        drop(invocation.scratch);
        result
    }
}

/// What runs inside the sandbox for one call.
#[derive(Debug)]
struct Invocation {
    argv: Vec<OsString>,
    /// Read-only files to show inside (the code file).
    mounts: Vec<Mount>,
    /// Holds the code file until the call ends.
    scratch: Option<Scratch>,
    /// The code file for a persistent sandbox: its name and contents.
    code: Option<(String, String)>,
}

/// A directory for one call's code file, removed when dropped.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: &Path) -> Result<Scratch, DriverError> {
        let dir = parent.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir(&dir)
            .map_err(|e| DriverError::internal("cannot create the scratch directory", e))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes allocated to files under `dir`, not following symlinks, each inode counted once.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// The environment of a host-side helper process (bubblewrap): fixed, never the caller's.
fn host_env() -> Vec<(OsString, OsString)> {
    HOST_ENV
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

/// A helper process on the host: the fixed environment and `/` as its working directory.
fn host_command(program: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command.env_clear().envs(HOST_ENV).current_dir("/");
    command
}

/// A working bubblewrap: found, its runtime files written, and proven by running `true`.
fn set_up_bwrap(
    config: &LocalConfig,
    runtime: &Path,
    scratch: &Path,
) -> Result<Bwrap, DriverError> {
    let path = match &config.bwrap_path {
        Some(p) => p.clone(),
        None => find_bwrap().ok_or_else(|| {
            DriverError::Unavailable(
                "bubblewrap (`bwrap`) is not installed; install the `bubblewrap` package (e.g. \
                 `apt-get install bubblewrap`), set local.isolation = \"landlock\", or set \
                 local.isolation = \"none\" to run commands without isolation"
                    .into(),
            )
        })?,
    };
    Bwrap::write_runtime_files(runtime)
        .map_err(|e| DriverError::internal(&format!("cannot write {}", runtime.display()), e))?;
    let disable_userns = supports_disable_userns(&path);
    let bwrap = Bwrap::new(path, runtime.to_path_buf(), disable_userns);
    probe_bwrap(&bwrap, scratch)?;
    Ok(bwrap)
}

/// A working Landlock: detected, and proven to refuse a file outside a probe sandbox.
fn set_up_landlock(data_dir: &Path, scratch: &Path) -> Result<LandlockPolicy, DriverError> {
    let policy = LandlockPolicy::detect()?;
    let dir = scratch.join(format!("probe-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| DriverError::internal("cannot create probe dir", e))?;
    let outside = data_dir.join(format!("landlock-probe-{}", uuid::Uuid::new_v4().simple()));
    let result = std::fs::write(&outside, b"probe")
        .map_err(|e| DriverError::internal("cannot write probe file", e))
        .and_then(|()| policy.probe(&dir, &outside));
    let _ = std::fs::remove_file(&outside);
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| policy)
}

/// bubblewrap on the server's `PATH` or in the usual places.
fn find_bwrap() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/local/bin", "/bin"].map(PathBuf::from));
    languages::find_program("bwrap", &dirs)
}

fn supports_disable_userns(bwrap: &Path) -> bool {
    host_command(bwrap)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--disable-userns"))
}

/// Runs `true` in a sandbox to prove bubblewrap works here (user namespaces allowed, the
/// options the driver uses known, etc.).
fn probe_bwrap(bwrap: &Bwrap, scratch: &Path) -> Result<(), DriverError> {
    let dir = scratch.join(format!("probe-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| DriverError::internal("cannot create probe dir", e))?;
    let env = [("PATH".into(), "/usr/bin:/bin".into())];
    let output = host_command(&bwrap.path)
        .args(bwrap.options(&dir, WORKSPACE, &[], false, &env))
        .args(["--", "true"])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    match output {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(DriverError::Unavailable(format!(
            "bubblewrap at {} cannot create a sandbox on this machine: {} (are unprivileged user \
             namespaces disabled? see kernel.unprivileged_userns_clone)",
            bwrap.path.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(DriverError::Unavailable(format!(
                "bubblewrap is not at {} (local.bwrap_path): install the `bubblewrap` package \
                 (e.g. `apt-get install bubblewrap`) or point local.bwrap_path at its binary",
                bwrap.path.display()
            )))
        }
        Err(e) => Err(DriverError::Unavailable(format!(
            "cannot run bubblewrap at {}: {e}",
            bwrap.path.display()
        ))),
    }
}

#[async_trait]
impl Driver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn check(&self) -> Result<(), DriverError> {
        let meta = tokio::fs::metadata(&self.sandboxes)
            .await
            .map_err(|e| DriverError::internal("sandbox directory unavailable", e))?;
        if !meta.is_dir() {
            return Err(DriverError::Internal(format!(
                "{} is not a directory",
                self.sandboxes.display()
            )));
        }
        if let Isolation::Bwrap(b) = &self.isolation {
            if tokio::fs::metadata(&b.path).await.is_err() {
                return Err(DriverError::Unavailable(format!(
                    "bubblewrap disappeared from {}",
                    b.path.display()
                )));
            }
        }
        Ok(())
    }

    fn warnings(&self) -> Vec<String> {
        self.isolation_warnings()
    }

    fn enforcement(&self) -> serde_json::Value {
        serde_json::to_value(self.enforcement_summary()).expect("the summary serializes")
    }

    fn timeout_enforcement(&self) -> &'static str {
        "its process group and cgroup are killed"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kills_process_tree: true,
            live_output: true,
            images: false,
            node_local: true,
        }
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Created, DriverError> {
        let dir = self.sandbox_dir(&spec.id)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| DriverError::internal("cannot create the sandbox directory", e))?;
        // `/workspace` gets the usual mode of a home directory (the server's umask is private;
        // the data dir above it keeps everyone else out).
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(|e| DriverError::internal("cannot set the sandbox directory's mode", e))?;
        // The directory is named by our id, which is therefore the handle.
        Ok(Created {
            handle: spec.id.clone(),
        })
    }

    async fn delete(&self, id: &str) -> Result<(), DriverError> {
        let dir = self.sandbox_dir(id)?;
        if let Some(residents) = &self.residents {
            residents.release(id).await;
        }
        self.usage.forget(id);
        let cgroups = self.cgroups.clone();
        let owned = id.to_string();
        let _ = tokio::task::spawn_blocking(move || cgroups.remove_sandbox(&owned)).await;
        let _ = tokio::fs::remove_dir_all(self.tmp_dir(id)).await;
        // remove_dir_all never follows symlinks, so a link planted inside cannot redirect it.
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DriverError::internal(
                "cannot delete the sandbox directory",
                e,
            )),
        }
    }

    async fn release(&self, id: &str) {
        if let Some(residents) = &self.residents {
            residents.release(id).await;
        }
    }

    async fn exists(&self, id: &str) -> Result<bool, DriverError> {
        let dir = self.sandbox_dir(id)?;
        Ok(tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()))
    }

    async fn disk_usage(&self, id: &str) -> Result<u64, DriverError> {
        let dir = self.sandbox_dir(id)?;
        if !self.exists(id).await? {
            return Err(DriverError::NotFound(id.to_string()));
        }
        Ok(self.usage.refresh(id, &dir).await)
    }

    async fn exec(
        &self,
        id: &str,
        request: ExecRequest,
        io: ExecIo,
    ) -> Result<ExecResult, DriverError> {
        let dir = self.sandbox_dir(id)?;
        if !self.exists(id).await? {
            return Err(DriverError::NotFound(id.to_string()));
        }
        let relative = match &request.working_directory {
            Some(wd) if !wd.is_empty() => {
                crate::drivers::paths::sandbox_relative("working_directory", wd)?
            }
            _ => PathBuf::new(),
        };
        let host_cwd = paths::existing_dir("working_directory", &dir, &relative)?;
        // Resolved now, so that a missing interpreter is the same error on either path.
        let _ = self.command(&request.program, true)?;
        let home: OsString = match self.isolation {
            Isolation::Bwrap(_) => WORKSPACE.into(),
            Isolation::Landlock(_) | Isolation::None => dir.clone().into(),
        };
        // Without a private /tmp, a Landlock sandbox gets its own temporary directory.
        let tmp: OsString = match self.isolation {
            Isolation::Landlock(_) => {
                let tmp = self.tmp_dir(id);
                tokio::fs::create_dir_all(&tmp)
                    .await
                    .map_err(|e| DriverError::internal("cannot create the sandbox's tmp dir", e))?;
                tmp.into()
            }
            _ => "/tmp".into(),
        };
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), self.sandbox_path.clone().into()),
            ("HOME".into(), home),
            ("USER".into(), "sandbox".into()),
            ("LOGNAME".into(), "sandbox".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("TMPDIR".into(), tmp.clone()),
            ("TERM".into(), "dumb".into()),
            // Live output for followers instead of one block at exit.
            ("PYTHONUNBUFFERED".into(), "1".into()),
        ];
        for (k, v) in &request.env {
            if v.contains('\0') {
                return Err(DriverError::invalid(
                    "env",
                    format!("the value of `{k}` contains a NUL byte"),
                ));
            }
            env.retain(|(key, _)| key != k.as_str());
            env.push((k.into(), v.into()));
        }
        let limits = self.limits;
        let wanted = request.limits;
        let controllers = self.cgroups.controllers();
        let cgroup_limits = CgroupLimits {
            max_processes: limits.max_processes,
            memory_bytes: wanted.memory_bytes,
            cpus: wanted.cpus,
        };
        // A single file may not outgrow what is left of the disk quota (many files are caught
        // by the watchdog below).
        let remaining = match wanted.disk_bytes {
            Some(quota) => Some(quota.saturating_sub(self.usage.latest(id, &dir).await)),
            None => None,
        };
        let file_size = remaining.map_or(limits.max_file_size_bytes, |r| {
            r.min(limits.max_file_size_bytes)
        });
        let file_size_from_quota = file_size < limits.max_file_size_bytes;
        let rlimits = Rlimits {
            cpu_seconds: request.timeout.as_secs().max(1) + 1,
            // Without a memory cgroup, the address space of each process is the only bound.
            address_space_bytes: (!controllers.contains(&"memory")).then_some(wanted.memory_bytes),
            processes: (!controllers.contains(&"pids")).then_some(limits.max_processes),
            file_size_bytes: file_size,
            open_files: limits.max_open_files,
        };
        let stop = io.cancel.child_token();
        let over_quota = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = wanted.disk_bytes.map(|quota| {
            tokio::spawn(usage::watch_disk(
                dir.clone(),
                quota,
                stop.clone(),
                over_quota.clone(),
            ))
        });
        let caller_cancel = io.cancel.clone();
        let io = ExecIo {
            output: io.output,
            cancel: stop,
        };
        let persistent = match (&self.isolation, &self.residents) {
            (Isolation::Bwrap(bwrap), Some(residents)) => {
                let invocation = self.command(&request.program, true)?;
                let code = invocation
                    .code
                    .as_ref()
                    .map(|(name, source)| (name.as_str(), source.as_bytes()));
                let command = persistent::Command {
                    argv: invocation.argv.clone(),
                    env: env.clone(),
                    cwd: Path::new(WORKSPACE).join(&relative),
                    stdin: request.stdin.clone(),
                    rlimits,
                    // The persistent sandbox's own (see `persistent.rs`).
                    cgroup: None,
                    timeout: request.timeout,
                    output_limit: request.output_limit,
                };
                let io = ExecIo {
                    output: io.output.clone(),
                    cancel: io.cancel.clone(),
                };
                let placement = (self.cgroups.as_ref(), cgroup_limits);
                residents
                    .run(
                        bwrap,
                        id,
                        &dir,
                        request.network,
                        code,
                        placement,
                        command,
                        io,
                    )
                    .await
            }
            _ => None,
        };
        let mut cgroup = None;
        let result = match persistent {
            Some(result) => result,
            None => {
                cgroup = self
                    .cgroups
                    .create(
                        id,
                        &uuid::Uuid::new_v4().simple().to_string()[..12],
                        cgroup_limits,
                    )
                    .map_err(|e| DriverError::internal("cannot set up the command's cgroup", e))?
                    .map(Arc::new);
                let fresh = Fresh {
                    relative: &relative,
                    host_cwd,
                    tmp: &tmp,
                    env,
                    rlimits,
                    cgroup: cgroup.clone(),
                };
                self.run_fresh(&dir, request, fresh, io).await
            }
        };
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        if let Some(cgroup) = cgroup.and_then(|c| Arc::try_unwrap(c).ok()) {
            // Not awaited: the answer does not wait for the kernel to let the cgroup go.
            tokio::task::spawn_blocking(move || cgroup.remove());
        }
        // Commands change the sandbox's files; measure again, off the answer's path.
        self.usage.refresh_soon(id, &dir);
        let mut result = result?;
        if over_quota.load(std::sync::atomic::Ordering::SeqCst) && !caller_cancel.is_cancelled() {
            result.cancelled = false;
            result.exit_code = None;
            result.limit_exceeded = Some("disk".into());
        } else if file_size_from_quota && result.limit_exceeded.as_deref() == Some("file size") {
            result.limit_exceeded = Some("disk".into());
        }
        Ok(result)
    }

    async fn export_files(
        &self,
        id: &str,
        tar: &Path,
        timeout: std::time::Duration,
    ) -> Result<crate::drivers::archive::Summary, DriverError> {
        let dir = self.sandbox_dir(id)?;
        if !self.exists(id).await? {
            return Err(DriverError::NotFound(id.to_string()));
        }
        let deadline = std::time::Instant::now() + timeout;
        let tar = tar.to_path_buf();
        tokio::task::spawn_blocking(move || snapshot::export(&dir, &tar, deadline))
            .await
            .map_err(|e| DriverError::internal("snapshot failed", e))?
    }

    async fn import_files(
        &self,
        id: &str,
        tar: &Path,
        limits: &SandboxLimits,
        timeout: std::time::Duration,
    ) -> Result<crate::drivers::archive::Summary, DriverError> {
        let dir = self.sandbox_dir(id)?;
        if !self.exists(id).await? {
            return Err(DriverError::NotFound(id.to_string()));
        }
        let deadline = std::time::Instant::now() + timeout;
        let (tar, sandboxes, owned, quota) = (
            tar.to_path_buf(),
            self.sandboxes.clone(),
            id.to_string(),
            limits.disk_bytes,
        );
        let host_dir = dir.clone();
        let (summary, _) = tokio::task::spawn_blocking(move || {
            snapshot::import(&sandboxes, &owned, &dir, &tar, quota, deadline)
        })
        .await
        .map_err(|e| DriverError::internal("restore failed", e))??;
        // The restore swapped the sandbox's directory for a new one; a persistent sandbox's
        // bind mount still holds the old one (mounts follow the directory, not its path), so it
        // goes, and the next command starts over the restored files.
        if let Some(residents) = &self.residents {
            residents.release(id).await;
        }
        self.usage.refresh(id, &host_dir).await;
        Ok(summary)
    }

    async fn file(
        &self,
        id: &str,
        request: FileRequest,
        timeout: std::time::Duration,
    ) -> Result<FileResult, DriverError> {
        let dir = self.sandbox_dir(id)?;
        if !self.exists(id).await? {
            return Err(DriverError::NotFound(id.to_string()));
        }
        let deadline = std::time::Instant::now() + timeout;
        let usage = match (&request.op, request.disk_quota) {
            (FileOp::Write { .. }, Some(_)) => Some(self.usage.current(id, &dir).await),
            _ => None,
        };
        let changes_usage = matches!(request.op, FileOp::Delete { .. });
        let host_dir = dir.clone();
        let done = tokio::task::spawn_blocking(move || files::run(&dir, request, usage, deadline))
            .await
            .map_err(|e| DriverError::internal("file operation failed", e))??;
        if done.allocated_delta != 0 {
            self.usage.adjust(id, done.allocated_delta);
        }
        if changes_usage {
            self.usage.refresh_soon(id, &host_dir);
        }
        Ok(done.result)
    }

    fn workspace_root(&self, id: &str) -> String {
        match (&self.isolation, self.sandbox_dir(id)) {
            (Isolation::Bwrap(_), _) | (_, Err(_)) => WORKSPACE.to_string(),
            (_, Ok(dir)) => dir.to_string_lossy().into_owned(),
        }
    }

    fn known_disk_usage(&self, id: &str) -> Option<u64> {
        self.usage.known(id)
    }

    fn usage(&self) -> Vec<crate::drivers::SandboxUsage> {
        let mut by_id: BTreeMap<String, crate::drivers::SandboxUsage> = BTreeMap::new();
        for (id, bytes) in self.usage.all_known() {
            // A figure outlives its sandbox when a measurement ends after the delete.
            if !self.sandbox_dir(&id).is_ok_and(|dir| dir.is_dir()) {
                self.usage.forget(&id);
                continue;
            }
            by_id.entry(id.clone()).or_default().disk_bytes = Some(bytes);
        }
        // Sandboxes not measured since this process started (it restarted) are measured in
        // the background, so that the next scrape has them.
        if let Ok(entries) = std::fs::read_dir(&self.sandboxes) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !by_id.contains_key(&name) {
                    if let Ok(dir) = self.sandbox_dir(&name) {
                        self.usage.refresh_soon(&name, &dir);
                    }
                }
            }
        }
        for (id, (bytes, limit)) in self.cgroups.memory_usage() {
            let entry = by_id.entry(id).or_default();
            entry.memory_bytes = Some(bytes);
            entry.memory_limit_bytes = limit;
        }
        by_id
            .into_iter()
            .map(|(sandbox, mut usage)| {
                usage.sandbox = sandbox;
                usage
            })
            .collect()
    }

    fn limits_report(&self, limits: &SandboxLimits) -> BTreeMap<&'static str, LimitReport> {
        enforcement::limits_report(&self.cgroups, &self.limits, limits)
    }
}
