//! The worker pool with executors written for the test: panics, transient failures, graceful
//! shutdown, and the rescuer. Real SQLite, real actix actors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use daytona_mcp::actors::lease::Rescuer;
use daytona_mcp::actors::{Executor, JobContext, Outcome, Pool, PoolConfig};
use daytona_mcp::audit::Caller;
use daytona_mcp::metrics::Metrics;
use daytona_mcp::queue::Queue;
use daytona_mcp::store::{self, DatabaseUrl, ErrorReason, Job, JobError, JobState, NewJob};
use serde_json::json;

/// Panics on `{"panic": true}`, fails transiently `{"flaky": n}` times, waits for cancellation
/// on `{"block": true}`, and otherwise echoes `n`.
struct TestExecutor {
    flaky_calls: AtomicUsize,
}

#[async_trait]
impl Executor for TestExecutor {
    async fn execute(&self, job: &Job, ctx: JobContext) -> Outcome {
        let args = &job.arguments;
        if args["panic"] == true {
            panic!("boom in job {}", args["n"]);
        }
        if let Some(times) = args["flaky"].as_u64() {
            let call = self.flaky_calls.fetch_add(1, Ordering::SeqCst) as u64;
            if call < times {
                return Outcome::Transient {
                    error: JobError::new(ErrorReason::DriverUnavailable, "backend down"),
                };
            }
        }
        if let Some(ms) = args["sleep_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if args["block"] == true {
            ctx.cancel.cancelled().await;
            return Outcome::Cancelled {
                result: None,
                exit_code: None,
            };
        }
        Outcome::Succeeded {
            result: json!({"n": args["n"]}),
            exit_code: Some(0),
        }
    }
}

struct Harness {
    queue: Queue,
    pool: Pool,
    metrics: Metrics,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(PoolConfig {
        node_id: "test-node".into(),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..PoolConfig::default()
    })
    .await
}

async fn harness_with(config: PoolConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::new(format!("sqlite://{}", dir.path().join("q.db").display()));
    let store = store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let queue = Queue::new(store, Duration::from_millis(200));
    let metrics = Metrics::new();
    let pool = Pool::start(
        queue.clone(),
        Arc::new(TestExecutor {
            flaky_calls: AtomicUsize::new(0),
        }),
        metrics.clone(),
        config,
    )
    .await
    .unwrap();
    Harness {
        queue,
        pool,
        metrics,
        _dir: dir,
    }
}

impl Harness {
    async fn enqueue(
        &self,
        workspace: Option<&str>,
        args: serde_json::Value,
        max_attempts: i32,
    ) -> uuid::Uuid {
        let mut job = NewJob::new("t", "test", args);
        job.workspace = workspace.map(str::to_string);
        job.max_attempts = max_attempts;
        let audit = Caller::internal("t").entry("test", None, None, "accepted", None);
        self.queue.enqueue(job, audit).await.unwrap().job.id
    }

    async fn finished(&self, id: uuid::Uuid) -> Job {
        let job = self
            .queue
            .wait(None, id, Duration::from_secs(20))
            .await
            .unwrap()
            .unwrap();
        assert!(job.state.is_terminal(), "job still {}", job.state);
        job
    }
}

/// While a node's own completions keep it busy, its claims look only at the workspaces it just
/// freed; anything else that may have become claimable must make the next claim look at every
/// workspace. Here a chain of jobs in one workspace keeps the node's completions coming (its
/// claims come back short: three of four permits stay free); a job of another workspace,
/// enqueued meanwhile, starts at once, long before the chain ends (the poll, the backstop, is a
/// minute away).
#[actix_web::test]
async fn work_enqueued_while_a_workspace_chain_runs_is_claimed_next() {
    let h = harness_with(PoolConfig {
        node_id: "test-node".into(),
        concurrency: 4,
        poll_interval: Duration::from_secs(60),
        ..PoolConfig::default()
    })
    .await;
    let mut chain = Vec::new();
    for n in 0..30 {
        chain.push(
            h.enqueue(Some("t/chain"), json!({"n": n, "sleep_ms": 20}), 1)
                .await,
        );
    }
    // Let the chain get going, so the node is in the middle of its own completions.
    h.finished(chain[2]).await;
    let mut urgent = NewJob::new("t", "test", json!({"n": "urgent"}));
    urgent.workspace = Some("t/other".into());
    urgent.priority = 10;
    let audit = Caller::internal("t").entry("test", None, None, "accepted", None);
    let urgent = h.queue.enqueue(urgent, audit).await.unwrap().job.id;
    let urgent = h.finished(urgent).await;
    assert_eq!(urgent.state, JobState::Succeeded);
    let last = h.finished(*chain.last().unwrap()).await;
    assert!(
        urgent.started_at < last.started_at,
        "the urgent job waited for the whole chain"
    );
    let done_before = h
        .queue
        .store()
        .list_jobs(&store::JobFilter {
            workspace: Some("t/chain".into()),
            tenant: Some("t".into()),
            state: Some(JobState::Succeeded),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .filter(|j| j.finished_at <= urgent.started_at)
        .count();
    assert!(
        done_before < 10,
        "{done_before} chain jobs finished before the urgent one started"
    );
    h.pool.shutdown(Duration::from_secs(5)).await;
}

#[actix_web::test]
async fn a_panicking_job_fails_and_its_workspace_keeps_working() {
    let h = harness().await;
    let first = h.enqueue(Some("w"), json!({"n": 1}), 1).await;
    let boom = h
        .enqueue(Some("w"), json!({"n": 2, "panic": true}), 1)
        .await;
    let after = h.enqueue(Some("w"), json!({"n": 3}), 1).await;
    let other = h.enqueue(None, json!({"n": 4, "panic": true}), 1).await;

    assert_eq!(h.finished(first).await.state, JobState::Succeeded);
    let boom = h.finished(boom).await;
    assert_eq!(boom.state, JobState::Failed);
    let error = boom.error.unwrap();
    assert_eq!(error.reason, ErrorReason::Panic);
    assert!(error.message.contains("boom in job 2"), "{}", error.message);
    let after = h.finished(after).await;
    assert_eq!(after.state, JobState::Succeeded);
    assert_eq!(after.result, Some(json!({"n": 3})));
    // A panic outside any workspace is caught too.
    assert_eq!(
        h.finished(other).await.error.unwrap().reason,
        ErrorReason::Panic
    );
    assert_eq!(h.metrics.actor_restarts_total.get(), 1);
    // The restarted actor still serves its workspace.
    let later = h.enqueue(Some("w"), json!({"n": 5}), 1).await;
    assert_eq!(h.finished(later).await.state, JobState::Succeeded);
    h.pool.shutdown(Duration::from_secs(5)).await;
}

#[actix_web::test]
async fn transient_failures_retry_with_backoff_until_attempts_run_out() {
    let h = harness().await;
    let recovers = h.enqueue(Some("w"), json!({"n": 1, "flaky": 2}), 3).await;
    let job = h.finished(recovers).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.attempts, 3);
    let gives_up = h.enqueue(Some("w"), json!({"n": 2, "flaky": 100}), 2).await;
    let job = h.finished(gives_up).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts, 2);
    let error = job.error.unwrap();
    assert_eq!(error.reason, ErrorReason::DriverUnavailable);
    assert!(
        error.message.contains("gave up after 2 attempt"),
        "{}",
        error.message
    );
    h.pool.shutdown(Duration::from_secs(5)).await;
}

#[actix_web::test]
async fn graceful_shutdown_interrupts_what_is_still_running() {
    let h = harness().await;
    let blocked = h.enqueue(Some("w"), json!({"block": true}), 1).await;
    for _ in 0..100 {
        if h.pool.running() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.pool.running(), 1);
    let queue = h.queue.clone();
    h.pool.shutdown(Duration::from_millis(200)).await;
    let job = queue.store().job(None, blocked).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed, "left {job:?}");
    assert_eq!(job.error.unwrap().reason, ErrorReason::Interrupted);
}

#[actix_web::test]
async fn rescuer_resolves_expired_leases_and_wakes_waiters() {
    // No pool here: this node must not claim the seeded jobs itself.
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::new(format!("sqlite://{}", dir.path().join("q.db").display()));
    let store = store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let queue = Queue::new(store.clone(), Duration::from_secs(60));
    // Jobs claimed by a node that then died, on both sides of the lease horizon.
    let mut expired = NewJob::new("t", "execute_shell", json!({}));
    expired.workspace = Some("dead/a".into());
    let expired = store
        .enqueue(
            expired,
            Caller::internal("t").entry("x", None, None, "accepted", None),
        )
        .await
        .unwrap()
        .job
        .id;
    store
        .claim("dead-node", 10, Utc::now(), Duration::from_secs(1))
        .await
        .unwrap();
    let mut fresh = NewJob::new("t", "execute_shell", json!({}));
    fresh.workspace = Some("dead/b".into());
    let fresh = store
        .enqueue(
            fresh,
            Caller::internal("t").entry("x", None, None, "accepted", None),
        )
        .await
        .unwrap()
        .job
        .id;
    store
        .claim("live-node", 10, Utc::now(), Duration::from_secs(3600))
        .await
        .unwrap();
    let waiter = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.wait(None, expired, Duration::from_secs(30)).await })
    };
    let metrics = Metrics::new();
    let rescuer = Rescuer::new(queue.clone(), metrics.clone());
    let rescued = rescuer
        .run_once(Utc::now() + chrono::Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!(
        rescued.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![expired]
    );
    let woken = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter was woken")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(woken.state, JobState::Failed);
    assert_eq!(woken.error.unwrap().reason, ErrorReason::Interrupted);
    // A job the rescuer fails never reaches the completer; it is counted all the same.
    assert_eq!(
        metrics
            .failures_total
            .with_label_values(&["execute_shell", "interrupted"])
            .get(),
        1
    );
    assert_eq!(
        store.job(None, fresh).await.unwrap().unwrap().state,
        JobState::Running
    );
}

/// A node whose heartbeat could not renew its leases for longer than the lease (a database
/// outage, here a heartbeat far slower than the lease): its own rescuer renews the leases of the
/// jobs it is running before it looks for expired ones, so it never fails its own live work.
#[actix_web::test]
async fn a_nodes_rescuer_never_fails_the_jobs_it_is_running() {
    let h = harness_with(PoolConfig {
        node_id: "slow-heart".into(),
        lease: Duration::from_secs(1),
        heartbeat_interval: Duration::from_secs(30),
        rescue_interval: Duration::from_millis(200),
        ..PoolConfig::default()
    })
    .await;
    let id = h
        .enqueue(Some("w"), json!({"n": 7, "sleep_ms": 2500}), 1)
        .await;
    let job = h.finished(id).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    assert_eq!(job.result, Some(json!({"n": 7})));
}
