//! File operations on a Daytona sandbox, as commands through the wrapper (Daytona's CLI has no
//! file-copy command): a constant script per call with the operation and the absolute path as
//! arguments (base64 in the command line like every argument), content in and out as the
//! wrapper's stdin and stdout, which travel in base64, so every byte value survives. Writes go
//! in chunks under the command line's limit, into a temporary file renamed at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::drivers::DriverError;
use crate::drivers::files::{Entry, EntryKind};

/// The script. `$1` operation, `$2` absolute path, then per operation. Exit codes: 2 missing,
/// 3 a directory, 4 not a regular file, 5 too large, 6 a parent is not a directory, 7 not a
/// directory, 8 not empty, 9 exists and is not a directory, 10 moving into itself.
/// Entries print as NUL-separated `find -printf` fields.
pub const FILES: &str = r#"op=$1; p=$2
fields="%y\0%s\0%m\0%T@\0%l\0%f\0"
there() { [ -e "$1" ] || [ -L "$1" ]; }
case "$op" in
read)
  there "$p" || exit 2
  [ -d "$p" ] && exit 3
  [ -f "$p" ] || exit 4
  [ "$(stat -L -c %s -- "$p")" -gt "$3" ] && exit 5
  exec cat -- "$p" ;;
put)
  # $3 temporary name (empty: append to the file itself), $4 first chunk, $5 last chunk
  [ -d "$p" ] && exit 3
  there "$p" && [ ! -f "$p" ] && exit 4
  dir=$(dirname -- "$p")
  mkdir -p -- "$dir" 2>/dev/null || exit 6
  if [ -z "$3" ]; then cat >> "$p" || exit 6
  else
    t="$dir/$3"
    if [ "$4" = 1 ]; then cat > "$t" || exit 6; else cat >> "$t" || exit 6; fi
    if [ "$5" = 1 ]; then mv -f -- "$t" "$p" || exit 6; fi
  fi
  if [ "$5" = 1 ]; then stat -c %s -- "$p"; fi ;;
abort)
  rm -f -- "$(dirname -- "$p")/$3" ;;
list)
  there "$p" || exit 2
  [ -d "$p" ] || exit 7
  find "$p" -mindepth 1 -maxdepth 1 -printf "$fields" ;;
stat)
  there "$p" || exit 2
  find "$p" -maxdepth 0 -printf "$fields" ;;
exists)
  if there "$p"; then find "$p" -maxdepth 0 -printf "%y"; else printf none; fi ;;
delete)
  there "$p" || exit 2
  if [ -d "$p" ] && [ ! -L "$p" ]; then
    if [ "$3" = 1 ]; then n=$(find "$p" | wc -l); rm -rf -- "$p" || exit 8; echo $((n))
    else rmdir -- "$p" 2>/dev/null || exit 8; echo 1; fi
  else rm -f -- "$p" || exit 8; echo 1; fi ;;
mkdir)
  if [ -d "$p" ]; then echo 0; exit 0; fi
  there "$p" && exit 9
  mkdir -p -- "$p" 2>/dev/null || exit 6
  echo 1 ;;
move)
  there "$p" || exit 2
  d=$3
  if [ -d "$d" ] && [ ! -L "$d" ]; then d="$d/$(basename -- "$p")"; echo into; else echo as; fi
  case "$d/" in "$p"/*) exit 10 ;; esac
  [ -d "$(dirname -- "$d")" ] || exit 2
  mv -f -- "$p" "$d" || exit 8 ;;
*) exit 64 ;;
esac"#;

/// The error an exit code of [`FILES`] means, for `path` (as the caller wrote it).
pub fn error(code: i32, field: &'static str, path: &str, stderr: &str) -> DriverError {
    let invalid = |what: &str| DriverError::invalid(field, format!("{field} `{path}` {what}"));
    match code {
        2 => DriverError::PathNotFound {
            field,
            message: format!("{field} `{path}` does not exist"),
        },
        3 => invalid("is a directory"),
        4 => invalid("is not a regular file"),
        5 => DriverError::LimitExceeded(format!("`{path}` is larger than file_operation's limit")),
        6 => invalid("cannot be created: a parent is not a directory or is not writable"),
        7 => invalid("is not a directory"),
        8 => invalid("cannot be removed or replaced (a directory that is not empty?)"),
        9 => invalid("exists and is not a directory"),
        10 => invalid("cannot be moved into itself"),
        other => DriverError::Internal(format!(
            "the file script exited with {other}: {}",
            stderr.trim()
        )),
    }
}

fn kind(letter: &str) -> Option<EntryKind> {
    Some(match letter {
        "f" => EntryKind::File,
        "d" => EntryKind::Directory,
        "l" => EntryKind::Symlink,
        "p" => EntryKind::Fifo,
        "s" => EntryKind::Socket,
        "c" => EntryKind::CharDevice,
        "b" => EntryKind::BlockDevice,
        _ => return None,
    })
}

/// The kind `exists` printed (`none`: absent).
pub fn exists(output: &[u8]) -> Option<EntryKind> {
    kind(String::from_utf8_lossy(output).trim())
}

/// Entries printed with the script's `find -printf` fields.
pub fn entries(output: &[u8]) -> Result<Vec<Entry>, DriverError> {
    let bad =
        || DriverError::Internal("the sandbox printed an entry the driver cannot read".into());
    let fields: Vec<&[u8]> = output.split(|b| *b == 0).collect();
    // A trailing NUL leaves one empty field at the end.
    let fields = &fields[..fields.len().saturating_sub(1)];
    if fields.len() % 6 != 0 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(fields.len() / 6);
    for f in fields.chunks(6) {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let kind = kind(&text(f[0])).ok_or_else(bad)?;
        let seconds: f64 = text(f[3]).parse().map_err(|_| bad())?;
        out.push(Entry {
            name: text(f[5]),
            kind,
            size: text(f[1]).parse().map_err(|_| bad())?,
            mode: u32::from_str_radix(&text(f[2]), 8).map_err(|_| bad())? & 0o7777,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0)),
            link_target: (kind == EntryKind::Symlink).then(|| text(f[4])),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The first number the script printed.
pub fn number(output: &[u8]) -> Result<u64, DriverError> {
    String::from_utf8_lossy(output)
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .ok_or_else(|| DriverError::Internal("the sandbox printed no number".into()))
}

/// The absolute path in the sandbox of a sandbox-relative `path` under `root`.
pub fn absolute(root: &str, path: &Path) -> String {
    if path.as_os_str().is_empty() {
        root.to_string()
    } else {
        format!("{}/{}", root.trim_end_matches('/'), path.display())
    }
}

/// The sandbox-relative destination of a move of `source` to `destination`: into it when the
/// script said it was a directory.
pub fn moved_to(output: &[u8], source: &Path, destination: &Path) -> PathBuf {
    if String::from_utf8_lossy(output).trim() == "into" {
        destination.join(source.file_name().unwrap_or_default())
    } else {
        destination.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_from_find_fields() {
        let out = b"f\x003\x00644\x001700000000.5\x00\x00b\nname\x00l\x000\x00777\x001.0\x00../t\x00a\x00";
        let e = entries(out).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "a");
        assert_eq!(e[0].kind, EntryKind::Symlink);
        assert_eq!(e[0].link_target.as_deref(), Some("../t"));
        assert_eq!(e[1].name, "b\nname");
        assert_eq!(e[1].mode, 0o644);
        assert_eq!(e[1].size, 3);
        assert!(entries(b"f\x001\x00").is_err());
    }
}
