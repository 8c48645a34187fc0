//! Test servers with several keys (a keys file: roles, tenants, an expired key), and the helpers
//! the role, tenant and audit tests share.

use std::collections::BTreeMap;

use daytona_mcp::store::{self, AuditFilter, AuditRecord, DatabaseUrl};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Db, TestApp, spawn_with, test_config};

/// The admin key of tenant `default` (the configured `auth.api_key`).
pub const ADMIN: &str = "admin";
/// Keys of the keys file, by their names there (`<who>-key` is the key id in audit rows).
pub const VIEWER: &str = "viewer";
pub const DEVELOPER: &str = "developer";
/// A developer of tenant `other`.
pub const OTHER: &str = "other";
/// An admin key of tenant `default` that expired in 2020.
pub const EXPIRED: &str = "expired";

/// A test server with one key per role and tenant.
pub struct Keyed {
    pub app: TestApp,
    pub url: DatabaseUrl,
    keys: BTreeMap<&'static str, String>,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Starts a server whose keys file holds a viewer and a developer of `default`, a developer of
/// `other` and an expired admin key; every refused request gets its own audit row.
pub async fn spawn_keyed(db: Db) -> Option<Keyed> {
    let (mut config, dir) = test_config(db).await?;
    config.audit.denials_per_address_per_minute = 100_000;
    config.audit.denials_per_minute = 100_000;
    let mut keys = BTreeMap::new();
    keys.insert(ADMIN, config.auth.api_key.clone());
    let mut file = String::from("# written by tests/api/access.rs\n");
    for (name, tenant, role, expires) in [
        (VIEWER, "default", "viewer", None),
        (DEVELOPER, "default", "developer", None),
        (OTHER, "other", "developer", None),
        (EXPIRED, "default", "admin", Some("2020-01-01T00:00:00Z")),
    ] {
        let key = format!("dmcp-{name}-{}", uuid::Uuid::new_v4().simple());
        file.push_str(&format!(
            "[[keys]]\nname = \"{name}-key\"\ntenant = \"{tenant}\"\nrole = \"{role}\"\n\
             sha256 = \"{}\"\n",
            sha256_hex(&key)
        ));
        if let Some(expires) = expires {
            file.push_str(&format!("expires = \"{expires}\"\n"));
        }
        keys.insert(name, key);
    }
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, file).unwrap();
    config.auth.keys_file = path.display().to_string();
    let url = config.database_url();
    let app = spawn_with(config, dir).await;
    Some(Keyed { app, url, keys })
}

impl Keyed {
    pub fn key(&self, who: &str) -> &str {
        &self.keys[who]
    }

    /// Every key the test knows, to search for in the database.
    pub fn all_keys(&self) -> Vec<String> {
        self.keys.values().cloned().collect()
    }

    /// Makes `who` the caller of the `TestApp` helpers (and of MCP sessions opened after).
    pub fn act_as(&mut self, who: &str) {
        self.app.key = self.keys[who].clone();
    }

    /// A request with `key` (none when `None`): status, JSON body (`Null` if none) and the
    /// `WWW-Authenticate` header.
    pub async fn send_with(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value, Option<String>) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .app
            .client
            .request(method, self.app.url(path))
            .header("accept", "application/json, text/event-stream");
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body, challenge)
    }

    /// A request as `who`.
    pub async fn send_as(
        &self,
        who: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (status, body, _) = self
            .send_with(Some(self.key(who)), method, path, body)
            .await;
        (status, body)
    }

    /// Submits `tool` asynchronously as `who` and returns the job id.
    pub async fn submit_as(&self, who: &str, tool: &str, arguments: Value) -> String {
        let (status, body) = self
            .send_as(
                who,
                "POST",
                "/v1/jobs",
                Some(&json!({"tool": tool, "arguments": arguments})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["job_id"].as_str().unwrap().to_string()
    }

    /// Every audit row, oldest first, read from the database directly.
    pub async fn audit(&self) -> Vec<AuditRecord> {
        let store = store::connect(&self.url, 1).await.unwrap();
        store
            .list_audit(&AuditFilter {
                limit: 100_000,
                ..AuditFilter::default()
            })
            .await
            .unwrap()
    }
}

/// The error object of an MCP tool result refused by the server (`isError`, text content).
pub fn tool_error(result: &Value) -> Value {
    assert_eq!(result["isError"], true, "{result}");
    let text = result["content"][0]["text"].as_str().unwrap();
    serde_json::from_str::<Value>(text).unwrap()["error"].clone()
}
