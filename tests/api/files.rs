//! `file_operation` over HTTP on real sandboxes: binary-safe round trips, listings, every
//! operation, escapes refused (`..`, absolute paths, symlinks out, FIFOs), and hostile names and
//! content that do exactly what they say.

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_app, spawn_with, test_config};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

impl TestApp {
    /// Calls `file_operation` on `sandbox` with `fields` merged in.
    pub async fn file(
        &self,
        sandbox: &str,
        operation: &str,
        path: &str,
        fields: Value,
    ) -> (u16, Value) {
        let mut body = json!({"sandbox_id": sandbox, "operation": operation, "file_path": path});
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.call("/file_operation", body).await
    }

    /// A successful `file_operation`.
    pub async fn file_ok(
        &self,
        sandbox: &str,
        operation: &str,
        path: &str,
        fields: Value,
    ) -> Value {
        let (status, body) = self.file(sandbox, operation, path, fields).await;
        assert_eq!(status, 200, "{operation} {path}: {body}");
        assert_eq!(body["success"], true, "{body}");
        body
    }
}

async fn binary_round_trips(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let id = app.sandbox("files-bin").await;
    // Every byte value, several times over, including NUL and invalid UTF-8.
    let every: Vec<u8> = (0..=255u8).cycle().take(256 * 4).collect();
    let out = app
        .file_ok(
            &id,
            "write",
            "bin/every.bin",
            json!({"content": b64(&every), "encoding": "base64"}),
        )
        .await;
    assert_eq!(out["size"], every.len());
    let read = app
        .file_ok(&id, "read", "bin/every.bin", json!({"encoding": "base64"}))
        .await;
    assert_eq!(unb64(read["content"].as_str().unwrap()), every);
    // The sandbox sees the same bytes.
    let sum = app
        .shell(&id, "sha256sum bin/every.bin | cut -d' ' -f1")
        .await;
    let expected = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&every))
    };
    assert_eq!(sum["stdout"].as_str().unwrap().trim(), expected);

    // Reading it as text is a clear error that suggests base64.
    let (status, err) = app.file(&id, "read", "bin/every.bin", json!({})).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "encoding");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("base64"),
        "{err}"
    );

    // 10 MiB of varied bytes.
    let big: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    app.file_ok(
        &id,
        "write",
        "big.bin",
        json!({"content": b64(&big), "encoding": "base64"}),
    )
    .await;
    let read = app
        .file_ok(
            &id,
            "read",
            "/workspace/big.bin",
            json!({"encoding": "base64"}),
        )
        .await;
    assert_eq!(read["size"], big.len());
    assert!(
        unb64(read["content"].as_str().unwrap()) == big,
        "10 MiB file differs"
    );
    let stat = app.file_ok(&id, "stat", "big.bin", json!({})).await;
    assert_eq!(stat["entry"]["size"], big.len());
    assert_eq!(stat["entry"]["type"], "file");

    // Empty files, as text and as base64.
    app.file_ok(&id, "write", "empty.txt", json!({"content": ""}))
        .await;
    app.file_ok(
        &id,
        "write",
        "empty.bin",
        json!({"content": "", "encoding": "base64"}),
    )
    .await;
    for name in ["empty.txt", "empty.bin"] {
        let read = app.file_ok(&id, "read", name, json!({})).await;
        assert_eq!(read["content"], "");
        assert_eq!(read["size"], 0);
    }
    let sizes = app.shell(&id, "wc -c < empty.txt; wc -c < empty.bin").await;
    assert_eq!(sizes["stdout"], "0\n0\n");

    // Unicode names and text.
    let name = "données/日本語 ✓ émoji-🦀.txt";
    let text = "héllo wörld — ✓ 🦀\nzweite Zeile\n";
    app.file_ok(&id, "write", name, json!({"content": text}))
        .await;
    let read = app.file_ok(&id, "read", name, json!({})).await;
    assert_eq!(read["content"], text);
    let listing = app.file_ok(&id, "list", "données", json!({})).await;
    assert_eq!(listing["files"], json!(["日本語 ✓ émoji-🦀.txt"]));
    let cat = app.shell(&id, "cat 'données/日本語 ✓ émoji-🦀.txt'").await;
    assert_eq!(cat["stdout"], text);
}

async fn every_operation(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let id = app.sandbox("files-ops").await;
    app.file_ok(
        &id,
        "write",
        "src/main.py",
        json!({"content": "print(1)\n"}),
    )
    .await;
    let appended = app
        .file_ok(
            &id,
            "append",
            "src/main.py",
            json!({"content": "print(2)\n"}),
        )
        .await;
    assert_eq!(appended["size"], 18);
    app.file_ok(&id, "append", "log.txt", json!({"content": "first\n"}))
        .await;
    let run = app
        .shell(&id, "python3 src/main.py; cat log.txt; ls -ld src")
        .await;
    assert!(
        run["stdout"].as_str().unwrap().starts_with("1\n2\nfirst\n"),
        "{run}"
    );

    let made = app.file_ok(&id, "mkdir", "a/b/c", json!({})).await;
    assert!(
        made["message"].as_str().unwrap().contains("created"),
        "{made}"
    );
    let again = app.file_ok(&id, "mkdir", "a/b/c", json!({})).await;
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{again}"
    );
    app.shell(&id, "ln -s src/main.py link; chmod 600 log.txt")
        .await;

    let listing = app.file_ok(&id, "list", "/workspace", json!({})).await;
    assert_eq!(listing["files"], json!(["a", "link", "log.txt", "src"]));
    let entries = listing["entries"].as_array().unwrap();
    let by_name = |n: &str| entries.iter().find(|e| e["name"] == n).unwrap().clone();
    assert_eq!(by_name("a")["is_dir"], true);
    assert_eq!(by_name("a")["type"], "directory");
    assert_eq!(by_name("log.txt")["size"], 6);
    assert_eq!(by_name("log.txt")["mode"], "0600");
    assert_eq!(by_name("log.txt")["is_dir"], false);
    assert_eq!(by_name("link")["type"], "symlink");
    assert_eq!(by_name("link")["link_target"], "src/main.py");
    let modified = by_name("log.txt")["modified"].as_str().unwrap().to_string();
    let modified = chrono::DateTime::parse_from_rfc3339(&modified).unwrap();
    assert!((chrono::Utc::now() - modified.to_utc()).num_seconds().abs() < 300);

    // A symlink that stays inside is followed for reads; stat describes the link itself.
    let via_link = app.file_ok(&id, "read", "link", json!({})).await;
    assert_eq!(via_link["content"], "print(1)\nprint(2)\n");
    let stat = app.file_ok(&id, "stat", "link", json!({})).await;
    assert_eq!(stat["entry"]["type"], "symlink");

    for (path, exists) in [
        ("src", true),
        ("link", true),
        ("nope", false),
        ("src/main.py/x", false),
    ] {
        let out = app.file_ok(&id, "exists", path, json!({})).await;
        assert_eq!(out["exists"], exists, "{path}: {out}");
    }

    let moved = app
        .file_ok(&id, "move", "src/main.py", json!({"destination": "a/b"}))
        .await;
    assert_eq!(moved["destination"], "a/b/main.py");
    app.file_ok(
        &id,
        "move",
        "log.txt",
        json!({"destination": "/workspace/logs/today.txt"}),
    )
    .await;
    let tree = app.shell(&id, "find . -type f | sort").await;
    assert_eq!(tree["stdout"], "./a/b/main.py\n./logs/today.txt\n");

    // Deleting a non-empty directory needs `recursive`.
    let (status, err) = app.file(&id, "delete", "a", json!({})).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("recursive"),
        "{err}"
    );
    let deleted = app
        .file_ok(&id, "delete", "a", json!({"recursive": true}))
        .await;
    assert_eq!(deleted["removed"], 4);
    app.file_ok(&id, "delete", "link", json!({})).await;
    let gone = app.file_ok(&id, "exists", "a", json!({})).await;
    assert_eq!(gone["exists"], false);

    // Missing files are 404 naming the field; a directory is not readable as a file.
    let (status, err) = app.file(&id, "read", "missing.txt", json!({})).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["field"], "file_path");
    let (status, err) = app.file(&id, "read", "logs", json!({})).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("directory"),
        "{err}"
    );
    let (status, err) = app.file(&id, "list", "logs/today.txt", json!({})).await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = app
        .file(&id, "delete", "/workspace", json!({"recursive": true}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "file_path");
}

/// Escapes through `..`, absolute paths, symlinks and FIFOs are refused, whatever the sandbox
/// planted. Shared with the Landlock tests, which run it with `local.isolation = "landlock"`.
pub async fn escapes_are_refused(app: &TestApp) {
    let id = app.sandbox("escapes").await;
    // A host file outside the sandbox that a confused server could be tricked into touching.
    let outside = app.data_dir.join("outside.txt");
    std::fs::write(&outside, "host secret\n").unwrap();
    let outside_dir = app.data_dir.join("outside-dir");
    std::fs::create_dir_all(&outside_dir).unwrap();

    // Lexical escapes: refused before anything runs.
    for path in [
        "../../etc/passwd",
        "/etc/passwd",
        "/workspace/../etc/passwd",
        "a/../../x",
    ] {
        for op in ["read", "stat", "exists", "list", "delete"] {
            let (status, err) = app.file(&id, op, path, json!({})).await;
            assert_eq!(status, 400, "{op} {path}: {err}");
            assert_eq!(err["error"]["field"], "file_path", "{err}");
        }
        let (status, err) = app.file(&id, "write", path, json!({"content": "x"})).await;
        assert_eq!(status, 400, "write {path}: {err}");
    }
    let (status, err) = app
        .file(&id, "move", "x", json!({"destination": "../../tmp/x"}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "destination");

    // Symlinks planted by a command: to a host file by absolute path, by relative path out of
    // the root, to a host directory, and to /etc.
    let planted = app
        .shell(
            &id,
            &format!(
                "ln -s {outside} abs-link; ln -s ../../../../../../../../{outside} rel-link; \
                 ln -s {outside_dir} dir-link; ln -s /etc etc-link; ln -s /etc/passwd passwd-link; \
                 mkfifo pipe; mkdir -p sub; ln -s ../.. sub/up; echo planted",
                outside = outside.display(),
                outside_dir = outside_dir.display()
            ),
        )
        .await;
    assert_eq!(planted["stdout"], "planted\n", "{planted}");

    for path in [
        "abs-link",
        "rel-link",
        "passwd-link",
        "etc-link/passwd",
        "sub/up/etc/passwd",
    ] {
        let (status, err) = app.file(&id, "read", path, json!({})).await;
        assert_eq!(status, 400, "read {path}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains("outside the sandbox"), "{path}: {message}");
        assert!(!err.to_string().contains("host secret"));
        assert!(!err.to_string().contains("root:x:0:0"));
    }
    // Writing through a link (to the file, or into the linked directory) is refused, and the
    // host files stay as they were.
    for path in [
        "abs-link",
        "rel-link",
        "dir-link/evil.txt",
        "etc-link/evil",
        "sub/up/evil",
    ] {
        for op in ["write", "append"] {
            let (status, err) = app.file(&id, op, path, json!({"content": "pwned"})).await;
            assert_eq!(status, 400, "{op} {path}: {err}");
        }
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host secret\n");
    assert!(!outside_dir.join("evil.txt").exists());
    assert!(!std::path::Path::new("/etc/evil").exists());
    // Listing, mkdir and moves through a linked directory are refused too.
    let (status, _) = app.file(&id, "list", "dir-link", json!({})).await;
    assert_eq!(status, 400);
    let (status, _) = app.file(&id, "mkdir", "dir-link/new", json!({})).await;
    assert_eq!(status, 400);
    assert!(!outside_dir.join("new").exists());
    let (status, _) = app
        .file(&id, "move", "pipe", json!({"destination": "dir-link/pipe"}))
        .await;
    assert_eq!(status, 400);
    app.file_ok(&id, "write", "mine.txt", json!({"content": "mine"}))
        .await;
    let (status, _) = app
        .file(
            &id,
            "move",
            "mine.txt",
            json!({"destination": "dir-link/stolen.txt"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(!outside_dir.join("stolen.txt").exists());
    // Deleting a link removes the link, never its target.
    app.file_ok(&id, "delete", "abs-link", json!({})).await;
    app.file_ok(&id, "delete", "dir-link", json!({"recursive": true}))
        .await;
    assert!(outside.exists());
    assert!(outside_dir.exists());
    // The link itself can be described.
    let stat = app.file_ok(&id, "stat", "passwd-link", json!({})).await;
    assert_eq!(stat["entry"]["type"], "symlink");
    assert_eq!(stat["entry"]["link_target"], "/etc/passwd");

    // A FIFO is neither read (which would block) nor written.
    for (op, fields) in [("read", json!({})), ("write", json!({"content": "x"}))] {
        let (status, err) = app.file(&id, op, "pipe", fields).await;
        assert_eq!(status, 400, "{op} pipe: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains("fifo"),
            "{err}"
        );
    }
    let stat = app.file_ok(&id, "stat", "pipe", json!({})).await;
    assert_eq!(stat["entry"]["type"], "fifo");
    // The server is still healthy.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

async fn escapes(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    escapes_are_refused(&app).await;
}

/// Strings an injection would need: quotes, command substitution, backticks, `;`, newlines,
/// leading dashes. Names cannot hold `/`, so they touch a relative marker.
pub const HOSTILE_NAMES: [&str; 9] = [
    "it's",
    "say \"hi\"",
    "$(touch pwned)",
    "`touch pwned`",
    "a; touch pwned",
    "line1\nline2",
    "-rf",
    "--help",
    "'$(touch pwned)'\"`touch pwned`\"; touch pwned #",
];

/// Hostile strings in content and paths: written and read exactly, nothing executed.
pub async fn hostile_strings_do_only_what_they_say(app: &TestApp) {
    let id = app.sandbox("hostile-files").await;
    let host_marker = app.data_dir.join("pwned-host");
    let content = format!(
        "'$(touch /workspace/pwned)' \"`touch /workspace/pwned`\"; touch {host}\n$(touch {host})\n\
         `touch {host}`\n-rf --help\n",
        host = host_marker.display()
    );
    for (i, name) in HOSTILE_NAMES.iter().enumerate() {
        let body = format!("{name}\n{content}");
        let path = format!("dir-{i}/{name}");
        app.file_ok(&id, "write", &path, json!({"content": body}))
            .await;
        app.file_ok(&id, "append", &path, json!({"content": name}))
            .await;
        let read = app.file_ok(&id, "read", &path, json!({})).await;
        assert_eq!(read["content"], format!("{body}{name}"));
        let listing = app
            .file_ok(&id, "list", &format!("dir-{i}"), json!({}))
            .await;
        assert_eq!(listing["files"], json!([name]));
        let stat = app.file_ok(&id, "stat", &path, json!({})).await;
        assert_eq!(stat["entry"]["name"], *name);
        let moved = app
            .file_ok(
                &id,
                "move",
                &path,
                json!({"destination": format!("moved-{i}-{name}")}),
            )
            .await;
        assert_eq!(moved["destination"], format!("moved-{i}-{name}"));
        app.file_ok(&id, "delete", &format!("moved-{i}-{name}"), json!({}))
            .await;
        app.file_ok(&id, "delete", &format!("dir-{i}"), json!({}))
            .await;
    }
    let check = app
        .shell(&id, "ls -A; test -e pwned && echo INJECTED || echo clean")
        .await;
    assert_eq!(check["stdout"], "clean\n", "{check}");
    assert!(!host_marker.exists(), "an injection ran on the host");
    assert!(
        !std::path::Path::new("pwned").exists(),
        "an injection ran in the server's cwd"
    );
}

async fn hostile(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    hostile_strings_do_only_what_they_say(&app).await;
}

crate::on_both_databases!(binary_round_trips, every_operation, escapes, hostile);

#[actix_web::test]
async fn files_over_the_size_limit_are_refused_clearly() {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.sandbox.file_limit = "1m".into();
    let app = spawn_with(config, dir).await;
    let id = app.sandbox("limited").await;
    let big = vec![b'x'; (1 << 20) + 1];
    let (status, err) = app
        .file(
            &id,
            "write",
            "big.bin",
            json!({"content": b64(&big), "encoding": "base64"}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "content");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1048576"),
        "{err}"
    );
    // A file a command made is too big to read whole; the error says how to read it instead.
    app.shell(&id, "head -c 2000000 /dev/zero > made.bin").await;
    let (status, err) = app
        .file(&id, "read", "made.bin", json!({"encoding": "base64"}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "file_path");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2000000 bytes") && message.contains("execute_shell"),
        "{message}"
    );
    // Exactly at the limit is fine.
    let exact = vec![b'y'; 1 << 20];
    app.file_ok(
        &id,
        "write",
        "exact.bin",
        json!({"content": b64(&exact), "encoding": "base64"}),
    )
    .await;
    let read = app
        .file_ok(&id, "read", "exact.bin", json!({"encoding": "base64"}))
        .await;
    assert_eq!(read["size"], 1 << 20);
}
