//! The command line: `serve`, `stdio`, `migrate`, `audit export`, `config check`, `keys`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::{Application, open_store};
use crate::config::{Config, Overrides};
use crate::store::AuditFilter;

/// A self-hosted MCP server for development sandboxes, backed by a persistent job queue.
#[derive(Debug, Parser)]
#[command(name = "daytona-mcp", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (SQLite in ./data, local driver, 127.0.0.1:8001 unless configured).
    Serve(ServeArgs),
    /// MCP over stdin/stdout, for desktop clients that start their servers as processes:
    /// relays to a running server (--url), or runs the embedded server in this process.
    Stdio(StdioArgs),
    /// Apply database migrations and exit.
    Migrate(CommonArgs),
    /// Read the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Check a configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage the API keys stored in the database (a running server honours changes at once).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once (only its SHA-256 digest is stored).
    Create {
        #[command(flatten)]
        common: CommonArgs,
        /// The tenant whose sandboxes and jobs the key reaches.
        #[arg(long)]
        tenant: String,
        /// What the key may do.
        #[arg(long, value_parser = ["viewer", "developer", "admin"])]
        role: String,
        /// A label for `keys list` (who or what uses the key).
        #[arg(long)]
        name: Option<String>,
        /// When the key stops working: RFC 3339, or a duration from now (30d, 12h, 90m).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List the keys (ids, tenants, roles, state; never the keys themselves).
    List {
        #[command(flatten)]
        common: CommonArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (as `keys list` shows it).
    Revoke {
        #[command(flatten)]
        common: CommonArgs,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration `serve` would use (file, environment, flags) and print the
    /// effective settings as TOML, secrets masked; exits 1 with the error when it is invalid.
    Check(ServeArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print audit rows as JSON lines, oldest first.
    Export {
        #[command(flatten)]
        common: CommonArgs,
        /// Only rows at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only rows before this time (RFC 3339).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only rows of this key id (the `actor` of `GET /v1/audit`).
        #[arg(long)]
        actor: Option<String>,
        /// Only rows of this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only rows of the sandbox of this name (in any tenant unless --tenant is given).
        #[arg(long)]
        sandbox: Option<String>,
        /// Only rows of this action: a tool, `jobs.cancel`, `METHOD /path` of a refusal.
        #[arg(long)]
        tool: Option<String>,
        /// Only rows with this outcome (accepted, denied, cancelled, …).
        #[arg(long)]
        outcome: Option<String>,
    },
}

/// Options every command shares.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// TOML configuration file (default: ./daytona-mcp.toml if present).
    #[arg(long, env = "DAYTONA_MCP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory for the SQLite database, sandboxes and node identity.
    #[arg(long, env = "DAYTONA_MCP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://FILE or postgres://…
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Address to listen on.
    #[arg(long, env = "DAYTONA_MCP_LISTEN")]
    pub listen: Option<String>,
    /// Sandbox driver.
    #[arg(long, env = "DAYTONA_MCP_DRIVER", value_parser = ["local", "daytona"])]
    pub driver: Option<String>,
}

#[derive(Debug, Args)]
pub struct StdioArgs {
    /// A running server's MCP endpoint, e.g. http://127.0.0.1:8001/mcp, reached with the key
    /// in DAYTONA_MCP_API_KEY. Without it, the embedded server runs in this process with the
    /// configuration `serve` would use (its data dir, database and driver).
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Sandbox driver (of the embedded server).
    #[arg(long, env = "DAYTONA_MCP_DRIVER", value_parser = ["local", "daytona"])]
    pub driver: Option<String>,
}

fn load(
    common: &CommonArgs,
    listen: Option<String>,
    driver: Option<String>,
) -> anyhow::Result<Config> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let overrides = Overrides {
        listen,
        data_dir: common.data_dir.clone(),
        database_url: common.database_url.clone(),
        driver,
    };
    Ok(Config::load(common.config.as_deref(), &env, &overrides)?)
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::app::set_private_umask();
    match cli.command {
        Command::Serve(args) => {
            let config = load(&args.common, args.listen, args.driver)?;
            crate::logging::init(&config.log);
            tracing::debug!(?config, "configuration");
            let app = Application::build(config).await?;
            app.run_until_stopped().await
        }
        Command::Stdio(args) => {
            let ended = match &args.url {
                Some(url) => {
                    let level = std::env::var("DAYTONA_LOG_LEVEL")
                        .ok()
                        .filter(|l| !l.is_empty())
                        .unwrap_or_else(|| "info".into());
                    crate::logging::init_stderr(&crate::config::LogConfig {
                        level,
                        ..crate::config::LogConfig::default()
                    });
                    let key = std::env::var("DAYTONA_MCP_API_KEY")
                        .ok()
                        .filter(|k| !k.trim().is_empty());
                    crate::stdio::run_with_url(url, key).await?
                }
                None => {
                    let config = load(&args.common, None, args.driver)?;
                    crate::logging::init_stderr(&config.log);
                    crate::stdio::run_embedded(config).await?
                }
            };
            tracing::debug!(?ended, "stdio relay ended");
            // tokio reads stdin on a blocking thread that cannot be interrupted: a relay
            // stopped by a signal while stdin is still open would make the runtime's shutdown
            // wait for the next line. Everything is written by now; exit.
            std::process::exit(0);
        }
        Command::Migrate(common) => {
            let config = load(&common, None, None)?;
            crate::logging::init(&config.log);
            crate::app::prepare_data_dir(&config.data_dir).ok();
            open_store(&config).await?;
            println!("migrations applied to {}", config.database_url());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check(args),
        } => {
            let config = load(&args.common, args.listen.clone(), args.driver.clone())?;
            let default_file = std::path::Path::new("daytona-mcp.toml");
            let file = args
                .common
                .config
                .clone()
                .or_else(|| default_file.exists().then(|| default_file.to_path_buf()));
            let env: HashMap<String, String> = std::env::vars().collect();
            let variables = crate::config::variables_in_effect(&env);
            let mut out = std::io::stdout().lock();
            writeln!(out, "# the configuration is valid").context("stdout closed")?;
            writeln!(
                out,
                "# file: {}",
                file.map_or(
                    "none (no --config, no ./daytona-mcp.toml)".to_string(),
                    |f| f.display().to_string()
                )
            )?;
            writeln!(
                out,
                "# environment variables applied: {}",
                if variables.is_empty() {
                    "none".to_string()
                } else {
                    variables.join(", ")
                }
            )?;
            writeln!(out, "# effective settings (secrets masked):\n")?;
            write!(out, "{}", config.to_redacted_toml())?;
            Ok(())
        }
        Command::Keys { command } => keys(command).await,
        Command::Audit {
            command:
                AuditCommand::Export {
                    common,
                    since,
                    until,
                    actor,
                    tenant,
                    sandbox,
                    tool,
                    outcome,
                },
        } => {
            // The same filters as `GET /v1/audit`: a name with a tenant is that workspace.
            let (workspace, sandbox) = match (&tenant, sandbox) {
                (Some(tenant), Some(name)) => {
                    (Some(crate::tools::workspace_key(tenant, &name)), None)
                }
                (_, sandbox) => (None, sandbox),
            };
            let config = load(&common, None, None)?;
            let store = open_store(&config).await?;
            let mut out = std::io::stdout().lock();
            let mut after_id = None;
            loop {
                let page = store
                    .list_audit(&AuditFilter {
                        tenant: tenant.clone(),
                        since,
                        until,
                        key_id: actor.clone(),
                        workspace: workspace.clone(),
                        action: tool.clone(),
                        sandbox: sandbox.clone(),
                        outcome: outcome.clone(),
                        after_id,
                        limit: 1000,
                    })
                    .await?;
                for row in &page {
                    writeln!(out, "{}", serde_json::to_string(row)?).context("stdout closed")?;
                }
                match page.last() {
                    Some(last) if page.len() == 1000 => after_id = Some(last.id),
                    _ => return Ok(()),
                }
            }
        }
    }
}

/// `daytona-mcp keys …`. Each change writes its audit row in the same transaction.
async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    use crate::auth::{Role, keys};
    let actor = crate::audit::Caller {
        key_id: Some("cli".into()),
        ..crate::audit::Caller::internal("")
    };
    match command {
        KeysCommand::Create {
            common,
            tenant,
            role,
            name,
            expires,
        } => {
            let tenant = tenant.trim().to_string();
            if tenant.is_empty() || tenant.len() > 128 || tenant.chars().any(char::is_control) {
                anyhow::bail!("--tenant must be 1-128 printable characters");
            }
            let role = Role::parse(&role).context("--role is viewer, developer or admin")?;
            let now = chrono::Utc::now();
            let expires_at = expires
                .as_deref()
                .map(|text| keys::parse_expiry(text, now))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--expires: {e}"))?;
            let config = load(&common, None, None)?;
            let store = open_store(&config).await?;
            let key = keys::generate(&tenant, role, name, expires_at, now);
            // The summary names the key by id; none of these values is secret.
            let summary = serde_json::json!({
                "key_id": key.record.id,
                "role": key.record.role,
                "name": key.record.name,
                "expires_at": key.record.expires_at,
            });
            let mut audit = crate::audit::Caller {
                tenant: tenant.clone(),
                ..actor
            }
            .entry("keys.create", None, None, "succeeded", Some(&summary));
            audit.args_summary = Some(summary);
            audit.at = now;
            store.insert_api_key(&key.record, &audit).await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", key.key).context("stdout closed")?;
            eprintln!(
                "created key {} for tenant {} with role {}{}; it is shown only this once",
                key.record.id,
                key.record.tenant,
                key.record.role,
                key.record
                    .expires_at
                    .map(|at| format!(", expiring {}", at.to_rfc3339()))
                    .unwrap_or_default()
            );
            Ok(())
        }
        KeysCommand::List { common, json } => {
            let config = load(&common, None, None)?;
            let store = open_store(&config).await?;
            let now = chrono::Utc::now();
            let mut out = std::io::stdout().lock();
            let records = store.list_api_keys().await?;
            if !json {
                writeln!(
                    out,
                    "{:<12}  {:<16}  {:<9}  {:<8}  {:<25}  NAME",
                    "ID", "TENANT", "ROLE", "STATE", "EXPIRES"
                )?;
            }
            for record in records {
                let state = if record.revoked_at.is_some() {
                    "revoked"
                } else if record.expires_at.is_some_and(|at| at <= now) {
                    "expired"
                } else {
                    "active"
                };
                if json {
                    let mut value = serde_json::to_value(&record)?;
                    value["state"] = state.into();
                    writeln!(out, "{value}").context("stdout closed")?;
                } else {
                    writeln!(
                        out,
                        "{:<12}  {:<16}  {:<9}  {:<8}  {:<25}  {}",
                        record.id,
                        record.tenant,
                        record.role,
                        state,
                        record
                            .expires_at
                            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                            .unwrap_or_else(|| "never".into()),
                        record.name.unwrap_or_default()
                    )
                    .context("stdout closed")?;
                }
            }
            Ok(())
        }
        KeysCommand::Revoke { common, id } => {
            let config = load(&common, None, None)?;
            let store = open_store(&config).await?;
            let Some(record) = store.api_key(&id).await? else {
                anyhow::bail!("no API key with id `{id}` (`daytona-mcp keys list` shows them)");
            };
            let summary = serde_json::json!({"key_id": id});
            let mut audit = crate::audit::Caller {
                tenant: record.tenant.clone(),
                ..actor
            }
            .entry("keys.revoke", None, None, "succeeded", Some(&summary));
            audit.args_summary = Some(summary);
            if store
                .revoke_api_key(&id, chrono::Utc::now(), &audit)
                .await?
            {
                println!("revoked key {id}");
            } else {
                println!("key {id} was already revoked");
            }
            Ok(())
        }
    }
}
