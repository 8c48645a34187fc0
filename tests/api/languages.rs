//! `execute_code` languages and the call options: stdin, env, working directory.

use serde_json::json;

use crate::helpers::{Db, spawn_app, spawn_with, test_config};

#[actix_web::test]
async fn languages_run_from_files_with_stdin_env_and_cwd() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("polyglot").await;
    app.shell(&id, "mkdir -p src/app").await;
    let cases = [
        (
            "python",
            "import sys,os\nprint(sys.stdin.read().upper(), os.environ['GREETING'], os.getcwd())",
        ),
        (
            "javascript",
            "let d='';process.stdin.on('data',c=>d+=c).on('end',()=>console.log(d.toUpperCase(), process.env.GREETING, process.cwd()))",
        ),
        (
            "bash",
            "read -r line; echo \"${line^^}\" \"$GREETING\" \"$PWD\"",
        ),
        (
            "sh",
            "read line; echo \"$(echo $line | tr a-z A-Z)\" \"$GREETING\" \"$(pwd)\"",
        ),
    ];
    for (language, code) in cases {
        let (status, out) = app
            .call(
                "/execute_code",
                json!({
                    "sandbox_id": id,
                    "language": language,
                    "code": code,
                    "stdin": "hi there",
                    "env": {"GREETING": "hello"},
                    "working_directory": "src/app",
                }),
            )
            .await;
        assert_eq!(status, 200, "{language}: {out}");
        assert_eq!(
            out["stdout"].as_str().unwrap().trim(),
            "HI THERE hello /workspace/src/app",
            "{language}: {out}"
        );
        assert_eq!(out["exit_code"], 0, "{language}: {out}");
    }
    // The sandbox's language is the default; an absolute path under /workspace works.
    let (status, out) = app
        .call(
            "/execute_code",
            json!({"sandbox_id": id, "code": "import os; print(os.getcwd())", "working_directory": "/workspace/src"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "/workspace/src\n");
    // Code is never part of a command line: quotes and substitutions are just text.
    let (_, out) = app
        .call(
            "/execute_code",
            json!({"sandbox_id": id, "language": "python", "code": "print(\"'$(touch pwned)'; `touch pwned2`\")"}),
        )
        .await;
    assert_eq!(out["stdout"], "'$(touch pwned)'; `touch pwned2`\n");
    let listing = app.shell(&id, "ls").await;
    assert!(!listing["stdout"].as_str().unwrap().contains("pwned"));
    // A directory that does not exist is a clear error.
    let (status, out) = app
        .call(
            "/execute_shell",
            json!({"sandbox_id": id, "command": "pwd", "working_directory": "missing"}),
        )
        .await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["field"], "working_directory");
}

#[actix_web::test]
async fn a_language_the_sandbox_lacks_is_a_clear_error() {
    let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
    // A sandbox PATH without interpreters.
    config.local.path = "/nonexistent".into();
    let app = spawn_with(config, dir).await;
    let id = app.sandbox("bare").await;
    let (status, out) = app
        .call(
            "/execute_code",
            json!({"sandbox_id": id, "language": "python", "code": "print(1)"}),
        )
        .await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["error"]["code"], "execution_error");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("python") && message.contains("not available"),
        "{message}"
    );
}

/// A shell command posted as code (the CI example of the original design posts
/// `{"code": "python -m pytest"}`) fails to compile; the message says what to do instead,
/// and nothing else of the result changes.
#[actix_web::test]
async fn a_command_line_posted_as_code_gets_a_hint() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("ci-test").await;
    let hint = |out: &serde_json::Value| {
        let message = out["message"].as_str().unwrap();
        message.contains("execute_shell") && message.contains("language")
    };
    for (language, code) in [
        (None, "python -m pytest"),
        (
            Some("python"),
            "pip install -r requirements.txt && pytest -q",
        ),
        (Some("javascript"), "npm test -- --watch=false"),
    ] {
        let mut call = json!({"sandbox_id": id, "code": code});
        if let Some(language) = language {
            call["language"] = json!(language);
        }
        let (status, out) = app.call("/execute_code", call).await;
        assert_eq!(status, 200, "{out}");
        assert!(hint(&out), "{language:?} {code}: {out}");
        let message = out["message"].as_str().unwrap();
        assert!(message.starts_with("exited with code "), "{message}");
        // The other fields are what the interpreter produced.
        assert_ne!(out["exit_code"], 0, "{out}");
        assert!(
            out["stderr"].as_str().unwrap().contains("SyntaxError"),
            "{out}"
        );
        assert_eq!(out["stdout"], "");
        assert_eq!(out["timed_out"], false);
    }
    // Real code that fails, even to compile, gets no such hint; nor does a command line that
    // happens to be valid code, nor a command that runs.
    for (language, code) in [
        ("python", "def f(:\n    pass"),
        ("python", "print(undefined_name)"),
        ("python", "pytest"),
        ("javascript", "console.log(1 +)"),
    ] {
        let (status, out) = app
            .call(
                "/execute_code",
                json!({"sandbox_id": id, "language": language, "code": code}),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        assert!(!hint(&out), "{language} {code}: {out}");
        assert_ne!(out["exit_code"], 0, "{out}");
    }
    let (_, out) = app
        .call(
            "/execute_code",
            json!({"sandbox_id": id, "language": "bash", "code": "python3 -c 'print(42)'"}),
        )
        .await;
    assert_eq!(out["stdout"], "42\n", "{out}");
    assert_eq!(out["message"], "completed with exit code 0");
}
