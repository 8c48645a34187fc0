//! Single sign-on: the test is the identity provider. It generates EC key pairs, serves its
//! discovery document and JWKS on a random port, and signs tokens; the server must accept the
//! valid ones with the mapped tenant and refuse every forgery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_with, test_config};

const AUDIENCE: &str = "daytona-mcp-test";

/// One signing key of the identity provider.
struct SigningKey {
    kid: String,
    pair: rcgen::KeyPair,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            pair: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        }
    }

    /// The public half as a JWK.
    fn jwk(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then x and y (32 bytes each).
        let point = self.pair.public_key_raw();
        assert_eq!(point.len(), 65);
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]),
        })
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_ec_pem(self.pair.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// The test's identity provider: discovery document and JWKS, counting JWKS fetches.
struct Idp {
    issuer: String,
    jwks: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl Idp {
    async fn start(keys: Vec<Value>) -> Idp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let jwks = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served_issuer, served_jwks, counted) = (issuer.clone(), jwks.clone(), fetches.clone());
        let server = HttpServer::new(move || {
            let (issuer, jwks, fetches) =
                (served_issuer.clone(), served_jwks.clone(), counted.clone());
            App::new()
                .route(
                    "/.well-known/openid-configuration",
                    web::get().to(move || {
                        let issuer = issuer.clone();
                        async move {
                            HttpResponse::Ok().json(json!({
                                "issuer": issuer,
                                "jwks_uri": format!("{issuer}/keys"),
                                "authorization_endpoint": format!("{issuer}/auth"),
                                "token_endpoint": format!("{issuer}/token"),
                            }))
                        }
                    }),
                )
                .route(
                    "/keys",
                    web::get().to(move || {
                        let (jwks, fetches) = (jwks.clone(), fetches.clone());
                        async move {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            let keys = jwks.lock().unwrap().clone();
                            HttpResponse::Ok().json(json!({ "keys": keys }))
                        }
                    }),
                )
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Idp {
            issuer,
            jwks,
            fetches,
            handle,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Valid claims for `issuer`: tenant `acme`, the `mcp-devs` group.
fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer, "aud": AUDIENCE, "sub": "alice", "exp": now() + 600, "iat": now(),
        "org": "acme", "groups": ["everyone", "mcp-devs"],
    })
}

async fn spawn(db: Db, idp: &Idp, min_refetch_s: u64) -> Option<TestApp> {
    let (mut config, dir) = test_config(db).await?;
    let oidc = &mut config.auth.oidc;
    oidc.issuer = idp.issuer.clone();
    oidc.audience = AUDIENCE.into();
    oidc.tenant_claim = "org".into();
    oidc.role_claim = "groups".into();
    oidc.role_map = [
        ("mcp-devs".to_string(), "developer".to_string()),
        ("mcp-admins".to_string(), "admin".to_string()),
    ]
    .into();
    oidc.jwks_min_refetch_s = min_refetch_s;
    Some(spawn_with(config, dir).await)
}

fn message(body: &Value) -> String {
    body["error"]["message"].as_str().unwrap_or("").to_string()
}

async fn tokens_of_the_issuer_are_accepted_and_forgeries_refused(db: Db) {
    let key = SigningKey::new("k1");
    let idp = Idp::start(vec![key.jwk()]).await;
    let Some(app) = spawn(db, &idp, 1).await else {
        return;
    };
    let issuer = idp.issuer.clone();

    // A valid token works, as its tenant: the job it submits is acme's.
    let token = key.sign(&claims(&issuer));
    let (status, body) = app.get_json_with(&token, "/v1/jobs").await;
    assert_eq!(status, 200, "{body}");
    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .bearer_auth(&token)
        .json(&json!({"tool": "list_sandboxes", "arguments": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let job: Value = response.json().await.unwrap();
    let job_path = format!("/v1/jobs/{}", job["job_id"].as_str().unwrap());
    assert_eq!(app.get_json_with(&token, &job_path).await.0, 200);
    assert_eq!(app.get_json(&job_path).await.0, 404, "another tenant's job");
    // The discovery document, then the JWKS, were fetched once.
    assert_eq!(idp.fetches(), 1);

    // Forgeries and tokens for someone else: each 401, with a reason.
    let mut expired = claims(&issuer);
    expired["exp"] = json!(now() - 300);
    let mut early = claims(&issuer);
    early["nbf"] = json!(now() + 300);
    let mut audience = claims(&issuer);
    audience["aud"] = json!("some-other-service");
    let mut foreign = claims(&issuer);
    foreign["iss"] = json!("http://127.0.0.1:1/realms/evil");
    let mut no_tenant = claims(&issuer);
    no_tenant.as_object_mut().unwrap().remove("org");
    let mut no_role = claims(&issuer);
    no_role["groups"] = json!(["everyone"]);
    let mut no_exp = claims(&issuer);
    no_exp.as_object_mut().unwrap().remove("exp");
    let stranger = SigningKey::new("ghost");
    let header_b64 = |h: Value| B64.encode(h.to_string());
    let payload = B64.encode(claims(&issuer).to_string());
    let alg_none = format!(
        "{}.{payload}.",
        header_b64(json!({"alg": "none", "typ": "JWT", "kid": "k1"}))
    );
    // HS256 "signed" with the public key as the HMAC secret (the classic key-confusion attack),
    // in both forms the public key is known.
    let public_pem = key.pair.public_key_pem();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("k1".into());
    let hs_pem = jsonwebtoken::encode(
        &hs_header,
        &claims(&issuer),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    let hs_raw = jsonwebtoken::encode(
        &hs_header,
        &claims(&issuer),
        &EncodingKey::from_secret(key.pair.public_key_raw()),
    )
    .unwrap();
    // A valid signature over altered claims.
    let tampered = {
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut altered = claims(&issuer);
        altered["org"] = json!("other-tenant");
        parts[1] = B64.encode(altered.to_string());
        parts.join(".")
    };
    for (what, token, reason) in [
        ("expired", key.sign(&expired), "expired"),
        ("not yet valid", key.sign(&early), "not valid yet"),
        ("wrong audience", key.sign(&audience), "audience"),
        ("wrong issuer", key.sign(&foreign), "issuer"),
        ("no tenant", key.sign(&no_tenant), "`org`"),
        ("no role", key.sign(&no_role), "role"),
        ("no exp", key.sign(&no_exp), "exp"),
        ("unknown kid", stranger.sign(&claims(&issuer)), "ghost"),
        ("alg none", alg_none, "`none` is not accepted"),
        ("HS256 with the public PEM", hs_pem, "HS256"),
        ("HS256 with the public point", hs_raw, "HS256"),
        ("tampered claims", tampered, "signature"),
    ] {
        let (status, body) = app.get_json_with(&token, "/v1/jobs").await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(message(&body).contains(reason), "{what}: {body}");
        assert!(!message(&body).contains(&token), "{what} echoed the token");
    }
    // The same refusal over MCP, with the resource metadata to find the issuer.
    let response = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth(key.sign(&expired))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert_eq!(
        challenge,
        format!(
            "Bearer resource_metadata=\"http://127.0.0.1:{}/.well-known/oauth-protected-resource\"",
            app.port
        )
    );
    // Unknown kids within a second of the last fetch did not make the server refetch.
    assert_eq!(idp.fetches(), 1);

    // Key rotation: the provider publishes a new key; its tokens work once the server has
    // refetched (allowed again after jwks_min_refetch_s = 1).
    let rotated = SigningKey::new("k2");
    idp.jwks.lock().unwrap().push(rotated.jwk());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = app
        .get_json_with(&rotated.sign(&claims(&issuer)), "/v1/jobs")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(idp.fetches(), 2);
    // The old key still works from the refreshed cache, without another fetch.
    assert_eq!(app.get_json_with(&token, "/v1/jobs").await.0, 200);
    assert_eq!(idp.fetches(), 2);

    // Static API keys keep working beside SSO.
    assert_eq!(app.get_json("/v1/jobs").await.0, 200);
}

async fn protected_resource_metadata_names_the_issuer(db: Db) {
    let key = SigningKey::new("k1");
    let idp = Idp::start(vec![key.jwk()]).await;
    let Some(app) = spawn(db, &idp, 10).await else {
        return;
    };
    // Public: clients read it before they have a token.
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let document: Value = response.json().await.unwrap();
        assert_eq!(
            document["resource"],
            format!("http://127.0.0.1:{}/mcp", app.port)
        );
        assert_eq!(document["authorization_servers"], json!([idp.issuer]));
        assert_eq!(document["bearer_methods_supported"], json!(["header"]));
    }
    // A REST 401 carries the same challenge.
    let response = app.client.get(app.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("resource_metadata=\"http://127.0.0.1:"),
    );

    // Without SSO there is no such document.
    let (config, dir) = test_config(db).await.unwrap();
    let plain = spawn_with(config, dir).await;
    let response = plain
        .client
        .get(plain.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let response = plain
        .client
        .get(plain.url("/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
}

/// An identity provider that cannot be reached: 503 saying so (not a misleading 401), and API
/// keys keep working.
async fn an_unreachable_provider_is_a_503(db: Db) {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (mut config, dir) = match test_config(db).await {
        Some(found) => found,
        None => return,
    };
    let issuer = format!("http://127.0.0.1:{port}");
    config.auth.oidc.issuer = issuer.clone();
    config.auth.oidc.audience = AUDIENCE.into();
    let app = spawn_with(config, dir).await;
    let token = SigningKey::new("k1").sign(&claims(&issuer));
    for _ in 0..2 {
        let (status, body) = app.get_json_with(&token, "/v1/jobs").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(
            body["error"]["code"], "identity_provider_unavailable",
            "{body}"
        );
    }
    assert_eq!(app.get_json("/v1/jobs").await.0, 200);
}

crate::on_both_databases!(
    an_unreachable_provider_is_a_503,
    tokens_of_the_issuer_are_accepted_and_forgeries_refused,
    protected_resource_metadata_names_the_issuer
);
