//! Authentication: every route but health and metrics needs an API key, sent as
//! `Authorization: Bearer <key>` or `X-API-Key: <key>`. Keys are kept only as SHA-256 digests and
//! compared in constant time.

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
use crate::audit::Caller;
use crate::auth::Role;
use crate::auth::oidc::{OidcVerifier, TokenRefusal};
use crate::auth::rate::RateLimiter;
use crate::config::AuthConfig;
use crate::store::Store;

/// The tenant of keys from the environment or the generated key file.
pub const DEFAULT_TENANT: &str = "default";

/// Who made a request, once authenticated.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub tenant: String,
    pub role: Role,
    /// A non-secret name for the key, for audit rows.
    pub key_id: String,
}

struct Key {
    digest: [u8; 32],
    identity: Identity,
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

impl Authenticator {
    /// Uses the configured key, or the key in `<data_dir>/admin.key`, creating that file with a
    /// fresh random key on first start. Returns the file's path when the key came from it.
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
        let key = Key {
            digest: digest(&key),
            identity: Identity {
                tenant: DEFAULT_TENANT.into(),
                role: Role::Admin,
                key_id: key_id.into(),
            },
        };
        let oidc = (!config.oidc.issuer.is_empty()).then(|| OidcVerifier::new(config.oidc.clone()));
        Ok((
            Authenticator {
                keys: vec![key],
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

    /// The identity behind the request's credential, within its request rate.
    pub async fn authenticate(&self, req: &ServiceRequest) -> Result<Identity, ApiError> {
        let identity = self.identify(req).await?;
        if let Err(retry_after_s) = self.rate.check(&identity.key_id) {
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
        Ok(identity)
    }

    fn rate_per_minute(&self) -> u32 {
        self.rate.per_minute()
    }

    /// The identity behind the request's credential.
    async fn identify(&self, req: &ServiceRequest) -> Result<Identity, ApiError> {
        if self.disabled {
            return Ok(Identity {
                tenant: DEFAULT_TENANT.into(),
                role: Role::Admin,
                key_id: "anonymous".into(),
            });
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
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            ));
        };
        let unauthenticated =
            |message: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message);
        let presented_digest = digest(presented);
        if let Some(key) = self
            .keys
            .iter()
            .find(|k| constant_time_eq(&k.digest, &presented_digest))
        {
            return Ok(key.identity.clone());
        }
        if let (Some(store), Some(_)) = (&self.store, crate::auth::keys::id_of(presented)) {
            return match crate::auth::keys::verify(store.as_ref(), presented, chrono::Utc::now())
                .await
                .map_err(ApiError::from)?
            {
                Ok(owner) => Ok(Identity {
                    tenant: owner.tenant,
                    role: owner.role,
                    key_id: owner.id,
                }),
                Err(refusal) => Err(unauthenticated(refusal.to_string())),
            };
        }
        if let Some(oidc) = self
            .oidc
            .as_ref()
            .filter(|_| crate::auth::oidc::looks_like_jwt(presented))
        {
            return match oidc.verify(presented).await {
                Ok(owner) => Ok(Identity {
                    tenant: owner.tenant,
                    role: owner.role,
                    key_id: owner.key_id,
                }),
                Err(TokenRefusal::Provider(e)) => {
                    tracing::warn!(error = %e, "a bearer token could not be checked");
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "identity_provider_unavailable",
                        "the identity provider's signing keys cannot be fetched right now; \
                         retry later or use an API key",
                    ))
                }
                Err(refusal) => Err(unauthenticated(refusal.to_string())),
            };
        }
        Err(unauthenticated("the API key is not valid".into()))
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

/// The caller of a request, for submissions and audit rows.
pub fn caller_of(req: &actix_web::HttpRequest) -> Caller {
    let extensions = req.extensions();
    let identity = extensions.get::<Identity>();
    Caller {
        tenant: identity.map_or_else(|| DEFAULT_TENANT.to_string(), |i| i.tenant.clone()),
        key_id: identity.map(|i| i.key_id.clone()),
        request_id: extensions.get::<RequestId>().map(|r| r.0.clone()),
        client_addr: req.peer_addr().map(|a| a.ip().to_string()),
    }
}

/// Records a refused request in the audit log (sampled and truncated, see
/// [`DenialLog`](super::denials::DenialLog)); `why` (with a leading space when present) is
/// appended to the action, e.g. `" (origin refused)"`.
pub(crate) async fn audit_denied(state: &AppState, req: &ServiceRequest, why: &str) {
    let caller = Caller {
        tenant: DEFAULT_TENANT.into(),
        key_id: None,
        request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
        client_addr: req.peer_addr().map(|a| a.ip().to_string()),
    };
    let action = super::denials::action(req.method().as_str(), req.path(), why);
    let entry = caller.entry(&action, None, None, "denied", None);
    state.denials.record(entry).await;
}

/// Authenticates a request and records the identity on it; a refusal is audited. Shared by
/// [`require_key`] and the MCP endpoint, which answers in JSON-RPC.
pub(crate) async fn authenticate_request(
    state: &AppState,
    req: &ServiceRequest,
) -> Result<(), ApiError> {
    match state.auth.authenticate(req).await {
        Ok(identity) => {
            req.extensions_mut().insert(identity);
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

    #[test]
    fn digests_compare() {
        assert!(constant_time_eq(&digest("a"), &digest("a")));
        assert!(!constant_time_eq(&digest("a"), &digest("b")));
    }
}
