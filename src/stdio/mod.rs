//! `daytona-mcp stdio`: MCP over stdin/stdout, for desktop clients that start their servers as
//! processes (Claude Desktop, …).
//!
//! - With `--url URL` it relays to a running server's MCP endpoint (the key from
//!   `DAYTONA_MCP_API_KEY`): the server's queue, limits and guarantees apply unchanged.
//! - Without it, it starts the embedded server in this process, with the configuration `serve`
//!   would use (data dir, database, driver, limits), listening only on a random loopback port,
//!   and relays to that. Nothing else needs to run. The data dir's lock keeps it from sharing a
//!   data dir with a running `serve` (use `--url` to reach that one).
//!
//! Either way the transport is [`relay`]: the MCP endpoint is the one implementation of the
//! protocol, and stdio is a framing in front of it.

pub mod relay;
mod sse;

use anyhow::Context;

use self::relay::{Ended, RelayConfig};
use crate::app::Application;
use crate::config::{Config, ServerConfig};

/// Relays stdin/stdout to the MCP endpoint at `url` until stdin closes or a signal arrives.
pub async fn run_with_url(url: &str, key: Option<String>) -> anyhow::Result<Ended> {
    let url = reqwest::Url::parse(url)
        .with_context(|| format!("--url `{url}` is not a URL (e.g. http://127.0.0.1:8001/mcp)"))?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("--url `{url}` must be an http:// or https:// URL");
    }
    if key.is_none() {
        tracing::warn!(
            "DAYTONA_MCP_API_KEY is not set: requests go without a key, which only a server with \
             auth.disabled accepts"
        );
    }
    let config = RelayConfig {
        url,
        key,
        max_message_bytes: ServerConfig::default().body_limit_bytes,
    };
    relay::run(
        config,
        tokio::io::stdin(),
        tokio::io::stdout(),
        stop_signal(),
    )
    .await
}

/// Starts the embedded server and relays stdin/stdout to it until stdin closes or the server
/// stops (a signal stops it).
pub async fn run_embedded(mut config: Config) -> anyhow::Result<Ended> {
    // The settings of `serve`, except where it listens: a loopback port of its own, reached
    // only by this relay (with the admin key), and no separate metrics listener.
    config.server.listen = "127.0.0.1:0".into();
    config.server.metrics_listen = String::new();
    let app = Application::build(config.clone()).await?;
    let key = if config.auth.disabled {
        None
    } else if !config.auth.api_key.is_empty() {
        Some(config.auth.api_key.clone())
    } else {
        let file = app.key_file().context("the admin key has a file")?;
        let key = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the admin key {}", file.display()))?;
        Some(key.trim().to_string())
    };
    let url = format!("http://127.0.0.1:{}/mcp", app.port());
    tracing::info!(%url, "embedded server for stdio");
    let handle = app.handle();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let server = actix_rt::spawn(async move {
        let result = app.run_until_stopped().await;
        let _ = stopped_tx.send(());
        result
    });
    let relay_config = RelayConfig {
        url: reqwest::Url::parse(&url).expect("a loopback URL parses"),
        key,
        max_message_bytes: config.server.body_limit_bytes,
    };
    let ended = relay::run(
        relay_config,
        tokio::io::stdin(),
        tokio::io::stdout(),
        async {
            let _ = stopped_rx.await;
        },
    )
    .await;
    handle.stop(true).await;
    server.await.context("the embedded server's task")??;
    ended
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
