//! What a template may hold (the checks and limits shared by `[templates.NAME]` and
//! `create_template`), and how a `create_sandbox` call is completed from one.

use serde_json::{Map, Value};

use crate::tools::args::{InvalidInput, SandboxName, TemplateFields, check_env};
use crate::tools::git;
use crate::tools::resources::ResourcePolicy;
use crate::tools::{DriverCatalog, ToolsConfig};

/// Most setup commands one sandbox runs at creation (a template's, or a call's own).
pub const MAX_SETUP_COMMANDS: usize = 32;
/// Longest setup command, in bytes.
pub const MAX_SETUP_COMMAND_BYTES: usize = 16 * 1024;
/// Longest template description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// Checks a template's name: the rules of a sandbox name (1–63 letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit).
pub fn check_name(field: &str, name: &str) -> Result<(), InvalidInput> {
    SandboxName::parse(field, name).map(|_| ()).map_err(|_| {
        InvalidInput::field(
            field,
            format!(
                "`{name}` is not a valid template name: use 1-63 letters, digits, '.', '_' or \
                 '-', starting with a letter or digit"
            ),
        )
    })
}

/// Checks setup commands: at most [`MAX_SETUP_COMMANDS`], each non-empty, at most
/// [`MAX_SETUP_COMMAND_BYTES`], without a NUL byte (no process could receive it).
pub fn check_setup_commands(field: &str, commands: &[String]) -> Result<(), InvalidInput> {
    if commands.len() > MAX_SETUP_COMMANDS {
        return Err(InvalidInput::field(
            field,
            format!(
                "{} setup commands; at most {MAX_SETUP_COMMANDS} are allowed (join short ones \
                 with `&&`)",
                commands.len()
            ),
        ));
    }
    for (i, command) in commands.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if command.trim().is_empty() {
            return Err(InvalidInput::field(at, "a setup command is empty"));
        }
        if command.len() > MAX_SETUP_COMMAND_BYTES {
            return Err(InvalidInput::field(
                at,
                format!(
                    "a setup command is {} bytes; at most {MAX_SETUP_COMMAND_BYTES} are allowed \
                     (write a script with file_operation and run it instead)",
                    command.len()
                ),
            ));
        }
        if command.contains('\0') {
            return Err(InvalidInput::field(
                at,
                "a setup command contains a NUL byte",
            ));
        }
    }
    Ok(())
}

/// What a template is checked against: the operator's limits, and the drivers when they are
/// known (at start-up they are; `Config::load` checks without them).
pub struct Limits<'a> {
    pub resources: &'a ResourcePolicy,
    pub allow_network: bool,
    pub drivers: Option<&'a DriverCatalog>,
}

impl<'a> Limits<'a> {
    pub fn of(config: &'a ToolsConfig) -> Limits<'a> {
        Limits {
            resources: &config.resources,
            allow_network: config.allow_network,
            drivers: Some(&config.drivers),
        }
    }
}

/// Checks a template's fields; errors name the field under `prefix` (`""` for a call,
/// `templates.NAME.` for the configuration). The checks are those `create_sandbox` makes, so
/// a sandbox made from a valid template fails only on what its own call adds.
pub fn check_fields(
    prefix: &str,
    fields: &TemplateFields,
    limits: &Limits<'_>,
) -> Result<(), InvalidInput> {
    let at = |field: &str| format!("{prefix}{field}");
    let within = |e: InvalidInput| InvalidInput {
        field: e.field.map(|f| format!("{prefix}{f}")),
        message: e.message,
    };
    if let Some(description) = &fields.description {
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(InvalidInput::field(
                at("description"),
                format!("the description is longer than {MAX_DESCRIPTION_BYTES} bytes"),
            ));
        }
    }
    if let (Some(language), Some(drivers)) = (&fields.language, limits.drivers) {
        if !drivers.any_accepts(language) {
            return Err(InvalidInput::field(
                at("language"),
                format!(
                    "unsupported language `{language}`; supported: {}",
                    drivers.all_languages().join(", ")
                ),
            ));
        }
    }
    if fields.language.as_deref().is_some_and(str::is_empty) {
        return Err(InvalidInput::field(at("language"), "language is empty"));
    }
    check_env("environment_vars", &fields.environment_vars).map_err(within)?;
    if let Some(resources) = &fields.resources {
        limits.resources.check(resources).map_err(within)?;
    }
    if fields.network == Some(true) && !limits.allow_network {
        return Err(InvalidInput::field(
            at("network"),
            "network access for sandboxes is disabled by the operator \
             (sandbox.allow_network = false)",
        ));
    }
    match (&fields.git_repo, &fields.git_branch) {
        (Some(url), branch) => {
            let parsed = git::remote::parse("git_repo", url).map_err(within)?;
            if parsed.password.is_some() {
                return Err(InvalidInput::field(
                    at("git_repo"),
                    "a template's git_repo cannot carry credentials: give the token to \
                     create_sandbox (git_token) instead",
                ));
            }
            if let Some(branch) = branch {
                git::check_branch("git_branch", branch).map_err(within)?;
            }
        }
        (None, Some(_)) => {
            return Err(InvalidInput::field(
                at("git_branch"),
                "git_branch needs git_repo",
            ));
        }
        (None, None) => {}
    }
    check_setup_commands("setup_commands", &fields.setup_commands).map_err(within)
}

/// Completes `call` (a `create_sandbox` call's arguments, an object) from `template`: each field
/// the call leaves out is the template's; `environment_vars`, `labels` and `resources` merge key
/// by key (the call's keys win); `setup_commands` given in the call (even empty) replace the
/// template's; a `git_repo` in the call drops the template's `git_branch`, which belongs to the
/// template's repository. A field of the call with the wrong type is left for the parse to
/// refuse.
pub fn merge_into(call: &mut Map<String, Value>, template: &TemplateFields) {
    let template = match serde_json::to_value(template) {
        Ok(Value::Object(object)) => object,
        _ => return,
    };
    let own_repo = call.contains_key("git_repo");
    for (key, value) in template {
        match key.as_str() {
            "description" => {}
            "git_branch" if own_repo => {}
            "environment_vars" | "labels" | "resources" => match (call.get_mut(&key), value) {
                (Some(Value::Object(given)), Value::Object(defaults)) => {
                    for (k, v) in defaults.into_iter().filter(|(_, v)| !v.is_null()) {
                        given.entry(k).or_insert(v);
                    }
                }
                (Some(_), _) => {}
                (None, Value::Object(mut value)) => {
                    value.retain(|_, v| !v.is_null());
                    call.insert(key, Value::Object(value));
                }
                (None, _) => {}
            },
            _ => {
                call.entry(key).or_insert(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> TemplateFields {
        serde_json::from_value(json!({
            "description": "py",
            "language": "python",
            "environment_vars": {"A": "1", "B": "2"},
            "labels": {"team": "data"},
            "resources": {"cpu": 1.0, "memory_mb": 512},
            "git_repo": "https://example.com/r.git",
            "git_branch": "dev",
            "setup_commands": ["echo one", "echo two"],
        }))
        .unwrap()
    }

    #[test]
    fn the_call_wins_and_maps_merge_key_by_key() {
        let mut call = json!({
            "language": "sh",
            "environment_vars": {"B": "call"},
            "resources": {"cpu": 2.0},
        })
        .as_object()
        .unwrap()
        .clone();
        merge_into(&mut call, &template());
        assert_eq!(call["language"], "sh");
        assert_eq!(call["environment_vars"], json!({"A": "1", "B": "call"}));
        assert_eq!(call["resources"], json!({"cpu": 2.0, "memory_mb": 512}));
        assert_eq!(call["labels"], json!({"team": "data"}));
        assert_eq!(call["git_branch"], "dev");
        assert_eq!(call["setup_commands"], json!(["echo one", "echo two"]));
        assert!(!call.contains_key("description"));
    }

    #[test]
    fn own_setup_commands_and_repository_replace_the_templates() {
        let mut call = json!({"setup_commands": [], "git_repo": "https://example.com/o.git"})
            .as_object()
            .unwrap()
            .clone();
        merge_into(&mut call, &template());
        assert_eq!(call["setup_commands"], json!([]));
        assert_eq!(call["git_repo"], "https://example.com/o.git");
        assert!(!call.contains_key("git_branch"), "{call:?}");
    }

    #[test]
    fn setup_commands_have_limits() {
        assert!(check_setup_commands("s", &["true".into()]).is_ok());
        let many = vec!["true".to_string(); MAX_SETUP_COMMANDS + 1];
        assert_eq!(
            check_setup_commands("s", &many)
                .unwrap_err()
                .field
                .as_deref(),
            Some("s")
        );
        let long = vec!["x".repeat(MAX_SETUP_COMMAND_BYTES + 1)];
        assert_eq!(
            check_setup_commands("s", &long)
                .unwrap_err()
                .field
                .as_deref(),
            Some("s[0]")
        );
        let blank = vec!["true".into(), "  ".into()];
        assert_eq!(
            check_setup_commands("s", &blank)
                .unwrap_err()
                .field
                .as_deref(),
            Some("s[1]")
        );
    }
}
