//! `git_operation` and `create_sandbox`'s clone on real repositories: a bare repository the test
//! creates, cloned, committed to with hostile messages, pushed back, pulled, logged and diffed;
//! an HTTP remote that requires a token, to prove the token works and is never stored or shown.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_app, spawn_with, test_config};
pub use crate::support::git::{host_git, seed_bare_repo};

impl TestApp {
    pub async fn git(&self, sandbox: &str, operation: &str, fields: Value) -> (u16, Value) {
        let mut body = json!({"sandbox_id": sandbox, "operation": operation});
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.call("/git_operation", body).await
    }

    /// A `git_operation` that must succeed.
    pub async fn git_ok(&self, sandbox: &str, operation: &str, fields: Value) -> Value {
        let (status, body) = self.git(sandbox, operation, fields).await;
        assert_eq!(status, 200, "git {operation}: {body}");
        assert_eq!(body["success"], true, "git {operation}: {body}");
        body
    }
}

/// Everything the injection tests try: quotes, substitution, backticks, `;`, newlines, `-`.
const HOSTILE_MESSAGE: &str = "-m --amend $(touch /workspace/pwned) `touch /workspace/pwned`; \
    touch /workspace/pwned\n\nbody with 'single' and \"double\" quotes\n-- trailing dash line";

async fn clone_commit_push_pull_log_diff(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    git_round_trip(&app).await;
}

/// Clone from a bare repository the test made, commit with hostile names, message and author,
/// push, pull, log, diff, branch. Shared with the Landlock tests.
pub async fn git_round_trip(app: &TestApp) {
    let id = app.sandbox("git-flow").await;
    let root = app.data_dir.join("sandboxes").join(&id);
    seed_bare_repo(&root.join("remote.git"));

    // Clone by path inside the sandbox and by file:// URL.
    let cloned = app
        .git_ok(
            &id,
            "clone",
            json!({"repository_url": "/workspace/remote.git", "directory": "work"}),
        )
        .await;
    assert!(
        cloned["message"].as_str().unwrap().contains("succeeded"),
        "{cloned}"
    );
    app.git_ok(
        &id,
        "clone",
        json!({"repository_url": "file:///workspace/remote.git", "directory": "/workspace/other"}),
    )
    .await;
    let readme = app.file_ok(&id, "read", "other/README.md", json!({})).await;
    assert_eq!(readme["content"], "# seeded\n");

    // Hostile file names, added literally.
    let names = [
        "-rf",
        "$(touch pwned)",
        "a; touch pwned",
        "`touch pwned`",
        "it's \"q\"",
    ];
    for name in names {
        app.file_ok(
            &id,
            "write",
            &format!("work/{name}"),
            json!({"content": name}),
        )
        .await;
    }
    app.git_ok(
        &id,
        "add",
        json!({"working_directory": "work", "files": names}),
    )
    .await;
    let status = app
        .git_ok(&id, "status", json!({"working_directory": "work"}))
        .await;
    assert!(
        status["output"].as_str().unwrap().contains("-rf"),
        "{status}"
    );
    let staged = host_git(
        &root.join("work"),
        &["diff", "--cached", "--name-only", "-z"],
    );
    let mut staged: Vec<&str> = staged.split('\0').filter(|s| !s.is_empty()).collect();
    staged.sort_unstable();
    let mut expected = names.to_vec();
    expected.sort_unstable();
    assert_eq!(staged, expected);

    // A hostile commit message, with a hostile author, is recorded byte for byte.
    let committed = app
        .git_ok(
            &id,
            "commit",
            json!({"working_directory": "/workspace/work", "commit_message": HOSTILE_MESSAGE,
                   "author_name": "Eve $(touch /workspace/pwned) 'x' `id` Jr", "author_email": "eve@example.com"}),
        )
        .await;
    assert_eq!(committed["exit_code"], 0);
    let pushed = app
        .git_ok(&id, "push", json!({"working_directory": "work"}))
        .await;
    assert!(
        pushed["output"].as_str().unwrap().contains("main -> main"),
        "{pushed}"
    );
    // The bare repository, read on the host, holds exactly that message and author.
    let bare = root.join("remote.git");
    let message = host_git(&bare, &["log", "-1", "--format=%B", "main"]);
    assert_eq!(message.trim_end(), HOSTILE_MESSAGE);
    let author = host_git(&bare, &["log", "-1", "--format=%an <%ae>", "main"]);
    assert_eq!(
        author.trim(),
        "Eve $(touch /workspace/pwned) 'x' `id` Jr <eve@example.com>"
    );
    let tree = host_git(&bare, &["ls-tree", "-z", "--name-only", "main"]);
    for name in names {
        assert!(
            tree.split('\0').any(|l| l == name),
            "{name} not committed: {tree}"
        );
    }

    // Pull into the other clone; log and diff there.
    let pulled = app
        .git_ok(&id, "pull", json!({"working_directory": "other"}))
        .await;
    assert_eq!(pulled["exit_code"], 0, "{pulled}");
    let log = app
        .git_ok(
            &id,
            "log",
            json!({"working_directory": "other", "limit": 5}),
        )
        .await;
    let commits = log["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 2);
    assert_eq!(
        commits[0]["subject"],
        HOSTILE_MESSAGE.lines().next().unwrap()
    );
    assert_eq!(commits[0]["author_email"], "eve@example.com");
    assert_eq!(commits[1]["subject"], "initial commit");
    let limited = app
        .git_ok(
            &id,
            "log",
            json!({"working_directory": "other", "limit": 1}),
        )
        .await;
    assert_eq!(limited["commits"].as_array().unwrap().len(), 1);

    app.file_ok(
        &id,
        "append",
        "other/README.md",
        json!({"content": "more\n"}),
    )
    .await;
    let diff = app
        .git_ok(&id, "diff", json!({"working_directory": "other"}))
        .await;
    assert!(diff["output"].as_str().unwrap().contains("+more"), "{diff}");
    let staged = app
        .git_ok(
            &id,
            "diff",
            json!({"working_directory": "other", "staged": true}),
        )
        .await;
    assert_eq!(staged["output"], "");
    app.git_ok(
        &id,
        "add",
        json!({"working_directory": "other", "files": ["README.md"]}),
    )
    .await;
    let staged = app
        .git_ok(
            &id,
            "diff",
            json!({"working_directory": "other", "staged": true, "files": ["README.md"]}),
        )
        .await;
    assert!(
        staged["output"].as_str().unwrap().contains("+more"),
        "{staged}"
    );

    // Branches: a hostile (but valid) name is created, listed, checked out and pushed as is.
    let branch = "feat';$(touch${IFS}pwned)`id`\"x\"";
    app.git_ok(
        &id,
        "checkout",
        json!({"working_directory": "work", "branch": branch, "create": true}),
    )
    .await;
    let listed = app
        .git_ok(&id, "branch", json!({"working_directory": "work"}))
        .await;
    assert_eq!(listed["current_branch"], branch, "{listed}");
    assert!(
        listed["branches"]
            .as_array()
            .unwrap()
            .contains(&json!("main"))
    );
    app.git_ok(
        &id,
        "push",
        json!({"working_directory": "work", "repository_url": "origin", "branch": branch}),
    )
    .await;
    let remote_branches = host_git(&bare, &["branch", "--list", "--format=%(refname:short)"]);
    assert!(
        remote_branches.lines().any(|l| l == branch),
        "{remote_branches}"
    );
    app.git_ok(
        &id,
        "branch",
        json!({"working_directory": "work", "branch": "made-by-branch"}),
    )
    .await;
    app.git_ok(
        &id,
        "checkout",
        json!({"working_directory": "work", "branch": "main"}),
    )
    .await;

    // Names git would read as options, or that break its rules, are refused up front.
    for bad in ["-b", "--orphan=x", "a\nb", "a b", "a..b"] {
        let (status, err) = app
            .git(
                &id,
                "checkout",
                json!({"working_directory": "work", "branch": bad}),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {err}");
        assert_eq!(err["error"]["field"], "branch");
    }
    let (status, err) = app
        .git(
            &id,
            "clone",
            json!({"repository_url": "ext::sh -c touch% /workspace/pwned"}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = app
        .git(
            &id,
            "clone",
            json!({"repository_url": "--upload-pack=touch /workspace/pwned"}),
        )
        .await;
    assert_eq!(status, 400, "{err}");

    // A failing git command is a result with success false, not a server error.
    let (status, failed) = app
        .git(
            &id,
            "checkout",
            json!({"working_directory": "work", "branch": "no-such-branch"}),
        )
        .await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["success"], false);
    assert!(
        failed["message"].as_str().unwrap().contains("failed"),
        "{failed}"
    );

    // Nothing was injected anywhere.
    let check = app
        .shell(
            &id,
            "find . \"${TMPDIR:-/tmp}\" -name pwned 2>/dev/null; echo end",
        )
        .await;
    assert_eq!(check["stdout"], "end\n", "{check}");
    assert!(!Path::new("pwned").exists());
}

/// A dumb-HTTP git server (Python's http.server) that answers only requests carrying
/// `Authorization: Basic base64("x-access-token:<token>")` for one of `tokens`.
struct TokenServer {
    child: Child,
    port: u16,
}

impl TokenServer {
    fn start(root: &Path, tokens: &[&str]) -> TokenServer {
        let script = r#"
import base64, http.server, sys
root, tokens = sys.argv[1], sys.argv[2:]
allowed = {'Basic ' + base64.b64encode(('x-access-token:' + t).encode()).decode() for t in tokens}
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)
    def do_GET(self):
        if self.headers.get('Authorization', '') not in allowed:
            self.send_response(401)
            self.send_header('WWW-Authenticate', 'Basic realm="git"')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        super().do_GET()
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(root)
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
        TokenServer {
            port: line.trim().parse().unwrap(),
            child,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every text the server stored about jobs and requests: job arguments, results, errors and
/// output, and the audit log.
async fn stored_job_text(app: &TestApp, db: Db, url: &str) -> String {
    use sqlx::{Connection, Row};
    let queries = [
        "SELECT CAST(arguments AS TEXT) AS t FROM jobs",
        "SELECT COALESCE(CAST(result AS TEXT), '') AS t FROM jobs",
        "SELECT COALESCE(CAST(error AS TEXT), '') AS t FROM jobs",
        "SELECT COALESCE(CAST(args_summary AS TEXT), '') || COALESCE(args_digest, '') AS t \
         FROM audit_log",
    ];
    let mut text = String::new();
    match db {
        Db::Sqlite => {
            let path = app.data_dir.join("daytona-mcp.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            for q in queries {
                for row in sqlx::query(q).fetch_all(&mut conn).await.unwrap() {
                    text.push_str(&row.get::<String, _>("t"));
                }
            }
            for row in sqlx::query("SELECT data FROM job_output")
                .fetch_all(&mut conn)
                .await
                .unwrap()
            {
                text.push_str(&String::from_utf8_lossy(&row.get::<Vec<u8>, _>("data")));
            }
        }
        Db::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            for q in queries {
                for row in sqlx::query(q).fetch_all(&mut conn).await.unwrap() {
                    text.push_str(&row.get::<String, _>("t"));
                }
            }
            for row in sqlx::query("SELECT data FROM job_output")
                .fetch_all(&mut conn)
                .await
                .unwrap()
            {
                text.push_str(&String::from_utf8_lossy(&row.get::<Vec<u8>, _>("data")));
            }
        }
    }
    text
}

async fn https_token_is_used_and_never_stored(db: Db) {
    let Some((mut config, dir)) = test_config(db).await else {
        return;
    };
    config.sandbox.allow_network = true;
    let db_url = config.database.url.clone();
    let app = spawn_with(config, dir).await;

    let served = tempfile::tempdir().unwrap();
    let bare = served.path().join("repo.git");
    seed_bare_repo(&bare);
    host_git(&bare, &["update-server-info"]);
    let sandbox_token = format!("sbx{}", uuid::Uuid::new_v4().simple());
    let call_token = format!("call{}", uuid::Uuid::new_v4().simple());
    let server = TokenServer::start(served.path(), &[&sandbox_token, &call_token]);
    let url = format!("http://127.0.0.1:{}/repo.git", server.port);

    // Without a token the server refuses, and the failure says so without hanging on a prompt.
    let (status, plain) = app
        .call(
            "/create_sandbox",
            json!({"name": "no-token", "network": true}),
        )
        .await;
    assert_eq!(status, 200, "{plain}");
    let (status, refused) = app
        .git(
            "no-token",
            "clone",
            json!({"repository_url": url, "directory": "r"}),
        )
        .await;
    assert_eq!(status, 200, "{refused}");
    assert_eq!(refused["success"], false, "{refused}");

    // create_sandbox clones with the sandbox's token (given inside the URL, the common way).
    let with_creds = url.replace(
        "http://",
        &format!("http://x-access-token:{sandbox_token}@"),
    );
    let (status, created) = app
        .call(
            "/create_sandbox",
            json!({"name": "cloned", "network": true, "git_repo": with_creds, "git_branch": "main"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["sandbox_id"].as_str().unwrap().to_string();
    let readme = app.file_ok(&id, "read", "README.md", json!({})).await;
    assert_eq!(readme["content"], "# seeded\n");
    let info = app
        .call("/get_sandbox_info", json!({"sandbox_id": id}))
        .await
        .1;
    assert_eq!(
        info["git_repo"],
        format!("http://x-access-token@127.0.0.1:{}/repo.git", server.port)
    );
    assert_eq!(info["git_token_configured"], true);
    assert_eq!(info["network"], true);

    // Later pulls use the sandbox's token; a per-call token works for another clone.
    app.git_ok(&id, "pull", json!({})).await;
    let again = app
        .git_ok(
            &id,
            "clone",
            json!({"repository_url": url, "directory": "again", "token": call_token}),
        )
        .await;
    assert!(!again.to_string().contains(&call_token));
    let readme = app.file_ok(&id, "read", "again/README.md", json!({})).await;
    assert_eq!(readme["content"], "# seeded\n");
    // A wrong per-call token fails, and the failure does not echo it.
    let wrong = format!("wrong{}", uuid::Uuid::new_v4().simple());
    let (status, bad) = app
        .git(
            &id,
            "clone",
            json!({"repository_url": url, "directory": "bad", "token": wrong}),
        )
        .await;
    assert_eq!(status, 200, "{bad}");
    assert_eq!(bad["success"], false);
    assert!(!bad.to_string().contains(&wrong), "{bad}");

    // Neither token is in any job record, job output, or audit row; the jobs API shows none.
    let stored = stored_job_text(&app, db, &db_url).await;
    for token in [&sandbox_token, &call_token, &wrong] {
        assert!(
            !stored.contains(token.as_str()),
            "a token was stored with a job or audit row"
        );
    }
    let (_, jobs) = app.get_json("/v1/jobs?limit=100").await;
    assert!(jobs["jobs"].as_array().unwrap().len() >= 5);
    for job in jobs["jobs"].as_array().unwrap() {
        let (_, full) = app
            .get_json(&format!("/v1/jobs/{}", job["job_id"].as_str().unwrap()))
            .await;
        let text = full.to_string();
        for token in [&sandbox_token, &call_token, &wrong] {
            assert!(
                !text.contains(token.as_str()),
                "jobs API shows a token: {text}"
            );
        }
    }
    // The per-call tokens never reach the database at all (the sandbox's own token is stored
    // with the sandbox, like its environment variables).
    if db == Db::Sqlite {
        for file in ["daytona-mcp.db", "daytona-mcp.db-wal"] {
            if let Ok(bytes) = std::fs::read(app.data_dir.join(file)) {
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains(&call_token),
                    "{file} holds the per-call token"
                );
                assert!(!text.contains(&wrong), "{file} holds the per-call token");
            }
        }
    }
    drop(server);
}

async fn network_is_off_unless_allowed(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let (status, err) = app
        .call(
            "/create_sandbox",
            json!({"name": "wants-net", "network": true}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "network");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sandbox.allow_network")
    );

    let Some((mut config, dir)) = test_config(db).await else {
        return;
    };
    config.sandbox.allow_network = true;
    let app = spawn_with(config, dir).await;
    let online = app
        .call(
            "/create_sandbox",
            json!({"name": "online", "network": true}),
        )
        .await
        .1;
    let offline = app.sandbox("offline").await;
    let probe = format!(
        "import socket\ns = socket.socket()\ns.settimeout(3)\n\
         try:\n    s.connect(('127.0.0.1', {}))\n    print('CONNECTED')\n\
         except OSError as e:\n    print('refused', e.errno)\n",
        app.port
    );
    let run = |id: String| {
        let app = &app;
        let probe = probe.clone();
        async move {
            let (status, out) = app
                .call(
                    "/execute_code",
                    json!({"sandbox_id": id, "code": probe, "language": "python"}),
                )
                .await;
            assert_eq!(status, 200, "{out}");
            out["stdout"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(
        run(online["sandbox_id"].as_str().unwrap().to_string()).await,
        "CONNECTED\n"
    );
    assert!(run(offline).await.starts_with("refused"));
}

async fn a_failed_clone_leaves_no_sandbox(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let (status, err) = app
        .call(
            "/create_sandbox",
            json!({"name": "broken-clone", "git_repo": "/workspace/does-not-exist.git"}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("cloning"), "{message}");
    assert!(message.contains("not created"), "{message}");
    let (_, list) = app.call("/list_sandboxes", json!({})).await;
    assert_eq!(list["count"], 0, "{list}");
    let left: Vec<_> = std::fs::read_dir(app.data_dir.join("sandboxes"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "sandbox directory left behind");
    // An https clone without network says what is missing.
    let (status, err) = app
        .call(
            "/create_sandbox",
            json!({"name": "offline-clone", "git_repo": "https://example.invalid/r.git"}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("network"),
        "{err}"
    );
}

/// Commit messages and identities that try to break `log` parsing: the old separators
/// (`\x1e`, `\x1f`) next to multi-byte characters, fake records, newlines. The parsed commits
/// are exactly what was committed, and a NUL is refused before anything runs.
async fn log_shows_hostile_commits_exactly(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let id = app.sandbox("hostile-log").await;
    app.shell(&id, "git init --quiet -b main repo").await;
    let fake = "0123456789abcdef0123456789abcdef01234567";
    // (author name, email, message, committed by a shell command rather than git_operation:
    // names with control characters can only come from a repository's own history).
    let commits = [
        (
            "日本語 Ünï",
            "a@x",
            format!("\u{1e}ü\u{1f}{fake}\u{1f}Mallory\u{1f}m@x\u{1e}"),
            false,
        ),
        (
            "Ann \u{1f}\u{1e}ß",
            "ann\u{1e}@x",
            "ünïcödé ✓ 🎉\n\nbody \u{1e} line\n\u{1e}".to_string(),
            true,
        ),
        (
            "Bob",
            "bob@x",
            format!("€\u{1e}{fake}\u{1f}x\u{1f}y\u{1f}z\u{1f}w\n\n\u{1e}\n\nsecond paragraph"),
            false,
        ),
        // A field that used to be read as a hash, 12 bytes in the middle of a character.
        (
            "Eve",
            "eve@x",
            "ok\u{1e}aüüüüüüü\u{1f}n\u{1f}e\u{1f}d\u{1f}s".to_string(),
            false,
        ),
    ];
    for (i, (name, email, message, by_shell)) in commits.iter().enumerate() {
        app.file_ok(&id, "write", &format!("repo/f{i}"), json!({"content": "x"}))
            .await;
        app.git_ok(&id, "add", json!({"working_directory": "repo"}))
            .await;
        if *by_shell {
            let (status, out) = app
                .call(
                    "/execute_shell",
                    json!({"sandbox_id": id, "working_directory": "repo",
                           "command": "git commit --quiet --cleanup=verbatim -m \"$M\"",
                           "env": {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                                   "GIT_COMMITTER_NAME": "c", "GIT_COMMITTER_EMAIL": "c@x",
                                   "M": message}}),
                )
                .await;
            assert_eq!(status, 200, "{out}");
            assert_eq!(out["exit_code"], 0, "{out}");
        } else {
            app.git_ok(
                &id,
                "commit",
                json!({"working_directory": "repo", "commit_message": message,
                       "author_name": name, "author_email": email}),
            )
            .await;
        }
    }
    let (status, refused) = app
        .git(
            &id,
            "commit",
            json!({"working_directory": "repo", "commit_message": "a\u{0}b"}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["field"], "commit_message");

    let log = app
        .git_ok(&id, "log", json!({"working_directory": "repo"}))
        .await;
    let parsed = log["commits"].as_array().unwrap();
    assert_eq!(parsed.len(), commits.len(), "{log}");
    let root = app.data_dir.join("sandboxes").join(&id).join("repo");
    let hashes = host_git(&root, &["rev-list", "main"]);
    for ((commit, (name, email, message, _)), hash) in
        parsed.iter().zip(commits.iter().rev()).zip(hashes.lines())
    {
        assert_eq!(commit["hash"], hash, "{log}");
        assert_eq!(commit["author_name"], *name, "{log}");
        assert_eq!(commit["author_email"], *email, "{log}");
        // The subject is the first line of the message, as committed.
        assert_eq!(commit["subject"], message.lines().next().unwrap(), "{log}");
        let date = commit["date"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(date).is_ok(), "{date}");
    }
    assert_eq!(
        log["output"].as_str().unwrap().lines().count(),
        commits.len(),
        "{log}"
    );
}

crate::on_both_databases!(
    log_shows_hostile_commits_exactly,
    clone_commit_push_pull_log_diff,
    https_token_is_used_and_never_stored,
    network_is_off_unless_allowed,
    a_failed_clone_leaves_no_sandbox
);
