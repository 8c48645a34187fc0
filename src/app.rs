//! Building and running the server: the one place that wires store, driver, queue, tools,
//! worker pool and HTTP together.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use serde_json::json;

use crate::actors::{Pool, PoolConfig};
use crate::config::{Config, parse_size};
use crate::drivers::Driver;
use crate::drivers::local::{IsolationMode, Limits, LocalConfig, LocalDriver};
use crate::http::auth::Authenticator;
use crate::http::denials::{self, DenialLog};
use crate::http::mcp::McpState;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::store::{self, Store};
use crate::tools::{ToolEnv, Tools, ToolsConfig};

/// A built server, listening, with its worker pool running.
pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    server: Server,
    metrics_server: Option<Server>,
    pool: Pool,
    shutdown_grace: Duration,
    key_file: Option<PathBuf>,
    queue: Queue,
    background: Vec<tokio::task::JoinHandle<()>>,
    denials: Arc<DenialLog>,
}

/// This node's identity: configured, or generated once and kept in the data dir so that a
/// restarted node recognises the jobs it left running.
fn node_id(config: &Config) -> anyhow::Result<String> {
    if !config.node_id.is_empty() {
        return Ok(config.node_id.clone());
    }
    let path = config.data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Opens the database named by the configuration and applies migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.database_url();
    let store = store::connect(&url, config.database.max_connections)
        .await
        .with_context(|| format!("cannot open the database {url}"))?;
    store
        .migrate()
        .await
        .with_context(|| format!("cannot migrate the database {url}"))?;
    Ok(store)
}

fn local_driver(config: &Config) -> anyhow::Result<LocalDriver> {
    let driver = LocalDriver::new(LocalConfig {
        data_dir: config.data_dir.clone(),
        isolation: config.local.isolation,
        bwrap_path: (!config.local.bwrap_path.is_empty())
            .then(|| PathBuf::from(&config.local.bwrap_path)),
        sandbox_path: config.local.path.clone(),
        limits: Limits {
            max_processes: config.local.max_processes,
            max_file_size_bytes: parse_size("local.max_file_size", &config.local.max_file_size)?,
            max_open_files: config.local.max_open_files,
        },
        cgroups: config.local.cgroups,
    })?;
    Ok(driver)
}

fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))
}

/// Makes what the process creates private unless it says otherwise: the data dir holds the
/// database, the API keys and every sandbox's files. Sandboxed commands get the usual umask back
/// (see `drivers/local/spawn.rs`).
pub fn set_private_umask() {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// The SQLite file `url` names, if it names one.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    (!file.as_os_str().is_empty() && file != Path::new(":memory:")).then(|| file.to_path_buf())
}

/// Refuses a data dir or SQLite file under a directory that every sandbox can read: each
/// sandbox would be handed the database, the API keys and the other sandboxes' files.
fn refuse_paths_sandboxes_read(config: &Config) -> anyhow::Result<()> {
    let mut paths = vec![("data dir", config.data_dir.clone())];
    if let Some(file) = sqlite_file(config.database_url().expose()) {
        paths.push(("database file", file));
    }
    for (what, path) in paths {
        if let Some(visible) = crate::drivers::local::isolation::readable_by_sandboxes(&path) {
            anyhow::bail!(
                "the {what} {} is under {visible}, which every sandbox can read: sandboxed \
                 commands could read the database, the API keys and other sandboxes' files; \
                 choose a path outside the system directories (/usr, /bin, /sbin, /lib…) and \
                 the /etc entries that sandboxes see",
                path.display()
            );
        }
    }
    Ok(())
}

/// Creates the data dir (and missing parents) with mode 0700, and takes group and other
/// access away from an existing one.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read data dir {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make data dir {} private", dir.display()))?;
        tracing::info!(data_dir = %dir.display(), "data dir made private (mode 0700)");
    }
    Ok(())
}

impl Application {
    /// Builds everything and starts listening. Must run inside an actix system.
    pub async fn build(mut config: Config) -> anyhow::Result<Application> {
        set_private_umask();
        if config.sandbox.driver == "local" {
            refuse_paths_sandboxes_read(&config)?;
        }
        prepare_data_dir(&config.data_dir)?;
        // Sandboxed commands run with another working directory; every path must be absolute.
        config.data_dir = config
            .data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve data dir {}", config.data_dir.display()))?;
        let store = open_store(&config).await?;
        let node_id = node_id(&config)?;

        let mut warnings = Vec::new();
        let (driver, enforcement): (Arc<dyn Driver>, serde_json::Value) =
            match config.sandbox.driver.as_str() {
                "local" => {
                    let driver = local_driver(&config)?;
                    let report = driver.enforcement();
                    if config.local.isolation == IsolationMode::None {
                        warnings.push(
                            "local.isolation is \"none\": sandboxed commands run on the host \
                             without namespaces"
                                .to_string(),
                        );
                    }
                    if let Some(landlock) = &report.landlock {
                        let mut warning = format!(
                            "isolation is Landlock (ABI {}): commands share the host's process \
                             list (/proc shows every host process's command line, other \
                             sandboxes' included, though not their environments or memory) and \
                             network namespace; ",
                            landlock.abi
                        );
                        warning.push_str(if landlock.tcp_restricted {
                            "TCP is refused without network access, UDP is not restricted"
                        } else {
                            "the network is not restricted (Landlock ABI 4 needed)"
                        });
                        if !landlock.signals_scoped {
                            warning.push_str(
                                "; signals to same-user processes are not blocked (Landlock ABI \
                                 6 needed)",
                            );
                        }
                        tracing::warn!("{warning}");
                        warnings.push(warning);
                    }
                    let enforcement = serde_json::to_value(report)?;
                    (Arc::new(driver), enforcement)
                }
                other => anyhow::bail!(
                    "sandbox.driver `{other}` is not available in this build yet; use `local`"
                ),
            };

        let metrics = Metrics::with_sandbox_cap(config.metrics.max_sandbox_series);
        let queue = Queue::new(store.clone(), Duration::from_secs(1));
        let tools = Tools::new(
            ToolEnv {
                store: store.clone(),
                driver: driver.clone(),
                config: ToolsConfig {
                    default_timeout_s: config.queue.default_timeout_s,
                    max_timeout_s: config.queue.max_timeout_s,
                    output_limit_bytes: config.sandbox.output_limit_bytes,
                    max_attempts: config.queue.max_attempts,
                    allow_network: config.sandbox.allow_network,
                    resources: config.resource_policy()?,
                    file_limit_bytes: parse_size("sandbox.file_limit", &config.sandbox.file_limit)?,
                },
                metrics: metrics.clone(),
                enforcement: json!(enforcement),
                secrets: Default::default(),
            },
            queue.clone(),
        );
        let tool_names: Vec<&str> = tools.specs().map(|spec| spec.name).collect();
        metrics.init_known_labels(&tool_names, driver.name());
        let (auth, key_file) =
            Authenticator::new(&config.auth, &config.data_dir).context("cannot set up API keys")?;
        if auth.is_disabled() {
            warnings.push("authentication is disabled".to_string());
            tracing::warn!("authentication is disabled (auth.disabled = true)");
        }
        if let Some(file) = &key_file {
            tracing::info!(path = %file.display(), "admin API key is in this file");
        }

        let pg_listen_pool = if store.backend() == store::Backend::Postgres {
            Some(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(config.database_url().expose())
                    .await
                    .context("cannot open the notification connection")?,
            )
        } else {
            None
        };
        let pool = Pool::start(
            queue.clone(),
            tools.executor(),
            metrics.clone(),
            PoolConfig {
                node_id: node_id.clone(),
                concurrency: config.queue.concurrency,
                claim_batch: config.queue.claim_batch,
                poll_interval: Duration::from_millis(config.queue.poll_interval_ms),
                lease: Duration::from_secs(config.queue.lease_s),
                heartbeat_interval: Duration::from_secs(config.queue.heartbeat_s),
                rescue_interval: Duration::from_secs(config.queue.rescue_interval_s),
                actor_idle: Duration::from_secs(config.queue.actor_idle_s),
                stored_output_limit: config.sandbox.stored_output_limit_bytes,
                ..PoolConfig::default()
            },
            pg_listen_pool,
        )
        .await?;

        let mut background = Vec::new();
        if config.queue.retention_hours > 0 {
            background.push(tokio::spawn(prune_loop(
                store.clone(),
                Duration::from_secs(config.queue.retention_hours * 3600),
            )));
        }
        if config.audit.retention_days > 0 {
            background.push(tokio::spawn(audit_prune_loop(
                store.clone(),
                Duration::from_secs(config.audit.retention_days * 86_400),
            )));
        }
        let denials = Arc::new(DenialLog::new(
            store.clone(),
            config.audit.denials_per_address_per_minute,
            config.audit.denials_per_minute,
        ));
        background.push(tokio::spawn(denials::flush_loop(denials.clone())));

        let metrics_on_main = config.server.metrics_listen.is_empty();
        http::telemetry::init_route_series(&metrics);
        let listener = bind(&config.server.listen)?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            tools,
            queue: queue.clone(),
            auth,
            metrics,
            config: Arc::new(config.clone()),
            driver,
            warnings,
            metrics_on_main,
            origins: http::cross_site::OriginPolicy::new(&config.server.allowed_origins, port),
            mcp: McpState::new(&config),
            denials: denials.clone(),
        });
        let workers = match config.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let grace = Duration::from_secs(config.server.shutdown_grace_s);
        let main_state = state.clone();
        let server = HttpServer::new(move || {
            // The last `wrap` runs first: request ids and metrics, then the Origin and media-type
            // checks, then routing.
            App::new()
                .app_data(main_state.clone())
                .wrap(from_fn(http::cross_site::guard))
                .wrap(from_fn(http::telemetry::observe))
                .configure(|cfg| http::configure(cfg, metrics_on_main))
        })
        .workers(workers)
        // A client that closes its connection ends its request: actix drops the handler, which
        // is how an abandoned 2026-07-28 MCP call gets cancelled. (Half-closed HTTP/1.1
        // clients, which shut down writing and still wait for an answer, are not supported.)
        .h1_allow_half_closed(false)
        .shutdown_timeout(grace.as_secs())
        .listen(listener)?
        .run();

        let (metrics_server, metrics_port) = if metrics_on_main {
            (None, None)
        } else {
            let listener = bind(&config.server.metrics_listen)?;
            let port = listener.local_addr()?.port();
            let metrics_state = state.clone();
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(metrics_state.clone())
                    .wrap(from_fn(http::telemetry::observe))
                    .configure(http::configure_metrics)
            })
            .workers(1)
            .listen(listener)?
            .run();
            (Some(server), Some(port))
        };
        tracing::info!(port, node_id = %node_id, backend = store.backend().as_str(),
            "daytona-mcp listening");
        Ok(Application {
            port,
            metrics_port,
            server,
            metrics_server,
            pool,
            shutdown_grace: grace,
            key_file,
            queue,
            background,
            denials,
        })
    }

    /// The port of the main listener (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// Where the generated admin key is, if it came from the key file.
    pub fn key_file(&self) -> Option<&Path> {
        self.key_file.as_deref()
    }

    /// A handle that stops the HTTP server (and so [`Application::run_until_stopped`]).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Serves until SIGINT/SIGTERM (or a stop through [`Application::handle`]), then stops the
    /// worker pool gracefully.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let metrics_handle = self.metrics_server.as_ref().map(Server::handle);
        if let Some(server) = self.metrics_server {
            actix_rt::spawn(server);
        }
        self.server.await?;
        tracing::info!("HTTP server stopped; stopping workers");
        if let Some(handle) = metrics_handle {
            handle.stop(true).await;
        }
        for task in &self.background {
            task.abort();
        }
        for task in self.background {
            let _ = task.await;
        }
        // Refusals counted but not yet written (the current minute's) go in before the end.
        self.denials.flush(None).await;
        self.pool.shutdown(self.shutdown_grace).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Deletes audit rows older than `retention`, hourly (`audit.retention_days`).
async fn audit_prune_loop(store: Arc<dyn Store>, retention: Duration) {
    let mut interval = tokio::time::interval(Duration::from_secs(3600));
    loop {
        interval.tick().await;
        let before = chrono::Utc::now()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(36_500));
        match store.prune_audit(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned audit rows past their retention"),
            Err(e) => tracing::warn!(error = %e, "pruning the audit log failed"),
        }
    }
}

/// Deletes finished jobs older than `retention`, hourly.
async fn prune_loop(store: Arc<dyn Store>, retention: Duration) {
    let mut interval = tokio::time::interval(Duration::from_secs(3600));
    loop {
        interval.tick().await;
        let before = chrono::Utc::now()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(3650));
        match store.prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "pruned finished jobs"),
            Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
        }
    }
}
