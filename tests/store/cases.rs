//! The conformance cases. Each takes a fresh, migrated store.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use daytona_mcp::audit::Caller;
use daytona_mcp::store::{
    ApiKeyRecord, AuditEntry, AuditFilter, AuditRecord, Backend, CREATING, CancelOutcome,
    Completion, ErrorReason, Finish, Job, JobError, JobFilter, JobState, NewJob, OutputChunk,
    Quota, QuotaKind, SandboxFilter, SandboxRecord, Secret, Signal, SnapshotRecord, Store,
    StoreError, Stream, TemplateRecord,
};
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;

use super::TestStore;

const LEASE: Duration = Duration::from_secs(60);

fn audit(tenant: &str) -> AuditEntry {
    Caller::internal(tenant).entry("test", None, None, "accepted", Some(&json!({"k": 1})))
}

fn job(tenant: &str, workspace: Option<&str>) -> NewJob {
    let mut j = NewJob::new(tenant, "execute_shell", json!({"command": "true"}));
    j.workspace = workspace.map(str::to_string);
    j.run_after = Utc::now() - chrono::Duration::seconds(1);
    j
}

async fn put(store: &dyn Store, j: NewJob) -> Job {
    store.enqueue(j, audit("t1")).await.unwrap().job
}

async fn claim(store: &dyn Store, node: &str, n: u32) -> Vec<Job> {
    store.claim(node, n, Utc::now(), LEASE).await.unwrap()
}

fn ok(id: Uuid) -> Completion {
    Completion {
        id,
        finish: Finish::Succeeded {
            result: json!({"ok": true}),
            exit_code: Some(0),
        },
    }
}

/// Runs `sql` with one text parameter directly on the database, beside the store.
async fn raw(url: &str, sqlite_sql: &str, pg_sql: &str, param: &str) -> Result<u64, sqlx::Error> {
    if url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        Ok(sqlx::query(sqlx::AssertSqlSafe(sqlite_sql.to_string()))
            .bind(param)
            .execute(&mut conn)
            .await?
            .rows_affected())
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        Ok(sqlx::query(sqlx::AssertSqlSafe(pg_sql.to_string()))
            .bind(param)
            .execute(&mut conn)
            .await?
            .rows_affected())
    }
}

pub async fn migrations_are_idempotent(t: TestStore) {
    t.store.migrate().await.unwrap();
    t.store.migrate().await.unwrap();
    t.store.ping().await.unwrap();
}

pub async fn enqueue_commits_job_and_audit_row(t: TestStore) {
    let s = t.store.as_ref();
    let mut new = job("t1", Some("t1/a"));
    new.priority = 3;
    new.timeout_s = 42;
    let id = new.id;
    let enqueued = s.enqueue(new, audit("t1")).await.unwrap();
    assert!(enqueued.created);
    assert_eq!(enqueued.job.id, id);
    assert_eq!(enqueued.job.state, JobState::Queued);
    assert_eq!(enqueued.job.attempts, 0);
    assert_eq!(enqueued.job.priority, 3);
    assert_eq!(enqueued.job.timeout_s, 42);
    let stored = s.job(Some("t1"), id).await.unwrap().unwrap();
    assert_eq!(stored, enqueued.job);
    // Tenants see only their own jobs.
    assert!(s.job(Some("t2"), id).await.unwrap().is_none());
    assert!(s.job(None, id).await.unwrap().is_some());
    let rows = s
        .list_audit(&AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].entry.job_id, Some(id));
    assert_eq!(rows[0].entry.outcome, "accepted");
}

pub async fn idempotency_key_returns_the_original_job(t: TestStore) {
    let s = t.store.as_ref();
    let mut first = job("t1", None);
    first.idempotency_key = Some("key-1".into());
    let first = s.enqueue(first, audit("t1")).await.unwrap();
    let mut again = job("t1", None);
    again.idempotency_key = Some("key-1".into());
    let again = s.enqueue(again, audit("t1")).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.job.id, first.job.id);
    // Another tenant's identical key is a different job.
    let mut other = job("t2", None);
    other.idempotency_key = Some("key-1".into());
    let other = s.enqueue(other, audit("t2")).await.unwrap();
    assert!(other.created);
    assert_ne!(other.job.id, first.job.id);
    let all = s
        .list_jobs(&JobFilter {
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let audit_rows = s
        .list_audit(&AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        audit_rows
            .iter()
            .filter(|r| r.entry.outcome == "replayed")
            .count(),
        1
    );
}

pub async fn claim_is_fifo_within_a_workspace_and_priority_first(t: TestStore) {
    let s = t.store.as_ref();
    let a1 = put(s, job("t1", Some("w/a"))).await;
    let a2 = put(s, job("t1", Some("w/a"))).await;
    let mut urgent = job("t1", Some("w/a"));
    urgent.priority = 10;
    let a3 = put(s, urgent).await;
    let b1 = put(s, job("t1", None)).await;
    let mut high = job("t1", None);
    high.priority = 5;
    let b2 = put(s, high).await;

    // Ready set: the workspace head (a3, priority 10) and both unserialized jobs, by priority.
    let claimed: Vec<Uuid> = claim(s, "n1", 10).await.iter().map(|j| j.id).collect();
    assert_eq!(claimed, vec![a3.id, b2.id, b1.id]);
    s.complete("n1", &[ok(a3.id)], Utc::now()).await.unwrap();
    let next: Vec<Uuid> = claim(s, "n1", 10).await.iter().map(|j| j.id).collect();
    assert_eq!(next, vec![a1.id]);
    s.complete("n1", &[ok(a1.id)], Utc::now()).await.unwrap();
    let last: Vec<Uuid> = claim(s, "n1", 10).await.iter().map(|j| j.id).collect();
    assert_eq!(last, vec![a2.id]);
    let running = s.job(None, a2.id).await.unwrap().unwrap();
    assert_eq!(running.state, JobState::Running);
    assert_eq!(running.attempts, 1);
    assert_eq!(running.lease_owner.as_deref(), Some("n1"));
    assert!(running.lease_expires_at.unwrap() > Utc::now());
    assert!(running.started_at.is_some());
}

pub async fn claim_runs_one_job_per_workspace(t: TestStore) {
    let s = t.store.as_ref();
    for _ in 0..5 {
        put(s, job("t1", Some("w/a"))).await;
        put(s, job("t1", Some("w/b"))).await;
    }
    let first = claim(s, "n1", 100).await;
    assert_eq!(first.len(), 2, "one head per workspace");
    let workspaces: HashSet<_> = first.iter().map(|j| j.workspace.clone()).collect();
    assert_eq!(workspaces.len(), 2);
    assert!(
        claim(s, "n2", 100).await.is_empty(),
        "both workspaces are busy"
    );
}

pub async fn database_refuses_a_second_running_job_in_a_workspace(t: TestStore) {
    let s = t.store.as_ref();
    put(s, job("t1", Some("w/a"))).await;
    let second = put(s, job("t1", Some("w/a"))).await;
    assert_eq!(claim(s, "n1", 10).await.len(), 1);
    // Bypass the store's claim query: the partial unique index itself must refuse.
    let err = raw(
        &t.url,
        "UPDATE jobs SET state = 'running' WHERE id = ?",
        "UPDATE jobs SET state = 'running' WHERE id = $1::uuid",
        &second.id.to_string(),
    )
    .await
    .expect_err("a second running job in one workspace must be refused");
    let text = err.to_string().to_lowercase();
    assert!(text.contains("unique"), "unexpected error: {text}");
}

pub async fn claim_waits_for_run_after(t: TestStore) {
    let s = t.store.as_ref();
    let mut later = job("t1", Some("w/a"));
    later.run_after = Utc::now() + chrono::Duration::hours(1);
    let later = put(s, later).await;
    let behind = put(s, job("t1", Some("w/a"))).await;
    // The head waits, and FIFO keeps the next job of its workspace behind it: in a small claim
    // (PostgreSQL: the window of the oldest queued jobs) and in a large one (the walk over
    // every workspace).
    assert!(claim(s, "n1", 10).await.is_empty());
    assert!(claim(s, "n1", 512).await.is_empty());
    let claimed = s
        .claim("n1", 10, Utc::now() + chrono::Duration::hours(2), LEASE)
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![later.id]
    );
    assert_eq!(
        s.job(None, behind.id).await.unwrap().unwrap().state,
        JobState::Queued
    );
}

pub async fn complete_writes_outcomes_and_ignores_foreign_leases(t: TestStore) {
    let s = t.store.as_ref();
    let a = put(s, job("t1", None)).await;
    let b = put(s, job("t1", None)).await;
    let c = put(s, job("t1", None)).await;
    assert_eq!(claim(s, "n1", 10).await.len(), 3);
    let done = s
        .complete(
            "n1",
            &[
                ok(a.id),
                Completion {
                    id: b.id,
                    finish: Finish::Failed {
                        error: JobError::new(ErrorReason::Timeout, "timed out").with_field("x"),
                        result: Some(json!({"timed_out": true})),
                        exit_code: None,
                    },
                },
                Completion {
                    id: c.id,
                    finish: Finish::Cancelled {
                        result: None,
                        exit_code: Some(137),
                    },
                },
            ],
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 3);
    let a = s.job(None, a.id).await.unwrap().unwrap();
    assert_eq!(a.state, JobState::Succeeded);
    assert_eq!(a.result, Some(json!({"ok": true})));
    assert_eq!(a.exit_code, Some(0));
    assert!(a.finished_at.is_some());
    assert!(a.lease_owner.is_none());
    let b = s.job(None, b.id).await.unwrap().unwrap();
    assert_eq!(b.state, JobState::Failed);
    assert_eq!(b.error.as_ref().unwrap().reason, ErrorReason::Timeout);
    assert_eq!(b.error.as_ref().unwrap().field.as_deref(), Some("x"));
    assert_eq!(b.result, Some(json!({"timed_out": true})));
    let c = s.job(None, c.id).await.unwrap().unwrap();
    assert_eq!(c.state, JobState::Cancelled);
    assert_eq!(c.exit_code, Some(137));
    assert_eq!(c.error.unwrap().reason, ErrorReason::Cancelled);

    // A node that no longer holds the lease cannot overwrite anything.
    let d = put(s, job("t1", None)).await;
    claim(s, "n1", 1).await;
    let written = s.complete("n2", &[ok(d.id)], Utc::now()).await.unwrap();
    assert!(written.is_empty());
    assert_eq!(
        s.job(None, d.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    // Completing a finished job again changes nothing.
    assert!(
        s.complete("n1", &[ok(a.id)], Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
}

/// What `complete` returns, put over the jobs as their claim returned them, is exactly what the
/// store then holds, for every kind of finish: after heartbeats moved the leases, after a cancel
/// request, with a NUL in the outcome (stored as U+FFFD) and for a retry.
pub async fn a_completion_returns_what_the_store_holds(t: TestStore) {
    let s = t.store.as_ref();
    for i in 0..5 {
        let mut j = job("t1", Some(&format!("t1/w{i}")));
        j.request_id = Some(format!("req-{i}"));
        j.retry_safe = true;
        j.max_attempts = 3;
        put(s, j).await;
    }
    let claimed = claim(s, "n1", 10).await;
    assert_eq!(claimed.len(), 5);
    let ids: Vec<Uuid> = claimed.iter().map(|j| j.id).collect();
    let later = Utc::now() + chrono::Duration::seconds(30);
    assert!(
        s.heartbeat("n1", &ids, later, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        s.cancel("t1", ids[3], Utc::now()).await.unwrap(),
        Some(CancelOutcome::Requested(_))
    ));
    let retry_at = Utc::now() + chrono::Duration::seconds(90);
    let finishes = [
        Finish::Succeeded {
            result: json!({"stdout": "a\0b", "k\0": [1.5, "\0"], "n": null}),
            exit_code: Some(0),
        },
        Finish::Succeeded {
            result: json!([]),
            exit_code: None,
        },
        Finish::Failed {
            error: JobError::new(ErrorReason::Timeout, "timed out").with_field("timeout_s"),
            result: Some(json!({"stdout": "partial"})),
            exit_code: Some(124),
        },
        Finish::Cancelled {
            result: Some(json!({"stderr": "killed"})),
            exit_code: Some(137),
        },
        Finish::Retry {
            error: JobError::new(ErrorReason::DriverUnavailable, "cli down"),
            run_after: retry_at,
        },
    ];
    let completions: Vec<Completion> = ids
        .iter()
        .zip(finishes)
        .map(|(&id, finish)| Completion { id, finish })
        .collect();
    let written = s.complete("n1", &completions, Utc::now()).await.unwrap();
    assert_eq!(written.len(), 5);
    for w in written {
        let before = claimed.iter().find(|j| j.id == w.id).unwrap().clone();
        let stored = s.job(None, w.id).await.unwrap().unwrap();
        assert_eq!(w.apply(before), stored);
    }
    // PostgreSQL keeps a NUL as U+FFFD: the returned outcome is the stored one, not the sent one.
    let nul = if s.backend() == Backend::Postgres {
        "\u{fffd}"
    } else {
        "\0"
    };
    let stored = s.job(None, ids[0]).await.unwrap().unwrap();
    assert_eq!(
        stored.result,
        Some(json!({"stdout": format!("a{nul}b"), format!("k{nul}"): [1.5, nul], "n": null}))
    );
    assert!(s.job(None, ids[3]).await.unwrap().unwrap().cancel_requested);
    let retried = s.job(None, ids[4]).await.unwrap().unwrap();
    assert_eq!(retried.state, JobState::Queued);
    assert!(retried.run_after > Utc::now());
}

pub async fn retry_requeues_for_later(t: TestStore) {
    let s = t.store.as_ref();
    let a = put(s, job("t1", Some("w/a"))).await;
    claim(s, "n1", 1).await;
    let when = Utc::now() + chrono::Duration::minutes(5);
    let written = s
        .complete(
            "n1",
            &[Completion {
                id: a.id,
                finish: Finish::Retry {
                    error: JobError::new(ErrorReason::DriverUnavailable, "cli down"),
                    run_after: when,
                },
            }],
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(written[0].state, JobState::Queued);
    let a = s.job(None, a.id).await.unwrap().unwrap();
    assert_eq!(a.state, JobState::Queued);
    assert_eq!(a.attempts, 1);
    assert!(a.lease_owner.is_none());
    assert_eq!(a.error.unwrap().reason, ErrorReason::DriverUnavailable);
    assert!((a.run_after - when).num_milliseconds().abs() < 2);
    assert!(claim(s, "n1", 1).await.is_empty());
    let again = s
        .claim("n1", 1, when + chrono::Duration::seconds(1), LEASE)
        .await
        .unwrap();
    assert_eq!(again[0].attempts, 2);
}

pub async fn cancel_queued_running_and_finished(t: TestStore) {
    let s = t.store.as_ref();
    let running = put(s, job("t1", Some("w/a"))).await;
    let queued = put(s, job("t1", Some("w/a"))).await;
    claim(s, "n1", 10).await;
    assert!(
        s.cancel("t2", queued.id, Utc::now())
            .await
            .unwrap()
            .is_none(),
        "other tenant"
    );
    match s
        .cancel("t1", queued.id, Utc::now())
        .await
        .unwrap()
        .unwrap()
    {
        CancelOutcome::Cancelled(j) => {
            assert_eq!(j.state, JobState::Cancelled);
            assert!(j.finished_at.is_some());
        }
        other => panic!("unexpected {other:?}"),
    }
    match s
        .cancel("t1", running.id, Utc::now())
        .await
        .unwrap()
        .unwrap()
    {
        CancelOutcome::Requested(j) => {
            assert_eq!(j.state, JobState::Running);
            assert!(j.cancel_requested);
        }
        other => panic!("unexpected {other:?}"),
    }
    s.complete(
        "n1",
        &[Completion {
            id: running.id,
            finish: Finish::Cancelled {
                result: None,
                exit_code: None,
            },
        }],
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(matches!(
        s.cancel("t1", running.id, Utc::now()).await.unwrap().unwrap(),
        CancelOutcome::AlreadyFinished(j) if j.state == JobState::Cancelled
    ));
}

pub async fn heartbeat_extends_leases_and_reports_cancels(t: TestStore) {
    let s = t.store.as_ref();
    let a = put(s, job("t1", None)).await;
    let b = put(s, job("t1", None)).await;
    let now = Utc::now();
    s.claim("n1", 10, now, Duration::from_secs(5))
        .await
        .unwrap();
    s.cancel("t1", b.id, now).await.unwrap();
    let later = now + chrono::Duration::seconds(3);
    let cancelled = s
        .heartbeat("n1", &[a.id, b.id], later, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cancelled, vec![b.id]);
    let a = s.job(None, a.id).await.unwrap().unwrap();
    assert!(a.lease_expires_at.unwrap() > later + chrono::Duration::seconds(50));
    // Another node's heartbeat does not touch our leases.
    let before = s.job(None, b.id).await.unwrap().unwrap().lease_expires_at;
    s.heartbeat("n2", &[b.id], later, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(
        s.job(None, b.id).await.unwrap().unwrap().lease_expires_at,
        before
    );
    assert!(
        s.heartbeat("n1", &[], later, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn rescue_resolves_only_expired_leases(t: TestStore) {
    let s = t.store.as_ref();
    let now: DateTime<Utc> = Utc::now();
    let mut safe = job("t1", Some("w/a"));
    safe.retry_safe = true;
    safe.max_attempts = 3;
    let safe = put(s, safe).await;
    let unsafe_exec = put(s, job("t1", Some("w/b"))).await;
    let mut exhausted = job("t1", Some("w/c"));
    exhausted.retry_safe = true;
    exhausted.max_attempts = 1;
    let exhausted = put(s, exhausted).await;
    // Claimed with a short lease: expired at `now + 10s`.
    s.claim("dead", 10, now, Duration::from_secs(5))
        .await
        .unwrap();
    // A job on the living side of the horizon.
    let alive = put(s, job("t1", Some("w/d"))).await;
    s.claim("alive", 10, now, Duration::from_secs(3600))
        .await
        .unwrap();

    let horizon = now + chrono::Duration::seconds(10);
    let mut rescued = s.rescue_expired(horizon).await.unwrap();
    rescued.sort_by_key(|r| r.id);
    let by_id = |id| rescued.iter().find(|r| r.id == id).map(|r| r.state);
    assert_eq!(rescued.len(), 3);
    assert_eq!(by_id(safe.id), Some(JobState::Queued));
    assert_eq!(by_id(unsafe_exec.id), Some(JobState::Failed));
    assert_eq!(by_id(exhausted.id), Some(JobState::Failed));
    let failed = s.job(None, unsafe_exec.id).await.unwrap().unwrap();
    assert_eq!(failed.error.unwrap().reason, ErrorReason::Interrupted);
    assert!(failed.finished_at.is_some());
    let requeued = s.job(None, safe.id).await.unwrap().unwrap();
    assert!(requeued.lease_owner.is_none());
    assert_eq!(
        s.job(None, alive.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    // The re-queued job runs again, as attempt two.
    let again = s.claim("n2", 10, horizon, LEASE).await.unwrap();
    assert_eq!(
        again.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
        vec![(safe.id, 2)]
    );
    assert!(s.rescue_expired(horizon).await.unwrap().is_empty());
}

pub async fn recover_node_resolves_only_that_nodes_jobs(t: TestStore) {
    let s = t.store.as_ref();
    let mine = put(s, job("t1", None)).await;
    s.claim("me", 1, Utc::now(), LEASE).await.unwrap();
    let theirs = put(s, job("t1", None)).await;
    s.claim("them", 1, Utc::now(), LEASE).await.unwrap();
    let rescued = s.recover_node("me", Utc::now()).await.unwrap();
    assert_eq!(
        rescued.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![mine.id]
    );
    assert_eq!(
        s.job(None, mine.id).await.unwrap().unwrap().state,
        JobState::Failed
    );
    assert_eq!(
        s.job(None, theirs.id).await.unwrap().unwrap().state,
        JobState::Running
    );
}

/// A listing read page by page (`limit` jobs each, the last job's `seq` as the next cursor)
/// until a page is short: one tenant's jobs, or with `None` every tenant's.
async fn every_page(s: &dyn Store, tenant: Option<&str>, limit: u32) -> Vec<Job> {
    let (mut all, mut cursor) = (Vec::new(), None);
    loop {
        let page = s
            .list_jobs(&JobFilter {
                tenant: tenant.map(str::to_string),
                before_seq: cursor,
                limit,
                ..JobFilter::default()
            })
            .await
            .unwrap();
        cursor = page.last().map(|j| j.seq);
        let full = page.len() == limit as usize;
        all.extend(page);
        if !full {
            return all;
        }
    }
}

pub async fn list_jobs_filters_and_pages(t: TestStore) {
    let s = t.store.as_ref();
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut j = job("t1", Some(if i % 2 == 0 { "t1/even" } else { "t1/odd" }));
        j.tool = if i < 3 {
            "create_sandbox".into()
        } else {
            "execute_shell".into()
        };
        ids.push(put(s, j).await.id);
    }
    put(s, job("t2", Some("t2/x"))).await;
    let page = |before_seq, limit| JobFilter {
        tenant: Some("t1".into()),
        before_seq,
        limit,
        ..JobFilter::default()
    };
    let first = s.list_jobs(&page(None, 4)).await.unwrap();
    assert_eq!(
        first.iter().map(|j| j.id).collect::<Vec<_>>(),
        ids[3..].iter().rev().copied().collect::<Vec<_>>()
    );
    let second = s
        .list_jobs(&page(Some(first.last().unwrap().seq), 4))
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|j| j.id).collect::<Vec<_>>(),
        ids[..3].iter().rev().copied().collect::<Vec<_>>()
    );
    let even = s
        .list_jobs(&JobFilter {
            tenant: Some("t1".into()),
            workspace: Some("t1/even".into()),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(even.len(), 4);
    let creates = s
        .list_jobs(&JobFilter {
            tenant: Some("t1".into()),
            tool: Some("create_sandbox".into()),
            state: Some(JobState::Queued),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(creates.len(), 3);
    assert!(s.has_open_job("t1/even", "create_sandbox").await.unwrap());
    assert!(!s.has_open_job("t1/none", "create_sandbox").await.unwrap());

    // Every tenant's jobs (an admin's listing), interleaved across tenants, newest first and
    // paged by `seq` like one tenant's (PostgreSQL merges them per tenant).
    for i in 0..5 {
        put(s, job(["t3", "t2", "t4"][i % 3], None)).await;
    }
    let everyone = every_page(s, None, 3).await;
    assert_eq!(everyone.len(), 13);
    assert!(everyone.windows(2).all(|w| w[0].seq > w[1].seq));
    assert_eq!(everyone.last().unwrap().id, ids[0]);
    let queued_elsewhere = s
        .list_jobs(&JobFilter {
            tool: Some("execute_shell".into()),
            before_seq: Some(everyone[1].seq),
            limit: 4,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let expected: Vec<Uuid> = everyone[2..]
        .iter()
        .filter(|j| j.tool == "execute_shell")
        .take(4)
        .map(|j| j.id)
        .collect();
    assert_eq!(
        queued_elsewhere.iter().map(|j| j.id).collect::<Vec<_>>(),
        expected
    );

    // Running jobs are listed in their place, with and without filters (PostgreSQL keeps them
    // out of its history indexes and reads them from the running index).
    let running: Vec<Uuid> = claim(s, "n1", 3).await.iter().map(|j| j.id).collect();
    assert_eq!(running.len(), 3);
    assert!(
        running.contains(&ids[0]),
        "the oldest job of `t1/even` runs"
    );
    let ids_of = |jobs: Vec<Job>| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    let listed = |tenant: Option<&str>, workspace: Option<&str>, state: Option<JobState>| {
        let filter = JobFilter {
            tenant: tenant.map(str::to_string),
            workspace: workspace.map(str::to_string),
            state,
            limit: 100,
            ..JobFilter::default()
        };
        async move { ids_of(s.list_jobs(&filter).await.unwrap()) }
    };
    let all_t1 = listed(Some("t1"), None, None).await;
    assert_eq!(all_t1, ids.iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(listed(None, None, None).await, ids_of(everyone.clone()));
    let mut running_listed = listed(None, None, Some(JobState::Running)).await;
    running_listed.sort();
    let mut running_sorted = running.clone();
    running_sorted.sort();
    assert_eq!(running_listed, running_sorted);
    let even_running = listed(Some("t1"), Some("t1/even"), Some(JobState::Running)).await;
    assert_eq!(even_running, vec![ids[0]]);
    let even_now = listed(Some("t1"), Some("t1/even"), None).await;
    assert_eq!(
        even_now.len(),
        4,
        "a running job is still its workspace's job"
    );
    assert_eq!(*even_now.last().unwrap(), ids[0]);
    let queued_t1 = listed(Some("t1"), None, Some(JobState::Queued)).await;
    assert!(queued_t1.iter().all(|id| !running.contains(id)));
    let t1_running = running.iter().filter(|id| ids.contains(id)).count();
    assert_eq!(queued_t1.len() + t1_running, 7);
    // An open job is queued or running: `t1/even`'s create_sandbox job runs.
    assert!(s.has_open_job("t1/even", "create_sandbox").await.unwrap());
    let running_page = s
        .list_jobs(&JobFilter {
            before_seq: Some(everyone[0].seq),
            limit: 2,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids_of(running_page), ids_of(everyone[1..3].to_vec()));

    // Finished, queued and running jobs together (PostgreSQL reads each state from its own
    // indexes): the same jobs in the same order, whole or paged, and each state filter exactly
    // its jobs.
    let done: Vec<Completion> = running.iter().map(|id| ok(*id)).collect();
    s.complete("n1", &done, Utc::now()).await.unwrap();
    let now_running: Vec<Uuid> = claim(s, "n1", 2).await.iter().map(|j| j.id).collect();
    assert_eq!(now_running.len(), 2);
    assert_eq!(listed(Some("t1"), None, None).await, all_t1);
    assert_eq!(listed(None, None, None).await, ids_of(everyone.clone()));
    assert_eq!(ids_of(every_page(s, Some("t1"), 2).await), all_t1);
    assert_eq!(
        ids_of(every_page(s, None, 2).await),
        ids_of(everyone.clone())
    );
    let (finished, now_running) = (&running, &now_running);
    let in_state = |state: JobState| {
        everyone
            .iter()
            .map(|j| j.id)
            .filter(move |id| match state {
                JobState::Succeeded => finished.contains(id),
                JobState::Running => now_running.contains(id),
                _ => !finished.contains(id) && !now_running.contains(id),
            })
            .collect::<Vec<_>>()
    };
    for state in [JobState::Succeeded, JobState::Running, JobState::Queued] {
        assert_eq!(
            listed(None, None, Some(state)).await,
            in_state(state),
            "{state:?}"
        );
        let t1: Vec<Uuid> = in_state(state)
            .into_iter()
            .filter(|id| ids.contains(id))
            .collect();
        assert_eq!(listed(Some("t1"), None, Some(state)).await, t1, "{state:?}");
    }
    assert!(listed(None, None, Some(JobState::Failed)).await.is_empty());
    let even = listed(Some("t1"), Some("t1/even"), None).await;
    assert_eq!(even.len(), 4, "the workspace's jobs in every state");
    assert_eq!(*even.last().unwrap(), ids[0]);
    assert_eq!(
        listed(Some("t1"), Some("t1/even"), Some(JobState::Succeeded)).await,
        vec![ids[0]]
    );
}

pub async fn output_is_replayed_in_order(t: TestStore) {
    let s = t.store.as_ref();
    let id = Uuid::now_v7();
    let chunk = |seq, stream, data: &[u8]| OutputChunk {
        job_id: id,
        seq,
        stream,
        data: data.to_vec(),
        at: Utc::now(),
    };
    s.append_output(&[
        chunk(1, Stream::Stdout, b"hello "),
        chunk(2, Stream::Stderr, &[0, 255, 10]),
    ])
    .await
    .unwrap();
    s.append_output(&[chunk(3, Stream::Stdout, b"world")])
        .await
        .unwrap();
    // A repeated chunk (a retried flush) is ignored.
    s.append_output(&[chunk(3, Stream::Stdout, b"again")])
        .await
        .unwrap();
    let all = s.output(id, 0).await.unwrap();
    assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(all[1].data, vec![0, 255, 10]);
    assert_eq!(all[1].stream, Stream::Stderr);
    assert_eq!(all[2].data, b"world");
    assert_eq!(s.output(id, 2).await.unwrap().len(), 1);
}

fn sandbox(tenant: &str, id: &str, name: &str) -> SandboxRecord {
    SandboxRecord {
        id: id.into(),
        tenant: tenant.into(),
        name: name.into(),
        driver: "local".into(),
        language: "python".into(),
        status: "running".into(),
        image: None,
        git_repo: None,
        git_branch: None,
        environment_vars: BTreeMap::from([("K".into(), "v".into())]),
        labels: BTreeMap::from([("team".into(), "ml".into())]),
        resources: json!({"cpu": 1.0}),
        persistent: false,
        auto_stop_minutes: Some(15),
        created_at: Utc::now(),
        last_accessed: Utc::now(),
        network: false,
        git_token: None,
        creating_job: None,
        handle: None,
        node: None,
    }
}

/// The driver's handle is kept beside our id: inserted, set later, read back, and never a way
/// to find the sandbox (callers know only our id and the name).
pub async fn sandboxes_keep_the_drivers_handle(t: TestStore) {
    let s = t.store.as_ref();
    let mut a = sandbox("t1", "sb-h1", "with-handle");
    a.driver = "daytona".into();
    a.handle = Some("8f4e2c1a-daytona-id".into());
    s.insert_sandbox(&a).await.unwrap();
    let b = sandbox("t1", "sb-h2", "later-handle");
    s.insert_sandbox(&b).await.unwrap();

    let read = s.sandbox("t1", "sb-h1").await.unwrap().unwrap();
    assert_eq!(read.driver, "daytona");
    assert_eq!(read.handle.as_deref(), Some("8f4e2c1a-daytona-id"));
    assert_eq!(read.driver_handle(), "8f4e2c1a-daytona-id");

    let before = s.sandbox("t1", "later-handle").await.unwrap().unwrap();
    assert_eq!(before.handle, None);
    assert_eq!(
        before.driver_handle(),
        "sb-h2",
        "no handle: the id is the handle"
    );
    s.set_sandbox_handle("sb-h2", "abc-123").await.unwrap();
    let after = s.sandbox("t1", "sb-h2").await.unwrap().unwrap();
    assert_eq!(after.handle.as_deref(), Some("abc-123"));
    assert_eq!(after.id, "sb-h2", "our id is unchanged");
    assert!(
        s.sandbox("t1", "abc-123").await.unwrap().is_none(),
        "a handle is not a caller's reference"
    );
    let listed = s
        .list_sandboxes(&SandboxFilter {
            tenant: "t1".into(),
            ..SandboxFilter::default()
        })
        .await
        .unwrap();
    let handles: Vec<Option<&str>> = listed.iter().map(|r| r.handle.as_deref()).collect();
    assert_eq!(handles, [Some("8f4e2c1a-daytona-id"), Some("abc-123")]);
}

pub async fn sandboxes_are_per_tenant(t: TestStore) {
    let s = t.store.as_ref();
    let a = sandbox("t1", "sb-1", "alpha");
    s.insert_sandbox(&a).await.unwrap();
    assert!(matches!(
        s.insert_sandbox(&sandbox("t1", "sb-2", "alpha")).await,
        Err(StoreError::Conflict(_))
    ));
    s.insert_sandbox(&sandbox("t2", "sb-3", "alpha"))
        .await
        .unwrap();
    let mut other = sandbox("t1", "sb-4", "beta");
    other.labels = BTreeMap::from([("team".into(), "web".into())]);
    other.status = "stopped".into();
    other.network = true;
    other.git_token = Some(Secret::new("ghp_secret"));
    s.insert_sandbox(&other).await.unwrap();
    let beta = s.sandbox("t1", "beta").await.unwrap().unwrap();
    assert!(beta.network);
    assert_eq!(
        beta.git_token.as_ref().map(Secret::expose),
        Some("ghp_secret")
    );
    assert!(
        !format!("{beta:?}").contains("ghp_secret"),
        "Debug shows the token"
    );

    let by_id = s.sandbox("t1", "sb-1").await.unwrap().unwrap();
    assert_eq!(by_id.name, "alpha");
    assert_eq!(by_id.environment_vars["K"], "v");
    assert_eq!(by_id.resources, json!({"cpu": 1.0}));
    assert_eq!(by_id.auto_stop_minutes, Some(15));
    assert!(!by_id.network);
    assert!(by_id.git_token.is_none());
    assert_eq!(s.sandbox("t1", "alpha").await.unwrap().unwrap().id, "sb-1");
    assert_eq!(s.sandbox("t2", "alpha").await.unwrap().unwrap().id, "sb-3");
    assert!(
        s.sandbox("t2", "sb-1").await.unwrap().is_none(),
        "other tenant's id"
    );

    let list = |labels: &[(&str, &str)], status: Option<&str>| SandboxFilter {
        tenant: "t1".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        status: status.map(str::to_string),
    };
    assert_eq!(s.list_sandboxes(&list(&[], None)).await.unwrap().len(), 2);
    let ml = s
        .list_sandboxes(&list(&[("team", "ml")], None))
        .await
        .unwrap();
    assert_eq!(
        ml.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["sb-1"]
    );
    let stopped = s.list_sandboxes(&list(&[], Some("stopped"))).await.unwrap();
    assert_eq!(
        stopped.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["sb-4"]
    );

    let later = Utc::now() + chrono::Duration::minutes(1);
    s.touch_sandbox("sb-1", later).await.unwrap();
    s.touch_sandbox("sb-1", Utc::now()).await.unwrap();
    let touched = s.sandbox("t1", "sb-1").await.unwrap().unwrap();
    assert_eq!(
        touched.last_accessed.timestamp_millis(),
        later.timestamp_millis()
    );
    s.set_sandbox_status("sb-1", "deleting").await.unwrap();
    assert_eq!(
        s.sandbox("t1", "sb-1").await.unwrap().unwrap().status,
        "deleting"
    );

    let counts = s.sandbox_counts().await.unwrap();
    let total: i64 = counts.iter().map(|c| c.count).sum();
    assert_eq!(total, 3);
    assert!(s.delete_sandbox("sb-1").await.unwrap());
    assert!(!s.delete_sandbox("sb-1").await.unwrap());
    assert!(s.sandbox("t1", "alpha").await.unwrap().is_none());
}

pub async fn audit_log_filters_and_is_append_only(t: TestStore) {
    let s = t.store.as_ref();
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    for (i, tenant) in ["t1", "t1", "t2"].iter().enumerate() {
        let mut e = Caller {
            tenant: tenant.to_string(),
            key_id: Some(format!("k{i}")),
            request_id: Some(format!("r{i}")),
            address: Some("127.0.0.1".into()),
            ..Caller::default()
        }
        .entry(
            if i == 1 {
                "delete_sandbox"
            } else {
                "execute_shell"
            },
            Some(format!("{tenant}/w")),
            Some(Uuid::now_v7()),
            "accepted",
            Some(&json!({"command": "secret"})),
        );
        e.at = t0 + chrono::Duration::minutes(i as i64);
        s.append_audit(&e).await.unwrap();
    }
    let all = s
        .list_audit(&AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert!(!serde_json::to_string(&all).unwrap().contains("secret"));
    let filtered = s
        .list_audit(&AuditFilter {
            tenant: Some("t1".into()),
            action: Some("delete_sandbox".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].entry.key_id.as_deref(), Some("k1"));
    let since = s
        .list_audit(&AuditFilter {
            since: Some(t0 + chrono::Duration::seconds(30)),
            until: Some(t0 + chrono::Duration::seconds(90)),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(since.len(), 1);
    let page = s
        .list_audit(&AuditFilter {
            after_id: Some(all[0].id),
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page[0].id, all[1].id);
    // The database itself refuses edits.
    let id = all[0].id.to_string();
    assert!(
        raw(
            &t.url,
            "UPDATE audit_log SET outcome = 'x' WHERE id = CAST(? AS INTEGER)",
            "UPDATE audit_log SET outcome = 'x' WHERE id = $1::bigint",
            &id
        )
        .await
        .is_err()
    );
    assert!(
        raw(
            &t.url,
            "DELETE FROM audit_log WHERE id = CAST(? AS INTEGER)",
            "DELETE FROM audit_log WHERE id = $1::bigint",
            &id
        )
        .await
        .is_err()
    );
}

/// Appends an audit row dated `age` ago and returns its `action` (unique).
async fn audit_at(s: &dyn Store, age: chrono::Duration) -> String {
    let action = format!("act-{}", Uuid::new_v4().simple());
    let mut e = Caller::internal("t1").entry(&action, None, None, "accepted", None);
    e.at = Utc::now() - age;
    s.append_audit(&e).await.unwrap();
    action
}

async fn audit_actions(s: &dyn Store) -> Vec<String> {
    s.list_audit(&AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    })
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.entry.action)
    .collect()
}

pub async fn audit_prune_is_the_only_way_rows_leave(t: TestStore) {
    let s = t.store.as_ref();
    let days = chrono::Duration::days;
    let ancient = audit_at(s, days(30)).await;
    let old = audit_at(s, days(10)).await;
    let recent = audit_at(s, days(5)).await;
    let fresh = audit_at(s, chrono::Duration::minutes(1)).await;
    assert_eq!(s.prune_audit(Utc::now() - days(7)).await.unwrap(), 2);
    assert_eq!(audit_actions(s).await, [recent.clone(), fresh.clone()]);
    assert_eq!(s.prune_audit(Utc::now() - days(7)).await.unwrap(), 0);
    // Outside the prune, the database still refuses every delete and update, even of a row
    // older than the horizon the last prune used.
    let older = audit_at(s, days(20)).await;
    for action in [&older, &recent] {
        assert!(
            raw(
                &t.url,
                "DELETE FROM audit_log WHERE action = ?",
                "DELETE FROM audit_log WHERE action = $1",
                action
            )
            .await
            .is_err(),
            "a plain DELETE went through"
        );
        assert!(
            raw(
                &t.url,
                "UPDATE audit_log SET at = 0 WHERE action = ?",
                "UPDATE audit_log SET at = now() - interval '1 year' WHERE action = $1",
                action
            )
            .await
            .is_err(),
            "an UPDATE went through"
        );
    }
    if !t.url.starts_with("sqlite") {
        // TRUNCATE fires no row trigger; it is refused on its own.
        let mut conn = sqlx::PgConnection::connect(&t.url).await.unwrap();
        assert!(
            sqlx::query("TRUNCATE audit_log")
                .execute(&mut conn)
                .await
                .is_err()
        );
    }
    assert_eq!(audit_actions(s).await, [recent, fresh, older.clone()]);
    assert!(!audit_actions(s).await.contains(&ancient));
    assert!(!audit_actions(s).await.contains(&old));
    assert_eq!(s.prune_audit(Utc::now() - days(7)).await.unwrap(), 1);
    assert!(!audit_actions(s).await.contains(&older));
}

pub async fn prune_deletes_old_finished_jobs(t: TestStore) {
    let s = t.store.as_ref();
    let old = put(s, job("t1", None)).await;
    let open = put(s, job("t1", Some("w/a"))).await;
    claim(s, "n1", 1).await;
    s.complete("n1", &[ok(old.id)], Utc::now()).await.unwrap();
    s.append_output(&[OutputChunk {
        job_id: old.id,
        seq: 1,
        stream: Stream::Stdout,
        data: b"x".to_vec(),
        at: Utc::now(),
    }])
    .await
    .unwrap();
    assert_eq!(
        s.prune(Utc::now() - chrono::Duration::hours(1), 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.prune(Utc::now() + chrono::Duration::seconds(1), 100)
            .await
            .unwrap(),
        1
    );
    assert!(s.job(None, old.id).await.unwrap().is_none());
    assert!(s.output(old.id, 0).await.unwrap().is_empty());
    assert!(
        s.job(None, open.id).await.unwrap().is_some(),
        "unfinished jobs stay"
    );
}

pub async fn concurrent_claimers_never_share_a_job_or_a_workspace(t: TestStore) {
    let s = t.store.clone();
    let mut jobs = Vec::new();
    for i in 0..120 {
        let ws = format!("w/{}", i % 6);
        let mut j = job("t1", if i % 4 == 0 { None } else { Some(ws.as_str()) });
        j.tool = format!("tool{i}");
        jobs.push(j);
    }
    s.enqueue_many(jobs).await.unwrap();
    let mut tasks = Vec::new();
    for node in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("n{node}");
            let mut seen = Vec::new();
            for _ in 0..400 {
                let claimed = s.claim(&node, 3, Utc::now(), LEASE).await.unwrap();
                if claimed.is_empty() {
                    let counts = s.job_counts().await.unwrap();
                    let open: i64 = counts
                        .iter()
                        .filter(|c| !c.state.is_terminal())
                        .map(|c| c.count)
                        .sum();
                    if open == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                // While these run, no other job of their workspaces may be running.
                for j in &claimed {
                    if let Some(ws) = &j.workspace {
                        let running = s
                            .list_jobs(&JobFilter {
                                workspace: Some(ws.clone()),
                                state: Some(JobState::Running),
                                limit: 10,
                                ..JobFilter::default()
                            })
                            .await
                            .unwrap();
                        assert_eq!(running.len(), 1, "two running jobs in {ws}");
                    }
                }
                let done: Vec<Completion> = claimed.iter().map(|j| ok(j.id)).collect();
                s.complete(&node, &done, Utc::now()).await.unwrap();
                seen.extend(claimed.into_iter().map(|j| j.id));
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 120, "every job claimed");
    assert_eq!(unique.len(), 120, "no job claimed twice");
}

pub async fn enqueue_many_and_counts(t: TestStore) {
    let s = t.store.as_ref();
    s.enqueue_many((0..25).map(|_| job("t1", None)).collect())
        .await
        .unwrap();
    let claimed = claim(s, "n1", 10).await;
    s.complete(
        "n1",
        &claimed[..4].iter().map(|j| ok(j.id)).collect::<Vec<_>>(),
        Utc::now(),
    )
    .await
    .unwrap();
    let counts = s.job_counts().await.unwrap();
    let count = |state| {
        counts
            .iter()
            .find(|c| c.state == state)
            .map_or(0, |c| c.count)
    };
    assert_eq!(count(JobState::Queued), 15);
    assert_eq!(count(JobState::Running), 6);
    assert_eq!(count(JobState::Succeeded), 4);
    assert_eq!(count(JobState::Failed), 0);
}

/// A `create_sandbox` job that inserts its sandbox row (`name`, status `creating`).
fn creating(tenant: &str, name: &str) -> NewJob {
    let mut j = job(tenant, Some(&format!("{tenant}/{name}")));
    j.tool = "create_sandbox".into();
    let mut row = sandbox(tenant, &format!("sb-{}", Uuid::new_v4().simple()), name);
    row.status = CREATING.into();
    row.environment_vars = BTreeMap::from([("SECRET".into(), "value".into())]);
    j.sandbox = Some(row);
    j
}

async fn audit_rows(s: &dyn Store) -> usize {
    s.list_audit(&AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    })
    .await
    .unwrap()
    .len()
}

pub async fn enqueue_inserts_the_jobs_sandbox_in_the_same_transaction(t: TestStore) {
    let s = t.store.as_ref();
    let mut first = creating("t1", "box");
    first.idempotency_key = Some("create-box".into());
    let first_row = first.sandbox.clone().unwrap();
    let enqueued = s.enqueue(first, audit("t1")).await.unwrap();
    assert!(enqueued.created);
    let row = s.sandbox("t1", "box").await.unwrap().unwrap();
    assert_eq!(row.id, first_row.id);
    assert_eq!(row.status, CREATING);
    assert_eq!(row.creating_job, Some(enqueued.job.id));
    assert_eq!(row.environment_vars["SECRET"], "value");

    // A replay returns the first job and inserts no sandbox, even one with another name.
    let mut replay = creating("t1", "other-name");
    replay.idempotency_key = Some("create-box".into());
    let replayed = s.enqueue(replay, audit("t1")).await.unwrap();
    assert!(!replayed.created);
    assert_eq!(replayed.job.id, enqueued.job.id);
    assert!(s.sandbox("t1", "other-name").await.unwrap().is_none());

    // A taken name refuses the whole enqueue: no job, no audit row, no second sandbox.
    let audits = audit_rows(s).await;
    let clash = creating("t1", "box");
    let clash_id = clash.id;
    let err = s.enqueue(clash, audit("t1")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(s.job(None, clash_id).await.unwrap().is_none());
    assert_eq!(audit_rows(s).await, audits);
    assert_eq!(
        s.list_sandboxes(&SandboxFilter {
            tenant: "t1".into(),
            ..SandboxFilter::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );
    // Another tenant may use the name; a plain insert records no creating job.
    s.enqueue(creating("t2", "box"), audit("t2")).await.unwrap();
    s.insert_sandbox(&sandbox("t1", "sb-plain", "plain"))
        .await
        .unwrap();
    assert_eq!(
        s.sandbox("t1", "plain")
            .await
            .unwrap()
            .unwrap()
            .creating_job,
        None
    );
}

pub async fn a_reserved_sandbox_goes_when_its_job_fails_or_is_cancelled(t: TestStore) {
    let s = t.store.as_ref();
    let exists = |name: &'static str| async move { s.sandbox("t1", name).await.unwrap().is_some() };

    // Cancelled while queued.
    let queued = put(s, creating("t1", "cancelled")).await;
    s.cancel("t1", queued.id, Utc::now()).await.unwrap();
    assert!(!exists("cancelled").await);

    // Failed, retried, succeeded, or failed after the sandbox was made usable.
    let failing = put(s, creating("t1", "failing")).await;
    let retried = put(s, creating("t1", "retried")).await;
    let succeeding = put(s, creating("t1", "succeeding")).await;
    let finished = put(s, creating("t1", "finished")).await;
    assert_eq!(claim(s, "n1", 10).await.len(), 4);
    let made = s.sandbox("t1", "finished").await.unwrap().unwrap();
    s.set_sandbox_status(&made.id, "running").await.unwrap();
    let failure = |id| Completion {
        id,
        finish: Finish::Failed {
            error: JobError::new(ErrorReason::Internal, "x"),
            result: None,
            exit_code: None,
        },
    };
    let completions = [
        failure(failing.id),
        Completion {
            id: retried.id,
            finish: Finish::Retry {
                error: JobError::new(ErrorReason::DriverUnavailable, "x"),
                run_after: Utc::now(),
            },
        },
        ok(succeeding.id),
        failure(finished.id),
    ];
    s.complete("n1", &completions, Utc::now()).await.unwrap();
    assert!(!exists("failing").await);
    assert!(
        exists("retried").await,
        "a retry keeps the row for the next attempt"
    );
    assert!(exists("succeeding").await);
    assert!(
        exists("finished").await,
        "a usable sandbox is never removed"
    );

    // Interrupted: a job that is not safe to repeat fails when its lease expires.
    let interrupted = put(s, creating("t1", "interrupted")).await;
    let now = Utc::now();
    let claimed = s
        .claim("dead", 10, now, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(claimed.iter().any(|j| j.id == interrupted.id));
    s.rescue_expired(now + chrono::Duration::seconds(10))
        .await
        .unwrap();
    assert_eq!(
        s.job(None, interrupted.id).await.unwrap().unwrap().state,
        JobState::Failed
    );
    assert!(!exists("interrupted").await);
    // The rescue touched only the rows of the jobs it failed.
    assert!(exists("succeeding").await && exists("finished").await);
}

pub async fn nul_characters_are_stored_without_stopping_a_completion(t: TestStore) {
    let s = t.store.as_ref();
    // PostgreSQL's jsonb cannot hold U+0000: it is stored as U+FFFD there, as is on SQLite.
    let nul = if s.backend() == Backend::Postgres {
        "\u{fffd}"
    } else {
        "\0"
    };
    let mut with_nul = job("t1", Some("t1/nul"));
    with_nul.arguments = json!({"command": "printf 'a\\0b'", "note": "x\0y"});
    let queued = put(s, with_nul).await;
    assert_eq!(queued.arguments["note"], format!("x{nul}y"));
    let other = put(s, job("t1", Some("t1/other"))).await;
    assert_eq!(claim(s, "n1", 10).await.len(), 2);
    let written = s
        .complete(
            "n1",
            &[
                Completion {
                    id: queued.id,
                    finish: Finish::Succeeded {
                        result: json!({"stdout": "a\0b", "k\0": ["\0"]}),
                        exit_code: Some(0),
                    },
                },
                Completion {
                    id: other.id,
                    finish: Finish::Failed {
                        error: JobError::new(ErrorReason::ExecutionError, "bad \0 byte"),
                        result: None,
                        exit_code: None,
                    },
                },
            ],
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(written.len(), 2, "the whole batch is written");
    let done = s.job(None, queued.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    let result = done.result.unwrap();
    assert_eq!(result["stdout"], format!("a{nul}b"));
    assert_eq!(result[format!("k{nul}")][0], nul);
    let failed = s.job(None, other.id).await.unwrap().unwrap();
    assert_eq!(failed.error.unwrap().message, format!("bad {nul} byte"));
}

pub async fn jobs_keep_the_request_id_that_submitted_them(t: TestStore) {
    let s = t.store.as_ref();
    let mut with = job("t1", Some("t1/ws"));
    with.request_id = Some("req-7f3a".into());
    let stored = put(s, with).await;
    assert_eq!(stored.request_id.as_deref(), Some("req-7f3a"));
    let without = put(s, job("t1", None)).await;
    assert_eq!(without.request_id, None);
    // Every read path returns it: by id, in listings, through a claim and a completion.
    let read = s.job(Some("t1"), stored.id).await.unwrap().unwrap();
    assert_eq!(read.request_id.as_deref(), Some("req-7f3a"));
    let listed = s
        .list_jobs(&JobFilter {
            tenant: Some("t1".into()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let listed = listed.iter().find(|j| j.id == stored.id).unwrap();
    assert_eq!(listed.request_id.as_deref(), Some("req-7f3a"));
    let claimed = claim(s, "n1", 10).await;
    let claimed = claimed.iter().find(|j| j.id == stored.id).unwrap();
    assert_eq!(claimed.request_id.as_deref(), Some("req-7f3a"));
    let done = s
        .complete("n1", &[ok(stored.id)], Utc::now())
        .await
        .unwrap();
    let done = done[0].clone().apply(claimed.clone());
    assert_eq!(done.request_id.as_deref(), Some("req-7f3a"));
    let read = s.job(Some("t1"), stored.id).await.unwrap().unwrap();
    assert_eq!(read.request_id.as_deref(), Some("req-7f3a"));
    // An idempotent replay returns the original job with the original request's id.
    let mut first = job("t1", None);
    first.idempotency_key = Some("k-req".into());
    first.request_id = Some("req-first".into());
    put(s, first).await;
    let mut again = job("t1", None);
    again.idempotency_key = Some("k-req".into());
    again.request_id = Some("req-second".into());
    let replayed = s.enqueue(again, audit("t1")).await.unwrap();
    assert!(!replayed.created);
    assert_eq!(replayed.job.request_id.as_deref(), Some("req-first"));
}

pub async fn oldest_runnable_ignores_jobs_behind_their_workspace_and_future_retries(t: TestStore) {
    let s = t.store.as_ref();
    let now = Utc::now();
    assert_eq!(s.oldest_runnable(now).await.unwrap(), None);
    // A job that may run only in an hour is not waiting yet.
    let mut later = job("t1", None);
    later.run_after = now + chrono::Duration::hours(1);
    put(s, later).await;
    assert_eq!(s.oldest_runnable(now).await.unwrap(), None);
    // Two jobs of one workspace: once the first runs, the second waits for it, not for a worker.
    let mut first = job("t1", Some("t1/a"));
    first.run_after = now - chrono::Duration::seconds(300);
    let first = put(s, first).await;
    let mut second = job("t1", Some("t1/a"));
    second.run_after = now - chrono::Duration::seconds(200);
    put(s, second).await;
    let oldest = s.oldest_runnable(now).await.unwrap().unwrap();
    assert_eq!(oldest.timestamp(), first.run_after.timestamp());
    let claimed = s.claim("n1", 1, now, LEASE).await.unwrap();
    assert_eq!(claimed[0].id, first.id);
    assert_eq!(s.oldest_runnable(now).await.unwrap(), None);
    // A job without a workspace, or of an idle workspace, is runnable.
    let mut free = job("t1", None);
    free.run_after = now - chrono::Duration::seconds(50);
    let free = put(s, free).await;
    let mut other = job("t1", Some("t1/b"));
    other.run_after = now - chrono::Duration::seconds(10);
    put(s, other).await;
    let oldest = s.oldest_runnable(now).await.unwrap().unwrap();
    assert_eq!(oldest.timestamp(), free.run_after.timestamp());
}

/// Waits up to five seconds for `wanted` on the stream, skipping other signals.
async fn expect_signal(
    rx: &mut tokio::sync::broadcast::Receiver<Signal>,
    wanted: Signal,
    what: &str,
) {
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await {
                Ok(signal) if signal == wanted => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("the signal stream ended: {e}"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no {wanted:?} ({what}) within 5 s");
}

/// Signals already received (after a short pause for those in flight), in order.
async fn drain_signals(rx: &mut tokio::sync::broadcast::Receiver<Signal>) -> Vec<Signal> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = Vec::new();
    while let Ok(signal) = rx.try_recv() {
        seen.push(signal);
    }
    seen
}

pub async fn signals_announce_each_commit(t: TestStore) {
    let s = t.store.as_ref();
    let mut rx = s.signals();
    if s.backend() == Backend::Postgres {
        // The listener says when it starts listening: nothing before that was heard.
        expect_signal(&mut rx, Signal::Resync, "the listener connected").await;
    }
    let queued = put(s, job("t1", Some("w/sig"))).await;
    expect_signal(&mut rx, Signal::JobsReady, "enqueue").await;
    let running = claim(s, "n1", 1).await.remove(0);
    assert_eq!(running.id, queued.id);
    s.append_output(&[OutputChunk {
        job_id: running.id,
        seq: 1,
        stream: Stream::Stdout,
        data: b"hi".to_vec(),
        at: Utc::now(),
    }])
    .await
    .unwrap();
    expect_signal(&mut rx, Signal::Output(running.id), "stored output").await;
    s.cancel("t1", running.id, Utc::now()).await.unwrap();
    expect_signal(&mut rx, Signal::CancelRequested(running.id), "cancel").await;
    s.complete("n1", &[ok(running.id)], Utc::now())
        .await
        .unwrap();
    expect_signal(&mut rx, Signal::JobChanged(running.id), "completion").await;
    expect_signal(
        &mut rx,
        Signal::JobsFinished { node: "n1".into() },
        "a workspace freed, naming the node that freed it",
    )
    .await;

    // A rolled-back write signals nothing: a taken sandbox name refuses the enqueue.
    let first = creating("t1", "taken");
    s.enqueue(first, audit("t1")).await.unwrap();
    drain_signals(&mut rx).await;
    let refused = creating("t1", "taken");
    let refused_id = refused.id;
    assert!(matches!(
        s.enqueue(refused, audit("t1")).await,
        Err(StoreError::Conflict(_))
    ));
    let after = drain_signals(&mut rx).await;
    assert!(
        !after.contains(&Signal::JobsReady) && !after.contains(&Signal::JobChanged(refused_id)),
        "{after:?}"
    );

    if s.backend() != Backend::Postgres {
        return;
    }
    // Another node's writes arrive too: a second store on the same database is another node.
    let other =
        daytona_mcp::store::connect(&daytona_mcp::store::DatabaseUrl::new(t.url.clone()), 2)
            .await
            .unwrap();
    let theirs = other
        .enqueue(job("t1", None), audit("t1"))
        .await
        .unwrap()
        .job;
    expect_signal(&mut rx, Signal::JobsReady, "another node's enqueue").await;
    let claimed = other.claim("n2", 10, Utc::now(), LEASE).await.unwrap();
    assert!(claimed.iter().any(|j| j.id == theirs.id));
    other
        .complete("n2", &[ok(theirs.id)], Utc::now())
        .await
        .unwrap();
    expect_signal(
        &mut rx,
        Signal::JobChanged(theirs.id),
        "another node's completion",
    )
    .await;
    expect_signal(
        &mut rx,
        Signal::JobsFinished { node: "n2".into() },
        "another node's completion, naming it",
    )
    .await;

    // A completion of many jobs shares its `done` notices among them (a few hundred ids each):
    // every id still arrives, once, as its own signal.
    let many: Vec<NewJob> = (0..450).map(|_| job("t1", None)).collect();
    let mut ids: HashSet<Uuid> = many.iter().map(|j| j.id).collect();
    other.enqueue_many(many).await.unwrap();
    let claimed = other.claim("n2", 1000, Utc::now(), LEASE).await.unwrap();
    let completions: Vec<Completion> = claimed
        .iter()
        .filter(|j| ids.contains(&j.id))
        .map(|j| ok(j.id))
        .collect();
    assert_eq!(completions.len(), 450, "every one of them claimed");
    drain_signals(&mut rx).await;
    other
        .complete("n2", &completions, Utc::now())
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        while !ids.is_empty() {
            match rx.recv().await {
                Ok(Signal::JobChanged(id)) => assert!(ids.remove(&id), "{id} announced twice"),
                Ok(_) => {}
                Err(e) => panic!("the signal stream ended or lagged: {e}"),
            }
        }
    })
    .await;
    assert!(
        heard.is_ok(),
        "{} completed jobs never announced",
        ids.len()
    );

    // The listener survives losing its connection: it says so (resync) and hears again.
    let mut conn = sqlx::PgConnection::connect(&t.url).await.unwrap();
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(killed.len(), 1, "one listening backend");
    expect_signal(&mut rx, Signal::Resync, "the listener reconnected").await;
    let later = other
        .enqueue(job("t1", None), audit("t1"))
        .await
        .unwrap()
        .job;
    other.claim("n2", 10, Utc::now(), LEASE).await.unwrap();
    other
        .complete("n2", &[ok(later.id)], Utc::now())
        .await
        .unwrap();
    expect_signal(&mut rx, Signal::JobChanged(later.id), "after the reconnect").await;
}

fn bound(workspace: Option<&str>, node: Option<&str>) -> NewJob {
    let mut j = job("t1", workspace);
    j.node = node.map(str::to_string);
    j
}

/// `claim_heads` takes the heads of the named workspaces that a full claim could take, best
/// first and up to its limit, and nothing else: not a later job of a named workspace, not the
/// head of a workspace that runs a job, is not ready or is bound to another node, not a job
/// without a workspace, not another workspace's head.
pub async fn claim_heads_takes_only_the_named_workspaces_heads(t: TestStore) {
    let s = t.store.as_ref();
    let first = put(s, job("t1", Some("t1/a"))).await;
    put(s, job("t1", Some("t1/a"))).await;
    let mut urgent = job("t1", Some("t1/b"));
    urgent.priority = 5;
    let urgent = put(s, urgent).await;
    let busy = put(s, job("t1", Some("t1/busy"))).await;
    assert_eq!(claim(s, "n1", 1).await[0].id, urgent.id);
    // Claimed in the claim's order: `urgent` first, then `first`, then `busy`.
    let running: Vec<Uuid> = claim(s, "n1", 2).await.iter().map(|j| j.id).collect();
    assert_eq!(running, vec![first.id, busy.id]);
    s.complete("n1", &[ok(first.id), ok(urgent.id)], Utc::now())
        .await
        .unwrap();
    put(s, job("t1", Some("t1/busy"))).await;
    let mut later = job("t1", Some("t1/later"));
    later.run_after = Utc::now() + chrono::Duration::seconds(60);
    put(s, later).await;
    put(s, bound(Some("t1/elsewhere"), Some("n2"))).await;
    put(s, job("t1", None)).await;
    let unnamed = put(s, job("t1", Some("t1/unnamed"))).await;
    let mut best_b = job("t1", Some("t1/b"));
    best_b.priority = 3;
    let best_b = put(s, best_b).await;

    let named: Vec<String> = [
        "t1/a",
        "t1/b",
        "t1/busy",
        "t1/later",
        "t1/elsewhere",
        "t1/none",
    ]
    .map(String::from)
    .to_vec();
    let none = s
        .claim_heads("n1", &named, 0, Utc::now(), LEASE)
        .await
        .unwrap();
    assert!(none.is_empty());
    let one = s
        .claim_heads("n1", &named, 1, Utc::now(), LEASE)
        .await
        .unwrap();
    assert_eq!(
        one.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![best_b.id]
    );
    assert_eq!(one[0].state, JobState::Running);
    assert_eq!(one[0].lease_owner.as_deref(), Some("n1"));
    let rest = s
        .claim_heads("n1", &named, 10, Utc::now(), LEASE)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].workspace.as_deref(), Some("t1/a"));
    assert!(
        rest[0].seq > first.seq,
        "the next job of `t1/a`, now its head"
    );
    // `t1/b` runs `best_b` now, `t1/a` its second job: nothing named is left to take.
    assert!(
        s.claim_heads("n1", &named, 10, Utc::now(), LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.claim_heads("n1", &[], 10, Utc::now(), LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    // What a full claim still finds was never named: the free job and `t1/unnamed`'s head.
    let full: Vec<Uuid> = claim(s, "n1", 10).await.iter().map(|j| j.id).collect();
    assert_eq!(full.len(), 2, "{full:?}");
    assert!(full.contains(&unnamed.id));
}

pub async fn claims_leave_jobs_bound_to_other_nodes(t: TestStore) {
    let s = t.store.as_ref();
    let a_free = put(s, bound(None, Some("a"))).await;
    let a_head = put(s, bound(Some("t1/on-a"), Some("a"))).await;
    let any = put(s, bound(None, None)).await;
    let b_head = put(s, bound(Some("t1/on-b"), Some("b"))).await;
    // Node b sees only what it may run, though a's jobs are older.
    let by_b: Vec<Uuid> = claim(s, "b", 10).await.iter().map(|j| j.id).collect();
    assert_eq!(by_b, vec![any.id, b_head.id]);
    assert!(
        claim(s, "c", 10).await.is_empty(),
        "node c is bound to nothing"
    );
    let by_a: Vec<(Uuid, Option<String>)> = claim(s, "a", 10)
        .await
        .into_iter()
        .map(|j| (j.id, j.node))
        .collect();
    assert_eq!(
        by_a,
        vec![(a_free.id, Some("a".into())), (a_head.id, Some("a".into()))]
    );
    // A sandbox row keeps its node.
    let mut row = sandbox("t1", "sb-bound", "bound");
    row.node = Some("a".into());
    s.insert_sandbox(&row).await.unwrap();
    assert_eq!(
        s.sandbox("t1", "bound")
            .await
            .unwrap()
            .unwrap()
            .node
            .as_deref(),
        Some("a")
    );
}

pub async fn queued_jobs_of_gone_nodes_fail(t: TestStore) {
    let s = t.store.as_ref();
    let now = Utc::now();
    s.node_alive("gone", now - chrono::Duration::minutes(10))
        .await
        .unwrap();
    s.node_alive("alive", now - chrono::Duration::minutes(10))
        .await
        .unwrap();
    // A later heartbeat moves the node's sign of life; an older one never moves it back.
    s.node_alive("alive", now).await.unwrap();
    s.node_alive("alive", now - chrono::Duration::minutes(20))
        .await
        .unwrap();
    let on_gone = put(s, bound(Some("t1/g"), Some("gone"))).await;
    let on_unknown = put(s, bound(None, Some("never-seen"))).await;
    let on_alive = put(s, bound(Some("t1/a"), Some("alive"))).await;
    let anywhere = put(s, bound(None, None)).await;
    // A running job of the gone node is the lease rescue's business, not this pass's.
    let running = put(s, bound(Some("t1/r"), Some("gone"))).await;
    let claimed = claim(s, "gone", 10).await;
    assert!(claimed.iter().any(|j| j.id == running.id));
    // The claim took the gone node's queued jobs too; put them back as queued ones.
    let requeue: Vec<Completion> = claimed
        .iter()
        .filter(|j| j.id != running.id)
        .map(|j| Completion {
            id: j.id,
            finish: Finish::Retry {
                error: JobError::new(ErrorReason::DriverUnavailable, "again"),
                run_after: now,
            },
        })
        .collect();
    s.complete("gone", &requeue, now).await.unwrap();

    let mut failed: Vec<Uuid> = s
        .fail_jobs_of_gone_nodes(now - chrono::Duration::minutes(5), now)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    failed.sort();
    let mut expected = vec![on_gone.id, on_unknown.id];
    expected.sort();
    assert_eq!(failed, expected);
    let gone = s.job(None, on_gone.id).await.unwrap().unwrap();
    assert_eq!(gone.state, JobState::Failed);
    assert!(gone.finished_at.is_some());
    let error = gone.error.unwrap();
    assert_eq!(error.reason, ErrorReason::NodeGone);
    assert!(error.message.contains("node `gone`"), "{}", error.message);
    assert!(error.message.contains("last seen"), "{}", error.message);
    let unknown = s.job(None, on_unknown.id).await.unwrap().unwrap();
    assert!(unknown.error.unwrap().message.contains("never been seen"));
    for (id, state) in [
        (on_alive.id, JobState::Queued),
        (anywhere.id, JobState::Queued),
        (running.id, JobState::Running),
    ] {
        assert_eq!(s.job(None, id).await.unwrap().unwrap().state, state);
    }
    assert!(
        s.fail_jobs_of_gone_nodes(now - chrono::Duration::minutes(5), now)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_reused_idempotency_key_with_other_arguments_is_refused(t: TestStore) {
    let s = t.store.as_ref();
    let keyed = |digest: Option<&str>| {
        let mut j = job("t1", Some("w/idem"));
        j.idempotency_key = Some("k-1".into());
        j.args_digest = digest.map(str::to_string);
        j
    };
    let first = s.enqueue(keyed(Some("d1")), audit("t1")).await.unwrap();
    assert!(first.created);
    let audits = audit_rows(s).await;
    // The same request again, also while the job runs: the original job.
    claim(s, "n1", 1).await;
    let again = s.enqueue(keyed(Some("d1")), audit("t1")).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.job.id, first.job.id);
    assert_eq!(again.job.state, JobState::Running);
    assert_eq!(audit_rows(s).await, audits + 1, "the replay is audited");
    // Another request under the same key: refused, nothing written.
    match s.enqueue(keyed(Some("d2")), audit("t1")).await {
        Err(StoreError::IdempotencyMismatch { key, job_id }) => {
            assert_eq!(key, "k-1");
            assert_eq!(job_id, first.job.id);
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert_eq!(audit_rows(s).await, audits + 1);
    let all = s
        .list_jobs(&JobFilter {
            tenant: Some("t1".into()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    // Without a digest (an older job or caller) the key alone decides.
    let legacy = s.enqueue(keyed(None), audit("t1")).await.unwrap();
    assert_eq!((legacy.created, legacy.job.id), (false, first.job.id));
    // Keys are per tenant: another tenant's same key and digest is its own job.
    let mut other = keyed(Some("d2"));
    other.tenant = "t2".into();
    assert!(s.enqueue(other, audit("t2")).await.unwrap().created);
}

pub async fn prune_goes_in_bounded_batches_and_frees_idempotency_keys(t: TestStore) {
    let s = t.store.as_ref();
    let long_ago = Utc::now() - chrono::Duration::days(2);
    let mut old = Vec::new();
    for i in 0..5 {
        let mut j = job("t1", None);
        j.idempotency_key = Some(format!("key-{i}"));
        old.push(put(s, j).await.id);
    }
    assert_eq!(claim(s, "n1", 10).await.len(), 5);
    let done: Vec<Completion> = old.iter().map(|id| ok(*id)).collect();
    s.complete("n1", &done, long_ago).await.unwrap();
    s.append_output(&[OutputChunk {
        job_id: old[0],
        seq: 1,
        stream: Stream::Stdout,
        data: b"old".to_vec(),
        at: long_ago,
    }])
    .await
    .unwrap();
    let recent = put(s, job("t1", None)).await;
    claim(s, "n1", 1).await;
    s.complete("n1", &[ok(recent.id)], Utc::now())
        .await
        .unwrap();
    let queued = put(s, job("t1", Some("w/stays"))).await;
    let audits = audit_rows(s).await;

    let horizon = Utc::now() - chrono::Duration::days(1);
    assert_eq!(s.prune(horizon, 2).await.unwrap(), 2);
    assert_eq!(
        daytona_mcp::queue::retention::prune_all(s, horizon, 2)
            .await
            .unwrap(),
        3,
        "the rest, two at a time"
    );
    assert_eq!(s.prune(horizon, 2).await.unwrap(), 0);
    for id in &old {
        assert!(s.job(None, *id).await.unwrap().is_none());
    }
    assert!(s.output(old[0], 0).await.unwrap().is_empty());
    assert!(s.job(None, recent.id).await.unwrap().is_some(), "younger");
    assert!(
        s.job(None, queued.id).await.unwrap().is_some(),
        "unfinished"
    );
    assert_eq!(
        audit_rows(s).await,
        audits,
        "the audit log has its own retention"
    );
    // A pruned job's idempotency key is free again.
    let mut reuse = job("t1", None);
    reuse.idempotency_key = Some("key-0".into());
    assert!(s.enqueue(reuse, audit("t1")).await.unwrap().created);
}

/// Every audit row of `store`, oldest first.
async fn all_audit(s: &dyn Store) -> Vec<AuditRecord> {
    s.list_audit(&AuditFilter {
        limit: 10_000,
        ..AuditFilter::default()
    })
    .await
    .unwrap()
}

pub async fn cancel_audited_writes_its_row_with_the_state_change(t: TestStore) {
    let s = t.store.as_ref();
    let running = put(s, job("t1", Some("t1/a"))).await;
    let queued = put(s, job("t1", Some("t1/a"))).await;
    claim(s, "n1", 10).await;
    let before = all_audit(s).await.len();
    let entry = |tenant: &str| {
        Caller {
            key_id: Some("k".into()),
            ..Caller::internal(tenant)
        }
        .entry("jobs.cancel", None, None, "accepted", None)
    };
    // Another tenant's job: nothing changes, nothing is written.
    assert!(
        s.cancel_audited(Some("t2"), queued.id, Utc::now(), entry("t2"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(all_audit(s).await.len(), before);
    // Unknown job, every tenant: the same.
    assert!(
        s.cancel_audited(None, Uuid::now_v7(), Utc::now(), entry("t1"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(all_audit(s).await.len(), before);
    let outcome = s
        .cancel_audited(Some("t1"), queued.id, Utc::now(), entry("t1"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(outcome, CancelOutcome::Cancelled(_)),
        "{outcome:?}"
    );
    // Every tenant (an admin) reaches the running job.
    let outcome = s
        .cancel_audited(None, running.id, Utc::now(), entry("t1"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(outcome, CancelOutcome::Requested(_)),
        "{outcome:?}"
    );
    let outcome = s
        .cancel_audited(Some("t1"), queued.id, Utc::now(), entry("t1"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(outcome, CancelOutcome::AlreadyFinished(_)),
        "{outcome:?}"
    );
    let rows = all_audit(s).await;
    let rows = &rows[before..];
    let seen: Vec<(Option<Uuid>, Option<&str>, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.entry.job_id,
                r.entry.workspace.as_deref(),
                r.entry.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (Some(queued.id), Some("t1/a"), "cancelled"),
            (Some(running.id), Some("t1/a"), "cancel_requested"),
            (Some(queued.id), Some("t1/a"), "already_finished"),
        ]
    );
    assert!(rows.iter().all(|r| r.entry.action == "jobs.cancel"));
    assert!(rows.iter().all(|r| r.entry.key_id.as_deref() == Some("k")));
}

pub async fn audit_log_filters_by_sandbox_and_outcome(t: TestStore) {
    let s = t.store.as_ref();
    for (tenant, workspace, outcome) in [
        ("t1", Some("t1/web"), "accepted"),
        ("t2", Some("t2/web"), "denied"),
        ("t1", Some("t1/webapp"), "accepted"),
        ("t1", Some("t1/x-web"), "accepted"),
        ("t1", None, "denied"),
    ] {
        let e = Caller::internal(tenant).entry(
            "execute_shell",
            workspace.map(str::to_string),
            None,
            outcome,
            None,
        );
        s.append_audit(&e).await.unwrap();
    }
    let find = |sandbox: Option<&str>, outcome: Option<&str>| AuditFilter {
        sandbox: sandbox.map(str::to_string),
        outcome: outcome.map(str::to_string),
        limit: 100,
        ..AuditFilter::default()
    };
    let web = s.list_audit(&find(Some("web"), None)).await.unwrap();
    let workspaces: Vec<_> = web
        .iter()
        .map(|r| r.entry.workspace.clone().unwrap())
        .collect();
    assert_eq!(
        workspaces,
        ["t1/web", "t2/web"],
        "the name, in every tenant"
    );
    let denied = s.list_audit(&find(None, Some("denied"))).await.unwrap();
    assert_eq!(denied.len(), 2);
    assert!(denied.iter().all(|r| r.entry.outcome == "denied"));
    let both = s
        .list_audit(&find(Some("web"), Some("accepted")))
        .await
        .unwrap();
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].entry.workspace.as_deref(), Some("t1/web"));
}

fn api_key(id: &str, tenant: &str, role: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        tenant: tenant.into(),
        role: role.into(),
        name: Some(format!("{id} name")),
        digest: format!("{:0>64}", id),
        created_at: Utc::now() - chrono::Duration::minutes(1),
        expires_at: None,
        revoked_at: None,
    }
}

fn key_audit(action: &str, key_id: &str) -> AuditEntry {
    let mut entry = Caller::internal("t1").entry(action, None, None, "succeeded", None);
    entry.args_summary = Some(json!({ "key_id": key_id }));
    entry
}

async fn key_audit_rows(s: &dyn Store, action: &str) -> usize {
    s.list_audit(&AuditFilter {
        action: Some(action.into()),
        limit: 100,
        ..AuditFilter::default()
    })
    .await
    .unwrap()
    .len()
}

pub async fn api_keys_are_stored_listed_and_revoked_with_audit_rows(t: TestStore) {
    let s = t.store.as_ref();
    let mut first = api_key("aaaaaaaaaaaa", "t1", "viewer");
    first.expires_at = Some(Utc::now() + chrono::Duration::days(30));
    s.insert_api_key(&first, &key_audit("keys.create", &first.id))
        .await
        .unwrap();
    let second = api_key("bbbbbbbbbbbb", "t2", "admin");
    s.insert_api_key(&second, &key_audit("keys.create", &second.id))
        .await
        .unwrap();

    // Read back as stored (timestamps to the microsecond on both backends).
    let got = s.api_key(&first.id).await.unwrap().unwrap();
    assert_eq!(got.tenant, "t1");
    assert_eq!(got.role, "viewer");
    assert_eq!(got.digest, first.digest);
    assert_eq!(got.name, first.name);
    assert_eq!(
        got.expires_at.map(|t| t.timestamp_micros()),
        first.expires_at.map(|t| t.timestamp_micros())
    );
    assert!(got.revoked_at.is_none());
    assert!(s.api_key("cccccccccccc").await.unwrap().is_none());
    let listed: Vec<String> = s
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, [first.id.clone(), second.id.clone()]);
    assert_eq!(key_audit_rows(s, "keys.create").await, 2);

    // A taken id is a conflict, and neither the key nor its audit row goes in.
    let clash = api_key("aaaaaaaaaaaa", "t9", "admin");
    assert!(matches!(
        s.insert_api_key(&clash, &key_audit("keys.create", &clash.id))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.api_key(&first.id).await.unwrap().unwrap().tenant, "t1");
    assert_eq!(key_audit_rows(s, "keys.create").await, 2);

    // The database refuses roles it does not know.
    let mut bad = api_key("dddddddddddd", "t1", "root");
    bad.role = "root".into();
    assert!(
        s.insert_api_key(&bad, &key_audit("keys.create", &bad.id))
            .await
            .is_err()
    );

    // Revocation: once, with one audit row; a second or unknown revoke changes nothing.
    let at = Utc::now();
    assert!(
        s.revoke_api_key(&first.id, at, &key_audit("keys.revoke", &first.id))
            .await
            .unwrap()
    );
    let revoked = s.api_key(&first.id).await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at.map(|t| t.timestamp_micros()),
        Some(at.timestamp_micros())
    );
    assert!(
        !s.revoke_api_key(&first.id, Utc::now(), &key_audit("keys.revoke", &first.id))
            .await
            .unwrap()
    );
    assert!(
        !s.revoke_api_key("cccccccccccc", Utc::now(), &key_audit("keys.revoke", "x"))
            .await
            .unwrap()
    );
    assert_eq!(key_audit_rows(s, "keys.revoke").await, 1);
    assert!(
        s.api_key(&second.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
}

fn with_quota(mut j: NewJob, quota: Quota) -> NewJob {
    j.quota = Some(quota);
    j
}

/// Many submissions race for the last places of a quota: exactly the quota's worth go in, the
/// rest are refused with nothing inserted (no job, no sandbox row, no audit row), a replay is
/// never refused, and places come back as jobs end and sandboxes go.
pub async fn quotas_hold_under_concurrent_enqueues(t: TestStore) {
    let s = t.store.clone();
    let jobs_quota = Quota {
        max_active_jobs: Some(5),
        ..Quota::default()
    };
    let mut racers = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        let quota = jobs_quota.clone();
        racers.push(tokio::spawn(async move {
            let mut j = with_quota(job("qt", Some(&format!("qt/w{i}"))), quota);
            j.idempotency_key = Some(format!("k{i}"));
            s.enqueue(j, audit("qt")).await
        }));
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(e) => accepted.push(e.job),
            Err(StoreError::QuotaExceeded { kind, limit }) => {
                assert_eq!((kind, limit), (QuotaKind::ActiveJobs, 5));
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((accepted.len(), refused), (5, 15));
    let listed = s
        .list_jobs(&JobFilter {
            tenant: Some("qt".into()),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 5);
    let audited = s
        .list_audit(&AuditFilter {
            tenant: Some("qt".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audited.len(), 5, "refused enqueues left audit rows");
    // A replay of an accepted job is answered, not refused, even at the limit.
    let first_key = accepted[0].idempotency_key.clone().unwrap();
    let mut replay = with_quota(job("qt", Some("qt/again")), jobs_quota.clone());
    replay.idempotency_key = Some(first_key);
    let replayed = s.enqueue(replay, audit("qt")).await.unwrap();
    assert!(!replayed.created);
    // Other tenants are not counted.
    s.enqueue(
        with_quota(job("other", None), jobs_quota.clone()),
        audit("other"),
    )
    .await
    .unwrap();
    // A finished job frees its place.
    let claimed = s.claim("n1", 1, Utc::now(), LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(matches!(
        s.enqueue(with_quota(job("qt", None), jobs_quota.clone()), audit("qt"))
            .await,
        Err(StoreError::QuotaExceeded { .. })
    ));
    s.complete("n1", &[ok(claimed[0].id)], Utc::now())
        .await
        .unwrap();
    s.enqueue(with_quota(job("qt", None), jobs_quota.clone()), audit("qt"))
        .await
        .unwrap();

    // Sandboxes: eight racing creations for three places.
    let sandbox_quota = Quota {
        max_sandboxes: Some(3),
        ..Quota::default()
    };
    let mut racers = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let quota = sandbox_quota.clone();
        racers.push(tokio::spawn(async move {
            let j = with_quota(creating("qs", &format!("box{i}")), quota);
            s.enqueue(j, audit("qs")).await
        }));
    }
    let mut made = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => made += 1,
            Err(StoreError::QuotaExceeded { kind, .. }) => {
                assert_eq!(kind, QuotaKind::Sandboxes)
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(made, 3);
    let boxes = s
        .list_sandboxes(&SandboxFilter {
            tenant: "qs".into(),
            ..SandboxFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(boxes.len(), 3);
    let qs_jobs = s
        .list_jobs(&JobFilter {
            tenant: Some("qs".into()),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(qs_jobs.len(), 3, "a refused creation left its job");
    // A job that creates no sandbox is not held back by the sandbox quota.
    s.enqueue(
        with_quota(job("qs", None), sandbox_quota.clone()),
        audit("qs"),
    )
    .await
    .unwrap();
    // Deleting a sandbox frees its place.
    assert!(s.delete_sandbox(&boxes[0].id).await.unwrap());
    s.enqueue(
        with_quota(creating("qs", "box-after"), sandbox_quota),
        audit("qs"),
    )
    .await
    .unwrap();
}

/// A claimed job put back (`unclaim`, for a tenant's running limit) is queued as if never
/// claimed, keeps its place at the head of its workspace, and waits for its `run_after`.
pub async fn unclaim_puts_jobs_back_in_their_place(t: TestStore) {
    let s = t.store.as_ref();
    let first = put(s, job("t1", Some("t1/w"))).await;
    let second = put(s, job("t1", Some("t1/w"))).await;
    let free = put(s, job("t1", None)).await;
    put(s, job("t2", None)).await;
    let claimed = claim(s, "n1", 10).await;
    let ids: HashSet<Uuid> = claimed.iter().map(|j| j.id).collect();
    assert!(ids.contains(&first.id) && ids.contains(&free.id) && !ids.contains(&second.id));
    assert_eq!(s.running_jobs("t1").await.unwrap(), 2);
    assert_eq!(s.running_jobs("t2").await.unwrap(), 1);
    assert_eq!(s.running_jobs("t3").await.unwrap(), 0);

    // Another node's unclaim changes nothing.
    let later = Utc::now() + chrono::Duration::milliseconds(600);
    assert!(
        s.unclaim("n2", &[first.id], later)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.unclaim("n1", &[first.id], later).await.unwrap(),
        [first.id]
    );
    let back = s.job(None, first.id).await.unwrap().unwrap();
    assert_eq!(back.state, JobState::Queued);
    assert_eq!(back.attempts, 0);
    assert!(back.started_at.is_none());
    assert_eq!(back.seq, first.seq);
    assert_eq!(s.running_jobs("t1").await.unwrap(), 1);
    // Until its run_after, its workspace waits: the second job does not overtake it.
    assert!(claim(s, "n1", 10).await.is_empty());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let again = claim(s, "n1", 10).await;
    assert_eq!(again.iter().map(|j| j.id).collect::<Vec<_>>(), [first.id]);
    assert_eq!(again[0].attempts, 1);
    assert!(s.unclaim("n1", &[], later).await.unwrap().is_empty());
}

/// One batch (group commit) with an accepted job, a replay, an idempotency mismatch, a sandbox
/// name conflict, a quota refusal and two jobs of one workspace: each gets the outcome it would
/// have had alone, the refused ones leave nothing behind (no job, no sandbox row, no audit row),
/// the accepted ones are committed with their audit rows, and a workspace's jobs keep the
/// batch's order.
pub async fn enqueue_batch_gives_each_job_its_own_outcome(t: TestStore) {
    let s = t.store.as_ref();
    let mut earlier = job("b", None);
    earlier.idempotency_key = Some("used".into());
    earlier.args_digest = Some("digest-a".into());
    let earlier = s.enqueue(earlier, audit("b")).await.unwrap().job;
    s.enqueue(creating("b", "taken"), audit("b")).await.unwrap();
    let full = Quota {
        max_active_jobs: Some(1),
        ..Quota::default()
    };
    s.enqueue(with_quota(job("q", None), full.clone()), audit("q"))
        .await
        .unwrap();
    let before = audit_rows(s).await;

    let mut replay = job("b", None);
    replay.idempotency_key = Some("used".into());
    replay.args_digest = Some("digest-a".into());
    let mut mismatch = job("b", None);
    mismatch.idempotency_key = Some("used".into());
    mismatch.args_digest = Some("digest-b".into());
    let batch = vec![
        (job("b", Some("b/ws")), audit("b")),
        (replay, audit("b")),
        (mismatch, audit("b")),
        (creating("b", "taken"), audit("b")),
        (with_quota(job("q", None), full.clone()), audit("q")),
        (creating("b", "fresh"), audit("b")),
        (job("b", Some("b/ws")), audit("b")),
    ];
    let outcomes = s.enqueue_batch(batch).await.unwrap();
    assert_eq!(outcomes.len(), 7);
    let first = outcomes[0].as_ref().unwrap();
    assert!(first.created);
    let replayed = outcomes[1].as_ref().unwrap();
    assert!(!replayed.created);
    assert_eq!(replayed.job.id, earlier.id);
    assert!(
        matches!(&outcomes[2], Err(StoreError::IdempotencyMismatch { job_id, .. }) if *job_id == earlier.id),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(&outcomes[3], Err(StoreError::Conflict(_))),
        "{:?}",
        outcomes[3]
    );
    assert!(
        matches!(
            &outcomes[4],
            Err(StoreError::QuotaExceeded {
                kind: QuotaKind::ActiveJobs,
                limit: 1
            })
        ),
        "{:?}",
        outcomes[4]
    );
    let fresh = outcomes[5].as_ref().unwrap();
    assert!(fresh.created);
    let last = outcomes[6].as_ref().unwrap();
    assert!(last.created);
    assert!(first.job.seq < last.job.seq);

    // Committed: the three new jobs, the fresh sandbox, and an audit row for each accepted
    // submission (the replay's marked `replayed`); nothing of the three refused ones.
    for id in [first.job.id, fresh.job.id, last.job.id] {
        assert!(s.job(Some("b"), id).await.unwrap().is_some());
    }
    assert_eq!(audit_rows(s).await, before + 4);
    let names: Vec<String> = s
        .list_sandboxes(&SandboxFilter {
            tenant: "b".into(),
            ..SandboxFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "taken").count(), 1);
    assert_eq!(names.iter().filter(|n| *n == "fresh").count(), 1);
    let q_jobs = s
        .list_jobs(&JobFilter {
            tenant: Some("q".into()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(q_jobs.len(), 1);
    // The workspace's jobs run in the batch's order.
    let claimed = claim(s, "n1", 10).await;
    assert!(claimed.iter().any(|j| j.id == first.job.id));
    assert!(!claimed.iter().any(|j| j.id == last.job.id));
}

/// Batches of plain submissions only (no sandbox row, no quota), which PostgreSQL writes in one
/// statement: without idempotency keys every job is created with its audit row, a workspace's
/// jobs in the batch's order; with keys, a fresh key, a replay, a mismatch and a key used twice
/// in the batch each get the outcome they would have had alone; a job the database refuses
/// (a NUL in a text column, which PostgreSQL rejects and SQLite stores) is that job's outcome
/// only. In every case each accepted submission has exactly one audit row.
/// A batch of plain submissions answers each job exactly as the store then reads it: every
/// column, the arguments' awkward values (floats at the edges of `f64`, NUL characters,
/// non-ASCII text, nesting) and timestamps finer than the store keeps included; a replayed
/// key answers the earlier job as stored.
pub async fn a_batch_answers_its_jobs_as_stored(t: TestStore) {
    let s = t.store.as_ref();
    let odd = json!({
        "floats": [0.1, 0.30000000000000004, 5e-324, 2.2250738585072014e-308,
                   1.7976931348623157e308, -0.0, 123456789.12345679, 1e21],
        "ints": [0, -1, 9007199254740993_u64, i64::MIN, u64::MAX],
        "text": "a\0b é ✓ \u{1F600}", "k\0": null, "nested": {"z": [{"y": true}], "a": {}},
    });
    let run_after = Utc::now() - chrono::Duration::nanoseconds(123_456_789);
    let mut keyed = job("p", Some("p/as-stored"));
    keyed.arguments = odd.clone();
    keyed.idempotency_key = Some("as-stored".into());
    keyed.args_digest = Some("digest".into());
    keyed.request_id = Some("req-1".into());
    keyed.priority = 3;
    keyed.max_attempts = 4;
    keyed.retry_safe = true;
    keyed.timeout_s = 77;
    keyed.run_after = run_after;
    let mut bound = job("p", None);
    bound.arguments = json!(["\0", 1.5]);
    bound.node = Some("n7".into());
    let replay = keyed.clone();
    let mut replay_new = replay.clone();
    replay_new.id = Uuid::new_v4();
    let batch = vec![(keyed, audit("p")), (bound, audit("p"))];
    let mut answered: Vec<Job> = Vec::new();
    for outcome in s.enqueue_batch(batch).await.unwrap() {
        answered.push(outcome.unwrap().job);
    }
    let replayed = s
        .enqueue_batch(vec![(replay_new, audit("p"))])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(!replayed.created);
    answered.push(replayed.job);
    for job in answered {
        let stored = s.job(Some("p"), job.id).await.unwrap().unwrap();
        assert_eq!(job, stored, "answered and stored differ");
    }
}

pub async fn plain_batches_give_each_job_its_own_outcome(t: TestStore) {
    let s = t.store.as_ref();
    let before = audit_rows(s).await;
    let unkeyed = vec![
        (job("p", Some("p/ws")), audit("p")),
        (job("p", None), audit("p")),
        (job("p", Some("p/ws")), audit("p")),
    ];
    let outcomes = s.enqueue_batch(unkeyed).await.unwrap();
    let jobs: Vec<Job> = outcomes
        .into_iter()
        .map(|o| {
            let e = o.unwrap();
            assert!(e.created);
            e.job
        })
        .collect();
    assert!(jobs[0].seq < jobs[2].seq);
    for j in &jobs {
        let stored = s.job(Some("p"), j.id).await.unwrap().unwrap();
        assert_eq!(stored.state, JobState::Queued);
        assert_eq!(stored.seq, j.seq);
    }
    assert_eq!(audit_rows(s).await, before + 3);

    let mut earlier = job("p", None);
    earlier.idempotency_key = Some("plain-used".into());
    earlier.args_digest = Some("digest-a".into());
    let earlier = s.enqueue(earlier, audit("p")).await.unwrap().job;
    let before = audit_rows(s).await;
    let keyed = |key: &str, digest: &str| {
        let mut j = job("p", None);
        j.idempotency_key = Some(key.into());
        j.args_digest = Some(digest.into());
        (j, audit("p"))
    };
    let batch = vec![
        keyed("plain-fresh", "digest-a"),
        keyed("plain-used", "digest-a"),
        keyed("plain-used", "digest-b"),
        keyed("plain-twice", "digest-a"),
        keyed("plain-twice", "digest-a"),
        (job("p", None), audit("p")),
    ];
    let outcomes = s.enqueue_batch(batch).await.unwrap();
    assert_eq!(outcomes.len(), 6);
    assert!(outcomes[0].as_ref().unwrap().created);
    let replayed = outcomes[1].as_ref().unwrap();
    assert!(!replayed.created);
    assert_eq!(replayed.job.id, earlier.id);
    assert!(
        matches!(&outcomes[2], Err(StoreError::IdempotencyMismatch { job_id, .. }) if *job_id == earlier.id),
        "{:?}",
        outcomes[2]
    );
    let twice = outcomes[3].as_ref().unwrap();
    assert!(twice.created);
    let again = outcomes[4].as_ref().unwrap();
    assert!(!again.created);
    assert_eq!(again.job.id, twice.job.id);
    assert!(outcomes[5].as_ref().unwrap().created);
    // Three new jobs and two replays have audit rows; the mismatch has none.
    assert_eq!(audit_rows(s).await, before + 5);
    let replays = s
        .list_audit(&AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.outcome == "replayed")
        .count();
    assert_eq!(replays, 2);

    let before = audit_rows(s).await;
    let mut refused = job("p", Some("p/other"));
    refused.tool = "bad\0tool".into();
    let batch = vec![
        (job("p", Some("p/other")), audit("p")),
        (refused, audit("p")),
        (job("p", Some("p/other")), audit("p")),
    ];
    let outcomes = s.enqueue_batch(batch).await.unwrap();
    assert_eq!(outcomes.len(), 3);
    let first = outcomes[0].as_ref().unwrap();
    let last = outcomes[2].as_ref().unwrap();
    assert!(first.created && last.created);
    assert!(first.job.seq < last.job.seq);
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(audit_rows(s).await, before + accepted);
    for o in outcomes.iter().flatten() {
        assert!(s.job(Some("p"), o.job.id).await.unwrap().is_some());
    }
}

/// Concurrent batches and single enqueues with the same idempotency keys, also twice in one
/// batch: one job per key, every other submission a replay of it.
pub async fn concurrent_batches_with_the_same_key_make_one_job(t: TestStore) {
    let s = t.store.clone();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let keyed = |k: usize| {
                let mut j = job("k", Some(&format!("k/w{}", (i + k) % 3)));
                j.idempotency_key = Some(format!("key{k}"));
                j
            };
            if i % 2 == 0 {
                let batch = (0..4)
                    .flat_map(|k| [(keyed(k), audit("k")), (keyed(k), audit("k"))])
                    .collect();
                s.enqueue_batch(batch)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|o| o.unwrap())
                    .collect::<Vec<_>>()
            } else {
                let mut out = Vec::new();
                for k in 0..4 {
                    out.push(s.enqueue(keyed(k), audit("k")).await.unwrap());
                }
                out
            }
        }));
    }
    let mut by_key: BTreeMap<String, HashSet<Uuid>> = BTreeMap::new();
    let mut created = 0;
    for task in tasks {
        for e in task.await.unwrap() {
            created += usize::from(e.created);
            by_key
                .entry(e.job.idempotency_key.clone().unwrap())
                .or_default()
                .insert(e.job.id);
        }
    }
    assert_eq!(by_key.len(), 4);
    assert!(by_key.values().all(|ids| ids.len() == 1), "{by_key:?}");
    assert_eq!(created, 4);
    let all = s
        .list_jobs(&JobFilter {
            tenant: Some("k".into()),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
}

/// 40 concurrent submitters through the queue's group commit (`Queue::enqueue`), each
/// submitting five jobs one after another into a workspace shared with others, among them a
/// refusal (a taken sandbox name) and a replay: every accepted id is committed when answered,
/// the refusals fail alone, and each submitter's jobs keep their order in the workspace.
pub async fn queue_group_commit_keeps_outcomes_and_order(t: TestStore) {
    let s = t.store.clone();
    s.enqueue(creating("g", "taken"), audit("g")).await.unwrap();
    let queue = daytona_mcp::queue::Queue::new(s.clone(), Duration::from_secs(1));
    let mut tasks = Vec::new();
    for c in 0..40 {
        let (queue, s) = (queue.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for k in 0..5 {
                let j = match k {
                    2 => creating("g", "taken"),
                    _ => {
                        let mut j = job("g", Some(&format!("g/w{}", c % 4)));
                        // The first job's key is shared by all submitters: one job, replays.
                        j.idempotency_key = (k == 0).then(|| "shared".to_string());
                        j
                    }
                };
                match queue.enqueue(j, audit("g")).await {
                    Ok(e) => {
                        // Answered means committed: another connection sees it.
                        assert!(s.job(Some("g"), e.job.id).await.unwrap().is_some());
                        if k > 0 {
                            mine.push(e.job);
                        }
                    }
                    Err(StoreError::Conflict(_)) => assert_eq!(k, 2),
                    Err(e) => panic!("submission {k}: {e:?}"),
                }
            }
            mine
        }));
    }
    let mut total = 0;
    for task in tasks {
        let mine = task.await.unwrap();
        assert_eq!(mine.len(), 3, "{mine:?}");
        assert!(mine.windows(2).all(|w| w[0].seq < w[1].seq), "{mine:?}");
        total += mine.len();
    }
    let all = s
        .list_jobs(&JobFilter {
            tenant: Some("g".into()),
            limit: 1000,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    // The sandbox-creating job at the start, one shared-key job, three per submitter.
    assert_eq!(all.len(), 1 + 1 + total);
}

/// A small claim looks first at a window of the oldest queued workspace jobs (PostgreSQL); when
/// that window is full of jobs behind a busy workspace, a free workspace's head past it still
/// ranks before a later job without a workspace, and FIFO holds inside each workspace.
pub async fn small_claims_keep_the_global_order_past_a_busy_workspace(t: TestStore) {
    let s = t.store.as_ref();
    let running = put(s, job("t1", Some("w/busy"))).await;
    assert_eq!(claim(s, "n1", 1).await[0].id, running.id);
    // More jobs behind the busy workspace than any small claim's window holds.
    s.enqueue_many((0..200).map(|_| job("t1", Some("w/busy"))).collect())
        .await
        .unwrap();
    let b1 = put(s, job("t1", Some("w/free"))).await;
    let b2 = put(s, job("t1", Some("w/free"))).await;
    let f1 = put(s, job("t1", None)).await;
    let f2 = put(s, job("t1", None)).await;

    let first: Vec<Uuid> = claim(s, "n1", 1).await.iter().map(|j| j.id).collect();
    assert_eq!(
        first,
        vec![b1.id],
        "the older head beats the later unserialized job"
    );
    let next: Vec<Uuid> = claim(s, "n1", 2).await.iter().map(|j| j.id).collect();
    assert_eq!(
        next,
        vec![f1.id, f2.id],
        "w/free is busy with b1; b2 waits behind it"
    );
    s.complete("n1", &[ok(b1.id)], Utc::now()).await.unwrap();
    let last: Vec<Uuid> = claim(s, "n1", 5).await.iter().map(|j| j.id).collect();
    assert_eq!(last, vec![b2.id], "w/busy is still running its first job");
}

/// A `create_template` job carrying its template row.
fn templating(tenant: &str, name: &str) -> NewJob {
    let mut j = job(tenant, None);
    j.tool = "create_template".into();
    j.template = Some(TemplateRecord {
        tenant: tenant.into(),
        name: name.into(),
        fields: json!({"language": "python", "setup_commands": ["echo hi"]}),
        environment_vars: BTreeMap::from([("TPL_SECRET".into(), "tpl-value".into())]),
        created_at: Utc::now(),
    });
    j
}

/// A `create_sandbox` job with `n` setup jobs following it in its workspace.
fn with_followers(tenant: &str, name: &str, n: usize) -> NewJob {
    let mut j = creating(tenant, name);
    for i in 0..n {
        let mut follower = job(tenant, j.workspace.as_deref());
        follower.arguments = json!({"command": format!("setup {i}")});
        let entry = audit(tenant);
        j.followers.push((follower, entry));
    }
    j
}

pub async fn templates_and_followers_are_inserted_with_their_job(t: TestStore) {
    let s = t.store.as_ref();
    // A template row comes with its job; a replay inserts none; a taken name refuses it all.
    let mut first = templating("t1", "kit");
    first.idempotency_key = Some("make-kit".into());
    let made = s.enqueue(first, audit("t1")).await.unwrap();
    assert!(made.created);
    let row = s.template("t1", "kit").await.unwrap().unwrap();
    assert_eq!(row.fields["language"], "python");
    assert_eq!(row.environment_vars["TPL_SECRET"], "tpl-value");
    assert!(
        !format!("{row:?}").contains("tpl-value"),
        "Debug masks values"
    );
    let mut replay = templating("t1", "kit-2");
    replay.idempotency_key = Some("make-kit".into());
    let replayed = s.enqueue(replay, audit("t1")).await.unwrap();
    assert!(!replayed.created);
    assert!(s.template("t1", "kit-2").await.unwrap().is_none());
    let before = audit_rows(s).await;
    let taken = s.enqueue(templating("t1", "kit"), audit("t1")).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    assert_eq!(audit_rows(s).await, before, "a refusal writes nothing");
    // Per tenant: another tenant has its own namespace and sees none of t1's.
    assert!(s.template("t2", "kit").await.unwrap().is_none());
    s.enqueue(templating("t2", "kit"), audit("t2"))
        .await
        .unwrap();
    assert_eq!(s.list_templates("t1").await.unwrap().len(), 1);
    assert_eq!(s.list_templates("t2").await.unwrap().len(), 1);
    assert!(s.delete_template("t1", "kit").await.unwrap());
    assert!(!s.delete_template("t1", "kit").await.unwrap());
    assert!(s.template("t2", "kit").await.unwrap().is_some());

    // (The template jobs, which have no workspace, out of the way.)
    let done: Vec<Completion> = claim(s, "n1", 10).await.iter().map(|j| ok(j.id)).collect();
    assert_eq!(done.len(), 2);
    s.complete("n1", &done, Utc::now()).await.unwrap();

    // Followers come right after their job in its workspace, each with an audit row, and are
    // claimed in order after it.
    let before = audit_rows(s).await;
    let head = with_followers("t1", "box", 3);
    let follower_ids: Vec<Uuid> = head.followers.iter().map(|(f, _)| f.id).collect();
    let head = s.enqueue(head, audit("t1")).await.unwrap().job;
    assert_eq!(audit_rows(s).await, before + 4);
    let mut order = vec![];
    for _ in 0..4 {
        let claimed = claim(s, "n1", 10).await;
        assert_eq!(claimed.len(), 1, "one at a time in the workspace");
        order.push(claimed[0].id);
        s.complete("n1", &[ok(claimed[0].id)], Utc::now())
            .await
            .unwrap();
    }
    assert_eq!(order[0], head.id);
    assert_eq!(order[1..], follower_ids[..]);

    // In a batch, a refused job takes its followers along; an accepted one keeps them.
    let refused = with_followers("t1", "box", 2);
    let refused_ids: Vec<Uuid> = refused.followers.iter().map(|(f, _)| f.id).collect();
    let accepted = with_followers("t1", "box-2", 2);
    let accepted_ids: Vec<Uuid> = accepted.followers.iter().map(|(f, _)| f.id).collect();
    let outcomes = s
        .enqueue_batch(vec![
            (refused, audit("t1")),
            (accepted, audit("t1")),
            (templating("t1", "kit-3"), audit("t1")),
        ])
        .await
        .unwrap();
    assert!(
        matches!(outcomes[0], Err(StoreError::Conflict(_))),
        "{:?}",
        outcomes[0]
    );
    assert!(outcomes[1].as_ref().unwrap().created);
    assert!(outcomes[2].as_ref().unwrap().created);
    for id in refused_ids {
        assert!(
            s.job(None, id).await.unwrap().is_none(),
            "a refused job's follower"
        );
    }
    for id in accepted_ids {
        assert_eq!(
            s.job(None, id).await.unwrap().unwrap().state,
            JobState::Queued
        );
    }
    assert!(s.template("t1", "kit-3").await.unwrap().is_some());

    // A quota counts the followers: two active jobs allowed, a job with two followers is three.
    let quota = Quota {
        max_active_jobs: Some(2),
        ..Quota::default()
    };
    let over = with_quota(with_followers("q", "quota-box", 2), quota.clone());
    let refused = s.enqueue(over, audit("q")).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::QuotaExceeded {
                kind: QuotaKind::ActiveJobs,
                ..
            })
        ),
        "{refused:?}"
    );
    let within = with_quota(with_followers("q", "quota-box", 1), quota);
    assert!(s.enqueue(within, audit("q")).await.unwrap().created);
}

fn snapshot_row(tenant: &str, id: &str, sandbox_id: &str, size: i64) -> SnapshotRecord {
    SnapshotRecord {
        id: id.into(),
        tenant: tenant.into(),
        name: Some(format!("{id} label")),
        sandbox_id: sandbox_id.into(),
        sandbox_name: format!("{sandbox_id}-name"),
        driver: "local".into(),
        node: "node-a".into(),
        size_bytes: size,
        digest: "ab".repeat(32),
        entries: 7,
        // Both backends keep microseconds.
        created_at: DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap(),
    }
}

/// Snapshot rows: read back as written, per tenant (another tenant's is not found, listed or
/// deleted), listed oldest first and by sandbox; their sizes count in the tenant's disk total
/// against `max_disk_bytes`, both for a new snapshot and for a new sandbox, and a refusal
/// writes nothing.
pub async fn snapshots_are_per_tenant_and_count_in_the_disk_total(t: TestStore) {
    let s = t.store.as_ref();
    let a = snapshot_row("t1", "snap-a", "sb-1", 100);
    s.insert_snapshot(&a, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let b = snapshot_row("t1", "snap-b", "sb-2", 50);
    s.insert_snapshot(&b, None).await.unwrap();
    assert_eq!(s.snapshot("t1", "snap-a").await.unwrap(), Some(a.clone()));
    assert_eq!(s.snapshot("t2", "snap-a").await.unwrap(), None);
    assert!(matches!(
        s.insert_snapshot(&a, None).await,
        Err(StoreError::Conflict(_))
    ));
    let ids = |list: Vec<SnapshotRecord>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_snapshots("t1", None).await.unwrap()),
        ["snap-a", "snap-b"]
    );
    assert_eq!(
        ids(s.list_snapshots("t1", Some("sb-2")).await.unwrap()),
        ["snap-b"]
    );
    assert!(s.list_snapshots("t2", None).await.unwrap().is_empty());

    // 150 bytes of snapshots: 60 more is over 200, 50 more is exactly it.
    let quota = Quota {
        max_disk_bytes: Some(200),
        ..Quota::default()
    };
    let over = snapshot_row("t1", "snap-c", "sb-1", 60);
    match s.insert_snapshot(&over, Some(&quota)).await {
        Err(StoreError::QuotaExceeded { kind, limit }) => {
            assert_eq!((kind, limit), (QuotaKind::Disk, 200));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.snapshot("t1", "snap-c").await.unwrap(), None);
    // Another tenant's total is its own.
    s.insert_snapshot(&snapshot_row("t2", "snap-t2", "sb-9", 190), Some(&quota))
        .await
        .unwrap();
    let fits = snapshot_row("t1", "snap-d", "sb-1", 50);
    s.insert_snapshot(&fits, Some(&quota)).await.unwrap();

    // A new sandbox's disk quota adds to the snapshots: 200 + 10 > 205.
    let sandbox_quota = Quota {
        max_disk_bytes: Some(205),
        default_disk_bytes: Some(10),
        ..Quota::default()
    };
    let mut creates = creating("t1", "after-snapshots");
    creates.quota = Some(sandbox_quota.clone());
    match s.enqueue(creates, audit("t1")).await {
        Err(StoreError::QuotaExceeded { kind, .. }) => assert_eq!(kind, QuotaKind::Disk),
        other => panic!("{other:?}"),
    }
    assert!(!s.delete_snapshot("t2", "snap-d").await.unwrap());
    assert!(s.delete_snapshot("t1", "snap-d").await.unwrap());
    assert!(!s.delete_snapshot("t1", "snap-d").await.unwrap());
    let mut creates = creating("t1", "after-snapshots");
    creates.quota = Some(sandbox_quota);
    s.enqueue(creates, audit("t1")).await.unwrap();
    assert_eq!(
        ids(s.list_snapshots("t1", None).await.unwrap()),
        ["snap-a", "snap-b"]
    );
}

/// SQLite only: a commit reaches the database file itself (not only its write-ahead log) soon
/// after, by the store's background checkpoint, not when the log has grown by a thousand pages
/// at the writer's expense. The database file is copied alone, without its `-wal`, and the copy
/// opened: it holds what has been checkpointed and nothing else.
pub async fn sqlite_commits_are_checkpointed_beside_the_writer(t: TestStore) {
    let db = std::path::PathBuf::from(t.url.trim_start_matches("sqlite://"));
    let wal = db.with_extension("db-wal");
    let new = job("t1", Some("t1/a"));
    let (uuid, id) = (new.id, new.id.to_string());
    t.store.enqueue(new, audit("t1")).await.unwrap();
    let copies = tempfile::tempdir().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut round = 0;
    loop {
        round += 1;
        let copy = copies.path().join(format!("copy{round}.db"));
        std::fs::copy(&db, &copy).unwrap();
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", copy.display()))
            .await
            .unwrap();
        // Before the first checkpoint the copy has no `jobs` table at all.
        let found: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = ?")
            .bind(&id)
            .fetch_one(&mut conn)
            .await
            .ok();
        conn.close().await.unwrap();
        if found == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the committed job is still only in the log ({} bytes) after 10 s",
            std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The store goes on working beside its checkpoints.
    assert!(t.store.job(None, uuid).await.unwrap().is_some());
}

/// PostgreSQL only: connections the server dropped while they sat in the pool (a restart, an
/// administrator's `pg_terminate_backend`) are replaced before anything uses them, so no
/// statement fails for it: the pools check each connection before handing it out (sqlx's
/// default; pinging only connections idle for a while was measured and not kept, see
/// BENCHMARKS.md, tenth machine).
pub async fn postgres_connections_dropped_while_idle_are_replaced_unseen(t: TestStore) {
    let s = t.store.clone();
    // Open several connections of both pools: concurrent submissions, then a claim and a
    // completion (the hot pool).
    let submit_together = |round: &'static str| {
        let s = s.clone();
        async move {
            let calls = (0..8).map(|i| {
                let s = s.clone();
                async move {
                    s.enqueue(job("t1", Some(&format!("t1/w{i}"))), audit("t1"))
                        .await
                        .unwrap_or_else(|e| panic!("{round}: submission {i} failed: {e}"))
                }
            });
            futures::future::join_all(calls).await
        }
    };
    submit_together("before").await;
    let claimed = claim(s.as_ref(), "n1", 4).await;
    s.complete("n1", &[ok(claimed[0].id)], Utc::now())
        .await
        .unwrap();

    let killed = super::support::pg_cluster::terminate_backends(&t.url).await;
    assert!(
        killed >= 3,
        "the store's pools had several connections: {killed}"
    );
    // The connections sit idle in the pool meanwhile, as they would across a restart.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Every statement succeeds at its first attempt, on either pool.
    let after = submit_together("after the backends were killed").await;
    assert_eq!(after.len(), 8);
    let now = Utc::now();
    let more = s
        .claim("n1", 8, now, LEASE)
        .await
        .expect("a claim after the backends were killed");
    let done: Vec<Completion> = more.iter().map(|j| ok(j.id)).collect();
    let written = s
        .complete("n1", &done, Utc::now())
        .await
        .expect("a completion after the backends were killed");
    assert_eq!(written.len(), done.len());
    let first = after[0].job.id;
    assert!(
        s.job(Some("t1"), first).await.expect("a read").is_some(),
        "{first} was committed"
    );
}
