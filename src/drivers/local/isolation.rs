//! How a command is confined: the bubblewrap command line that wraps it, or nothing.
//!
//! Under bubblewrap a command gets its own user, pid, network, ipc, uts and cgroup namespaces; a
//! root file system that holds only the host's system directories (read-only), a few curated
//! files of `/etc`, fresh `/proc`, `/dev` and `/tmp`, and the sandbox directory (read-write, at
//! `/workspace`). It runs as uid 1000 with no capabilities, cannot create further user
//! namespaces, and dies with the server.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::landlock::LandlockPolicy;
pub use crate::drivers::paths::WORKSPACE;

/// System directories shared read-only (or recreated as the same symlinks).
const SYSTEM_DIRS: [&str; 7] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Files and directories of `/etc` that programs need and that hold no host secrets.
pub const ETC_ENTRIES: [&str; 12] = [
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ssl",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/mime.types",
    "/etc/protocols",
    "/etc/services",
    "/etc/gitconfig",
];

/// The isolation a driver applies.
#[derive(Clone, Debug, PartialEq)]
pub enum Isolation {
    Bwrap(Bwrap),
    /// Landlock, `no_new_privs`, no capabilities, rlimits and cgroups, on the host's file
    /// system view (see `landlock.rs`).
    Landlock(LandlockPolicy),
    /// No confinement beyond rlimits and cgroups: only when the operator asked for it.
    None,
}

impl Isolation {
    pub fn name(&self) -> &'static str {
        match self {
            Isolation::Bwrap(_) => "bwrap",
            Isolation::Landlock(_) => "landlock",
            Isolation::None => "none",
        }
    }
}

/// A working bubblewrap installation.
#[derive(Clone, Debug, PartialEq)]
pub struct Bwrap {
    pub path: PathBuf,
    /// Directory with the generated `passwd`, `group` and `hosts` files.
    pub runtime_dir: PathBuf,
    /// The options that are the same for every command, computed once (they read the host's
    /// directory layout).
    fixed: Vec<OsString>,
}

/// A read-only file or directory to show inside the sandbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    pub host: PathBuf,
    pub inside: String,
}

impl Bwrap {
    /// `disable_userns`: whether this bubblewrap knows `--disable-userns` (0.8 and later).
    pub fn new(path: PathBuf, runtime_dir: PathBuf, disable_userns: bool) -> Bwrap {
        let mut a: Vec<OsString> = [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--hostname",
            "sandbox",
            "--die-with-parent",
            "--new-session",
        ]
        .map(OsString::from)
        .to_vec();
        if disable_userns {
            a.push("--disable-userns".into());
        }
        for dir in SYSTEM_DIRS {
            let host = Path::new(dir);
            match std::fs::read_link(host) {
                Ok(target) => {
                    a.extend(["--symlink".into(), target.into(), dir.into()]);
                }
                Err(_) if host.is_dir() => {
                    a.extend(["--ro-bind".into(), dir.into(), dir.into()]);
                }
                Err(_) => {}
            }
        }
        for entry in ETC_ENTRIES {
            a.extend(["--ro-bind-try".into(), entry.into(), entry.into()]);
        }
        for file in ["passwd", "group", "hosts"] {
            a.push("--ro-bind".into());
            a.push(runtime_dir.join(file).into());
            a.push(format!("/etc/{file}").into());
        }
        a.extend(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"].map(OsString::from));
        Bwrap {
            path,
            runtime_dir,
            fixed: a,
        }
    }

    /// The full argv: bubblewrap's options, then `--`, then `command` unchanged. Without
    /// `network` the sandbox gets its own network namespace (a loopback only); with it, the
    /// host's network and its `/etc/resolv.conf`.
    pub fn argv(
        &self,
        sandbox_dir: &Path,
        workdir_inside: &str,
        mounts: &[Mount],
        command: &[OsString],
        network: bool,
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::with_capacity(self.fixed.len() + 12 + command.len());
        a.push(self.path.clone().into());
        a.extend(self.fixed.iter().cloned());
        if network {
            a.extend(
                [
                    "--share-net",
                    "--ro-bind-try",
                    "/etc/resolv.conf",
                    "/etc/resolv.conf",
                ]
                .map(OsString::from),
            );
        } else {
            a.push("--unshare-net".into());
        }
        a.push("--bind".into());
        a.push(sandbox_dir.into());
        a.push(WORKSPACE.into());
        for mount in mounts {
            a.push("--ro-bind".into());
            a.push(mount.host.clone().into());
            a.push(mount.inside.clone().into());
        }
        a.push("--chdir".into());
        a.push(workdir_inside.into());
        a.push("--".into());
        a.extend(command.iter().cloned());
        a
    }

    /// Writes the small `/etc` files the sandbox sees instead of the host's.
    pub fn write_runtime_files(runtime_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(runtime_dir)?;
        std::fs::write(
            runtime_dir.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/workspace:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )?;
        std::fs::write(
            runtime_dir.join("group"),
            "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n",
        )?;
        std::fs::write(
            runtime_dir.join("hosts"),
            "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_comes_after_the_separator_unchanged() {
        let bwrap = Bwrap::new("/usr/bin/bwrap".into(), "/data/runtime".into(), true);
        let hostile = OsString::from("'; rm -rf / #");
        let argv = bwrap.argv(
            Path::new("/data/sandboxes/x"),
            "/workspace/src",
            &[],
            &["/bin/sh".into(), "-c".into(), hostile.clone()],
            false,
        );
        let sep = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(&argv[sep + 1..], &["/bin/sh".into(), "-c".into(), hostile]);
        let bind = argv.iter().position(|a| a == "/data/sandboxes/x").unwrap();
        assert_eq!(argv[bind - 1], "--bind");
        assert_eq!(argv[bind + 1], WORKSPACE);
        for flag in [
            "--unshare-net",
            "--unshare-pid",
            "--die-with-parent",
            "--disable-userns",
        ] {
            assert!(argv.iter().any(|a| a == flag), "missing {flag}");
        }
        let shared = bwrap.argv(Path::new("/x"), "/workspace", &[], &["true".into()], true);
        assert!(shared.iter().any(|a| a == "--share-net"));
        assert!(!shared.iter().any(|a| a == "--unshare-net"));
    }
}
