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
    /// The PostgreSQL database, dropped when the case ends.
    _database: Option<support::PgDatabase>,
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
        _database: None,
    }
}

pub async fn postgres_store() -> Option<TestStore> {
    let database = support::fresh_postgres().await?;
    let url = database.url.clone();
    let store = store::connect(&DatabaseUrl::new(url.clone()), 8)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Some(TestStore {
        store,
        url,
        _dir: None,
        _database: Some(database),
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
    a_completion_returns_what_the_store_holds,
    retry_requeues_for_later,
    cancel_queued_running_and_finished,
    heartbeat_extends_leases_and_reports_cancels,
    rescue_resolves_only_expired_leases,
    recover_node_resolves_only_that_nodes_jobs,
    list_jobs_filters_and_pages,
    output_is_replayed_in_order,
    sandboxes_are_per_tenant,
    sandboxes_keep_the_drivers_handle,
    audit_log_filters_and_is_append_only,
    audit_log_filters_by_sandbox_and_outcome,
    cancel_audited_writes_its_row_with_the_state_change,
    audit_prune_is_the_only_way_rows_leave,
    prune_deletes_old_finished_jobs,
    concurrent_claimers_never_share_a_job_or_a_workspace,
    enqueue_many_and_counts,
    enqueue_inserts_the_jobs_sandbox_in_the_same_transaction,
    a_reserved_sandbox_goes_when_its_job_fails_or_is_cancelled,
    nul_characters_are_stored_without_stopping_a_completion,
    jobs_keep_the_request_id_that_submitted_them,
    oldest_runnable_ignores_jobs_behind_their_workspace_and_future_retries,
    signals_announce_each_commit,
    claims_leave_jobs_bound_to_other_nodes,
    claim_heads_takes_only_the_named_workspaces_heads,
    queued_jobs_of_gone_nodes_fail,
    a_reused_idempotency_key_with_other_arguments_is_refused,
    prune_goes_in_bounded_batches_and_frees_idempotency_keys,
    api_keys_are_stored_listed_and_revoked_with_audit_rows,
    quotas_hold_under_concurrent_enqueues,
    unclaim_puts_jobs_back_in_their_place,
    enqueue_batch_gives_each_job_its_own_outcome,
    plain_batches_give_each_job_its_own_outcome,
    a_batch_answers_its_jobs_as_stored,
    concurrent_batches_with_the_same_key_make_one_job,
    queue_group_commit_keeps_outcomes_and_order,
    small_claims_keep_the_global_order_past_a_busy_workspace,
    templates_and_followers_are_inserted_with_their_job,
    snapshots_are_per_tenant_and_count_in_the_disk_total,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_are_checkpointed_beside_the_writer() {
    cases::sqlite_commits_are_checkpointed_beside_the_writer(sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_dropped_while_idle_are_replaced_unseen() {
    let Some(store) = postgres_store().await else {
        return;
    };
    cases::postgres_connections_dropped_while_idle_are_replaced_unseen(store).await;
}

/// What plain `cargo test` shows of the tests that skipped: this binary run again, on one
/// PostgreSQL case without `DAYTONA_MCP_TEST_POSTGRES`, must name the case after its result.
#[test]
fn skipped_tests_are_listed_after_the_result() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "postgres::migrations_are_idempotent"])
        .env_remove("DAYTONA_MCP_TEST_POSTGRES")
        .env_remove("DAYTONA_MCP_REQUIRE_POSTGRES")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(
        stderr.contains("skipped: 1 of the tests above passed without running"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 PostgreSQL variants: DAYTONA_MCP_TEST_POSTGRES is not set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("    postgres::migrations_are_idempotent\n"),
        "{stderr}"
    );
}

/// A test's PostgreSQL database is gone once the test ends, when it failed too.
#[test]
fn postgres_databases_are_dropped_after_passing_and_failing_tests() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(name) = runtime.block_on(async {
        let database = support::fresh_postgres().await?;
        let name = database.name().to_string();
        assert!(support::postgres_database_exists(&name).await);
        drop(database);
        Some(name)
    }) else {
        return;
    };
    assert!(!runtime.block_on(support::postgres_database_exists(&name)));

    // A failing test: the database goes while the panic unwinds.
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let database = runtime.block_on(support::fresh_postgres()).unwrap();
        tx.send(database.name().to_string()).unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(failed.is_err());
    let name = rx.recv().unwrap();
    assert!(!runtime.block_on(support::postgres_database_exists(&name)));
}
