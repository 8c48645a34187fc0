//! Runs one host process to completion under limits: its own session and process group,
//! rlimits, an optional cgroup, a wall-clock timeout and cancellation that kill the whole tree,
//! stdin fed from memory, and stdout/stderr captured up to a cap while streaming live. It
//! returns only once the whole tree is gone (`tree.rs`), so a job never ends before its
//! processes do.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::cgroup::Cgroup;
use super::spawn::{Confinement, Exit, Prepared};
use super::tree;
use crate::drivers::{DriverError, ExecIo, ExecResult};
use crate::output::{CappedBuffer, OutputTx, Stream};

/// How long readers may keep draining pipes after the process tree is gone. A process that
/// escaped every way of tracking it (see `tree.rs`) could hold a pipe open forever.
pub(super) const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Resource limits set with `setrlimit` in the child before `exec`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rlimits {
    pub cpu_seconds: u64,
    /// Per-process address space; only set when no memory cgroup bounds the process tree.
    pub address_space_bytes: Option<u64>,
    /// Per-user process limit; only set when no pids cgroup is available (see `cgroup.rs`).
    pub processes: Option<u64>,
    pub file_size_bytes: u64,
    pub open_files: u64,
}

impl Rlimits {
    /// Applies the limits to the calling process. Runs between fork and exec: raw syscalls only.
    pub(super) fn apply(&self) -> io::Result<()> {
        set_rlimit(libc::RLIMIT_CORE, 0, 0)?;
        // The soft CPU limit sends SIGXCPU (which names the cause); the hard one SIGKILLs.
        set_rlimit(
            libc::RLIMIT_CPU,
            self.cpu_seconds,
            self.cpu_seconds.saturating_add(2),
        )?;
        if let Some(bytes) = self.address_space_bytes {
            set_rlimit(libc::RLIMIT_AS, bytes, bytes)?;
        }
        set_rlimit(
            libc::RLIMIT_FSIZE,
            self.file_size_bytes,
            self.file_size_bytes,
        )?;
        set_rlimit(libc::RLIMIT_NOFILE, self.open_files, self.open_files)?;
        if let Some(n) = self.processes {
            set_rlimit(libc::RLIMIT_NPROC, n, n)?;
        }
        Ok(())
    }
}

/// Lowers a limit to `soft`/`hard`, never above the current hard limit (raising it would need
/// privileges and fail).
fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid resource and out-pointer; getrlimit/setrlimit are async-signal-safe.
    unsafe {
        if libc::getrlimit(resource, &mut current) != 0 {
            return Err(io::Error::last_os_error());
        }
        let max = hard.min(current.rlim_max);
        let new = libc::rlimit {
            rlim_cur: soft.min(max),
            rlim_max: max,
        };
        if libc::setrlimit(resource, &new) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A process to run.
#[derive(Debug)]
pub struct Spawn {
    pub argv: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    pub stdin: Option<Vec<u8>>,
    pub rlimits: Rlimits,
    pub cgroup: Option<Arc<Cgroup>>,
    /// Landlock and capability dropping, for the Landlock isolation level.
    pub confinement: Option<Confinement>,
    /// The process is bubblewrap, whose child is the init of the sandbox's pid namespace.
    pub pid_namespace: bool,
    /// Descriptors the process inherits on purpose (bubblewrap's options).
    pub passed: Vec<OwnedFd>,
    pub timeout: Duration,
    pub output_limit: usize,
}

/// How the wait for the process ended.
enum Ending {
    Exited,
    TimedOut,
    Cancelled,
}

/// Runs the process and returns how it ended. Every process it started is dead on return,
/// whatever the ending; if the kernel does not let them go within [`tree::BOUND`], an error
/// says so.
pub async fn run(spawn: Spawn, io: ExecIo) -> Result<ExecResult, DriverError> {
    let prepared = Prepared::new(
        &spawn.argv,
        &spawn.env,
        &spawn.cwd,
        spawn.stdin.is_some(),
        spawn.rlimits,
        spawn
            .cgroup
            .as_deref()
            .map(Cgroup::procs_files)
            .unwrap_or_default(),
        spawn.confinement,
        spawn.passed,
    )
    .map_err(|e| DriverError::internal("cannot prepare the command", e))?;
    // The OOM-kill counter is the cgroup's whole history; what matters is this command's share.
    let oom_before = spawn.cgroup.as_deref().map_or(0, Cgroup::oom_kills);
    let started = Instant::now();
    let mut child =
        super::spawn::spawn(&prepared).map_err(|e| DriverError::Internal(e.to_string()))?;
    // The command has its copies of the passed descriptors.
    drop(prepared);

    if let (Some(mut pipe), Some(data)) = (child.stdin.take(), spawn.stdin) {
        tokio::spawn(async move {
            // A process that exits without reading its input is not an error.
            let _ = pipe.write_all(&data).await;
        });
    }
    let stop_reading = CancellationToken::new();
    let stdout = tokio::spawn(read_stream(
        child.stdout.take().expect("stdout is piped"),
        Stream::Stdout,
        spawn.output_limit,
        io.output.clone(),
        stop_reading.clone(),
    ));
    let stderr = tokio::spawn(read_stream(
        child.stderr.take().expect("stderr is piped"),
        Stream::Stderr,
        spawn.output_limit,
        io.output.clone(),
        stop_reading.clone(),
    ));
    drop(io.output);

    let ending = tokio::select! {
        _ = child.exited() => Ending::Exited,
        _ = tokio::time::sleep(spawn.timeout) => Ending::TimedOut,
        _ = io.cancel.cancelled() => Ending::Cancelled,
    };
    let cgroup = spawn.cgroup.as_deref();
    // Without a cgroup, bubblewrap's namespace init is found while bubblewrap still lives (once
    // bubblewrap has exited on its own, the namespace is already empty).
    let namespace_init = match ending {
        Ending::Exited => None,
        _ if cgroup.is_none() && spawn.pid_namespace => tree::namespace_init(child.pid()),
        _ => None,
    };
    // The child is still unreaped here, so its process group id names nobody else.
    child.kill_group();
    let reap_error = |e| DriverError::internal("cannot reap the command", e);
    let (exit, gone) = match cgroup {
        Some(cgroup) => {
            // After the reap, so the command's own zombie is not counted.
            let exit = child.reap().await.map_err(reap_error)?;
            (exit, tree::empty_cgroup(cgroup, tree::BOUND).await)
        }
        None => {
            // Before the reap: while the leader is unreaped, its session id names nobody else.
            child.exited().await.map_err(reap_error)?;
            let gone = tree::end_session(child.pid(), namespace_init, tree::BOUND).await;
            (child.reap().await.map_err(reap_error)?, gone)
        }
    };
    if let Err(stragglers) = gone {
        stop_reading.cancel();
        return Err(DriverError::Internal(stragglers.to_string()));
    }
    let duration = started.elapsed();

    let drain_until = tokio::time::Instant::now() + DRAIN_GRACE;
    let out = finish_reader(stdout, &stop_reading, drain_until).await;
    let err = finish_reader(stderr, &stop_reading, drain_until).await;

    let oom = spawn
        .cgroup
        .as_deref()
        .is_some_and(|c| c.oom_kills() > oom_before);
    let (timed_out, cancelled) = match ending {
        Ending::Exited => (false, false),
        Ending::TimedOut => (true, false),
        Ending::Cancelled => (false, true),
    };
    let exit_code = match ending {
        // The shell convention: the exit code, or 128 + the signal that killed the process.
        Ending::Exited => Some(match exit {
            Exit::Code(code) => code,
            Exit::Signal(signal) => 128 + signal,
        }),
        _ => None,
    };
    Ok(exec_result(
        out,
        err,
        exit_code,
        oom,
        (timed_out, cancelled),
        duration,
    ))
}

/// What a command reports, whichever path ran it (a fresh spawn or a persistent sandbox's
/// agent): its captured output, and as the limit it hit `memory` when its cgroup counted an
/// OOM kill, else whatever its exit code says.
pub(super) fn exec_result(
    out: CappedBuffer,
    err: CappedBuffer,
    exit_code: Option<i32>,
    oom: bool,
    (timed_out, cancelled): (bool, bool),
    duration: std::time::Duration,
) -> ExecResult {
    let limit_exceeded = if oom {
        Some("memory".to_string())
    } else {
        exit_code.and_then(limit_from_code)
    };
    ExecResult {
        exit_code,
        truncated: out.truncated() || err.truncated(),
        stdout: out.into_text(),
        stderr: err.into_text(),
        timed_out,
        cancelled,
        limit_exceeded,
        duration,
    }
}

/// Waits for the reader until `deadline` to reach end of file, then stops it.
pub(super) async fn finish_reader(
    mut handle: tokio::task::JoinHandle<CappedBuffer>,
    stop: &CancellationToken,
    deadline: tokio::time::Instant,
) -> CappedBuffer {
    match tokio::time::timeout_at(deadline, &mut handle).await {
        Ok(Ok(buffer)) => buffer,
        Ok(Err(_)) => CappedBuffer::new(0),
        Err(_) => {
            stop.cancel();
            handle.await.unwrap_or_else(|_| CappedBuffer::new(0))
        }
    }
}

pub(super) async fn read_stream(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    limit: usize,
    output: OutputTx,
    stop: CancellationToken,
) -> CappedBuffer {
    let mut buffer = CappedBuffer::new(limit);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => break,
            n = pipe.read(&mut chunk) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        buffer.push(&chunk[..n]);
        // Followers are optional: a closed channel only means nobody listens.
        let _ = output
            .send((stream, Bytes::copy_from_slice(&chunk[..n])))
            .await;
    }
    buffer
}

/// Names the limit a signal exit code points to (bubblewrap reports a signalled command as
/// 128 + signal, like a shell).
fn limit_from_code(code: i32) -> Option<String> {
    match code - 128 {
        libc::SIGXCPU => Some("cpu time".into()),
        libc::SIGXFSZ => Some("file size".into()),
        _ => None,
    }
}
