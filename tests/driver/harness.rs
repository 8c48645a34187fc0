//! A server on one driver, and what the cases need to know of where its sandboxes live.

use std::path::{Path, PathBuf};
use std::process::Command;

use daytona_mcp::config::Config;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_with, test_config};

/// Which driver a harness runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Local,
    Daytona,
}

/// The fake Daytona of a harness: its CLI, its state and its controls.
pub struct Fake {
    pub cli: PathBuf,
    pub home: PathBuf,
    pub api_key: String,
}

pub fn fake_cli() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/daytona/daytona")
}

impl Fake {
    pub fn new(home: PathBuf) -> Fake {
        std::fs::create_dir_all(&home).unwrap();
        Fake {
            cli: fake_cli(),
            home,
            api_key: format!("dtn_test_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.home.join(".daytona-fake")
    }

    /// Sets the fake's `control.json` (`{}` for normal service).
    pub fn control(&self, control: Value) {
        std::fs::create_dir_all(self.state()).unwrap();
        let path = self.state().join("control.json");
        let mut control = control;
        control["api_key"] = json!(self.api_key);
        std::fs::write(&path, control.to_string()).unwrap();
    }

    /// Runs the fake CLI as an operator would, with the harness's credentials.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.cli)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("DAYTONA_API_URL", "http://127.0.0.1:3000/api")
            .env("DAYTONA_API_KEY", &self.api_key)
            .output()
            .unwrap()
    }

    /// Daytona's JSON of sandbox `name_or_id`.
    pub fn info(&self, name_or_id: &str) -> Value {
        let out = self.run(&["info", name_or_id, "-f", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The environment of every run of the fake CLI (the API key's value masked by the fake).
    pub fn environments(&self) -> Vec<serde_json::Map<String, Value>> {
        std::fs::read_to_string(self.state().join("env.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every argv the fake CLI was called with.
    pub fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.state().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Points `config` at the fake Daytona in `home`.
pub fn use_fake(config: &mut Config, fake: &Fake) {
    config.daytona.cli_path = fake.cli.display().to_string();
    config.daytona.cli_home = fake.home.display().to_string();
    config.daytona.api_url = "http://127.0.0.1:3000/api".into();
    config.daytona.api_key = fake.api_key.clone();
    config.daytona.command_timeout_s = 20;
    fake.control(json!({}));
}

pub struct Harness {
    pub app: TestApp,
    pub kind: Kind,
    pub fake: Option<Fake>,
}

impl Harness {
    pub async fn local() -> Harness {
        let (config, dir) = test_config(Db::Sqlite).await.unwrap();
        Harness {
            app: spawn_with(config, dir).await,
            kind: Kind::Local,
            fake: None,
        }
    }

    pub async fn daytona() -> Harness {
        Harness::daytona_with(|_| {}).await
    }

    pub async fn daytona_with(adjust: impl FnOnce(&mut Config)) -> Harness {
        let (mut config, dir) = test_config(Db::Sqlite).await.unwrap();
        let fake = Fake::new(dir.path().join("operator-home"));
        config.sandbox.driver = "daytona".into();
        use_fake(&mut config, &fake);
        adjust(&mut config);
        Harness {
            app: spawn_with(config, dir).await,
            kind: Kind::Daytona,
            fake: Some(fake),
        }
    }

    pub fn fake(&self) -> &Fake {
        self.fake.as_ref().expect("a daytona harness")
    }

    /// Where sandbox `id`'s `/workspace` is on the host.
    pub fn workspace_on_host(&self, id: &str) -> PathBuf {
        match self.kind {
            Kind::Local => self.app.data_dir.join("sandboxes").join(id),
            Kind::Daytona => {
                // Daytona's name of the sandbox is our id.
                let daytona_id = self.fake().info(id)["id"].as_str().unwrap().to_string();
                self.fake()
                    .state()
                    .join("sandboxes")
                    .join(daytona_id)
                    .join("home/workspace")
            }
        }
    }

    pub async fn file(&self, id: &str, operation: &str, path: &str, fields: Value) -> (u16, Value) {
        let mut body = json!({"sandbox_id": id, "operation": operation, "file_path": path});
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.app.call("/file_operation", body).await
    }

    pub async fn file_ok(&self, id: &str, operation: &str, path: &str, fields: Value) -> Value {
        let (status, body) = self.file(id, operation, path, fields).await;
        assert_eq!(status, 200, "{operation} {path}: {body}");
        assert_eq!(body["success"], true, "{body}");
        body
    }

    pub async fn git_ok(&self, id: &str, operation: &str, fields: Value) -> Value {
        let mut body = json!({"sandbox_id": id, "operation": operation});
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, body) = self.app.call("/git_operation", body).await;
        assert_eq!(status, 200, "git {operation}: {body}");
        assert_eq!(body["success"], true, "git {operation}: {body}");
        body
    }

    /// `execute_shell` with extra fields; the status and the body.
    pub async fn shell(&self, id: &str, command: &str, fields: Value) -> (u16, Value) {
        let mut body = json!({"sandbox_id": id, "command": command});
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.app.call("/execute_shell", body).await
    }
}
