//! Configuration: defaults, then a TOML file, then the Daytona environment variables, then
//! `DAYTONA_MCP_<SECTION>__<KEY>` overrides, then command-line flags. Unknown keys are errors,
//! so a typo never silently falls back to a default.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::DatabaseUrl;

/// The isolation an operator asks of the local driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    /// bubblewrap if installed and working, else Landlock, else refuse to start.
    Auto,
    /// bubblewrap, or refuse to start.
    Bwrap,
    /// Landlock with `no_new_privs`, no capabilities, rlimits and cgroups, or refuse to start.
    Landlock,
    /// No isolation (rlimits and cgroups only). Unsafe; must be chosen explicitly.
    None,
}

/// The default sandbox `PATH`; interpreters are looked up there.
pub const DEFAULT_SANDBOX_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment variables of the original Daytona MCP design, and the settings they set.
const DAYTONA_VARIABLES: [(&str, &str, &str); 6] = [
    ("DAYTONA_SERVER_URL", "daytona", "api_url"),
    ("DAYTONA_API_KEY", "daytona", "api_key"),
    ("DAYTONA_WORKSPACE_MEMORY_LIMIT", "sandbox", "memory_limit"),
    ("DAYTONA_WORKSPACE_CPU_LIMIT", "sandbox", "cpu_limit"),
    ("DAYTONA_LOG_LEVEL", "log", "level"),
    ("DAYTONA_MCP_API_KEY", "auth", "api_key"),
];

/// The environment twins of the command-line flags (read by the CLI).
const FLAG_VARIABLES: [&str; 5] = [
    "DAYTONA_MCP_CONFIG",
    "DAYTONA_MCP_LISTEN",
    "DAYTONA_MCP_DATA_DIR",
    "DATABASE_URL",
    "DAYTONA_MCP_DRIVER",
];

/// The names of the variables in `env` that shape the configuration (or, for `RUST_LOG`, the
/// log filter), sorted: what `daytona-mcp config check` says it applied.
pub fn variables_in_effect(env: &HashMap<String, String>) -> Vec<String> {
    let mut names: Vec<String> = env
        .iter()
        .filter(|(name, value)| {
            !value.is_empty()
                && (DAYTONA_VARIABLES.iter().any(|(var, _, _)| var == name)
                    || FLAG_VARIABLES.contains(&name.as_str())
                    || (name.starts_with("DAYTONA_MCP_") && name.contains("__"))
                    || *name == "MCP_DEBUG"
                    || *name == "RUST_LOG")
        })
        .map(|(name, _)| name.clone())
        .collect();
    names.sort();
    names
}

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the SQLite database, sandboxes and node identity live.
    pub data_dir: PathBuf,
    /// This node's identity for leases; generated once and kept in `<data_dir>/node-id` if empty.
    pub node_id: String,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub queue: QueueConfig,
    pub sandbox: SandboxConfig,
    pub local: LocalSection,
    pub daytona: DaytonaSection,
    pub auth: AuthConfig,
    pub mcp: McpConfig,
    pub audit: AuditConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub tls: TlsConfig,
    pub quotas: QuotaConfig,
    /// `[templates.NAME]`: sandbox templates every tenant can use (`create_sandbox
    /// {template}`), read-only; their fields are those of `create_template`.
    pub templates: std::collections::BTreeMap<String, crate::tools::args::TemplateFields>,
}

/// `[quotas]`: per-tenant limits, with per-tenant overrides in `[quotas.tenants.NAME]`. Beyond
/// one, a submission gets 429 with `Retry-After` and nothing is created. 0: no limit.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Most sandboxes a tenant may have (those being created included).
    pub max_sandboxes: u64,
    /// Most queued and running jobs a tenant may have.
    pub max_active_jobs: u64,
    /// Most jobs of a tenant running at once (over all nodes); the others wait in the queue,
    /// each still in its sandbox's order.
    pub max_running_jobs: u64,
    /// Most disk quota a tenant's sandboxes may have in total, e.g. "200g" (each sandbox counts
    /// its `resources.disk_gb`, else `sandbox.disk_limit`); empty: no limit.
    pub max_disk: String,
    /// Tenants with other limits (unset fields take the ones above).
    pub tenants: std::collections::BTreeMap<String, TenantQuotaConfig>,
}

/// `[quotas.tenants.NAME]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantQuotaConfig {
    pub max_sandboxes: Option<u64>,
    pub max_active_jobs: Option<u64>,
    pub max_running_jobs: Option<u64>,
    /// `"none"` lifts the default limit for this tenant.
    pub max_disk: Option<String>,
}

impl QuotaConfig {
    /// The limits of `tenant`; `None` when it has none.
    pub fn for_tenant(&self, tenant: &str) -> Option<crate::store::Quota> {
        let own = self.tenants.get(tenant);
        let limit =
            |own: Option<u64>, default: u64| Some(own.unwrap_or(default)).filter(|n| *n > 0);
        let disk = own
            .and_then(|t| t.max_disk.as_deref())
            .unwrap_or(&self.max_disk);
        let quota = crate::store::Quota {
            max_sandboxes: limit(own.and_then(|t| t.max_sandboxes), self.max_sandboxes),
            max_active_jobs: limit(own.and_then(|t| t.max_active_jobs), self.max_active_jobs),
            // Checked at load (`validate`), so a bad size cannot reach here.
            max_disk_bytes: Self::disk_limit("quotas.max_disk", disk).ok().flatten(),
            default_disk_bytes: None,
        };
        quota.limits_anything().then_some(quota)
    }

    /// A `max_disk` setting: empty or `none` is no limit.
    fn disk_limit(field: &str, text: &str) -> Result<Option<u64>, ConfigError> {
        match text.trim() {
            "" | "none" => Ok(None),
            text => parse_size(field, text).map(Some),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        Self::disk_limit("quotas.max_disk", &self.max_disk)?;
        for (name, tenant) in &self.tenants {
            if let Some(disk) = &tenant.max_disk {
                Self::disk_limit(&format!("quotas.tenants.{name}.max_disk"), disk)?;
            }
        }
        Ok(())
    }
}

/// HTTPS on the main listener: both set, or neither (plain HTTP).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// `/metrics`: bounds on what it exports.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Most series of each per-sandbox metric (`workspace_disk_bytes`,
    /// `workspace_memory_bytes`): the largest sandboxes are kept, the number left out is
    /// `workspace_series_omitted`. 0 exports none.
    pub max_sandbox_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            max_sandbox_series: crate::metrics::DEFAULT_MAX_SANDBOX_SERIES,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// A separate listener for `/metrics` (and health); empty serves them on `listen`.
    pub metrics_listen: String,
    pub body_limit_bytes: usize,
    /// Longest a synchronous call waits before answering 202 with the job id.
    pub sync_wait_max_s: u64,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    pub shutdown_grace_s: u64,
    /// `Origin` values every route accepts (browsers send one; other clients usually do not).
    /// Empty: the loopback origins on the listen port (`http://localhost:PORT`,
    /// `http://127.0.0.1:PORT`, `http://[::1]:PORT`), with no CORS. Listed origins (or `"*"`,
    /// any origin) replace that default, and the MCP endpoint answers CORS for them.
    pub allowed_origins: Vec<String>,
}

/// The MCP endpoint (`/mcp`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// A legacy (2025-era) session unused for this long is forgotten; its id then gets 404.
    pub session_idle_s: u64,
    /// Most legacy sessions kept at once; the least recently used one is dropped beyond it.
    pub max_sessions: usize,
    /// Most legacy sessions one API key may hold; opening another drops that key's least
    /// recently used session, so a client leaking sessions only evicts its own.
    pub max_sessions_per_key: usize,
    /// Tools per `tools/list` page (and tasks per `tasks/list` page).
    pub page_size: usize,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; empty = `sqlite://<data_dir>/daytona-mcp.db`.
    pub url: String,
    pub max_connections: u32,
    /// How long a statement waits for a free or new connection before the request is answered
    /// 503 (`database_unavailable`): an unreachable database or an exhausted pool.
    pub acquire_timeout_ms: u64,
}

/// Prints the URL without its password (the configuration is logged at debug level).
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &DatabaseUrl::new(self.url.clone()))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .finish()
    }
}

/// The audit log: how long it is kept, and how much refused requests may write to it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Audit rows older than this many days are deleted (hourly; 0 = keep forever).
    pub retention_days: u64,
    /// Refused requests (no valid key, foreign `Origin`) recorded one by one per client address
    /// and minute; the rest are counted in one row per address and minute.
    pub denials_per_address_per_minute: u32,
    /// Refused requests recorded one by one per minute over all addresses; the rest are
    /// counted.
    pub denials_per_minute: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub concurrency: usize,
    pub claim_batch: u32,
    pub poll_interval_ms: u64,
    pub lease_s: u64,
    pub heartbeat_s: u64,
    /// A node silent (no heartbeat) for longer than this is gone: the queued jobs of its local
    /// sandboxes fail with reason `node_gone`.
    pub node_horizon_s: u64,
    pub rescue_interval_s: u64,
    pub actor_idle_s: u64,
    pub max_attempts: i32,
    pub default_timeout_s: u64,
    pub max_timeout_s: u64,
    /// Finished jobs and their output are deleted after this many hours (0 = keep forever).
    pub retention_hours: u64,
    /// The most concurrent submissions committed in one transaction (group commit); 1 commits
    /// each on its own.
    pub submit_batch: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// `local` (embedded) or `daytona`: the driver of sandboxes whose `create_sandbox` names
    /// none.
    pub driver: String,
    /// Every driver this server runs (`create_sandbox.driver` may pick one); empty: `driver`
    /// alone.
    pub drivers: Vec<String>,
    /// Bytes kept per stream in a result.
    pub output_limit_bytes: usize,
    /// Bytes of output stored per job for replay over events.
    pub stored_output_limit_bytes: usize,
    /// Memory per sandbox command tree, e.g. "2g" (environment: DAYTONA_WORKSPACE_MEMORY_LIMIT).
    pub memory_limit: String,
    /// CPU cores per sandbox command tree, e.g. "1.0" (environment: DAYTONA_WORKSPACE_CPU_LIMIT).
    pub cpu_limit: String,
    /// Largest file `file_operation` reads or writes, e.g. "16m".
    pub file_limit: String,
    /// Whether `create_sandbox` may ask for network access (`network: true`).
    pub allow_network: bool,
    /// Disk quota of a sandbox that asks for none, e.g. "10g"; "none" for no quota.
    pub disk_limit: String,
    /// Most memory a sandbox may ask for (`resources.memory_mb`).
    pub max_memory: String,
    /// Most CPU cores a sandbox may ask for (`resources.cpu`).
    pub max_cpus: f64,
    /// Largest disk quota a sandbox may ask for (`resources.disk_gb`).
    pub max_disk: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSection {
    pub isolation: IsolationMode,
    pub bwrap_path: String,
    /// `PATH` inside sandboxes.
    pub path: String,
    pub max_processes: u64,
    pub max_file_size: String,
    pub max_open_files: u64,
    pub cgroups: bool,
    /// Under bubblewrap: one long-lived sandbox per active workspace, whose agent starts each
    /// command (else a fresh bubblewrap per command).
    pub persistent_sandbox: bool,
    /// The agent binary of persistent sandboxes; empty: the running daytona-mcp binary.
    pub agent_path: String,
}

/// The `daytona` driver: a self-hosted Daytona driven through its CLI.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaytonaSection {
    /// The `daytona` CLI: a path, or a name looked up on the server's `PATH`.
    pub cli_path: String,
    /// Daytona's API URL, given to the CLI as `DAYTONA_API_URL` (environment: DAYTONA_SERVER_URL);
    /// empty: the CLI's own login (`daytona login`).
    pub api_url: String,
    /// Daytona API key, given to the CLI as `DAYTONA_API_KEY` (the environment variable
    /// `DAYTONA_API_KEY`); never logged or stored.
    pub api_key: String,
    /// `HOME` of the CLI, where `daytona login` keeps its profile; empty: the server's `HOME`.
    pub cli_home: String,
    /// The snapshot of sandboxes whose `create_sandbox` names no `image`; empty: Daytona's.
    pub snapshot: String,
    /// The Daytona target (region) to create sandboxes in; empty: Daytona's default.
    pub target: String,
    /// Longest one CLI call may take (beyond a command's own timeout) before it is killed.
    pub command_timeout_s: u64,
    /// CLI processes running at once.
    pub max_concurrent_cli: usize,
    /// The directory inside each sandbox that callers see as `/workspace`.
    pub workspace_dir: String,
}

impl Default for DaytonaSection {
    fn default() -> DaytonaSection {
        DaytonaSection {
            cli_path: "daytona".into(),
            api_url: String::new(),
            api_key: String::new(),
            cli_home: String::new(),
            snapshot: String::new(),
            target: String::new(),
            command_timeout_s: 60,
            max_concurrent_cli: 8,
            workspace_dir: "/home/daytona/workspace".into(),
        }
    }
}

impl std::fmt::Debug for DaytonaSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaytonaSection")
            .field("cli_path", &self.cli_path)
            .field("api_url", &self.api_url)
            .field("api_key", &if self.api_key.is_empty() { "" } else { "***" })
            .field("cli_home", &self.cli_home)
            .field("snapshot", &self.snapshot)
            .field("target", &self.target)
            .field("command_timeout_s", &self.command_timeout_s)
            .field("max_concurrent_cli", &self.max_concurrent_cli)
            .field("workspace_dir", &self.workspace_dir)
            .finish()
    }
}

#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The admin API key (environment: DAYTONA_MCP_API_KEY). Empty: one is generated into
    /// `<data_dir>/admin.key` on first start.
    pub api_key: String,
    /// Serve without authentication; refused unless the listener is loopback.
    pub disabled: bool,
    /// Let `GET /schema` and `GET /<tool>/schema` answer without a key. They describe the tools
    /// only (names, descriptions, JSON schemas), nothing of sandboxes or jobs; LangSwarm's REST
    /// helper reads `/schema` without headers.
    pub public_schemas: bool,
    /// A file of static API keys (TOML, or JSON when named `*.json`), each with its tenant, role,
    /// name, optional expiry and the key's SHA-256 (see `keys_file.rs`). Empty: none.
    pub keys_file: String,
    /// Requests per minute one key (or SSO subject) may make, on each node; beyond it the
    /// answer is 429 with `Retry-After`. 0: no limit.
    pub rate_limit_per_minute: u32,
    /// Single sign-on with OIDC/OAuth2 bearer tokens; off while `issuer` is empty.
    pub oidc: OidcConfig,
}

/// `[auth.oidc]`: which identity provider's tokens are accepted, and how their claims map to a
/// tenant and a role (see `auth/oidc.rs`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The issuer URL, exactly as in the tokens' `iss` (e.g. Keycloak's
    /// `https://sso.example.com/realms/dev`). Empty: SSO is off.
    pub issuer: String,
    /// The JWKS URL; empty: the `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    pub jwks_url: String,
    /// The audience tokens must carry in `aud` (required with `issuer`).
    pub audience: String,
    /// The claim naming the tenant (a dotted path reaches into objects).
    pub tenant_claim: String,
    /// The claim naming the role: a string or a list of strings (e.g. `groups`).
    pub role_claim: String,
    /// Claim value → role (`viewer`, `developer`, `admin`); empty: the values are role names.
    pub role_map: std::collections::BTreeMap<String, String>,
    /// This server's resource URL in `/.well-known/oauth-protected-resource` (e.g.
    /// `https://mcp.example.com/mcp`); empty: `<scheme>://<host>/mcp` of the request.
    pub resource: String,
    /// Longest the fetched JWKS is used before it is fetched again.
    pub jwks_refresh_s: u64,
    /// Shortest time between two fetches caused by tokens with an unknown `kid`.
    pub jwks_min_refetch_s: u64,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
}

impl Default for OidcConfig {
    fn default() -> OidcConfig {
        OidcConfig {
            issuer: String::new(),
            jwks_url: String::new(),
            audience: String::new(),
            tenant_claim: "tenant".into(),
            role_claim: "role".into(),
            role_map: Default::default(),
            resource: String::new(),
            jwks_refresh_s: 3600,
            jwks_min_refetch_s: 10,
            leeway_s: 30,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("api_key", &if self.api_key.is_empty() { "" } else { "***" })
            .field("disabled", &self.disabled)
            .field("public_schemas", &self.public_schemas)
            .field("keys_file", &self.keys_file)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("oidc", &self.oidc)
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `daytona_mcp=debug,sqlx=warn`…
    pub level: String,
    /// `pretty` or `json`.
    pub format: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("./data"),
            node_id: String::new(),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            queue: QueueConfig::default(),
            sandbox: SandboxConfig::default(),
            local: LocalSection::default(),
            daytona: DaytonaSection::default(),
            auth: AuthConfig::default(),
            mcp: McpConfig::default(),
            audit: AuditConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            tls: TlsConfig::default(),
            quotas: QuotaConfig::default(),
            templates: Default::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:8001".into(),
            metrics_listen: String::new(),
            body_limit_bytes: 16 * 1024 * 1024,
            sync_wait_max_s: 900,
            workers: 0,
            shutdown_grace_s: 30,
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for McpConfig {
    fn default() -> McpConfig {
        McpConfig {
            session_idle_s: 3600,
            max_sessions: 10_000,
            max_sessions_per_key: 100,
            page_size: 50,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            retention_days: 90,
            denials_per_address_per_minute: 10,
            denials_per_minute: 120,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> DatabaseConfig {
        DatabaseConfig {
            url: String::new(),
            max_connections: 8,
            acquire_timeout_ms: 10_000,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            concurrency: 32,
            claim_batch: 64,
            poll_interval_ms: 2000,
            lease_s: 60,
            heartbeat_s: 15,
            node_horizon_s: 300,
            rescue_interval_s: 30,
            actor_idle_s: 60,
            max_attempts: 3,
            default_timeout_s: 300,
            max_timeout_s: 3600,
            retention_hours: 168,
            submit_batch: crate::queue::submit::DEFAULT_MAX_BATCH,
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            driver: "local".into(),
            drivers: Vec::new(),
            output_limit_bytes: 1024 * 1024,
            stored_output_limit_bytes: 8 * 1024 * 1024,
            memory_limit: "2g".into(),
            cpu_limit: "1.0".into(),
            file_limit: "16m".into(),
            allow_network: false,
            disk_limit: "10g".into(),
            max_memory: "8g".into(),
            max_cpus: 4.0,
            max_disk: "100g".into(),
        }
    }
}

impl Default for LocalSection {
    fn default() -> LocalSection {
        LocalSection {
            isolation: IsolationMode::Auto,
            bwrap_path: String::new(),
            path: DEFAULT_SANDBOX_PATH.into(),
            max_processes: 256,
            max_file_size: "1g".into(),
            max_open_files: 1024,
            cgroups: true,
            persistent_sandbox: true,
            agent_path: String::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: "info".into(),
            format: "pretty".into(),
        }
    }
}

/// Command-line values that override everything else.
#[derive(Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub driver: Option<String>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self
                    .database_url
                    .as_ref()
                    .map(|u| DatabaseUrl::new(u.clone())),
            )
            .field("driver", &self.driver)
            .finish()
    }
}

/// Parses a size such as `2g`, `512m`, `64k`, `1.5G` or `1048576` (bytes).
pub fn parse_size(field: &str, text: &str) -> Result<u64, ConfigError> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (number, unit) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let value: f64 = number.trim().parse().map_err(|_| {
        ConfigError::Invalid(format!(
            "{field}: `{text}` is not a size (like 2g, 512m, 1048576)"
        ))
    })?;
    if value.is_nan() || value <= 0.0 {
        return Err(ConfigError::Invalid(format!(
            "{field}: `{text}` must be positive"
        )));
    }
    Ok((value * unit as f64) as u64)
}

/// Whether `origin` is a serialized origin: `scheme://host[:port]`, nothing after it.
fn valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
}

/// Sets `table[section][key] = value`, creating the section.
fn set(table: &mut toml::Table, section: Option<&str>, key: &str, value: toml::Value) {
    let target = match section {
        None => table,
        Some(section) => table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("config sections are tables"),
    };
    target.insert(key.to_string(), value);
}

/// Sets `table[path…][key] = value`, creating the sections; a setting in the way is an error.
fn set_nested(
    table: &mut toml::Table,
    path: &[String],
    key: &str,
    value: toml::Value,
) -> Result<(), ConfigError> {
    let mut target = table;
    for (depth, section) in path.iter().enumerate() {
        target = target
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "{} is a setting, not a section",
                    path[..=depth].join(".")
                ))
            })?;
    }
    target.insert(key.to_string(), value);
    Ok(())
}

/// An environment value for a map setting (`auth.oidc.role_map`): an inline TOML table such as
/// `{ "mcp-admins" = "admin" }`; anything else stays a string (and is refused as such).
fn map_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) if matches!(t.get("v"), Some(toml::Value::Table(_))) => {
            t.remove("v").expect("just parsed")
        }
        _ => toml::Value::String(raw.to_string()),
    }
}

/// An environment value as TOML: numbers and booleans as such, anything else as a string.
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) if !matches!(t.get("v"), Some(toml::Value::Table(_))) => {
            t.remove("v").expect("just parsed")
        }
        _ => toml::Value::String(raw.to_string()),
    }
}

/// Masks secrets in a serialized configuration (see [`Config::to_redacted_toml`]).
fn redact(value: &mut toml::Value) {
    let Some(table) = value.as_table_mut() else {
        return;
    };
    for (key, value) in table.iter_mut() {
        let secret = ["key", "token", "password", "secret"]
            .iter()
            .any(|word| key.ends_with(word));
        match value {
            toml::Value::String(text) if secret && !text.is_empty() => *text = "***".into(),
            toml::Value::String(text) if key == "url" || key.ends_with("_url") => {
                *text = DatabaseUrl::new(text.clone()).redacted();
            }
            // Template environment values are secrets whatever their names.
            toml::Value::Table(env) if key == "environment_vars" => {
                for (_, value) in env.iter_mut() {
                    *value = "***".into();
                }
            }
            toml::Value::Table(_) => redact(value),
            _ => {}
        }
    }
}

fn truthy(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl Config {
    /// Loads the configuration from `file` (or `./daytona-mcp.toml` when present), `env` and
    /// `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let default_file = Path::new("daytona-mcp.toml");
        let file = file.or_else(|| default_file.exists().then_some(default_file));
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };

        for (var, section, key) in DAYTONA_VARIABLES {
            if let Some(value) = env.get(var).filter(|v| !v.is_empty()) {
                set(
                    &mut table,
                    Some(section),
                    key,
                    toml::Value::String(value.clone()),
                );
            }
        }
        if env.get("MCP_DEBUG").is_some_and(|v| truthy(v)) {
            set(&mut table, Some("log"), "level", "debug".into());
        }

        // DAYTONA_MCP_<SECTION>__<KEY>, in a stable order.
        let mut overrides_env: Vec<(&String, &String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("DAYTONA_MCP_") && k.contains("__"))
            .collect();
        overrides_env.sort();
        for (var, value) in overrides_env {
            let rest = &var["DAYTONA_MCP_".len()..];
            let (section, key) = rest.split_once("__").expect("filtered on __");
            // Deeper sections nest: DAYTONA_MCP_AUTH__OIDC__ISSUER is `[auth.oidc] issuer`.
            let mut path: Vec<String> = std::iter::once(section)
                .chain(key.split("__"))
                .map(str::to_ascii_lowercase)
                .collect();
            let key = path.pop().expect("at least section and key");
            let value = if key == "role_map" {
                map_value(value)
            } else {
                env_value(value)
            };
            set_nested(&mut table, &path, &key, value)?;
        }

        // Flags (and their environment twins, resolved by the CLI).
        if let Some(listen) = &overrides.listen {
            set(&mut table, Some("server"), "listen", listen.clone().into());
        }
        if let Some(dir) = &overrides.data_dir {
            set(
                &mut table,
                None,
                "data_dir",
                dir.to_string_lossy().into_owned().into(),
            );
        }
        if let Some(url) = &overrides.database_url {
            set(&mut table, Some("database"), "url", url.clone().into());
        }
        if let Some(driver) = &overrides.driver {
            set(&mut table, Some("sandbox"), "driver", driver.clone().into());
        }

        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The checks of `[templates.NAME]` that need no driver (the languages are checked at
    /// start-up, once the drivers are known).
    fn validate_templates(&self) -> Result<(), ConfigError> {
        use crate::tools::templates::fields::{Limits, check_fields, check_name};
        let resources = self.resource_policy()?;
        let limits = Limits {
            resources: &resources,
            allow_network: self.sandbox.allow_network,
            drivers: None,
        };
        for (name, fields) in &self.templates {
            check_name(&format!("templates.{name}"), name)
                .and_then(|()| check_fields(&format!("templates.{name}."), fields, &limits))
                .map_err(|e| {
                    ConfigError::Invalid(match e.field {
                        Some(field) if !e.message.contains(&field) => {
                            format!("{field}: {}", e.message)
                        }
                        _ => e.message,
                    })
                })?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let listen = self.listen_addr()?;
        if !self.server.metrics_listen.is_empty() {
            self.server
                .metrics_listen
                .parse::<SocketAddr>()
                .map_err(|e| ConfigError::Invalid(format!("server.metrics_listen: {e}")))?;
        }
        if self.auth.disabled && !listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "auth.disabled is only allowed on a loopback listener, not {listen}: anyone who \
                 can reach it could run commands on this machine; listen on 127.0.0.1, or turn \
                 authentication on and give clients a key (`daytona-mcp keys create`)"
            )));
        }
        if self.queue.submit_batch == 0 {
            return Err(ConfigError::Invalid(
                "queue.submit_batch must be at least 1 (1 commits each submission on its own)"
                    .into(),
            ));
        }
        self.validate_auth_edge()?;
        self.validate_templates()?;
        if !matches!(self.sandbox.driver.as_str(), "local" | "daytona") {
            return Err(ConfigError::Invalid(format!(
                "sandbox.driver: `{}` is not a driver (local, daytona)",
                self.sandbox.driver
            )));
        }
        for name in &self.sandbox.drivers {
            if !matches!(name.as_str(), "local" | "daytona") {
                return Err(ConfigError::Invalid(format!(
                    "sandbox.drivers: `{name}` is not a driver (local, daytona)"
                )));
            }
        }
        if !self.sandbox.drivers.is_empty() && !self.sandbox.drivers.contains(&self.sandbox.driver)
        {
            return Err(ConfigError::Invalid(format!(
                "sandbox.drivers must include sandbox.driver (`{}`)",
                self.sandbox.driver
            )));
        }
        if self.enabled_drivers().iter().any(|d| d == "daytona") {
            if self.daytona.cli_path.trim().is_empty() {
                return Err(ConfigError::Invalid("daytona.cli_path is empty".into()));
            }
            if !self.daytona.workspace_dir.starts_with('/') {
                return Err(ConfigError::Invalid(
                    "daytona.workspace_dir must be an absolute path".into(),
                ));
            }
            if self.daytona.command_timeout_s == 0 || self.daytona.max_concurrent_cli == 0 {
                return Err(ConfigError::Invalid(
                    "daytona.command_timeout_s and daytona.max_concurrent_cli must be more than 0"
                        .into(),
                ));
            }
        }
        if !matches!(self.log.format.as_str(), "pretty" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log.format: `{}` is not pretty or json",
                self.log.format
            )));
        }
        self.memory_limit_bytes()?;
        self.cpu_limit()?;
        self.resource_policy()?;
        parse_size("local.max_file_size", &self.local.max_file_size)?;
        parse_size("sandbox.file_limit", &self.sandbox.file_limit)?;
        for (name, value) in [
            ("queue.concurrency", self.queue.concurrency as u64),
            ("queue.claim_batch", u64::from(self.queue.claim_batch)),
            ("queue.lease_s", self.queue.lease_s),
            ("queue.heartbeat_s", self.queue.heartbeat_s),
            ("queue.default_timeout_s", self.queue.default_timeout_s),
            ("queue.max_timeout_s", self.queue.max_timeout_s),
            (
                "server.body_limit_bytes",
                self.server.body_limit_bytes as u64,
            ),
            (
                "sandbox.output_limit_bytes",
                self.sandbox.output_limit_bytes as u64,
            ),
            ("mcp.session_idle_s", self.mcp.session_idle_s),
            ("mcp.max_sessions", self.mcp.max_sessions as u64),
            (
                "mcp.max_sessions_per_key",
                self.mcp.max_sessions_per_key as u64,
            ),
            (
                "audit.denials_per_address_per_minute",
                u64::from(self.audit.denials_per_address_per_minute),
            ),
            (
                "audit.denials_per_minute",
                u64::from(self.audit.denials_per_minute),
            ),
            ("mcp.page_size", self.mcp.page_size as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be more than 0")));
            }
        }
        for origin in &self.server.allowed_origins {
            if origin != "*" && !valid_origin(origin) {
                return Err(ConfigError::Invalid(format!(
                    "server.allowed_origins: `{origin}` is not an origin like \
                     `https://app.example.com` or `http://localhost:3000` (scheme, host, optional \
                     port, no path), nor `*`"
                )));
            }
        }
        if self.queue.heartbeat_s >= self.queue.lease_s {
            return Err(ConfigError::Invalid(
                "queue.heartbeat_s must be shorter than queue.lease_s".into(),
            ));
        }
        if self.queue.node_horizon_s <= self.queue.heartbeat_s {
            return Err(ConfigError::Invalid(
                "queue.node_horizon_s must be longer than queue.heartbeat_s (a live node would \
                 be taken for gone)"
                    .into(),
            ));
        }
        if self.queue.default_timeout_s > self.queue.max_timeout_s {
            return Err(ConfigError::Invalid(
                "queue.default_timeout_s must not exceed queue.max_timeout_s".into(),
            ));
        }
        Ok(())
    }

    /// The SSO, rate and TLS settings.
    fn validate_auth_edge(&self) -> Result<(), ConfigError> {
        let oidc = &self.auth.oidc;
        if !oidc.issuer.is_empty() {
            if !(oidc.issuer.starts_with("https://") || oidc.issuer.starts_with("http://")) {
                return Err(ConfigError::Invalid(format!(
                    "auth.oidc.issuer: `{}` is not an http(s) URL",
                    oidc.issuer
                )));
            }
            if oidc.audience.is_empty() {
                return Err(ConfigError::Invalid(
                    "auth.oidc.audience is required with auth.oidc.issuer: tokens issued for \
                     other services must not be accepted here"
                        .into(),
                ));
            }
            if oidc.tenant_claim.is_empty() || oidc.role_claim.is_empty() {
                return Err(ConfigError::Invalid(
                    "auth.oidc.tenant_claim and auth.oidc.role_claim must not be empty".into(),
                ));
            }
            if oidc.jwks_refresh_s == 0 {
                return Err(ConfigError::Invalid(
                    "auth.oidc.jwks_refresh_s must be more than 0".into(),
                ));
            }
        }
        for (value, role) in &oidc.role_map {
            if crate::auth::Role::parse(role).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "auth.oidc.role_map: `{value}` maps to `{role}`, which is not a role \
                     (viewer, developer, admin)"
                )));
            }
        }
        self.quotas.validate()?;
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key go together: set both for HTTPS, or neither".into(),
            ));
        }
        Ok(())
    }

    /// The drivers this server runs: `sandbox.drivers`, or `sandbox.driver` alone.
    pub fn enabled_drivers(&self) -> Vec<String> {
        if self.sandbox.drivers.is_empty() {
            vec![self.sandbox.driver.clone()]
        } else {
            let mut names: Vec<String> = Vec::new();
            for name in &self.sandbox.drivers {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            names
        }
    }

    /// The configuration as TOML with its secrets masked, for printing (`daytona-mcp config
    /// check`): every non-empty setting whose name says it is a secret (`…key`, `…token`,
    /// `…password`, `…secret`) becomes `***`, and URLs lose their passwords. Going by names
    /// keeps settings added later masked too.
    pub fn to_redacted_toml(&self) -> String {
        let mut value = toml::Value::try_from(self).expect("the configuration serializes");
        redact(&mut value);
        toml::to_string(&value).expect("the configuration serializes to TOML")
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|e| {
            ConfigError::Invalid(format!("server.listen `{}`: {e}", self.server.listen))
        })
    }

    pub fn database_url(&self) -> DatabaseUrl {
        if self.database.url.is_empty() {
            DatabaseUrl::new(format!(
                "sqlite://{}",
                self.data_dir.join("daytona-mcp.db").display()
            ))
        } else {
            DatabaseUrl::new(self.database.url.clone())
        }
    }

    pub fn memory_limit_bytes(&self) -> Result<u64, ConfigError> {
        parse_size("sandbox.memory_limit", &self.sandbox.memory_limit)
    }

    /// Per-sandbox defaults and maxima; a default above its maximum is an error.
    pub fn resource_policy(&self) -> Result<crate::tools::resources::ResourcePolicy, ConfigError> {
        let policy = crate::tools::resources::ResourcePolicy {
            default_memory_bytes: self.memory_limit_bytes()?,
            default_cpus: self.cpu_limit()?,
            default_disk_bytes: match self.sandbox.disk_limit.trim() {
                "none" | "" => None,
                text => Some(parse_size("sandbox.disk_limit", text)?),
            },
            max_memory_bytes: parse_size("sandbox.max_memory", &self.sandbox.max_memory)?,
            max_cpus: self.sandbox.max_cpus,
            max_disk_bytes: parse_size("sandbox.max_disk", &self.sandbox.max_disk)?,
        };
        if policy.max_cpus.is_nan() || policy.max_cpus <= 0.0 {
            return Err(ConfigError::Invalid(
                "sandbox.max_cpus must be a positive number of cores".into(),
            ));
        }
        for (what, default, max) in [
            (
                "sandbox.memory_limit exceeds sandbox.max_memory",
                policy.default_memory_bytes as f64,
                policy.max_memory_bytes as f64,
            ),
            (
                "sandbox.cpu_limit exceeds sandbox.max_cpus",
                policy.default_cpus,
                policy.max_cpus,
            ),
            (
                "sandbox.disk_limit exceeds sandbox.max_disk",
                policy.default_disk_bytes.unwrap_or(0) as f64,
                policy.max_disk_bytes as f64,
            ),
        ] {
            if default > max {
                return Err(ConfigError::Invalid(what.into()));
            }
        }
        Ok(policy)
    }

    pub fn cpu_limit(&self) -> Result<f64, ConfigError> {
        match self.sandbox.cpu_limit.trim().parse::<f64>() {
            Ok(v) if v > 0.0 => Ok(v),
            _ => Err(ConfigError::Invalid(format!(
                "sandbox.cpu_limit: `{}` is not a positive number of cores",
                self.sandbox.cpu_limit
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = Config::load(None, &env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8001");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.sandbox.driver, "local");
        assert!(c.database_url().expose().starts_with("sqlite://"));
        assert_eq!(c.memory_limit_bytes().unwrap(), 2 << 30);
    }

    #[test]
    fn precedence_file_then_seed_then_sections_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:9000\"\n[queue]\nconcurrency = 4\n[sandbox]\nmemory_limit = \"1g\"\n",
        )
        .unwrap();
        let e = env(&[
            ("DAYTONA_WORKSPACE_MEMORY_LIMIT", "512m"),
            ("DAYTONA_WORKSPACE_CPU_LIMIT", "0.5"),
            ("DAYTONA_MCP_QUEUE__CONCURRENCY", "7"),
            ("DAYTONA_MCP_LOCAL__ISOLATION", "none"),
            ("MCP_DEBUG", "true"),
        ]);
        let flags = Overrides {
            listen: Some("127.0.0.1:9100".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&file), &e, &flags).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9100");
        assert_eq!(c.queue.concurrency, 7);
        assert_eq!(c.memory_limit_bytes().unwrap(), 512 << 20);
        assert_eq!(c.cpu_limit().unwrap(), 0.5);
        assert_eq!(c.local.isolation, IsolationMode::None);
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let bad = [
            ("DAYTONA_MCP_QUEUE__CONCURENCY", "3"),
            ("DAYTONA_MCP_SERVER__LISTEN", "not-an-address"),
            ("DAYTONA_WORKSPACE_MEMORY_LIMIT", "lots"),
            ("DAYTONA_MCP_SANDBOX__DRIVER", "docker"),
        ];
        for (k, v) in bad {
            let err = Config::load(None, &env(&[(k, v)]), &Overrides::default());
            assert!(err.is_err(), "{k}={v} accepted");
        }
    }

    #[test]
    fn auth_cannot_be_disabled_on_a_public_listener() {
        let e = env(&[
            ("DAYTONA_MCP_AUTH__DISABLED", "true"),
            ("DAYTONA_MCP_SERVER__LISTEN", "0.0.0.0:8001"),
        ]);
        assert!(Config::load(None, &e, &Overrides::default()).is_err());
        let e = env(&[("DAYTONA_MCP_AUTH__DISABLED", "true")]);
        assert!(Config::load(None, &e, &Overrides::default()).is_ok());
    }

    #[test]
    fn sso_settings_have_environment_twins() {
        let e = env(&[
            (
                "DAYTONA_MCP_AUTH__OIDC__ISSUER",
                "https://sso.example.com/realms/dev",
            ),
            ("DAYTONA_MCP_AUTH__OIDC__AUDIENCE", "daytona-mcp"),
            (
                "DAYTONA_MCP_AUTH__OIDC__JWKS_URL",
                "https://sso.example.com/certs",
            ),
            ("DAYTONA_MCP_AUTH__OIDC__TENANT_CLAIM", "org"),
            ("DAYTONA_MCP_AUTH__OIDC__ROLE_CLAIM", "groups"),
            (
                "DAYTONA_MCP_AUTH__OIDC__ROLE_MAP",
                r#"{ "/mcp-admins" = "admin", "mcp-devs" = "developer" }"#,
            ),
            ("DAYTONA_MCP_AUTH__RATE_LIMIT_PER_MINUTE", "120"),
            ("DAYTONA_MCP_TLS__CERT", "/etc/mcp/cert.pem"),
            ("DAYTONA_MCP_TLS__KEY", "/etc/mcp/key.pem"),
        ]);
        let c = Config::load(None, &e, &Overrides::default()).unwrap();
        assert_eq!(c.auth.oidc.issuer, "https://sso.example.com/realms/dev");
        assert_eq!(c.auth.oidc.audience, "daytona-mcp");
        assert_eq!(c.auth.oidc.jwks_url, "https://sso.example.com/certs");
        assert_eq!(c.auth.oidc.tenant_claim, "org");
        assert_eq!(c.auth.oidc.role_claim, "groups");
        assert_eq!(c.auth.oidc.role_map["/mcp-admins"], "admin");
        assert_eq!(c.auth.oidc.role_map["mcp-devs"], "developer");
        assert_eq!(c.auth.rate_limit_per_minute, 120);
        assert_eq!(c.tls.cert, "/etc/mcp/cert.pem");
        for (bad_key, bad_value) in [
            // An issuer without an audience would accept tokens minted for any service.
            ("DAYTONA_MCP_AUTH__OIDC__AUDIENCE", ""),
            ("DAYTONA_MCP_AUTH__OIDC__ROLE_MAP", r#"{ "g" = "root" }"#),
            ("DAYTONA_MCP_AUTH__OIDC__ISSUER", "sso.example.com"),
            ("DAYTONA_MCP_TLS__KEY", ""),
            ("DAYTONA_MCP_AUTH__OIDC__ISUER", "https://x"),
        ] {
            let mut e = e.clone();
            e.insert(bad_key.into(), bad_value.into());
            assert!(
                Config::load(None, &e, &Overrides::default()).is_err(),
                "{bad_key}={bad_value} accepted"
            );
        }
    }

    #[test]
    fn quotas_have_defaults_and_per_tenant_overrides() {
        let e = env(&[
            ("DAYTONA_MCP_QUOTAS__MAX_SANDBOXES", "10"),
            ("DAYTONA_MCP_QUOTAS__MAX_DISK", "100g"),
            ("DAYTONA_MCP_QUOTAS__MAX_RUNNING_JOBS", "4"),
            ("DAYTONA_MCP_QUOTAS__TENANTS__ACME__MAX_SANDBOXES", "2"),
            ("DAYTONA_MCP_QUOTAS__TENANTS__ACME__MAX_DISK", "none"),
            ("DAYTONA_MCP_QUOTAS__TENANTS__BIG__MAX_RUNNING_JOBS", "0"),
        ]);
        let c = Config::load(None, &e, &Overrides::default()).unwrap();
        let acme = c.quotas.for_tenant("acme").unwrap();
        assert_eq!(acme.max_sandboxes, Some(2));
        assert_eq!(acme.max_disk_bytes, None);
        let other = c.quotas.for_tenant("other").unwrap();
        assert_eq!(other.max_sandboxes, Some(10));
        assert_eq!(other.max_disk_bytes, Some(100 << 30));
        assert_eq!(other.max_active_jobs, None);
        let running = crate::quota::RunningLimits::from_config(&c.quotas);
        assert_eq!(running.of("acme"), Some(4));
        assert_eq!(running.of("big"), None);
        assert!(Config::default().quotas.for_tenant("acme").is_none());
        assert!(crate::quota::RunningLimits::from_config(&Config::default().quotas).is_empty());
        let bad = env(&[("DAYTONA_MCP_QUOTAS__TENANTS__ACME__MAX_DISK", "lots")]);
        assert!(Config::load(None, &bad, &Overrides::default()).is_err());
    }

    #[test]
    fn api_key_is_not_printed() {
        let e = env(&[("DAYTONA_MCP_API_KEY", "sk-very-secret")]);
        let c = Config::load(None, &e, &Overrides::default()).unwrap();
        assert_eq!(c.auth.api_key, "sk-very-secret");
        assert!(!format!("{c:?}").contains("sk-very-secret"));
    }

    #[test]
    fn daytona_settings_come_from_the_seed_variables_and_the_key_is_not_printed() {
        let e = env(&[
            ("DAYTONA_SERVER_URL", "http://daytona.internal:3000/api"),
            ("DAYTONA_API_KEY", "dtn_very_secret"),
            ("DAYTONA_MCP_SANDBOX__DRIVER", "daytona"),
            ("DAYTONA_MCP_DAYTONA__SNAPSHOT", "daytonaio/sandbox:0.4"),
        ]);
        let c = Config::load(None, &e, &Overrides::default()).unwrap();
        assert_eq!(c.daytona.api_url, "http://daytona.internal:3000/api");
        assert_eq!(c.daytona.api_key, "dtn_very_secret");
        assert_eq!(c.daytona.snapshot, "daytonaio/sandbox:0.4");
        assert_eq!(c.enabled_drivers(), ["daytona"]);
        assert!(!format!("{c:?}").contains("dtn_very_secret"));
        let both = env(&[("DAYTONA_MCP_SANDBOX__DRIVERS", r#"["local", "daytona"]"#)]);
        let c = Config::load(None, &both, &Overrides::default()).unwrap();
        assert_eq!(c.enabled_drivers(), ["local", "daytona"]);
        let bad = env(&[
            ("DAYTONA_MCP_SANDBOX__DRIVERS", r#"["daytona"]"#),
            ("DAYTONA_MCP_SANDBOX__DRIVER", "local"),
        ]);
        assert!(Config::load(None, &bad, &Overrides::default()).is_err());
        let bad = env(&[("DAYTONA_MCP_SANDBOX__DRIVERS", r#"["docker"]"#)]);
        assert!(Config::load(None, &bad, &Overrides::default()).is_err());
    }

    #[test]
    fn database_password_is_not_printed() {
        for url in [
            "postgres://app:pg-s3cret@db.internal:5432/jobs",
            "postgres://app@db.internal/jobs?sslmode=disable&password=pg-s3cret",
        ] {
            let c = Config::load(
                None,
                &env(&[]),
                &Overrides {
                    database_url: Some(url.into()),
                    ..Overrides::default()
                },
            )
            .unwrap();
            assert_eq!(c.database.url, url);
            let printed = format!("{c:?}");
            assert!(!printed.contains("pg-s3cret"), "{printed}");
            assert!(printed.contains("db.internal"), "{printed}");
            let overrides = Overrides {
                database_url: Some(url.into()),
                ..Overrides::default()
            };
            assert!(!format!("{overrides:?}").contains("pg-s3cret"));
        }
    }

    #[test]
    fn isolation_levels_and_resource_maxima_parse() {
        for (text, mode) in [
            ("auto", IsolationMode::Auto),
            ("bwrap", IsolationMode::Bwrap),
            ("landlock", IsolationMode::Landlock),
            ("none", IsolationMode::None),
        ] {
            let c = Config::load(
                None,
                &env(&[("DAYTONA_MCP_LOCAL__ISOLATION", text)]),
                &Overrides::default(),
            )
            .unwrap();
            assert_eq!(c.local.isolation, mode);
        }
        let bad = env(&[("DAYTONA_MCP_LOCAL__ISOLATION", "chroot")]);
        assert!(Config::load(None, &bad, &Overrides::default()).is_err());
        // A default above its maximum is refused at start-up.
        let bad = env(&[
            ("DAYTONA_WORKSPACE_MEMORY_LIMIT", "4g"),
            ("DAYTONA_MCP_SANDBOX__MAX_MEMORY", "1g"),
        ]);
        assert!(Config::load(None, &bad, &Overrides::default()).is_err());
        let c = Config::load(
            None,
            &env(&[("DAYTONA_MCP_SANDBOX__DISK_LIMIT", "none")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.resource_policy().unwrap().default_disk_bytes, None);
    }

    #[test]
    fn allowed_origins_are_checked() {
        let e = env(&[(
            "DAYTONA_MCP_SERVER__ALLOWED_ORIGINS",
            r#"["https://app.example.com", "http://localhost:3000"]"#,
        )]);
        let c = Config::load(None, &e, &Overrides::default()).unwrap();
        assert_eq!(
            c.server.allowed_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        for bad in [r#"["app.example.com"]"#, r#"["https://x.example/path"]"#] {
            let e = env(&[("DAYTONA_MCP_SERVER__ALLOWED_ORIGINS", bad)]);
            assert!(
                Config::load(None, &e, &Overrides::default()).is_err(),
                "{bad}"
            );
        }
        let e = env(&[("DAYTONA_MCP_MCP__PAGE_SIZE", "0")]);
        assert!(Config::load(None, &e, &Overrides::default()).is_err());
    }

    /// The differences between two serialized configurations, as dotted keys.
    fn differences(prefix: &str, want: &toml::Table, got: &toml::Table, out: &mut Vec<String>) {
        for (key, value) in want {
            let path = format!("{prefix}{key}");
            match (value, got.get(key)) {
                (_, None) => out.push(format!("{path} is missing (default {value})")),
                (toml::Value::Table(want), Some(toml::Value::Table(got))) => {
                    differences(&format!("{path}."), want, got, out)
                }
                (want, Some(got)) if want != got => {
                    out.push(format!("{path} is {got}, but its default is {want}"))
                }
                _ => {}
            }
        }
        for key in got.keys().filter(|k| !want.contains_key(*k)) {
            out.push(format!("{prefix}{key} is not a setting"));
        }
    }

    #[test]
    fn the_example_file_lists_every_setting_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("daytona-mcp.example.toml");
        // It loads (unknown keys would be errors)…
        Config::load(Some(&path), &env(&[]), &Overrides::default()).unwrap();
        // …and holds exactly the settings of `Config`, each at its default.
        let example: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let defaults = match toml::Value::try_from(Config::default()).unwrap() {
            toml::Value::Table(table) => table,
            other => panic!("not a table: {other}"),
        };
        let mut out = Vec::new();
        differences("", &defaults, &example, &mut out);
        assert!(
            out.is_empty(),
            "daytona-mcp.example.toml is out of date:\n{}",
            out.join("\n")
        );
    }

    #[test]
    fn printed_settings_mask_secrets() {
        let e = env(&[
            ("DAYTONA_MCP_API_KEY", "sk-very-secret"),
            (
                "DATABASE_URL",
                "postgres://app:pg-s3cret@db.internal/jobs?sslpassword=pg-s3cret",
            ),
        ]);
        let overrides = Overrides {
            database_url: e.get("DATABASE_URL").cloned(),
            ..Overrides::default()
        };
        let c = Config::load(None, &e, &overrides).unwrap();
        let printed = c.to_redacted_toml();
        assert!(!printed.contains("sk-very-secret"), "{printed}");
        assert!(!printed.contains("pg-s3cret"), "{printed}");
        assert!(printed.contains("api_key = \"***\""), "{printed}");
        assert!(printed.contains("db.internal/jobs"), "{printed}");
        // What is printed is a configuration file that loads into the same settings, secrets
        // aside.
        let reparsed: Config = toml::from_str(&printed).unwrap();
        assert_eq!(reparsed.queue.concurrency, c.queue.concurrency);
        assert_eq!(reparsed.server.listen, c.server.listen);
    }

    /// Loads `text` as the configuration file.
    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daytona-mcp.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), &env(&[]), &Overrides::default())
    }

    #[test]
    fn templates_load_and_their_mistakes_are_errors() {
        let c = load_text(
            "[templates.py]\nlanguage = \"python\"\nsetup_commands = [\"echo hi\"]\n\
             environment_vars = { TOKEN_A = \"s3cret-template\" }\nresources = { cpu = 1.0 }\n",
        )
        .unwrap();
        assert_eq!(c.templates["py"].setup_commands, ["echo hi"]);
        // Printed settings mask template environment values whatever their names.
        let printed = c.to_redacted_toml();
        assert!(!printed.contains("s3cret-template"), "{printed}");
        let reparsed: Config = toml::from_str(&printed).unwrap();
        assert_eq!(
            reparsed.templates["py"].resources,
            c.templates["py"].resources
        );
        for (text, named) in [
            ("[templates.py]\nlangauge = \"python\"\n", "langauge"),
            ("[templates.py]\nnetwork = \"yes\"\n", "expected a boolean"),
            ("[templates.py]\nnetwork = true\n", "templates.py.network"),
            (
                "[templates.py]\ngit_branch = \"main\"\n",
                "templates.py.git_branch",
            ),
            (
                "[templates.py]\nsetup_commands = [\"\"]\n",
                "templates.py.setup_commands[0]",
            ),
            (
                "[templates.py]\nenvironment_vars = { \"1X\" = \"v\" }\n",
                "templates.py.environment_vars.1X",
            ),
            (
                "[templates.\"a b\"]\nlanguage = \"python\"\n",
                "templates.a b",
            ),
            (
                "[templates.py]\ngit_repo = \"https://u:pw@example.com/r.git\"\n",
                "templates.py.git_repo",
            ),
        ] {
            let error = load_text(text).unwrap_err().to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
        let many = format!(
            "[templates.py]\nsetup_commands = [{}]\n",
            vec!["\"true\""; 33].join(", ")
        );
        let error = load_text(&many).unwrap_err().to_string();
        assert!(error.contains("templates.py.setup_commands"), "{error}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("x", "2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("x", "512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("x", "1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("x", "4096").unwrap(), 4096);
        assert_eq!(parse_size("x", "64kb").unwrap(), 64 << 10);
        assert!(parse_size("x", "0").is_err());
        assert!(parse_size("x", "-1g").is_err());
    }
}
