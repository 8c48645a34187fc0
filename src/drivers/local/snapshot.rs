//! Snapshots of a local sandbox: its files as a tar stream, and back.
//!
//! Export walks the sandbox by descriptor (`beneath.rs`): every entry is looked at with
//! `fstatat(AT_SYMLINK_NOFOLLOW)`, files are opened with `O_NOFOLLOW` beneath the root and read
//! only when `fstat` says they are regular, and symlinks are recorded, never followed. Sockets
//! and FIFOs (runtime objects) are left out; device files cannot be made in a sandbox.
//!
//! Import unpacks into a new directory beside the sandbox (`.restore-<id>-<nonce>`, on the
//! same file system, which no sandboxed command can reach), checking every entry with
//! `archive::Checker` and creating it by descriptor beneath that directory, then measures it
//! against the sandbox's disk quota and swaps the two directories in one
//! `renameat2(RENAME_EXCHANGE)`. Until the swap the sandbox is untouched; after it, the old
//! files are removed. A crash leaves at most a `.restore-*` directory, removed at start-up.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::beneath::{self, Root};
use crate::drivers::DriverError;
use crate::drivers::archive::{self, Kind, Summary};

/// The prefix of unpacking directories under `<data_dir>/sandboxes`.
pub const RESTORE_PREFIX: &str = ".restore-";

fn io_error(context: &str) -> impl Fn(io::Error) -> DriverError + '_ {
    move |e| DriverError::internal(context, e)
}

fn timed_out() -> DriverError {
    DriverError::Timeout("the snapshot did not finish within the call's timeout".into())
}

/// Writes the tar stream of sandbox directory `dir` into `out`.
pub fn export(dir: &Path, out: &Path, deadline: Instant) -> Result<Summary, DriverError> {
    let root = Root::open(dir).map_err(io_error("cannot open the sandbox"))?;
    let file = File::options()
        .write(true)
        .truncate(true)
        .open(out)
        .map_err(io_error("cannot open the snapshot's scratch file"))?;
    let mut builder = tar::Builder::new(BufWriter::new(file));
    let mut summary = Summary::default();
    walk(
        &mut builder,
        root.fd(),
        &mut Vec::new(),
        &mut summary,
        deadline,
    )?;
    let mut writer = builder
        .into_inner()
        .map_err(io_error("cannot write the snapshot"))?;
    writer
        .flush()
        .map_err(io_error("cannot write the snapshot"))?;
    Ok(summary)
}

fn header(kind: tar::EntryType, mode: u32, mtime: i64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & archive::MODE_MASK);
    h.set_mtime(mtime.max(0) as u64);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn walk<W: Write>(
    builder: &mut tar::Builder<W>,
    dirfd: RawFd,
    prefix: &mut Vec<u8>,
    summary: &mut Summary,
    deadline: Instant,
) -> Result<(), DriverError> {
    let mut names = beneath::read_dir(dirfd).map_err(io_error("cannot list a directory"))?;
    names.sort();
    for name in names {
        if Instant::now() > deadline {
            return Err(timed_out());
        }
        let st = match beneath::lstat_at(dirfd, &name) {
            Ok(st) => st,
            // Gone since the listing.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(DriverError::internal("cannot inspect a file", e)),
        };
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(name.as_bytes());
        let path = Path::new(OsStr::from_bytes(prefix));
        let mode = st.st_mode & libc::S_IFMT;
        let perm = st.st_mode & 0o7777;
        let wrote = |e: io::Error| DriverError::internal("cannot write the snapshot", e);
        if mode == libc::S_IFDIR {
            let fd = beneath::open_beneath(
                dirfd,
                Path::new(&name),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(io_error("cannot open a directory"))?;
            let mut h = header(tar::EntryType::Directory, perm, st.st_mtime, 0);
            builder
                .append_data(&mut h, path, io::empty())
                .map_err(wrote)?;
            summary.entries += 1;
            walk(builder, fd.as_raw_fd(), prefix, summary, deadline)?;
        } else if mode == libc::S_IFREG {
            let fd = beneath::open_beneath(
                dirfd,
                Path::new(&name),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
                0,
            )
            .map_err(io_error("cannot open a file"))?;
            let now =
                beneath::stat_fd(fd.as_raw_fd()).map_err(io_error("cannot inspect a file"))?;
            if now.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(DriverError::Internal(
                    "a file changed kind while the snapshot was taken".into(),
                ));
            }
            let size = now.st_size as u64;
            let mut h = header(tar::EntryType::Regular, perm, now.st_mtime, size);
            let file = File::from(fd);
            builder
                .append_data(&mut h, path, Exact::new(file, size))
                .map_err(wrote)?;
            summary.entries += 1;
            summary.file_bytes += size;
        } else if mode == libc::S_IFLNK {
            let target =
                beneath::readlink_fd(dirfd, &name).map_err(io_error("cannot read a symlink"))?;
            let mut h = header(tar::EntryType::Symlink, 0o777, st.st_mtime, 0);
            builder
                .append_link(&mut h, path, Path::new(&target))
                .map_err(wrote)?;
            summary.entries += 1;
        }
        // Sockets, FIFOs and devices are not kept.
        prefix.truncate(len);
    }
    Ok(())
}

/// A reader giving exactly `size` bytes of a file (its size when the walk saw it), so that a
/// file that shrinks or grows meanwhile cannot misalign the tar stream.
struct Exact {
    file: File,
    left: u64,
}

impl Exact {
    fn new(file: File, size: u64) -> Exact {
        Exact { file, left: size }
    }
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(
                "a file shrank while the snapshot was taken",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The directory beneath `root` at `relative` (created, with its missing parents, when absent),
/// opened by descriptor.
fn ensure_dir(root: &Root, relative: &Path) -> io::Result<OwnedFd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    match root.open_at(relative, flags, 0) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let Some((parent, leaf)) = beneath::split(relative) else {
        return root.open_at(relative, flags, 0);
    };
    let parent_fd = ensure_dir(root, parent)?;
    match beneath::mkdir_at(parent_fd.as_raw_fd(), leaf, 0o700) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    beneath::open_beneath(parent_fd.as_raw_fd(), Path::new(leaf), flags, 0)
}

/// Unpacks the tar stream in `tar` into the new directory `into` (which must not exist).
fn unpack(tar: &Path, into: &Path, deadline: Instant) -> Result<Summary, DriverError> {
    std::fs::create_dir(into).map_err(io_error("cannot create the restore directory"))?;
    let root = Root::open(into).map_err(io_error("cannot open the restore directory"))?;
    let file = File::open(tar).map_err(io_error("cannot read the snapshot"))?;
    let mut archive = tar::Archive::new(io::BufReader::new(file));
    let mut checker = archive::Checker::default();
    let mut dir_modes: Vec<(Vec<u8>, u32)> = Vec::new();
    let unreadable = |e: io::Error| {
        DriverError::invalid(
            "snapshot_id",
            format!("the snapshot's archive is refused: it is not a readable tar stream ({e})"),
        )
    };
    let failed = |e: io::Error| DriverError::internal("cannot unpack the snapshot", e);
    for entry in archive.entries().map_err(unreadable)? {
        if Instant::now() > deadline {
            return Err(timed_out());
        }
        let mut entry = entry.map_err(unreadable)?;
        let Some((path, kind)) = checker.entry(&entry)? else {
            continue;
        };
        let mode = entry.header().mode().unwrap_or(0o644) & archive::MODE_MASK;
        let relative = PathBuf::from(OsStr::from_bytes(&path));
        let (parent, leaf) = beneath::split(&relative)
            .ok_or_else(|| DriverError::Internal("an entry without a name".into()))?;
        let parent_fd = ensure_dir(&root, parent).map_err(failed)?;
        let pfd = parent_fd.as_raw_fd();
        match kind {
            Kind::Directory => {
                match beneath::mkdir_at(pfd, leaf, 0o700) {
                    Ok(()) => {}
                    // Made earlier as a missing parent.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let st = beneath::lstat_at(pfd, leaf).map_err(failed)?;
                        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                            return Err(failed(e));
                        }
                    }
                    Err(e) => return Err(failed(e)),
                }
                dir_modes.push((path, mode));
            }
            Kind::File => {
                let fd = beneath::open_beneath(
                    pfd,
                    Path::new(leaf),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(failed)?;
                let mut out = File::from(fd);
                io::copy(&mut entry, &mut out).map_err(unreadable)?;
                beneath::chmod_fd(out.as_raw_fd(), mode).map_err(failed)?;
            }
            Kind::Symlink(target) => {
                let target = cstring(&target).map_err(failed)?;
                let name = cstring(leaf.as_bytes()).map_err(failed)?;
                // SAFETY: valid C strings; the link is made in a directory we hold.
                check(unsafe { libc::symlinkat(target.as_ptr(), pfd, name.as_ptr()) })
                    .map_err(failed)?;
            }
            Kind::HardLink(target) => {
                let source = root
                    .open_at(
                        Path::new(OsStr::from_bytes(&target)),
                        libc::O_PATH | libc::O_NOFOLLOW,
                        0,
                    )
                    .map_err(failed)?;
                let via = cstring(format!("/proc/self/fd/{}", source.as_raw_fd()).as_bytes())
                    .map_err(failed)?;
                let name = cstring(leaf.as_bytes()).map_err(failed)?;
                // SAFETY: valid C strings; the source is the descriptor just opened beneath
                // the root (followed through /proc, as linkat with AT_EMPTY_PATH would need a
                // capability), the new name is in a directory we hold.
                check(unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        via.as_ptr(),
                        pfd,
                        name.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                })
                .map_err(failed)?;
            }
        }
    }
    // Directory modes last, deepest first: a read-only directory must not stop its own
    // entries from being made.
    dir_modes.sort_by(|a, b| b.0.cmp(&a.0));
    for (path, mode) in dir_modes {
        let fd = root
            .open_at(
                Path::new(OsStr::from_bytes(&path)),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(failed)?;
        beneath::chmod_fd(fd.as_raw_fd(), mode).map_err(failed)?;
    }
    Ok(checker.summary())
}

/// A directory that is removed when dropped (the unpacked files, or the old ones after the
/// swap).
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot remove a restore directory");
        }
    }
}

/// Removes a tree that may hold read-only directories (restored modes): their modes are opened
/// up first. `remove_dir_all` never follows symlinks.
fn remove_tree(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    open_up(dir)?;
    std::fs::remove_dir_all(dir)
}

fn open_up(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            open_up(&entry.path())?;
        }
    }
    Ok(())
}

/// Replaces the files of sandbox directory `dir` (under `sandboxes`) with the tar stream in
/// `tar`, refusing more than `disk_quota` bytes. All or nothing.
pub fn import(
    sandboxes: &Path,
    id: &str,
    dir: &Path,
    tar: &Path,
    disk_quota: Option<u64>,
    deadline: Instant,
) -> Result<(Summary, u64), DriverError> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let staging = sandboxes.join(format!("{RESTORE_PREFIX}{id}-{nonce}"));
    let guard = Removed(staging.clone());
    let summary = unpack(tar, &staging, deadline)?;
    let used = super::disk_usage(&staging);
    if let Some(quota) = disk_quota {
        if used > quota {
            return Err(DriverError::LimitExceeded(format!(
                "the snapshot's files take {used} bytes, over the sandbox's disk quota of \
                 {quota} bytes; nothing was changed"
            )));
        }
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))
            .map_err(io_error("cannot set the restored directory's mode"))?;
    }
    let from = cstring(staging.as_os_str().as_bytes()).map_err(io_error("bad path"))?;
    let to = cstring(dir.as_os_str().as_bytes()).map_err(io_error("bad path"))?;
    // SAFETY: valid C strings; both are the server's own directories.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc < 0 {
        return Err(DriverError::internal(
            "cannot swap the restored files in",
            io::Error::last_os_error(),
        ));
    }
    // `guard` now removes the old files.
    drop(guard);
    Ok((summary, used))
}

/// Removes what interrupted restores left under `sandboxes`.
pub fn sweep(sandboxes: &Path) {
    let Ok(entries) = std::fs::read_dir(sandboxes) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .as_bytes()
            .starts_with(RESTORE_PREFIX.as_bytes())
        {
            let _ = remove_tree(&entry.path());
        }
    }
}
