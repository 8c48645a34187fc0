//! The conformance cases: what every driver must do the same way, through the real server.

use base64::Engine;
use serde_json::json;

use crate::harness::{Harness, Kind};
use crate::helpers::{eventually, processes_with};
use crate::support::git::{host_git, seed_bare_repo};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Every kind of text that a shell, the toolbox's splitting or an option parser would treat
/// specially.
pub const HOSTILE: &str = "it's \"quoted\" $(touch pwned-1) `touch pwned-2` ${HOME} \
    \\back\\slash ; touch pwned-3 | & > pwned-4\nsecond line\n-rf --force  two  spaces \u{e9}";

pub async fn lifecycle_create_list_info_delete(h: Harness) {
    let app = &h.app;
    let (status, created) = app
        .call(
            "/create_sandbox",
            json!({"name": "life", "labels": {"team": "core"}, "environment_vars": {"K": "v"}}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["sandbox_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sb-"), "our id, whatever the driver: {id}");
    assert_eq!(created["status"], "running");

    let (_, info) = app
        .call("/get_sandbox_info", json!({"sandbox_id": "life"}))
        .await;
    assert_eq!(info["sandbox_id"], id);
    assert_eq!(info["status"], "running", "{info}");
    let driver = if h.kind == Kind::Local {
        "local"
    } else {
        "daytona"
    };
    assert_eq!(info["driver"], driver);
    assert_eq!(info["environment_vars"]["K"], "***");

    let (_, listed) = app
        .call("/list_sandboxes", json!({"labels": {"team": "core"}}))
        .await;
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["sandboxes"][0]["sandbox_id"], id);
    assert_eq!(listed["sandboxes"][0]["status"], "running");

    let (status, deleted) = app.call("/delete_sandbox", json!({"sandbox_id": id})).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["success"], true);
    if let Some(fake) = &h.fake {
        let out = fake.run(&["info", &id, "-f", "json"]);
        assert!(!out.status.success(), "the Daytona sandbox is gone");
    } else {
        assert!(!app.data_dir.join("sandboxes").join(&id).exists());
    }
    let (_, listed) = app.call("/list_sandboxes", json!({})).await;
    assert_eq!(listed["count"], 0, "{listed}");
    let (status, _) = app
        .call("/get_sandbox_info", json!({"sandbox_id": id}))
        .await;
    assert_eq!(status, 404);
}

pub async fn exec_exit_codes_env_stdin_and_separate_streams(h: Harness) {
    let (_, created) = h
        .app
        .call(
            "/create_sandbox",
            json!({"name": "exec", "environment_vars": {"FROM_SANDBOX": "sandbox value"}}),
        )
        .await;
    let id = created["sandbox_id"].as_str().unwrap().to_string();
    let (status, out) = h
        .shell(&id, "echo out; echo err >&2; exit 7", json!({}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["exit_code"], 7,
        "a non-zero exit is a normal result: {out}"
    );
    assert_eq!(out["stdout"], "out\n");
    assert_eq!(out["stderr"], "err\n");
    assert_eq!(out["timed_out"], false);

    let (_, out) = h
        .shell(
            &id,
            "printf '%s|%s|' \"$FROM_SANDBOX\" \"$FROM_CALL\"; cat",
            json!({"env": {"FROM_CALL": "call value"}, "stdin": "from stdin\n"}),
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    assert_eq!(out["stdout"], "sandbox value|call value|from stdin\n");
    // A stdin larger than one argument of the command line.
    let big = "0123456789abcdef".repeat(12_000);
    let (_, out) = h
        .shell(&id, "wc -c | tr -d ' '", json!({"stdin": big}))
        .await;
    assert_eq!(out["stdout"], format!("{}\n", big.len()), "{out}");

    // The working directory is inside the sandbox; one outside is refused.
    h.file_ok(&id, "mkdir", "sub/dir", json!({})).await;
    let (_, out) = h
        .shell(
            &id,
            "basename \"$PWD\"",
            json!({"working_directory": "sub/dir"}),
        )
        .await;
    assert_eq!(out["stdout"], "dir\n", "{out}");
    let (status, refused) = h
        .shell(&id, "pwd", json!({"working_directory": "../.."}))
        .await;
    assert_eq!(status, 400, "{refused}");
    let (_, missing) = h
        .shell(&id, "pwd", json!({"working_directory": "nope"}))
        .await;
    assert_eq!(missing["error"]["field"], "working_directory", "{missing}");
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`nope` does not exist")
    );
}

pub async fn execute_code_runs_the_language(h: Harness) {
    let id = h.app.sandbox("code").await;
    let (status, out) = h
        .app
        .call(
            "/execute_code",
            json!({"sandbox_id": id, "language": "python",
                   "code": "import sys\nprint('it\\'s', 6 * 7)\nsys.stderr.write('e\\n')\nsys.exit(3)"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "it's 42\n");
    assert_eq!(out["stderr"], "e\n");
    assert_eq!(out["exit_code"], 3);
    let (_, out) = h
        .app
        .call(
            "/execute_code",
            json!({"sandbox_id": id, "language": "bash", "code": "echo \"$BASH_VERSION\" | cut -c1"}),
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    assert!(
        out["stdout"]
            .as_str()
            .unwrap()
            .trim()
            .parse::<u32>()
            .is_ok(),
        "{out}"
    );
}

pub async fn hostile_strings_reach_the_sandbox_intact(h: Harness) {
    let id = h.app.sandbox("hostile").await;
    // In the environment, on stdin and as the caller's own shell command's literal text.
    let (_, out) = h
        .shell(
            &id,
            "printf '%s' \"$HOSTILE\"; printf '|'; cat",
            json!({"env": {"HOSTILE": HOSTILE}, "stdin": HOSTILE}),
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    assert_eq!(out["stdout"], format!("{HOSTILE}|{HOSTILE}"));
    let quoted = format!("printf '%s' '{}'", HOSTILE.replace('\'', "'\\''"));
    let (_, out) = h.shell(&id, &quoted, json!({})).await;
    assert_eq!(out["stdout"], HOSTILE, "{out}");
    // As a working directory and file name starting with `-`.
    h.file_ok(&id, "mkdir", "-rf", json!({})).await;
    let (_, out) = h
        .shell(
            &id,
            "basename \"$PWD\"",
            json!({"working_directory": "-rf"}),
        )
        .await;
    assert_eq!(out["stdout"], "-rf\n", "{out}");
    // Non-UTF-8 output comes back the same way on every driver (invalid bytes replaced).
    let (_, out) = h.shell(&id, "printf 'a\\377b'", json!({})).await;
    assert_eq!(out["stdout"], "a\u{fffd}b", "{out}");
    // Nothing ran that the text only spelled.
    let root = h.workspace_on_host(&id);
    for n in 1..=4 {
        assert!(
            !root.join(format!("pwned-{n}")).exists(),
            "pwned-{n} was created"
        );
        let (_, exists) = h
            .file(&id, "exists", &format!("pwned-{n}"), json!({}))
            .await;
        assert_eq!(exists["exists"], false);
    }
}

pub async fn files_round_trip_every_byte_value_and_hostile_names(h: Harness) {
    let id = h.app.sandbox("files").await;
    // Every byte value, in a file large enough to travel in several chunks.
    let mut bytes: Vec<u8> = (0..=255u8).collect();
    let pattern = bytes.clone();
    while bytes.len() < 900 * 1024 {
        bytes.extend_from_slice(&pattern);
        bytes.push(bytes.len() as u8);
    }
    let names = [
        "-rf",
        "$(touch pwned)",
        "a; touch pwned",
        "`touch pwned`",
        "it's \"q\"",
        "new\nline",
        "sp  ace",
    ];
    for name in names {
        let path = format!("dir/{name}");
        let written = h
            .file_ok(
                &id,
                "write",
                &path,
                json!({"content": B64.encode(&bytes), "encoding": "base64"}),
            )
            .await;
        assert_eq!(written["size"], bytes.len(), "{written}");
        let read = h
            .file_ok(&id, "read", &path, json!({"encoding": "base64"}))
            .await;
        let back = B64.decode(read["content"].as_str().unwrap()).unwrap();
        assert!(back == bytes, "{name:?}: the bytes differ");
    }
    let on_host = std::fs::read(h.workspace_on_host(&id).join("dir/-rf")).unwrap();
    assert!(
        on_host == bytes,
        "the file on the sandbox side holds the same bytes"
    );
    let listed = h.file_ok(&id, "list", "dir", json!({})).await;
    let mut files: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    files.sort_unstable();
    let mut expected = names.to_vec();
    expected.sort_unstable();
    assert_eq!(files, expected);

    // Append, stat, mkdir, move, delete, exists.
    h.file_ok(&id, "write", "t.txt", json!({"content": "one\n"}))
        .await;
    let appended = h
        .file_ok(&id, "append", "t.txt", json!({"content": "two\n"}))
        .await;
    assert_eq!(appended["size"], 8);
    let stat = h.file_ok(&id, "stat", "t.txt", json!({})).await;
    assert_eq!(stat["entry"]["type"], "file");
    assert_eq!(stat["size"], 8);
    let made = h.file_ok(&id, "mkdir", "a/b/c", json!({})).await;
    assert!(
        made["message"].as_str().unwrap().contains("created"),
        "{made}"
    );
    let moved = h
        .file_ok(&id, "move", "t.txt", json!({"destination": "a/b"}))
        .await;
    assert_eq!(moved["destination"], "a/b/t.txt");
    let read = h.file_ok(&id, "read", "a/b/t.txt", json!({})).await;
    assert_eq!(read["content"], "one\ntwo\n");
    let empty = h
        .file_ok(&id, "write", "empty", json!({"content": ""}))
        .await;
    assert_eq!(empty["size"], 0);
    let deleted = h
        .file_ok(&id, "delete", "a", json!({"recursive": true}))
        .await;
    assert_eq!(deleted["removed"], 4, "{deleted}");
    let exists = h.file_ok(&id, "exists", "a", json!({})).await;
    assert_eq!(exists["exists"], false);
    let exists = h.file_ok(&id, "exists", "dir", json!({})).await;
    assert_eq!(exists["exists"], true);
}

pub async fn file_errors_are_the_same(h: Harness) {
    let id = h.app.sandbox("file-errors").await;
    let (status, missing) = h.file(&id, "read", "nope.txt", json!({})).await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["error"]["field"], "file_path");
    h.file_ok(&id, "mkdir", "d/e", json!({})).await;
    let (status, dir) = h.file(&id, "read", "d", json!({})).await;
    assert_eq!(status, 400, "{dir}");
    let (status, not_empty) = h.file(&id, "delete", "d", json!({})).await;
    assert_eq!(status, 400, "{not_empty}");
    let (status, escape) = h.file(&id, "read", "../../etc/passwd", json!({})).await;
    assert_eq!(status, 400, "{escape}");
}

pub async fn git_clone_commit_push_log_against_a_bare_repository(h: Harness) {
    let id = h.app.sandbox("git").await;
    seed_bare_repo(&h.workspace_on_host(&id).join("remote.git"));
    h.git_ok(
        &id,
        "clone",
        json!({"repository_url": "/workspace/remote.git", "directory": "work"}),
    )
    .await;
    let readme = h.file_ok(&id, "read", "work/README.md", json!({})).await;
    assert_eq!(readme["content"], "# seeded\n");
    for name in ["-rf", "$(touch pwned)", "it's \"q\""] {
        h.file_ok(
            &id,
            "write",
            &format!("work/{name}"),
            json!({"content": name}),
        )
        .await;
    }
    h.git_ok(
        &id,
        "add",
        json!({"working_directory": "work", "files": ["-rf", "$(touch pwned)", "it's \"q\""]}),
    )
    .await;
    let message = "-m --amend $(touch pwned) `id`\n\nbody with 'quotes'";
    h.git_ok(
        &id,
        "commit",
        json!({"working_directory": "work", "commit_message": message,
               "author_name": "Eve 'x' $(id)", "author_email": "eve@example.com"}),
    )
    .await;
    let pushed = h
        .git_ok(&id, "push", json!({"working_directory": "work"}))
        .await;
    assert!(
        pushed["output"].as_str().unwrap().contains("main -> main"),
        "{pushed}"
    );
    let bare = h.workspace_on_host(&id).join("remote.git");
    let stored = host_git(&bare, &["log", "-1", "--format=%B", "main"]);
    assert_eq!(stored.trim_end(), message);
    let log = h
        .git_ok(&id, "log", json!({"working_directory": "work", "limit": 5}))
        .await;
    let commits = log["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 2, "{log}");
    assert_eq!(commits[0]["author_name"], "Eve 'x' $(id)");
    assert!(!h.workspace_on_host(&id).join("work/pwned").exists());
    assert!(!h.workspace_on_host(&id).join("pwned").exists());
}

pub async fn jobs_of_a_sandbox_run_in_order(h: Harness) {
    let id = h.app.sandbox("order").await;
    let mut jobs = Vec::new();
    for n in 0..6 {
        jobs.push(
            h.app
                .submit(
                    "execute_shell",
                    json!({"sandbox_id": id, "command": format!("echo {n} >> order.log")}),
                )
                .await,
        );
    }
    for job in &jobs {
        let done = h.app.wait(job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    let log = h.file_ok(&id, "read", "order.log", json!({})).await;
    assert_eq!(log["content"], "0\n1\n2\n3\n4\n5\n");
}

pub async fn timeouts_end_the_command(h: Harness) {
    let id = h.app.sandbox("timeouts").await;
    let (status, out) = h
        .shell(
            &id,
            "echo started; sleep 30; echo never",
            json!({"timeout_s": 2}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["timed_out"], true, "{out}");
    assert!(out["exit_code"].is_null(), "{out}");
    assert_eq!(
        out["stdout"], "started\n",
        "what it printed before the timeout is kept"
    );
    assert!(
        out["message"].as_str().unwrap().contains("timed out"),
        "{out}"
    );
    let (_, page) = h
        .app
        .get_json("/v1/jobs?sandbox=timeouts&tool=execute_shell")
        .await;
    assert_eq!(page["jobs"][0]["error"]["reason"], "timeout", "{page}");
    // The sandbox serves the next call.
    let (_, next) = h.shell(&id, "echo next", json!({})).await;
    assert_eq!(next["stdout"], "next\n", "{next}");
}

pub async fn cancel_kills_the_command(h: Harness) {
    let id = h.app.sandbox("cancel").await;
    let marker = format!("dmcp-cancel-{}", uuid::Uuid::new_v4().simple());
    let job = h
        .app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": format!("sleep 300 && echo {marker}; : {marker}")}),
        )
        .await;
    h.app.wait_for_state(&job, "running").await;
    assert!(
        eventually(20, || !processes_with(&marker).is_empty()).await,
        "the command never started"
    );
    let (status, _) = h
        .app
        .call(&format!("/v1/jobs/{job}/cancel"), json!({}))
        .await;
    assert!(matches!(status, 200 | 202), "cancel: {status}");
    let done = h.app.wait(&job).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["result"]["cancelled"], true, "{done}");
    assert!(
        eventually(20, || processes_with(&marker).is_empty()).await,
        "still running after cancel: {:?}",
        processes_with(&marker)
    );
    // The next job runs.
    let (_, next) = h.shell(&id, "echo after", json!({})).await;
    assert_eq!(next["stdout"], "after\n");
}

/// A sandbox made from a template: its setup commands run in the sandbox's order, with the
/// template's variables and the call's over them, on every driver.
pub async fn a_templates_setup_commands_run_in_order(h: Harness) {
    let (status, made) = h
        .app
        .call(
            "/create_template",
            json!({
                "name": "driver-kit",
                "language": "sh",
                "environment_vars": {"KIT": "template", "MODE": "template"},
                "setup_commands": [
                    "printf 'one\\n' > setup.log",
                    "printf '%s %s\\n' \"$KIT\" \"$MODE\" >> setup.log; exit 4",
                    "printf 'three\\n' >> setup.log",
                ],
            }),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    let (status, created) = h
        .app
        .call(
            "/create_sandbox",
            json!({"name": "kit-made", "template": "driver-kit", "environment_vars": {"MODE": "call"}}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["sandbox_id"].as_str().unwrap().to_string();
    let setup = created["setup_jobs"].as_array().unwrap().clone();
    assert_eq!(setup.len(), 3, "{created}");
    let mut codes = Vec::new();
    for job in &setup {
        let done = h.app.wait(job.as_str().unwrap()).await;
        codes.push(done["exit_code"].clone());
    }
    assert_eq!(codes, [json!(0), json!(4), json!(0)]);
    let log = h.file_ok(&id, "read", "setup.log", json!({})).await;
    assert_eq!(log["content"], "one\ntemplate call\nthree\n");
}

/// Files of every kind a snapshot must keep: modes, an empty and a read-only directory,
/// symlinks inside (one dangling), every byte value in content and odd bytes in a name.
pub const SNAPSHOT_FILES: &str = "mkdir -p src/deep/er empty ro keep \
    && printf hello > src/a.txt && chmod 0640 src/a.txt \
    && head -c 5000 /dev/urandom > src/deep/bin \
    && printf '\\000\\001\\377\\n' > zeros && chmod 0600 zeros \
    && printf '#!/bin/sh\\necho ran\\n' > run.sh && chmod 0751 run.sh \
    && printf odd > \"$(printf 'odd\\001\\377 name')\" \
    && ln -s src/a.txt link && ln -s ../.. src/deep/up && ln -s nothing-here dangling \
    && chmod 0711 src/deep/er && chmod 0700 keep \
    && printf r > ro/f && chmod 0555 ro";

/// Changes to every kind of entry that [`SNAPSHOT_FILES`] made.
pub const SNAPSHOT_CHANGES: &str = "chmod 0755 ro && rm -rf src ro/f && printf changed > zeros \
    && chmod 0777 run.sh && rm link && ln -s zeros link && rmdir empty \
    && mkdir later && printf new > later/n";

pub async fn snapshots_restore_exactly_and_fork_independently(h: Harness) {
    use crate::support::tree::manifest;
    let app = &h.app;
    let id = app.sandbox("snapped").await;
    let (status, made) = h.shell(&id, SNAPSHOT_FILES, json!({})).await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["exit_code"], 0, "{made}");
    let before = manifest(&h.workspace_on_host(&id));
    assert!(
        before.contains_key(b"odd\x01\xff name".as_slice()),
        "{before:?}"
    );
    assert!(before.contains_key(b"empty".as_slice()));

    let (status, snap) = app
        .call(
            "/snapshot_sandbox",
            json!({"sandbox_id": "snapped", "name": "before changes"}),
        )
        .await;
    assert_eq!(status, 200, "{snap}");
    let snapshot = snap["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(snap["sandbox_id"], id);
    assert_eq!(snap["name"], "before changes");
    // The archive is in the data dir with the recorded size and digest.
    let archive = app
        .data_dir
        .join("snapshots")
        .join(format!("{snapshot}.tar.gz"));
    let bytes = std::fs::read(&archive).unwrap();
    assert_eq!(snap["size_bytes"], bytes.len() as u64);
    {
        use sha2::Digest;
        assert_eq!(snap["digest"], hex::encode(sha2::Sha256::digest(&bytes)));
    }
    assert_eq!(snap["entries"], before.len() as u64, "{snap}");

    let (status, changed) = h.shell(&id, SNAPSHOT_CHANGES, json!({})).await;
    assert_eq!(changed["exit_code"], 0, "{status} {changed}");
    assert_ne!(manifest(&h.workspace_on_host(&id)), before);

    let (status, restored) = app
        .call(
            "/restore_snapshot",
            json!({"snapshot_id": snapshot, "sandbox_id": "snapped"}),
        )
        .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(manifest(&h.workspace_on_host(&id)), before);
    // The sandbox works on its restored files.
    let (_, ran) = h.shell(&id, "./run.sh && cat src/a.txt", json!({})).await;
    assert_eq!(ran["stdout"], "ran\nhello", "{ran}");

    // A fork starts with the snapshot's files, and the two go their own ways.
    let (status, fork) = app
        .call(
            "/create_sandbox",
            json!({"name": "forked", "from_snapshot": snapshot}),
        )
        .await;
    assert_eq!(status, 200, "{fork}");
    let fork = fork["sandbox_id"].as_str().unwrap().to_string();
    assert_eq!(manifest(&h.workspace_on_host(&fork)), before);
    h.shell(&fork, "printf f > only-in-fork && rm zeros", json!({}))
        .await;
    h.shell(&id, "printf o > only-in-original", json!({})).await;
    let (original, forked) = (
        manifest(&h.workspace_on_host(&id)),
        manifest(&h.workspace_on_host(&fork)),
    );
    assert!(original.contains_key(b"zeros".as_slice()));
    assert!(!original.contains_key(b"only-in-fork".as_slice()));
    assert!(!forked.contains_key(b"zeros".as_slice()));
    assert!(!forked.contains_key(b"only-in-original".as_slice()));

    let (_, listed) = app
        .call("/list_snapshots", json!({"sandbox_id": "snapped"}))
        .await;
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["snapshots"][0]["snapshot_id"], snapshot);
    let (_, none) = app
        .call("/list_snapshots", json!({"sandbox_id": "forked"}))
        .await;
    assert_eq!(none["count"], 0, "{none}");

    let (status, deleted) = app
        .call("/delete_snapshot", json!({"snapshot_id": snapshot}))
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert!(!archive.exists(), "the archive is removed");
    let (_, listed) = app.call("/list_snapshots", json!({})).await;
    assert_eq!(listed["count"], 0, "{listed}");
    let (status, gone) = app
        .call(
            "/restore_snapshot",
            json!({"snapshot_id": snapshot, "sandbox_id": "snapped"}),
        )
        .await;
    assert_eq!(status, 404, "{gone}");
    // The fork keeps its files.
    assert!(manifest(&h.workspace_on_host(&fork)).contains_key(b"only-in-fork".as_slice()));
}
