//! What makes two submissions "the same request" for an idempotency key: the tool and its
//! arguments as the caller sent them, in a canonical form, as a SHA-256 digest stored on the job.
//!
//! The digest is taken before planning, so that what a plan decides (a generated sandbox name)
//! does not make a repetition look different. Secret values (tokens, environment values) are
//! masked first: the job row keeps no trace of them, not even a hash, and a retry that carries
//! a fresh token is still the same request.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Argument names whose values are secrets.
const SECRET_FIELDS: [&str; 3] = ["git_token", "token", "password"];

/// The digest of `tool` called with `arguments`, as lowercase hex.
pub fn arguments_digest(tool: &str, arguments: &Value) -> String {
    let mut text = String::with_capacity(128);
    text.push_str(tool);
    text.push('\n');
    canonical(arguments, None, &mut text);
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `value` as JSON with object keys sorted, whatever order the map keeps, and with the
/// values of secret fields (and of `environment_vars`' entries) replaced by `"***"`.
fn canonical(value: &Value, key: Option<&str>, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                let v = &map[k];
                if SECRET_FIELDS.contains(&k.as_str()) && !v.is_null() {
                    out.push_str("\"***\"");
                } else if key == Some("environment_vars") {
                    // Names count, values are secrets.
                    out.push_str("\"***\"");
                } else {
                    canonical(v, Some(k), out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, None, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_order_does_not_matter_but_values_and_tools_do() {
        let a: Value =
            serde_json::from_str(r#"{"sandbox_id":"s","command":"ls","x":{"b":1,"a":2}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"x":{"a":2,"b":1},"command":"ls","sandbox_id":"s"}"#).unwrap();
        assert_eq!(
            arguments_digest("execute_shell", &a),
            arguments_digest("execute_shell", &b)
        );
        let other = json!({"sandbox_id": "s", "command": "ls -l", "x": {"a": 2, "b": 1}});
        assert_ne!(
            arguments_digest("execute_shell", &a),
            arguments_digest("execute_shell", &other)
        );
        assert_ne!(
            arguments_digest("execute_shell", &a),
            arguments_digest("execute_code", &a)
        );
        assert_eq!(arguments_digest("t", &json!({})).len(), 64);
    }

    #[test]
    fn secret_values_are_masked() {
        let one = json!({"name": "n", "git_token": "ghp_one", "environment_vars": {"K": "v1"}});
        let two = json!({"name": "n", "git_token": "ghp_two", "environment_vars": {"K": "v2"}});
        assert_eq!(
            arguments_digest("create_sandbox", &one),
            arguments_digest("create_sandbox", &two)
        );
        let renamed = json!({"name": "n", "git_token": "ghp_one", "environment_vars": {"L": "v1"}});
        assert_ne!(
            arguments_digest("create_sandbox", &one),
            arguments_digest("create_sandbox", &renamed)
        );
    }
}
