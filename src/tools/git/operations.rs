//! What git is asked to do for each operation: the argument vector (caller values as single
//! arguments after `--` or `--end-of-options`), stdin (the commit message) and environment
//! (author, literal pathspecs); and reading back `log` output.

use std::time::Duration;

use super::command::{GitCommand, clone_args};
use super::input::clone_target;
use crate::tools::args::{GitOperation, GitOperationArgs};
use crate::tools::outputs::Commit;

/// Default `log` length.
const DEFAULT_LOG_LIMIT: u32 = 20;
/// The fields of one commit in `log` output, each ended by NUL (`%x00`; the last by `-z`).
/// git cuts commit messages and identities at a NUL, so no field can contain one: repository
/// content cannot shift fields or forge records.
const LOG_FORMAT: &str = "--format=%H%x00%an%x00%ae%x00%aI%x00%s";
const LOG_FIELDS: usize = 5;

/// Parses `log -z` output in the format [`LOG_FORMAT`]. A record whose hash is not one (which
/// git never prints) ends the parse rather than being shown.
pub(super) fn parse_log(stdout: &str) -> Vec<Commit> {
    let fields: Vec<&str> = stdout.split('\0').collect();
    fields
        .chunks_exact(LOG_FIELDS)
        .map_while(|f| {
            let hash = f[0];
            let is_hash =
                matches!(hash.len(), 40 | 64) && hash.bytes().all(|b| b.is_ascii_hexdigit());
            is_hash.then(|| Commit {
                hash: hash.to_string(),
                author_name: f[1].to_string(),
                author_email: f[2].to_string(),
                date: f[3].to_string(),
                subject: f[4].to_string(),
            })
        })
        .collect()
}

/// Builds the git command for a call (without credentials).
pub(super) fn command_for(a: &GitOperationArgs, timeout: Duration) -> GitCommand {
    use GitOperation as G;
    let s = |x: &str| x.to_string();
    let mut literal_paths = false;
    let mut working_directory = a.working_directory.clone();
    let args: Vec<String> = match a.operation {
        G::Clone => {
            let target = clone_target(a).ok().flatten();
            if target.is_some() {
                // The target is root-relative; run from the root.
                working_directory = None;
            }
            clone_args(
                a.repository_url.as_deref().unwrap_or_default(),
                a.branch.as_deref(),
                target.as_deref(),
            )
        }
        G::Status => vec![s("status")],
        G::Add if a.files.is_empty() => vec![s("add"), s("--all")],
        G::Add => {
            literal_paths = true;
            [s("add"), s("--")]
                .into_iter()
                .chain(a.files.iter().cloned())
                .collect()
        }
        G::Commit => {
            let mut v = vec![s("commit"), s("--file=-")];
            if !a.files.is_empty() {
                literal_paths = true;
                v.push(s("--"));
                v.extend(a.files.iter().cloned());
            }
            v
        }
        G::Push | G::Pull => {
            let mut v = if a.operation == G::Push {
                vec![s("push")]
            } else {
                vec![s("pull"), s("--no-rebase"), s("--no-edit")]
            };
            if a.operation == G::Push && a.branch.is_some() {
                v.push(s("--set-upstream"));
            }
            if a.repository_url.is_some() || a.branch.is_some() {
                v.push(s("--end-of-options"));
                v.push(a.repository_url.clone().unwrap_or_else(|| s("origin")));
                v.extend(a.branch.iter().cloned());
            }
            v
        }
        G::Checkout if a.files.is_empty() => {
            let mut v = vec![s("checkout")];
            if a.create {
                v.push(s("-b"));
            }
            v.extend(a.branch.iter().cloned());
            v.push(s("--"));
            v
        }
        G::Checkout => {
            literal_paths = true;
            let mut v = vec![s("checkout")];
            v.extend(a.branch.iter().cloned());
            v.push(s("--"));
            v.extend(a.files.iter().cloned());
            v
        }
        G::Branch => match &a.branch {
            Some(branch) => vec![s("branch"), s("--end-of-options"), branch.clone()],
            None => vec![
                s("branch"),
                s("--list"),
                s("--all"),
                s("--format=%(HEAD) %(refname:short)"),
            ],
        },
        G::Log => {
            let mut v = vec![
                s("log"),
                format!("--max-count={}", a.limit.unwrap_or(DEFAULT_LOG_LIMIT)),
                s("-z"),
                s(LOG_FORMAT),
                s("--end-of-options"),
            ];
            v.extend(a.branch.iter().cloned());
            v.push(s("--"));
            v
        }
        G::Diff => {
            literal_paths = !a.files.is_empty();
            let mut v = vec![s("diff")];
            if a.staged {
                v.push(s("--cached"));
            }
            v.push(s("--end-of-options"));
            v.extend(a.branch.iter().cloned());
            v.push(s("--"));
            v.extend(a.files.iter().cloned());
            v
        }
    };
    let mut command = GitCommand::new(args, working_directory, timeout);
    if literal_paths {
        command
            .env
            .insert("GIT_LITERAL_PATHSPECS".into(), "1".into());
    }
    if a.operation == G::Commit {
        command.stdin = a.commit_message.clone().map(String::into_bytes);
        if let Some(name) = &a.author_name {
            command.env.insert("GIT_AUTHOR_NAME".into(), name.clone());
            command
                .env
                .insert("GIT_COMMITTER_NAME".into(), name.clone());
        }
        if let Some(email) = &a.author_email {
            command.env.insert("GIT_AUTHOR_EMAIL".into(), email.clone());
            command
                .env
                .insert("GIT_COMMITTER_EMAIL".into(), email.clone());
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::args;
    use serde_json::json;

    #[test]
    fn hostile_values_stay_single_arguments() {
        let a: GitOperationArgs = args::parse(&json!({"sandbox_id": "s", "operation": "commit",
            "commit_message": "-m\n$(touch x); `id` 'q' \"d\"", "files": ["-rf", "a b"]}))
        .unwrap();
        let c = command_for(&a, Duration::from_secs(5));
        assert_eq!(c.args, ["commit", "--file=-", "--", "-rf", "a b"]);
        assert_eq!(
            c.stdin.as_deref(),
            Some("-m\n$(touch x); `id` 'q' \"d\"".as_bytes())
        );
    }

    #[test]
    fn log_output_parses_exactly() {
        let (a, b) = ("a".repeat(40), "0123456789abcdef".repeat(4));
        let out = format!(
            "{a}\0Ann \u{1e}\u{1f}日本\0a@x\0\
             2026-01-01T00:00:00+00:00\0first \u{1e} line ü\0{b}\0Bob\0b@x\0\
             2026-01-02T00:00:00+00:00\0second\0"
        );
        let commits = parse_log(&out);
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[0].author_name, "Ann \u{1e}\u{1f}日本");
        assert_eq!(commits[0].subject, "first \u{1e} line ü");
        assert_eq!(commits[1].hash, b);
        assert_eq!(commits[1].subject, "second");
        // Something that is not a hash where one must be ends the list.
        assert_eq!(parse_log("日本語\0x\0y\0z\0w\0").len(), 0);
        assert_eq!(parse_log("").len(), 0);
    }
}
