//! The deployment files, checked without a container engine (none runs here; the image is never
//! built by these tests): the alert rules (`promtool check`/`test rules`), the scrape config,
//! the Compose file (`docker-compose config`, every service with a health check and a restart
//! policy, the server's settings valid for the server), the Dockerfile (hadolint, and what it
//! must contain), the Grafana dashboard (Grafana's own schema types, and the structure the
//! provisioning relies on), and the Helm chart (linted and rendered by Helm's own SDK for each
//! values file of its `ci/`, every object checked against Kubernetes' schemas, its settings
//! loaded by the server's loader, its probe paths served by a real server).

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

/// The Helm chart, relative to the repository.
const CHART: &str = "deploy/helm/daytona-mcp";

/// What `tests/monitoring/helm_chart.py` made of the chart with one values file: every
/// rendered object (with its template), and the kinds it checked against Kubernetes' schemas.
struct Rendered {
    objects: Vec<Value>,
    validated: Vec<String>,
    unvalidated: Vec<String>,
}

impl Rendered {
    fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .collect();
        kinds.sort();
        kinds
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn named(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
    }

    /// The server's workload (the Deployment or StatefulSet whose pods run `serve`).
    fn server(&self) -> &Value {
        let servers: Vec<&Value> = self
            .objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
            .filter(|o| {
                o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                    == "server"
            })
            .collect();
        assert_eq!(servers.len(), 1, "one server workload");
        servers[0]
    }

    fn server_container(&self) -> &Value {
        let containers = self.server()["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        containers.iter().find(|c| c["name"] == "server").unwrap()
    }
}

/// Lints, renders and schema-checks the chart with `values` (a values file's text) through
/// Helm's own SDK: `Some(Ok)` when the chart renders valid objects, `Some(Err(stderr))` when
/// it refuses (a `fail`, a lint error, a schema violation), `None` when the checker is not
/// installed (and not required).
fn render_chart(values: &str) -> Option<Result<Rendered, String>> {
    let python = monitoring_tools().join("venv/bin/python");
    let python = required_tool(python.to_str().unwrap(), "run tests/monitoring/setup.sh")?;
    let dir = repo();
    let scratch = tempfile::tempdir().unwrap();
    let values_file = scratch.path().join("values.yaml");
    std::fs::write(&values_file, values).unwrap();
    let output = run(
        &python,
        &[
            "tests/monitoring/helm_chart.py",
            CHART,
            values_file.to_str().unwrap(),
        ],
        &dir,
    );
    if !output.status.success() {
        return Some(Err(describe(&output)));
    }
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("helm_chart.py printed no JSON ({e}): {}", describe(&output)));
    let strings = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    };
    Some(Ok(Rendered {
        objects: report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["object"].clone())
            .collect(),
        validated: strings("validated"),
        unvalidated: strings("unvalidated"),
    }))
}

/// The chart's example values files (`ci/`), each with the kinds it must render.
fn chart_shapes() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let dir = repo().join(CHART).join("ci");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    vec![
        (
            "daytona",
            read("daytona-values.yaml"),
            vec![
                "Deployment",
                "PodDisruptionBudget",
                "Secret",
                "Service",
                "ServiceAccount",
                "ServiceMonitor",
            ],
        ),
        (
            "bundled-postgresql",
            read("bundled-postgresql-values.yaml"),
            vec![
                "ConfigMap",
                "Deployment",
                "PodDisruptionBudget",
                "Secret",
                "Secret",
                "Service",
                "Service",
                "ServiceAccount",
                "StatefulSet",
            ],
        ),
        (
            "local",
            read("local-values.yaml"),
            vec![
                "PodDisruptionBudget",
                "Secret",
                "Service",
                "Service",
                "ServiceAccount",
                "StatefulSet",
            ],
        ),
    ]
}

fn render_ok(shape: &str, values: &str) -> Option<Rendered> {
    render_chart(values).map(|r| r.unwrap_or_else(|e| panic!("the chart ({shape}): {e}")))
}

/// Whether `selector` (a map of labels) selects an object with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

#[test]
fn helm_chart_renders_schema_valid_objects_for_each_shape() {
    for (shape, values, kinds) in chart_shapes() {
        let Some(rendered) = render_ok(shape, &values) else {
            return;
        };
        assert_eq!(rendered.kinds(), kinds, "{shape}");
        // Every object of a built-in kind passed Kubernetes' schema (strict); only the
        // ServiceMonitor (a custom resource) is checked here instead.
        let mut custom = rendered.unvalidated.clone();
        custom.sort();
        let expected_custom: Vec<String> = kinds
            .iter()
            .filter(|k| **k == "ServiceMonitor")
            .map(|k| k.to_string())
            .collect();
        assert_eq!(custom, expected_custom, "{shape}");
        assert_eq!(
            rendered.validated.len() + rendered.unvalidated.len(),
            rendered.objects.len(),
            "{shape}"
        );

        let server = rendered.server();
        let pod = &server["spec"]["template"];
        let local = shape == "local";
        assert_eq!(
            server["kind"],
            if local { "StatefulSet" } else { "Deployment" },
            "{shape}: node-local sandboxes need a volume per replica"
        );
        // Security: no API token, non-root, no privilege escalation, no capabilities.
        assert_eq!(
            pod["spec"]["automountServiceAccountToken"], false,
            "{shape}"
        );
        assert_eq!(
            pod["spec"]["securityContext"]["runAsNonRoot"], true,
            "{shape}"
        );
        let container = rendered.server_container();
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{shape}");
        assert_eq!(security["capabilities"]["drop"][0], "ALL", "{shape}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{shape}");
        assert!(
            container["resources"]["requests"]["memory"].is_string(),
            "{shape}"
        );
        assert!(
            pod["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap()
                > 30,
            "{shape}: the grace must outlast the server's shutdown_grace_s"
        );
        // The data dir is a volume: per replica (claim template) for the local driver.
        let data_dir = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "DAYTONA_MCP_DATA_DIR")
            .unwrap()["value"]
            .clone();
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == data_dir)
            .unwrap_or_else(|| panic!("{shape}: the data dir is not a volume"));
        if local {
            assert_eq!(
                server["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], mount["name"],
                "{shape}"
            );
            assert_eq!(security["seccompProfile"]["type"], "Unconfined", "{shape}");
        } else {
            let volume = pod["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            assert!(volume["emptyDir"].is_object(), "{shape}: {volume}");
        }

        // Services, the disruption budget and the ServiceMonitor select the server's pods.
        let pod_labels = &pod["metadata"]["labels"];
        assert!(
            selects(&server["spec"]["selector"]["matchLabels"], pod_labels),
            "{shape}"
        );
        let services: Vec<&Value> = rendered
            .of_kind("Service")
            .into_iter()
            .filter(|s| selects(&s["spec"]["selector"], pod_labels))
            .collect();
        assert!(
            !services.is_empty(),
            "{shape}: no Service selects the server"
        );
        let port_names: Vec<&str> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for service in &services {
            for port in service["spec"]["ports"].as_array().unwrap() {
                let target = port["targetPort"].as_str().unwrap();
                assert!(port_names.contains(&target), "{shape}: {port}");
            }
        }
        for pdb in rendered.of_kind("PodDisruptionBudget") {
            assert!(selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels));
        }
        for monitor in rendered.of_kind("ServiceMonitor") {
            let service = services
                .iter()
                .find(|s| {
                    selects(
                        &monitor["spec"]["selector"]["matchLabels"],
                        &s["metadata"]["labels"],
                    )
                })
                .unwrap_or_else(|| panic!("{shape}: the ServiceMonitor selects no Service"));
            let endpoint = &monitor["spec"]["endpoints"][0];
            assert!(
                service["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == endpoint["port"]),
                "{shape}: {endpoint}"
            );
            assert_eq!(endpoint["path"], "/metrics", "{shape}");
        }
        if local {
            let headless = rendered
                .named("Service", server["spec"]["serviceName"].as_str().unwrap())
                .unwrap_or_else(|| panic!("{shape}: no governing Service"));
            assert_eq!(headless["spec"]["clusterIP"], "None");
        }
        if shape == "bundled-postgresql" {
            let database = rendered
                .of_kind("StatefulSet")
                .into_iter()
                .find(|s| {
                    s["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .ends_with("-postgresql")
                })
                .expect("the bundled PostgreSQL");
            assert!(database["spec"]["volumeClaimTemplates"][0].is_object());
            assert!(
                rendered
                    .of_kind("Service")
                    .iter()
                    .any(|s| s["metadata"]["name"] == database["spec"]["serviceName"]
                        && s["spec"]["ports"][0]["port"] == 5432)
            );
        }
    }
}

/// The server container's environment as the kubelet would give it: values from the
/// rendered Secrets (or, for a Secret the operator brings, a stand-in of the right form),
/// `$(VAR)` references expanded.
fn container_env(rendered: &Rendered) -> std::collections::HashMap<String, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    for entry in rendered.server_container()["env"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap().to_string();
        let value = if let Some(value) = entry["value"].as_str() {
            value.to_string()
        } else {
            let reference = &entry["valueFrom"]["secretKeyRef"];
            let secret = rendered.named("Secret", reference["name"].as_str().unwrap());
            match secret {
                Some(secret) => secret["stringData"][reference["key"].as_str().unwrap()]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no such key in {secret}"))
                    .to_string(),
                None if name == "DATABASE_URL" => {
                    "postgres://daytona:secret@db.example.internal:5432/daytona".into()
                }
                None => "from-an-existing-secret".into(),
            }
        };
        // Kubernetes expands $(NAME) of variables defined earlier in the list.
        let mut expanded = value;
        for (earlier, earlier_value) in &env {
            expanded = expanded.replace(&format!("$({earlier})"), earlier_value);
        }
        env.push((name, expanded));
    }
    env.into_iter().collect()
}

#[test]
fn helm_chart_settings_are_the_servers() {
    for (shape, values, _) in chart_shapes() {
        let Some(rendered) = render_ok(shape, &values) else {
            return;
        };
        let env = container_env(&rendered);
        // Every variable is one the server reads (none is silently ignored), except the
        // bundled PostgreSQL's password, which only feeds DATABASE_URL.
        let in_effect = daytona_mcp::config::variables_in_effect(&env);
        for name in env.keys() {
            assert!(
                in_effect.contains(name) || name == "POSTGRES_PASSWORD",
                "{shape}: the server does not read {name}"
            );
        }
        // The configuration file, when the chart mounts one.
        let scratch = tempfile::tempdir().unwrap();
        let file = env.get("DAYTONA_MCP_CONFIG").map(|path| {
            let map = rendered.of_kind("ConfigMap")[0];
            let (key, text) = map["data"].as_object().unwrap().iter().next().unwrap();
            assert!(path.ends_with(&format!("/{key}")), "{shape}: {path}");
            let file = scratch.path().join(key);
            std::fs::write(&file, text.as_str().unwrap()).unwrap();
            file
        });
        let overrides = daytona_mcp::config::Overrides {
            listen: env.get("DAYTONA_MCP_LISTEN").cloned(),
            data_dir: env.get("DAYTONA_MCP_DATA_DIR").map(Into::into),
            database_url: env.get("DATABASE_URL").cloned(),
            driver: env.get("DAYTONA_MCP_DRIVER").cloned(),
        };
        let config = daytona_mcp::config::Config::load(file.as_deref(), &env, &overrides)
            .unwrap_or_else(|e| panic!("{shape}: the chart's settings are refused: {e}"));
        assert!(config.database.url.starts_with("postgres://"), "{shape}");
        assert!(!config.database.url.contains("$("), "{shape}");
        assert!(
            !config.auth.api_key.is_empty(),
            "{shape}: every replica needs the same key"
        );
        assert_eq!(config.log.format, "json", "{shape}");
        // The ports the pods declare are the ones the server listens on.
        let container = rendered.server_container();
        let port_of = |name: &str| -> String {
            container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["containerPort"]
                .to_string()
        };
        assert_eq!(
            config.server.listen.rsplit_once(':').unwrap().1,
            port_of("http")
        );
        assert_eq!(
            config.server.metrics_listen.rsplit_once(':').unwrap().1,
            port_of("metrics")
        );
        match shape {
            "daytona" => {
                assert_eq!(config.sandbox.driver, "daytona");
                assert_eq!(
                    config.daytona.api_url,
                    "http://daytona.daytona.svc:3000/api"
                );
                assert_eq!(config.queue.lease_s, 60);
                assert_eq!(config.database.max_connections, 16);
                assert_eq!(config.server.body_limit_bytes, 16_777_216);
                assert_eq!(
                    config.server.allowed_origins,
                    vec!["https://mcp.example.com"]
                );
            }
            "bundled-postgresql" => {
                assert_eq!(config.sandbox.driver, "daytona");
                assert_eq!(config.queue.concurrency, 16, "from the mounted file");
                assert_eq!(config.auth.api_key, "sk-chart-test-key");
                assert_eq!(config.daytona.api_key, "dtn_chart_test");
                let database = rendered
                    .named("Secret", "dmcp-daytona-mcp-postgresql")
                    .unwrap();
                let password = database["stringData"]["password"].as_str().unwrap();
                assert_eq!(
                    config.database.url,
                    format!(
                        "postgres://daytona:{password}@dmcp-daytona-mcp-postgresql:5432/daytona"
                    )
                );
            }
            "local" => {
                assert_eq!(config.sandbox.driver, "local");
                assert_eq!(config.local.max_processes, 256);
                assert_eq!(config.sandbox.cpu_limit, "0.5");
                assert_eq!(config.sandbox.memory_limit, "1g");
                assert!(!config.sandbox.allow_network);
            }
            other => panic!("no expectations for {other}"),
        }
    }
}

#[test]
fn helm_chart_refuses_what_the_server_would_not_run() {
    let local = std::fs::read_to_string(repo().join(CHART).join("ci/local-values.yaml")).unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("driver: local\n".into(), "set database.url"),
        (
            "driver: local\ndatabase:\n  url: postgres://a:b@c/d\npostgresql:\n  enabled: true\n"
                .into(),
            "alternatives",
        ),
        (
            "driver: docker\npostgresql:\n  enabled: true\n".into(),
            "driver must be",
        ),
        (
            "driver: daytona\npostgresql:\n  enabled: true\n".into(),
            "daytona.apiUrl",
        ),
        (format!("{local}  node_id: a\n"), "top-level"),
        (
            format!("{local}  server:\n    listen: 0.0.0.0:1\n"),
            "set by the chart",
        ),
    ];
    for (values, reason) in &cases {
        let Some(outcome) = render_chart(values) else {
            return;
        };
        match outcome {
            Ok(rendered) => panic!("rendered {:?} from:\n{values}", rendered.kinds()),
            Err(e) => assert!(e.contains(*reason), "{values}: {e}"),
        }
    }
}

#[actix_web::test]
async fn helm_chart_probes_and_scrape_path_are_served() {
    let (_, values, _) = chart_shapes().remove(0);
    let Some(rendered) = render_ok("daytona", &values) else {
        return;
    };
    let (mut config, dir) = crate::helpers::test_config(crate::helpers::Db::Sqlite)
        .await
        .unwrap();
    config.server.metrics_listen = "127.0.0.1:0".into();
    let app = crate::helpers::spawn_with(config, dir).await;
    let port_of = |name: &str| match name {
        "http" => app.port,
        "metrics" => app.metrics_port.unwrap(),
        other => panic!("a probe on port {other}, which the server does not have"),
    };
    let container = rendered.server_container();
    let mut checked = Vec::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        let (path, port) = (get["path"].as_str().unwrap(), get["port"].as_str().unwrap());
        let answer = app
            .client
            .get(format!("http://127.0.0.1:{}{path}", port_of(port)))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{probe}: GET {path} on {port}");
        checked.push(path.to_string());
    }
    assert!(checked.contains(&"/readyz".to_string()), "{checked:?}");
    assert!(checked.contains(&"/healthz".to_string()), "{checked:?}");
    let monitor = rendered.of_kind("ServiceMonitor")[0];
    let endpoint = &monitor["spec"]["endpoints"][0];
    let text = app
        .client
        .get(format!(
            "http://127.0.0.1:{}{}",
            port_of(endpoint["port"].as_str().unwrap()),
            endpoint["path"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("daytona_mcp_build_info{"), "{text}");
}
