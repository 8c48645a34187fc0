//! The Landlock isolation level, for machines where bubblewrap is missing or cannot create
//! namespaces: each command keeps the host's view of the file system but may only read and
//! execute the system directories and a few files of `/etc` and `/dev`, and only write in its
//! own sandbox directory and temporary directory. With Landlock ABI 4 or later it may not bind
//! or connect TCP sockets unless the sandbox has network access; with ABI 6 or later it may not
//! signal processes outside its domain (the server) or reach abstract UNIX sockets outside it.
//!
//! The ruleset is built by the server before the command is started (the child between
//! `clone` and `execve` may not allocate); the child drops every capability, sets
//! `no_new_privs` and calls `landlock_restrict_self` with it (see `spawn.rs`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope,
};

use super::isolation::{ETC_ENTRIES, SYSTEM_DIRS};
use crate::drivers::DriverError;

/// The newest ABI whose rights this driver was written and tested against.
const VETTED: ABI = ABI::V7;

/// Devices commands may read and write.
const DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// A working Landlock on this machine, and what it confines.
#[derive(Clone, Debug, PartialEq)]
pub struct LandlockPolicy {
    abi: ABI,
    /// The kernel's ABI number, for reports.
    kernel_abi: i32,
    /// Whether the server runs as root, so the child must drop its capabilities.
    pub drop_capabilities: bool,
}

/// The kernel's Landlock ABI version (0 when Landlock is unavailable).
fn kernel_abi() -> i32 {
    // SAFETY: the documented version query: no attribute, size 0, the VERSION flag.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    v.max(0) as i32
}

impl LandlockPolicy {
    /// Landlock as this kernel offers it, or why it cannot be used.
    pub fn detect() -> Result<LandlockPolicy, DriverError> {
        let kernel_abi = kernel_abi();
        if kernel_abi < 1 {
            return Err(DriverError::Unavailable(
                "Landlock is not available in this kernel (needs Linux 5.13+ with Landlock \
                 enabled in the `lsm=` boot list)"
                    .into(),
            ));
        }
        let abi = ABI::from(kernel_abi).min(VETTED);
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        Ok(LandlockPolicy {
            abi,
            kernel_abi,
            drop_capabilities: root,
        })
    }

    pub fn abi(&self) -> i32 {
        self.kernel_abi
    }

    /// Whether TCP bind and connect are restricted (ABI 4 and later).
    pub fn restricts_tcp(&self) -> bool {
        self.abi >= ABI::V4
    }

    /// Whether signals and abstract UNIX sockets are scoped to the sandbox (ABI 6 and later).
    pub fn scopes_signals(&self) -> bool {
        self.abi >= ABI::V6
    }

    /// Proves the ruleset works here: a throwaway thread restricts itself (Landlock and
    /// `no_new_privs` apply per thread) and must then be refused a file outside `sandbox_dir`.
    pub fn probe(&self, sandbox_dir: &Path, outside: &Path) -> Result<(), DriverError> {
        let ruleset = self.ruleset(sandbox_dir, sandbox_dir, &[], false)?;
        let outside = outside.to_path_buf();
        let result = std::thread::spawn(move || -> Result<(), String> {
            use std::os::fd::AsRawFd;
            // SAFETY: prctl and the Landlock syscall on this thread with valid arguments.
            unsafe {
                let (one, zero) = (1 as libc::c_ulong, 0 as libc::c_ulong);
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) != 0 {
                    return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
                }
                if libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) != 0 {
                    return Err(format!(
                        "landlock_restrict_self: {}",
                        std::io::Error::last_os_error()
                    ));
                }
            }
            match std::fs::read(&outside) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
                Err(e) => Err(format!("unexpected error reading a denied file: {e}")),
                Ok(_) => Err("a file outside the sandbox was still readable".into()),
            }
        })
        .join()
        .map_err(|_| DriverError::Internal("the Landlock probe panicked".into()))?;
        result.map_err(|e| {
            DriverError::Unavailable(format!("Landlock does not work on this machine: {e}"))
        })
    }

    /// A ruleset for one command of the sandbox at `sandbox_dir` with temporary directory
    /// `tmp_dir`, able to read `extra_read` (the call's code file), and to use TCP when
    /// `network` is set. Returns the ruleset's descriptor, ready for `landlock_restrict_self`.
    pub fn ruleset(
        &self,
        sandbox_dir: &Path,
        tmp_dir: &Path,
        extra_read: &[PathBuf],
        network: bool,
    ) -> Result<OwnedFd, DriverError> {
        let fail = |e: &dyn std::fmt::Display| {
            DriverError::internal("cannot build the Landlock ruleset", e)
        };
        let abi = self.abi;
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .map_err(|e| fail(&e))?;
        if !network && self.restricts_tcp() {
            ruleset = ruleset
                .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
                .map_err(|e| fail(&e))?;
        }
        if self.scopes_signals() {
            ruleset = ruleset.scope(Scope::from_all(abi)).map_err(|e| fail(&e))?;
        }
        let mut created = ruleset.create().map_err(|e| fail(&e))?;
        let read = AccessFs::from_read(abi);
        // Everything in its own directories, except creating device nodes.
        let own = AccessFs::from_all(abi) & !(AccessFs::MakeChar | AccessFs::MakeBlock);
        let file_only = |path: &Path, access: landlock::BitFlags<AccessFs>| {
            if path.is_dir() {
                access
            } else {
                access & AccessFs::from_file(abi)
            }
        };
        let mut rules: Vec<(PathBuf, landlock::BitFlags<AccessFs>)> = Vec::new();
        for dir in SYSTEM_DIRS {
            rules.push((dir.into(), read));
        }
        for entry in ETC_ENTRIES
            .iter()
            .chain(&["/etc/passwd", "/etc/group", "/etc/hosts"])
        {
            rules.push((entry.into(), read));
        }
        if network {
            rules.push(("/etc/resolv.conf".into(), read));
        }
        rules.push(("/proc".into(), read));
        for device in DEVICES {
            rules.push((device.into(), AccessFs::ReadFile | AccessFs::WriteFile));
        }
        for path in extra_read {
            rules.push((path.clone(), read));
        }
        rules.push((sandbox_dir.to_path_buf(), own));
        rules.push((tmp_dir.to_path_buf(), own));
        for (path, access) in rules {
            // Paths this machine lacks (e.g. /lib32) are simply not granted.
            let Ok(fd) = PathFd::new(&path) else {
                continue;
            };
            created = created
                .add_rule(PathBeneath::new(fd, file_only(&path, access)))
                .map_err(|e| fail(&format!("{}: {e}", path.display())))?;
        }
        Option::<OwnedFd>::from(created)
            .ok_or_else(|| DriverError::Internal("Landlock produced no ruleset".into()))
    }
}
