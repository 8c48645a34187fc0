//! `/metrics` against reality: counters and histograms after known numbers of successes and
//! failures, `workspace_count` and the per-sandbox gauges following creates and deletes,
//! series present from start-up, the separate metrics listener, promtool's lint of the real
//! output; and the request id that ties a request, its job and their log lines together.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, required_tool, sample, spawn_app, spawn_with, test_config};
use crate::on_both_databases;

const TOOLS: [&str; 8] = [
    "create_sandbox",
    "delete_sandbox",
    "execute_code",
    "execute_shell",
    "file_operation",
    "get_sandbox_info",
    "git_operation",
    "list_sandboxes",
];

const REASONS: [&str; 10] = [
    "invalid_argument",
    "not_found",
    "conflict",
    "timeout",
    "cancelled",
    "interrupted",
    "panic",
    "driver_unavailable",
    "execution_error",
    "internal",
];

fn value(metrics: &str, series: &str) -> f64 {
    sample(metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
}

/// The sum of every sample of the family `name` (all its label sets).
fn family_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn running(metrics: &str) -> f64 {
    value(
        metrics,
        "daytona_mcp_workspace_count{driver=\"local\",status=\"running\"}",
    )
}

fn exec_count(metrics: &str, tool: &str, outcome: &str) -> f64 {
    value(
        metrics,
        &format!(
            "daytona_mcp_execution_time_seconds_count{{outcome=\"{outcome}\",tool=\"{tool}\"}}"
        ),
    )
}

fn failures(metrics: &str, tool: &str, reason: &str) -> f64 {
    value(
        metrics,
        &format!("daytona_mcp_failures_total{{reason=\"{reason}\",tool=\"{tool}\"}}"),
    )
}

/// Series of the HTTP families, the ones a request could add.
async fn http_series(app: &TestApp) -> Vec<String> {
    app.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("daytona_mcp_http_"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
        .collect()
}

on_both_databases!(metric_values_match_reality);

async fn metric_values_match_reality(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    // From start-up: every counter of a known tool and reason, at 0, and the gauges.
    let start = app.metrics().await;
    for tool in TOOLS {
        for reason in REASONS {
            assert_eq!(failures(&start, tool, reason), 0.0, "{tool} {reason}");
        }
        for outcome in ["succeeded", "failed", "cancelled"] {
            assert_eq!(exec_count(&start, tool, outcome), 0.0);
        }
    }
    for series in [
        "daytona_mcp_workspace_creation_failures_total",
        "daytona_mcp_actor_restarts_total",
        "daytona_mcp_jobs{state=\"queued\"}",
        "daytona_mcp_oldest_runnable_job_age_seconds",
        "daytona_mcp_http_requests_total{method=\"POST\",route=\"/{tool}\",status=\"200\"}",
    ] {
        assert_eq!(value(&start, series), 0.0, "{series}");
    }
    assert_eq!(running(&start), 0.0);
    assert_eq!(value(&start, "daytona_mcp_database_up"), 1.0);
    assert!(value(&start, "daytona_mcp_data_dir_size_bytes") > 0.0);

    // Creates.
    let a = app.sandbox("metrics-a").await;
    let b = app.sandbox("metrics-b").await;
    let m = app.metrics().await;
    assert_eq!(running(&m), 2.0);
    assert_eq!(exec_count(&m, "create_sandbox", "succeeded"), 2.0);

    // N successful jobs (a non-zero exit is a result, so a success of the job) and M failed ones.
    const N: f64 = 4.0;
    for command in ["true", "exit 3", "echo hi", "true"] {
        app.shell(&a, command).await;
    }
    let (_, timed_out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": a, "command": "sleep 5", "timeout_s": 1}),
        )
        .await;
    assert_eq!(timed_out["timed_out"], true, "{timed_out}");
    let (status, missing) = app
        .call(
            "/file_operation",
            json!({"sandbox_id": a, "operation": "read", "file_path": "missing.txt"}),
        )
        .await;
    assert_eq!(status, 404, "{missing}");
    const M: f64 = 2.0;
    let m = app.metrics().await;
    assert_eq!(exec_count(&m, "execute_shell", "succeeded"), N);
    assert_eq!(
        value(
            &m,
            "daytona_mcp_execution_time_seconds_bucket{outcome=\"succeeded\",tool=\"execute_shell\",le=\"+Inf\"}"
        ),
        N
    );
    assert_eq!(
        exec_count(&m, "execute_shell", "failed") + exec_count(&m, "file_operation", "failed"),
        M
    );
    assert_eq!(failures(&m, "execute_shell", "timeout"), 1.0);
    assert_eq!(failures(&m, "file_operation", "not_found"), 1.0);
    assert_eq!(family_sum(&m, "daytona_mcp_failures_total"), M);
    assert_eq!(
        value(
            &m,
            "daytona_mcp_queue_wait_seconds_count{tool=\"execute_shell\"}"
        ),
        N + 1.0
    );
    assert_eq!(
        value(&m, "daytona_mcp_workspace_creation_failures_total"),
        0.0
    );

    // A create that fails (the sandbox has no network for its clone) is one creation failure
    // and leaves no sandbox behind.
    let (status, body) = app
        .call(
            "/create_sandbox",
            json!({"name": "metrics-c", "git_repo": "https://127.0.0.1:1/nothing.git"}),
        )
        .await;
    assert_ne!(status, 200, "{body}");
    let m = app.metrics().await;
    assert_eq!(
        value(&m, "daytona_mcp_workspace_creation_failures_total"),
        1.0
    );
    assert_eq!(failures(&m, "create_sandbox", "execution_error"), 1.0);
    assert_eq!(running(&m), 2.0);
    assert_eq!(
        value(
            &m,
            "daytona_mcp_workspace_count{driver=\"local\",status=\"creating\"}"
        ),
        0.0
    );

    // Per-sandbox disk follows the sandboxes, and a delete.
    let disk = |id: &str| format!("daytona_mcp_workspace_disk_bytes{{sandbox=\"{id}\"}}");
    let mut last = String::new();
    for _ in 0..100 {
        last = app.metrics().await;
        if sample(&last, &disk(&a)).is_some() && sample(&last, &disk(&b)).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(value(&last, &disk(&a)) > 0.0);
    let (status, body) = app.call("/delete_sandbox", json!({"sandbox_id": b})).await;
    assert_eq!(status, 200, "{body}");
    let m = app.metrics().await;
    assert_eq!(running(&m), 1.0);
    assert_eq!(sample(&m, &disk(&b)), None, "{m}");
    assert!(sample(&m, &disk(&a)).is_some());

    // Memory of a running command, where the driver measures it (a memory cgroup).
    let (_, info) = app
        .call("/get_sandbox_info", json!({"sandbox_id": a}))
        .await;
    let measures_memory = info["resources"]["enforcement"]["cgroup_controllers"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == "memory"));
    let job = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": a, "command": "sleep 30"}),
        )
        .await;
    app.wait_for_state(&job, "running").await;
    let memory = format!("daytona_mcp_workspace_memory_bytes{{sandbox=\"{a}\"}}");
    if measures_memory {
        for _ in 0..100 {
            last = app.metrics().await;
            if sample(&last, &memory).is_some_and(|v| v > 0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(value(&last, &memory) > 0.0, "{last}");
        assert_eq!(
            value(
                &last,
                &format!("daytona_mcp_workspace_memory_limit_bytes{{sandbox=\"{a}\"}}")
            ),
            2.0 * 1024.0 * 1024.0 * 1024.0
        );
    } else {
        eprintln!("no memory cgroup here: workspace_memory_bytes is not measured");
        assert_eq!(sample(&app.metrics().await, &memory), None);
    }
    let (status, _) = app.call(&format!("/v1/jobs/{job}/cancel"), json!({})).await;
    assert_eq!(status, 202, "a running job's cancel is accepted");
    assert_eq!(app.wait(&job).await["status"], "cancelled");
    let m = app.metrics().await;
    assert_eq!(exec_count(&m, "execute_shell", "cancelled"), 1.0);
    // A cancellation is not a failure: still the M failed jobs and the failed create.
    assert_eq!(family_sum(&m, "daytona_mcp_failures_total"), M + 1.0);
    let mut gone = false;
    for _ in 0..100 {
        if sample(&app.metrics().await, &memory).is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the memory series outlived the command");

    // A refused request with a made-up method adds no series (after one such request made
    // the `other` method's series exist).
    let refused = |method: String| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let request = app.client.request(method, app.url("/v1/jobs"));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(refused("ZZWARMUP".into()).await, 401);
    http_series(&app).await;
    let before = http_series(&app).await;
    let method = format!("Z{}", uuid::Uuid::new_v4().simple()).to_uppercase();
    assert_eq!(refused(method).await, 401);
    assert_eq!(http_series(&app).await, before);

    // The real output passes promtool's lint, but for the one name DESIGN.md fixes.
    if let Some(promtool) = required_tool("promtool", "Debian's prometheus package") {
        promtool_check_metrics(&promtool, &app.metrics().await).await;
    }
}

/// `promtool check metrics` on `text`: no finding but `workspace_count`'s `_count` suffix,
/// which the design's metric name has (a gauge, not a histogram's count).
async fn promtool_check_metrics(promtool: &std::path::Path, text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let findings: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            *l != "daytona_mcp_workspace_count non-histogram and non-summary metrics should \
                   not have \"_count\" suffix"
        })
        .collect();
    assert!(findings.is_empty(), "promtool check metrics:\n{report}");
    // The check did run: the accepted finding is there.
    assert!(report.contains("daytona_mcp_workspace_count"), "{report}");
}

#[actix_web::test]
async fn every_route_template_is_counted_from_start() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let start = app.metrics().await;
    let id = uuid::Uuid::new_v4();
    for (route, method) in daytona_mcp::http::telemetry::ROUTES {
        let series = format!(
            "daytona_mcp_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"200\"}}"
        );
        assert_eq!(value(&start, &series), 0.0);
        // The same template, routed: a request to a concrete path counts under it.
        let path = route
            .replace("{id}", &id.to_string())
            .replace("{tool}", "execute_shell");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = app.authed(app.client.request(method.clone(), app.url(&path)));
        if method == reqwest::Method::POST {
            request = request.json(&json!({}));
        }
        let response = request
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        drop(response);
        let m = app.metrics().await;
        let prefix = format!(
            "daytona_mcp_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\""
        );
        let total: f64 = m
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum();
        assert!(
            total >= 1.0,
            "{method} {path} was not counted as {route}:\n{m}"
        );
    }
}

#[actix_web::test]
async fn a_separate_metrics_listener_serves_metrics() {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.server.metrics_listen = "127.0.0.1:0".into();
    let app = spawn_with(config, dir).await;
    let port = app.metrics_port.expect("a metrics listener");
    assert_ne!(port, app.port);
    let text = app
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("daytona_mcp_build_info{"), "{text}");
    // Not on the main listener, even with a key.
    let main = app.get("/metrics").await;
    assert_eq!(main.status(), 404);
}

/// The server binary, logging JSON to a file.
struct LoggingServer {
    child: std::process::Child,
    base: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for LoggingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_logging_server(key: &str) -> LoggingServer {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("server.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_daytona-mcp"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env("DAYTONA_MCP_API_KEY", key)
        .env("DAYTONA_MCP_LOG__FORMAT", "json")
        .env("DAYTONA_MCP_LOG__LEVEL", "info,daytona_mcp=debug")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("server binary starts");
    let server = LoggingServer {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await {
            if r.status().is_success() {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready");
}

/// The spans of a JSON log line, and its message.
fn spans_and_message(line: &Value) -> (Vec<Value>, String) {
    let spans = line["spans"].as_array().cloned().unwrap_or_default();
    let message = line["fields"]["message"].as_str().unwrap_or("").to_string();
    (spans, message)
}

#[actix_web::test]
async fn one_request_id_finds_the_request_its_job_and_their_log_lines() {
    let key = format!("test-{}", uuid::Uuid::new_v4().simple());
    let server = start_logging_server(&key).await;
    let client = reqwest::Client::new();
    let post = |path: &str, request_id: Option<&str>, body: Value| {
        let mut request = client
            .post(format!("{}{path}", server.base))
            .bearer_auth(&key)
            .json(&body);
        if let Some(id) = request_id {
            request = request.header("X-Request-Id", id);
        }
        request.send()
    };
    // Without one, the server makes one and says which.
    let created = post("/create_sandbox", None, json!({"name": "traced"}))
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let generated = created.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    let request_id = format!("trace-{}", uuid::Uuid::new_v4().simple());
    let accepted = post(
        "/v1/jobs",
        Some(&request_id),
        json!({"tool": "execute_shell", "arguments": {"sandbox_id": "traced", "command": "echo traced"}}),
    )
    .await
    .unwrap();
    assert_eq!(accepted.status(), 202);
    assert_eq!(accepted.headers()["x-request-id"], request_id.as_str());
    let job_id = accepted.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let job: Value = client
        .get(format!("{}/v1/jobs/{job_id}?wait=30", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["request_id"], request_id.as_str(), "{job}");

    // The log: the request's lines and the job's lines carry the id (the job's with its id).
    let mut lines: Vec<Value> = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&server.log)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let done = lines.iter().any(|l| spans_and_message(l).1 == "job done");
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let with_id: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            spans_and_message(l)
                .0
                .iter()
                .any(|s| s["request_id"] == request_id.as_str())
        })
        .collect();
    let request_line = with_id.iter().any(|l| {
        let (spans, message) = spans_and_message(l);
        message == "request done" && spans.iter().any(|s| s["name"] == "http")
    });
    let job_line = with_id.iter().any(|l| {
        let (spans, message) = spans_and_message(l);
        message == "job done"
            && spans
                .iter()
                .any(|s| s["name"] == "job" && s["job_id"] == job_id.as_str())
    });
    assert!(
        request_line && job_line,
        "lines with {request_id}: {with_id:#?}\nall: {lines:#?}"
    );
}
