//! Authentication: every route but health and metrics needs an API key, sent as
//! `Authorization: Bearer <key>` or `X-API-Key: <key>`. Keys are kept only as SHA-256 digests and
//! compared in constant time: the admin key of tenant `default` (`auth.api_key`, or the generated
//! `admin.key`) and the keys of `auth.keys_file` (see [`crate::keys_file`]), each with its tenant,
//! role and optional expiry. A valid key becomes the request's [`Caller`] ([`caller_for`]), which
//! the handlers read back with [`caller_of`]; every refusal is a 401 with
//! `WWW-Authenticate: Bearer` and an audit row.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use super::telemetry::RequestId;
pub use crate::audit::DEFAULT_TENANT;
use crate::audit::{Caller, Role};
use crate::auth::oidc::{OidcVerifier, TokenRefusal};
use crate::auth::rate::RateLimiter;
use crate::config::AuthConfig;
use crate::store::Store;

struct Key {
    digest: [u8; 32],
    /// Who the key stands for (without a request's details).
    caller: Caller,
    /// After this the key is refused (keys file entries may have one).
    expires: Option<chrono::DateTime<chrono::Utc>>,
}

/// Checks presented credentials: the configured keys here, keys stored in the database and
/// SSO tokens through [`crate::auth`], then the key's request rate.
pub struct Authenticator {
    keys: Vec<Key>,
    disabled: bool,
    /// Where `daytona-mcp keys create` stores keys; looked up on every request.
    store: Option<Arc<dyn Store>>,
    oidc: Option<OidcVerifier>,
    rate: RateLimiter,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("keys", &self.keys.len())
            .field("disabled", &self.disabled)
            .field("stored_keys", &self.store.is_some())
            .field("oidc", &self.oidc)
            .finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

impl Authenticator {
    /// Uses the configured key, or the key in `<data_dir>/admin.key`, creating that file with a
    /// fresh random key on first start (one admin key of tenant `default` either way), plus the
    /// keys of `auth.keys_file`. Returns the admin key file's path when the key came from it.
    pub fn new(
        config: &AuthConfig,
        data_dir: &Path,
    ) -> std::io::Result<(Authenticator, Option<PathBuf>)> {
        if config.disabled {
            return Ok((
                Authenticator {
                    keys: Vec::new(),
                    disabled: true,
                    store: None,
                    oidc: None,
                    rate: RateLimiter::new(0),
                },
                None,
            ));
        }
        let (key, key_id, file) = if config.api_key.is_empty() {
            let path = data_dir.join("admin.key");
            (load_or_create_key(&path)?, "admin-key-file", Some(path))
        } else {
            (config.api_key.clone(), "env-api-key", None)
        };
        let mut keys = vec![Key {
            digest: digest(&key),
            caller: Caller::authenticated(DEFAULT_TENANT, key_id, Role::Admin),
            expires: None,
        }];
        if !config.keys_file.is_empty() {
            let listed = crate::keys_file::load(Path::new(&config.keys_file))
                .map_err(std::io::Error::other)?;
            for entry in listed {
                if entry.digest == keys[0].digest {
                    // One key, two identities: refuse rather than pick one silently.
                    return Err(std::io::Error::other(format!(
                        "the keys file {} lists the admin key (auth.api_key or admin.key) as `{}`",
                        config.keys_file, entry.name
                    )));
                }
                keys.push(Key {
                    digest: entry.digest,
                    caller: Caller::authenticated(entry.tenant, entry.name, entry.role),
                    expires: entry.expires,
                });
            }
        }
        let oidc = (!config.oidc.issuer.is_empty()).then(|| OidcVerifier::new(config.oidc.clone()));
        Ok((
            Authenticator {
                keys,
                disabled: false,
                store: None,
                oidc,
                rate: RateLimiter::new(config.rate_limit_per_minute),
            },
            file,
        ))
    }

    /// Also accepts the keys stored in `store` (`daytona-mcp keys create`).
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Authenticator {
        self.store = Some(store);
        self
    }

    /// The SSO verifier, when `auth.oidc.issuer` is set.
    pub fn oidc(&self) -> Option<&OidcVerifier> {
        self.oidc.as_ref()
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// The caller behind the request's credential, without the request's details (see
    /// [`caller_for`]), within its request rate.
    pub async fn authenticate(&self, req: &ServiceRequest) -> Result<Caller, ApiError> {
        let caller = self.identify(req).await?;
        let key_id = caller.key_id.as_deref().unwrap_or_default();
        if let Err(retry_after_s) = self.rate.check(key_id) {
            return Err(ApiError::Limited {
                code: "rate_limited",
                message: format!(
                    "too many requests with this key: at most {} a minute; retry in \
                     {retry_after_s} s",
                    self.rate_per_minute()
                ),
                retry_after_s,
            });
        }
        Ok(caller)
    }

    fn rate_per_minute(&self) -> u32 {
        self.rate.per_minute()
    }

    /// The caller behind the request's credential.
    async fn identify(&self, req: &ServiceRequest) -> Result<Caller, ApiError> {
        if self.disabled {
            return Ok(Caller::authenticated(
                DEFAULT_TENANT,
                "anonymous",
                Role::Admin,
            ));
        }
        let headers = req.headers();
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim);
        let Some(presented) = presented.filter(|k| !k.is_empty()) else {
            return Err(unauthenticated(
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            ));
        };
        let presented_digest = digest(presented);
        // Every configured key is compared, so that the time taken says nothing of which one
        // matched.
        let found = self.keys.iter().fold(None, |found, k| {
            if constant_time_eq(&k.digest, &presented_digest) {
                Some(k)
            } else {
                found
            }
        });
        if let Some(found) = found {
            if found.expires.is_some_and(|at| at <= chrono::Utc::now()) {
                return Err(unauthenticated("the API key has expired"));
            }
            return Ok(found.caller.clone());
        }
        if let (Some(store), Some(_)) = (&self.store, crate::auth::keys::id_of(presented)) {
            return match crate::auth::keys::verify(store.as_ref(), presented, chrono::Utc::now())
                .await
                .map_err(ApiError::from)?
            {
                Ok(owner) => Ok(Caller::authenticated(owner.tenant, owner.id, owner.role)),
                Err(refusal) => Err(unauthenticated(&refusal.to_string())),
            };
        }
        if let Some(oidc) = self
            .oidc
            .as_ref()
            .filter(|_| crate::auth::oidc::looks_like_jwt(presented))
        {
            return match oidc.verify(presented).await {
                Ok(owner) => Ok(Caller::authenticated(
                    owner.tenant,
                    owner.key_id,
                    owner.role,
                )),
                Err(TokenRefusal::Provider(e)) => {
                    tracing::warn!(error = %e, "a bearer token could not be checked");
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "identity_provider_unavailable",
                        "the identity provider's signing keys cannot be fetched right now; \
                         retry later or use an API key",
                    ))
                }
                Err(refusal) => Err(unauthenticated(&refusal.to_string())),
            };
        }
        Err(unauthenticated("the API key is not valid"))
    }
}

fn load_or_create_key(path: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let key = format!("dmcp_{}", hex::encode(bytes));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{key}")?;
    Ok(key)
}

/// The caller of `authenticated` making request `req`: the one place a request's [`Caller`] is
/// completed (its address and request id). Every way of authenticating ends here.
pub fn caller_for(req: &ServiceRequest, authenticated: Caller) -> Caller {
    Caller {
        address: req.peer_addr().map(|a| a.ip().to_string()),
        request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
        ..authenticated
    }
}

/// The caller of a request, as the authentication middleware recorded it. A request that
/// passed no authentication (the public schema routes) is nobody: the least role.
pub fn caller_of(req: &actix_web::HttpRequest) -> Caller {
    let extensions = req.extensions();
    match extensions.get::<Caller>() {
        Some(caller) => caller.clone(),
        None => Caller {
            address: req.peer_addr().map(|a| a.ip().to_string()),
            request_id: extensions.get::<RequestId>().map(|r| r.0.clone()),
            ..Caller::default()
        },
    }
}

/// Records a refused request in the audit log (sampled and truncated, see
/// [`DenialLog`](super::denials::DenialLog)); `why` (with a leading space when present) is
/// appended to the action, e.g. `" (origin refused)"`.
pub(crate) async fn audit_denied(state: &AppState, req: &ServiceRequest, why: &str) {
    let caller = caller_for(req, Caller::default());
    let action = super::denials::action(req.method().as_str(), req.path(), why);
    let entry = caller.entry(&action, None, None, "denied", None);
    state.denials.record(entry).await;
}

/// Authenticates a request and records its [`Caller`] on it; a refusal is audited. Shared by
/// [`require_key`] and the MCP endpoint, which answers in JSON-RPC.
pub(crate) async fn authenticate_request(
    state: &AppState,
    req: &ServiceRequest,
) -> Result<(), ApiError> {
    match state.auth.authenticate(req).await {
        Ok(authenticated) => {
            let caller = caller_for(req, authenticated);
            req.extensions_mut().insert(caller);
            Ok(())
        }
        Err(error) => {
            let why = match &error {
                ApiError::Limited { .. } => " (rate limited)",
                _ => "",
            };
            audit_denied(state, req, why).await;
            Err(error)
        }
    }
}

/// The `WWW-Authenticate` value of a 401: `Bearer`, with `resource_metadata` pointing at
/// `/.well-known/oauth-protected-resource` when SSO is configured, so that MCP clients that
/// speak OAuth find the issuer (RFC 9728, as the MCP authorization spec uses it).
pub(crate) fn www_authenticate(
    state: &AppState,
    req: &ServiceRequest,
) -> actix_web::http::header::HeaderValue {
    use actix_web::http::header::HeaderValue;
    if state.auth.oidc().is_none() {
        return HeaderValue::from_static("Bearer");
    }
    let info = req.connection_info();
    let value = format!(
        "Bearer resource_metadata=\"{}://{}{}\"",
        info.scheme(),
        info.host(),
        super::well_known::PROTECTED_RESOURCE
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// Whether a request reads a schema route: `GET /schema` or `GET /<tool>/schema`.
fn reads_a_schema(req: &ServiceRequest) -> bool {
    if req.method() != actix_web::http::Method::GET {
        return false;
    }
    let path = req.path();
    path == "/schema"
        || path
            .strip_prefix('/')
            .and_then(|p| p.strip_suffix("/schema"))
            .is_some_and(|tool| !tool.is_empty() && !tool.contains('/'))
}

/// Middleware: authenticates the request or answers 401 (and writes a `denied` audit row).
/// With `auth.public_schemas`, the schema routes pass without a key.
pub async fn require_key(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = crate::http::state_of(&req);
    if state.config.auth.public_schemas && reads_a_schema(&req) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    match authenticate_request(&state, &req).await {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(error) => {
            let mut response = error.error_response();
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    actix_web::http::header::WWW_AUTHENTICATE,
                    www_authenticate(&state, &req),
                );
            }
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig::default();
        let (_, file) = Authenticator::new(&config, dir.path()).unwrap();
        let file = file.unwrap();
        let first = std::fs::read_to_string(&file).unwrap();
        assert!(first.starts_with("dmcp_"));
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        Authenticator::new(&config, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
    }

    fn keys_file(dir: &Path, entries: &[(&str, &str, &str, &str, Option<&str>)]) -> String {
        let mut text = String::new();
        for (name, tenant, role, key, expires) in entries {
            text.push_str(&format!(
                "[[keys]]\nname = \"{name}\"\ntenant = \"{tenant}\"\nrole = \"{role}\"\n\
                 sha256 = \"{}\"\n",
                hex::encode(digest(key))
            ));
            if let Some(expires) = expires {
                text.push_str(&format!("expires = \"{expires}\"\n"));
            }
        }
        let path = dir.join("keys.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn bearer(key: &str) -> ServiceRequest {
        actix_web::test::TestRequest::default()
            .insert_header(("authorization", format!("Bearer {key}")))
            .to_srv_request()
    }

    #[tokio::test]
    async fn keys_file_keys_carry_their_tenant_and_role_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig {
            api_key: "the-admin-key".into(),
            keys_file: keys_file(
                dir.path(),
                &[
                    ("ci", "team-a", "developer", "ci-secret", None),
                    (
                        "old",
                        "team-a",
                        "admin",
                        "old-secret",
                        Some("2020-01-01T00:00:00Z"),
                    ),
                    (
                        "later",
                        "team-b",
                        "viewer",
                        "later-secret",
                        Some("2999-01-01T00:00:00Z"),
                    ),
                ],
            ),
            ..AuthConfig::default()
        };
        let (auth, _) = Authenticator::new(&config, dir.path()).unwrap();
        let ci = auth.authenticate(&bearer("ci-secret")).await.unwrap();
        assert_eq!(
            (ci.tenant.as_str(), ci.role, ci.key_id.as_deref()),
            ("team-a", Role::Developer, Some("ci"))
        );
        let later = actix_web::test::TestRequest::default()
            .insert_header(("x-api-key", "later-secret"))
            .to_srv_request();
        assert_eq!(auth.authenticate(&later).await.unwrap().role, Role::Viewer);
        let admin = auth.authenticate(&bearer("the-admin-key")).await.unwrap();
        assert_eq!(
            (admin.tenant.as_str(), admin.role),
            ("default", Role::Admin)
        );
        for (key, why) in [("old-secret", "expired"), ("nope", "not valid")] {
            let error = auth.authenticate(&bearer(key)).await.unwrap_err();
            let (status, code, message, _) = error.parts().unwrap();
            assert_eq!(
                (status, code),
                (StatusCode::UNAUTHORIZED, "unauthenticated")
            );
            assert!(message.contains(why), "{message}");
        }
    }

    #[test]
    fn a_keys_file_that_lists_the_admin_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig {
            api_key: "the-admin-key".into(),
            keys_file: keys_file(dir.path(), &[("dup", "t", "viewer", "the-admin-key", None)]),
            ..AuthConfig::default()
        };
        let error = Authenticator::new(&config, dir.path()).unwrap_err();
        assert!(error.to_string().contains("`dup`"), "{error}");
    }

    #[test]
    fn digests_compare() {
        assert!(constant_time_eq(&digest("a"), &digest("a")));
        assert!(!constant_time_eq(&digest("a"), &digest("b")));
    }
}
