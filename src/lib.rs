//! daytona-mcp: a self-hosted MCP server for development sandboxes, built on a persistent job
//! queue. See `ARCHITECTURE.md` for the map of this crate.

pub mod actors;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod drivers;
pub mod http;
pub mod jobs;
pub mod keys_file;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod queue;
pub mod quota;
pub mod stdio;
pub mod store;
pub mod tls;
pub mod tools;
