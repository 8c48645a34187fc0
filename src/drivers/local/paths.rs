//! Resolving caller-supplied directories on the host, confined to the sandbox directory.

use std::path::{Path, PathBuf};

use crate::drivers::DriverError;

/// Resolves an existing directory inside `root` on the host, following symlinks only as long as
/// they stay inside `root`.
pub fn existing_dir(
    field: &'static str,
    root: &Path,
    relative: &Path,
) -> Result<PathBuf, DriverError> {
    let root = root
        .canonicalize()
        .map_err(|e| DriverError::internal("cannot resolve the sandbox directory", e))?;
    let target = root.join(relative);
    let resolved = target.canonicalize().map_err(|_| {
        DriverError::invalid(
            field,
            format!(
                "{field} `{}` does not exist in the sandbox",
                relative.display()
            ),
        )
    })?;
    if !resolved.starts_with(&root) {
        return Err(DriverError::invalid(
            field,
            format!("{field} `{}` leads outside the sandbox", relative.display()),
        ));
    }
    if !resolved.is_dir() {
        return Err(DriverError::invalid(
            field,
            format!("{field} `{}` is not a directory", relative.display()),
        ));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_out_of_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("out")).unwrap();
        std::os::unix::fs::symlink("inside", root.path().join("ok")).unwrap();
        assert!(existing_dir("w", root.path(), Path::new("ok")).is_ok());
        assert!(existing_dir("w", root.path(), Path::new("out")).is_err());
        assert!(existing_dir("w", root.path(), Path::new("missing")).is_err());
    }
}
