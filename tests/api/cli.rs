//! The command line as a user meets it: the real binary, its output and exit status.

use std::process::{Command, Output};

fn daytona_mcp(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_daytona-mcp"));
    // A clean slate: no ./daytona-mcp.toml, none of the caller's settings.
    command.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("DAYTONA") || name == "DATABASE_URL" || name == "MCP_DEBUG" {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn config_check_prints_the_effective_settings_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.toml");
    std::fs::write(
        &file,
        "[auth]\napi_key = \"sk-file-secret\"\n[database]\nurl = \
         \"postgres://app:pg-s3cret@db.internal/jobs\"\n[queue]\nconcurrency = 4\n",
    )
    .unwrap();
    let output = daytona_mcp(dir.path())
        .args(["config", "check", "--config"])
        .arg(&file)
        .env("DAYTONA_MCP_QUEUE__CONCURRENCY", "5")
        .env("DAYTONA_WORKSPACE_MEMORY_LIMIT", "1g")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("# the configuration is valid"), "{stdout}");
    assert!(
        stdout.contains(&format!("# file: {}", file.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("DAYTONA_MCP_QUEUE__CONCURRENCY, DAYTONA_WORKSPACE_MEMORY_LIMIT"),
        "{stdout}"
    );
    // The environment wins over the file; every section is printed.
    assert!(stdout.contains("concurrency = 5\n"), "{stdout}");
    assert!(stdout.contains("memory_limit = \"1g\"\n"), "{stdout}");
    for section in [
        "[server]",
        "[queue]",
        "[sandbox]",
        "[local]",
        "[auth]",
        "[mcp]",
        "[log]",
    ] {
        assert!(stdout.contains(section), "{section}: {stdout}");
    }
    for secret in ["sk-file-secret", "pg-s3cret"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}"
        );
    }
    assert!(stdout.contains("api_key = \"***\""), "{stdout}");
    assert!(
        stdout.contains("url = \"postgres://app:***@db.internal/jobs\""),
        "{stdout}"
    );

    // The example file is a valid configuration.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("daytona-mcp.example.toml");
    let output = daytona_mcp(dir.path())
        .args(["config", "check", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(output.status.success(), "{:?}", text(&output));

    // An invalid file: exit 1, and the error names what is wrong.
    std::fs::write(&file, "[queue]\nconcurency = 4\n").unwrap();
    let output = daytona_mcp(dir.path())
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("invalid configuration"), "{stderr}");
    assert!(stderr.contains("concurency"), "{stderr}");
    assert!(!stdout.contains("valid"), "{stdout}");
}
