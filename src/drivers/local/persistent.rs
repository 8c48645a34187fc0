//! Persistent sandboxes (`local.persistent_sandbox`, bubblewrap only): one long-lived
//! bubblewrap sandbox per sandbox that has run a command recently, with the agent
//! (`agent.rs`) inside starting each command, instead of a fresh bubblewrap per command. What a
//! command gets is what the fresh path gives it (`process.rs`): its own session and process
//! group, its cgroup, the same rlimits, only the caller's environment, its working directory,
//! stdin from memory, capped and streamed output, a timeout and cancellation that kill its whole
//! tree; and nothing it started survives it: once its leader has exited, the driver kills its
//! process group, empties its cgroup, and kills every process of the sandbox's pid namespace
//! other than the agent (`tree::end_namespace_except`), before the next command may start.
//!
//! The host trusts nothing the agent says beyond what it can check: the pid of a command is
//! looked up among the agent's own children (pinned with a pidfd), and every kill and cgroup
//! move targets processes found from the host. An agent that dies, hangs past a bound or sends
//! a malformed frame fails the command it was running (`DriverError::Crashed`); the sandbox is
//! torn down (its pid namespace dies with it) and the next command starts a fresh one.
//!
//! A sandbox is torn down when its workspace goes idle (`Driver::release`, called when the
//! workspace actor is dropped), when it is deleted, when its network setting differs from the
//! command's, and when the driver is dropped. Two commands of one sandbox at once (which the
//! queue does not do) are not queued behind each other: the second takes the fresh path.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use super::agent::{AGENT_INSIDE, SUBCOMMAND};
use super::cgroup::{Cgroup, CgroupLimits, CgroupManager};
use super::isolation::{self, Bwrap, Mount, WORKSPACE};
use super::process::{self, Rlimits};
use super::spawn::{self, Child, Prepared};
use super::tree;
use super::wire::{self, Exec, FromAgent, ToAgent, WireRlimits};
use crate::drivers::{DriverError, ExecIo, ExecResult};
use crate::output::Stream;

/// How long the agent may take to answer a step other than a command's exit.
const STEP_BOUND: Duration = Duration::from_secs(10);

/// Where a persistent sandbox's code files appear (the fresh path's place for them).
pub const CODE_INSIDE: &str = "/.daytona";

/// One sandbox's slot: its running persistent sandbox, if any.
type Slot = Arc<tokio::sync::Mutex<Option<Resident>>>;

/// The persistent sandboxes of one driver, by sandbox id.
#[derive(Debug)]
pub struct Residents {
    slots: std::sync::Mutex<HashMap<String, Slot>>,
    /// The agent binary on the host (bound read-only at [`AGENT_INSIDE`]).
    agent: PathBuf,
    /// Where each persistent sandbox's code directory is made (the driver's `run/`).
    scratch: PathBuf,
    open_files: u64,
}

/// A process pinned by a pidfd: its pid names it as long as the pidfd is open.
#[derive(Debug)]
struct Pinned {
    pid: i32,
    fd: OwnedFd,
}

impl Pinned {
    fn open(pid: i32) -> Option<Pinned> {
        // SAFETY: pidfd_open has no memory-safety preconditions; a new descriptor is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: a non-negative return is a new descriptor (close-on-exec).
        (fd >= 0).then(|| Pinned {
            pid,
            fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
        })
    }

    /// Whether the process has exited (its pidfd polls readable).
    fn exited(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no waiting.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    }

    fn kill(&self) {
        // SAFETY: pidfd_send_signal on a descriptor we own.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

/// A running persistent sandbox.
pub struct Resident {
    network: bool,
    /// The host-side bubblewrap; dropping it kills its process group and reaps it.
    bwrap: Option<Child>,
    /// The init of the sandbox's pid namespace (bubblewrap's), and the agent, its child.
    init: Pinned,
    agent: Pinned,
    socket: UnixStream,
    /// The host directory shown read-only at [`CODE_INSIDE`].
    code_dir: PathBuf,
    /// The cgroup its commands run in, one at a time, and the limits it was made with: one
    /// per persistent sandbox rather than per command (a command here leaves no pid namespace
    /// behind whose teardown would keep its pids charged), so that a command costs no cgroup
    /// creation and removal. Emptied after every command.
    cgroup: Option<(Arc<Cgroup>, CgroupLimits)>,
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resident")
            .field("agent", &self.agent.pid)
            .field("network", &self.network)
            .finish()
    }
}

/// A command for a persistent sandbox (what `process::Spawn` is for the fresh path).
pub struct Command {
    pub argv: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Inside the sandbox.
    pub cwd: PathBuf,
    pub stdin: Option<Vec<u8>>,
    pub rlimits: Rlimits,
    pub cgroup: Option<Arc<Cgroup>>,
    pub timeout: Duration,
    pub output_limit: usize,
}

/// How a command in a persistent sandbox went wrong.
enum Failure {
    /// The agent broke (died, hung, said something malformed or unverifiable) before it was
    /// told to start the command: the sandbox must go, and the command, which never ran, can
    /// run elsewhere.
    Unstarted(String),
    /// The agent broke once the command may have started: the sandbox must go.
    Agent(String),
    /// The command failed to start or its tree could not be ended; the sandbox must go too,
    /// since something of the command may live on in it.
    Command(DriverError),
    /// The command failed to start; the sandbox is fine.
    Start(DriverError),
}

fn agent_failure(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Agent(format!("{what}: {e}"))
}

impl Residents {
    pub fn new(agent: PathBuf, scratch: PathBuf, open_files: u64) -> Residents {
        Residents {
            slots: Default::default(),
            agent,
            scratch,
            open_files,
        }
    }

    fn slot(&self, id: &str) -> Slot {
        let mut slots = self.slots.lock().expect("not poisoned");
        slots.entry(id.to_string()).or_default().clone()
    }

    /// Tears down sandbox `id`'s persistent sandbox, if it has one, waiting for a command in
    /// it to end first.
    pub async fn release(&self, id: &str) {
        let slot = {
            let mut slots = self.slots.lock().expect("not poisoned");
            slots.remove(id)
        };
        if let Some(slot) = slot {
            if let Some(resident) = slot.lock().await.take() {
                resident.shutdown().await;
            }
        }
    }

    /// Runs `command` in sandbox `id`'s persistent sandbox, starting one if needed. `None`
    /// when another command holds it, or when its agent broke before the command started
    /// (the caller takes the fresh path). `code` is a code file
    /// (name, contents) to show at `/.daytona/<name>` for the command's duration.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        bwrap: &Bwrap,
        id: &str,
        dir: &Path,
        network: bool,
        code: Option<(&str, &[u8])>,
        placement: (&CgroupManager, CgroupLimits),
        mut command: Command,
        io: ExecIo,
    ) -> Option<Result<ExecResult, DriverError>> {
        let slot = self.slot(id);
        let mut guard = slot.try_lock_owned().ok()?;
        // The resident is out of its slot while a command runs, and goes back only when the
        // command ended cleanly: if this future is dropped midway (the job abandoned), the
        // resident is dropped with it, which kills the sandbox and the command in it.
        let mut resident = match guard.take() {
            // A sandbox whose agent died between commands (killed from inside or outside) is
            // replaced before it fails a command it never started.
            Some(old) if old.network != network || old.agent.exited() || old.init.exited() => {
                old.shutdown().await;
                None
            }
            other => other,
        };
        if resident.is_none() {
            match self.start(bwrap, id, dir, network).await {
                Ok(started) => resident = Some(started),
                Err(e) => return Some(Err(e)),
            }
        }
        let mut resident = resident.expect("started above");
        let (cgroups, limits) = placement;
        if resident.cgroup.as_ref().is_none_or(|(_, l)| *l != limits) {
            // The old one (other limits) is emptied and removed off-thread when dropped.
            resident.cgroup = None;
            let name = format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            match cgroups.create(id, &name, limits) {
                Ok(made) => resident.cgroup = made.map(|c| (Arc::new(c), limits)),
                Err(e) => {
                    *guard = Some(resident);
                    return Some(Err(DriverError::internal(
                        "cannot set up the command's cgroup",
                        e,
                    )));
                }
            }
        }
        command.cgroup = resident.cgroup.as_ref().map(|(c, _)| c.clone());
        let code_file = match code {
            Some((name, source)) => {
                let path = resident.code_dir.join(name);
                if let Err(e) = tokio::fs::write(&path, source).await {
                    *guard = Some(resident);
                    return Some(Err(DriverError::internal("cannot write the code file", e)));
                }
                Some(path)
            }
            None => None,
        };
        let outcome = resident.run(command, io).await;
        if let Some(path) = code_file {
            let _ = tokio::fs::remove_file(path).await;
        }
        Some(match outcome {
            Ok(result) => {
                *guard = Some(resident);
                Ok(result)
            }
            Err(Failure::Start(e)) => {
                *guard = Some(resident);
                Err(e)
            }
            Err(Failure::Command(e)) => {
                resident.shutdown().await;
                Err(e)
            }
            // The command never started: it runs in a fresh sandbox of its own (the caller's
            // path when this returns `None`), and the next command gets a new persistent one.
            Err(Failure::Unstarted(detail)) => {
                tracing::warn!(sandbox = id, %detail,
                    "the sandbox's agent failed before the command started; tearing it down");
                resident.shutdown().await;
                return None;
            }
            Err(Failure::Agent(detail)) => {
                tracing::warn!(sandbox = id, %detail, "the sandbox's agent failed; tearing it down");
                resident.shutdown().await;
                Err(DriverError::Crashed(format!(
                    "the sandbox's command agent failed during the command ({detail}); the \
                     command's processes were killed, and the next command starts in a fresh \
                     sandbox"
                )))
            }
        })
    }

    /// Starts the persistent sandbox of `id`: bubblewrap with the agent as its command, the
    /// agent's hello, and the agent and namespace init found and pinned from the host.
    async fn start(
        &self,
        bwrap: &Bwrap,
        id: &str,
        dir: &Path,
        network: bool,
    ) -> Result<Resident, DriverError> {
        let code_dir = self
            .scratch
            .join(format!("agent-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&code_dir)
            .map_err(|e| DriverError::internal("cannot create the code directory", e))?;
        let started = self.start_in(bwrap, id, dir, network, &code_dir).await;
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&code_dir);
        }
        started
    }

    async fn start_in(
        &self,
        bwrap: &Bwrap,
        id: &str,
        dir: &Path,
        network: bool,
        code_dir: &Path,
    ) -> Result<Resident, DriverError> {
        let mounts = [
            Mount {
                host: self.agent.clone(),
                inside: AGENT_INSIDE.into(),
            },
            Mount {
                host: code_dir.to_path_buf(),
                inside: CODE_INSIDE.into(),
            },
        ];
        // The agent's own environment is empty: each command's comes with it.
        let options = bwrap.options(dir, WORKSPACE, &mounts, network, &[]);
        let encoded = isolation::encode_options(&options)
            .ok_or_else(|| DriverError::Internal("a NUL byte in bubblewrap's options".into()))?;
        let options_fd = spawn::memfd_with(c"bwrap-options", &encoded)
            .map_err(|e| DriverError::internal("cannot pass options to bubblewrap", e))?;
        let (host_end, agent_end) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| DriverError::internal("cannot make the agent's socket", e))?;
        let agent_end = OwnedFd::from(agent_end);
        let argv = bwrap.argv(
            options_fd.as_raw_fd(),
            &[
                AGENT_INSIDE.into(),
                SUBCOMMAND.into(),
                agent_end.as_raw_fd().to_string().into(),
                id.into(),
            ],
        );
        let rlimits = Rlimits {
            cpu_seconds: u64::MAX / 4,
            address_space_bytes: None,
            processes: None,
            file_size_bytes: u64::MAX,
            open_files: self.open_files,
        };
        let prepared = Prepared::new(
            &argv,
            &super::host_env(),
            Path::new("/"),
            false,
            rlimits,
            Vec::new(),
            None,
            vec![options_fd, agent_end],
        )
        .map_err(|e| DriverError::internal("cannot prepare the sandbox's agent", e))?;
        let mut child =
            spawn::spawn(&prepared).map_err(|e| DriverError::Internal(e.to_string()))?;
        drop(prepared);
        let bwrap_pid = child.pid();
        for (pipe, stream) in [
            (child.stdout.take(), "stdout"),
            (child.stderr.take(), "stderr"),
        ] {
            if let Some(pipe) = pipe {
                tokio::spawn(log_lines(pipe, id.to_string(), stream));
            }
        }
        host_end
            .set_nonblocking(true)
            .map_err(|e| DriverError::internal("cannot set up the agent's socket", e))?;
        let mut socket = UnixStream::from_std(host_end)
            .map_err(|e| DriverError::internal("cannot set up the agent's socket", e))?;
        let unavailable = |detail: String| {
            DriverError::Internal(format!(
                "the sandbox's command agent did not start ({detail}); is local.agent_path the \
                 daytona-mcp binary?"
            ))
        };
        let hello = tokio::time::timeout(STEP_BOUND, read_frame(&mut socket))
            .await
            .map_err(|_| unavailable("no answer".into()))?
            .map_err(unavailable)?;
        let FromAgent::Hello { pid: inner } = hello else {
            return Err(unavailable(format!("it sent {hello:?} first")));
        };
        let agent = find_in_namespace(bwrap_pid, inner)
            .ok_or_else(|| unavailable("its process was not found below bubblewrap".into()))?;
        let init = tree::parent_of(agent.pid)
            .and_then(Pinned::open)
            .filter(|init| tree::parent_of(init.pid) == Some(bwrap_pid))
            .ok_or_else(|| unavailable("the sandbox's init was not found".into()))?;
        // Pinned first, checked after: the agent is still the init's child.
        if tree::parent_of(agent.pid) != Some(init.pid) {
            return Err(unavailable("the agent moved".into()));
        }
        tracing::debug!(
            sandbox = id,
            agent = agent.pid,
            "persistent sandbox started"
        );
        Ok(Resident {
            network,
            bwrap: Some(child),
            init,
            agent,
            socket,
            code_dir: code_dir.to_path_buf(),
            cgroup: None,
        })
    }
}

impl Drop for Residents {
    fn drop(&mut self) {
        // Each resident's own `Drop` kills its sandbox.
        self.slots.lock().map(|mut s| s.clear()).ok();
    }
}

/// Logs what the host-side bubblewrap or the agent print (errors only, normally).
async fn log_lines(pipe: pipe::Receiver, sandbox: String, stream: &'static str) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(%sandbox, stream, "persistent sandbox: {}", line.chars().take(500).collect::<String>());
    }
}

/// The process below bubblewrap `bwrap_pid` (within a few levels) whose innermost pid is
/// `inner` in a pid namespace of its own, pinned.
fn find_in_namespace(bwrap_pid: i32, inner: u32) -> Option<Pinned> {
    let mut level = vec![bwrap_pid];
    for _ in 0..4 {
        let mut next = Vec::new();
        for pid in level {
            for child in tree::children(pid) {
                if let Some(pinned) = Pinned::open(child) {
                    if namespaced_pid(child) == Some(inner) && tree::parent_of(child) == Some(pid) {
                        return Some(pinned);
                    }
                }
                next.push(child);
            }
        }
        level = next;
    }
    None
}

/// The pid of host process `pid` in its innermost pid namespace, if that is not the host's.
fn namespaced_pid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let pids: Vec<u32> = line
        .split_ascii_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    (pids.len() >= 2).then(|| *pids.last().expect("two or more"))
}

async fn read_frame(socket: &mut UnixStream) -> Result<FromAgent, String> {
    let mut header = [0u8; 4];
    socket
        .read_exact(&mut header)
        .await
        .map_err(|e| format!("its socket closed or failed: {e}"))?;
    let len = wire::frame_len(header).map_err(|e| e.to_string())?;
    // The agent's frames are a few bytes: a large one is a broken or hostile agent.
    if len > 64 {
        return Err("an oversized frame".into());
    }
    let mut body = vec![0u8; len];
    socket
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("its socket closed or failed: {e}"))?;
    FromAgent::decode(&body).map_err(|e| e.to_string())
}

fn to_bytes(s: &OsString) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Pipes for a command's stdio: the read ends (ours) and the write ends (the command's).
fn pipes() -> std::io::Result<(OwnedFd, OwnedFd)> {
    spawn::pipe_pair()
}

impl Resident {
    async fn send(&mut self, message: &ToAgent, fds: &[RawFd]) -> Result<(), Failure> {
        let frame = message.encode();
        if fds.is_empty() {
            return self
                .socket
                .write_all(&frame)
                .await
                .map_err(|e| agent_failure("cannot write to its socket", e));
        }
        // The descriptors ride on the first bytes; the rest follows as plain data.
        let raw = self.socket.as_raw_fd();
        let sent = loop {
            self.socket
                .writable()
                .await
                .map_err(|e| agent_failure("cannot write to its socket", e))?;
            match self
                .socket
                .try_io(Interest::WRITABLE, || wire::send_with_fds(raw, &frame, fds))
            {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(agent_failure("cannot write to its socket", e)),
            }
        };
        self.socket
            .write_all(&frame[sent..])
            .await
            .map_err(|e| agent_failure("cannot write to its socket", e))
    }

    async fn expect(&mut self, bound: Duration) -> Result<FromAgent, Failure> {
        match tokio::time::timeout(bound, read_frame(&mut self.socket)).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(detail)) => Err(Failure::Agent(detail)),
            Err(_) => Err(Failure::Agent(format!(
                "no answer within {}s",
                bound.as_secs()
            ))),
        }
    }

    /// Runs one command; see the module's documentation.
    async fn run(&mut self, command: Command, io: ExecIo) -> Result<ExecResult, Failure> {
        let (stdout_r, stdout_w) =
            pipes().map_err(|e| Failure::Start(DriverError::internal("cannot make pipes", e)))?;
        let (stderr_r, stderr_w) =
            pipes().map_err(|e| Failure::Start(DriverError::internal("cannot make pipes", e)))?;
        let stdin_pair = match &command.stdin {
            Some(_) => Some(
                pipes()
                    .map_err(|e| Failure::Start(DriverError::internal("cannot make pipes", e)))?,
            ),
            None => None,
        };
        let r = command.rlimits;
        let exec = ToAgent::Exec(Exec {
            argv: command.argv.iter().map(to_bytes).collect(),
            env: command
                .env
                .iter()
                .map(|(k, v)| {
                    let mut pair = to_bytes(k);
                    pair.push(b'=');
                    pair.extend_from_slice(v.as_bytes());
                    pair
                })
                .collect(),
            cwd: command.cwd.as_os_str().as_bytes().to_vec(),
            rlimits: WireRlimits {
                cpu_seconds: r.cpu_seconds,
                address_space_bytes: r.address_space_bytes.unwrap_or(0),
                processes: r.processes.unwrap_or(0),
                file_size_bytes: r.file_size_bytes,
                open_files: r.open_files,
            },
            stdin: stdin_pair.is_some(),
        });
        let mut fds: Vec<RawFd> = Vec::with_capacity(3);
        if let Some((read, _)) = &stdin_pair {
            fds.push(read.as_raw_fd());
        }
        fds.push(stdout_w.as_raw_fd());
        fds.push(stderr_w.as_raw_fd());
        // Until `Go`, the agent's child waits: an agent that breaks before then (one that died
        // between commands just as this one came, a hung one) never ran the command.
        let unstarted = |failure| match failure {
            Failure::Agent(detail) => Failure::Unstarted(detail),
            other => other,
        };
        self.send(&exec, &fds).await.map_err(unstarted)?;
        // The agent has its copies (the kernel made them at sendmsg).
        drop((stdout_w, stderr_w));
        let stdin = match stdin_pair {
            Some((read, write)) => {
                drop(read);
                Some(write)
            }
            None => None,
        };
        let FromAgent::Spawned { pid: inner } = self.expect(STEP_BOUND).await.map_err(unstarted)?
        else {
            return Err(Failure::Unstarted(
                "it did not report the command's process".into(),
            ));
        };
        // The command's process, found from the host among the agent's children.
        let Some(leader) = tree::children(self.agent.pid)
            .into_iter()
            .filter(|&p| namespaced_pid(p) == Some(inner))
            .find_map(|p| Pinned::open(p).filter(|_| tree::parent_of(p) == Some(self.agent.pid)))
        else {
            return Err(Failure::Unstarted(format!(
                "it reported pid {inner}, which is none of its children"
            )));
        };
        if let Some(cgroup) = &command.cgroup {
            if let Err(e) = cgroup.attach(leader.pid) {
                self.send(&ToAgent::Abort, &[]).await?;
                self.expect(STEP_BOUND).await?;
                return Err(Failure::Start(DriverError::internal(
                    "cannot move the command into its cgroup",
                    e,
                )));
            }
        }
        let oom_before = command.cgroup.as_deref().map_or(0, Cgroup::oom_kills);
        self.send(&ToAgent::Go, &[]).await?;
        match self.expect(STEP_BOUND).await? {
            FromAgent::Started => {}
            FromAgent::Failed { step, errno } => {
                let cause = std::io::Error::from_raw_os_error(errno);
                return Err(Failure::Start(DriverError::Internal(format!(
                    "cannot start {}: {} failed: {cause}",
                    command.argv[0].to_string_lossy(),
                    wire::STEPS.get(step as usize).unwrap_or(&"setup")
                ))));
            }
            other => return Err(Failure::Agent(format!("unexpected {other:?}"))),
        }
        let started = Instant::now();
        if let (Some(pipe), Some(data)) = (stdin, command.stdin) {
            spawn::set_nonblocking(&pipe)
                .map_err(|e| Failure::Command(DriverError::internal("stdin", e)))?;
            let mut pipe = pipe::Sender::from_owned_fd_unchecked(pipe)
                .map_err(|e| Failure::Command(DriverError::internal("stdin", e)))?;
            tokio::spawn(async move {
                let _ = pipe.write_all(&data).await;
            });
        }
        let stop_reading = CancellationToken::new();
        let reader = |fd: OwnedFd, stream: Stream| -> Result<_, Failure> {
            spawn::set_nonblocking(&fd)
                .map_err(|e| Failure::Command(DriverError::internal("output pipe", e)))?;
            let pipe = pipe::Receiver::from_owned_fd_unchecked(fd)
                .map_err(|e| Failure::Command(DriverError::internal("output pipe", e)))?;
            Ok(tokio::spawn(process::read_stream(
                pipe,
                stream,
                command.output_limit,
                io.output.clone(),
                stop_reading.clone(),
            )))
        };
        let stdout = reader(stdout_r, Stream::Stdout)?;
        let stderr = reader(stderr_r, Stream::Stderr)?;
        drop(io.output);

        enum Ending {
            Exited(bool, i32),
            TimedOut,
            Cancelled,
        }
        let ending = tokio::select! {
            message = read_frame(&mut self.socket) => match message {
                Ok(FromAgent::Exited { signal, value }) => Ending::Exited(signal, value),
                Ok(other) => return Err(Failure::Agent(format!("unexpected {other:?}"))),
                Err(detail) => return Err(Failure::Agent(detail)),
            },
            _ = tokio::time::sleep(command.timeout) => Ending::TimedOut,
            _ = io.cancel.cancelled() => Ending::Cancelled,
        };
        // The leader is unreaped (the agent waits for `Reap`), so its group id names nobody
        // else; kill the group whatever the ending, for what it left in the background.
        // SAFETY: kill of a process group whose leader is pinned and unreaped.
        unsafe {
            libc::kill(-leader.pid, libc::SIGKILL);
        }
        let exit = match ending {
            Ending::Exited(signal, value) => Some((signal, value)),
            _ => match self.expect(tree::BOUND).await? {
                FromAgent::Exited { .. } => None,
                other => return Err(Failure::Agent(format!("unexpected {other:?}"))),
            },
        };
        if let Some(cgroup) = command.cgroup.as_deref() {
            if let Err(stragglers) = tree::empty_cgroup(cgroup, tree::BOUND).await {
                stop_reading.cancel();
                return Err(Failure::Command(DriverError::Internal(
                    stragglers.to_string(),
                )));
            }
        }
        if let Err(stragglers) =
            tree::end_namespace_except(self.init.pid, self.agent.pid, tree::BOUND).await
        {
            stop_reading.cancel();
            return Err(Failure::Command(DriverError::Internal(
                stragglers.to_string(),
            )));
        }
        self.send(&ToAgent::Reap, &[]).await?;
        match self.expect(STEP_BOUND).await? {
            FromAgent::Reaped => {}
            other => return Err(Failure::Agent(format!("unexpected {other:?}"))),
        }
        let duration = started.elapsed();
        let drain_until = tokio::time::Instant::now() + process::DRAIN_GRACE;
        let out = process::finish_reader(stdout, &stop_reading, drain_until).await;
        let err = process::finish_reader(stderr, &stop_reading, drain_until).await;
        let oom = command
            .cgroup
            .as_deref()
            .is_some_and(|c| c.oom_kills() > oom_before);
        let (timed_out, cancelled) = match ending {
            Ending::Exited(..) => (false, false),
            Ending::TimedOut => (true, false),
            Ending::Cancelled => (false, true),
        };
        let exit_code = exit.map(|(signal, value)| if signal { 128 + value } else { value });
        Ok(process::exec_result(
            out,
            err,
            exit_code,
            oom,
            (timed_out, cancelled),
            duration,
        ))
    }

    /// Kills the sandbox (its pid namespace dies with its init) and waits, within
    /// [`tree::BOUND`], for bubblewrap to exit, which it does once the namespace is empty.
    async fn shutdown(mut self) {
        self.init.kill();
        self.agent.kill();
        if let Some(child) = self.bwrap.take() {
            child.kill_group();
            let _ = tokio::time::timeout(tree::BOUND, child.reap()).await;
        }
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        self.init.kill();
        self.agent.kill();
        // The child's own `Drop` kills bubblewrap's group and reaps it off-thread.
        drop(self.bwrap.take());
        let _ = std::fs::remove_dir_all(&self.code_dir);
    }
}
