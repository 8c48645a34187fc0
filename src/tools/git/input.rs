//! Checking `git_operation`'s input before anything is stored: each field is used only by the
//! operations it belongs to, text that must stay on one line does, and a password in a URL or
//! a `token` is found so that `plan` can take it out of the stored arguments.

use super::refs::{self, check_branch};
use super::remote;
use crate::drivers::paths::sandbox_relative;
use crate::tools::InvalidInput;
use crate::tools::args::{GitOperation, GitOperationArgs};

/// Largest `log` length.
const MAX_LOG_LIMIT: u32 = 1000;

/// Refuses NUL and, for one-line values, control characters.
fn check_text(field: &str, value: &str, one_line: bool) -> Result<(), InvalidInput> {
    if value.contains('\0') {
        return Err(InvalidInput::field(
            field,
            format!("{field} contains a NUL byte"),
        ));
    }
    if one_line && value.chars().any(char::is_control) {
        return Err(InvalidInput::field(
            field,
            format!("{field} contains a control character (such as a newline)"),
        ));
    }
    Ok(())
}

/// Checks a token's shape (it travels in an HTTP header).
pub(crate) fn check_token(field: &str, token: &str) -> Result<(), InvalidInput> {
    if token.is_empty() || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidInput::field(
            field,
            format!("{field} must be non-empty, without spaces or control characters"),
        ));
    }
    Ok(())
}

/// A remote for push and pull: a name (`origin`) or a checked URL.
pub(super) fn check_remote(field: &str, value: &str) -> Result<remote::RemoteUrl, InvalidInput> {
    if refs::is_remote_name(value) {
        return Ok(remote::RemoteUrl {
            url: value.to_string(),
            password: None,
        });
    }
    remote::parse(field, value)
}

/// Checks the call and returns the secret it carries (a `token`, or a password in the URL).
pub(super) fn validate(a: &GitOperationArgs) -> Result<Option<String>, InvalidInput> {
    use GitOperation as G;
    let op = a.operation;
    let not_for = |field: &str| {
        Err(InvalidInput::field(
            field,
            format!("{field} is not used by git {}", op.as_str()),
        ))
    };
    if let Some(dir) = &a.working_directory {
        sandbox_relative("working_directory", dir)
            .map_err(|e| InvalidInput::field("working_directory", e.to_string()))?;
    }
    if let Some(branch) = &a.branch {
        check_branch("branch", branch)?;
    }
    for (i, file) in a.files.iter().enumerate() {
        if file.is_empty() {
            return Err(InvalidInput::field(format!("files[{i}]"), "an empty path"));
        }
        check_text(&format!("files[{i}]"), file, false)?;
    }
    for (field, value) in [
        ("author_name", &a.author_name),
        ("author_email", &a.author_email),
    ] {
        if let Some(value) = value {
            check_text(field, value, true)?;
            if value.contains(['<', '>']) {
                return Err(InvalidInput::field(
                    field,
                    format!("{field} cannot contain < or >"),
                ));
            }
        }
    }
    let mut password = None;
    match (&a.repository_url, op) {
        (None, G::Clone) => {
            return Err(InvalidInput::field(
                "repository_url",
                "repository_url is required for clone",
            ));
        }
        (Some(url), G::Clone) => password = remote::parse("repository_url", url)?.password,
        (Some(url), G::Push | G::Pull) => password = check_remote("repository_url", url)?.password,
        (Some(_), _) => return not_for("repository_url"),
        (None, _) => {}
    }
    match (&a.commit_message, op) {
        (None, G::Commit) => {
            return Err(InvalidInput::field(
                "commit_message",
                "commit_message is required for commit",
            ));
        }
        (Some(m), G::Commit) => {
            check_text("commit_message", m, false)?;
            if m.trim().is_empty() {
                return Err(InvalidInput::field(
                    "commit_message",
                    "commit_message is empty",
                ));
            }
        }
        (Some(_), _) => return not_for("commit_message"),
        (None, _) => {}
    }
    if a.directory.is_some() && op != G::Clone {
        return not_for("directory");
    }
    if a.directory.is_some() {
        clone_target(a)?;
    }
    if !a.files.is_empty() && !matches!(op, G::Add | G::Commit | G::Diff | G::Checkout) {
        return not_for("files");
    }
    if a.create && op != G::Checkout {
        return not_for("create");
    }
    if a.staged && op != G::Diff {
        return not_for("staged");
    }
    if op == G::Checkout {
        if a.branch.is_none() && a.files.is_empty() {
            return Err(InvalidInput::field(
                "branch",
                "checkout needs a branch (or files to restore)",
            ));
        }
        if a.create && !a.files.is_empty() {
            return Err(InvalidInput::field(
                "create",
                "create cannot be combined with files",
            ));
        }
    }
    match (a.limit, op) {
        (Some(0), G::Log) => {
            return Err(InvalidInput::field("limit", "limit must be at least 1"));
        }
        (Some(n), G::Log) if n > MAX_LOG_LIMIT => {
            return Err(InvalidInput::field(
                "limit",
                format!("limit must be at most {MAX_LOG_LIMIT}"),
            ));
        }
        (Some(_), G::Log) | (None, _) => {}
        (Some(_), _) => return not_for("limit"),
    }
    if let Some(token) = &a.token {
        if !matches!(op, G::Clone | G::Push | G::Pull) {
            return not_for("token");
        }
        if password.is_some() {
            return Err(InvalidInput::field(
                "token",
                "give the token either in `token` or in repository_url, not both",
            ));
        }
        check_token("token", token)?;
        password = Some(token.clone());
    }
    Ok(password)
}

/// Where a clone goes, relative to the sandbox root: `directory` (absolute under /workspace,
/// or relative to `working_directory`). `None`: git names it after the repository.
pub(super) fn clone_target(a: &GitOperationArgs) -> Result<Option<String>, InvalidInput> {
    let Some(dir) = &a.directory else {
        return Ok(None);
    };
    let joined = if dir.starts_with('/') {
        dir.clone()
    } else {
        format!("{}/{dir}", a.working_directory.as_deref().unwrap_or("."))
    };
    let relative = sandbox_relative("directory", &joined)
        .map_err(|e| InvalidInput::field("directory", e.to_string()))?;
    let text = relative.to_string_lossy().into_owned();
    Ok(Some(if text.is_empty() { ".".into() } else { text }))
}
