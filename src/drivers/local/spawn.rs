//! Starting a command the way `posix_spawn` does, plus what `posix_spawn` cannot do.
//!
//! The child is created with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`: it borrows the
//! server's memory until it calls `execve`, so nothing is copied however large the server is
//! (a plain `fork` of a big, multi-threaded server costs milliseconds). Before `execve` the child
//! starts its own session (and so process group), joins its cgroups, sets its rlimits and
//! umask, wires its stdio and marks every other descriptor close-on-exec except the ones the
//! caller passes on purpose; every byte it needs was prepared by the parent, because a child
//! sharing the parent's memory must not allocate or take locks.
//!
//! The parent gets a pidfd: exit is awaited by polling it (no thread per child, no `SIGCHLD`
//! races), and the child stays unreaped until [`Child::reap`], so its pid, and the process group
//! it leads, cannot be reused while the server may still signal them.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use super::process::Rlimits;

/// Stack for the child between `clone` and `execve`; it only makes system calls.
const CHILD_STACK: usize = 64 * 1024;

/// Which preparation step failed in the child, reported through the error pipe.
const STEPS: [&str; 12] = [
    "reset signals",
    "new session",
    "join cgroup",
    "set rlimits",
    "set up stdio",
    "change directory",
    "execute",
    "drop capabilities",
    "set no_new_privs",
    "apply the Landlock ruleset",
    "mark inherited descriptors close-on-exec",
    "pass descriptors",
];

/// The umask commands start with: the conventional one, not the server's private one.
const COMMAND_UMASK: libc::mode_t = 0o022;

/// Confinement applied in the child just before `execve` (the Landlock isolation level).
#[derive(Debug)]
pub struct Confinement {
    /// A Landlock ruleset descriptor to restrict the child with.
    pub ruleset: OwnedFd,
    /// Drop every capability (bounding, ambient, effective, permitted, inheritable): the server
    /// runs as root, and a root command without namespaces must not keep root's powers.
    pub drop_capabilities: bool,
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Puts every signal back to its default action and unblocks them all, in a child between fork
/// (or clone) and exec, so that none of the server's handlers or masks reach the command; false
/// when the mask cannot be set. Only system calls.
pub(super) unsafe fn reset_signals() -> bool {
    // SAFETY: sigaction and sigprocmask on the calling process with valid arguments.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=libc::SIGRTMAX() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) == 0
    }
}

/// Drops every capability of the calling process, for good. Only system calls.
unsafe fn drop_capabilities() -> bool {
    // SAFETY: prctl and capset on the calling process with valid arguments.
    unsafe {
        for cap in 0..64 {
            if libc::prctl(
                libc::PR_CAPBSET_DROP,
                cap as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) != 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
            {
                return false;
            }
        }
        // Older kernels without ambient capabilities answer EINVAL: nothing to clear.
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) == 0
    }
}

/// A command ready to start: C strings and pointer arrays built up front.
pub struct Prepared {
    program: CString,
    /// Owns the strings `argv_ptrs` points into.
    _argv: Vec<CString>,
    /// Owns the strings `envp_ptrs` points into.
    _envp: Vec<CString>,
    cwd: CString,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    pipe_stdin: bool,
    rlimits: Rlimits,
    cgroup_procs: Vec<CString>,
    confinement: Option<Confinement>,
    /// Descriptors the command inherits on purpose (at the same numbers); every other
    /// descriptor above 2 is closed at `execve`. Held until the command has started.
    _passed: Vec<OwnedFd>,
    passed_raw: Vec<RawFd>,
}

// SAFETY: the raw pointers point into the `CString`s owned by the same value.
unsafe impl Send for Prepared {}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in command"))
}

impl Prepared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        argv: &[OsString],
        env: &[(OsString, OsString)],
        cwd: &Path,
        pipe_stdin: bool,
        rlimits: Rlimits,
        cgroup_procs: Vec<CString>,
        confinement: Option<Confinement>,
        passed: Vec<OwnedFd>,
    ) -> io::Result<Prepared> {
        let Some(first) = argv.first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
        };
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let envp: Vec<CString> = env
            .iter()
            .map(|(k, v)| {
                let mut pair = k.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(v.as_bytes());
                cstring(&pair)
            })
            .collect::<io::Result<_>>()?;
        let mut argv_ptrs: Vec<_> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<_> = envp.iter().map(|e| e.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Ok(Prepared {
            program: cstring(first.as_bytes())?,
            _argv: argv,
            _envp: envp,
            cwd: cstring(cwd.as_os_str().as_bytes())?,
            argv_ptrs,
            envp_ptrs,
            pipe_stdin,
            rlimits,
            cgroup_procs,
            confinement,
            passed_raw: passed.iter().map(|fd| fd.as_raw_fd()).collect(),
            _passed: passed,
        })
    }

    /// The program, for error messages.
    pub fn program(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }
}

/// A started child with its pipes.
pub struct Child {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

pub(super) fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors we now own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// `fd`, moved above 2 if it is not already (a server started with a closed standard
/// descriptor gets them from the kernel): the child installs its stdio on 0, 1 and 2, which
/// must not clobber a descriptor it still needs.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl on a descriptor we own; the duplicate is new and ours.
    unsafe {
        let moved = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3);
        if moved < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(moved))
    }
}

/// An anonymous in-memory file holding `data`, positioned at its start and close-on-exec
/// (pass it to a command through [`Prepared::new`]'s `passed`). Used for bubblewrap's options,
/// which carry the command's environment: in a file they show in no command line.
pub fn memfd_with(name: &CStr, data: &[u8]) -> io::Result<OwnedFd> {
    use std::io::{Seek, Write};
    // SAFETY: memfd_create with a valid name; the descriptor is new and ours.
    let fd = unsafe {
        let fd = libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    let mut file = std::fs::File::from(above_stdio(fd)?);
    file.write_all(data)?;
    file.rewind()?;
    Ok(file.into())
}

pub(super) fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What the child reads; lives on the parent's stack, which the child shares until `execve`.
struct ChildArgs<'a> {
    cmd: &'a Prepared,
    /// `-1`: /dev/null.
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    errors: RawFd,
    devnull: &'a CString,
}

/// Reports a failed step and exits. Only system calls.
unsafe fn fail(errors: RawFd, step: usize) -> ! {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut report = [0u8; 8];
    report[..4].copy_from_slice(&(step as i32).to_ne_bytes());
    report[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: writing a stack buffer to a descriptor, then exiting without running destructors.
    unsafe {
        libc::write(errors, report.as_ptr().cast(), report.len());
        libc::_exit(127)
    }
}

/// Moves `fd` onto `target`, leaving it open across `execve`.
unsafe fn install(fd: RawFd, target: RawFd) -> bool {
    // SAFETY: plain descriptor operations.
    unsafe {
        if fd == target {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            flags >= 0 && libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) >= 0
        } else {
            libc::dup2(fd, target) >= 0
        }
    }
}

/// Marks every descriptor above 2 close-on-exec: `close_range` (Linux 5.11), else one `fcntl`
/// per entry of `/proc/self/fd`. Only system calls, on a stack buffer.
unsafe fn mark_cloexec_above_stdio() -> bool {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    // SAFETY: as above.
    rc == 0 || unsafe { mark_cloexec_by_listing() }
}

/// The fallback of [`mark_cloexec_above_stdio`] for kernels without `close_range`: lists
/// `/proc/self/fd` with `getdents64`. Fails (and the command does not start) when it cannot.
unsafe fn mark_cloexec_by_listing() -> bool {
    // SAFETY: open/getdents64/fcntl/close on descriptors and a stack buffer of this process.
    unsafe {
        let dir = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return false;
        }
        // 8-byte aligned, as `struct linux_dirent64` requires.
        let mut buffer = [0u64; 512];
        loop {
            let n = libc::syscall(
                libc::SYS_getdents64,
                dir,
                buffer.as_mut_ptr(),
                std::mem::size_of_val(&buffer),
            );
            if n < 0 {
                libc::close(dir);
                return false;
            }
            if n == 0 {
                break;
            }
            let bytes = buffer.as_ptr().cast::<u8>();
            let mut offset = 0usize;
            while offset < n as usize {
                // d_ino (8), d_off (8), d_reclen (2), d_type (1), then the NUL-terminated name.
                let record = bytes.add(offset);
                let reclen = u16::from_ne_bytes([*record.add(16), *record.add(17)]) as usize;
                let mut fd: libc::c_int = 0;
                let mut digits = 0;
                let mut name = record.add(19);
                while (*name).is_ascii_digit() && digits < 10 {
                    fd = fd * 10 + libc::c_int::from(*name - b'0');
                    digits += 1;
                    name = name.add(1);
                }
                if digits > 0 && *name == 0 && fd > 2 && fd != dir {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
                offset += reclen.max(1);
            }
        }
        libc::close(dir);
        true
    }
}

/// The child, between `clone` and `execve`. It shares the parent's memory: no allocation, no
/// locks, nothing but system calls on data prepared by the parent.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the `ChildArgs` on the parent's stack, alive until execve (vfork).
    unsafe {
        let a = &*(arg as *const ChildArgs<'_>);
        // The server's signal handlers must not run here, nor be inherited by the command.
        if !reset_signals() {
            fail(a.errors, 0);
        }
        // A session of its own (so a process group of its own, whose id is the child's pid):
        // kills reach the group, and without cgroups the session is how stragglers that moved
        // to another group are found (see `tree.rs`). It also leaves the server's controlling
        // terminal behind.
        if libc::setsid() < 0 {
            fail(a.errors, 1);
        }
        for procs in &a.cmd.cgroup_procs {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            // "0" means the writing process itself, in both cgroup versions.
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(a.errors, 2);
            }
            libc::close(fd);
        }
        let stdin = if a.stdin >= 0 {
            a.stdin
        } else {
            libc::open(a.devnull.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)
        };
        if stdin < 0 || !install(stdin, 0) || !install(a.stdout, 1) || !install(a.stderr, 2) {
            fail(a.errors, 4);
        }
        if libc::chdir(a.cmd.cwd.as_ptr()) != 0 {
            fail(a.errors, 5);
        }
        libc::umask(COMMAND_UMASK);
        // Whatever the server holds without close-on-exec (inherited from its own parent, or
        // opened by a library) must not reach the command: every descriptor above 2 is marked
        // close-on-exec (not closed, so the error pipe and the ruleset stay usable until
        // `execve`), then the ones passed on purpose are let through.
        if !mark_cloexec_above_stdio() {
            fail(a.errors, 10);
        }
        for &fd in &a.cmd.passed_raw {
            if !install(fd, fd) {
                fail(a.errors, 11);
            }
        }
        // After every step that opens a descriptor: the child starts with the server's
        // descriptors (a server with many sandboxes holds thousands), so with `RLIMIT_NOFILE`
        // already lowered to the command's limit, opening `/dev/null` would find no free
        // number below it and fail with EMFILE. The limit only bounds new descriptors, and
        // the inherited ones above 2 close at `execve`.
        if a.cmd.rlimits.apply().is_err() {
            fail(a.errors, 3);
        }
        // Last, so that the steps above (cgroup files, /dev/null) are not subject to it.
        if let Some(confinement) = &a.cmd.confinement {
            if confinement.drop_capabilities && !drop_capabilities() {
                fail(a.errors, 7);
            }
            let (one, zero) = (1 as libc::c_ulong, 0 as libc::c_ulong);
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) != 0 {
                fail(a.errors, 8);
            }
            if libc::syscall(
                libc::SYS_landlock_restrict_self,
                confinement.ruleset.as_raw_fd(),
                0u32,
            ) != 0
            {
                fail(a.errors, 9);
            }
        }
        libc::execve(
            a.cmd.program.as_ptr(),
            a.cmd.argv_ptrs.as_ptr(),
            a.cmd.envp_ptrs.as_ptr(),
        );
        fail(a.errors, 6)
    }
}

/// Starts the prepared command. Returns once the child has called `execve` (or failed).
pub fn spawn(cmd: &Prepared) -> io::Result<Child> {
    let (stdout_r, stdout_w) = pipe_pair()?;
    let (stderr_r, stderr_w) = pipe_pair()?;
    let (errors_r, errors_w) = pipe_pair()?;
    let stdin_pair = if cmd.pipe_stdin {
        Some(pipe_pair()?)
    } else {
        None
    };
    let devnull = CString::new("/dev/null").expect("no NUL");
    let args = ChildArgs {
        cmd,
        stdin: stdin_pair.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()),
        stdout: stdout_w.as_raw_fd(),
        stderr: stderr_w.as_raw_fd(),
        errors: errors_w.as_raw_fd(),
        devnull: &devnull,
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down; its top, 16-byte aligned.
    let top = ((stack.as_mut_ptr() as usize + CHILD_STACK) & !15) as *mut libc::c_void;
    let mut pidfd: libc::c_int = -1;
    // SAFETY: signals are blocked around clone so that no handler of the server runs on the
    // child's borrowed stack; the child resets handlers and unblocks before execve. With
    // CLONE_VFORK this thread sleeps until the child has exec'd or exited, so `args`, `stack`
    // and `cmd` outlive their use by the child.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            &args as *const ChildArgs<'_> as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        );
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        pid
    };
    drop(stack);
    // SAFETY: CLONE_PIDFD stored a new descriptor we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((stdout_w, stderr_w, errors_w));
    let stdin = match stdin_pair {
        Some((r, w)) => {
            drop(r);
            set_nonblocking(&w)?;
            Some(pipe::Sender::from_owned_fd_unchecked(w)?)
        }
        None => None,
    };

    // The child has exec'd (closing its copy of the error pipe) or reported and exited.
    let mut report = [0u8; 8];
    // SAFETY: reading into a stack buffer from a descriptor we own.
    let n = unsafe { libc::read(errors_r.as_raw_fd(), report.as_mut_ptr().cast(), 8) };
    if n == 8 {
        let step = i32::from_ne_bytes(report[..4].try_into().expect("4 bytes")) as usize;
        let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
        let _ = reap_blocking(pidfd.as_raw_fd());
        let cause = io::Error::from_raw_os_error(errno);
        return Err(io::Error::new(
            cause.kind(),
            format!(
                "cannot start {}: {} failed: {cause}",
                cmd.program(),
                STEPS.get(step).unwrap_or(&"setup")
            ),
        ));
    }
    set_nonblocking(&stdout_r)?;
    set_nonblocking(&stderr_r)?;
    // SAFETY: the OwnedFd is a valid open pidfd that the AsyncFd owns until dropped or
    // `into_inner`.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Child {
        pid,
        pidfd: Some(pidfd),
        stdin,
        stdout: Some(pipe::Receiver::from_owned_fd_unchecked(stdout_r)?),
        stderr: Some(pipe::Receiver::from_owned_fd_unchecked(stderr_r)?),
    })
}

/// Reaps the process behind `pidfd`, waiting for it to exit.
fn reap_blocking(pidfd: RawFd) -> io::Result<Exit> {
    loop {
        // SAFETY: `info` is a valid out-pointer.
        let (rc, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc = libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, libc::WEXITED);
            (rc, info)
        };
        if rc == 0 {
            // SAFETY: waitid filled a SIGCHLD siginfo.
            let status = unsafe { info.si_status() };
            return Ok(if info.si_code == libc::CLD_EXITED {
                Exit::Code(status)
            } else {
                Exit::Signal(status)
            });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

impl Child {
    /// The child's pid, which is also its process group and session id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Resolves when the child has exited (it stays unreaped).
    pub async fn exited(&self) -> io::Result<()> {
        let pidfd = self.pidfd.as_ref().expect("not reaped");
        let _guard = pidfd.readable().await?;
        Ok(())
    }

    /// Sends SIGKILL to the child's process group (the child and what it started, unless they
    /// moved to another group).
    pub fn kill_group(&self) {
        // SAFETY: the child is unreaped, so the group id cannot name anyone else.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
        }
    }

    /// Waits for the exit and reaps the child.
    pub async fn reap(mut self) -> io::Result<Exit> {
        self.exited().await?;
        let pidfd = self.pidfd.take().expect("not reaped").into_inner();
        reap_blocking(pidfd.as_raw_fd())
    }
}

impl Drop for Child {
    /// A child dropped unreaped (its caller was cancelled) is killed, then reaped off-thread.
    fn drop(&mut self) {
        if let Some(pidfd) = self.pidfd.take() {
            self.kill_group();
            // SAFETY: pidfd_send_signal on a descriptor we own.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
            let pidfd = pidfd.into_inner();
            std::thread::spawn(move || {
                let _ = reap_blocking(pidfd.as_raw_fd());
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn rlimits() -> Rlimits {
        Rlimits {
            cpu_seconds: 10,
            address_space_bytes: Some(1 << 32),
            processes: None,
            file_size_bytes: 1 << 30,
            open_files: 256,
        }
    }

    fn prepared(argv: &[&str], stdin: bool) -> Prepared {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let env = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("X".into(), "y z".into()),
        ];
        Prepared::new(
            &argv,
            &env,
            Path::new("/tmp"),
            stdin,
            rlimits(),
            Vec::new(),
            None,
            Vec::new(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn runs_with_env_cwd_stdin_and_exit_code() {
        let cmd = prepared(
            &[
                "/bin/sh",
                "-c",
                "read l; echo \"$l|$X|$(pwd)\"; echo err >&2; exit 7",
            ],
            true,
        );
        let mut child = spawn(&cmd).unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\n").await.unwrap();
        drop(stdin);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        assert_eq!(out, "hello|y z|/tmp\n");
        assert_eq!(err, "err\n");
        assert_eq!(child.reap().await.unwrap(), Exit::Code(7));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_naming_the_step() {
        let err = spawn(&prepared(&["/nonexistent/prog"], false))
            .err()
            .unwrap();
        assert!(err.to_string().contains("execute failed"), "{err}");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn rlimits_apply_and_signals_report() {
        let child = spawn(&prepared(
            &["/bin/sh", "-c", "ulimit -n; kill -TERM $$"],
            false,
        ))
        .unwrap();
        let mut c = child;
        let mut out = String::new();
        c.stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert_eq!(out.trim(), "256");
        assert_eq!(c.reap().await.unwrap(), Exit::Signal(libc::SIGTERM));
    }

    #[tokio::test]
    async fn killing_the_group_takes_children_too() {
        let child = spawn(&prepared(
            &["/bin/sh", "-c", "sleep 100 & sleep 100"],
            false,
        ))
        .unwrap();
        child.kill_group();
        assert_eq!(child.reap().await.unwrap(), Exit::Signal(libc::SIGKILL));
    }

    async fn stdout_of(child: &mut Child) -> String {
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn only_stdio_and_passed_descriptors_reach_the_command() {
        // SAFETY: a descriptor without close-on-exec, as a careless library would leave one.
        let leaked = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        assert!(leaked > 2);
        let passed = memfd_with(c"test", b"passed on purpose").unwrap();
        let number = passed.as_raw_fd();
        let mut argv: Vec<OsString> = ["/bin/bash", "-c", "ls /proc/$$/fd; cat <&$0; umask"]
            .map(OsString::from)
            .to_vec();
        argv.push(number.to_string().into());
        let cmd = Prepared::new(
            &argv,
            &[("PATH".into(), "/usr/bin:/bin".into())],
            Path::new("/"),
            false,
            rlimits(),
            Vec::new(),
            None,
            vec![passed],
        )
        .unwrap();
        let mut child = spawn(&cmd).unwrap();
        drop(cmd);
        let out = stdout_of(&mut child).await;
        // SAFETY: closing the descriptor this test opened.
        unsafe { libc::close(leaked) };
        assert_eq!(child.reap().await.unwrap(), Exit::Code(0), "{out}");
        let mut fds: Vec<i32> = out
            .lines()
            .take_while(|l| !l.starts_with("passed"))
            .map(|l| l.parse().unwrap())
            .collect();
        fds.sort_unstable();
        assert_eq!(fds, vec![0, 1, 2, number], "{out}");
        assert!(out.contains("passed on purpose"), "{out}");
        // The server's umask (restrictive) is not the command's.
        assert!(out.ends_with("0022\n"), "{out}");
    }

    #[test]
    fn the_listing_fallback_marks_every_descriptor_above_stdio() {
        // SAFETY: descriptor calls on descriptors this test opens and closes.
        unsafe {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            let high = libc::fcntl(fd, libc::F_DUPFD, 900);
            assert_eq!(libc::fcntl(high, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            assert!(mark_cloexec_by_listing());
            assert_ne!(libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            assert_ne!(libc::fcntl(high, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            // Standard descriptors are left alone.
            assert_eq!(libc::fcntl(0, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            libc::close(fd);
            libc::close(high);
        }
    }
}
