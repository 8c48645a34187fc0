//! A command's whole process tree, and knowing that it is gone: a job may end only once no
//! process the command started is alive (zombies are dead: they run nothing).
//!
//! Where the tree is found once the command's own process is dead:
//! - **a cgroup** (the normal case): every descendant, whatever it does, until the cgroup is
//!   empty;
//! - **without cgroups, the command's session** (`spawn.rs` starts each command in a session of
//!   its own): every descendant that keeps it, including those that moved to another process
//!   group (`set -m` job control). A process that starts a session of its own (`setsid`) leaves
//!   it; under bubblewrap it stays in the sandbox's pid namespace, whose init the driver waits
//!   for (when the init dies the kernel kills the whole namespace and waits for it before the
//!   init's exit is reported); under Landlock and `none` it is out of reach without cgroups.
//!
//! Every kill pins its target with a pidfd and checks, through the pidfd's process, that it still
//! belongs to the tree before signalling: a pid read from a listing may have been reused by an
//! unrelated process meanwhile.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::cgroup::Cgroup;

/// How long the kernel gets to let a killed tree go before the job fails saying so.
pub const BOUND: Duration = Duration::from_secs(10);

/// Processes still alive when the bound ran out.
#[derive(Debug)]
pub struct Stragglers {
    pub pids: Vec<i32>,
    /// Where they were found ("cgroup", "session", "pid namespace").
    pub place: &'static str,
}

impl std::fmt::Display for Stragglers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} process(es) of the command (pids {:?}, in its {}) were still alive {}s after \
             being killed; the kernel did not let them go (a process stuck in uninterruptible \
             I/O?)",
            self.pids.len(),
            self.pids,
            self.place,
            BOUND.as_secs()
        )
    }
}

/// The fields of `/proc/<pid>/stat` the tree needs.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stat {
    state: u8,
    ppid: i32,
    pgrp: i32,
    session: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// `pid (comm) state ppid pgrp session …`; `comm` may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        pgrp,
        session,
    })
}

/// Whether `pid` is a live process: it exists and is neither a zombie nor being released.
fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != b'Z' && s.state != b'X')
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open has no memory-safety preconditions; a new descriptor is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a new descriptor (always close-on-exec).
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_kill(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal on a descriptor we own; a dead target only answers ESRCH.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Whether the process behind `pidfd` has exited.
fn exited(pidfd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut poll, 1, 0) == 1 }
}

/// SIGKILLs each of `pids` that, once pinned by a pidfd, `still_ours` confirms. `still_ours`
/// sees the whole pinned set, so that a listing is read once per round, not once per pid.
fn kill_pinned(pids: &[i32], still_ours: impl FnOnce(&[i32]) -> Vec<i32>) {
    let pinned: Vec<(i32, OwnedFd)> = pids
        .iter()
        .filter_map(|&pid| pidfd_open(pid).map(|fd| (pid, fd)))
        .collect();
    let numbers: Vec<i32> = pinned.iter().map(|(pid, _)| *pid).collect();
    let confirmed = still_ours(&numbers);
    for (pid, fd) in &pinned {
        if confirmed.contains(pid) {
            pidfd_kill(fd);
        }
    }
}

/// Pauses between rounds: short at first (the usual tree dies in microseconds), then longer.
struct Pacing {
    pause: Duration,
    deadline: Instant,
}

impl Pacing {
    fn new(bound: Duration) -> Pacing {
        Pacing {
            pause: Duration::from_micros(250),
            deadline: Instant::now() + bound,
        }
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn next(&mut self) -> Duration {
        let pause = self.pause;
        self.pause = (self.pause * 2).min(Duration::from_millis(20));
        pause
    }
}

/// One round over a cgroup: the live pids left, after killing them (`cgroup.kill` in v2).
fn cgroup_round(cgroup: &Cgroup) -> Vec<i32> {
    let live: Vec<i32> = cgroup.pids().into_iter().filter(|&p| alive(p)).collect();
    if !live.is_empty() && !cgroup.kill_v2() {
        kill_pinned(&live, |pinned| {
            let now = cgroup.pids();
            pinned.iter().copied().filter(|p| now.contains(p)).collect()
        });
    }
    live
}

/// One round of emptying `cgroup`: `Some` once nothing in it lives or `pacing`'s bound ran out,
/// else `None` (pause for `pacing.next()`, then go again).
fn settle_cgroup(cgroup: &Cgroup, pacing: &Pacing) -> Option<Result<(), Stragglers>> {
    let live = cgroup_round(cgroup);
    if live.is_empty() {
        return Some(Ok(()));
    }
    pacing.expired().then_some(Err(Stragglers {
        pids: live,
        place: "cgroup",
    }))
}

/// Kills everything in `cgroup` and waits until nothing in it lives, for at most `bound`.
pub async fn empty_cgroup(cgroup: &Cgroup, bound: Duration) -> Result<(), Stragglers> {
    let mut pacing = Pacing::new(bound);
    loop {
        if let Some(done) = settle_cgroup(cgroup, &pacing) {
            return done;
        }
        tokio::time::sleep(pacing.next()).await;
    }
}

/// [`empty_cgroup`] for threads that may block (the removal of a cgroup).
pub fn empty_cgroup_blocking(cgroup: &Cgroup, bound: Duration) -> Result<(), Stragglers> {
    let mut pacing = Pacing::new(bound);
    loop {
        if let Some(done) = settle_cgroup(cgroup, &pacing) {
            return done;
        }
        std::thread::sleep(pacing.next());
    }
}

/// The live processes of session `leader`, other than the leader.
fn session_members(leader: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            pid != leader
                && stat(pid)
                    .is_some_and(|s| s.session == leader && s.state != b'Z' && s.state != b'X')
        })
        .collect()
}

/// The init of the pid namespace that bubblewrap `leader` made: its child, pinned. Call it
/// while `leader` is alive and unreaped (so that its pid, and the child's parent link, are
/// what they seem).
pub fn namespace_init(leader: i32) -> Option<OwnedFd> {
    let children =
        std::fs::read_to_string(format!("/proc/{leader}/task/{leader}/children")).ok()?;
    children
        .split_ascii_whitespace()
        .filter_map(|pid| pid.parse::<i32>().ok())
        .find_map(|pid| {
            let pidfd = pidfd_open(pid)?;
            // Pinned first, then checked: the pidfd's process is `leader`'s child.
            (stat(pid)?.ppid == leader).then_some(pidfd)
        })
}

/// Without a cgroup: kills every live member of session `leader` (whose leader must be dead
/// and unreaped, so that no other session can take its id) and, under bubblewrap, the
/// namespace's init, and waits until none lives, for at most `bound`.
pub async fn end_session(
    leader: i32,
    namespace_init: Option<OwnedFd>,
    bound: Duration,
) -> Result<(), Stragglers> {
    let mut pacing = Pacing::new(bound);
    loop {
        let members = session_members(leader);
        let init_alive = namespace_init.as_ref().is_some_and(|fd| !exited(fd));
        if members.is_empty() && !init_alive {
            return Ok(());
        }
        if pacing.expired() {
            return Err(if members.is_empty() {
                Stragglers {
                    pids: Vec::new(),
                    place: "pid namespace",
                }
            } else {
                Stragglers {
                    pids: members,
                    place: "session",
                }
            });
        }
        kill_pinned(&members, |pinned| {
            pinned
                .iter()
                .copied()
                .filter(|&p| stat(p).is_some_and(|s| s.session == leader))
                .collect()
        });
        if let Some(init) = namespace_init.as_ref().filter(|_| init_alive) {
            pidfd_kill(init);
        }
        tokio::time::sleep(pacing.next()).await;
    }
}

/// The live processes below `init` (every task's children, recursively), other than `keep`.
/// In a pid namespace every process descends from its init: orphans are reparented to it (or
/// to a subreaper, itself below it).
fn descendants(init: i32, keep: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut stack = vec![init];
    while let Some(pid) = stack.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in children
                .split_ascii_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                if !found.contains(&child) {
                    found.push(child);
                    stack.push(child);
                }
            }
        }
    }
    found.retain(|&p| p != keep && alive(p));
    found
}

/// The children of `parent` (every task's).
pub fn children(parent: i32) -> Vec<i32> {
    let mut found = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                found.extend(
                    text.split_ascii_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    found
}

/// The parent of `pid`, from `/proc`.
pub fn parent_of(pid: i32) -> Option<i32> {
    stat(pid).map(|s| s.ppid)
}

/// For a persistent sandbox (`persistent.rs`): kills every live process of the pid namespace
/// whose init is `init` except `keep` (its agent), and waits until none lives, for at most
/// `bound`. `init` and `keep` must be pinned by the caller, so that their pids name them.
pub async fn end_namespace_except(init: i32, keep: i32, bound: Duration) -> Result<(), Stragglers> {
    let mut pacing = Pacing::new(bound);
    loop {
        let live = descendants(init, keep);
        if live.is_empty() {
            return Ok(());
        }
        if pacing.expired() {
            return Err(Stragglers {
                pids: live,
                place: "pid namespace",
            });
        }
        kill_pinned(&live, |pinned| {
            let now = descendants(init, keep);
            pinned.iter().copied().filter(|p| now.contains(p)).collect()
        });
        tokio::time::sleep(pacing.next()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let s = parse_stat("42 (a) b (c) S 7 42 42 0 -1 4194560 0").unwrap();
        assert_eq!(
            s,
            Stat {
                state: b'S',
                ppid: 7,
                pgrp: 42,
                session: 42
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        let me = stat(std::process::id() as i32).unwrap();
        assert!(me.state != b'Z');
        assert!(alive(std::process::id() as i32));
        assert!(!alive(i32::MAX));
    }

    #[tokio::test]
    async fn ending_a_session_takes_members_of_other_process_groups() {
        use super::super::process::Rlimits;
        use super::super::spawn::{Prepared, spawn};
        use tokio::io::AsyncBufReadExt;
        let argv: Vec<std::ffi::OsString> = [
            "/bin/bash",
            "-c",
            "set -m; sleep 1000 & echo $!; sleep 1000",
        ]
        .map(Into::into)
        .to_vec();
        let env = vec![("PATH".into(), "/usr/bin:/bin".into())];
        let rlimits = Rlimits {
            cpu_seconds: 100,
            address_space_bytes: None,
            processes: None,
            file_size_bytes: 1 << 30,
            open_files: 256,
        };
        let cmd = Prepared::new(
            &argv,
            &env,
            std::path::Path::new("/"),
            false,
            rlimits,
            Vec::new(),
            None,
            Vec::new(),
        )
        .unwrap();
        let mut child = spawn(&cmd).unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .await
            .unwrap();
        let background: i32 = line.trim().parse().unwrap();
        let leader = child.pid();
        assert_eq!(stat(background).unwrap().session, leader);
        assert_ne!(
            stat(background).unwrap().pgrp,
            leader,
            "job control moved it"
        );
        child.kill_group();
        child.exited().await.unwrap();
        assert!(
            alive(background),
            "the group kill cannot reach another group"
        );
        end_session(leader, None, BOUND).await.unwrap();
        assert!(!alive(background));
        child.reap().await.unwrap();
    }
}
