//! The keys file (`auth.keys_file`): static API keys for simple setups, each with its tenant,
//! role, name and optional expiry. The file holds each key's SHA-256 digest (hex), never the
//! key itself, so that reading the file does not give anyone a key:
//!
//! ```toml
//! [[keys]]
//! name = "ci"                      # a non-secret name, shown in audit rows as the key id
//! tenant = "team-a"
//! role = "developer"               # viewer, developer or admin
//! sha256 = "9f86d081884c7d65…"     # printf %s "$KEY" | sha256sum
//! expires = "2027-01-01T00:00:00Z" # optional (RFC 3339); after it the key gets 401
//! ```
//!
//! A file whose name ends in `.json` is read as JSON (`{"keys": [{…}, …]}`), any other as TOML.
//! The file is read once, at start-up; an invalid file stops the server with the entry at fault.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::auth::Role;

/// One key of the file, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct FileKey {
    pub name: String,
    pub tenant: String,
    pub role: Role,
    /// SHA-256 of the key.
    pub digest: [u8; 32],
    pub expires: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    keys: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    tenant: String,
    role: Role,
    sha256: String,
    #[serde(default)]
    expires: Option<DateTime<Utc>>,
}

/// Why a keys file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    #[error("cannot read the keys file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the keys file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

/// Whether a tenant or key name is one the server accepts: 1–64 of `A-Z a-z 0-9 . _ -`.
/// (Tenants are part of workspace keys, `<tenant>/<sandbox>`, so they cannot hold a `/`.)
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads and checks the keys file at `path`.
pub fn load(path: &Path) -> Result<Vec<FileKey>, KeysFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeysFileError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, path.extension().is_some_and(|e| e == "json")).map_err(|message| {
        KeysFileError::Invalid {
            path: shown,
            message,
        }
    })
}

/// Parses a keys file's text (JSON when `json`, else TOML).
pub fn parse(text: &str, json: bool) -> Result<Vec<FileKey>, String> {
    let file: File = if json {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else {
        toml::from_str(text).map_err(|e| e.to_string())?
    };
    let mut keys: Vec<FileKey> = Vec::with_capacity(file.keys.len());
    for (i, entry) in file.keys.into_iter().enumerate() {
        let at = format!("keys[{i}] (`{}`)", entry.name);
        if !valid_name(&entry.name) {
            return Err(format!(
                "{at}: name must be 1-64 letters, digits, `.`, `_` or `-`"
            ));
        }
        if !valid_name(&entry.tenant) {
            return Err(format!(
                "{at}: tenant must be 1-64 letters, digits, `.`, `_` or `-`"
            ));
        }
        let digest = hex::decode(entry.sha256.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                format!(
                    "{at}: sha256 must be the key's SHA-256 as 64 hex digits (printf %s \"$KEY\" \
                     | sha256sum), never the key itself"
                )
            })?;
        if keys.iter().any(|k| k.name == entry.name) {
            return Err(format!("{at}: the name is used twice"));
        }
        if keys.iter().any(|k| k.digest == digest) {
            return Err(format!("{at}: the same key is listed twice"));
        }
        keys.push(FileKey {
            name: entry.name,
            tenant: entry.tenant,
            role: entry.role,
            digest,
            expires: entry.expires,
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn toml_and_json_files_parse() {
        let toml = format!(
            "[[keys]]\nname = \"ci\"\ntenant = \"team-a\"\nrole = \"developer\"\nsha256 = \
             \"{DIGEST}\"\nexpires = \"2027-01-01T00:00:00Z\"\n"
        );
        let keys = parse(&toml, false).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].role, Role::Developer);
        assert_eq!(keys[0].tenant, "team-a");
        assert_eq!(hex::encode(keys[0].digest), DIGEST);
        assert!(keys[0].expires.is_some());
        let json = format!(
            r#"{{"keys": [{{"name": "v", "tenant": "t", "role": "viewer", "sha256": "{DIGEST}"}}]}}"#
        );
        let keys = parse(&json, true).unwrap();
        assert_eq!(keys[0].role, Role::Viewer);
        assert_eq!(keys[0].expires, None);
    }

    #[test]
    fn bad_entries_are_refused_with_their_place() {
        for (text, wanted) in [
            (
                "[[keys]]\nname = \"a\"\ntenant = \"t\"\nrole = \"developer\"\nsha256 = \"test\"\n"
                    .to_string(),
                "keys[0] (`a`): sha256",
            ),
            (
                format!(
                    "[[keys]]\nname = \"a\"\ntenant = \"t/x\"\nrole = \"viewer\"\nsha256 = \"{DIGEST}\"\n"
                ),
                "tenant must be",
            ),
            (
                format!(
                    "[[keys]]\nname = \"a\"\ntenant = \"t\"\nrole = \"root\"\nsha256 = \"{DIGEST}\"\n"
                ),
                "unknown variant",
            ),
            (
                format!(
                    "[[keys]]\nname = \"a\"\ntenant = \"t\"\nrole = \"viewer\"\nsha256 = \"{DIGEST}\"\n\
                     [[keys]]\nname = \"b\"\ntenant = \"t\"\nrole = \"viewer\"\nsha256 = \"{DIGEST}\"\n"
                ),
                "listed twice",
            ),
        ] {
            let error = parse(&text, false).unwrap_err();
            assert!(error.contains(wanted), "{error}");
        }
    }
}
