//! The deployment files, checked without a container engine (none runs here; the image is never
//! built by these tests): the alert rules (`promtool check`/`test rules`), the scrape config,
//! the Compose file (`docker-compose config`, every service with a health check and a restart
//! policy, the server's settings valid for the server), the Dockerfile (hadolint, and what it
//! must contain), and the Grafana dashboard (Grafana's own schema types, and the structure the
//! provisioning relies on).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::helpers::{monitoring_tools, repo, required_tool};

fn run(program: &Path, args: &[&str], dir: &Path) -> Output {
    std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{} cannot run: {e}", program.display()))
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn alert_rules_and_scrape_config_pass_promtool() {
    let Some(promtool) = required_tool("promtool", "Debian's prometheus package") else {
        return;
    };
    let dir = repo();
    for args in [
        &["check", "rules", "prometheus/alerts.yml"][..],
        &["test", "rules", "prometheus/alerts_test.yml"][..],
        &["check", "config", "prometheus/prometheus.yml"][..],
    ] {
        let output = run(&promtool, args, &dir);
        assert!(
            output.status.success(),
            "promtool {args:?}: {}",
            describe(&output)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("SUCCESS"),
            "promtool {args:?}: {}",
            describe(&output)
        );
    }
    // Every alert has its unit tests, firing and silent.
    let rules = std::fs::read_to_string(dir.join("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("prometheus/alerts_test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 8, "{alerts:?}");
    for alert in alerts {
        let evaluations: Vec<&str> = tests
            .split("- eval_time:")
            .skip(1)
            .filter(|block| block.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            evaluations.iter().any(|b| b.contains("exp_labels:")),
            "no test where {alert} fires"
        );
        assert!(
            evaluations.iter().any(|b| b.contains("exp_alerts: []")),
            "no test where {alert} stays silent"
        );
    }
}

/// The services of `docker-compose config`'s normalised output, each as its block of lines.
fn compose_services(normalised: &str) -> BTreeMap<String, String> {
    let mut services = BTreeMap::new();
    let mut in_services = false;
    let mut current: Option<String> = None;
    for line in normalised.lines() {
        if !line.starts_with(' ') {
            in_services = line == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
            let name = name.trim_end_matches(':').to_string();
            services.insert(name.clone(), String::new());
            current = Some(name);
        } else if let Some(name) = &current {
            let block = services.get_mut(name).unwrap();
            block.push_str(line);
            block.push('\n');
        }
    }
    services
}

/// The `environment:` entries of a service block.
fn environment(block: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in block.lines() {
        let indent = line.len() - line.trim_start().len();
        if indent == 4 {
            inside = line.trim() == "environment:";
            continue;
        }
        if inside && indent == 6 {
            let (key, value) = line.trim().split_once(':').unwrap();
            let value = value
                .trim()
                .trim_matches('\'')
                .trim_matches('"')
                .to_string();
            out.push((key.to_string(), value));
        }
    }
    out
}

#[test]
fn compose_file_validates_and_wires_the_stack() {
    let Some(compose) = required_tool("docker-compose", "Debian's docker-compose package") else {
        return;
    };
    let dir = repo();
    // Validated with an empty environment and no `.env`: the file's own defaults must do.
    let validate = |profile: Option<&str>| {
        let mut command = std::process::Command::new(&compose);
        command
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(["-f", "docker-compose.yml", "--project-directory", "."]);
        if let Some(profile) = profile {
            command.args(["--profile", profile]);
        }
        let output = command.arg("config").output().unwrap();
        assert!(
            output.status.success(),
            "docker-compose config: {}",
            describe(&output)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let normalised = validate(None);
    let services = compose_services(&normalised);
    for name in ["daytona-mcp", "postgres", "prometheus", "grafana"] {
        let block = services
            .get(name)
            .unwrap_or_else(|| panic!("no service {name} in:\n{normalised}"));
        assert!(block.contains("healthcheck:"), "{name} has no health check");
        assert!(block.contains("restart: unless-stopped"), "{name}: {block}");
    }
    let with_daytona = compose_services(&validate(Some("daytona")));
    let remote = &with_daytona["daytona-mcp-daytona"];
    assert!(
        remote.contains("profiles:\n    - daytona\n"),
        "the Daytona server starts only with its profile: {remote}"
    );
    let remote_env: BTreeMap<String, String> = environment(remote).into_iter().collect();
    assert_eq!(remote_env["DAYTONA_MCP_DRIVER"], "daytona");
    assert!(remote_env.contains_key("DAYTONA_SERVER_URL"), "{remote}");

    // The server runs on the stack's PostgreSQL, and its settings are ones the server accepts.
    let server = &services["daytona-mcp"];
    let env: BTreeMap<String, String> = environment(server).into_iter().collect();
    assert!(
        env["DATABASE_URL"].starts_with("postgres://")
            && env["DATABASE_URL"].contains("@postgres:"),
        "{env:?}"
    );
    let settings: std::collections::HashMap<String, String> = env
        .iter()
        .filter(|(k, v)| k.starts_with("DAYTONA_") && !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let overrides = daytona_mcp::config::Overrides {
        listen: settings.get("DAYTONA_MCP_LISTEN").cloned(),
        database_url: Some(env["DATABASE_URL"].clone()),
        ..Default::default()
    };
    let config = daytona_mcp::config::Config::load(None, &settings, &overrides)
        .unwrap_or_else(|e| panic!("the compose file's settings are refused: {e}"));
    assert_eq!(config.log.format, "json");
    // Prometheus scrapes the port the server's metrics listener uses.
    let metrics_port = config.server.metrics_listen.rsplit_once(':').unwrap().1;
    let scrape = std::fs::read_to_string(dir.join("prometheus/prometheus.yml")).unwrap();
    assert!(
        scrape.contains(&format!("port: {metrics_port}")),
        "prometheus.yml does not scrape :{metrics_port}"
    );
    // Prometheus gets the rules, Grafana its provisioning and the dashboard where the
    // provisioning looks for it.
    assert!(
        services["prometheus"].contains("/etc/prometheus"),
        "{}",
        services["prometheus"]
    );
    let grafana = &services["grafana"];
    let provisioning =
        std::fs::read_to_string(dir.join("grafana/provisioning/dashboards/daytona-mcp.yml"))
            .unwrap();
    let path = provisioning
        .lines()
        .find_map(|l| l.trim().strip_prefix("path: "))
        .unwrap();
    assert!(grafana.contains(&format!(":{path}:ro")), "{grafana}");
    assert!(
        grafana.contains(":/etc/grafana/provisioning:ro"),
        "{grafana}"
    );
}

#[test]
fn dockerfile_passes_hadolint_and_has_what_the_image_needs() {
    let dir = repo();
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    // Multi-stage: a build stage and a runtime stage that copies the binary from it.
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "{stages:?}");
    assert!(dockerfile.contains("COPY --from=build /usr/local/bin/daytona-mcp"));
    // The runtime has what the local driver's sandboxes use, runs unprivileged, and serves
    // the stable command line.
    let runtime = dockerfile.split("AS runtime").nth(1).unwrap();
    for package in ["bubblewrap", "git", "python3", "nodejs", "ca-certificates"] {
        assert!(
            runtime.contains(package),
            "the runtime image lacks {package}"
        );
    }
    assert!(
        runtime.contains("ARG DAYTONA_CLI_URL"),
        "the Daytona CLI build argument"
    );
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    assert!(runtime.contains("HEALTHCHECK"));
    assert!(runtime.contains("CMD [\"serve\"]"));
    // Every file the build copies from the context exists (and is not excluded).
    let ignored = std::fs::read_to_string(dir.join(".dockerignore")).unwrap();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                dir.join(source).exists(),
                "COPY {source}: not in the repository"
            );
            assert!(
                !ignored.lines().any(|i| i.trim() == *source),
                "COPY {source} is in .dockerignore"
            );
        }
    }

    let hadolint = monitoring_tools().join("venv/bin/hadolint");
    let Some(hadolint) = required_tool(hadolint.to_str().unwrap(), "run tests/monitoring/setup.sh")
    else {
        return;
    };
    let output = run(
        &hadolint,
        &["--config", ".hadolint.yaml", "Dockerfile"],
        &dir,
    );
    assert!(output.status.success(), "hadolint: {}", describe(&output));
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

#[test]
fn dashboard_matches_grafanas_schema_and_its_provisioning() {
    let dir = repo();
    let text = std::fs::read_to_string(dir.join("grafana/dashboards/daytona-mcp.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();

    // What provisioning and the panels rely on.
    let datasources =
        std::fs::read_to_string(dir.join("grafana/provisioning/datasources/prometheus.yml"))
            .unwrap();
    let uid = datasources
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid: "))
        .unwrap();
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let mut ids = HashSet::new();
    let mut cells: HashSet<(i64, i64)> = HashSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "duplicate id: {title}"
        );
        let grid = &panel["gridPos"];
        let (x, y, w, h) = (
            grid["x"].as_i64().unwrap(),
            grid["y"].as_i64().unwrap(),
            grid["w"].as_i64().unwrap(),
            grid["h"].as_i64().unwrap(),
        );
        assert!(x >= 0 && w > 0 && x + w <= 24 && h > 0, "{title}: {grid}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title} has no description"
        );
        assert_eq!(panel["datasource"]["uid"], uid, "{title}");
        let mut refs = HashSet::new();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], uid, "{title}");
            assert!(refs.insert(target["refId"].as_str().unwrap()), "{title}");
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}"
            );
        }
    }
    // The panels the issue lists.
    let titles: Vec<&str> = panels(&dashboard)
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for title in [
        "Workspaces by status and driver",
        "Jobs by state",
        "Throughput",
        "Execution time by tool",
        "Queue wait",
        "Failures by reason",
        "Request rate by route",
        "Latency by route",
        "Errors by route",
        "Actors",
        "Memory per sandbox",
        "Disk per sandbox",
        "Data dir free space",
        "Alert states",
    ] {
        assert!(titles.contains(&title), "no panel {title}: {titles:?}");
    }

    // Grafana's schema: the dashboard, as a TypeScript literal of @grafana/schema's
    // `Dashboard` type (generated from Grafana's dashboard schema), must compile: unknown
    // fields, missing required ones and wrong types are errors.
    let tools = monitoring_tools();
    let tsc = tools.join("node_modules/typescript/bin/tsc");
    let Some(tsc) = required_tool(tsc.to_str().unwrap(), "run tests/monitoring/setup.sh") else {
        return;
    };
    let Some(node) = required_tool("node", "Debian's nodejs package") else {
        return;
    };
    let check = tempfile::tempdir_in(&tools).unwrap();
    let source = format!(
        "import type {{ Dashboard }} from '@grafana/schema';\n\
         const dashboard: Dashboard = {text};\nexport default dashboard;\n"
    );
    std::fs::write(check.path().join("dashboard.ts"), source).unwrap();
    let output = run(
        &node,
        &[
            tsc.to_str().unwrap(),
            "--noEmit",
            "--strict",
            "--skipLibCheck",
            "--module",
            "esnext",
            "--moduleResolution",
            "bundler",
            "--target",
            "es2022",
            "dashboard.ts",
        ],
        check.path(),
    );
    assert!(
        output.status.success(),
        "the dashboard does not match @grafana/schema's Dashboard: {}",
        describe(&output)
    );
}
