//! Confining caller-supplied directories to the sandbox.

use std::path::{Component, Path, PathBuf};

use super::isolation::WORKSPACE;
use crate::drivers::DriverError;

/// Normalises a caller's path to one relative to the sandbox root. Accepts a relative path or an
/// absolute one under `/workspace`; refuses anything that would leave the root.
pub fn sandbox_relative(field: &'static str, input: &str) -> Result<PathBuf, DriverError> {
    if input.contains('\0') {
        return Err(DriverError::invalid(field, format!("{field} contains a NUL byte")));
    }
    let path = Path::new(input);
    let rest = if path.is_absolute() {
        path.strip_prefix(WORKSPACE).map_err(|_| {
            DriverError::invalid(
                field,
                format!("{field} `{input}` is outside the sandbox; use a path under {WORKSPACE} or a relative path"),
            )
        })?
    } else {
        path
    };
    let mut out = PathBuf::new();
    for component in rest.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(DriverError::invalid(
                        field,
                        format!("{field} `{input}` escapes the sandbox"),
                    ));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(DriverError::invalid(field, format!("{field} `{input}` is not valid")));
            }
        }
    }
    Ok(out)
}

/// Resolves an existing directory inside `root` on the host, following symlinks only as long as
/// they stay inside `root`.
pub fn existing_dir(field: &'static str, root: &Path, relative: &Path) -> Result<PathBuf, DriverError> {
    let root = root
        .canonicalize()
        .map_err(|e| DriverError::internal("cannot resolve the sandbox directory", e))?;
    let target = root.join(relative);
    let resolved = target.canonicalize().map_err(|_| {
        DriverError::invalid(
            field,
            format!("{field} `{}` does not exist in the sandbox", relative.display()),
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
    fn relative_and_workspace_absolute_paths_normalise() {
        assert_eq!(sandbox_relative("f", "src/./app").unwrap(), PathBuf::from("src/app"));
        assert_eq!(sandbox_relative("f", "/workspace/src").unwrap(), PathBuf::from("src"));
        assert_eq!(sandbox_relative("f", "/workspace").unwrap(), PathBuf::new());
        assert_eq!(sandbox_relative("f", "a/../b").unwrap(), PathBuf::from("b"));
    }

    #[test]
    fn escapes_are_refused() {
        for bad in ["../x", "a/../../x", "/etc", "/workspace/../etc", "/workspacex"] {
            let err = sandbox_relative("working_directory", bad).unwrap_err();
            assert!(
                matches!(err, DriverError::InvalidArgument { field: "working_directory", .. }),
                "{bad}: {err:?}"
            );
        }
    }

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
