//! The load generator of the chaos tests: asynchronous submissions through the jobs API
//! (`POST /v1/jobs` with an idempotency key per logical job, retried on another node or after
//! `Retry-After` like a careful client), then waiting for every accepted id and checking the
//! guarantees against the jobs' rows and the logs the executions wrote inside their sandboxes.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::harness::{Answer, client, is_terminal};

/// The file each execution appends its start and end lines to, in its sandbox's root.
pub const LOG: &str = "chaos.log";

/// The command of an execution job. Constant: the job's marker travels in its environment
/// (`MARK`), never in the command text. The sleep keeps it running long enough for a kill to
/// land mid-run, and makes two overlapping runs in one sandbox interleave their lines.
pub const EXEC: &str =
    "echo \"start $MARK\" >> chaos.log; sleep 0.2; echo \"end $MARK\" >> chaos.log";

/// What a submitted job is.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// `execute_shell` of [`EXEC`] with this marker (not retry-safe: never re-run).
    Exec(String),
    /// `get_sandbox_info` (retry-safe).
    Info,
    /// `file_operation` `list` (retry-safe).
    List,
    /// `list_sandboxes` (retry-safe, no workspace).
    ListSandboxes,
}

impl Kind {
    pub fn is_exec(&self) -> bool {
        matches!(self, Kind::Exec(_))
    }
}

/// One job, planned and then (maybe) accepted.
#[derive(Clone, Debug)]
pub struct Planned {
    pub index: usize,
    pub sandbox: String,
    pub kind: Kind,
    pub idempotency_key: String,
}

impl Planned {
    /// The body of `POST /v1/jobs`.
    pub fn body(&self) -> Value {
        let (tool, arguments) = match &self.kind {
            Kind::Exec(marker) => (
                "execute_shell",
                json!({"sandbox_id": self.sandbox, "command": EXEC, "env": {"MARK": marker}}),
            ),
            Kind::Info => ("get_sandbox_info", json!({"sandbox_id": self.sandbox})),
            Kind::List => (
                "file_operation",
                json!({"sandbox_id": self.sandbox, "operation": "list", "file_path": "."}),
            ),
            Kind::ListSandboxes => ("list_sandboxes", json!({})),
        };
        json!({"tool": tool, "arguments": arguments, "idempotency_key": self.idempotency_key})
    }
}

/// The standard mix over `sandboxes`: 60 % executions, 20 % `get_sandbox_info`, 10 %
/// `file_operation list`, 10 % `list_sandboxes`, round-robin over the sandboxes.
pub fn plan(run: &str, sandboxes: &[String], jobs: usize) -> Vec<Planned> {
    (0..jobs)
        .map(|i| {
            let kind = match i % 10 {
                0 | 1 | 2 | 5 | 6 | 7 => Kind::Exec(format!("m{run}x{i}")),
                3 | 8 => Kind::Info,
                4 => Kind::List,
                _ => Kind::ListSandboxes,
            };
            Planned {
                index: i,
                sandbox: sandboxes[i % sandboxes.len()].clone(),
                kind,
                idempotency_key: format!("chaos-{run}-{i}"),
            }
        })
        .collect()
}

/// A job the server accepted (202 with an id).
#[derive(Clone, Debug)]
pub struct Accepted {
    pub job: Planned,
    pub id: String,
    /// The node (index) that accepted it.
    pub node: usize,
}

/// The node base URLs a load sends to; `None` for a node that is down. The test updates it
/// when it kills or restarts a node.
pub type Targets = Arc<RwLock<Vec<Option<String>>>>;

pub fn targets(bases: Vec<String>) -> Targets {
    Arc::new(RwLock::new(bases.into_iter().map(Some).collect()))
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub accepted: Vec<Accepted>,
    /// 503 answers (each followed by a retry of the same key).
    pub unavailable: usize,
    /// 503 answers without a `Retry-After` header, 5xx other than 503, unexpected statuses.
    pub violations: Vec<String>,
    /// Requests that failed at the transport (connection refused by a killed node, a timeout).
    pub transport_errors: usize,
    /// Every submission attempt's status while the load ran, with its time since the start.
    pub statuses: Vec<(Duration, u16)>,
}

/// A running load: `workers` tasks submitting the planned jobs in order, each waiting `pace`
/// between its submissions, until every job is accepted or `stop` is called.
pub struct Load {
    seen: Arc<Mutex<Seen>>,
    accepted_count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(
        key: &str,
        targets: Targets,
        jobs: Vec<Planned>,
        workers: usize,
        pace: Duration,
    ) -> Load {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let accepted_count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let jobs = Arc::new(jobs);
        let started = Instant::now();
        let mut handles = Vec::new();
        for worker in 0..workers {
            let (seen, accepted_count, stop, next, jobs, targets) = (
                seen.clone(),
                accepted_count.clone(),
                stop.clone(),
                next.clone(),
                jobs.clone(),
                targets.clone(),
            );
            let key = key.to_string();
            handles.push(tokio::spawn(async move {
                let http = client(Duration::from_secs(20));
                let mut turn = worker;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else { return };
                    // The same key until accepted: a retry never makes a second job.
                    loop {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        turn += 1;
                        let base = {
                            let t = targets.read().unwrap();
                            let live: Vec<(usize, String)> = t
                                .iter()
                                .enumerate()
                                .filter_map(|(n, b)| b.clone().map(|b| (n, b)))
                                .collect();
                            if live.is_empty() {
                                None
                            } else {
                                Some(live[turn % live.len()].clone())
                            }
                        };
                        let Some((node, base)) = base else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let sent = http
                            .post(format!("{base}/v1/jobs"))
                            .bearer_auth(&key)
                            .json(&job.body())
                            .send()
                            .await;
                        let answer = match sent {
                            Ok(r) => super::harness::answer(r).await,
                            Err(e) => Err(e),
                        };
                        match answer {
                            Ok(a) => {
                                let status = a.status;
                                seen.lock()
                                    .unwrap()
                                    .statuses
                                    .push((started.elapsed(), status));
                                match classify(&a) {
                                    Verdict::Accepted(id) => {
                                        seen.lock().unwrap().accepted.push(Accepted {
                                            job: job.clone(),
                                            id,
                                            node,
                                        });
                                        accepted_count.fetch_add(1, Ordering::SeqCst);
                                        break;
                                    }
                                    Verdict::RetryAfter(wait) => {
                                        seen.lock().unwrap().unavailable += 1;
                                        tokio::time::sleep(wait).await;
                                    }
                                    Verdict::Violation(v) => {
                                        seen.lock()
                                            .unwrap()
                                            .violations
                                            .push(format!("job {} on n{node}: {v}", job.index));
                                        tokio::time::sleep(Duration::from_millis(200)).await;
                                    }
                                }
                            }
                            Err(_) => {
                                seen.lock().unwrap().transport_errors += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                }
            }));
        }
        Load {
            seen,
            accepted_count,
            stop,
            handles,
        }
    }

    /// How many jobs were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted_count.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` jobs are accepted (panics after `within`).
    pub async fn wait_accepted(&self, n: usize, within: Duration) {
        let started = Instant::now();
        while self.accepted() < n {
            assert!(
                started.elapsed() < within,
                "only {} of {n} jobs accepted within {within:?}: {:?}",
                self.accepted(),
                self.seen.lock().unwrap().violations
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the workers to submit everything (or stops them first when `stop`), and
    /// returns what they saw.
    pub async fn finish(self, stop: bool) -> Seen {
        if stop {
            self.stop.store(true, Ordering::SeqCst);
        }
        for h in self.handles {
            h.await.expect("a load worker panicked");
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

enum Verdict {
    Accepted(String),
    RetryAfter(Duration),
    Violation(String),
}

/// What one submission's answer means for the load.
fn classify(a: &Answer) -> Verdict {
    match a.status {
        202 | 200 => match a.body["job_id"].as_str() {
            Some(id) => Verdict::Accepted(id.to_string()),
            None => Verdict::Violation(format!("{} without a job id: {}", a.status, a.body)),
        },
        // The wait is capped at a second (the server asks for 5): a careful client honours
        // the header, a test only needs to see it and keep its run short.
        503 => match a.retry_after.as_deref().map(str::parse::<u64>) {
            Some(Ok(s)) => {
                Verdict::RetryAfter(Duration::from_secs(s.min(1)).max(Duration::from_millis(100)))
            }
            _ => Verdict::Violation(format!(
                "503 without a numeric Retry-After ({:?}): {}",
                a.retry_after, a.body
            )),
        },
        s => Verdict::Violation(format!("status {s}: {}", a.body)),
    }
}

/// Waits until every accepted job is terminal, asking any live node (long-polls); returns each
/// job's row by id. Panics, naming the stragglers, after `within`.
pub async fn wait_terminal(
    key: &str,
    targets: &Targets,
    accepted: &[Accepted],
    within: Duration,
) -> HashMap<String, Value> {
    let http = client(Duration::from_secs(30));
    let started = Instant::now();
    let mut done: HashMap<String, Value> = HashMap::new();
    let mut last: HashMap<String, Value> = HashMap::new();
    loop {
        let pending: Vec<String> = accepted
            .iter()
            .map(|a| a.id.clone())
            .filter(|id| !done.contains_key(id))
            .collect();
        if pending.is_empty() {
            return done;
        }
        if started.elapsed() > within {
            let sample: Vec<String> = pending
                .iter()
                .take(10)
                .map(|id| {
                    format!(
                        "{id}: {}",
                        last.get(id).map_or("?".into(), |j| j["status"].to_string())
                    )
                })
                .collect();
            panic!(
                "{} of {} accepted jobs not terminal after {within:?}, e.g. {sample:?}",
                pending.len(),
                accepted.len()
            );
        }
        let bases: Vec<String> = targets.read().unwrap().iter().flatten().cloned().collect();
        assert!(!bases.is_empty(), "no node left to ask");
        let results: Vec<(String, Option<Value>)> =
            futures::stream::iter(pending.into_iter().enumerate())
                .map(|(i, id)| {
                    let base = bases[i % bases.len()].clone();
                    let http = http.clone();
                    let key = key.to_string();
                    async move {
                        let r = http
                            .get(format!("{base}/v1/jobs/{id}?wait=5"))
                            .bearer_auth(&key)
                            .send()
                            .await;
                        let job = match r {
                            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                            Ok(r) if r.status().as_u16() == 404 => {
                                Some(json!({"status": "MISSING: 404 for an accepted id"}))
                            }
                            _ => None,
                        };
                        (id, job)
                    }
                })
                .buffer_unordered(32)
                .collect()
                .await;
        for (id, job) in results {
            if let Some(job) = job {
                let status = job["status"].as_str().unwrap_or("");
                assert!(
                    !status.starts_with("MISSING"),
                    "accepted job {id} does not exist (404)"
                );
                if is_terminal(status) {
                    done.insert(id, job);
                } else {
                    last.insert(id, job);
                }
            }
        }
    }
}

/// One sandbox's execution log, as lines.
pub fn read_log(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The facts of one run, for assertions and messages.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Execution jobs that succeeded, failed `interrupted`, or failed for `other_reasons`.
    pub exec_succeeded: usize,
    pub exec_interrupted: usize,
    /// Retry-safe jobs that succeeded, and how many of them ran more than once (rescued).
    pub safe_succeeded: usize,
    pub safe_requeued: usize,
    /// Jobs of sandboxes the test expects to fail clearly (a dead node's), by reason.
    pub expected_failures: BTreeMap<String, usize>,
    /// Broken guarantees; empty on success.
    pub violations: Vec<String>,
}

/// Checks the guarantees. `logs` maps a sandbox name to its execution log's lines;
/// `doomed` names the sandboxes whose jobs may fail with one of `doomed_reasons` (a dead
/// node's sandboxes; empty otherwise).
pub fn verify(
    accepted: &[Accepted],
    jobs: &HashMap<String, Value>,
    logs: &BTreeMap<String, Vec<String>>,
    doomed: &[String],
    doomed_reasons: &[&str],
) -> Verdicts {
    let mut v = Verdicts::default();
    // The logs: each marker starts at most once; within a sandbox, an end line always closes
    // the start line just before it (no interleaving, so no two executions overlapped).
    let mut starts: HashMap<String, usize> = HashMap::new();
    let mut ends: HashMap<String, usize> = HashMap::new();
    for (sandbox, lines) in logs {
        let mut open: Option<String> = None;
        for (n, line) in lines.iter().enumerate() {
            match line.split_once(' ') {
                Some(("start", m)) => {
                    *starts.entry(m.to_string()).or_default() += 1;
                    // A start after an unclosed start: the earlier execution was killed (its
                    // end must then never appear).
                    open = Some(m.to_string());
                }
                Some(("end", m)) => {
                    *ends.entry(m.to_string()).or_default() += 1;
                    if open.as_deref() != Some(m) {
                        v.violations.push(format!(
                            "{sandbox} line {}: `end {m}` while {open:?} was the open execution \
                             (two executions overlapped)",
                            n + 1
                        ));
                    }
                    open = None;
                }
                _ => v
                    .violations
                    .push(format!("{sandbox} line {}: malformed {line:?}", n + 1)),
            }
        }
    }
    for (m, count) in &starts {
        if *count > 1 {
            v.violations
                .push(format!("execution {m} started {count} times (ran twice)"));
        }
    }
    for a in accepted {
        let Some(job) = jobs.get(&a.id) else {
            v.violations
                .push(format!("accepted job {} not terminal", a.id));
            continue;
        };
        let status = job["status"].as_str().unwrap_or("");
        let reason = job["error"]["reason"].as_str().unwrap_or("");
        let is_doomed = a.job.kind != Kind::ListSandboxes && doomed.contains(&a.job.sandbox);
        if is_doomed && status == "failed" && doomed_reasons.contains(&reason) {
            *v.expected_failures.entry(reason.to_string()).or_default() += 1;
            continue;
        }
        match &a.job.kind {
            Kind::Exec(m) => {
                let (s, e) = (
                    starts.get(m).copied().unwrap_or(0),
                    ends.get(m).copied().unwrap_or(0),
                );
                match (status, reason) {
                    ("succeeded", _) => {
                        v.exec_succeeded += 1;
                        if (s, e) != (1, 1) || job["exit_code"] != 0 {
                            v.violations.push(format!(
                                "execution {m} succeeded with {s} start and {e} end lines, \
                                 exit code {}",
                                job["exit_code"]
                            ));
                        }
                    }
                    ("failed", "interrupted") => {
                        v.exec_interrupted += 1;
                        if job["attempts"] != 1 {
                            v.violations.push(format!(
                                "interrupted execution {m} has attempts {} (re-run?)",
                                job["attempts"]
                            ));
                        }
                    }
                    _ => v.violations.push(format!(
                        "execution {m} ({}) ended {status} {reason}: {}",
                        a.id, job["error"]
                    )),
                }
            }
            _ => {
                if status == "succeeded" {
                    v.safe_succeeded += 1;
                    if job["attempts"].as_i64().unwrap_or(0) > 1 {
                        v.safe_requeued += 1;
                    }
                } else {
                    v.violations.push(format!(
                        "retry-safe job {} ({:?} on {}) ended {status} {reason}: {}",
                        a.id, a.job.kind, a.job.sandbox, job["error"]
                    ));
                }
            }
        }
    }
    v
}

/// How many executions in these logs have started and not ended: the ones running now (or
/// killed).
pub fn open_executions(logs: &[PathBuf]) -> usize {
    logs.iter()
        .filter(|p| read_log(p).last().is_some_and(|l| l.starts_with("start ")))
        .count()
}

/// How many of the tenant's jobs are running `execute_shell` now (on any node).
pub async fn running_execs(key: &str, base: &str) -> usize {
    let http = client(Duration::from_secs(10));
    let Ok(r) = http
        .get(format!("{base}/v1/jobs?state=running&limit=200"))
        .bearer_auth(key)
        .send()
        .await
    else {
        return 0;
    };
    let page: Value = r.json().await.unwrap_or(Value::Null);
    page["jobs"].as_array().map_or(0, |jobs| {
        jobs.iter().filter(|j| j["tool"] == "execute_shell").count()
    })
}
