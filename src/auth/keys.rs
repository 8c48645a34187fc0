//! API keys stored in the database (`daytona-mcp keys create`).
//!
//! A key reads `dmcp_<id>_<secret>`: `id` is 12 hex characters, public, and the row's primary
//! key, so checking a key is one lookup by id and one constant-time comparison of digests;
//! `secret` is 32 random bytes (256 bits) in hex. The database keeps only the SHA-256 digest of
//! the whole key. A slow password hash (a KDF) is not needed: KDFs protect low-entropy secrets
//! that can be guessed from a dictionary, and 256 random bits cannot be guessed whatever the
//! hash's speed, so a stolen database yields no usable key.
//!
//! Keys are looked up on every request, not cached: a key created or revoked with the CLI
//! (even on another node sharing the PostgreSQL database) is honoured by the next request.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::Role;
use crate::store::{ApiKeyRecord, Store, StoreError};

/// What every generated key starts with (so that secret scanners recognise it).
pub const PREFIX: &str = "dmcp_";
/// Hex characters of a key's id.
const ID_LEN: usize = 12;
/// Hex characters of a key's secret (32 bytes).
const SECRET_LEN: usize = 64;

/// A freshly generated key: the key itself, shown once, and the row to store.
pub struct NewKey {
    pub key: String,
    pub record: ApiKeyRecord,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("key", &"***")
            .field("record", &self.record)
            .finish()
    }
}

/// The hex SHA-256 digest of a key, as stored.
pub fn digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new key for `tenant` with `role`.
pub fn generate(
    tenant: &str,
    role: Role,
    name: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> NewKey {
    let mut id = [0u8; ID_LEN / 2];
    rand::fill(&mut id);
    let mut secret = [0u8; SECRET_LEN / 2];
    rand::fill(&mut secret);
    let id = hex::encode(id);
    let key = format!("{PREFIX}{id}_{}", hex::encode(secret));
    NewKey {
        record: ApiKeyRecord {
            id,
            tenant: tenant.to_string(),
            role: role.as_str().to_string(),
            name,
            digest: digest_hex(&key),
            created_at: now,
            expires_at,
            revoked_at: None,
        },
        key,
    }
}

/// The id of a presented key of the stored form, or `None` when it is not of that form (then it
/// is not a database key at all).
pub fn id_of(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, ID_LEN) && hex(secret, SECRET_LEN)).then_some(id)
}

/// Why a key of the stored form was refused. The messages name no key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("the API key is not valid")]
    Unknown,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the API key has expired")]
    Expired,
}

/// A valid key's owner.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyOwner {
    pub id: String,
    pub tenant: String,
    pub role: Role,
}

/// Checks a presented key of the stored form against the database.
pub async fn verify(
    store: &dyn Store,
    presented: &str,
    now: DateTime<Utc>,
) -> Result<Result<KeyOwner, KeyRefusal>, StoreError> {
    let Some(id) = id_of(presented) else {
        return Ok(Err(KeyRefusal::Unknown));
    };
    let Some(record) = store.api_key(id).await? else {
        return Ok(Err(KeyRefusal::Unknown));
    };
    let presented_digest = digest_hex(presented);
    if !constant_time_eq(presented_digest.as_bytes(), record.digest.as_bytes()) {
        return Ok(Err(KeyRefusal::Unknown));
    }
    if record.revoked_at.is_some() {
        return Ok(Err(KeyRefusal::Revoked));
    }
    if record.expires_at.is_some_and(|at| at <= now) {
        return Ok(Err(KeyRefusal::Expired));
    }
    let role = Role::parse(&record.role).ok_or_else(|| {
        StoreError::Corrupt(format!("API key {} has role `{}`", record.id, record.role))
    })?;
    Ok(Ok(KeyOwner {
        id: record.id,
        tenant: record.tenant,
        role,
    }))
}

/// Parses `keys create --expires`: an RFC 3339 time, or a duration from now such as `30d`,
/// `12h`, `90m` or `3600s`. The time must be in the future.
pub fn parse_expiry(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let at = if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        at.with_timezone(&Utc)
    } else {
        let split = text.len().saturating_sub(1);
        let (number, unit) = text.split_at(split);
        let seconds_per = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => 0,
        };
        let number: i64 = number.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            format!(
                "`{text}` is neither an RFC 3339 time (2027-01-31T00:00:00Z) nor a duration \
                 like 30d, 12h, 90m"
            )
        })?;
        if seconds_per == 0 {
            return Err(format!(
                "`{text}`: a duration ends in d, h, m or s (like 30d)"
            ));
        }
        number
            .checked_mul(seconds_per)
            .and_then(chrono::TimeDelta::try_seconds)
            .and_then(|d| now.checked_add_signed(d))
            .ok_or_else(|| format!("`{text}` is too far in the future"))?
    };
    if at <= now {
        return Err(format!("`{text}` is not in the future"));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_carry_their_digest() {
        let now = Utc::now();
        let key = generate("t", Role::Viewer, None, None, now);
        assert_eq!(id_of(&key.key), Some(key.record.id.as_str()));
        assert_eq!(key.record.digest, digest_hex(&key.key));
        assert!(
            !key.record
                .digest
                .contains(&key.key[PREFIX.len() + ID_LEN + 1..])
        );
        assert!(!format!("{key:?}").contains(&key.key));
        // Other keys (the admin key file's `dmcp_<64 hex>`, anything else) are not of this form.
        assert_eq!(id_of(&format!("dmcp_{}", "a".repeat(64))), None);
        assert_eq!(id_of("dmcp_0123456789ab_short"), None);
    }

    #[test]
    fn expiries_parse() {
        let now = Utc::now();
        assert_eq!(
            parse_expiry("30d", now).unwrap(),
            now + chrono::Duration::days(30)
        );
        assert_eq!(
            parse_expiry("90m", now).unwrap(),
            now + chrono::Duration::minutes(90)
        );
        assert!(parse_expiry("2999-01-01T00:00:00Z", now).is_ok());
        for bad in ["", "0d", "-3d", "soon", "5y", "2000-01-01T00:00:00Z"] {
            assert!(parse_expiry(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
