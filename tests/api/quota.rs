//! Per-sandbox resources: requests within the operator's maxima, memory and CPU enforced by the
//! sandbox's cgroups, the disk quota enforced on file writes and on commands, and what
//! `get_sandbox_info` and `list_sandboxes` report. The server stays healthy after each limit.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, eventually, spawn_app};

async fn healthy(app: &TestApp, id: &str) {
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let again = app.shell(id, "echo still here").await;
    assert_eq!(again["stdout"], "still here\n", "{again}");
}

async fn info(app: &TestApp, id: &str) -> Value {
    let (status, info) = app
        .call("/get_sandbox_info", json!({"sandbox_id": id}))
        .await;
    assert_eq!(status, 200, "{info}");
    info
}

/// Directories under `root` (a few levels deep) whose name starts with `prefix`.
fn dirs_named(root: &Path, prefix: &str, depth: usize, found: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(path.clone());
        }
        dirs_named(&path, prefix, depth - 1, found);
    }
}

async fn requests_above_maxima_are_refused(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    for (resources, field) in [
        (json!({"cpu": 64}), "resources.cpu"),
        (json!({"memory_mb": 1_000_000}), "resources.memory_mb"),
        (json!({"disk_gb": 10_000}), "resources.disk_gb"),
        (json!({"cpu": -1}), "resources.cpu"),
    ] {
        let (status, err) = app
            .call(
                "/create_sandbox",
                json!({"name": "greedy", "resources": resources}),
            )
            .await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    let (status, err) = app
        .call(
            "/create_sandbox",
            json!({"name": "greedy", "resources": {"cpu": 64}}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sandbox.max_cpus"),
        "{err}"
    );
}

async fn memory_and_cpu_are_enforced_per_sandbox(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let (status, created) = app
        .call(
            "/create_sandbox",
            json!({"name": "small", "resources": {"memory_mb": 128, "cpu": 0.5}}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["sandbox_id"].as_str().unwrap().to_string();

    // The report names each limit, its value and how it is enforced.
    let info = info(&app, &id).await;
    let limits = &info["resources"]["limits"];
    assert_eq!(
        limits["memory_bytes"]["value"],
        128.0 * 1024.0 * 1024.0,
        "{info}"
    );
    assert_eq!(limits["cpus"]["value"], 0.5);
    assert_eq!(info["resources"]["requested"]["memory_mb"], 128);
    for name in [
        "memory_bytes",
        "cpus",
        "processes",
        "disk_bytes",
        "file_size_bytes",
        "wall_time_s",
    ] {
        assert!(limits[name]["enforced_by"].is_string(), "{name}: {info}");
    }
    let cgroups = &info["resources"]["enforcement"]["cgroup_controllers"];
    let has = |c: &str| cgroups.as_array().unwrap().iter().any(|x| x == c);
    assert!(
        has("memory") && has("cpu"),
        "this machine's cgroups are writable: {info}"
    );
    assert!(
        limits["memory_bytes"]["enforced_by"]
            .as_str()
            .unwrap()
            .starts_with("cgroup")
    );
    assert!(
        limits["cpus"]["enforced_by"]
            .as_str()
            .unwrap()
            .starts_with("cgroup")
    );

    // While a command runs, its cgroup on the host carries the sandbox's values.
    let job = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "sleep 30", "timeout_s": 60}),
        )
        .await;
    app.wait_for_state(&job, "running").await;
    let prefix = format!("{id}.");
    let mut memory_dirs = Vec::new();
    let mut cpu_dirs = Vec::new();
    assert!(
        eventually(10, || {
            memory_dirs.clear();
            cpu_dirs.clear();
            dirs_named(
                Path::new("/sys/fs/cgroup/memory"),
                &prefix,
                8,
                &mut memory_dirs,
            );
            dirs_named(Path::new("/sys/fs/cgroup/cpu"), &prefix, 8, &mut cpu_dirs);
            !memory_dirs.is_empty() && !cpu_dirs.is_empty()
        })
        .await,
        "no cgroup for the command"
    );
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap().trim().to_string();
    assert_eq!(
        read(memory_dirs[0].join("memory.limit_in_bytes")),
        "134217728"
    );
    assert_eq!(read(cpu_dirs[0].join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cpu_dirs[0].join("cpu.cfs_period_us")), "100000");
    let (status, _) = app.call(&format!("/v1/jobs/{job}/cancel"), json!({})).await;
    assert!(status == 200 || status == 202);
    app.wait(&job).await;

    // A memory hog far above 128 MiB is killed, and says so.
    let (status, out) = app
        .call(
            "/execute_code",
            json!({"sandbox_id": id, "language": "python", "timeout_s": 60,
                   "code": "b = bytearray(512 * 1024**2)\nprint('allocated')"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["limit_exceeded"], "memory", "{out}");
    assert!(!out["stdout"].as_str().unwrap().contains("allocated"));
    assert!(
        out["message"].as_str().unwrap().contains("memory limit"),
        "{out}"
    );
    healthy(&app, &id).await;

    // A CPU spin is stopped by the time limit.
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "while :; do :; done", "timeout_s": 2}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["timed_out"], true, "{out}");
    assert!(out["exit_code"].is_null());
    assert!(
        out["message"].as_str().unwrap().contains("timed out"),
        "{out}"
    );
    healthy(&app, &id).await;
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn disk_quota_is_enforced(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    // 0.01 GiB: about 10 MiB.
    let (status, created) = app
        .call(
            "/create_sandbox",
            json!({"name": "tiny-disk", "resources": {"disk_gb": 0.01}}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["sandbox_id"].as_str().unwrap().to_string();
    let quota = (0.01 * (1u64 << 30) as f64) as u64;
    let six_mib = vec![7u8; 6 << 20];

    // File writes: the first fits, the second would exceed the quota and is refused.
    app.file_ok(
        &id,
        "write",
        "a.bin",
        json!({"content": b64(&six_mib), "encoding": "base64"}),
    )
    .await;
    let (status, err) = app
        .file(
            &id,
            "write",
            "b.bin",
            json!({"content": b64(&six_mib), "encoding": "base64"}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disk quota exceeded"),
        "{err}"
    );
    let exists = app.file_ok(&id, "exists", "b.bin", json!({})).await;
    assert_eq!(exists["exists"], false);
    let (status, err) = app
        .file(
            &id,
            "append",
            "a.bin",
            json!({"content": b64(&six_mib), "encoding": "base64"}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    let info1 = info(&app, &id).await;
    assert_eq!(info1["disk_quota_bytes"], quota);
    assert!(info1["disk_bytes"].as_u64().unwrap() >= 6 << 20, "{info1}");
    assert_eq!(info1["over_quota"], false);

    // A command writing one file larger than what is left is stopped at the quota.
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "head -c 8388608 /dev/zero > big.bin"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["limit_exceeded"], "disk", "{out}");
    assert!(
        out["message"].as_str().unwrap().contains("disk quota"),
        "{out}"
    );
    let size = app.file_ok(&id, "stat", "big.bin", json!({})).await;
    assert!(size["entry"]["size"].as_u64().unwrap() < 8 << 20, "{size}");
    healthy(&app, &id).await;

    // A command writing many small files is killed by the watchdog once over the quota.
    app.file_ok(&id, "delete", "big.bin", json!({})).await;
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "timeout_s": 120,
                   "command": "mkdir -p many; i=0; while :; do head -c 524288 /dev/zero > many/f$i 2>/dev/null; i=$((i+1)); done"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["limit_exceeded"], "disk", "{out}");
    assert_eq!(out["timed_out"], false, "{out}");
    assert!(out["exit_code"].is_null(), "{out}");
    let over = info(&app, &id).await;
    assert_eq!(over["over_quota"], true, "{over}");
    assert!(
        over["message"]
            .as_str()
            .unwrap()
            .contains("over its disk quota"),
        "{over}"
    );

    // Over the quota, writes are refused; after deleting, they work again.
    let (status, _) = app
        .file(&id, "write", "small.txt", json!({"content": "x"}))
        .await;
    assert_eq!(status, 422);
    app.file_ok(&id, "delete", "many", json!({"recursive": true}))
        .await;
    let back = info(&app, &id).await;
    assert_eq!(back["over_quota"], false, "{back}");
    app.file_ok(&id, "write", "small.txt", json!({"content": "x"}))
        .await;
    let out = app.shell(&id, "echo fine > ok.txt && cat ok.txt").await;
    assert_eq!(out["stdout"], "fine\n", "{out}");
    healthy(&app, &id).await;
}

async fn list_and_info_report_real_state(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let id = app.sandbox("reported").await;
    app.file_ok(
        &id,
        "write",
        "data.bin",
        json!({"content": "x".repeat(100_000)}),
    )
    .await;
    let before = info(&app, &id).await["last_accessed"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    // Every job on the sandbox counts as an access, reads included.
    app.file_ok(&id, "stat", "data.bin", json!({})).await;
    let mut last = String::new();
    for _ in 0..100 {
        let (_, list) = app.call("/list_sandboxes", json!({})).await;
        last = list["sandboxes"][0]["last_accessed"]
            .as_str()
            .unwrap()
            .to_string();
        if last > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        last > before,
        "last_accessed did not move: {before} -> {last}"
    );

    let (_, list) = app.call("/list_sandboxes", json!({})).await;
    let entry = &list["sandboxes"][0];
    assert_eq!(entry["status"], "running");
    assert!(entry["disk_bytes"].as_u64().unwrap() >= 100_000, "{list}");
    assert_eq!(entry["network"], false);
    let info = info(&app, &id).await;
    assert!(info["disk_bytes"].as_u64().unwrap() >= 100_000);
    assert!(chrono::DateTime::parse_from_rfc3339(info["created_at"].as_str().unwrap()).is_ok());

    // A sandbox whose files vanished from the driver is reported as such.
    std::fs::remove_dir_all(app.data_dir.join("sandboxes").join(&id)).unwrap();
    let (_, list) = app.call("/list_sandboxes", json!({})).await;
    assert_eq!(list["sandboxes"][0]["status"], "missing", "{list}");
}

crate::on_both_databases!(
    requests_above_maxima_are_refused,
    list_and_info_report_real_state
);

#[actix_web::test]
async fn memory_and_cpu_limits() {
    memory_and_cpu_are_enforced_per_sandbox(Db::Sqlite).await;
}

#[actix_web::test]
async fn disk_quota() {
    disk_quota_is_enforced(Db::Sqlite).await;
}
