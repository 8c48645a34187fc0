//! The persistent sandbox of the local driver (`local.persistent_sandbox`): one long-lived
//! bubblewrap sandbox per active workspace, whose agent starts each command. Its commands get
//! the same isolation and limits as fresh ones (the escape, isolation and limit tests run
//! against it, since it is the default); these tests cover what is its own: the agent is kept
//! between commands, nothing a command started survives it, a dead agent fails one job and the
//! next gets a fresh sandbox, and the sandbox goes when its workspace idles out or is deleted.

use serde_json::json;

use crate::helpers::{
    Db, TestApp, eventually, host_processes, processes_with, spawn_with, test_config,
};

async fn app_with(adjust: impl FnOnce(&mut daytona_mcp::config::Config)) -> TestApp {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.local.isolation = daytona_mcp::config::IsolationMode::Bwrap;
    adjust(&mut config);
    spawn_with(config, dir).await
}

/// A server with the defaults, a sandbox `name` that has run a command, and the agent of its
/// persistent sandbox.
async fn sandbox_with_agent(name: &str) -> (TestApp, String, Vec<u32>) {
    let app = app_with(|_| {}).await;
    let id = app.sandbox(name).await;
    app.shell(&id, "true").await;
    let agents = agents_of(&id);
    (app, id, agents)
}

/// The host pids of the agents of sandbox `id` (their command line is
/// `/.daytona-agent __sandbox-agent <fd> <sandbox id>`).
fn agents_of(id: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for (pid, dir) in host_processes() {
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.first() == Some(&&b"/.daytona-agent"[..]) && args.contains(&id.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// The parent pid of host process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

#[actix_web::test]
async fn one_agent_serves_a_sandboxs_commands_and_leaves_nothing_between_them() {
    one_agent_and_nothing_between(true).await;
}

/// Without cgroups, what a command left behind is found in the sandbox's pid namespace.
#[actix_web::test]
async fn nothing_survives_a_command_without_cgroups_either() {
    one_agent_and_nothing_between(false).await;
}

async fn one_agent_and_nothing_between(cgroups: bool) {
    let app = app_with(|c| c.local.cgroups = cgroups).await;
    let id = app.sandbox("resident").await;
    let first = app.shell(&id, "echo $PPID").await;
    assert_eq!(first["exit_code"], 0, "{first}");
    let agents = agents_of(&id);
    assert_eq!(agents.len(), 1, "one agent for the sandbox: {agents:?}");
    // A command that leaves processes in the background (one in a session of its own) and
    // exits a second later: they do not survive it, though the sandbox (its agent) does.
    let marker = format!("bg{}", uuid::Uuid::new_v4().simple());
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "env": {"MARK": marker},
                   "command": "cp \"$(command -v sleep)\" \"./$MARK\"; \"./$MARK\" 1000 & \
                               setsid \"./$MARK\" 1001 & sleep 1; echo started"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "started\n", "{out}");
    let left = processes_with(&marker);
    assert!(
        left.is_empty(),
        "processes outlived their command: {left:?}"
    );
    // The next command runs in the same sandbox, and sees no process of the last one.
    let next = app
        .shell(
            &id,
            "ps -e -o comm= 2>/dev/null || ls /proc | grep -c '^[0-9]'",
        )
        .await;
    assert_eq!(next["exit_code"], 0, "{next}");
    assert!(
        !next["stdout"].as_str().unwrap().contains(&marker),
        "{next}"
    );
    assert_eq!(agents_of(&id), agents, "the same agent ran every command");
    // The environment is the command's alone, as with a fresh sandbox.
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "env": {"ONLY_HERE": "1"}, "command": "env | sort"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let env = out["stdout"].as_str().unwrap();
    assert!(env.contains("ONLY_HERE=1\n"), "{env}");
    assert!(!env.contains("RUST_BACKTRACE"), "{env}");
    let again = app.shell(&id, "env").await;
    assert!(
        !again["stdout"].as_str().unwrap().contains("ONLY_HERE"),
        "an earlier command's variable leaked: {again}"
    );
    // The sandbox stops with the server.
    drop(app);
    assert!(
        eventually(10, || agents_of(&id).is_empty()).await,
        "the agent outlived its server: {:?}",
        agents_of(&id)
    );
}

#[actix_web::test]
async fn an_agent_killed_from_outside_fails_its_job_and_the_next_gets_a_fresh_sandbox() {
    let app = app_with(|_| {}).await;
    let id = app.sandbox("crashing").await;
    app.shell(&id, "true").await;
    let marker = format!("victim{}", uuid::Uuid::new_v4().simple());
    let job = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": format!("sleep 60; true # {marker}")}),
        )
        .await;
    assert!(
        eventually(10, || !processes_with(&marker).is_empty()).await,
        "the command did not start"
    );
    let agents = agents_of(&id);
    assert_eq!(agents.len(), 1, "{agents:?}");
    let command_pid: u32 = processes_with(&marker)[0]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(parent_of(command_pid), Some(agents[0]), "the agent runs it");
    // SAFETY: SIGKILL to the agent this test's server started.
    unsafe {
        libc::kill(agents[0] as i32, libc::SIGKILL);
    }
    let failed = app.wait(&job).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["reason"], "execution_error", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("agent") && message.contains("fresh sandbox"),
        "{message}"
    );
    assert!(
        processes_with(&marker).is_empty(),
        "the command outlived its job: {:?}",
        processes_with(&marker)
    );
    let next = app.shell(&id, "echo fine").await;
    assert_eq!(next["stdout"], "fine\n", "{next}");
    let fresh = agents_of(&id);
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_ne!(fresh, agents, "a fresh sandbox ran the next command");
    // An agent that dies between commands fails nothing: the next command gets a new one.
    // SAFETY: as above.
    unsafe {
        libc::kill(fresh[0] as i32, libc::SIGKILL);
    }
    assert!(eventually(10, || agents_of(&id).is_empty()).await);
    let next = app.shell(&id, "echo again").await;
    assert_eq!(next["stdout"], "again\n", "{next}");
}

/// An agent that breaks before it was told to start a command (here: stopped, so it never
/// answers) costs that command nothing: the command runs in a fresh sandbox of its own, the
/// broken sandbox goes, and the next command gets a new persistent one. (An agent dying between
/// commands can be caught this way too, when its death is under way as the command arrives.)
#[actix_web::test]
async fn an_agent_that_breaks_before_a_command_starts_fails_nothing() {
    let (app, id, agents) = sandbox_with_agent("stalled").await;
    assert_eq!(agents.len(), 1, "{agents:?}");
    // SAFETY: SIGSTOP to the agent this test's server started.
    unsafe {
        libc::kill(agents[0] as i32, libc::SIGSTOP);
    }
    let out = app.shell(&id, "echo ran").await;
    assert_eq!(out["stdout"], "ran\n", "{out}");
    assert!(
        eventually(10, || !agents_of(&id).contains(&agents[0])).await,
        "the stalled agent was not torn down"
    );
    let next = app.shell(&id, "echo next").await;
    assert_eq!(next["stdout"], "next\n", "{next}");
    let fresh = agents_of(&id);
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_ne!(
        fresh, agents,
        "a new persistent sandbox ran the next command"
    );
}

#[actix_web::test]
async fn timeout_and_cancel_kill_the_commands_tree_and_keep_the_sandbox() {
    let (app, id, agents) = sandbox_with_agent("stopping").await;
    let marker = format!("tree{}", uuid::Uuid::new_v4().simple());
    let tree = "cp \"$(command -v sleep)\" \"./$MARK\"; \"./$MARK\" 1000 & \
                (set -m; \"./$MARK\" 1001 & wait) & \"./$MARK\" 1002";
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": tree, "timeout_s": 1, "env": {"MARK": marker}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["timed_out"], true, "{out}");
    assert!(out["exit_code"].is_null(), "{out}");
    let left = processes_with(&marker);
    assert!(left.is_empty(), "the timeout left processes: {left:?}");

    let job = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": tree, "env": {"MARK": marker}}),
        )
        .await;
    assert!(
        eventually(10, || processes_with(&marker).len() >= 3).await,
        "the tree did not start: {:?}",
        processes_with(&marker)
    );
    let (status, body) = app.call(&format!("/v1/jobs/{job}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let cancelled = app.wait(&job).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let left = processes_with(&marker);
    assert!(left.is_empty(), "the cancel left processes: {left:?}");
    let next = app.shell(&id, "echo still here").await;
    assert_eq!(next["stdout"], "still here\n", "{next}");
    assert_eq!(agents_of(&id), agents, "the sandbox outlived both");
}

#[actix_web::test]
async fn the_agent_stops_when_the_workspace_idles_out_or_the_sandbox_is_deleted() {
    let app = app_with(|c| c.queue.actor_idle_s = 1).await;
    let idle = app.sandbox("idler").await;
    app.shell(&idle, "true").await;
    let agents = agents_of(&idle);
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert!(
        eventually(20, || agents_of(&idle).is_empty()).await,
        "the agent of an idle workspace still runs: {:?}",
        agents_of(&idle)
    );
    // The next command starts a new one.
    let out = app.shell(&idle, "echo back").await;
    assert_eq!(out["stdout"], "back\n", "{out}");
    assert_eq!(agents_of(&idle).len(), 1);

    let app = app_with(|_| {}).await;
    let gone = app.sandbox("deleted").await;
    app.shell(&gone, "true").await;
    assert_eq!(agents_of(&gone).len(), 1);
    let (status, body) = app
        .call("/delete_sandbox", json!({"sandbox_id": gone}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually(10, || agents_of(&gone).is_empty()).await,
        "the agent of a deleted sandbox still runs: {:?}",
        agents_of(&gone)
    );
}

#[actix_web::test]
async fn the_fresh_spawn_path_still_runs_commands_when_persistence_is_off() {
    let app = app_with(|c| c.local.persistent_sandbox = false).await;
    let id = app.sandbox("fresh").await;
    let (status, out) = app
        .call(
            "/execute_code",
            json!({"sandbox_id": id, "language": "python", "code": "print('hi')"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "hi\n", "{out}");
    assert!(agents_of(&id).is_empty(), "no agent without persistence");
}

/// The agent is the commands' parent and shares their uid, but is not theirs to inspect: it is
/// non-dumpable, so its descriptors (the socket to the server), memory and environment are
/// refused to them (listing the numbers of its descriptors is all `/proc` allows).
#[actix_web::test]
async fn commands_cannot_take_the_agents_socket() {
    let app = app_with(|_| {}).await;
    let id = app.sandbox("prying").await;
    let out = app
        .shell(
            &id,
            "for fd in $(ls /proc/$PPID/fd); do readlink /proc/$PPID/fd/$fd 2>&1; echo rc=$?; done; \
             head -c1 /proc/$PPID/mem 2>&1; echo rc=$?; cat /proc/$PPID/environ 2>&1; echo rc=$?",
        )
        .await;
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.contains("Permission denied"), "{stdout}");
    assert!(!stdout.contains("socket:"), "{stdout}");
    assert!(stdout.matches("rc=").count() >= 3, "{stdout}");
    assert_eq!(stdout.matches("rc=0").count(), 0, "{stdout}");
}

/// A server holding more descriptors than a command may open (`local.max_open_files`) still
/// starts commands, persistent or fresh: the child lowers its limit only after the steps that
/// open descriptors (before, `/dev/null` found no free number below the limit: EMFILE, an
/// internal error for every call once a server held ~1,000 descriptors, i.e. ~140 sandboxes).
#[actix_web::test]
async fn a_server_holding_many_descriptors_still_starts_commands() {
    let held: Vec<std::fs::File> = (0..128)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    for persistent in [true, false] {
        let app = app_with(|c| {
            c.local.persistent_sandbox = persistent;
            c.local.max_open_files = 64;
        })
        .await;
        let id = app.sandbox(&format!("many-fds-{persistent}")).await;
        let out = app.shell(&id, "ulimit -n").await;
        assert_eq!(out["exit_code"], 0, "persistent={persistent}: {out}");
        assert_eq!(out["stdout"], "64\n", "persistent={persistent}: {out}");
    }
    drop(held);
}

/// A command starts with every signal at its default action and none blocked, on both paths:
/// the server and the agent are Rust programs, which ignore SIGPIPE, and an ignored signal
/// stays ignored across `execve` unless the child resets it. (Signals 32 and 33 are glibc's
/// own, whose `sigaction` refuses them; a disposition of theirs the test process had is left.)
#[actix_web::test]
async fn commands_start_with_default_signals_on_both_paths() {
    // The server ignores the highest real-time signal, as a supervisor may have left it: the
    // commands must not inherit that (the reset once stopped one short of SIGRTMAX).
    // SAFETY: setting a signal's disposition to "ignore" in this test process.
    unsafe { libc::signal(libc::SIGRTMAX(), libc::SIG_IGN) };
    for persistent in [true, false] {
        let app = app_with(|c| c.local.persistent_sandbox = persistent).await;
        let id = app.sandbox("signals").await;
        let out = app
            .shell(&id, "grep -E '^Sig(Blk|Ign):' /proc/self/status")
            .await;
        let stdout = out["stdout"].as_str().unwrap();
        let mask = |name: &str| {
            let line = stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {out}"));
            u64::from_str_radix(line.trim(), 16).unwrap()
        };
        let glibc_own = (1u64 << 31) | (1 << 32);
        assert_eq!(
            mask("SigBlk:"),
            0,
            "persistent_sandbox = {persistent}: {out}"
        );
        assert_eq!(
            mask("SigIgn:") & !glibc_own,
            0,
            "persistent_sandbox = {persistent}: {out}"
        );
    }
}
