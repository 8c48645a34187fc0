//! Resolving paths inside a sandbox directory by file descriptor, so that nothing a sandboxed
//! command does (planting symlinks, swapping directories) can redirect the server outside it.
//!
//! Every lookup starts from a descriptor of the sandbox root and goes through `openat2` with
//! `RESOLVE_BENEATH` (no `..` above the root, no absolute symlinks, every symlink's target must
//! stay beneath the root), `RESOLVE_NO_MAGICLINKS` (no `/proc/<pid>/fd` jumps) and
//! `RESOLVE_NO_XDEV` (no crossing into another mount). The kernel checks this during the walk
//! itself, so there is no window between a check and a use: once a descriptor is open, later
//! operations act on it (`*at` calls with it as the directory, `fstat` on it), never on a path
//! string resolved again.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path};

/// How many times a lookup is retried when the kernel reports a concurrent rename during it
/// (`EAGAIN` from `openat2`).
const RACE_RETRIES: usize = 8;

/// A descriptor of a sandbox root, the anchor of every lookup.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Root {
    /// Opens the sandbox root itself. The path is the server's own (`<data_dir>/sandboxes/<id>`);
    /// its last component must be a real directory, not a symlink.
    pub fn open(dir: &Path) -> io::Result<Root> {
        let path = cstring(dir.as_os_str().as_bytes())?;
        // SAFETY: a valid C string; the result is a new descriptor we own.
        let fd = check(unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just opened.
        Ok(Root {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Opens `relative` (sandbox-relative; empty is the root) beneath the root with `flags`
    /// (`O_CLOEXEC` is always added) and, for `O_CREAT`, `mode`.
    pub fn open_at(&self, relative: &Path, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
        open_beneath(self.fd(), relative, flags, mode)
    }
}

/// `openat2(dirfd, relative, flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`.
pub fn open_beneath(
    dirfd: RawFd,
    relative: &Path,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    let bytes = relative.as_os_str().as_bytes();
    let path = cstring(if bytes.is_empty() { b"." } else { bytes })?;
    // SAFETY: `open_how` is plain data; zero is a valid value for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 {
        u64::from(mode)
    } else {
        0
    };
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV;
    let mut attempt = 0;
    loop {
        // SAFETY: valid path and `open_how` pointers with the struct's size.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if rc >= 0 {
            // SAFETY: openat2 returned a new descriptor we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) });
        }
        let err = io::Error::last_os_error();
        attempt += 1;
        if err.raw_os_error() == Some(libc::EAGAIN) && attempt < RACE_RETRIES {
            continue;
        }
        return Err(err);
    }
}

/// Opens the file behind an `O_PATH` descriptor again for reading or writing. The new
/// descriptor refers to the very inode `fd` does (the kernel follows the descriptor, not a
/// path), so a type checked on `fd` holds for the result.
pub fn reopen(fd: &OwnedFd, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = cstring(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    // SAFETY: a valid C string; the result is a new descriptor we own.
    let new = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY) })
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                io::Error::other("cannot reopen a file descriptor: is /proc mounted?")
            } else {
                e
            }
        })?;
    // SAFETY: just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `fstat` of a descriptor.
pub fn stat_fd(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: `st` is a valid out-pointer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::fstat(fd, &mut st))?;
        Ok(st)
    }
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`: the entry itself, never a symlink's target.
pub fn lstat_at(dirfd: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let name = cstring(name.as_bytes())?;
    // SAFETY: valid C string and out-pointer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::fstatat(
            dirfd,
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        ))?;
        Ok(st)
    }
}

/// The text of a symlink opened with `O_PATH | O_NOFOLLOW` (an empty name reads `fd` itself).
pub fn readlink_fd(dirfd: RawFd, name: &OsStr) -> io::Result<OsString> {
    let name = cstring(name.as_bytes())?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid C string and buffer with its length.
    let n = unsafe { libc::readlinkat(dirfd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsString::from_vec(buf))
}

/// The names in a directory (without `.` and `..`), read through a descriptor of it.
pub fn read_dir(dirfd: RawFd) -> io::Result<Vec<OsString>> {
    // The directory stream takes ownership of its descriptor, so give it a duplicate opened for
    // reading (an `O_PATH` descriptor cannot be read).
    let own = open_beneath(dirfd, Path::new(""), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let raw = own.as_raw_fd();
    // SAFETY: `raw` is a directory descriptor; on success the stream owns it.
    let dir = unsafe { libc::fdopendir(raw) };
    if dir.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(own);
    let mut names = Vec::new();
    loop {
        // readdir signals errors only through errno, so clear it first.
        // SAFETY: `dir` is a valid stream until closedir; errno is thread-local.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: as above.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            let err = io::Error::last_os_error();
            // SAFETY: closes the stream and its descriptor once.
            unsafe { libc::closedir(dir) };
            if err.raw_os_error().unwrap_or(0) != 0 {
                return Err(err);
            }
            return Ok(names);
        }
        // SAFETY: `d_name` is a NUL-terminated name inside the entry readdir returned.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
}

/// `fchmod(fd, mode)`: sets the mode exactly, whatever the process's umask.
pub fn chmod_fd(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod on a descriptor the caller holds.
    check(unsafe { libc::fchmod(fd, mode as libc::mode_t) }).map(|_| ())
}

/// `mkdirat(dirfd, name, mode)`.
pub fn mkdir_at(dirfd: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let name = cstring(name.as_bytes())?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(dirfd, name.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

/// `unlinkat(dirfd, name, flags)`: removes the entry itself (a symlink, not its target).
pub fn unlink_at(dirfd: RawFd, name: &OsStr, remove_dir: bool) -> io::Result<()> {
    let name = cstring(name.as_bytes())?;
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid C string.
    check(unsafe { libc::unlinkat(dirfd, name.as_ptr(), flags) }).map(|_| ())
}

/// `renameat(from_dir, from, to_dir, to)`.
pub fn rename_at(from_dir: RawFd, from: &OsStr, to_dir: RawFd, to: &OsStr) -> io::Result<()> {
    let from = cstring(from.as_bytes())?;
    let to = cstring(to.as_bytes())?;
    // SAFETY: valid C strings.
    check(unsafe { libc::renameat(from_dir, from.as_ptr(), to_dir, to.as_ptr()) }).map(|_| ())
}

/// Splits a sandbox-relative path into its parent and its last component. `None` for the root.
pub fn split(relative: &Path) -> Option<(&Path, &OsStr)> {
    match relative.components().next_back()? {
        Component::Normal(leaf) => Some((relative.parent().unwrap_or(Path::new("")), leaf)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_stay_beneath_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_dir = dir.path().join("root");
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::write(dir.path().join("outside"), b"secret").unwrap();
        std::fs::write(root_dir.join("sub/inside"), b"ok").unwrap();
        std::os::unix::fs::symlink("../outside", root_dir.join("up")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root_dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("sub/inside", root_dir.join("rel")).unwrap();
        std::os::unix::fs::symlink("..", root_dir.join("sub/parent")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        let errno = |p: &str| {
            root.open_at(Path::new(p), libc::O_PATH, 0)
                .unwrap_err()
                .raw_os_error()
        };
        assert_eq!(errno("up"), Some(libc::EXDEV));
        assert_eq!(errno("abs"), Some(libc::EXDEV));
        assert_eq!(errno("../outside"), Some(libc::EXDEV));
        assert_eq!(errno("sub/parent/../outside"), Some(libc::EXDEV));
        // Symlinks that stay inside are followed.
        assert!(root.open_at(Path::new("rel"), libc::O_PATH, 0).is_ok());
        assert!(
            root.open_at(Path::new("sub/parent/rel"), libc::O_PATH, 0)
                .is_ok()
        );
        let mut names = read_dir(root.fd()).unwrap();
        names.sort();
        assert_eq!(names, ["abs", "rel", "sub", "up"]);
    }

    #[test]
    fn split_gives_parent_and_leaf() {
        assert_eq!(
            split(Path::new("a/b/c")),
            Some((Path::new("a/b"), OsStr::new("c")))
        );
        assert_eq!(
            split(Path::new("c")),
            Some((Path::new(""), OsStr::new("c")))
        );
        assert_eq!(split(Path::new("")), None);
    }
}
