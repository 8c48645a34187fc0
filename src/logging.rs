//! Log output: `tracing` with a filter from `log.level`, as human-readable lines or JSON.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber, writing to stdout. `RUST_LOG`, when set, wins over
/// `log.level`. Safe to call more than once (later calls do nothing).
pub fn init(config: &LogConfig) {
    install(config, std::io::stdout, true);
}

/// Like [`init`], writing to stderr: for `daytona-mcp stdio`, whose stdout carries the protocol.
/// Colours only on a terminal: desktop clients keep a server's stderr in log files.
pub fn init_stderr(config: &LogConfig) {
    use std::io::IsTerminal;
    install(config, std::io::stderr, std::io::stderr().is_terminal());
}

fn install<W>(config: &LogConfig, writer: W, ansi: bool)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&config.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = if config.format == "json" {
        // Every enclosing span's fields (the request's or job's id among them) on every line.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
    } else {
        builder.try_init()
    };
}
