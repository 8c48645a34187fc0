//! Jobs of one workspace never overlap and run in FIFO order; workspaces run in parallel.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::{Db, spawn_app};
use crate::on_both_databases;

on_both_databases!(
    one_workspace_runs_fifo_without_overlap,
    workspaces_run_in_parallel
);

async fn one_workspace_runs_fifo_without_overlap(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let id = app.sandbox("serial").await;
    // 50 concurrent submissions, each appending start/end markers around a short sleep.
    let submissions = (0..50).map(|i| {
        let app = &app;
        let id = id.clone();
        async move {
            let command =
                format!("echo \"start {i}\" >> log.txt; sleep 0.02; echo \"end {i}\" >> log.txt");
            let job = app
                .submit(
                    "execute_shell",
                    json!({"sandbox_id": id, "command": command}),
                )
                .await;
            (i, job)
        }
    });
    let submitted: Vec<(usize, String)> = futures::future::join_all(submissions).await;
    for (_, job) in &submitted {
        let done = app.wait(job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    let log = app.shell(&id, "cat log.txt").await["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 100);
    // No overlap: every start is immediately followed by its own end.
    let mut order = Vec::new();
    for pair in lines.chunks(2) {
        let start = pair[0].strip_prefix("start ").expect("a start line");
        let end = pair[1].strip_prefix("end ").expect("an end line");
        assert_eq!(start, end, "intervals overlap: {pair:?}");
        order.push(start.parse::<usize>().unwrap());
    }
    // FIFO: execution order is enqueue order (job ids are UUIDv7, ordered by enqueue time on
    // this node; the queue's own sequence is what the jobs list is ordered by).
    let (_, page) = app
        .get_json("/v1/jobs?sandbox=serial&tool=execute_shell&limit=100")
        .await;
    let by_job: HashMap<&str, usize> = submitted.iter().map(|(i, j)| (j.as_str(), *i)).collect();
    let mut enqueue_order: Vec<usize> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| by_job.get(j["job_id"].as_str().unwrap()).copied())
        .collect();
    enqueue_order.reverse();
    assert_eq!(enqueue_order.len(), 50);
    assert_eq!(
        order, enqueue_order,
        "execution order differs from enqueue order"
    );
}

async fn workspaces_run_in_parallel(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(app.sandbox(&format!("par-{i}")).await);
    }
    let mut jobs = Vec::new();
    for id in &ids {
        jobs.push(
            app.submit(
                "execute_shell",
                json!({"sandbox_id": id, "command": "date +%s.%N; sleep 2; date +%s.%N"}),
            )
            .await,
        );
    }
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for job in &jobs {
        let done = app.wait(job).await;
        let out = done["result"]["stdout"].as_str().unwrap().to_string();
        let mut times = out.lines().map(|l| l.parse::<f64>().unwrap());
        starts.push(times.next().unwrap());
        ends.push(times.next().unwrap());
    }
    let latest_start = starts.iter().cloned().fold(f64::MIN, f64::max);
    let earliest_end = ends.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        latest_start < earliest_end,
        "the four workspaces did not all run at once: starts {starts:?}, ends {ends:?}"
    );
    let wall = ends.iter().cloned().fold(f64::MIN, f64::max)
        - starts.iter().cloned().fold(f64::MAX, f64::min);
    let sum: f64 = starts.iter().zip(&ends).map(|(s, e)| e - s).sum();
    // Implied by the overlap (all four share an instant), checked for the record.
    assert!(
        wall < sum * 0.75,
        "wall {wall}s is not well under the sum {sum}s"
    );
}
