//! A real Prometheus (Debian's `prometheus`), started on a random port with a temporary
//! configuration, scrapes a running server through a short workload (successes, failures, a
//! timeout, creates and deletes, a failing create, a long command): the repository's alert
//! rules load into it and evaluate without error, an alert fires, and every expression of the
//! Grafana dashboard (read from the file, so a renamed metric breaks this test) returns data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Db, repo, required_tool, spawn_app};

/// A Prometheus process, killed on drop.
struct Prometheus {
    child: tokio::process::Child,
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_prometheus(binary: &Path, target_port: u16) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let rules = repo().join("prometheus/alerts.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: daytona-mcp\n    static_configs:\n      \
         - targets: [\"127.0.0.1:{target_port}\"]\n",
        rules.display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = tokio::process::Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let prometheus = Prometheus {
        child,
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        _dir: dir,
    };
    for _ in 0..300 {
        if let Ok(r) = prometheus
            .client
            .get(format!("{}/-/ready", prometheus.base))
            .send()
            .await
        {
            if r.status().is_success() {
                return prometheus;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(prometheus._dir.path().join("prometheus.log"));
    panic!("prometheus did not become ready: {log:?}");
}

impl Prometheus {
    async fn api(&self, path: &str, params: &[(&str, String)]) -> Value {
        let body: Value = self
            .client
            .get(format!("{}/api/v1/{path}", self.base))
            .query(params)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], "success", "{path} {params:?}: {body}");
        body["data"].clone()
    }

    async fn instant(&self, expr: &str) -> Vec<Value> {
        self.api("query", &[("query", expr.to_string())]).await["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn range(&self, expr: &str, start: f64, end: f64) -> Vec<Value> {
        self.api(
            "query_range",
            &[
                ("query", expr.to_string()),
                ("start", format!("{start:.3}")),
                ("end", format!("{end:.3}")),
                ("step", "1".to_string()),
            ],
        )
        .await["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `expr` returns a result.
    async fn until_present(&self, expr: &str) -> Vec<Value> {
        for _ in 0..300 {
            let result = self.instant(expr).await;
            if !result.is_empty() {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("`{expr}` never returned data");
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Every target of the dashboard: its panel's title, its expression, and whether Grafana runs
/// it as an instant query.
fn dashboard_targets(dashboard: &Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| {
                panic!("a target of `{}` has no expr: {target}", panel["title"])
            });
            out.push((
                panel["title"].as_str().unwrap().to_string(),
                expr.to_string(),
                target["instant"] == true,
            ));
        }
    }
    out
}

/// The expression as Grafana sends it: the dashboard's variables replaced by what they take
/// (`$job` = All, a rate interval that spans several 1 s scrapes).
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", "15s")
        .replace("$__interval", "1s")
        .replace("$__range", "5m")
        .replace("$job", ".+")
}

fn dashboard_file() -> PathBuf {
    repo().join("grafana/dashboards/daytona-mcp.json")
}

#[actix_web::test]
async fn dashboard_and_alerts_work_against_a_real_prometheus() {
    let Some(binary) = required_tool("prometheus", "Debian's prometheus package") else {
        return;
    };
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let started = now() - 1.0;
    let prometheus = start_prometheus(&binary, app.port).await;

    // The rules load and evaluate without error.
    let mut rules = Vec::new();
    for _ in 0..300 {
        let groups = prometheus.api("rules", &[]).await["groups"].clone();
        rules = groups
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        if !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<&str> = rules.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for alert in [
        "high_memory_usage",
        "workspace_creation_failures",
        "disk_space_low",
        "queue_backlog",
        "job_failure_rate",
        "server_down",
        "actor_restarts",
        "database_unreachable",
    ] {
        assert!(names.contains(&alert), "{alert} not loaded: {names:?}");
    }
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_eq!(rule["type"], "alerting", "{rule}");
        let name = rule["name"].as_str().unwrap();
        for annotation in ["summary", "description", "runbook_url"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|a| !a.is_empty()),
                "{name} has no {annotation}"
            );
        }
        // The runbook link names a section of docs/runbook.md.
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = url
            .strip_prefix("docs/runbook.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url}"));
        assert!(
            runbook.lines().any(|l| l == format!("## {anchor}")),
            "docs/runbook.md has no section {anchor}"
        );
    }

    // The workload, once Prometheus has scraped the server (the counters' zeros: an increase
    // is only seen from a sample before it).
    prometheus
        .until_present("daytona_mcp_workspace_creation_failures_total == 0")
        .await;
    let a = app.sandbox("scraped-a").await;
    let b = app.sandbox("scraped-b").await;
    for command in ["true", "exit 1", "echo out; echo err >&2"] {
        app.shell(&a, command).await;
    }
    let (_, timed_out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": b, "command": "sleep 5", "timeout_s": 1}),
        )
        .await;
    assert_eq!(timed_out["timed_out"], true, "{timed_out}");
    let (status, _) = app
        .call(
            "/file_operation",
            json!({"sandbox_id": a, "operation": "read", "file_path": "missing"}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .get_json(&format!("/v1/jobs/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    // Three creates that fail: the workspace_creation_failures alert's threshold.
    for i in 0..3 {
        let (status, body) = app
            .call(
                "/create_sandbox",
                json!({"name": format!("unreachable-{i}"), "git_repo": "https://127.0.0.1:1/x.git"}),
            )
            .await;
        assert_ne!(status, 200, "{body}");
    }
    // A command that runs while Prometheus scrapes, for the memory panel.
    let long = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": a, "command": "sleep 30"}),
        )
        .await;
    app.wait_for_state(&long, "running").await;
    let (_, info) = app
        .call("/get_sandbox_info", json!({"sandbox_id": b}))
        .await;
    let measures_memory = info["resources"]["enforcement"]["cgroup_controllers"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == "memory"));
    if measures_memory {
        prometheus
            .until_present(&format!(
                "daytona_mcp_workspace_memory_bytes{{sandbox=\"{a}\"}} > 0"
            ))
            .await;
    }
    let (status, _) = app
        .call(&format!("/v1/jobs/{long}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202);
    app.wait(&long).await;
    let (status, _) = app.call("/delete_sandbox", json!({"sandbox_id": b})).await;
    assert_eq!(status, 200);

    // Prometheus has seen the end of the workload, and the alert it should fire.
    prometheus
        .until_present("daytona_mcp_workspace_creation_failures_total == 3")
        .await;
    prometheus
        .until_present(
            "daytona_mcp_workspace_count{status=\"running\"} == 1 \
             and on() daytona_mcp_execution_time_seconds_count{tool=\"execute_shell\",outcome=\"cancelled\"} == 1",
        )
        .await;
    // A few more scrapes, so that the series the workload created last have the two samples
    // a rate needs.
    let scrapes =
        |result: Vec<Value>| -> f64 { result[0]["value"][1].as_str().unwrap().parse().unwrap() };
    let seen = scrapes(prometheus.instant("count_over_time(up[10m])").await);
    prometheus
        .until_present(&format!("count_over_time(up[10m]) >= {}", seen + 3.0))
        .await;
    let firing = prometheus
        .until_present("ALERTS{alertname=\"workspace_creation_failures\",alertstate=\"firing\"}")
        .await;
    assert_eq!(firing[0]["metric"]["severity"], "warning");
    // Nothing else fires on a healthy server under this workload (alerts with a `for` may be
    // pending: the test is shorter than their `for`).
    let others = prometheus
        .instant("ALERTS{alertstate=\"firing\",alertname!=\"workspace_creation_failures\"}")
        .await;
    assert!(others.is_empty(), "{others:?}");

    // Every expression of the dashboard returns data over the workload.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard_file()).unwrap()).unwrap();
    let targets = dashboard_targets(&dashboard);
    assert!(targets.len() >= 20, "{targets:?}");
    let end = now();
    let mut empty = Vec::new();
    for (title, expr, instant) in &targets {
        if !measures_memory && expr.contains("workspace_memory") {
            eprintln!("no memory cgroup here: `{expr}` ({title}) is not checked");
            continue;
        }
        let sent = as_sent(expr);
        let result = if *instant {
            prometheus.instant(&sent).await
        } else {
            prometheus.range(&sent, started, end).await
        };
        if result.is_empty() {
            empty.push(format!("{title}: {sent}"));
        }
    }
    assert!(
        empty.is_empty(),
        "expressions without data:\n{}\nrequests seen: {:?}\ntargets: {}",
        empty.join("\n"),
        prometheus
            .range("daytona_mcp_http_requests_total > 0", started, end)
            .await,
        prometheus.api("targets", &[]).await
    );
}
