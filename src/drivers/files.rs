//! File operations a driver performs on a sandbox's files, as data: what to do ([`FileRequest`])
//! and what came of it ([`FileResult`]). Paths are sandbox-relative, already normalised by
//! [`super::paths::sandbox_relative`]; the driver still resolves them safely (the lexical check
//! alone cannot see symlinks).

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

/// One file operation.
#[derive(Clone, Debug, PartialEq)]
pub enum FileOp {
    /// The whole content of a regular file, refused above `max_bytes`.
    Read { max_bytes: u64 },
    /// Replaces (or with `append`, extends) a regular file, creating it and its missing parent
    /// directories.
    Write { content: Vec<u8>, append: bool },
    /// The entries of a directory, at most `max_entries` of them.
    List { max_entries: usize },
    /// Removes a file, a symlink (not its target), an empty directory, or with `recursive` a
    /// whole tree.
    Delete { recursive: bool },
    /// Creates a directory and its missing parents; an existing directory is fine.
    Mkdir,
    /// Renames within the sandbox; into `destination` when it is an existing directory.
    Move { destination: PathBuf },
    /// The entry itself (a symlink is described, not followed).
    Stat,
    /// Whether the entry exists (a symlink counts, wherever it points).
    Exists,
}

/// A file operation on one path of a sandbox.
#[derive(Clone, Debug, PartialEq)]
pub struct FileRequest {
    /// Relative to the sandbox root; empty is the root.
    pub path: PathBuf,
    pub op: FileOp,
    /// Bytes the sandbox may use in all (its disk quota); writes beyond it are refused.
    pub disk_quota: Option<u64>,
}

/// What kind of file an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl EntryKind {
    /// From the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> EntryKind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => EntryKind::Directory,
            libc::S_IFLNK => EntryKind::Symlink,
            libc::S_IFIFO => EntryKind::Fifo,
            libc::S_IFSOCK => EntryKind::Socket,
            libc::S_IFCHR => EntryKind::CharDevice,
            libc::S_IFBLK => EntryKind::BlockDevice,
            _ => EntryKind::File,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
            EntryKind::CharDevice => "char_device",
            EntryKind::BlockDevice => "block_device",
        }
    }
}

/// One directory entry, or the subject of a `stat`.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    pub modified: SystemTime,
    /// Where a symlink points, as written in the link.
    pub link_target: Option<String>,
}

/// What a file operation produced.
#[derive(Clone, Debug, PartialEq)]
pub enum FileResult {
    Content(Vec<u8>),
    Written {
        /// Size of the file after the write.
        size: u64,
    },
    Entries {
        entries: Vec<Entry>,
        /// Whether the directory had more entries than were returned.
        truncated: bool,
    },
    Deleted {
        /// Entries removed (1 for a file).
        removed: u64,
    },
    Created {
        /// False when the directory already existed.
        created: bool,
    },
    Moved {
        /// The final sandbox-relative path.
        destination: PathBuf,
    },
    Stat(Entry),
    Exists(Option<EntryKind>),
}
