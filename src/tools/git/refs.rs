//! Branch and remote names a caller may pass to git: git's own rules (`git check-ref-format
//! --branch`), plus no leading `-`, so that a name can never be read as an option.

use crate::tools::InvalidInput;

/// Checks a branch name the way `git check-ref-format --branch` does, and refuses a leading
/// `-`. Quotes, `$`, backticks and `;` are legal in branch names and stay legal: git receives
/// the name as one argument, never through a shell.
pub fn check_branch(field: &str, name: &str) -> Result<(), InvalidInput> {
    let refuse = |why: &str| {
        Err(InvalidInput::field(
            field,
            format!(
                "{field} `{}` is not a valid branch name: {why}",
                name.escape_debug()
            ),
        ))
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > 255 {
        return refuse("it is longer than 255 bytes");
    }
    if name.starts_with('-') {
        return refuse("it starts with `-`");
    }
    if let Some(c) = name.chars().find(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return refuse(&format!(
            "it contains {}",
            if c.is_ascii_control() {
                "a control character (such as a newline)".to_string()
            } else {
                format!("`{c}`")
            }
        ));
    }
    if name.contains("..") {
        return refuse("it contains `..`");
    }
    if name.contains("@{") || name == "@" {
        return refuse("it contains `@{` or is `@`");
    }
    if name == "HEAD" {
        return refuse("`HEAD` is reserved");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return refuse("it has an empty path component");
    }
    if name.ends_with('.') {
        return refuse("it ends with `.`");
    }
    for part in name.split('/') {
        if part.starts_with('.') {
            return refuse("a component starts with `.`");
        }
        if part.ends_with(".lock") {
            return refuse("a component ends with `.lock`");
        }
    }
    Ok(())
}

/// A remote name (`origin`): letters, digits, `.`, `_`, `-` and `/`, not starting with `-`.
pub fn is_remote_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_follow_git_rules() {
        for ok in [
            "main",
            "feature/x-1",
            "it's",
            "say\"hi\"",
            "x$(touch${IFS}p)",
            "`id`",
            "a;b",
            "日本",
        ] {
            assert!(check_branch("branch", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-rf", "--help", "a b", "a\nb", "a..b", "a~1", "a^", "a:b", "a?", "a*", "a[",
            "a\\b", "@", "a@{1}", "HEAD", "/a", "a/", "a//b", "a.", ".a", "a/.b", "a.lock",
        ] {
            let err = check_branch("branch", bad).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("branch"), "{bad}");
        }
    }

    #[test]
    fn remote_names() {
        assert!(is_remote_name("origin"));
        assert!(is_remote_name("up-stream.2"));
        assert!(!is_remote_name("-x"));
        assert!(!is_remote_name("https://x"));
        assert!(!is_remote_name(""));
    }
}
