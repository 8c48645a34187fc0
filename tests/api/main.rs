//! End-to-end tests: a real server on a random port, a real database (SQLite file or a fresh
//! PostgreSQL database), real commands in real bubblewrap sandboxes.

#[path = "../support/mod.rs"]
mod support;

mod helpers;

mod access;
mod actors;
mod audit_api;
mod bad_input;
mod cancel;
mod cli;
mod client_docs;
mod cross_site;
mod db_faults;
mod denials;
mod deploy;
mod escape;
mod events;
mod files;
mod flow;
mod git;
mod git_token;
mod idempotency;
mod internals;
mod isolation;
mod job_errors;
mod keys;
mod landlock;
mod languages;
mod limits;
mod mcp_client;
mod mcp_clients;
mod mcp_legacy;
mod mcp_limits;
mod mcp_modern;
mod mcp_tasks;
mod mcp_transport;
mod monitoring;
mod nodes;
mod nul_output;
mod oidc;
mod persistent;
mod prometheus_scrape;
mod quota;
mod restart;
mod retention;
mod roles;
mod schemas;
mod serialization;
mod snapshots;
mod stdio;
mod stored_env;
mod templates;
mod tenant_limits;
mod tenants;
mod tls;

/// Runs an `async fn(Db)` test once per database.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix_web::test]
                async fn sqlite() {
                    super::$name($crate::helpers::Db::Sqlite).await;
                }
                #[actix_web::test]
                async fn postgres() {
                    super::$name($crate::helpers::Db::Postgres).await;
                }
            }
        )*
    };
}
