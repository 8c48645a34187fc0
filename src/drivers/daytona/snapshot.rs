//! Snapshots of a Daytona sandbox through `daytona exec` (the CLI has no file-copy command and
//! no snapshot of a sandbox's files): a constant script packs the workspace with `tar` into a
//! file in the sandbox's `/tmp` and the driver reads it back in chunks (the wrapper carries
//! stdout in base64, so every byte survives); a restore sends the tar stream in chunks as the
//! wrapper's stdin, unpacks it into a directory inside the workspace and only then replaces the
//! workspace's entries with the unpacked ones. The server checked every entry of the stream
//! (`drivers::archive`) before sending it; the sandbox's `tar` unpacks into a fresh directory.

/// The script. `$1` operation, `$2` the workspace, `$3` the tar file in the sandbox, then per
/// operation. Exit codes: 20 pack failed, 21 cannot write, 22 cannot make the unpacking
/// directory, 23 unpack failed (nothing changed), 24 the swap failed.
pub const SNAPSHOT: &str = r#"op=$1; root=$2; t=$3
case "$op" in
pack)
  rm -f -- "$t"
  tar -C "$root" --numeric-owner --format=gnu -cf "$t" . || { rm -f -- "$t"; exit 20; }
  stat -c %s -- "$t" ;;
chunk)
  # $4 offset from 1, $5 length
  tail -c +"$4" -- "$t" | head -c "$5" ;;
put)
  # $4 1 for the first chunk
  if [ "$4" = 1 ]; then cat > "$t" || exit 21; else cat >> "$t" || exit 21; fi ;;
unpack)
  # $4 the unpacking directory's name, inside the workspace
  new="$root/$4"
  rm -rf -- "$new"
  mkdir -- "$new" || { rm -f -- "$t"; exit 22; }
  if ! tar -C "$new" --no-same-owner --numeric-owner -xpf "$t"; then
    chmod -R u+w -- "$new" 2>/dev/null; rm -rf -- "$new"; rm -f -- "$t"; exit 23
  fi
  rm -f -- "$t"
  find "$root" -mindepth 1 -path "$new" -prune -o -type d -exec chmod u+w -- {} + 2>/dev/null
  find "$root" -mindepth 1 -maxdepth 1 ! -name "$4" -exec rm -rf -- {} + || exit 24
  find "$new" -mindepth 1 -maxdepth 1 -exec mv -- {} "$root"/ \; || exit 24
  rmdir -- "$new" || exit 24 ;;
rm)
  rm -f -- "$t" ;;
*) exit 64 ;;
esac"#;

/// Bytes read back per call (the wrapper's stdout, in base64 on the CLI's stdout).
pub const READ_CHUNK: usize = 8 << 20;
