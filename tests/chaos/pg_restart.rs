//! PostgreSQL restarted during load, and the server's backends killed with
//! `pg_terminate_backend`, on a private cluster (never the shared one): no accepted job is lost
//! (every 202 id exists and ends terminal), submissions while the database is down get 503 with
//! `Retry-After` (never a 500, never an id that does not exist), `/healthz` stays 200, `/readyz`
//! reports not ready and then ready again, and the server recovers without a restart of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Node, NodeSpec, Timing, client, new_key};
use crate::load::{Load, plan, targets, verify, wait_terminal};
use crate::support::pg_cluster::PgCluster;
use crate::{read_logs, serial, support};

const SANDBOXES: usize = 10;

/// `/healthz` and `/readyz` answers (status, or 0 for a transport error) over time.
#[derive(Default)]
struct Probes {
    healthz: Vec<(Duration, u16)>,
    readyz: Vec<(Duration, u16)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_and_killed_backends_lose_nothing() {
    let _serial = serial().await;
    let Some(cluster) = PgCluster::start() else {
        if std::env::var("DAYTONA_MCP_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!("PostgreSQL's server programs (initdb, pg_ctl) are required but not installed");
        }
        support::skipped(
            support::Skip::Postgres,
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed",
        );
        return;
    };
    let db = "dmcp_chaos";
    let url = cluster.create_database(db).await;
    let root = tempfile::tempdir().unwrap();
    let key = new_key();
    // A submission waits for a connection at most a second, a third of the outage below, so
    // that submissions during the outage are refused with 503 whether or not a statement was
    // in flight when the database stopped. (With the default ten seconds, a stop that finds the
    // pool idle can leave every submission waiting through the outage, since sqlx retries a
    // refused connection until the timeout, and then accepted: no 503, which this test asserts;
    // seen in one fresh-clone run of several.)
    let mut node = Node::start(NodeSpec::new(
        0,
        root.path(),
        Some(url),
        &key,
        &Timing::default(),
        &[(
            "DAYTONA_MCP_DATABASE__ACQUIRE_TIMEOUT_MS".into(),
            "1000".into(),
        )],
    ))
    .await;
    let (names, logs) = crate::sandboxes_with_logs(&node, "p", SANDBOXES).await;

    // Probes every 100 ms for the whole run.
    let probes = Arc::new(Mutex::new(Probes::default()));
    let probing = Arc::new(AtomicBool::new(true));
    let prober = {
        let (probes, probing, base) = (probes.clone(), probing.clone(), node.base.clone());
        tokio::spawn(async move {
            let http = client(Duration::from_secs(10));
            let t0 = Instant::now();
            while probing.load(Ordering::SeqCst) {
                for (path, healthz) in [("/healthz", true), ("/readyz", false)] {
                    let status = match http.get(format!("{base}{path}")).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    let mut p = probes.lock().unwrap();
                    let list = if healthz {
                        &mut p.healthz
                    } else {
                        &mut p.readyz
                    };
                    list.push((t0.elapsed(), status));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let to = targets(vec![node.base.clone()]);
    // An open-ended paced load (4 workers, ~100 submissions/s), stopped below.
    let load = Load::start(
        &key,
        to.clone(),
        plan(&run, &names, 100_000),
        4,
        Duration::from_millis(40),
    );
    load.wait_accepted(60, Duration::from_secs(60)).await;

    // Connection loss: every backend of the test's database killed, twice.
    let killed = cluster.terminate_backends(db).await;
    assert!(killed >= 1, "the server holds no connection to kill");
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.terminate_backends(db).await;
    let n = load.accepted();
    load.wait_accepted(n + 40, Duration::from_secs(60)).await;

    // A database outage of three seconds, during which the load keeps submitting.
    cluster.pg_stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.pg_start();
    let n = load.accepted();
    load.wait_accepted(n + 60, Duration::from_secs(60)).await;

    // A one-step restart (what `pg_ctlcluster … restart` does).
    cluster.pg_restart();
    let n = load.accepted();
    load.wait_accepted(n + 40, Duration::from_secs(60)).await;

    let seen = load.finish(true).await;
    // Let the probes see the recovered state, then stop them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    probing.store(false, Ordering::SeqCst);
    prober.await.unwrap();

    assert!(
        seen.violations.is_empty(),
        "submissions answered other than 202 or 503 + Retry-After: {:?}",
        &seen.violations[..seen.violations.len().min(20)]
    );
    assert!(
        seen.unavailable >= 1,
        "no submission was refused with 503 while the database was down"
    );
    assert_eq!(
        seen.transport_errors, 0,
        "submissions failed at the transport (hung or dropped) instead of 503"
    );
    {
        let p = probes.lock().unwrap();
        let bad: Vec<_> = p.healthz.iter().filter(|(_, s)| *s != 200).collect();
        assert!(bad.is_empty(), "/healthz was not 200: {bad:?}");
        assert!(
            p.readyz.iter().any(|(_, s)| *s == 503),
            "/readyz never reported not ready: {:?}",
            p.readyz
        );
        assert_eq!(
            p.readyz.last().map(|(_, s)| *s),
            Some(200),
            "/readyz did not report ready again"
        );
    }
    assert!(
        node.is_running() && !node.has_exited(),
        "the server exited; its log:\n{}",
        node.log_tail()
    );

    // Every accepted id exists and ends terminal, with the execution guarantees intact.
    let jobs = wait_terminal(&key, &to, &seen.accepted, Duration::from_secs(180)).await;
    let verdicts = verify(&seen.accepted, &jobs, &read_logs(&logs), &[], &[]);
    eprintln!("verdicts: {verdicts:?}");
    assert!(
        verdicts.violations.is_empty(),
        "{} violations, e.g. {:#?}",
        verdicts.violations.len(),
        &verdicts.violations[..verdicts.violations.len().min(20)]
    );
    node.kill9();
}
