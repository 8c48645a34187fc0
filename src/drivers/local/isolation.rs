//! How a command is confined: the bubblewrap command line that wraps it, or nothing.
//!
//! Under bubblewrap a command gets its own user, pid, network, ipc, uts and cgroup namespaces; a
//! root file system that holds only the host's system directories (read-only), a few curated
//! files of `/etc`, fresh `/proc`, `/dev` and `/tmp`, and the sandbox directory (read-write, at
//! `/workspace`). It runs as uid 1000 with no capabilities, cannot create further user
//! namespaces, and dies with the server.
//!
//! bubblewrap itself runs on the host, unconfined, so nothing of the caller's may shape it: it
//! starts with [`HOST_ENV`] and `/` as its working directory, and the command's environment is
//! set inside the sandbox only (`--clearenv`, then `--setenv` per variable). Its options travel
//! in a descriptor (`--args`), so the environment, which may hold secrets, shows in no command
//! line on the host.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::landlock::LandlockPolicy;
pub use crate::drivers::paths::WORKSPACE;

/// The whole environment of the host-side bubblewrap process, whatever the call: the dynamic
/// loader's variables (`LD_PRELOAD`, `LD_LIBRARY_PATH`, `LD_AUDIT`, …) and everything else a
/// caller names would otherwise act on an unconfined process on the host.
pub const HOST_ENV: [(&str, &str); 1] = [("PATH", "/usr/bin:/bin")];

/// System directories shared read-only (or recreated as the same symlinks).
pub const SYSTEM_DIRS: [&str; 7] = [
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

    /// bubblewrap's options for one command. Without `network` the sandbox gets its own
    /// network namespace (a loopback only); with it, the host's network and its
    /// `/etc/resolv.conf`. `env` becomes the command's whole environment, inside the sandbox.
    pub fn options(
        &self,
        sandbox_dir: &Path,
        workdir_inside: &str,
        mounts: &[Mount],
        network: bool,
        env: &[(OsString, OsString)],
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> =
            Vec::with_capacity(self.fixed.len() + 12 + mounts.len() * 3 + env.len() * 3);
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
        a.push("--clearenv".into());
        for (key, value) in env {
            a.push("--setenv".into());
            a.push(key.clone());
            a.push(value.clone());
        }
        a
    }

    /// The host-side argv: bubblewrap reads its options from descriptor `options_fd` (see
    /// [`encode_options`]), then `--`, then `command` unchanged.
    pub fn argv(&self, options_fd: RawFd, command: &[OsString]) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::with_capacity(4 + command.len());
        a.push(self.path.clone().into());
        a.push("--args".into());
        a.push(options_fd.to_string().into());
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
        // Public content, with the modes programs expect of these files (the server's umask
        // is private).
        use std::os::unix::fs::PermissionsExt;
        for file in ["passwd", "group", "hosts"] {
            std::fs::set_permissions(
                runtime_dir.join(file),
                std::fs::Permissions::from_mode(0o644),
            )?;
        }
        Ok(())
    }
}

/// The host path under which `path` lies and which every sandbox can read (a system directory,
/// a curated `/etc` entry, the generated `/etc` files' places), or `None`. Both are compared
/// with their symlinks resolved (`path` as far as it exists): `/bin/x` is under `/usr` on a
/// merged-/usr system, and a symlink into `/usr` leads there.
pub fn readable_by_sandboxes(path: &Path) -> Option<&'static str> {
    let resolved = resolve_existing_prefix(path);
    SYSTEM_DIRS
        .iter()
        .chain(ETC_ENTRIES.iter())
        .chain(&[
            "/etc/passwd",
            "/etc/group",
            "/etc/hosts",
            "/etc/resolv.conf",
        ])
        .copied()
        .find(|entry| {
            let entry = Path::new(entry);
            resolved.starts_with(entry)
                || entry
                    .canonicalize()
                    .is_ok_and(|real| resolved.starts_with(real))
        })
}

/// `path` made absolute, with symlinks resolved in the part of it that exists.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// `options` as bubblewrap's `--args` reads them: each one NUL-terminated. `None` if an option
/// holds a NUL byte, which would split it into two options.
pub fn encode_options(options: &[OsString]) -> Option<Vec<u8>> {
    let mut data = Vec::with_capacity(options.iter().map(|o| o.len() + 1).sum());
    for option in options {
        let bytes = option.as_bytes();
        if bytes.contains(&0) {
            return None;
        }
        data.extend_from_slice(bytes);
        data.push(0);
    }
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_every_sandbox_reads_are_recognised() {
        assert_eq!(
            readable_by_sandboxes(Path::new("/usr/local/x/y")),
            Some("/usr")
        );
        assert_eq!(readable_by_sandboxes(Path::new("/usr")), Some("/usr"));
        assert_eq!(
            readable_by_sandboxes(Path::new("/etc/ssl/private/db")),
            Some("/etc/ssl")
        );
        assert_eq!(readable_by_sandboxes(Path::new("/var/lib/daytona")), None);
        assert_eq!(readable_by_sandboxes(Path::new("/usrx/data")), None);
        assert_eq!(readable_by_sandboxes(Path::new("/etc/daytona")), None);
        // Through symlinks, existing or not below them.
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/usr/share", dir.path().join("link")).unwrap();
        assert_eq!(
            readable_by_sandboxes(&dir.path().join("link/new/data")),
            Some("/usr")
        );
        assert_eq!(readable_by_sandboxes(&dir.path().join("data")), None);
    }

    #[test]
    fn command_comes_after_the_separator_unchanged_and_options_travel_apart() {
        let bwrap = Bwrap::new("/usr/bin/bwrap".into(), "/data/runtime".into(), true);
        let hostile = OsString::from("'; rm -rf / #");
        let argv = bwrap.argv(7, &["/bin/sh".into(), "-c".into(), hostile.clone()]);
        assert_eq!(
            argv,
            ["/usr/bin/bwrap", "--args", "7", "--", "/bin/sh", "-c"]
                .map(OsString::from)
                .into_iter()
                .chain([hostile])
                .collect::<Vec<_>>()
        );
        let env = vec![("TOKEN".into(), "s3cret --bind / /".into())];
        let options = bwrap.options(
            Path::new("/data/sandboxes/x"),
            "/workspace/src",
            &[],
            false,
            &env,
        );
        let bind = options
            .iter()
            .position(|a| a == "/data/sandboxes/x")
            .unwrap();
        assert_eq!(options[bind - 1], "--bind");
        assert_eq!(options[bind + 1], WORKSPACE);
        for flag in [
            "--unshare-net",
            "--unshare-pid",
            "--die-with-parent",
            "--disable-userns",
        ] {
            assert!(options.iter().any(|a| a == flag), "missing {flag}");
        }
        // The environment is cleared, then set, inside; a value stays one option.
        let clear = options.iter().position(|a| a == "--clearenv").unwrap();
        assert_eq!(
            &options[clear + 1..],
            ["--setenv", "TOKEN", "s3cret --bind / /"].map(OsString::from)
        );
        let encoded = encode_options(&options).unwrap();
        assert_eq!(encoded.iter().filter(|b| **b == 0).count(), options.len());
        assert!(encode_options(&["a\\0--bind".into()]).is_some());
        assert!(encode_options(&[OsString::from("a\u{0}--bind")]).is_none());
        let shared = bwrap.options(Path::new("/x"), "/workspace", &[], true, &[]);
        assert!(shared.iter().any(|a| a == "--share-net"));
        assert!(!shared.iter().any(|a| a == "--unshare-net"));
    }
}
