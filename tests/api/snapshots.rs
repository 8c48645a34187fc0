//! Snapshots against a real server with bubblewrap sandboxes: archives that were tampered with
//! (entries that climb out, absolute paths, links out and files through them, hard links out,
//! devices) or corrupted are refused and change nothing, in the sandbox or outside it; a
//! snapshot's size counts against the tenant's disk quota; another tenant's snapshot is not
//! found. The round trip itself (every file back exactly, forks) is the driver conformance
//! case `snapshots_restore_exactly_and_fork_independently`, on both drivers.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::Digest;
use sqlx::Connection;

use crate::access::{DEVELOPER, OTHER, spawn_keyed};
use crate::helpers::{Db, TestApp, spawn_with, test_config};
use crate::on_both_databases;
use crate::support::tree::{Raw, crafted, manifest};

on_both_databases!(
    tampered_and_corrupted_archives_are_refused_and_change_nothing,
    snapshots_count_against_the_disk_quota,
    another_tenant_cannot_see_or_use_a_snapshot,
);

/// Replaces snapshot `id`'s archive with `bytes` and, when `record` is set, records their size
/// and digest, as someone with write access to the data dir and the database could.
async fn replace_archive(app: &TestApp, url: &str, id: &str, bytes: &[u8], record: bool) {
    std::fs::write(archive_of(app, id), bytes).unwrap();
    if !record {
        return;
    }
    let digest = hex::encode(sha2::Sha256::digest(bytes));
    let size = bytes.len() as i64;
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query("UPDATE snapshots SET size_bytes = ?, digest = ? WHERE id = ?")
            .bind(size)
            .bind(&digest)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query("UPDATE snapshots SET size_bytes = $1, digest = $2 WHERE id = $3")
            .bind(size)
            .bind(&digest)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

fn archive_of(app: &TestApp, id: &str) -> PathBuf {
    app.data_dir.join("snapshots").join(format!("{id}.tar.gz"))
}

/// Entries of the data dir's `sandboxes` directory (no restore directory may be left there).
fn sandbox_dirs(app: &TestApp) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(app.data_dir.join("sandboxes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn snapshot(app: &TestApp, sandbox: &str) -> Value {
    let (status, snap) = app
        .call("/snapshot_sandbox", json!({"sandbox_id": sandbox}))
        .await;
    assert_eq!(status, 200, "{snap}");
    snap
}

async fn tampered_and_corrupted_archives_are_refused_and_change_nothing(db: Db) {
    let Some((config, dir)) = test_config(db).await else {
        return;
    };
    let url = config.database_url().expose().to_string();
    // Outside every sandbox, beside the data dir: where the tampered entries aim.
    let outside = dir.path().join("marker");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("m"), b"untouched").unwrap();
    let app = spawn_with(config, dir).await;
    let id = app.sandbox("victim").await;
    app.shell(
        &id,
        "printf keep > keep.txt && mkdir d && ln -s keep.txt d-link && chmod 0600 keep.txt",
    )
    .await;
    let root = app.data_dir.join("sandboxes").join(&id);
    let before = manifest(&root);
    let outside_before = manifest(&outside);
    let dirs_before = sandbox_dirs(&app);
    let snap = snapshot(&app, &id).await;
    let snapshot_id = snap["snapshot_id"].as_str().unwrap().to_string();
    let original = std::fs::read(archive_of(&app, &snapshot_id)).unwrap();

    // From the sandbox directory (`data/sandboxes/<id>`) and from a restore directory beside
    // it, three `..` reach the marker's parent.
    let abs = |leaf: &str| format!("{}/{leaf}", outside.display()).into_bytes();
    let abs_marker = outside.display().to_string().into_bytes();
    let abs_x = abs("x");
    let abs_m = abs("m");
    use tar::EntryType::{Char, Directory, Link, Regular, Symlink};
    let planted: Raw = (b"planted.txt", Regular, b"", b"planted");
    let cases: Vec<(&str, Vec<Raw>, &str)> = vec![
        (
            "an entry climbing out",
            vec![planted, (b"../../../marker/x", Regular, b"", b"pwned")],
            "`..`",
        ),
        (
            "an entry climbing out from a directory",
            vec![
                planted,
                (b"d2/", Directory, b"", b""),
                (b"d2/../../../../marker/x", Regular, b"", b"pwned"),
            ],
            "`..`",
        ),
        (
            "an absolute path",
            vec![planted, (&abs_x, Regular, b"", b"pwned")],
            "absolute",
        ),
        (
            "an absolute symlink out, then a file through it",
            vec![
                planted,
                (b"out", Symlink, &abs_marker, b""),
                (b"out/x", Regular, b"", b"pwned"),
            ],
            "points outside",
        ),
        (
            "a relative symlink out, then a file through it",
            vec![
                planted,
                (b"rel", Symlink, b"../../../marker", b""),
                (b"rel/x", Regular, b"", b"pwned"),
            ],
            "points outside",
        ),
        (
            "a symlink inside, then a file through it",
            vec![
                planted,
                (b"sub/", Directory, b"", b""),
                (b"in", Symlink, b"sub", b""),
                (b"in/x", Regular, b"", b"through a link"),
            ],
            "beneath the symlink",
        ),
        (
            "a hard link out",
            vec![planted, (b"h", Link, b"../../../marker/m", b"")],
            "`..`",
        ),
        (
            "an absolute hard link",
            vec![planted, (b"h", Link, &abs_m, b"")],
            "absolute",
        ),
        (
            "a device file",
            vec![planted, (b"tty", Char, b"", b"")],
            "device",
        ),
    ];
    for (what, entries, expected) in cases {
        replace_archive(&app, &url, &snapshot_id, &crafted(&entries), true).await;
        let (status, refused) = app
            .call(
                "/restore_snapshot",
                json!({"snapshot_id": snapshot_id, "sandbox_id": id}),
            )
            .await;
        assert_eq!(status, 400, "{what}: {refused}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains("refused"), "{what}: {message}");
        assert!(message.contains(expected), "{what}: {message}");
        assert_eq!(manifest(&root), before, "{what}: the sandbox is unchanged");
        assert_eq!(
            manifest(&outside),
            outside_before,
            "{what}: nothing outside"
        );
        assert!(!app.data_dir.join("x").exists() && !app.data_dir.join("sandboxes/x").exists());
        assert_eq!(
            sandbox_dirs(&app),
            dirs_before,
            "{what}: no restore left behind"
        );
    }

    // A fork from a tampered archive makes no sandbox.
    let (status, fork) = app
        .call(
            "/create_sandbox",
            json!({"name": "from-tampered", "from_snapshot": snapshot_id}),
        )
        .await;
    assert_eq!(status, 400, "{fork}");
    let (_, listed) = app.call("/list_sandboxes", json!({})).await;
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(sandbox_dirs(&app), dirs_before);

    // Corrupted: the bytes differ from the recorded digest (one flipped), or are cut short.
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    for (what, bytes) in [
        ("a flipped byte", flipped),
        (
            "a truncated archive",
            original[..original.len() / 2].to_vec(),
        ),
    ] {
        replace_archive(&app, &url, &snapshot_id, &bytes, false).await;
        // The row still holds the original's size and digest.
        replace_row_back(&app, &url, &snapshot_id, &original).await;
        let (status, refused) = app
            .call(
                "/restore_snapshot",
                json!({"snapshot_id": snapshot_id, "sandbox_id": id}),
            )
            .await;
        assert_eq!(status, 400, "{what}: {refused}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains("corrupted"), "{what}: {message}");
        assert_eq!(manifest(&root), before, "{what}: the sandbox is unchanged");
    }

    // The original archive restores again.
    std::fs::write(archive_of(&app, &snapshot_id), &original).unwrap();
    app.shell(&id, "rm keep.txt").await;
    let (status, restored) = app
        .call(
            "/restore_snapshot",
            json!({"snapshot_id": snapshot_id, "sandbox_id": id}),
        )
        .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(manifest(&root), before);
}

/// Puts the size and digest of `original` back on the row (the corrupted file stays).
async fn replace_row_back(app: &TestApp, url: &str, id: &str, original: &[u8]) {
    let current = std::fs::read(archive_of(app, id)).unwrap();
    replace_archive(app, url, id, original, true).await;
    std::fs::write(archive_of(app, id), current).unwrap();
}

fn archives_in(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tar.gz")
        })
        .count()
}

async fn snapshots_count_against_the_disk_quota(db: Db) {
    let Some((mut config, dir)) = test_config(db).await else {
        return;
    };
    config.quotas.max_disk = "1g".into();
    let app = spawn_with(config, dir).await;
    // A sandbox holding the whole quota: any snapshot is over.
    let (status, full) = app
        .call(
            "/create_sandbox",
            json!({"name": "full", "resources": {"disk_gb": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{full}");
    app.shell("full", "head -c 100000 /dev/urandom > data")
        .await;
    let (status, refused) = app
        .call("/snapshot_sandbox", json!({"sandbox_id": "full"}))
        .await;
    assert_eq!(status, 422, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("quota exceeded"), "{message}");
    assert!(message.contains("quotas.max_disk"), "{message}");
    assert_eq!(archives_in(&app.data_dir), 0, "no archive is kept");
    let (_, listed) = app.call("/list_snapshots", json!({})).await;
    assert_eq!(listed["count"], 0, "{listed}");
    app.call("/delete_sandbox", json!({"sandbox_id": "full"}))
        .await;

    // Half the quota in a sandbox and a snapshot of it: another half-quota sandbox is over.
    let (status, _) = app
        .call(
            "/create_sandbox",
            json!({"name": "half", "resources": {"disk_gb": 0.5}}),
        )
        .await;
    assert_eq!(status, 200);
    app.shell("half", "head -c 100000 /dev/urandom > data")
        .await;
    let snap = snapshot(&app, "half").await;
    assert!(snap["size_bytes"].as_u64().unwrap() > 100_000, "{snap}");
    let other = json!({"name": "other-half", "resources": {"disk_gb": 0.5}});
    let (status, refused) = app.call("/create_sandbox", other.clone()).await;
    assert_eq!(status, 429, "the snapshot's bytes count: {refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quotas.max_disk"),
        "{refused}"
    );
    let (status, _) = app
        .call(
            "/delete_snapshot",
            json!({"snapshot_id": snap["snapshot_id"]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, created) = app.call("/create_sandbox", other).await;
    assert_eq!(status, 200, "the snapshot's share is free again: {created}");
}

async fn another_tenant_cannot_see_or_use_a_snapshot(db: Db) {
    let Some(mut keyed) = spawn_keyed(db).await else {
        return;
    };
    keyed.act_as(DEVELOPER);
    let mine = keyed.app.sandbox("mine").await;
    keyed.app.shell(&mine, "printf secret > s.txt").await;
    let snap = snapshot(&keyed.app, &mine).await;
    let id = snap["snapshot_id"].as_str().unwrap().to_string();

    keyed.act_as(OTHER);
    let theirs = keyed.app.sandbox("theirs").await;
    let (status, listed) = keyed.app.call("/list_snapshots", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(listed["count"], 0, "{listed}");
    for (tool, args) in [
        (
            "restore_snapshot",
            json!({"snapshot_id": id, "sandbox_id": theirs}),
        ),
        ("delete_snapshot", json!({"snapshot_id": id})),
        (
            "create_sandbox",
            json!({"name": "stolen", "from_snapshot": id}),
        ),
        ("snapshot_sandbox", json!({"sandbox_id": mine})),
    ] {
        let (status, body) = keyed.app.call(&format!("/{tool}"), args).await;
        assert_eq!(status, 404, "{tool}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{tool}: {body}");
    }
    let (_, files) = keyed
        .app
        .call(
            "/file_operation",
            json!({"sandbox_id": theirs, "operation": "list", "file_path": "."}),
        )
        .await;
    assert_eq!(
        files["entries"].as_array().map(Vec::len),
        Some(0),
        "{files}"
    );

    keyed.act_as(DEVELOPER);
    let (_, listed) = keyed.app.call("/list_snapshots", json!({})).await;
    assert_eq!(listed["count"], 1, "still there: {listed}");
    assert!(archive_of(&keyed.app, &id).exists());
}

/// Over MCP: the tools are listed with their annotations (restore and delete destructive) and
/// schemas, and a snapshot, a restore and a listing run as tool calls.
#[actix_web::test]
async fn mcp_lists_and_calls_the_snapshot_tools() {
    let Some(app) = crate::helpers::spawn_app(Db::Sqlite).await else {
        return;
    };
    let id = app.sandbox("over-mcp").await;
    app.shell(&id, "printf one > f.txt").await;
    let session = app.mcp_session("2025-11-25").await;
    let tools = session.call(1, "tools/list", json!({})).await;
    let tools = tools.result()["tools"].as_array().unwrap().clone();
    let tool = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed"))
            .clone()
    };
    for (name, read_only, destructive) in [
        ("snapshot_sandbox", false, false),
        ("list_snapshots", true, false),
        ("restore_snapshot", false, true),
        ("delete_snapshot", false, true),
    ] {
        let t = tool(name);
        assert_eq!(t["annotations"]["readOnlyHint"], read_only, "{name}: {t}");
        assert_eq!(
            t["annotations"]["destructiveHint"], destructive,
            "{name}: {t}"
        );
        assert_eq!(t["inputSchema"]["type"], "object", "{name}");
        assert!(!t["description"].as_str().unwrap().is_empty());
    }
    assert!(tool("create_sandbox")["inputSchema"]["properties"]["from_snapshot"].is_object());
    let output = &tool("snapshot_sandbox")["outputSchema"];
    assert_eq!(output["type"], "object", "{output}");
    for field in [
        "snapshot_id",
        "size_bytes",
        "digest",
        "created_at",
        "message",
    ] {
        // The tool's own answer (first), or the job handle of a call still running.
        let own = &output["anyOf"][0]["properties"][field];
        assert!(own.is_object(), "{field}: {output}");
    }
    // The server's own field is not offered to callers.
    assert!(tool("snapshot_sandbox")["inputSchema"]["properties"]["snapshot_id"].is_null());

    let taken = session
        .tool(
            2,
            "snapshot_sandbox",
            json!({"sandbox_id": id, "name": "one"}),
        )
        .await;
    assert_eq!(taken["isError"], false, "{taken}");
    let snapshot = taken["structuredContent"]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    app.shell(&id, "printf two > f.txt").await;
    let restored = session
        .tool(
            3,
            "restore_snapshot",
            json!({"snapshot_id": snapshot, "sandbox_id": id}),
        )
        .await;
    assert_eq!(restored["isError"], false, "{restored}");
    let out = app.shell(&id, "cat f.txt").await;
    assert_eq!(out["stdout"], "one");
    let listed = session.tool(4, "list_snapshots", json!({})).await;
    assert_eq!(listed["structuredContent"]["count"], 1, "{listed}");
    assert_eq!(listed["structuredContent"]["snapshots"][0]["name"], "one");
}

/// A sandbox holding a symlink out of it cannot be snapshotted (a restore would refuse the
/// archive), and the call names the link; a restore that would put a sandbox over its disk
/// quota is refused and changes nothing.
#[actix_web::test]
async fn links_out_are_refused_when_taken_and_quotas_hold_on_restore() {
    let Some(app) = crate::helpers::spawn_app(Db::Sqlite).await else {
        return;
    };
    let id = app.sandbox("linked").await;
    app.shell(&id, "printf x > f && ln -s /etc/passwd out")
        .await;
    let (status, refused) = app
        .call("/snapshot_sandbox", json!({"sandbox_id": id}))
        .await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot be snapshotted"), "{message}");
    assert!(message.contains("`out`"), "{message}");
    assert_eq!(archives_in(&app.data_dir), 0);

    app.shell(&id, "rm out && head -c 300000 /dev/urandom > big")
        .await;
    let snap = snapshot(&app, &id).await;
    let (status, tiny) = app
        .call(
            "/create_sandbox",
            json!({"name": "tiny", "resources": {"disk_gb": 0.0001}}),
        )
        .await;
    assert_eq!(status, 200, "{tiny}");
    let tiny = tiny["sandbox_id"].as_str().unwrap().to_string();
    app.shell(&tiny, "printf mine > mine.txt").await;
    let root = app.data_dir.join("sandboxes").join(&tiny);
    let before = manifest(&root);
    let (status, over) = app
        .call(
            "/restore_snapshot",
            json!({"snapshot_id": snap["snapshot_id"], "sandbox_id": tiny}),
        )
        .await;
    assert_eq!(status, 422, "{over}");
    assert!(
        over["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disk quota"),
        "{over}"
    );
    assert_eq!(manifest(&root), before, "the sandbox is unchanged");
}

/// Snapshots outlive the server: after a restart the archive restores, and what an interrupted
/// snapshot or restore would leave (a temporary archive, an unpacking directory) is removed at
/// start-up.
#[actix_web::test]
async fn snapshots_survive_a_restart_and_leftovers_are_swept() {
    let Some((config, dir)) = test_config(Db::Sqlite).await else {
        return;
    };
    let app = spawn_with(config.clone(), dir).await;
    let id = app.sandbox("lasting").await;
    app.shell(&id, "mkdir -p a/b && printf kept > a/b/f && chmod 0700 a")
        .await;
    let root = app.data_dir.join("sandboxes").join(&id);
    let before = manifest(&root);
    let snap = snapshot(&app, &id).await;
    let data_dir = app.data_dir.clone();
    let dir = app.stop();
    std::fs::write(data_dir.join("snapshots/.tmp-snap-00-x"), b"half").unwrap();
    std::fs::create_dir_all(data_dir.join(format!("sandboxes/.restore-{id}-x/inner"))).unwrap();

    let app = spawn_with(config, dir).await;
    assert!(!data_dir.join("snapshots/.tmp-snap-00-x").exists());
    assert_eq!(sandbox_dirs(&app), vec![id.clone()]);
    app.shell(&id, "rm -rf a && printf new > n").await;
    let (status, restored) = app
        .call(
            "/restore_snapshot",
            json!({"snapshot_id": snap["snapshot_id"], "sandbox_id": id}),
        )
        .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(manifest(&root), before);
}
