//! Validates JSON against the excerpt of Daytona's OpenAPI schemas kept in
//! `tests/fixtures/daytona/openapi-sandbox.json`. A small validator for exactly the keywords
//! that excerpt uses (`type`, `properties`, `required`, `additionalProperties`, `items`,
//! `enum`, `allOf`, `$ref`, `nullable`, `format`); any other keyword fails the check, so the
//! validator cannot silently accept what it does not understand.

use std::path::Path;

use serde_json::Value;

pub fn excerpt() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/daytona/openapi-sandbox.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The problems of `value` against schema `name` of the excerpt (empty: valid).
pub fn validate(doc: &Value, name: &str, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    check(doc, schema, value, name, &mut errors);
    errors
}

fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = schema.as_object().expect("schemas are objects");
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    for (keyword, rule) in schema {
        match keyword.as_str() {
            "$ref" => {
                let name = rule
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    .expect("local refs");
                check(doc, &doc["components"]["schemas"][name], value, at, errors);
            }
            "allOf" => {
                for part in rule.as_array().unwrap() {
                    check(doc, part, value, at, errors);
                }
            }
            "type" => {
                let ok = match rule.as_str().unwrap() {
                    "object" => value.is_object(),
                    "string" => value.is_string(),
                    "number" => value.is_number(),
                    "integer" => value.is_i64() || value.is_u64(),
                    "boolean" => value.is_boolean(),
                    "array" => value.is_array(),
                    other => panic!("type {other} is not handled"),
                };
                if !ok {
                    errors.push(format!("{at}: {value} is not of type {rule}"));
                }
            }
            "enum" => {
                if !rule.as_array().unwrap().contains(value) {
                    errors.push(format!("{at}: {value} is not one of {rule}"));
                }
            }
            "required" => {
                for field in rule.as_array().unwrap() {
                    let field = field.as_str().unwrap();
                    if value.get(field).is_none() {
                        errors.push(format!("{at}: required `{field}` is missing"));
                    }
                }
            }
            "properties" => {
                if let Some(object) = value.as_object() {
                    for (field, sub) in rule.as_object().unwrap() {
                        if let Some(v) = object.get(field) {
                            check(doc, sub, v, &format!("{at}.{field}"), errors);
                        }
                    }
                    // The real API may add fields; the fake must not invent any.
                    for field in object.keys() {
                        if !rule.as_object().unwrap().contains_key(field) {
                            errors.push(format!("{at}: `{field}` is not in Daytona's schema"));
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(object) = value.as_object() {
                    for (field, v) in object {
                        check(doc, rule, v, &format!("{at}.{field}"), errors);
                    }
                }
            }
            "items" => {
                if let Some(items) = value.as_array() {
                    for (i, v) in items.iter().enumerate() {
                        check(doc, rule, v, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            // Dates are strings; their format is not checked.
            "format" | "nullable" => {}
            other => panic!("keyword `{other}` is not handled by this validator"),
        }
    }
}

#[test]
fn the_validator_refuses_wrong_shapes() {
    let doc = excerpt();
    let bad = serde_json::json!({"id": 1, "state": "running", "cpu": "2"});
    let errors = validate(&doc, "Sandbox", &bad);
    for needle in ["`name` is missing", ".id", ".state", ".cpu"] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{needle}: {errors:?}"
        );
    }
    let extra = serde_json::json!({"items": [], "nextCursor": null, "total": 3});
    assert!(!validate(&doc, "ListSandboxesResponse", &extra).is_empty());
}
