//! The agent that runs inside a persistent bubblewrap sandbox (see `persistent.rs`): the
//! server's own binary, bind-mounted read-only at [`AGENT_INSIDE`] and started as
//! `daytona-mcp __sandbox-agent <fd> <sandbox id>`, before any runtime or thread exists (see
//! `main.rs`). It reads commands from descriptor `<fd>` (a Unix socket to the driver, the only
//! descriptor besides stdio it keeps) and starts each one the way `spawn.rs` does outside: a
//! session of its own, the command's rlimits, stdio from the descriptors that came with the
//! command, its working directory, umask 022, every other descriptor close-on-exec, default
//! signal dispositions, exactly the environment the driver sent (nothing of the agent's own).
//!
//! A command is forked, then waits before `execve` until the driver has placed it in its cgroup
//! (`Go`): the agent has no access to the host's cgroups, the driver does. The agent reports the
//! command's exit without reaping it (`waitid(WNOWAIT)`), so that its pid, and the process group
//! it leads, stay taken while the driver kills what is left; it reaps on `Reap`.
//!
//! The agent is not trusted more than the commands beside it: they share its uid and could
//! signal it. It makes itself non-dumpable (no `ptrace`, no `/proc/<pid>/fd` access for them);
//! whatever it says, the driver acts only on processes it verifies from the host.

use std::ffi::{CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::process::Rlimits;
use super::wire::{self, Exec, FromAgent, ToAgent};

/// The subcommand that makes the binary an agent. Not a `clap` subcommand: it must run before
/// the runtime (and its threads) start, since the agent forks.
pub const SUBCOMMAND: &str = "__sandbox-agent";

/// Where the agent binary appears inside the sandbox.
pub const AGENT_INSIDE: &str = "/.daytona-agent";

/// Runs the agent if the process was started as one, and returns its exit code; `None` for
/// any other command line.
pub fn run_if_requested() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(SUBCOMMAND)) {
        return None;
    }
    let Some(fd) = args
        .next()
        .and_then(|a| a.to_str().and_then(|s| s.parse::<RawFd>().ok()))
        .filter(|fd| *fd > 2)
    else {
        eprintln!("daytona-mcp agent: usage: {SUBCOMMAND} <fd> [sandbox]");
        return Some(2);
    };
    Some(serve(fd))
}

fn serve(fd: RawFd) -> i32 {
    // SAFETY: prctl and close_range on the calling, single-threaded process.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0);
        // Nothing inherited but the socket (bubblewrap's options descriptor, for one).
        if fd > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (fd - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (fd + 1) as u32, u32::MAX, 0u32);
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    // SAFETY: the descriptor was handed to us on the command line and is ours alone.
    let mut socket = unsafe { UnixStream::from_raw_fd(fd) };
    let hello = FromAgent::Hello {
        pid: std::process::id(),
    };
    if socket.write_all(&hello.encode()).is_err() {
        return 1;
    }
    loop {
        match read_frame(&mut socket) {
            Ok(None) => return 0,
            Ok(Some((ToAgent::Exec(exec), fds))) => {
                if let Err(e) = run_command(&mut socket, exec, fds) {
                    eprintln!("daytona-mcp agent: {e}");
                    return 1;
                }
            }
            Ok(Some((other, _))) => {
                eprintln!("daytona-mcp agent: unexpected {other:?}");
                return 1;
            }
            Err(e) => {
                eprintln!("daytona-mcp agent: {e}");
                return 1;
            }
        }
    }
}

/// The next frame and the descriptors that came with it; `None` at end of file.
fn read_frame(socket: &mut UnixStream) -> std::io::Result<Option<(ToAgent, Vec<OwnedFd>)>> {
    let mut header = [0u8; 4];
    let (mut got, fds) = loop {
        match wire::recv_with_fds(socket.as_raw_fd(), &mut header) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if got == 0 {
        return Ok(None);
    }
    while got < 4 {
        let n = socket.read(&mut header[got..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let len = wire::frame_len(header).map_err(std::io::Error::other)?;
    let mut body = vec![0u8; len];
    socket.read_exact(&mut body)?;
    let message = ToAgent::decode(&body).map_err(std::io::Error::other)?;
    Ok(Some((message, fds)))
}

fn send(socket: &mut UnixStream, message: FromAgent) -> std::io::Result<()> {
    socket.write_all(&message.encode())
}

fn expect(socket: &mut UnixStream) -> std::io::Result<ToAgent> {
    match read_frame(socket)? {
        Some((message, fds)) if fds.is_empty() => Ok(message),
        Some(_) => Err(std::io::Error::other("descriptors on a control frame")),
        None => Err(std::io::ErrorKind::UnexpectedEof.into()),
    }
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::other("a NUL byte in the command"))
}

/// `argv[0]` as given when it holds a `/`, else the first executable of that name on the
/// command's `PATH` (or the name itself, which then fails to execute).
fn program(exec: &Exec) -> Vec<u8> {
    let name = &exec.argv[0];
    if name.contains(&b'/') {
        return name.clone();
    }
    let path = exec
        .env
        .iter()
        .find_map(|e| e.strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/bin:/bin");
    for dir in path.split(|b| *b == b':').filter(|d| !d.is_empty()) {
        let mut candidate = dir.to_vec();
        candidate.push(b'/');
        candidate.extend_from_slice(name);
        if let Ok(c) = CString::new(candidate.clone()) {
            // SAFETY: access on a valid C string.
            if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
                return candidate;
            }
        }
    }
    name.clone()
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: two new descriptors, ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs one command from fork to reap, answering the driver at each step.
fn run_command(socket: &mut UnixStream, exec: Exec, fds: Vec<OwnedFd>) -> std::io::Result<()> {
    let expected = if exec.stdin { 3 } else { 2 };
    if fds.len() != expected {
        return Err(std::io::Error::other("wrong number of stdio descriptors"));
    }
    let program = cstring(&program(&exec))?;
    let argv: Vec<CString> = exec
        .argv
        .iter()
        .map(|a| cstring(a))
        .collect::<std::io::Result<_>>()?;
    let envp: Vec<CString> = exec
        .env
        .iter()
        .map(|e| cstring(e))
        .collect::<std::io::Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let cwd = cstring(&exec.cwd)?;
    let w = exec.rlimits;
    let rlimits = Rlimits {
        cpu_seconds: w.cpu_seconds,
        address_space_bytes: (w.address_space_bytes != 0).then_some(w.address_space_bytes),
        processes: (w.processes != 0).then_some(w.processes),
        file_size_bytes: w.file_size_bytes,
        open_files: w.open_files,
    };
    let raw = wire::raw(&fds);
    let (stdin, stdout, stderr) = if exec.stdin {
        (raw[0], raw[1], raw[2])
    } else {
        (-1, raw[0], raw[1])
    };
    let devnull = std::fs::File::open("/dev/null")?;
    let (go_r, go_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let name = String::from_utf8_lossy(&exec.argv[0]).into_owned();
    // SAFETY: the agent is single-threaded, so the child may run anything; it sticks to
    // system calls on data prepared above, then `execve` or `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child; see above.
        unsafe {
            let fail = |step: u32| -> ! {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                let mut report = [0u8; 8];
                report[..4].copy_from_slice(&step.to_ne_bytes());
                report[4..].copy_from_slice(&errno.to_ne_bytes());
                libc::write(err_w.as_raw_fd(), report.as_ptr().cast(), 8);
                libc::_exit(127)
            };
            libc::close(socket.as_raw_fd());
            libc::close(go_w.as_raw_fd());
            if !super::spawn::reset_signals() {
                fail(0);
            }
            if libc::setsid() < 0 {
                fail(1);
            }
            if rlimits.apply().is_err() {
                fail(2);
            }
            let stdin = if stdin >= 0 {
                stdin
            } else {
                devnull.as_raw_fd()
            };
            if libc::dup2(stdin, 0) < 0 || libc::dup2(stdout, 1) < 0 || libc::dup2(stderr, 2) < 0 {
                fail(3);
            }
            if libc::chdir(cwd.as_ptr()) != 0 {
                fail(4);
            }
            libc::umask(0o022);
            if libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                fail(6);
            }
            // Stopped here until the driver has placed this process.
            let mut go = [0u8; 1];
            if libc::read(go_r.as_raw_fd(), go.as_mut_ptr().cast(), 1) != 1 {
                libc::_exit(127);
            }
            libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            // As a shell reports it: 127 for a missing program, 126 for one it cannot run.
            let error = std::io::Error::last_os_error();
            let code = if error.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let _ = writeln!(std::fs::File::from_raw_fd(2), "{name}: {error}");
            libc::_exit(code)
        }
    }
    drop((fds, devnull, go_r, err_w));
    send(socket, FromAgent::Spawned { pid: pid as u32 })?;
    match expect(socket)? {
        ToAgent::Go => {}
        ToAgent::Abort => {
            drop(go_w);
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return send(socket, FromAgent::Reaped);
        }
        other => return Err(std::io::Error::other(format!("unexpected {other:?}"))),
    }
    let mut go_pipe = std::fs::File::from(go_w);
    // The child may be gone already (killed from outside): its exit tells.
    let _ = go_pipe.write_all(b"g");
    drop(go_pipe);
    let mut report = [0u8; 8];
    let mut err_pipe = std::fs::File::from(err_r);
    let n = loop {
        match err_pipe.read(&mut report) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if n == 8 {
        // SAFETY: reaping our own child, which reported and exited.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        let step = u32::from_ne_bytes(report[..4].try_into().expect("4 bytes"));
        let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
        return send(socket, FromAgent::Failed { step, errno });
    }
    send(socket, FromAgent::Started)?;
    // The driver says nothing while the command runs: the socket turning readable means it
    // closed (the server is gone), and the command must not outlive it.
    // SAFETY: pidfd_open of our own child; the descriptor is new and ours.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if pidfd >= 0 {
        // SAFETY: the descriptor was just opened and is ours.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        loop {
            let mut polls = [
                libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: socket.as_raw_fd(),
                    events: libc::POLLIN | libc::POLLRDHUP,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            let n = unsafe { libc::poll(polls.as_mut_ptr(), 2, -1) };
            if n < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if polls[0].revents != 0 {
                break;
            }
            if polls[1].revents != 0 {
                // SAFETY: killing our own child's process group (the child is unreaped).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                return Err(std::io::Error::other(
                    "the driver spoke or left while a command ran",
                ));
            }
        }
    }
    let (signal, value) = loop {
        // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the child unreaped.
        let (rc, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc = libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
            (rc, info)
        };
        if rc == 0 {
            // SAFETY: waitid filled a SIGCHLD siginfo.
            let status = unsafe { info.si_status() };
            break (info.si_code != libc::CLD_EXITED, status);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    };
    send(socket, FromAgent::Exited { signal, value })?;
    match expect(socket)? {
        ToAgent::Reap => {
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            send(socket, FromAgent::Reaped)
        }
        other => Err(std::io::Error::other(format!("unexpected {other:?}"))),
    }
}
