//! Caller paths inside a sandbox. Every driver shows its sandbox's files under [`WORKSPACE`];
//! callers may name a place there with a relative path or an absolute one under it.

use std::path::{Component, Path, PathBuf};

use super::DriverError;

/// Where the sandbox's files appear inside the sandbox.
pub const WORKSPACE: &str = "/workspace";

/// Normalises a caller's path to one relative to the sandbox root. Accepts a relative path or an
/// absolute one under `/workspace`; refuses anything that would leave the root.
pub fn sandbox_relative(field: &'static str, input: &str) -> Result<PathBuf, DriverError> {
    if input.contains('\0') {
        return Err(DriverError::invalid(
            field,
            format!("{field} contains a NUL byte"),
        ));
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
                return Err(DriverError::invalid(
                    field,
                    format!("{field} `{input}` is not valid"),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_workspace_absolute_paths_normalise() {
        assert_eq!(
            sandbox_relative("f", "src/./app").unwrap(),
            PathBuf::from("src/app")
        );
        assert_eq!(
            sandbox_relative("f", "/workspace/src").unwrap(),
            PathBuf::from("src")
        );
        assert_eq!(sandbox_relative("f", "/workspace").unwrap(), PathBuf::new());
        assert_eq!(sandbox_relative("f", "a/../b").unwrap(), PathBuf::from("b"));
    }

    #[test]
    fn escapes_are_refused() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc",
            "/workspace/../etc",
            "/workspacex",
        ] {
            let err = sandbox_relative("working_directory", bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    DriverError::InvalidArgument {
                        field: "working_directory",
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
        }
    }
}
