//! An exact account of a directory tree on the host, for comparing a sandbox's files before and
//! after a snapshot's restore: every entry's path (as bytes), kind, mode and content digest or
//! link target. Nothing is followed.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::Digest;

/// Path (relative, bytes) → `"<kind> <mode> <sha256 or link target>"`.
pub type Manifest = BTreeMap<Vec<u8>, String>;

pub fn manifest(root: &Path) -> Manifest {
    let mut out = Manifest::new();
    walk(root, Vec::new(), &mut out);
    out
}

fn walk(dir: &Path, prefix: Vec<u8>, out: &mut Manifest) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let mut path = prefix.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(entry.file_name().as_bytes());
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let kind = meta.file_type();
        let line = if kind.is_symlink() {
            let target = std::fs::read_link(entry.path()).unwrap();
            format!("link {}", hex::encode(target.as_os_str().as_bytes()))
        } else if kind.is_dir() {
            walk(&entry.path(), path.clone(), out);
            format!("dir {mode:o}")
        } else {
            let bytes = std::fs::read(entry.path()).unwrap();
            format!(
                "file {mode:o} {}",
                hex::encode(sha2::Sha256::digest(&bytes))
            )
        };
        out.insert(path, line);
    }
}

/// One raw entry of a crafted tar stream: name, kind, link name, content.
pub type Raw<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

/// A gzip-compressed tar stream with raw header names (the `tar` builder refuses `..` and
/// absolute paths, which is what these archives are made to hold).
pub fn crafted(entries: &[Raw]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, kind, link, content) in entries {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(content);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}
