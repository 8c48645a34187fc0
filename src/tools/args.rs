//! Tool inputs: typed, validated, with errors that name the offending field.
//!
//! Field names are the seed's (snake_case). Unknown fields are refused, so a typo such as
//! `comand` is reported instead of silently ignored. Doc comments become the `description`s of
//! the published JSON schemas.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A caller's input that cannot be used, with the field at fault when one is.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidInput {
    pub field: Option<String>,
    pub message: String,
}

impl InvalidInput {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> InvalidInput {
        InvalidInput {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

/// Parses `value` into `T`, reporting the path of the first bad field.
pub fn parse<T: DeserializeOwned>(value: &Value) -> Result<T, InvalidInput> {
    if !value.is_object() {
        return Err(InvalidInput {
            field: None,
            message: "arguments must be a JSON object".into(),
        });
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde reports missing and unknown fields at the parent; the name is in the message.
        let field = if path == "." {
            message.split('`').nth(1).map(str::to_string)
        } else {
            Some(path)
        };
        let message = match &field {
            Some(f) if !message.contains(&format!("`{f}`")) => format!("{f}: {message}"),
            _ => message,
        };
        InvalidInput { field, message }
    })
}

/// A sandbox name: 1–63 characters, letters, digits, `.`, `_`, `-`, starting with a letter or
/// digit. Unique per tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct SandboxName(String);

impl SandboxName {
    pub fn parse(field: &str, s: &str) -> Result<SandboxName, InvalidInput> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(SandboxName(s.to_string()))
        } else {
            Err(InvalidInput::field(
                field,
                format!(
                    "{field} `{s}` is not a valid sandbox name: use 1-63 letters, digits, '.', \
                     '_' or '-', starting with a letter or digit"
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for SandboxName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SandboxName, D::Error> {
        let s = String::deserialize(d)?;
        SandboxName::parse("name", &s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// Checks environment variable names (POSIX: letters, digits, `_`, not starting with a digit)
/// and values (no NUL byte, which no process could receive).
pub fn check_env(field: &str, env: &BTreeMap<String, String>) -> Result<(), InvalidInput> {
    for (key, value) in env {
        let valid_key = !key.is_empty()
            && !key.as_bytes()[0].is_ascii_digit()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            return Err(InvalidInput::field(
                format!("{field}.{key}"),
                format!("`{key}` is not a valid environment variable name"),
            ));
        }
        if value.contains('\0') {
            return Err(InvalidInput::field(
                format!("{field}.{key}"),
                format!("the value of `{key}` contains a NUL byte"),
            ));
        }
    }
    Ok(())
}

/// Requested resources of a sandbox.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU cores.
    pub cpu: Option<f64>,
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
    /// Disk in GiB.
    pub disk_gb: Option<f64>,
}

/// Input of `create_sandbox`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxArgs {
    /// Default language for `execute_code` in this sandbox.
    #[serde(default = "default_language")]
    #[schemars(default = "default_language")]
    pub language: String,
    /// Unique name (per tenant); usable wherever a sandbox id is accepted. Generated if absent.
    pub name: Option<SandboxName>,
    /// Daytona snapshot to start from (daytona driver only; recorded but unused by the local driver).
    pub image: Option<String>,
    /// The driver to run the sandbox on (`local`, `daytona`), among those the server runs;
    /// default: the server's (`sandbox.driver`).
    pub driver: Option<String>,
    /// Git repository to clone into the sandbox at creation.
    pub git_repo: Option<String>,
    /// Branch to clone.
    pub git_branch: Option<String>,
    /// Environment variables set for every command; values are treated as secrets.
    #[serde(default)]
    pub environment_vars: BTreeMap<String, String>,
    /// Keep the sandbox across server restarts and auto-stop.
    #[serde(default)]
    pub persistent: bool,
    /// Labels for filtering `list_sandboxes`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Resources requested for the sandbox.
    pub resources: Option<Resources>,
    /// Minutes of inactivity before the sandbox is stopped (daytona driver).
    pub auto_stop_minutes: Option<u32>,
    /// Let the sandbox's commands use the network (only where the operator allows it:
    /// `sandbox.allow_network`). Off by default.
    #[serde(default)]
    pub network: bool,
    /// Token for HTTPS git remotes (the clone of `git_repo`, later push/pull): kept with the
    /// sandbox as a secret, never shown, logged or audited.
    pub git_token: Option<String>,
    /// A template (see list_templates) to start from: each field this call leaves out is the
    /// template's; `environment_vars`, `labels` and `resources` merge key by key (the call's
    /// keys win); `setup_commands` given here replace the template's; a `git_repo` given here
    /// drops the template's `git_branch`.
    pub template: Option<String>,
    /// Shell commands run once after the sandbox is created, in order, each as its own
    /// `execute_shell` job in the sandbox's order (before any later call's); their job ids are
    /// in the result (`setup_jobs`). A failing command does not stop the ones after it.
    #[serde(default)]
    pub setup_commands: Vec<String>,
    /// Set by the server (refused in a call): the job ids of the setup commands.
    #[serde(default)]
    #[schemars(skip)]
    pub setup_jobs: Vec<String>,
    /// A snapshot (`snapshot_id` from `snapshot_sandbox`) whose files the new sandbox starts
    /// with: a fork of the sandbox it was taken of. Not with `git_repo`.
    pub from_snapshot: Option<String>,
}

/// The fields of a template (`[templates.NAME]` in the configuration, or `create_template`):
/// the `create_sandbox` fields a sandbox made from it takes unless its call gives them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateFields {
    /// What the template is for (shown by list_templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Default language for `execute_code` in the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Daytona snapshot to start from (daytona driver only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Environment variables for every command; values are secrets (stored, never shown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_vars: BTreeMap<String, String>,
    /// Labels of the sandbox.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Resources requested for the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Let the sandbox's commands use the network (where the operator allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<bool>,
    /// Git repository (without credentials) cloned into the sandbox at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repo: Option<String>,
    /// Branch of `git_repo` to clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch: Option<String>,
    /// Shell commands run once, in order, after the sandbox is created (each an
    /// `execute_shell` job of the sandbox).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup_commands: Vec<String>,
}

pub fn default_language() -> String {
    "python".into()
}

/// Input of `list_sandboxes`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSandboxesArgs {
    /// Only sandboxes carrying every one of these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Only sandboxes in this status (e.g. `running`).
    pub state: Option<String>,
}

/// Input of tools that take only a sandbox.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxArgs {
    /// Sandbox id or name.
    pub sandbox_id: String,
}

/// Input of `execute_shell`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteShellArgs {
    /// Sandbox id or name.
    pub sandbox_id: String,
    /// Shell command, run as `sh -c COMMAND` (bash when available) inside the sandbox.
    pub command: String,
    /// Directory to run in: relative to the sandbox root, or absolute under /workspace.
    pub working_directory: Option<String>,
    /// Seconds before the command and all its children are killed.
    pub timeout_s: Option<f64>,
    /// Extra environment variables for this call.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text written to the command's standard input.
    pub stdin: Option<String>,
}

/// Input of `execute_code`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteCodeArgs {
    /// Sandbox id or name.
    pub sandbox_id: String,
    /// Source code; passed to the interpreter as a file.
    pub code: String,
    /// python, javascript (node), typescript, bash, sh, ruby, perl, php, go, lua, r — whatever
    /// the sandbox has. Defaults to the sandbox's language.
    pub language: Option<String>,
    /// Directory to run in: relative to the sandbox root, or absolute under /workspace.
    pub working_directory: Option<String>,
    /// Seconds before the program and all its children are killed.
    pub timeout_s: Option<f64>,
    /// Extra environment variables for this call.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text written to the program's standard input.
    pub stdin: Option<String>,
}

/// What `file_operation` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileOperation {
    /// The content of a regular file.
    Read,
    /// Replaces a file's content (creating the file and its missing parent directories).
    Write,
    /// Adds to the end of a file (creating it if needed).
    Append,
    /// The entries of a directory.
    List,
    /// Removes a file, a symlink or an empty directory; with `recursive`, a whole tree.
    Delete,
    /// Creates a directory and its missing parents.
    Mkdir,
    /// Renames `file_path` to `destination` (into it, when it is an existing directory).
    Move,
    /// Size, type, permissions and modification time of one entry.
    Stat,
    /// Whether the path exists.
    Exists,
}

impl FileOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            FileOperation::Read => "read",
            FileOperation::Write => "write",
            FileOperation::Append => "append",
            FileOperation::List => "list",
            FileOperation::Delete => "delete",
            FileOperation::Mkdir => "mkdir",
            FileOperation::Move => "move",
            FileOperation::Stat => "stat",
            FileOperation::Exists => "exists",
        }
    }

    /// Whether the operation leaves the sandbox as it was.
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            FileOperation::Read | FileOperation::List | FileOperation::Stat | FileOperation::Exists
        )
    }
}

/// How file content travels in JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Text; reading a file that is not valid UTF-8 is an error that suggests base64.
    #[default]
    #[serde(alias = "utf-8")]
    Utf8,
    /// Bytes as standard base64: any file, byte for byte.
    Base64,
}

/// Input of `file_operation`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileOperationArgs {
    /// Sandbox id or name.
    pub sandbox_id: String,
    /// read, write, append, list, delete, mkdir, move, stat or exists.
    pub operation: FileOperation,
    /// Relative to the sandbox root, or absolute under /workspace. Symlinks are followed only
    /// while they stay inside the sandbox.
    pub file_path: String,
    /// Content for write and append, in `encoding`.
    pub content: Option<String>,
    /// utf8 (default) or base64, for content written and read.
    #[serde(default)]
    pub encoding: Encoding,
    /// New path for move.
    pub destination: Option<String>,
    /// delete: remove a directory and everything in it.
    #[serde(default)]
    pub recursive: bool,
}

/// What `git_operation` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GitOperation {
    /// Clone `repository_url` (optionally one `branch`) into `directory`.
    Clone,
    Status,
    /// Stage `files` (all changes when empty).
    Add,
    /// Commit staged changes (only `files`, when given) with `commit_message`.
    Commit,
    /// Push to `repository_url` (a remote name or URL; default `origin`), `branch` if given.
    Push,
    /// Pull (merge) from `repository_url` (default `origin`), `branch` if given.
    Pull,
    /// Switch to `branch` (`create: true` makes it), or restore `files` from `branch`/the index.
    Checkout,
    /// List branches, or create `branch`.
    Branch,
    /// The last `limit` commits (of `branch`, if given).
    Log,
    /// Unstaged changes (`staged: true`: staged ones), of `files` if given.
    Diff,
}

impl GitOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            GitOperation::Clone => "clone",
            GitOperation::Status => "status",
            GitOperation::Add => "add",
            GitOperation::Commit => "commit",
            GitOperation::Push => "push",
            GitOperation::Pull => "pull",
            GitOperation::Checkout => "checkout",
            GitOperation::Branch => "branch",
            GitOperation::Log => "log",
            GitOperation::Diff => "diff",
        }
    }
}

/// Input of `git_operation`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitOperationArgs {
    /// Sandbox id or name.
    pub sandbox_id: String,
    /// clone, status, add, commit, push, pull, checkout, branch, log or diff.
    pub operation: GitOperation,
    /// clone: the repository (https://, http://, ssh://, git://, file://, user@host:path, or a
    /// path in the sandbox). push/pull: a remote name or URL (default `origin`). A password in
    /// the URL is taken out and used like `token`.
    pub repository_url: Option<String>,
    /// Branch: to clone, push, pull, check out, create (branch), or show (log).
    pub branch: Option<String>,
    /// commit: the message, used byte for byte.
    pub commit_message: Option<String>,
    /// The repository's directory (relative to the sandbox root, or under /workspace); for
    /// clone, where `directory` is made. Defaults to the sandbox root.
    pub working_directory: Option<String>,
    /// add, commit, diff: paths (taken literally, no globs); checkout: files to restore.
    #[serde(default)]
    pub files: Vec<String>,
    /// commit: author (and committer) name.
    pub author_name: Option<String>,
    /// commit: author (and committer) email.
    pub author_email: Option<String>,
    /// clone: the directory to clone into, relative to `working_directory` (default: the
    /// repository's name).
    pub directory: Option<String>,
    /// checkout: create `branch` first.
    #[serde(default)]
    pub create: bool,
    /// log: how many commits (default 20, at most 1000).
    pub limit: Option<u32>,
    /// diff: show staged changes instead of unstaged ones.
    #[serde(default)]
    pub staged: bool,
    /// clone, push, pull: a token for HTTPS remotes, sent as an HTTP header. Never stored with
    /// the job, logged or shown; the sandbox's own `git_token` is used when absent.
    pub token: Option<String>,
    /// Seconds before git is killed.
    pub timeout_s: Option<f64>,
}

/// The JSON schema of `T` as a plain object, without the meta keys MCP clients do not need.
pub fn schema_of<T: JsonSchema>() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).expect("schemas serialize");
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("$schema");
        obj.remove("title");
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_field_is_named() {
        let err = parse::<ExecuteShellArgs>(&json!({"sandbox_id": "x"})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("command"));
    }

    #[test]
    fn wrong_type_is_named() {
        let err = parse::<ExecuteShellArgs>(&json!({"sandbox_id": "x", "command": 5})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("command"));
        let err = parse::<ExecuteShellArgs>(
            &json!({"sandbox_id": "x", "command": "ls", "env": {"A": 1}}),
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("env.A"));
    }

    #[test]
    fn unknown_field_is_named() {
        let err = parse::<SandboxArgs>(&json!({"sandbox_id": "x", "sandbox": "y"})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("sandbox"));
    }

    #[test]
    fn non_object_is_refused() {
        assert!(parse::<SandboxArgs>(&json!([1, 2])).is_err());
    }

    #[test]
    fn sandbox_names_are_checked() {
        assert!(SandboxName::parse("name", "ml-project_2.0").is_ok());
        for bad in ["", "-x", "a/b", "a b", "ä", &"x".repeat(64)] {
            assert!(SandboxName::parse("name", bad).is_err(), "{bad}");
        }
        let err = parse::<CreateSandboxArgs>(&json!({"name": "../etc"})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("name"));
    }

    #[test]
    fn env_names_are_checked() {
        let ok = BTreeMap::from([("PYTHONPATH".to_string(), "/w".to_string())]);
        assert!(check_env("env", &ok).is_ok());
        for bad in ["1X", "A-B", "", "A=B"] {
            let env = BTreeMap::from([(bad.to_string(), "v".to_string())]);
            assert!(check_env("env", &env).is_err(), "{bad}");
        }
    }

    #[test]
    fn schemas_are_objects_with_properties() {
        let schema = schema_of::<ExecuteCodeArgs>();
        assert_eq!(schema["type"], "object");
        assert!(schema["properties"]["code"].is_object());
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["code", "sandbox_id"]);
    }
}

/// Input of `snapshot_sandbox`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSandboxArgs {
    /// Sandbox id or name.
    pub sandbox_id: String,
    /// A label for the snapshot (shown by `list_snapshots`; need not be unique).
    pub name: Option<String>,
    /// Chosen by the server when the call is accepted (so a re-run after a crash makes the same
    /// snapshot); not for callers.
    #[serde(default)]
    #[schemars(skip)]
    pub snapshot_id: Option<String>,
}

/// Input of `list_snapshots`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSnapshotsArgs {
    /// Only the snapshots of this sandbox (id or name; the id of a deleted sandbox works too).
    pub sandbox_id: Option<String>,
}

/// Input of `restore_snapshot`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreSnapshotArgs {
    /// The snapshot to restore.
    pub snapshot_id: String,
    /// Sandbox id or name whose files are replaced by the snapshot's (any sandbox of yours, not
    /// only the one it was taken of).
    pub sandbox_id: String,
}

/// Input of `delete_snapshot`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotArgs {
    /// The snapshot.
    pub snapshot_id: String,
}
