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

/// A port that is taken while `_holder` lives.
fn taken_port() -> (std::net::TcpListener, u16) {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    (holder, port)
}

/// Runs `serve`, which must fail at start-up; returns its standard error.
fn serve_fails(mut command: Command) -> String {
    let output = command.output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    stderr
}

#[test]
fn a_port_in_use_names_the_listen_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (_holder, port) = taken_port();
    let data_dir = dir.path().join("data");
    let mut command = daytona_mcp(dir.path());
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data_dir);
    let stderr = serve_fails(command);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(
        stderr.contains("--listen ADDR:PORT (or DAYTONA_MCP_LISTEN)"),
        "{stderr}"
    );
    // It failed before touching anything.
    assert!(!data_dir.exists());
}

#[test]
fn a_missing_bubblewrap_names_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = daytona_mcp(dir.path());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("DAYTONA_MCP_LOCAL__ISOLATION", "bwrap")
        .env("DAYTONA_MCP_LOCAL__BWRAP_PATH", "/nonexistent/bwrap");
    let stderr = serve_fails(command);
    assert!(
        stderr.contains("install the `bubblewrap` package (e.g. `apt-get install bubblewrap`)"),
        "{stderr}"
    );
}

#[test]
fn an_unwritable_data_dir_names_the_path_and_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("readonly");
    std::fs::create_dir(&parent).unwrap();
    let data_dir = parent.join("data");
    let mut command;
    let user;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        // Root writes anywhere: run the server as `nobody`, for whom the temporary directory
        // (root's, mode 0700) is closed.
        command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_daytona-mcp"))
            .current_dir("/");
        user = "(uid 65534)".to_string();
    } else {
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o500)).unwrap();
        command = daytona_mcp(dir.path());
        user = format!("(uid {})", unsafe { libc::geteuid() });
    }
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env_remove("DAYTONA_MCP_DATA_DIR")
        .env_remove("DATABASE_URL");
    let stderr = serve_fails(command);
    assert!(
        stderr.contains(&format!("cannot create data dir {}", data_dir.display())),
        "{stderr}"
    );
    assert!(stderr.contains(&user), "{stderr}");
    assert!(
        stderr.contains("--data-dir DIR (or DAYTONA_MCP_DATA_DIR"),
        "{stderr}"
    );
}

/// Two servers on one data dir would share a node id and fail each other's jobs at start-up:
/// the second is refused, told how to reach the first.
#[actix_web::test]
async fn a_data_dir_in_use_is_refused_with_the_way_to_connect() {
    let app = crate::helpers::spawn_app(crate::helpers::Db::Sqlite)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut command = daytona_mcp(dir.path());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&app.data_dir);
    let stderr = tokio::task::spawn_blocking(move || serve_fails(command))
        .await
        .unwrap();
    assert!(
        stderr.contains(&format!(
            "the data dir {} is in use by another daytona-mcp process (pid {})",
            app.data_dir.display(),
            std::process::id()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("daytona-mcp stdio --url"), "{stderr}");
    // The first server is unharmed.
    let (status, _) = app.get_json("/v1/jobs").await;
    assert_eq!(status, 200);
}
