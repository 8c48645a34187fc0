//! Where snapshot archives live: `<data_dir>/snapshots/<snapshot_id>.tar.gz`, a gzip-compressed
//! tar stream of the sandbox's files (`drivers::archive`).
//!
//! An archive is written to a temporary file in the same directory, fsynced, renamed into
//! place and the directory fsynced, so a crash leaves either the whole archive or none (the
//! temporary files are removed at start-up). Its SHA-256 and size are taken while it is
//! written, and checked again before every restore: a corrupted or replaced archive is refused
//! before anything is unpacked.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::drivers::DriverError;

const TEMP_PREFIX: &str = ".tmp-";
const SCRATCH_PREFIX: &str = ".scratch-";

/// The archive directory of this node.
#[derive(Clone, Debug)]
pub struct Archives {
    dir: PathBuf,
}

/// A plain tar file for a driver to write or read, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a sealed archive is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub size_bytes: u64,
    /// SHA-256, lower-case hex.
    pub digest: String,
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn internal(context: &str) -> impl Fn(io::Error) -> DriverError + '_ {
    move |e| DriverError::internal(context, e)
}

fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Archives {
    /// Opens (creating) `<data_dir>/snapshots` and removes what interrupted writes left.
    pub fn open(data_dir: &Path) -> io::Result<Archives> {
        let dir = data_dir.join("snapshots");
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) || name.starts_with(SCRATCH_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Archives { dir })
    }

    /// The archive of snapshot `id` (ids are server-made: `snap-` and hex).
    pub fn path_of(&self, id: &str) -> Result<PathBuf, DriverError> {
        let valid = id.len() <= 64
            && id.starts_with("snap-")
            && id[5..].bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(DriverError::invalid(
                "snapshot_id",
                format!("invalid snapshot id `{id}`"),
            ));
        }
        Ok(self.dir.join(format!("{id}.tar.gz")))
    }

    /// A new, empty scratch file for a plain tar stream.
    pub fn scratch(&self) -> Result<Scratch, DriverError> {
        let path = self.dir.join(format!("{SCRATCH_PREFIX}{}.tar", nonce()));
        File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(internal("cannot create a scratch file"))?;
        Ok(Scratch { path })
    }

    /// Compresses the tar stream in `tar` into the archive of snapshot `id`, atomically.
    pub async fn seal(&self, id: &str, tar: &Path) -> Result<Sealed, DriverError> {
        let target = self.path_of(id)?;
        let temp = self.dir.join(format!("{TEMP_PREFIX}{id}-{}", nonce()));
        let (dir, tar) = (self.dir.clone(), tar.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let result = seal_blocking(&tar, &temp, &target, &dir);
            if result.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            result
        })
        .await
        .map_err(|e| DriverError::internal("sealing the snapshot failed", e))?
    }

    /// Checks the archive of snapshot `id` against its recorded size and digest, then
    /// decompresses it into a scratch tar file.
    pub async fn open_verified(
        &self,
        id: &str,
        size_bytes: u64,
        digest: &str,
    ) -> Result<Scratch, DriverError> {
        let path = self.path_of(id)?;
        let scratch = self.scratch()?;
        let (out, digest) = (scratch.path.clone(), digest.to_string());
        tokio::task::spawn_blocking(move || verify_blocking(&path, size_bytes, &digest, &out))
            .await
            .map_err(|e| DriverError::internal("reading the snapshot failed", e))??;
        Ok(scratch)
    }

    /// Removes the archive of snapshot `id`; whether there was one.
    pub async fn remove(&self, id: &str) -> Result<bool, DriverError> {
        let path = self.path_of(id)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(DriverError::internal("cannot remove the snapshot", e)),
        }
    }

    /// Whether the archive of snapshot `id` is on this node.
    pub fn holds(&self, id: &str) -> bool {
        self.path_of(id).is_ok_and(|p| p.is_file())
    }
}

fn seal_blocking(
    tar: &Path,
    temp: &Path,
    target: &Path,
    dir: &Path,
) -> Result<Sealed, DriverError> {
    let mut input = BufReader::new(File::open(tar).map_err(internal("cannot read the snapshot"))?);
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(internal("cannot create the snapshot's archive"))?;
    let hashing = Hashing {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        written: 0,
    };
    let mut gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::default());
    let wrote = internal("cannot write the snapshot's archive");
    io::copy(&mut input, &mut gz).map_err(&wrote)?;
    let mut hashing = gz.finish().map_err(&wrote)?;
    hashing.flush().map_err(&wrote)?;
    let Hashing {
        inner,
        hasher,
        written,
    } = hashing;
    let file = inner.into_inner().map_err(|e| wrote(e.into_error()))?;
    file.sync_all().map_err(&wrote)?;
    drop(file);
    std::fs::rename(temp, target).map_err(&wrote)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(&wrote)?;
    Ok(Sealed {
        size_bytes: written,
        digest: hex::encode(hasher.finalize()),
    })
}

fn corrupted(why: &str) -> DriverError {
    DriverError::invalid(
        "snapshot_id",
        format!(
            "the snapshot's archive is corrupted ({why}); it was not restored and nothing was \
             changed"
        ),
    )
}

fn verify_blocking(path: &Path, size: u64, digest: &str, out: &Path) -> Result<(), DriverError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DriverError::NotFound(
                "the snapshot's archive is not on this server".into(),
            ));
        }
        Err(e) => return Err(DriverError::internal("cannot read the snapshot", e)),
    };
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(internal("cannot read the snapshot"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != size {
        return Err(corrupted("its size differs from the one recorded"));
    }
    if hex::encode(hasher.finalize()) != digest {
        return Err(corrupted("its SHA-256 differs from the one recorded"));
    }
    // The file is read again: it is the server's own (the data dir is private), so what was
    // hashed is what is decompressed.
    let file = File::open(path).map_err(internal("cannot read the snapshot"))?;
    let mut gz = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut output = BufWriter::new(
        File::options()
            .write(true)
            .truncate(true)
            .open(out)
            .map_err(internal("cannot write a scratch file"))?,
    );
    io::copy(&mut gz, &mut output).map_err(|_| corrupted("it does not decompress"))?;
    output
        .flush()
        .map_err(internal("cannot write a scratch file"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sealed_archives_verify_and_tampered_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let archives = Archives::open(dir.path()).unwrap();
        let tar = archives.scratch().unwrap();
        std::fs::write(tar.path(), b"not really a tar, but bytes").unwrap();
        let sealed = archives.seal("snap-00ff", tar.path()).await.unwrap();
        let path = archives.path_of("snap-00ff").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), sealed.size_bytes);
        let out = archives
            .open_verified("snap-00ff", sealed.size_bytes, &sealed.digest)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(out.path()).unwrap(),
            b"not really a tar, but bytes"
        );
        let wrong = "0".repeat(64);
        let err = archives
            .open_verified("snap-00ff", sealed.size_bytes, &wrong)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "{err}");
        assert!(archives.path_of("snap-../x").is_err());
        assert!(archives.remove("snap-00ff").await.unwrap());
        assert!(!archives.holds("snap-00ff"));
    }
}
