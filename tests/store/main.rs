//! The store conformance suite: one set of cases, run against SQLite and PostgreSQL.
//! When the `Store` trait grows, this suite grows with it.

#[path = "../support/mod.rs"]
mod support;

mod cases;

use std::sync::Arc;

use daytona_mcp::store::{self, DatabaseUrl, Store};

/// A migrated store on a fresh database, and its URL for raw-SQL checks.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = store::connect(&DatabaseUrl::new(url.clone()), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    TestStore {
        store,
        url,
        _dir: Some(dir),
    }
}

pub async fn postgres_store() -> Option<TestStore> {
    let url = support::fresh_postgres_url().await?;
    let store = store::connect(&DatabaseUrl::new(url.clone()), 8)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Some(TestStore {
        store,
        url,
        _dir: None,
    })
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(super::sqlite_store().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(store) = super::postgres_store().await else { return };
                    super::cases::$case(store).await;
                }
            )*
        }
    };
}

conformance!(
    migrations_are_idempotent,
    enqueue_commits_job_and_audit_row,
    idempotency_key_returns_the_original_job,
    claim_is_fifo_within_a_workspace_and_priority_first,
    claim_runs_one_job_per_workspace,
    database_refuses_a_second_running_job_in_a_workspace,
    claim_waits_for_run_after,
    complete_writes_outcomes_and_ignores_foreign_leases,
    retry_requeues_for_later,
    cancel_queued_running_and_finished,
    heartbeat_extends_leases_and_reports_cancels,
    rescue_resolves_only_expired_leases,
    recover_node_resolves_only_that_nodes_jobs,
    list_jobs_filters_and_pages,
    output_is_replayed_in_order,
    sandboxes_are_per_tenant,
    audit_log_filters_and_is_append_only,
    audit_prune_is_the_only_way_rows_leave,
    prune_deletes_old_finished_jobs,
    concurrent_claimers_never_share_a_job_or_a_workspace,
    enqueue_many_and_counts,
    enqueue_inserts_the_jobs_sandbox_in_the_same_transaction,
    a_reserved_sandbox_goes_when_its_job_fails_or_is_cancelled,
    nul_characters_are_stored_without_stopping_a_completion,
    jobs_keep_the_request_id_that_submitted_them,
    oldest_runnable_ignores_jobs_behind_their_workspace_and_future_retries,
);
