//! Single sign-on: OIDC/OAuth2 access tokens (JWTs) issued by the configured identity provider.
//!
//! A token is accepted when its signature verifies with a key of the issuer's JWKS (by `kid`),
//! its algorithm is asymmetric (RS*, PS*, ES*, EdDSA; `none` and HS* are refused, so a public key
//! can never serve as an HMAC secret), `iss` is the configured issuer, `aud` contains the
//! configured audience, and `exp`/`nbf` hold (with `leeway_s`). Its claims then give the tenant
//! (`tenant_claim`) and the role (`role_claim`, a string or a list such as `groups`, each value
//! mapped through `role_map`; the highest role wins).
//!
//! The JWKS is fetched on first use (from `jwks_url`, or the `jwks_uri` of the issuer's
//! `/.well-known/openid-configuration`), kept for `jwks_refresh_s`, and fetched again when a
//! token names an unknown `kid` (key rotation), at most once per `jwks_min_refetch_s` so that
//! tokens with made-up `kid`s cannot make the server hammer the provider.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::Role;
use crate::config::OidcConfig;

/// Why a bearer token was refused. The messages say what to fix and carry no token material.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the bearer token is not a valid JWT: {0}")]
    Malformed(String),
    #[error(
        "the token's algorithm `{0}` is not accepted: only asymmetric signatures (RS256, ES256, …)"
    )]
    Algorithm(String),
    #[error("the token's signing key (kid `{0}`) is not in the issuer's JWKS")]
    UnknownKey(String),
    #[error("the token was refused: {0}")]
    Invalid(String),
    #[error("the token has no `{0}` claim naming a tenant")]
    NoTenant(String),
    #[error("the token's `{0}` claim maps to no role (see auth.oidc.role_map)")]
    NoRole(String),
    /// The identity provider could not be reached or answered nonsense.
    #[error("the identity provider's keys are unavailable: {0}")]
    Provider(String),
}

/// A valid token's owner.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenOwner {
    pub tenant: String,
    pub role: Role,
    /// `oidc:<sub>`, for audit rows.
    pub key_id: String,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    fetched_at: Option<Instant>,
    jwks_url: Option<String>,
    /// Why the last fetch failed, until one succeeds.
    last_error: Option<String>,
}

/// Verifies bearer tokens of one issuer.
pub struct OidcVerifier {
    config: OidcConfig,
    client: reqwest::Client,
    cache: RwLock<Cache>,
    /// Serialises fetches, so that concurrent unknown `kid`s cause one fetch.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.config.issuer)
            .finish()
    }
}

/// Whether a token's algorithm is asymmetric.
fn asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The `alg` of a token whose header is JSON but names no algorithm this verifier knows.
fn unknown_algorithm(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let header: Value = serde_json::from_slice(&bytes).ok()?;
    let alg = header.get("alg")?.as_str()?;
    alg.parse::<Algorithm>().is_err().then(|| alg.to_string())
}

/// Whether `text` looks like a JWT (three base64url parts), as opposed to an API key.
pub fn looks_like_jwt(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A claim by name, or else by a dotted path (Keycloak's `realm_access.roles`).
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        name.split('.')
            .try_fold(claims, |value, part| value.get(part))
    })
}

impl OidcVerifier {
    /// A verifier for `config` (whose `issuer` is set).
    pub fn new(config: OidcConfig) -> OidcVerifier {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a plain HTTP client builds");
        OidcVerifier {
            config,
            client,
            cache: RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Checks a token and maps its claims.
    pub async fn verify(&self, token: &str) -> Result<TokenOwner, TokenRefusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            // A header naming an algorithm the crate does not even know (`none`) is refused
            // as an algorithm, which says more than a parse error.
            match unknown_algorithm(token) {
                Some(alg) => TokenRefusal::Algorithm(alg),
                None => TokenRefusal::Malformed(e.to_string()),
            }
        })?;
        if !asymmetric(header.alg) {
            return Err(TokenRefusal::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.clone().unwrap_or_default();
        let (key, key_alg) = self.key(&kid).await?;
        if key_alg.is_some_and(|alg| alg != header.alg) {
            return Err(TokenRefusal::Algorithm(format!(
                "{:?} (the key is for {:?})",
                header.alg,
                key_alg.expect("checked")
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway_s;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "it has expired".to_string(),
                ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".to_string(),
                ErrorKind::InvalidAudience => format!(
                    "its audience is not `{}` (auth.oidc.audience)",
                    self.config.audience
                ),
                ErrorKind::InvalidIssuer => format!(
                    "its issuer is not `{}` (auth.oidc.issuer)",
                    self.config.issuer
                ),
                ErrorKind::InvalidSignature => "its signature does not verify".to_string(),
                ErrorKind::MissingRequiredClaim(c) => format!("it has no `{c}` claim"),
                ErrorKind::InvalidAlgorithm => {
                    "its algorithm does not match its signing key".to_string()
                }
                other => format!("{other:?}"),
            };
            TokenRefusal::Invalid(why)
        })?;
        self.owner(&data.claims)
    }

    /// The tenant and role the claims map to.
    fn owner(&self, claims: &Value) -> Result<TokenOwner, TokenRefusal> {
        let tenant = claim(claims, &self.config.tenant_claim)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| TokenRefusal::NoTenant(self.config.tenant_claim.clone()))?;
        let values: Vec<&str> = match claim(claims, &self.config.role_claim) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let role = values
            .iter()
            .filter_map(|v| {
                if self.config.role_map.is_empty() {
                    Role::parse(v)
                } else {
                    self.config.role_map.get(*v).and_then(|r| Role::parse(r))
                }
            })
            .max()
            .ok_or_else(|| TokenRefusal::NoRole(self.config.role_claim.clone()))?;
        let subject = claims.get("sub").and_then(Value::as_str).unwrap_or("?");
        Ok(TokenOwner {
            tenant: tenant.to_string(),
            role,
            key_id: format!("oidc:{subject}"),
        })
    }

    /// The decoding key for `kid`, fetching the JWKS when it is stale or lacks the key.
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Option<Algorithm>), TokenRefusal> {
        let refresh = Duration::from_secs(self.config.jwks_refresh_s);
        let min_refetch = Duration::from_secs(self.config.jwks_min_refetch_s);
        let lookup = |cache: &Cache| -> Option<(DecodingKey, Option<Algorithm>)> {
            if kid.is_empty() && cache.keys.len() == 1 {
                return cache.keys.values().next().cloned();
            }
            cache.keys.get(kid).cloned()
        };
        {
            let cache = self.cache.read().expect("jwks cache lock");
            let fresh = cache.fetched_at.is_some_and(|at| at.elapsed() < refresh);
            if let (true, Some(found)) = (fresh, lookup(&cache)) {
                return Ok(found);
            }
        }
        let _fetching = self.fetching.lock().await;
        {
            // Another request may have fetched while this one waited; and an unknown `kid`
            // refetches only past the minimum interval.
            let cache = self.cache.read().expect("jwks cache lock");
            let age = cache.fetched_at.map(|at| at.elapsed());
            if let Some(found) = lookup(&cache) {
                if age.is_some_and(|a| a < refresh) {
                    return Ok(found);
                }
            } else if age.is_some_and(|a| a < min_refetch) {
                return Err(match &cache.last_error {
                    Some(e) => TokenRefusal::Provider(e.clone()),
                    None => TokenRefusal::UnknownKey(kid.to_string()),
                });
            }
        }
        match self.fetch().await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, error = %e,
                    "cannot fetch the identity provider's JWKS");
                // A stale cache still serves while the provider is away.
                let mut cache = self.cache.write().expect("jwks cache lock");
                if cache.fetched_at.is_none() {
                    // Discovery failed before the fetch was counted: count it now.
                    cache.fetched_at = Some(Instant::now());
                }
                cache.last_error = Some(e.clone());
                return lookup(&cache).ok_or(TokenRefusal::Provider(e));
            }
        }
        let cache = self.cache.read().expect("jwks cache lock");
        lookup(&cache).ok_or_else(|| TokenRefusal::UnknownKey(kid.to_string()))
    }

    /// Fetches the JWKS (after the discovery document when `jwks_url` is not configured).
    async fn fetch(&self) -> Result<(), String> {
        let known_url = self.cache.read().expect("jwks cache lock").jwks_url.clone();
        let url = match known_url {
            Some(url) => url,
            None if !self.config.jwks_url.is_empty() => self.config.jwks_url.clone(),
            None => self.discover().await?,
        };
        // Counted as a fetch even when it fails, so that a failing provider is not retried on
        // every request.
        self.cache.write().expect("jwks cache lock").fetched_at = Some(Instant::now());
        let set: JwkSet = self.get_json(&url).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            // Symmetric (`oct`) keys are never accepted.
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(jwk.common.key_id.clone().unwrap_or_default(), (key, alg));
                }
                Err(e) => tracing::warn!(kid = ?jwk.common.key_id, error = %e,
                    "ignoring a JWKS key that cannot be used"),
            }
        }
        let mut cache = self.cache.write().expect("jwks cache lock");
        cache.keys = keys;
        cache.jwks_url = Some(url);
        cache.last_error = None;
        Ok(())
    }

    /// The `jwks_uri` of the issuer's discovery document, whose `issuer` must match.
    async fn discover(&self) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let document: Value = self.get_json(&url).await?;
        if document.get("issuer").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
            return Err(format!(
                "the discovery document at {url} names another issuer than `{}`",
                self.config.issuer
            ));
        }
        document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("the discovery document at {url} has no jwks_uri"))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        response
            .json()
            .await
            .map_err(|e| format!("GET {url}: not the expected JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_keys_are_told_apart() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."));
        assert!(!looks_like_jwt(&format!("dmcp_{}", "a".repeat(64))));
        assert!(!looks_like_jwt("a.b"));
    }

    #[test]
    fn claims_map_to_tenant_and_highest_role() {
        let config = OidcConfig {
            issuer: "https://idp.example".into(),
            audience: "daytona-mcp".into(),
            tenant_claim: "org".into(),
            role_claim: "realm_access.roles".into(),
            role_map: [
                ("mcp-viewers".to_string(), "viewer".to_string()),
                ("mcp-admins".to_string(), "admin".to_string()),
            ]
            .into(),
            ..OidcConfig::default()
        };
        let verifier = OidcVerifier::new(config);
        let owner = verifier
            .owner(&serde_json::json!({
                "sub": "u1", "org": "acme",
                "realm_access": {"roles": ["offline", "mcp-viewers", "mcp-admins"]}
            }))
            .unwrap();
        assert_eq!(owner.tenant, "acme");
        assert_eq!(owner.role, Role::Admin);
        assert_eq!(owner.key_id, "oidc:u1");
        assert!(matches!(
            verifier.owner(&serde_json::json!({"org": "acme", "realm_access": {"roles": ["x"]}})),
            Err(TokenRefusal::NoRole(_))
        ));
        assert!(matches!(
            verifier.owner(&serde_json::json!({"realm_access": {"roles": ["mcp-admins"]}})),
            Err(TokenRefusal::NoTenant(_))
        ));
    }
}
