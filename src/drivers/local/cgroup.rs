//! Control groups for sandboxed commands: a pids limit (fork bombs), a memory limit (the whole
//! process tree, not one process), a CPU quota, and a reliable "kill everything" at the end.
//!
//! Works with cgroup v1 (one hierarchy per controller, as on this project's CI machines) and with
//! a delegated cgroup v2 subtree (controllers already enabled in the parent's
//! `cgroup.subtree_control`, as systemd's `Delegate=yes` gives). Children are made under the
//! server's own cgroup of each hierarchy. Where neither is writable the driver falls back to
//! rlimits alone and says so.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::tree;

/// The controllers the driver uses.
const CONTROLLERS: [&str; 3] = ["pids", "memory", "cpu"];

/// Limits applied to a command's cgroup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgroupLimits {
    pub max_processes: u64,
    pub memory_bytes: u64,
    /// CPU cores (1.5 = one and a half cores).
    pub cpus: f64,
}

/// Which cgroup layout the machine offers.
#[derive(Clone, Debug, PartialEq)]
enum Layout {
    /// One directory per controller (v1), each the driver's base under the server's cgroup.
    V1 {
        pids: Option<PathBuf>,
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
    /// The driver's base directory in a delegated v2 subtree.
    V2 { base: PathBuf },
}

impl Layout {
    /// The driver's base directory in every hierarchy.
    fn bases(&self) -> Vec<&PathBuf> {
        match self {
            Layout::V2 { base } => vec![base],
            Layout::V1 { pids, memory, cpu } => [pids, memory, cpu].into_iter().flatten().collect(),
        }
    }
}

/// Creates per-command cgroups under `daytona-mcp/<instance>` in the server's own cgroup of
/// each hierarchy, if the machine lets us.
#[derive(Debug)]
pub struct CgroupManager {
    layout: Option<Layout>,
}

impl CgroupManager {
    /// Probes the machine: creates (or reuses) a `daytona-mcp` directory under the server's own
    /// cgroup in each hierarchy it can write to.
    /// `instance` separates servers sharing a machine (it is derived from the data dir), so that
    /// one server's clean-up never touches another's commands.
    pub fn detect(instance: &str) -> CgroupManager {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let layout = detect_v2(&own, instance).or_else(|| detect_v1(&own, instance));
        CgroupManager { layout }
    }

    /// Removes every command cgroup this instance left behind (a crash, or a stop before the
    /// background removals ran), killing what still runs in them: commands die with their
    /// server through bubblewrap's `--die-with-parent`, but a few outlive a SIGKILL of the
    /// server (the chaos test `orphans` kills nodes while they start commands), and they must
    /// not overlap the next job in their sandbox.
    pub fn sweep(&self) {
        let Some(layout) = &self.layout else {
            return;
        };
        let mut names: Vec<String> = Vec::new();
        for base in layout.bases() {
            if let Ok(entries) = fs::read_dir(base) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                }
            }
        }
        for name in names {
            if let Ok((cgroup, _)) = Cgroup::open(layout, &name, false) {
                cgroup.remove();
            }
        }
    }

    /// A manager that never uses cgroups.
    pub fn disabled() -> CgroupManager {
        CgroupManager { layout: None }
    }

    /// Which limits cgroups enforce here, e.g. `["pids", "memory", "cpu"]`.
    pub fn controllers(&self) -> Vec<&'static str> {
        match &self.layout {
            None => Vec::new(),
            Some(Layout::V2 { .. }) => CONTROLLERS.to_vec(),
            Some(Layout::V1 { pids, memory, cpu }) => CONTROLLERS
                .into_iter()
                .zip([pids, memory, cpu])
                .filter_map(|(name, dir)| dir.as_ref().map(|_| name))
                .collect(),
        }
    }

    /// `"v1"`, `"v2"` or `None`.
    pub fn version(&self) -> Option<&'static str> {
        match &self.layout {
            None => None,
            Some(Layout::V1 { .. }) => Some("v1"),
            Some(Layout::V2 { .. }) => Some("v2"),
        }
    }

    /// A new cgroup for one command of sandbox `id`, named `<id>.<command>`, with `limits`.
    /// One cgroup per command rather than per sandbox: a command that used a pid namespace
    /// keeps its pids charge for a second or two while the kernel tears the namespace down, so
    /// fast commands sharing a cgroup would hit `pids.max` on processes that no longer exist.
    /// Remove it with [`Cgroup::remove`] (off the hot path: it may wait for the kernel).
    /// `Ok(None)` when cgroups are unavailable.
    pub fn create(
        &self,
        id: &str,
        command: &str,
        limits: CgroupLimits,
    ) -> io::Result<Option<Cgroup>> {
        let Some(layout) = &self.layout else {
            return Ok(None);
        };
        let (cgroup, _) = Cgroup::open(layout, &format!("{id}.{command}"), true)?;
        cgroup.apply(layout, limits)?;
        Ok(Some(cgroup))
    }

    /// Memory charged now to each sandbox's running commands, and the limit they run under,
    /// by sandbox id: the sum over its command cgroups (`<id>.<command>`, or a persistent
    /// sandbox's `<id>.p<n>`) that hold a process of the memory
    /// controller's usage. Empty without a memory cgroup.
    pub fn memory_usage(&self) -> HashMap<String, (u64, Option<u64>)> {
        let mut by_sandbox: HashMap<String, (u64, Option<u64>)> = HashMap::new();
        let (base, usage_file, limit_file) = match &self.layout {
            Some(Layout::V2 { base }) => (base, "memory.current", "memory.max"),
            Some(Layout::V1 {
                memory: Some(base), ..
            }) => (base, "memory.usage_in_bytes", "memory.limit_in_bytes"),
            _ => return by_sandbox,
        };
        let Ok(entries) = fs::read_dir(base) else {
            return by_sandbox;
        };
        let read = |dir: &Path, file: &str| {
            fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((id, _command)) = name.rsplit_once('.') else {
                continue;
            };
            let dir = entry.path();
            // Only running commands count: a persistent sandbox's cgroup outlives each of its
            // commands, and a finished command's waits to be removed.
            if fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |t| t.trim().is_empty()) {
                continue;
            }
            let Some(used) = read(&dir, usage_file) else {
                continue;
            };
            // v2 writes `max` for no limit, v1 a number near 2^63.
            let limit = read(&dir, limit_file).filter(|l| *l < 1 << 62);
            let slot = by_sandbox.entry(id.to_string()).or_default();
            slot.0 += used;
            slot.1 = slot.1.max(limit);
        }
        by_sandbox
    }

    /// Kills whatever still runs in sandbox `id`'s cgroups and removes them, including any a
    /// previous run of the server left behind.
    pub fn remove_sandbox(&self, id: &str) {
        let Some(layout) = &self.layout else {
            return;
        };
        let prefix = format!("{id}.");
        let mut names: Vec<String> = Vec::new();
        for base in layout.bases() {
            if let Ok(entries) = fs::read_dir(base) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with(&prefix) && !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
        for name in names {
            if let Ok((cgroup, _)) = Cgroup::open(layout, &name, false) {
                cgroup.remove();
            }
        }
    }
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    fs::write(dir.join(file), value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

/// The cgroup path of `controller` (or of the v2 hierarchy when `None`) from /proc/self/cgroup.
fn own_path(own: &str, controller: Option<&str>) -> Option<String> {
    own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        let matches = match controller {
            None => controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        matches.then(|| path.to_string())
    })
}

impl Drop for CgroupManager {
    /// The server is stopping: clear this instance's cgroups and its directory.
    fn drop(&mut self) {
        self.sweep();
        if let Some(layout) = &self.layout {
            for base in layout.bases() {
                let _ = fs::remove_dir(base);
            }
        }
    }
}

/// Makes `dir/daytona-mcp/<instance>` (for v2, with controllers enabled on the way down).
fn make_base(dir: PathBuf, instance: &str, v2: bool) -> Option<PathBuf> {
    let mut base = dir;
    for part in ["daytona-mcp", instance] {
        if v2 {
            fs::write(base.join("cgroup.subtree_control"), "+pids +memory +cpu").ok()?;
        }
        base = base.join(part);
        match fs::create_dir(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(_) => return None,
        }
    }
    if v2 {
        fs::write(base.join("cgroup.subtree_control"), "+pids +memory +cpu").ok()?;
    }
    Some(base)
}

fn detect_v1(own: &str, instance: &str) -> Option<Layout> {
    let find = |controller: &str| {
        let mount = Path::new("/sys/fs/cgroup").join(controller);
        if !mount.join("cgroup.procs").exists() {
            return None;
        }
        let path = own_path(own, Some(controller)).unwrap_or_else(|| "/".into());
        let base = make_base(mount.join(path.trim_start_matches('/')), instance, false)?;
        // Prove we can make and remove a child before relying on it.
        let probe = base.join(format!("probe-{}", std::process::id()));
        fs::create_dir(&probe).ok()?;
        fs::remove_dir(&probe).ok()?;
        Some(base)
    };
    let layout = Layout::V1 {
        pids: find("pids"),
        memory: find("memory"),
        cpu: find("cpu"),
    };
    match &layout {
        Layout::V1 {
            pids: None,
            memory: None,
            cpu: None,
        } => None,
        _ => Some(layout),
    }
}

fn detect_v2(own: &str, instance: &str) -> Option<Layout> {
    let root = Path::new("/sys/fs/cgroup");
    let enabled = fs::read_to_string(root.join("cgroup.controllers")).ok()?;
    if !CONTROLLERS
        .iter()
        .all(|c| enabled.split_whitespace().any(|e| e == *c))
    {
        return None;
    }
    let path = own_path(own, None)?;
    let own_dir = root.join(path.trim_start_matches('/'));
    // We may only use controllers our parent delegated to our subtree.
    let delegated = fs::read_to_string(own_dir.join("cgroup.subtree_control")).ok()?;
    if !CONTROLLERS
        .iter()
        .all(|c| delegated.split_whitespace().any(|e| e == *c))
    {
        return None;
    }
    let base = make_base(own_dir, instance, true)?;
    Some(Layout::V2 { base })
}

/// A cgroup (a directory per hierarchy) that one command runs in.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each directory, which a new process writes itself into between
    /// `clone` and `execve` (see `spawn.rs`).
    procs: Vec<CString>,
    v2: bool,
    memory_dir: Option<PathBuf>,
}

impl Cgroup {
    /// The cgroup `name` in every hierarchy of `layout`, made when `create` is set. Returns
    /// whether any directory was new.
    fn open(layout: &Layout, name: &str, create: bool) -> io::Result<(Cgroup, bool)> {
        let mut cgroup = Cgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            v2: matches!(layout, Layout::V2 { .. }),
            memory_dir: None,
        };
        let bases: Vec<(&PathBuf, bool)> = match layout {
            Layout::V2 { base } => vec![(base, true)],
            Layout::V1 { pids, memory, cpu } => [(pids, false), (memory, true), (cpu, false)]
                .into_iter()
                .filter_map(|(dir, is_memory)| dir.as_ref().map(|d| (d, is_memory)))
                .collect(),
        };
        let mut created = false;
        for (base, is_memory) in bases {
            let dir = base.join(name);
            if create {
                match fs::create_dir(&dir) {
                    Ok(()) => created = true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
                    }
                }
            }
            let procs = dir.join("cgroup.procs");
            cgroup.procs.push(
                CString::new(procs.as_os_str().as_bytes())
                    .map_err(|_| io::Error::other("cgroup path contains NUL"))?,
            );
            if is_memory {
                cgroup.memory_dir = Some(dir.clone());
            }
            cgroup.dirs.push(dir);
        }
        Ok((cgroup, created))
    }

    /// Writes `limits` into the cgroup's control files.
    fn apply(&self, layout: &Layout, limits: CgroupLimits) -> io::Result<()> {
        let quota = (limits.cpus * 100_000.0).round().max(1000.0) as u64;
        let memory = limits.memory_bytes.to_string();
        match layout {
            Layout::V2 { .. } => {
                let dir = &self.dirs[0];
                write(dir, "pids.max", &limits.max_processes.to_string())?;
                write(dir, "memory.max", &memory)?;
                // Swap would let a hog outlive its memory limit for minutes.
                let _ = write(dir, "memory.swap.max", "0");
                write(dir, "cpu.max", &format!("{quota} 100000"))?;
            }
            Layout::V1 {
                pids,
                memory: mem,
                cpu,
            } => {
                for dir in &self.dirs {
                    if pids.as_ref().is_some_and(|b| dir.starts_with(b)) {
                        write(dir, "pids.max", &limits.max_processes.to_string())?;
                    } else if mem.as_ref().is_some_and(|b| dir.starts_with(b)) {
                        // memory+swap may never be below memory: lift it, set memory, then
                        // set memory+swap equal to it (no swap).
                        let _ = write(dir, "memory.memsw.limit_in_bytes", "-1");
                        write(dir, "memory.limit_in_bytes", &memory)?;
                        let _ = write(dir, "memory.memsw.limit_in_bytes", &memory);
                    } else if cpu.as_ref().is_some_and(|b| dir.starts_with(b)) {
                        write(dir, "cpu.cfs_period_us", "100000")?;
                        write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a new process writes itself into (see `spawn.rs`).
    pub fn procs_files(&self) -> Vec<CString> {
        self.procs.clone()
    }

    /// Moves process `pid` (of the host's pid namespace) into this cgroup, in every hierarchy:
    /// how a command started by a persistent sandbox's agent joins its cgroup.
    pub fn attach(&self, pid: i32) -> io::Result<()> {
        for dir in &self.dirs {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Writes `cgroup.kill` (v2, Linux 5.14+), which kills every process of the cgroup at
    /// once. Returns whether it did.
    pub(super) fn kill_v2(&self) -> bool {
        self.v2
            && self
                .dirs
                .first()
                .is_some_and(|dir| fs::write(dir.join("cgroup.kill"), "1").is_ok())
    }

    /// The pids listed in the cgroup (zombies included, in some kernels).
    pub(super) fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in &self.dirs {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// How many processes of this cgroup the kernel's OOM killer has killed, ever.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory_dir else {
            return 0;
        };
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    let (k, v) = line.split_once(' ')?;
                    (k == "oom_kill").then(|| v.trim().parse::<u64>().ok())?
                })
            })
            .unwrap_or(0)
    }

    /// Kills what is left and removes the directories. Blocks (up to [`tree::BOUND`] and
    /// then half a second per directory): call it off the async threads.
    pub fn remove(mut self) {
        self.remove_now();
    }

    fn remove_now(&mut self) {
        if self.dirs.is_empty() {
            return;
        }
        if let Err(stragglers) = tree::empty_cgroup_blocking(self, tree::BOUND) {
            tracing::error!(cgroup = %self.dirs[0].display(), "{stragglers}");
        }
        for dir in std::mem::take(&mut self.dirs) {
            for _ in 0..50 {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        }
    }
}

impl Drop for Cgroup {
    /// A cgroup dropped without [`Cgroup::remove`] (its command's future was dropped midway)
    /// still has its processes killed and its directories removed, on a thread of its own.
    fn drop(&mut self) {
        if self.dirs.is_empty() {
            return;
        }
        let rest = Cgroup {
            dirs: std::mem::take(&mut self.dirs),
            procs: std::mem::take(&mut self.procs),
            v2: self.v2,
            memory_dir: self.memory_dir.take(),
        };
        std::thread::spawn(move || rest.remove());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_cgroup_paths() {
        let own =
            "9:name=systemd:/\n8:pids:/a/b\n4:memory:/process_api/x\n1:cpu,cpuacct:/c\n0::/u\n";
        assert_eq!(own_path(own, Some("pids")).as_deref(), Some("/a/b"));
        assert_eq!(
            own_path(own, Some("memory")).as_deref(),
            Some("/process_api/x")
        );
        assert_eq!(own_path(own, Some("cpu")).as_deref(), Some("/c"));
        assert_eq!(own_path(own, None).as_deref(), Some("/u"));
        assert_eq!(own_path(own, Some("freezer")), None);
    }
}
