//! File operations of the local driver, run by the server on the sandbox directory. Every path
//! is resolved by descriptor beneath the sandbox root (see `beneath.rs`); only regular files are
//! read or written and only directories listed, so a FIFO cannot hang the server and a device
//! cannot be touched.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::beneath::{self, Root};
use crate::drivers::DriverError;
use crate::drivers::files::{Entry, EntryKind, FileOp, FileRequest, FileResult};

/// Deepest directory tree a recursive delete walks (it holds one descriptor per level).
const MAX_DEPTH: usize = 256;

/// The field a path came from, for error messages.
const PATH_FIELD: &str = "file_path";
const DESTINATION_FIELD: &str = "destination";

/// What a file operation did to the sandbox's disk usage, besides its result.
#[derive(Debug)]
pub struct Done {
    pub result: FileResult,
    /// Change of allocated bytes caused by a write.
    pub allocated_delta: i64,
}

/// Runs `request` on the sandbox directory `dir`. `usage` is the sandbox's allocated bytes when
/// a disk quota applies; `deadline` bounds long walks (recursive deletes).
pub fn run(
    dir: &Path,
    request: FileRequest,
    usage: Option<u64>,
    deadline: Instant,
) -> Result<Done, DriverError> {
    let root = Root::open(dir).map_err(|e| DriverError::internal("cannot open the sandbox", e))?;
    let path = request.path.as_path();
    let shown = shown(path);
    let done = |result| Done {
        result,
        allocated_delta: 0,
    };
    match request.op {
        FileOp::Read { max_bytes } => {
            read(&root, path, max_bytes).map(|c| done(FileResult::Content(c)))
        }
        FileOp::Write { content, append } => {
            let quota = request.disk_quota.map(|q| (q, usage.unwrap_or(0)));
            write(&root, path, &content, append, quota)
        }
        FileOp::List { max_entries } => list(&root, path, max_entries).map(done),
        FileOp::Delete { recursive } => delete(&root, path, recursive, deadline).map(done),
        FileOp::Mkdir => {
            mkdir_all(&root, path, PATH_FIELD).map(|created| done(FileResult::Created { created }))
        }
        FileOp::Move { destination } => move_entry(&root, path, &destination).map(done),
        FileOp::Stat => match stat(&root, path)? {
            Some(entry) => Ok(done(FileResult::Stat(entry))),
            None => Err(missing(PATH_FIELD, &shown)),
        },
        FileOp::Exists => {
            stat(&root, path).map(|entry| done(FileResult::Exists(entry.map(|e| e.kind))))
        }
    }
}

/// A sandbox-relative path as the caller sees it.
fn shown(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        "/workspace".into()
    } else {
        path.display().to_string()
    }
}

fn missing(field: &'static str, path: &str) -> DriverError {
    DriverError::PathNotFound {
        field,
        message: format!("{field} `{path}` does not exist in the sandbox"),
    }
}

/// Turns a system error on `path` into an error that says what is wrong with the caller's input.
fn path_error(field: &'static str, path: &str, e: io::Error) -> DriverError {
    let invalid = |what: &str| DriverError::invalid(field, format!("{field} `{path}` {what}"));
    match e.raw_os_error() {
        Some(libc::ENOENT) => missing(field, path),
        Some(libc::EXDEV) => invalid(
            "leads outside the sandbox (through `..`, an absolute symlink or a symlink that \
             points outside); such paths are refused",
        ),
        Some(libc::ELOOP) => invalid("is a symlink loop or goes through too many symlinks"),
        Some(libc::ENOTDIR) => invalid("goes through something that is not a directory"),
        Some(libc::EISDIR) => invalid("is a directory"),
        Some(libc::EEXIST) => invalid("already exists"),
        Some(libc::ENOTEMPTY) => {
            invalid("is a directory that is not empty; set `recursive: true` to delete it all")
        }
        Some(libc::EACCES | libc::EPERM) => invalid("is not accessible (permission denied)"),
        Some(libc::ENAMETOOLONG) => invalid("is too long"),
        Some(libc::EINVAL) => invalid("cannot be used for this operation"),
        Some(libc::ENOSPC | libc::EDQUOT) => {
            DriverError::LimitExceeded("the server's disk is full".into())
        }
        Some(libc::EFBIG) => invalid("would exceed the largest file size allowed"),
        _ => DriverError::internal(&format!("{field} `{path}`"), e),
    }
}

fn kind_of(st: &libc::stat) -> EntryKind {
    EntryKind::from_mode(st.st_mode)
}

/// Refuses anything but a regular file, naming what it is.
fn regular_only(st: &libc::stat, field: &'static str, path: &str) -> Result<(), DriverError> {
    match kind_of(st) {
        EntryKind::File => Ok(()),
        EntryKind::Directory => Err(DriverError::invalid(
            field,
            format!("{field} `{path}` is a directory; use the `list` operation"),
        )),
        other => Err(DriverError::invalid(
            field,
            format!(
                "{field} `{path}` is a {}; only regular files can be read or written",
                other.as_str().replace('_', " ")
            ),
        )),
    }
}

fn read(root: &Root, path: &Path, max_bytes: u64) -> Result<Vec<u8>, DriverError> {
    let shown = shown(path);
    // O_PATH opens nothing: no FIFO blocks, no device reacts. The type is checked on this very
    // inode before it is opened for reading.
    let handle = root
        .open_at(path, libc::O_PATH, 0)
        .map_err(|e| path_error(PATH_FIELD, &shown, e))?;
    let st = beneath::stat_fd(handle.as_raw_fd()).map_err(|e| path_error(PATH_FIELD, &shown, e))?;
    regular_only(&st, PATH_FIELD, &shown)?;
    if st.st_size as u64 > max_bytes {
        return Err(too_big(&shown, st.st_size as u64, max_bytes));
    }
    let fd =
        beneath::reopen(&handle, libc::O_RDONLY).map_err(|e| path_error(PATH_FIELD, &shown, e))?;
    let mut content = Vec::with_capacity(st.st_size as usize);
    // The file may grow while we read; never take more than the limit.
    std::fs::File::from(fd)
        .take(max_bytes + 1)
        .read_to_end(&mut content)
        .map_err(|e| path_error(PATH_FIELD, &shown, e))?;
    if content.len() as u64 > max_bytes {
        return Err(too_big(&shown, content.len() as u64, max_bytes));
    }
    Ok(content)
}

fn too_big(path: &str, size: u64, max: u64) -> DriverError {
    DriverError::invalid(
        PATH_FIELD,
        format!(
            "file_path `{path}` is {size} bytes, over the {max}-byte limit of file_operation; \
             read it in parts with execute_shell (e.g. `head -c`, `split`)"
        ),
    )
}

/// Makes `relative` and its missing parents; returns whether the last one was new.
fn mkdir_all(root: &Root, relative: &Path, field: &'static str) -> Result<bool, DriverError> {
    let shown = shown(relative);
    let mut parent = PathBuf::new();
    let mut created = false;
    for component in relative.components() {
        let name = component.as_os_str();
        let dirfd = root
            .open_at(&parent, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| path_error(field, &shown, e))?;
        created = match beneath::mkdir_at(dirfd.as_raw_fd(), name, 0o755) {
            Ok(()) => {
                // The server's umask is private; a caller's directory gets the usual mode.
                // Reopened without following a symlink, beneath the root like every lookup.
                let made = root
                    .open_at(
                        &parent.join(name),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                        0,
                    )
                    .and_then(|fd| beneath::chmod_fd(fd.as_raw_fd(), 0o755));
                made.map_err(|e| path_error(field, &shown, e))?;
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
            Err(e) => return Err(path_error(field, &shown, e)),
        };
        parent.push(name);
    }
    // Whatever was there must be a directory (or a symlink to one inside the sandbox).
    root.open_at(relative, libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTDIR) => DriverError::invalid(
                field,
                format!("{field} `{shown}` exists and is not a directory"),
            ),
            _ => path_error(field, &shown, e),
        })?;
    Ok(created)
}

fn allocated(st: &libc::stat) -> u64 {
    st.st_blocks as u64 * 512
}

/// Writes or appends. `quota` is `(quota, current usage)` in allocated bytes.
fn write(
    root: &Root,
    path: &Path,
    content: &[u8],
    append: bool,
    quota: Option<(u64, u64)>,
) -> Result<Done, DriverError> {
    let shown = shown(path);
    let Some((parent, _)) = beneath::split(path) else {
        return Err(DriverError::invalid(
            PATH_FIELD,
            "file_path names the sandbox root, which is a directory",
        ));
    };
    if !parent.as_os_str().is_empty() {
        mkdir_all(root, parent, PATH_FIELD)?;
    }
    let check_quota = |old_allocated: u64, old_size: u64| -> Result<(), DriverError> {
        let Some((quota, usage)) = quota else {
            return Ok(());
        };
        let new_size = if append {
            old_size + content.len() as u64
        } else {
            content.len() as u64
        };
        let after = usage.saturating_sub(old_allocated) + new_size;
        if after > quota {
            return Err(DriverError::LimitExceeded(format!(
                "disk quota exceeded: writing {} bytes to `{shown}` would bring the sandbox to \
                 about {after} bytes, over its quota of {quota} bytes (it uses {usage}); delete \
                 files first",
                content.len()
            )));
        }
        Ok(())
    };
    // An existing file (following symlinks that stay inside) is checked, then reopened through
    // its descriptor; a new one is created exclusively, so a symlink or FIFO planted between
    // the two steps is never written through.
    for _ in 0..2 {
        match root.open_at(path, libc::O_PATH, 0) {
            Ok(handle) => {
                let st = beneath::stat_fd(handle.as_raw_fd())
                    .map_err(|e| path_error(PATH_FIELD, &shown, e))?;
                regular_only(&st, PATH_FIELD, &shown)?;
                check_quota(allocated(&st), st.st_size as u64)?;
                let mode = libc::O_WRONLY
                    | if append {
                        libc::O_APPEND
                    } else {
                        libc::O_TRUNC
                    };
                let fd = beneath::reopen(&handle, mode)
                    .map_err(|e| path_error(PATH_FIELD, &shown, e))?;
                return finish_write(fd, content, allocated(&st) as i64, &shown);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                check_quota(0, 0)?;
                match root.open_at(
                    path,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o644,
                ) {
                    Ok(fd) => {
                        // The usual mode for a caller's file, whatever the server's umask.
                        beneath::chmod_fd(fd.as_raw_fd(), 0o644)
                            .map_err(|e| path_error(PATH_FIELD, &shown, e))?;
                        return finish_write(fd, content, 0, &shown);
                    }
                    // Something appeared meanwhile (or a dangling symlink is there): look again.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                    Err(e) => return Err(path_error(PATH_FIELD, &shown, e)),
                }
            }
            Err(e) => return Err(path_error(PATH_FIELD, &shown, e)),
        }
    }
    Err(DriverError::invalid(
        PATH_FIELD,
        format!(
            "file_path `{shown}` is a symlink whose target does not exist (or keeps changing); \
             refusing to write through it"
        ),
    ))
}

fn finish_write(
    fd: OwnedFd,
    content: &[u8],
    old_allocated: i64,
    shown: &str,
) -> Result<Done, DriverError> {
    let mut file = std::fs::File::from(fd);
    file.write_all(content)
        .and_then(|()| file.flush())
        .map_err(|e| path_error(PATH_FIELD, shown, e))?;
    let st = beneath::stat_fd(file.as_raw_fd()).map_err(|e| path_error(PATH_FIELD, shown, e))?;
    Ok(Done {
        result: FileResult::Written {
            size: st.st_size as u64,
        },
        allocated_delta: allocated(&st) as i64 - old_allocated,
    })
}

fn modified(st: &libc::stat) -> SystemTime {
    let secs = Duration::new(
        st.st_mtime.max(0) as u64,
        st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
    );
    SystemTime::UNIX_EPOCH + secs
}

fn entry(name: &OsStr, st: &libc::stat, link_target: Option<String>) -> Entry {
    Entry {
        name: name.to_string_lossy().into_owned(),
        kind: kind_of(st),
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        modified: modified(st),
        link_target,
    }
}

fn list(root: &Root, path: &Path, max_entries: usize) -> Result<FileResult, DriverError> {
    let shown = shown(path);
    let dir = root
        .open_at(path, libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTDIR) => DriverError::invalid(
                PATH_FIELD,
                format!("file_path `{shown}` is not a directory; use `stat` or `read`"),
            ),
            _ => path_error(PATH_FIELD, &shown, e),
        })?;
    let mut names =
        beneath::read_dir(dir.as_raw_fd()).map_err(|e| path_error(PATH_FIELD, &shown, e))?;
    names.sort();
    let truncated = names.len() > max_entries;
    names.truncate(max_entries);
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        // An entry removed since the listing is simply skipped.
        let Ok(st) = beneath::lstat_at(dir.as_raw_fd(), &name) else {
            continue;
        };
        let target = (kind_of(&st) == EntryKind::Symlink)
            .then(|| beneath::readlink_fd(dir.as_raw_fd(), &name).ok())
            .flatten()
            .map(|t| t.to_string_lossy().into_owned());
        entries.push(entry(&name, &st, target));
    }
    Ok(FileResult::Entries { entries, truncated })
}

/// The entry itself, not a symlink's target; `None` when it does not exist.
fn stat(root: &Root, path: &Path) -> Result<Option<Entry>, DriverError> {
    let shown = shown(path);
    let handle = match root.open_at(path, libc::O_PATH | libc::O_NOFOLLOW, 0) {
        Ok(h) => h,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(None);
        }
        Err(e) => return Err(path_error(PATH_FIELD, &shown, e)),
    };
    let st = beneath::stat_fd(handle.as_raw_fd()).map_err(|e| path_error(PATH_FIELD, &shown, e))?;
    let target = (kind_of(&st) == EntryKind::Symlink)
        .then(|| beneath::readlink_fd(handle.as_raw_fd(), OsStr::new("")).ok())
        .flatten()
        .map(|t| t.to_string_lossy().into_owned());
    let name = path.file_name().unwrap_or_else(|| OsStr::new("workspace"));
    Ok(Some(entry(name, &st, target)))
}

fn delete(
    root: &Root,
    path: &Path,
    recursive: bool,
    deadline: Instant,
) -> Result<FileResult, DriverError> {
    let shown = shown(path);
    let Some((parent, leaf)) = beneath::split(path) else {
        return Err(DriverError::invalid(
            PATH_FIELD,
            "refusing to delete the sandbox root; delete the sandbox instead",
        ));
    };
    let dir = root
        .open_at(parent, libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|e| path_error(PATH_FIELD, &shown, e))?;
    let st =
        beneath::lstat_at(dir.as_raw_fd(), leaf).map_err(|e| path_error(PATH_FIELD, &shown, e))?;
    let removed = if kind_of(&st) != EntryKind::Directory {
        beneath::unlink_at(dir.as_raw_fd(), leaf, false)
            .map_err(|e| path_error(PATH_FIELD, &shown, e))?;
        1
    } else if recursive {
        let mut removed = 0;
        remove_tree(dir.as_raw_fd(), leaf, 0, deadline, &mut removed).map_err(|e| match e {
            TreeError::Io(e) => path_error(PATH_FIELD, &shown, e),
            TreeError::TooDeep => DriverError::invalid(
                PATH_FIELD,
                format!(
                    "file_path `{shown}` is nested more than {MAX_DEPTH} levels deep; \
                         delete it with execute_shell (`rm -rf`)"
                ),
            ),
            TreeError::Deadline => DriverError::invalid(
                PATH_FIELD,
                format!(
                    "deleting `{shown}` took longer than the call's time limit; {removed} \
                         entries were removed, call again to continue"
                ),
            ),
        })?;
        removed
    } else {
        beneath::unlink_at(dir.as_raw_fd(), leaf, true)
            .map_err(|e| path_error(PATH_FIELD, &shown, e))?;
        1
    };
    Ok(FileResult::Deleted { removed })
}

enum TreeError {
    Io(io::Error),
    TooDeep,
    Deadline,
}

impl From<io::Error> for TreeError {
    fn from(e: io::Error) -> TreeError {
        TreeError::Io(e)
    }
}

/// Removes the directory `name` under `parent` and everything in it. Each level is opened by
/// name relative to its parent's descriptor with `O_NOFOLLOW`, so a directory swapped for a
/// symlink mid-walk is unlinked as a link, never followed.
fn remove_tree(
    parent: i32,
    name: &OsStr,
    depth: usize,
    deadline: Instant,
    removed: &mut u64,
) -> Result<(), TreeError> {
    if depth >= MAX_DEPTH {
        return Err(TreeError::TooDeep);
    }
    if Instant::now() > deadline {
        return Err(TreeError::Deadline);
    }
    let dir = match beneath::open_beneath(
        parent,
        Path::new(name),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    ) {
        Ok(d) => d,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
            beneath::unlink_at(parent, name, false)?;
            *removed += 1;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    for child in beneath::read_dir(dir.as_raw_fd())? {
        let st = match beneath::lstat_at(dir.as_raw_fd(), &child) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if kind_of(&st) == EntryKind::Directory {
            remove_tree(dir.as_raw_fd(), &child, depth + 1, deadline, removed)?;
        } else {
            match beneath::unlink_at(dir.as_raw_fd(), &child, false) {
                Ok(()) => *removed += 1,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    drop(dir);
    beneath::unlink_at(parent, name, true)?;
    *removed += 1;
    Ok(())
}

fn move_entry(root: &Root, path: &Path, destination: &Path) -> Result<FileResult, DriverError> {
    let shown_from = shown(path);
    let shown_to = shown(destination);
    let Some((from_parent, from_leaf)) = beneath::split(path) else {
        return Err(DriverError::invalid(
            PATH_FIELD,
            "cannot move the sandbox root",
        ));
    };
    let from_dir = root
        .open_at(from_parent, libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|e| path_error(PATH_FIELD, &shown_from, e))?;
    let st = beneath::lstat_at(from_dir.as_raw_fd(), from_leaf)
        .map_err(|e| path_error(PATH_FIELD, &shown_from, e))?;
    if !matches!(
        kind_of(&st),
        EntryKind::File | EntryKind::Directory | EntryKind::Symlink
    ) {
        return Err(DriverError::invalid(
            PATH_FIELD,
            format!(
                "file_path `{shown_from}` is a {}; only files, directories and symlinks can be \
                 moved",
                kind_of(&st).as_str().replace('_', " ")
            ),
        ));
    }
    // Into an existing directory (like `mv`), else to the new name.
    let (to_dir, to_leaf, final_path) =
        match root.open_at(destination, libc::O_PATH | libc::O_DIRECTORY, 0) {
            Ok(dir) => (dir, from_leaf.to_os_string(), destination.join(from_leaf)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                let Some((to_parent, to_leaf)) = beneath::split(destination) else {
                    return Err(DriverError::invalid(
                        DESTINATION_FIELD,
                        "destination is not valid",
                    ));
                };
                if !to_parent.as_os_str().is_empty() {
                    mkdir_all(root, to_parent, DESTINATION_FIELD)?;
                }
                let dir = root
                    .open_at(to_parent, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| path_error(DESTINATION_FIELD, &shown_to, e))?;
                (dir, to_leaf.to_os_string(), destination.to_path_buf())
            }
            Err(e) => return Err(path_error(DESTINATION_FIELD, &shown_to, e)),
        };
    beneath::rename_at(
        from_dir.as_raw_fd(),
        from_leaf,
        to_dir.as_raw_fd(),
        &to_leaf,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => DriverError::invalid(
            DESTINATION_FIELD,
            format!("cannot move `{shown_from}` into itself (`{shown_to}`)"),
        ),
        Some(libc::EISDIR | libc::ENOTEMPTY | libc::EEXIST) => DriverError::invalid(
            DESTINATION_FIELD,
            format!(
                "destination `{}` exists and cannot be replaced by `{shown_from}`",
                self::shown(&final_path)
            ),
        ),
        _ => path_error(DESTINATION_FIELD, &shown_to, e),
    })?;
    Ok(FileResult::Moved {
        destination: final_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, op: FileOp) -> FileRequest {
        FileRequest {
            path: PathBuf::from(path),
            op,
            disk_quota: None,
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo =
            std::ffi::CString::new(dir.path().join("pipe").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        for op in [
            FileOp::Read { max_bytes: 10 },
            FileOp::Write {
                content: b"x".to_vec(),
                append: false,
            },
        ] {
            let err = run(dir.path(), req("pipe", op), None, later()).unwrap_err();
            assert!(err.to_string().contains("fifo"), "{err}");
        }
        let stat = run(dir.path(), req("pipe", FileOp::Stat), None, later()).unwrap();
        assert!(matches!(
            stat.result,
            FileResult::Stat(Entry {
                kind: EntryKind::Fifo,
                ..
            })
        ));
    }

    #[test]
    fn write_creates_parents_and_quota_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, content: &[u8], append| FileRequest {
            path: PathBuf::from(path),
            op: FileOp::Write {
                content: content.to_vec(),
                append,
            },
            disk_quota: Some(64 * 1024),
        };
        let done = run(
            dir.path(),
            write("a/b/c.txt", b"hello", false),
            Some(0),
            later(),
        )
        .unwrap();
        assert_eq!(done.result, FileResult::Written { size: 5 });
        assert!(done.allocated_delta > 0);
        run(
            dir.path(),
            write("a/b/c.txt", b" world", true),
            Some(4096),
            later(),
        )
        .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a/b/c.txt")).unwrap(),
            b"hello world"
        );
        let err = run(
            dir.path(),
            write("big", &[0u8; 70 * 1024], false),
            Some(4096),
            later(),
        )
        .unwrap_err();
        assert!(matches!(err, DriverError::LimitExceeded(_)), "{err}");
        assert!(!dir.path().join("big").exists());
    }

    #[test]
    fn delete_removes_links_not_targets() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"k").unwrap();
        std::fs::create_dir_all(dir.path().join("tree/sub")).unwrap();
        std::fs::write(dir.path().join("tree/sub/f"), b"f").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("tree/link")).unwrap();
        let done = run(
            dir.path(),
            req("tree", FileOp::Delete { recursive: true }),
            None,
            later(),
        )
        .unwrap();
        assert_eq!(done.result, FileResult::Deleted { removed: 4 });
        assert!(!dir.path().join("tree").exists());
        assert!(outside.path().join("keep").exists());
    }
}
