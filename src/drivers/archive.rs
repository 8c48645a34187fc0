//! The tar stream of a sandbox's files, as snapshots carry it between a driver and the archive
//! store: which entries a restore accepts.
//!
//! Every driver's restore runs [`check`] (the tools layer runs it too, before handing an
//! archive over), so an archive that was tampered with, or made by something other than this
//! server, cannot name a place outside the sandbox: entries are relative paths without `..`,
//! only regular files, directories, symlinks and hard links are accepted, a symlink must point
//! inside the sandbox (a relative target that stays beneath the root), a hard link must name a
//! regular file earlier in the archive, and no entry may lie beneath a symlink of the archive
//! (the "symlink out, then a file through it" trick). Extraction is by descriptor as well
//! (`local/snapshot.rs`), so these checks are a second wall, not the only one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use super::DriverError;

/// Mode bits kept on restore: permissions and the sticky bit. Set-user-id and set-group-id are
/// dropped: a restored file never gains privileges it could only have had on another host.
pub const MODE_MASK: u32 = 0o1777;

/// What an entry of an accepted archive is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    /// A symlink with its target (relative, staying inside).
    Symlink(Vec<u8>),
    /// A hard link to the earlier regular file at this path.
    HardLink(Vec<u8>),
}

/// The outcome of [`check`]: how many entries, and the bytes of regular files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub file_bytes: u64,
}

/// Why an archive is refused.
fn refused(message: String) -> DriverError {
    DriverError::invalid(
        "snapshot_id",
        format!("the snapshot's archive is refused: {message}; nothing was changed"),
    )
}

fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// The entry path as normalised components: `./` prefixes, `.` components and a trailing `/`
/// dropped; an error for an absolute path, a `..` or an empty name. `Ok(None)` is the root.
pub fn normalise(path: &[u8]) -> Result<Option<Vec<u8>>, DriverError> {
    if path.first() == Some(&b'/') {
        return Err(refused(format!(
            "entry `{}` is an absolute path",
            shown(path)
        )));
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(refused(format!(
                    "entry `{}` has a `..` component",
                    shown(path)
                )));
            }
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.join(&b'/')))
}

/// Whether a symlink at `path` (normalised) with `target` resolves inside the root: relative,
/// its `..`s all first and not climbing above the link's depth. A `..` after a name is refused,
/// since the name may itself be a symlink (`q -> .`, then `p -> q/a/../..` climbs out although
/// it reads as staying in); with the `..`s first they climb real directories (no entry lies
/// beneath a symlink), and every name after them is a directory or a link checked the same way.
fn link_stays_inside(path: &[u8], target: &[u8]) -> bool {
    if target.is_empty() || target.first() == Some(&b'/') {
        return false;
    }
    // The depth of the link's directory.
    let mut depth = path.split(|b| *b == b'/').count() as i64 - 1;
    let mut named = false;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if named => return false,
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => named = true,
        }
    }
    true
}

/// The checker's state over one archive, for streaming use ([`Checker::entry`] per entry).
#[derive(Debug, Default)]
pub struct Checker {
    seen: BTreeSet<Vec<u8>>,
    files: BTreeSet<Vec<u8>>,
    symlinks: BTreeSet<Vec<u8>>,
    /// Every directory some accepted entry lies in.
    parents: BTreeSet<Vec<u8>>,
    summary: Summary,
}

impl Checker {
    /// Checks one entry; `Ok(None)` for the root itself (skipped), else its normalised path and
    /// what it is.
    pub fn entry<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
    ) -> Result<Option<(Vec<u8>, Kind)>, DriverError> {
        let header = entry.header();
        let raw_path = entry.path_bytes();
        let Some(path) = normalise(&raw_path)? else {
            if header.entry_type().is_dir() {
                return Ok(None);
            }
            return Err(refused(
                "an entry names the root but is not a directory".into(),
            ));
        };
        // Beneath a symlink of the archive: extracting it would write through the link.
        let mut prefix = Vec::new();
        let mut prefixes = Vec::new();
        for part in path.split(|b| *b == b'/') {
            if !prefix.is_empty() {
                if self.symlinks.contains(&prefix) {
                    return Err(refused(format!(
                        "entry `{}` lies beneath the symlink `{}`",
                        shown(&path),
                        shown(&prefix)
                    )));
                }
                prefixes.push(prefix.clone());
                prefix.push(b'/');
            }
            prefix.extend_from_slice(part);
        }
        // Something other than a directory where earlier entries needed one.
        if !header.entry_type().is_dir() && self.parents.contains(&path) {
            return Err(refused(format!(
                "entry `{}` replaces a directory of earlier entries",
                shown(&path)
            )));
        }
        if !self.seen.insert(path.clone()) {
            return Err(refused(format!("entry `{}` appears twice", shown(&path))));
        }
        use tar::EntryType;
        let kind = match header.entry_type() {
            EntryType::Regular | EntryType::Continuous => {
                self.files.insert(path.clone());
                self.summary.file_bytes = self.summary.file_bytes.saturating_add(entry.size());
                Kind::File
            }
            EntryType::Directory => Kind::Directory,
            EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                if !link_stays_inside(&path, &target) {
                    return Err(refused(format!(
                        "symlink `{}` points outside the sandbox (`{}`)",
                        shown(&path),
                        shown(&target)
                    )));
                }
                self.symlinks.insert(path.clone());
                Kind::Symlink(target)
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = normalise(&target)?.unwrap_or_default();
                if !self.files.contains(&target) {
                    return Err(refused(format!(
                        "hard link `{}` does not name a file of the archive (`{}`)",
                        shown(&path),
                        shown(&target)
                    )));
                }
                Kind::HardLink(target)
            }
            EntryType::Char | EntryType::Block => {
                return Err(refused(format!(
                    "entry `{}` is a device file",
                    shown(&path)
                )));
            }
            other => {
                return Err(refused(format!(
                    "entry `{}` is of a kind snapshots do not hold ({other:?})",
                    shown(&path)
                )));
            }
        };
        self.parents.extend(prefixes);
        self.summary.entries += 1;
        Ok(Some((path, kind)))
    }

    pub fn summary(&self) -> Summary {
        self.summary
    }
}

/// Checks every entry of the tar stream `tar` (see the module's rules).
pub fn check(tar: impl Read) -> Result<Summary, DriverError> {
    let mut archive = tar::Archive::new(tar);
    let mut checker = Checker::default();
    let entries = archive
        .entries()
        .map_err(|e| refused(format!("it is not a readable tar stream ({e})")))?;
    for entry in entries {
        let entry = entry.map_err(|e| refused(format!("it is not a readable tar stream ({e})")))?;
        checker.entry(&entry)?;
    }
    Ok(checker.summary())
}

/// The entries of a tar stream by normalised path, for tests and comparisons: kind and mode.
pub fn listing(tar: impl Read) -> Result<BTreeMap<Vec<u8>, (Kind, u32)>, DriverError> {
    let mut archive = tar::Archive::new(tar);
    let mut checker = Checker::default();
    let mut out = BTreeMap::new();
    for entry in archive
        .entries()
        .map_err(|e| DriverError::internal("cannot read a tar stream", e))?
    {
        let entry = entry.map_err(|e| DriverError::internal("cannot read a tar stream", e))?;
        let mode = entry.header().mode().unwrap_or(0) & MODE_MASK;
        if let Some((path, kind)) = checker.entry(&entry)? {
            out.insert(path, (kind, mode));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar stream with raw header names (the builder itself refuses `..` and absolute paths).
    fn raw_tar(entries: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link) in entries {
            let mut header = tar::Header::new_old();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(0);
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn refusal(entries: &[(&[u8], tar::EntryType, &[u8])]) -> String {
        check(raw_tar(entries).as_slice()).unwrap_err().to_string()
    }

    #[test]
    fn accepts_files_directories_and_links_inside() {
        use tar::EntryType::*;
        let tar = raw_tar(&[
            (b"./", Directory, b""),
            (b"./d/", Directory, b""),
            (b"./d/f", Regular, b""),
            (b"./d/up", Symlink, b"../d/f"),
            (b"./d/root", Symlink, b".."),
            (b"./d/same", Link, b"d/f"),
            (b"./odd\xff\x01name", Regular, b""),
        ]);
        let summary = check(tar.as_slice()).unwrap();
        assert_eq!(summary.entries, 6);
    }

    #[test]
    fn refuses_what_could_leave_the_sandbox() {
        use tar::EntryType::*;
        assert!(refusal(&[(b"../../x", Regular, b"")]).contains("`..`"));
        assert!(refusal(&[(b"a/../../x", Regular, b"")]).contains("`..`"));
        assert!(refusal(&[(b"/etc/x", Regular, b"")]).contains("absolute"));
        assert!(refusal(&[(b"l", Symlink, b"/etc")]).contains("points outside"));
        assert!(refusal(&[(b"d/l", Symlink, b"../..")]).contains("points outside"));
        assert!(refusal(&[(b"p", Symlink, b"q/a/../..")]).contains("points outside"));
        assert!(
            refusal(&[(b"l", Symlink, b"d"), (b"l/x", Regular, b"")])
                .contains("beneath the symlink")
        );
        assert!(refusal(&[(b"h", Link, b"../outside")]).contains("`..`"));
        assert!(refusal(&[(b"h", Link, b"nothing")]).contains("does not name"));
        assert!(refusal(&[(b"dev", Char, b"")]).contains("device"));
        assert!(
            refusal(&[(b"a/f", Regular, b""), (b"a", Symlink, b"b")])
                .contains("replaces a directory")
        );
        assert!(refusal(&[(b"f", Regular, b""), (b"f", Symlink, b"g")]).contains("twice"));
    }
}
