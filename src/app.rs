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

use crate::actors::{Pool, PoolConfig};
use crate::config::{Config, parse_size};
use crate::drivers::Drivers;
use crate::http::auth::Authenticator;
use crate::http::denials::{self, DenialLog};
use crate::http::mcp::McpState;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::store::{self, Store};
use crate::tools::{DriverCatalog, ToolEnv, Tools, ToolsConfig};

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
    /// The data dir's lock, held until the server has stopped.
    data_dir_lock: std::fs::File,
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
    let store = store::connect_with(
        &url,
        config.database.max_connections,
        Duration::from_millis(config.database.acquire_timeout_ms),
    )
    .await
    .with_context(|| format!("cannot open the database {url}"))?;
    store
        .migrate()
        .await
        .with_context(|| format!("cannot migrate the database {url}"))?;
    Ok(store)
}

/// Binds a listener; a failure says which setting to change and how (`setting` is the
/// configuration key, `how` the flag or variable that sets it).
fn bind(addr: &str, setting: &str, how: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "another process (another daytona-mcp?) is listening there: stop it, or choose \
                 another address with {how}"
            ),
            std::io::ErrorKind::PermissionDenied => {
                format!("ports below 1024 need privileges: choose a port above 1023 with {how}")
            }
            std::io::ErrorKind::AddrNotAvailable => format!(
                "this machine has no interface with that address: choose one it has (127.0.0.1, \
                 or 0.0.0.0 for every interface) with {how}"
            ),
            _ => format!("choose another address with {how}"),
        };
        anyhow::anyhow!("cannot listen on {addr} ({setting}): {e}; {hint}")
    })
}

/// The name of the user this process runs as, and its uid, for error messages.
fn current_user() -> String {
    // SAFETY: geteuid cannot fail; getpwuid_r writes only into the buffers it is given.
    let uid = unsafe { libc::geteuid() };
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let status = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if status == 0 && !found.is_null() && !entry.pw_name.is_null() {
        // SAFETY: getpwuid_r succeeded, so `pw_name` points to a NUL-terminated string in
        // `buffer`, which is still alive.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
        format!("user {} (uid {uid})", name.to_string_lossy())
    } else {
        format!("uid {uid}")
    }
}

/// An error about the data dir that says, when the cause is access, who the server runs as and
/// how to choose another directory.
fn data_dir_error(dir: &Path, what: &str, e: std::io::Error) -> anyhow::Error {
    let access = matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    );
    if access {
        let user = current_user();
        anyhow::anyhow!(
            "cannot {what} data dir {}: {e}; the server runs as {user}, who cannot write there: \
             choose a directory this user can write with --data-dir DIR (or DAYTONA_MCP_DATA_DIR, \
             data_dir), or give this user that directory (e.g. chown)",
            dir.display()
        )
    } else {
        anyhow::anyhow!("cannot {what} data dir {}: {e}", dir.display())
    }
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

/// Raises the soft limit on open descriptors to the hard one. Each persistent sandbox holds a
/// few descriptors in the server (its socket, pidfds, output pipes) and every running command a
/// few more, so the usual soft limit of 1,024 would refuse new sandboxes after a hundred or so;
/// the hard limit is what the operator allows. Commands still get `local.max_open_files`.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::debug!(
                from = before,
                to = limit.rlim_max,
                "raised the open files limit"
            );
        }
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
        .map_err(|e| data_dir_error(dir, "create", e))?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| data_dir_error(dir, "read", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| data_dir_error(dir, "make private", e))?;
        tracing::info!(data_dir = %dir.display(), "data dir made private (mode 0700)");
    }
    // Proves the directory is writable now, rather than failing later inside SQLite or the key
    // file with a less helpful message.
    let probe = dir.join(format!(".write-probe-{}", uuid::Uuid::new_v4().simple()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| data_dir_error(dir, "write in", e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Holds `<data_dir>/daytona-mcp.lock` for the process's life: two servers on one data dir
/// would share a node id, and each one's start-up recovery would fail the jobs the other runs.
/// The lock goes with the process (the kernel releases it), so a crash leaves nothing stale.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = dir.join("daytona-mcp.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| data_dir_error(dir, "lock", e))?;
    // SAFETY: flock only acts on the descriptor, which `file` owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => String::new(),
            pid => format!(" (pid {pid})"),
        };
        anyhow::bail!(
            "the data dir {} is in use by another daytona-mcp process{holder}: stop it, give \
             this one another --data-dir, or connect to the running server (e.g. `daytona-mcp \
             stdio --url http://127.0.0.1:8001/mcp`)",
            dir.display()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

impl Application {
    /// Builds everything, with the drivers the configuration names, and starts listening. Must
    /// run inside an actix system.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Application::build_with(config, None).await
    }

    /// Builds everything with `drivers` when given (tests inject theirs), else the drivers the
    /// configuration names.
    pub async fn build_with(
        mut config: Config,
        drivers: Option<Drivers>,
    ) -> anyhow::Result<Application> {
        set_private_umask();
        raise_open_files_limit();
        if config.enabled_drivers().iter().any(|d| d == "local") {
            refuse_paths_sandboxes_read(&config)?;
        }
        // The listeners first: a server that cannot serve stops before it touches the data dir
        // or the database (where start-up recovery would act on jobs).
        let metrics_on_main = config.server.metrics_listen.is_empty();
        let listener = bind(
            &config.server.listen,
            "server.listen",
            "--listen ADDR:PORT (or DAYTONA_MCP_LISTEN)",
        )?;
        let metrics_listener = if metrics_on_main {
            None
        } else {
            Some(bind(
                &config.server.metrics_listen,
                "server.metrics_listen",
                "DAYTONA_MCP_SERVER__METRICS_LISTEN=ADDR:PORT",
            )?)
        };
        let local = listener.local_addr()?;
        if config.auth.disabled && !local.ip().is_loopback() {
            anyhow::bail!(
                "auth.disabled is only allowed on a loopback listener, not {local}: anyone who \
                 can reach {local} could run commands on this machine; listen on 127.0.0.1, or \
                 turn authentication on (unset auth.disabled) and give clients a key \
                 (`daytona-mcp keys create`)"
            );
        }
        let tls = if config.tls.cert.is_empty() {
            None
        } else {
            Some(crate::tls::server_config(
                Path::new(&config.tls.cert),
                Path::new(&config.tls.key),
            )?)
        };
        prepare_data_dir(&config.data_dir)?;
        let data_dir_lock = lock_data_dir(&config.data_dir)?;
        // Sandboxed commands run with another working directory; every path must be absolute.
        config.data_dir = config
            .data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve data dir {}", config.data_dir.display()))?;
        let store = open_store(&config).await?;
        let node_id = node_id(&config)?;

        let drivers = match drivers {
            Some(drivers) => drivers,
            None => crate::drivers::from_config(&config).await?,
        };
        let mut warnings: Vec<String> = drivers.iter().flat_map(|d| d.warnings()).collect();

        let metrics = Metrics::with_sandbox_cap(config.metrics.max_sandbox_series);
        let queue = Queue::new(store.clone(), Duration::from_secs(1)).with_submitter(
            config.queue.submit_batch,
            Duration::from_millis(config.database.acquire_timeout_ms),
        );
        let tools = Tools::new(
            ToolEnv {
                store: store.clone(),
                drivers: drivers.clone(),
                config: ToolsConfig {
                    default_timeout_s: config.queue.default_timeout_s,
                    max_timeout_s: config.queue.max_timeout_s,
                    output_limit_bytes: config.sandbox.output_limit_bytes,
                    max_attempts: config.queue.max_attempts,
                    allow_network: config.sandbox.allow_network,
                    resources: config.resource_policy()?,
                    file_limit_bytes: parse_size("sandbox.file_limit", &config.sandbox.file_limit)?,
                    drivers: DriverCatalog::of(&drivers),
                    templates: std::sync::Arc::new(config.templates.clone()),
                },
                metrics: metrics.clone(),
                secrets: Default::default(),
                node_id: node_id.clone(),
                archives: crate::tools::archives::Archives::open(&config.data_dir)
                    .context("cannot open the snapshot directory of the data dir")?,
                quotas: config.quotas.clone(),
            },
            queue.clone(),
        )
        .with_quotas(config.quotas.clone());
        // `Config::load` checked the templates but for their languages, which need the drivers.
        crate::tools::templates::check_configured(&tools.env().config).map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: {}{}",
                e.field.map(|f| format!("{f}: ")).unwrap_or_default(),
                e.message
            )
        })?;
        let tool_names: Vec<&str> = tools.specs().map(|spec| spec.name).collect();
        let driver_names: Vec<&str> = drivers.iter().map(|d| d.name()).collect();
        metrics.init_known_labels(&tool_names, &driver_names);
        let (auth, key_file) =
            Authenticator::new(&config.auth, &config.data_dir).context("cannot set up API keys")?;
        let auth = auth.with_store(store.clone());
        if auth.is_disabled() {
            warnings.push("authentication is disabled".to_string());
            tracing::warn!("authentication is disabled (auth.disabled = true)");
        }
        if let Some(file) = &key_file {
            tracing::info!(path = %file.display(), "admin API key is in this file");
        }

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
                node_horizon: Duration::from_secs(config.queue.node_horizon_s),
                heartbeat_interval: Duration::from_secs(config.queue.heartbeat_s),
                rescue_interval: Duration::from_secs(config.queue.rescue_interval_s),
                actor_idle: Duration::from_secs(config.queue.actor_idle_s),
                stored_output_limit: config.sandbox.stored_output_limit_bytes,
                running_limits: crate::quota::RunningLimits::from_config(&config.quotas),
                ..PoolConfig::default()
            },
        )
        .await?;

        let mut background = Vec::new();
        if config.queue.retention_hours > 0 {
            background.push(tokio::spawn(crate::queue::retention::run(
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

        http::telemetry::init_route_series(&metrics);
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            tools,
            queue: queue.clone(),
            auth,
            metrics,
            config: Arc::new(config.clone()),
            drivers,
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
        .shutdown_timeout(grace.as_secs());
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls)?,
            None => server.listen(listener)?,
        }
        .run();

        let (metrics_server, metrics_port) = if let Some(listener) = metrics_listener {
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
        } else {
            (None, None)
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
            data_dir_lock,
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
        drop(self.data_dir_lock);
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
