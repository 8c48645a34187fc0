//! Templates: named presets of `create_sandbox` fields plus setup commands.
//!
//! Two sources. The configuration's (`[templates.NAME]`, checked at start-up, read-only,
//! visible to every tenant) and those a tenant stores with `create_template` (inserted with
//! the job, in its transaction, like a `create_sandbox`'s sandbox row: the environment values
//! live on the template row only, the job keeps their names). A stored template cannot take a
//! configuration template's name, so a name means one template; should the operator add one
//! later under a stored name, the configuration's wins and `list_templates` marks the stored
//! one `shadowed`. `create_sandbox {template}` is completed from the template before it is
//! planned (`expand`, called by `Tools::submit` through `Tool::prepare`).

pub mod fields;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::fields::{Limits, check_fields, check_name, merge_into};
use super::args::{self, InvalidInput, TemplateFields, schema_of};
use super::secrets::STORED_WITH_TEMPLATE;
use super::{
    Annotations, Plan, SubmitError, Target, Tool, ToolEnv, ToolSpec, ToolsConfig, failed,
    store_failure, stored_args, succeeded,
};
use crate::actors::{JobContext, Outcome};
use crate::auth::Role;
use crate::store::{ErrorReason, Job, StoreError, TemplateRecord};

/// Where a template comes from.
pub const CONFIG: &str = "config";
pub const STORED: &str = "stored";

/// A template as `create_template` and `list_templates` show it: environment values masked.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TemplateView {
    pub name: String,
    /// `config` (the server's configuration: read-only, every tenant's) or `stored`
    /// (`create_template`, this tenant's).
    pub source: String,
    #[serde(flatten)]
    pub fields: TemplateFields,
    /// When it was stored (RFC 3339); none for the configuration's.
    pub created_at: Option<String>,
    /// A stored template whose name the configuration has since taken: sandboxes made with
    /// this name get the configuration's.
    pub shadowed: bool,
}

impl TemplateView {
    fn new(name: &str, source: &str, mut fields: TemplateFields) -> TemplateView {
        for value in fields.environment_vars.values_mut() {
            *value = "***".into();
        }
        TemplateView {
            name: name.to_string(),
            source: source.to_string(),
            fields,
            created_at: None,
            shadowed: false,
        }
    }

    fn stored(record: &TemplateRecord) -> TemplateView {
        let mut view = TemplateView::new(&record.name, STORED, fields_of(record));
        view.created_at = Some(
            record
                .created_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        );
        view
    }
}

/// Output of `create_template`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CreateTemplateOutput {
    pub template: TemplateView,
    pub message: String,
}

/// Output of `list_templates`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ListTemplatesOutput {
    pub templates: Vec<TemplateView>,
    pub count: usize,
    pub message: String,
}

/// Output of `delete_template`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct DeleteTemplateOutput {
    pub name: String,
    pub success: bool,
    pub message: String,
}

/// Input of `delete_template`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateNameArgs {
    /// The template's name.
    pub name: String,
}

/// Input of `list_templates`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTemplatesArgs {}

/// The fields of a stored template, its environment values put back.
fn fields_of(record: &TemplateRecord) -> TemplateFields {
    let mut fields: TemplateFields =
        serde_json::from_value(record.fields.clone()).unwrap_or_default();
    fields.environment_vars = record.environment_vars.clone();
    fields
}

/// The template `name` for `tenant`: the configuration's, else the tenant's stored one.
pub(crate) async fn lookup(
    env: &ToolEnv,
    tenant: &str,
    name: &str,
) -> Result<Option<TemplateFields>, StoreError> {
    if let Some(fields) = env.config.templates.get(name) {
        return Ok(Some(fields.clone()));
    }
    Ok(env
        .store
        .template(tenant, name)
        .await?
        .as_ref()
        .map(fields_of))
}

/// Completes a `create_sandbox` call naming a `template` from it (see [`fields::merge_into`]);
/// other calls are returned as they are. An unknown template is
/// [`SubmitError::TemplateNotFound`].
pub(crate) async fn expand(
    env: &ToolEnv,
    tenant: &str,
    mut arguments: Value,
) -> Result<Value, SubmitError> {
    let Some(call) = arguments.as_object_mut() else {
        return Ok(arguments);
    };
    let name = match call.get("template") {
        None | Some(Value::Null) => return Ok(arguments),
        Some(Value::String(name)) => name.clone(),
        Some(_) => {
            return Err(
                InvalidInput::field("template", "template must be a template's name").into(),
            );
        }
    };
    check_name("template", &name)?;
    let template = lookup(env, tenant, &name)
        .await?
        .ok_or(SubmitError::TemplateNotFound(name))?;
    merge_into(call, &template);
    Ok(arguments)
}

pub(super) struct CreateTemplate {
    spec: ToolSpec,
}

/// The input schema of `create_template`: a name plus the template's fields.
fn create_template_schema() -> Value {
    let mut schema = schema_of::<TemplateFields>();
    schema["properties"]["name"] = json!({
        "type": "string",
        "description": "The template's name (1-63 letters, digits, '.', '_' or '-', starting \
                        with a letter or digit); unique per tenant, and not one of the server's \
                        own templates (list_templates).",
    });
    schema["required"] = json!(["name"]);
    schema
}

impl CreateTemplate {
    pub(super) fn new() -> CreateTemplate {
        CreateTemplate {
            spec: ToolSpec {
                name: "create_template",
                description: "Store a named sandbox template for this tenant: create_sandbox \
                    fields (language, image, environment_vars, labels, resources, network, \
                    git_repo, git_branch) and setup_commands run once, in order, in each new \
                    sandbox. Use it with create_sandbox {template: NAME}; the call's own fields \
                    win. Environment values are kept as secrets and never shown.",
                input_schema: create_template_schema(),
                output_schema: schema_of::<CreateTemplateOutput>(),
                annotations: Annotations {
                    read_only_hint: false,
                    destructive_hint: false,
                    idempotent_hint: false,
                    open_world_hint: false,
                },
                min_role: Role::Developer,
            },
        }
    }
}

#[async_trait]
impl Tool for CreateTemplate {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, mut arguments: Value, config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let mut rest = arguments.clone();
        let name = match rest.as_object_mut().map(|o| o.remove("name")) {
            Some(Some(Value::String(name))) => name,
            Some(Some(_)) => return Err(InvalidInput::field("name", "name must be a string")),
            Some(None) => return Err(InvalidInput::field("name", "missing field `name`")),
            None => {
                return Err(InvalidInput {
                    field: None,
                    message: "arguments must be a JSON object".into(),
                });
            }
        };
        check_name("name", &name)?;
        let fields: TemplateFields = args::parse(&rest)?;
        check_fields("", &fields, &Limits::of(config))?;
        // The values are stored once, on the template row inserted with the job.
        if !fields.environment_vars.is_empty() {
            let names: BTreeMap<&String, &str> = fields
                .environment_vars
                .keys()
                .map(|k| (k, STORED_WITH_TEMPLATE))
                .collect();
            arguments["environment_vars"] = json!(names);
        }
        let mut stored = fields.clone();
        let environment_vars = std::mem::take(&mut stored.environment_vars);
        let template = TemplateRecord {
            // Set by `Tools::submit`.
            tenant: String::new(),
            name,
            fields: serde_json::to_value(&stored).expect("templates serialize"),
            environment_vars,
            created_at: Utc::now(),
        };
        Ok(Plan {
            arguments,
            target: Target::None,
            retry_safe: true,
            timeout_s: None,
            secret: None,
            sandbox: None,
            template: Some(template),
            setup_commands: Vec::new(),
        })
    }

    async fn run(&self, env: &ToolEnv, job: &Job, _ctx: JobContext) -> Outcome {
        let args: TemplateNameArgs = match job.arguments.get("name").and_then(Value::as_str) {
            Some(name) => TemplateNameArgs {
                name: name.to_string(),
            },
            None => return failed(ErrorReason::InvalidArgument, "the job has no template name"),
        };
        // The row was inserted when the call was accepted; the job reports it.
        match env.store.template(&job.tenant, &args.name).await {
            Ok(Some(record)) => succeeded(
                &CreateTemplateOutput {
                    template: TemplateView::stored(&record),
                    message: format!("template `{}` stored", record.name),
                },
                None,
            ),
            Ok(None) => failed(
                ErrorReason::NotFound,
                format!(
                    "template `{}` was stored when this call was accepted and has since been \
                     deleted",
                    args.name
                ),
            ),
            Err(e) => store_failure(job, e),
        }
    }
}

pub(super) struct ListTemplates {
    spec: ToolSpec,
}

impl ListTemplates {
    pub(super) fn new() -> ListTemplates {
        ListTemplates {
            spec: ToolSpec {
                name: "list_templates",
                description: "List the sandbox templates you can use with create_sandbox \
                    {template}: the server's own (source `config`) and this tenant's \
                    (source `stored`), with their fields and setup commands (environment \
                    values masked).",
                input_schema: schema_of::<ListTemplatesArgs>(),
                output_schema: schema_of::<ListTemplatesOutput>(),
                annotations: Annotations {
                    read_only_hint: true,
                    destructive_hint: false,
                    idempotent_hint: true,
                    open_world_hint: false,
                },
                min_role: Role::Viewer,
            },
        }
    }
}

#[async_trait]
impl Tool for ListTemplates {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, _config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let _: ListTemplatesArgs = args::parse(&arguments)?;
        Ok(Plan::new(arguments, Target::None, true))
    }

    async fn run(&self, env: &ToolEnv, job: &Job, _ctx: JobContext) -> Outcome {
        let stored = match env.store.list_templates(&job.tenant).await {
            Ok(stored) => stored,
            Err(e) => return store_failure(job, e),
        };
        let mut templates: Vec<TemplateView> = env
            .config
            .templates
            .iter()
            .map(|(name, fields)| TemplateView::new(name, CONFIG, fields.clone()))
            .collect();
        for record in &stored {
            let mut view = TemplateView::stored(record);
            view.shadowed = env.config.templates.contains_key(&record.name);
            templates.push(view);
        }
        templates.sort_by(|a, b| a.name.cmp(&b.name).then(a.source.cmp(&b.source)));
        let count = templates.len();
        succeeded(
            &ListTemplatesOutput {
                templates,
                count,
                message: format!("{count} template(s)"),
            },
            None,
        )
    }
}

pub(super) struct DeleteTemplate {
    spec: ToolSpec,
}

impl DeleteTemplate {
    pub(super) fn new() -> DeleteTemplate {
        DeleteTemplate {
            spec: ToolSpec {
                name: "delete_template",
                description: "Delete one of this tenant's stored templates. Sandboxes made \
                    from it are not affected; the server's own templates cannot be deleted.",
                input_schema: schema_of::<TemplateNameArgs>(),
                output_schema: schema_of::<DeleteTemplateOutput>(),
                annotations: Annotations {
                    read_only_hint: false,
                    destructive_hint: true,
                    idempotent_hint: true,
                    open_world_hint: false,
                },
                min_role: Role::Developer,
            },
        }
    }
}

#[async_trait]
impl Tool for DeleteTemplate {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn plan(&self, arguments: Value, config: &ToolsConfig) -> Result<Plan, InvalidInput> {
        let parsed: TemplateNameArgs = args::parse(&arguments)?;
        check_name("name", &parsed.name)?;
        if config.templates.contains_key(&parsed.name) {
            return Err(InvalidInput::field(
                "name",
                format!(
                    "template `{}` is defined in the server's configuration, which only the \
                     operator can change",
                    parsed.name
                ),
            ));
        }
        Ok(Plan::new(arguments, Target::None, true))
    }

    async fn run(&self, env: &ToolEnv, job: &Job, _ctx: JobContext) -> Outcome {
        let args: TemplateNameArgs = match stored_args(job) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        match env.store.delete_template(&job.tenant, &args.name).await {
            Ok(true) => succeeded(
                &DeleteTemplateOutput {
                    message: format!("template `{}` deleted", args.name),
                    name: args.name,
                    success: true,
                },
                None,
            ),
            Ok(false) => failed(
                ErrorReason::NotFound,
                format!("template `{}` not found", args.name),
            ),
            Err(e) => store_failure(job, e),
        }
    }
}

/// Checks the configuration's templates against the running server's limits and drivers
/// (start-up: an invalid template is an error, not a template that fails later).
pub fn check_configured(config: &ToolsConfig) -> Result<(), InvalidInput> {
    for (name, fields) in config.templates.iter() {
        let prefix = format!("templates.{name}.");
        check_name(&format!("templates.{name}"), name)?;
        check_fields(&prefix, fields, &Limits::of(config))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_template_is_shown_with_its_fields_and_masked_values() {
        let record = TemplateRecord {
            tenant: "t".into(),
            name: "kit".into(),
            fields: json!({"language": "sh", "setup_commands": ["true"]}),
            environment_vars: BTreeMap::from([("TOKEN".into(), "value".into())]),
            created_at: Utc::now(),
        };
        assert_eq!(fields_of(&record).environment_vars["TOKEN"], "value");
        let view = serde_json::to_value(TemplateView::stored(&record)).unwrap();
        assert_eq!(view["environment_vars"], json!({"TOKEN": "***"}));
        assert_eq!(view["language"], "sh");
        assert_eq!(view["setup_commands"], json!(["true"]));
        assert_eq!(view["source"], STORED);
        // Every field the output schema requires is there.
        let schema = schema_of::<ListTemplatesOutput>();
        for field in schema["$defs"]["TemplateView"]["required"]
            .as_array()
            .unwrap()
        {
            assert!(view.get(field.as_str().unwrap()).is_some(), "{field}");
        }
        // `create_sandbox` answers without them when it has none.
        let schema = schema_of::<crate::tools::outputs::CreateSandboxOutput>();
        let required = schema["required"].as_array().unwrap();
        for optional in ["template", "setup_jobs"] {
            assert!(!required.contains(&json!(optional)), "{optional}: {schema}");
        }
    }
}
