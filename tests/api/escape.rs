//! A hostile caller against the local driver's edges, on bubblewrap and on Landlock: variables
//! that the dynamic loader or an interpreter honours must act inside the sandbox only, the
//! server's inherited descriptors must not reach a sandbox, no process may outlive its job,
//! and the data dir must be private and out of every sandbox's sight.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::{
    Db, TestApp, eventually, host_processes, processes_with, spawn_with, test_config,
};
use daytona_mcp::drivers::local::IsolationMode;

/// The two isolation levels that run here.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Level {
    Bwrap,
    Landlock,
}

async fn app_with(level: Level, cgroups: bool) -> TestApp {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    config.local.isolation = match level {
        Level::Bwrap => IsolationMode::Bwrap,
        Level::Landlock => IsolationMode::Landlock,
    };
    config.local.cgroups = cgroups;
    spawn_with(config, dir).await
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Compiles `source` with the C compiler into `name` (in `dir`) and returns the binary. A
/// missing compiler is a failure, not a skip: these tests are the only proof that the escapes
/// stay closed.
fn cc(dir: &Path, name: &str, source: &str, args: &[&str]) -> Vec<u8> {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    // `cc` (gcc here) is what Rust links with, so it is present wherever these tests build.
    let status = Command::new("cc")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap_or_else(|e| {
            panic!("a C compiler (cc, gcc) is required by this test and could not run: {e}")
        });
    assert!(status.success(), "cc failed on {name}.c");
    std::fs::read(&out).unwrap()
}

/// A library whose constructor (and `LD_AUDIT` entry point) tries to write `marker`, a host
/// path outside every sandbox, and reports on stderr that it ran. It also stands in for
/// `libcap.so.2`, which the host's bubblewrap loads: `cap_from_name` is there so that a
/// bubblewrap linked with `-z now` would load it.
fn evil_library(dir: &Path, marker: &Path) -> Vec<u8> {
    let source = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void ran(const char *how) {
    int fd = open(MARKER, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int err = errno;
    if (fd >= 0) {
        dprintf(fd, "%s pid=%d\n", how, (int)getpid());
        close(fd);
    }
    dprintf(2, "evil-%s-ran host-marker=%s\n", how, fd >= 0 ? "WRITTEN" : strerror(err));
}
__attribute__((constructor)) static void init(void) { ran("ctor"); }
unsigned int la_version(unsigned int version) { ran("audit"); return version; }
int cap_from_name(const char *name, void *value) { (void)name; (void)value; return -1; }
"#;
    let define = format!("-DMARKER=\"{}\"", marker.display());
    cc(dir, "evil.so", source, &["-shared", "-fPIC", &define])
}

/// Writes `bytes` to `path` in `sandbox` through `file_operation`, base64-encoded.
async fn upload(app: &TestApp, sandbox: &str, path: &str, bytes: &[u8]) {
    let (status, body) = app
        .call(
            "/file_operation",
            json!({"sandbox_id": sandbox, "operation": "write", "file_path": path,
                   "content": b64(bytes), "encoding": "base64"}),
        )
        .await;
    assert_eq!(status, 200, "write {path}: {body}");
}

async fn shell_with_env(app: &TestApp, sandbox: &str, command: &str, env: Value) -> Value {
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": sandbox, "command": command, "env": env}),
        )
        .await;
    assert_eq!(status, 200, "{command}: {out}");
    out
}

/// `LD_PRELOAD`, `LD_AUDIT`, `LD_LIBRARY_PATH`, `BASH_ENV`, `ENV`, `PYTHONSTARTUP` and
/// `PYTHONPATH` pointing at files the caller planted: inside the sandbox each does what it
/// does; on the host nothing of the caller's runs (the host-side bubblewrap once loaded the
/// caller's library, from the sandbox directory it started in).
async fn loader_and_interpreter_variables_act_inside_only(level: Level) {
    let app = app_with(level, true).await;
    let host = tempfile::tempdir().unwrap();
    let marker = host.path().join("host-code-ran");
    let id = app.sandbox("evil").await;

    let evil = evil_library(host.path(), &marker);
    upload(&app, &id, "evil.so", &evil).await;
    upload(&app, &id, "libcap.so.2", &evil).await;
    let lib = cc(
        host.path(),
        "libhello.so",
        "#include <stdio.h>\nvoid hello(void) { puts(\"hello from libhello\"); }\n",
        &["-shared", "-fPIC"],
    );
    let program = cc(
        host.path(),
        "hello",
        "void hello(void);\nint main(void) { hello(); return 0; }\n",
        &["-L.", "-lhello"],
    );
    upload(&app, &id, "libhello.so", &lib).await;
    upload(&app, &id, "hello", &program).await;
    upload(&app, &id, "evil.sh", b"echo evil-bash-env-ran >&2\n").await;
    upload(&app, &id, "evil-env.sh", b"echo evil-env-ran >&2\n").await;
    upload(&app, &id, "evil.py", b"print('evil-pythonstartup-ran')\n").await;
    upload(
        &app,
        &id,
        "sitecustomize.py",
        b"import sys\nprint('evil-sitecustomize-ran', file=sys.stderr)\n",
    )
    .await;
    app.shell(&id, "chmod +x hello").await;

    // Each variable alone, so that one failing does not hide another.
    let cases = [
        ("LD_PRELOAD", "./evil.so", "true", "evil-ctor-ran"),
        ("LD_AUDIT", "./evil.so", "true", "evil-audit-ran"),
        ("LD_LIBRARY_PATH", ".", "./hello", "hello from libhello"),
        ("BASH_ENV", "./evil.sh", "true", "evil-bash-env-ran"),
        (
            "ENV",
            "./evil-env.sh",
            "sh -i -c true < /dev/null",
            "evil-env-ran",
        ),
        (
            "PYTHONSTARTUP",
            "./evil.py",
            "python3 -i < /dev/null",
            "evil-pythonstartup-ran",
        ),
        (
            "PYTHONPATH",
            ".",
            "python3 -c pass",
            "evil-sitecustomize-ran",
        ),
    ];
    for (name, value, command, effect) in cases {
        let out = shell_with_env(&app, &id, command, json!({ name: value })).await;
        let text = format!("{}{}", out["stdout"], out["stderr"]);
        assert!(
            text.contains(effect),
            "{name} did not act inside the sandbox: {out}"
        );
        assert!(!text.contains("WRITTEN"), "{name} reached the host: {out}");
        assert!(
            !marker.exists(),
            "{name}: the caller's code ran on the host: {}",
            std::fs::read_to_string(&marker).unwrap_or_default()
        );
    }
    // Without the variable, the planted files do nothing.
    let out = app.shell(&id, "./hello 2>&1; echo rc=$?").await;
    assert!(
        out["stdout"].as_str().unwrap().contains("libhello.so"),
        "{out}"
    );

    // A sandbox's own variables reach git (and every command) the same way.
    let (status, body) = app
        .call(
            "/create_sandbox",
            json!({"name": "evil-vars", "environment_vars": {"LD_PRELOAD": "./evil.so"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let vars = body["sandbox_id"].as_str().unwrap().to_string();
    upload(&app, &vars, "evil.so", &evil).await;
    let (status, out) = app.git(&vars, "status", json!({})).await;
    assert_eq!(status, 200, "{out}");
    let text = out.to_string();
    assert!(text.contains("evil-ctor-ran"), "git did not see it: {out}");
    assert!(!text.contains("WRITTEN"), "{out}");
    assert!(
        !marker.exists(),
        "environment_vars: the caller's code ran on the host: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
}

/// The pids of processes whose parent is this test process (where the servers run) and whose
/// executable is `exe`, with their command lines.
fn children_running(exe: &Path) -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for (pid, dir) in host_processes() {
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let ppid = after.split(' ').nth(1).unwrap_or("");
        if ppid == me && std::fs::read_link(dir.join("exe")).is_ok_and(|e| e == exe) {
            found.push(pid);
        }
    }
    found
}

/// Whether `pid` or a process below it has `marker` on its command line: the bubblewrap of a
/// fresh sandbox carries the command on its own command line, a persistent sandbox's carries
/// the sandbox's id (its agent's arguments) and runs the command below its agent.
fn runs_marker(pid: u32, marker: &str) -> bool {
    let mut stack = vec![pid];
    while let Some(pid) = stack.pop() {
        if std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        {
            return true;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                stack.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    false
}

/// The host-side bubblewrap starts with a fixed environment and `/` as its working directory,
/// and the caller's variables (which may be secrets) show in neither its environment nor its
/// command line; inside, the command has them.
#[actix_web::test]
async fn host_side_bubblewrap_gets_none_of_the_callers_environment() {
    let app = app_with(Level::Bwrap, true).await;
    let id = app.sandbox("hostenv").await;
    let marker = format!("mark{}", uuid::Uuid::new_v4().simple());
    let secret = format!("secret{}", uuid::Uuid::new_v4().simple());
    let env = json!({
        "API_TOKEN": secret,
        "LD_PRELOAD": format!("/nonexistent/{marker}.so"),
        "LD_LIBRARY_PATH": format!("/nonexistent/{marker}"),
        "GCONV_PATH": "/nonexistent",
        "MALLOC_CHECK_": "3",
    });
    let job = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "env": env,
                   "command": format!("echo \"inside=$API_TOKEN\" > inside.txt; sleep 60 # {marker}")}),
        )
        .await;
    app.wait_for_state(&job, "running").await;
    let inside = app.data_dir.join("sandboxes").join(&id).join("inside.txt");
    assert!(eventually(10, || inside.exists()).await);
    let bwrap = PathBuf::from("/usr/bin/bwrap").canonicalize().unwrap();
    let mut host_side = Vec::new();
    assert!(
        eventually(10, || {
            host_side = children_running(&bwrap)
                .into_iter()
                .filter(|pid| runs_marker(*pid, &marker) || runs_marker(*pid, &id))
                .collect();
            !host_side.is_empty()
        })
        .await,
        "the job's bubblewrap process was not found"
    );
    for pid in &host_side {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
        for name in env.as_object().unwrap().keys() {
            assert!(
                !environ.lines().any(|l| l.starts_with(&format!("{name}="))),
                "host-side bubblewrap has {name}: {environ}"
            );
        }
        assert!(!environ.contains(&secret), "{environ}");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&secret),
            "the secret is on bubblewrap's command line"
        );
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        assert_eq!(
            cwd,
            Path::new("/"),
            "host-side bubblewrap's working directory"
        );
    }
    assert!(processes_with(&secret).is_empty());
    let (status, body) = app.call(&format!("/v1/jobs/{job}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    app.wait(&job).await;
    assert_eq!(
        std::fs::read_to_string(&inside).unwrap(),
        format!("inside={secret}\n"),
        "the command has its environment"
    );
}

/// Descriptors this process holds without close-on-exec (the server runs in the test process):
/// a file and both ends of a pipe, at high numbers. Closed when dropped.
struct Leaked(Vec<i32>);

impl Leaked {
    fn new() -> Leaked {
        let mut fds = Vec::new();
        // SAFETY: plain descriptor calls; the new descriptors are owned by `Leaked`.
        unsafe {
            let file = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            assert!(file >= 0);
            let mut pipe = [0; 2];
            assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
            for (fd, at) in [(file, 300), (pipe[0], 301), (pipe[1], 302)] {
                let high = libc::fcntl(fd, libc::F_DUPFD, at);
                assert!(high >= at);
                assert_eq!(libc::fcntl(high, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
                libc::close(fd);
                fds.push(high);
            }
        }
        Leaked(fds)
    }
}

impl Drop for Leaked {
    fn drop(&mut self) {
        for fd in &self.0 {
            // SAFETY: closing descriptors this value owns.
            unsafe {
                libc::close(*fd);
            }
        }
    }
}

/// A sandboxed command sees only its standard descriptors, whatever the server inherited or
/// opened without close-on-exec.
async fn inherited_descriptors_do_not_reach_sandboxes(level: Level) {
    let app = app_with(level, true).await;
    let id = app.sandbox("fds").await;
    let leaked = Leaked::new();
    // `$$` is the shell (not `ls`, whose own directory descriptor would show); `; true` keeps
    // bash from exec'ing `ls` in its place.
    let out = app.shell(&id, "ls /proc/$$/fd; true").await;
    assert_eq!(out["stdout"], "0\n1\n2\n", "{out}");
    // With stdin piped as well.
    let out = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "ls /proc/$$/fd; true", "stdin": "x"}),
        )
        .await;
    assert_eq!(out.1["stdout"], "0\n1\n2\n", "{out:?}");
    drop(leaked);
}

/// A command that leaves processes behind in every way a shell can: in the background, in
/// their own process group (job control), in their own session.
fn stragglers(escape_session: bool) -> String {
    let mut command = String::from(
        "cp \"$(command -v sleep)\" \"./$MARK\"; \"./$MARK\" 1000 & \
         (set -m; \"./$MARK\" 1001 & wait) & ",
    );
    if escape_session {
        command.push_str("setsid \"./$MARK\" 1002 & ");
    }
    command.push_str("\"./$MARK\" 1003");
    command
}

/// Asserts, at the moment a job is terminal, that none of its processes lives on, as seen from
/// the host and from the sandbox's next job.
async fn none_left(app: &TestApp, sandbox: &str, marker: &str, when: &str) {
    let alive = processes_with(marker);
    assert!(
        alive.is_empty(),
        "{when}: processes outlived their job: {alive:?}"
    );
    let scan = "import glob, os\nm = os.environ['MARK'].encode()\nfound = []\n\
                for p in glob.glob('/proc/[0-9]*/cmdline'):\n\
                \x20   try:\n\
                \x20       if m in open(p, 'rb').read():\n\
                \x20           found.append(p)\n\
                \x20   except OSError:\n\
                \x20       pass\n\
                print('found', found)\n";
    let (status, out) = app
        .call(
            "/execute_code",
            json!({"sandbox_id": sandbox, "code": scan, "language": "python",
                   "env": {"MARK": marker}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "found []\n", "{when}: {out}");
}

/// Cancel and timeout end a job only once its whole process tree is gone.
async fn no_process_outlives_its_job(level: Level, cgroups: bool) {
    let app = app_with(level, cgroups).await;
    let id = app.sandbox("outlive").await;
    // Without cgroups a process that starts its own session is out of reach under Landlock
    // (see README); the pid namespace still holds it under bubblewrap.
    let escape_session = cgroups || level == Level::Bwrap;

    let marker = format!("mark{}", uuid::Uuid::new_v4().simple());
    let job = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "env": {"MARK": marker},
                   "command": stragglers(escape_session)}),
        )
        .await;
    app.wait_for_state(&job, "running").await;
    let expected = if escape_session { 4 } else { 3 };
    assert!(
        eventually(10, || processes_with(&marker).len() >= expected).await,
        "{:?}",
        processes_with(&marker)
    );
    let (status, body) = app.call(&format!("/v1/jobs/{job}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let done = app.wait(&job).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    none_left(&app, &id, &marker, "cancel").await;

    let marker = format!("mark{}", uuid::Uuid::new_v4().simple());
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "env": {"MARK": marker}, "timeout_s": 2,
                   "command": stragglers(escape_session)}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["timed_out"], true, "{out}");
    none_left(&app, &id, &marker, "timeout").await;
}

mod host_code_execution {
    use super::*;

    #[actix_web::test]
    async fn bwrap() {
        loader_and_interpreter_variables_act_inside_only(Level::Bwrap).await;
    }

    #[actix_web::test]
    async fn landlock() {
        loader_and_interpreter_variables_act_inside_only(Level::Landlock).await;
    }
}

mod descriptors {
    use super::*;

    #[actix_web::test]
    async fn bwrap() {
        inherited_descriptors_do_not_reach_sandboxes(Level::Bwrap).await;
    }

    #[actix_web::test]
    async fn landlock() {
        inherited_descriptors_do_not_reach_sandboxes(Level::Landlock).await;
    }
}

mod outliving {
    use super::*;

    #[actix_web::test]
    async fn bwrap() {
        no_process_outlives_its_job(Level::Bwrap, true).await;
    }

    #[actix_web::test]
    async fn bwrap_without_cgroups() {
        no_process_outlives_its_job(Level::Bwrap, false).await;
    }

    #[actix_web::test]
    async fn landlock() {
        no_process_outlives_its_job(Level::Landlock, true).await;
    }

    #[actix_web::test]
    async fn landlock_without_cgroups() {
        no_process_outlives_its_job(Level::Landlock, false).await;
    }
}

/// The data dir is private (0700), the database files 0600, and what the server writes later is
/// private too (umask); callers' files keep conventional modes.
#[actix_web::test]
async fn the_data_dir_and_database_are_private() {
    let (config, dir) = test_config(Db::Sqlite).await.unwrap();
    // A data dir an older version left world-readable is tightened.
    std::fs::create_dir_all(&config.data_dir).unwrap();
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = spawn_with(config, dir).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&app.data_dir), 0o700, "data dir");
    for file in [
        "daytona-mcp.db",
        "daytona-mcp.db-wal",
        "daytona-mcp.db-shm",
        "node-id",
    ] {
        let path = app.data_dir.join(file);
        assert!(path.exists(), "{file} missing");
        assert_eq!(mode(&path), 0o600, "{file}");
    }
    let id = app.sandbox("modes").await;
    for sub in ["sandboxes", "run"] {
        assert_eq!(mode(&app.data_dir.join(sub)) & 0o077, 0, "{sub}");
    }
    // Inside, modes are the usual ones: the server's umask is not the sandbox's.
    let (status, _) = app
        .call(
            "/file_operation",
            json!({"sandbox_id": id, "operation": "write", "file_path": "d/written.txt",
                   "content": "x"}),
        )
        .await;
    assert_eq!(status, 200);
    let out = app
        .shell(
            &id,
            "touch made.txt; mkdir made; stat -c '%a %n' d d/written.txt made.txt made",
        )
        .await;
    assert_eq!(
        out["stdout"], "755 d\n644 d/written.txt\n644 made.txt\n755 made\n",
        "{out}"
    );
}

/// A data dir (or SQLite file) under a directory every sandbox sees read-only would hand the
/// database to every sandbox: refused at start-up, naming the path and the reason, before
/// anything is created there.
#[actix_web::test]
async fn a_data_dir_that_sandboxes_can_read_is_refused() {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("share");
    std::os::unix::fs::symlink("/usr/share", &link).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            PathBuf::from(format!("/usr/local/daytona-{unique}")),
            "/usr",
        ),
        (
            PathBuf::from(format!("/etc/ssl/daytona-{unique}")),
            "/etc/ssl",
        ),
        // A symlink that leads under /usr is seen through.
        (link.join(format!("daytona-{unique}")), "/usr"),
    ];
    for (data_dir, reason) in cases {
        for level in [IsolationMode::Bwrap, IsolationMode::Landlock] {
            let (mut config, _dir) = test_config(Db::Sqlite).await.unwrap();
            config.data_dir = data_dir.clone();
            config.local.isolation = level;
            let err = daytona_mcp::app::Application::build(config)
                .await
                .err()
                .unwrap_or_else(|| panic!("{} was accepted", data_dir.display()));
            let text = format!("{err:#}");
            assert!(
                text.contains(&*data_dir.to_string_lossy()) && text.contains(reason),
                "{text}"
            );
            assert!(text.contains("sandbox"), "{text}");
            assert!(!data_dir.exists(), "{} was created", data_dir.display());
        }
    }
    // The SQLite file on its own is checked too.
    let (mut config, _dir) = test_config(Db::Sqlite).await.unwrap();
    let db = format!("/usr/local/daytona-{unique}.db");
    config.database.url = format!("sqlite://{db}");
    let err = daytona_mcp::app::Application::build(config)
        .await
        .err()
        .expect("a database under /usr was accepted");
    assert!(format!("{err:#}").contains(&db), "{err:#}");
    assert!(!Path::new(&db).exists());
}

/// Under Landlock, a command sees the host's process list; the warning says so, and what
/// Landlock's domains do protect holds: another sandbox's environment (where secrets travel)
/// is not readable.
#[actix_web::test]
async fn landlock_proc_shows_command_lines_but_not_other_sandboxes_environments() {
    let app = app_with(Level::Landlock, true).await;
    let (_, ready) = app.get_json("/readyz").await;
    assert!(
        ready["warnings"].to_string().contains("command line"),
        "{ready}"
    );
    let a = app.sandbox("proc-a").await;
    let b = app.sandbox("proc-b").await;
    let marker = format!("mark{}", uuid::Uuid::new_v4().simple());
    let secret = format!("secret{}", uuid::Uuid::new_v4().simple());
    let job = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": a, "env": {"MARK": marker, "TOKEN": secret},
                   "command": "cp \"$(command -v sleep)\" \"./$MARK\"; \"./$MARK\" 60"}),
        )
        .await;
    assert!(eventually(10, || !processes_with(&marker).is_empty()).await);
    let pid = processes_with(&marker)[0]
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let out = app
        .shell(
            &b,
            &format!("cat /proc/{pid}/environ 2>&1; echo; tr '\\0' ' ' < /proc/{pid}/cmdline"),
        )
        .await;
    let text = out["stdout"].as_str().unwrap();
    assert!(!text.contains(&secret), "{text}");
    assert!(text.contains("Permission denied"), "{text}");
    assert!(
        text.contains(&marker),
        "the documented visibility changed: {text}"
    );
    app.call(&format!("/v1/jobs/{job}/cancel"), json!({})).await;
    app.wait(&job).await;
}
