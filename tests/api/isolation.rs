//! A sandbox sees only itself: not the host, not the server's data, not other sandboxes, not
//! the network.

use serde_json::json;

use crate::helpers::{Db, spawn_app};

#[actix_web::test]
async fn sandbox_cannot_read_host_files_or_the_database() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("probe").await;
    let db_file = app.data_dir.join("daytona-mcp.db");
    assert!(db_file.exists());
    let key_target = app.data_dir.join("node-id");
    let out = app
        .shell(
            &id,
            &format!(
                "cat {db} 2>&1; cat {node} 2>&1; ls {data} 2>&1; cat /etc/shadow 2>&1; ls /root 2>&1; \
                 ls /home 2>&1; echo ---; ls /",
                db = db_file.display(),
                node = key_target.display(),
                data = app.data_dir.display()
            ),
        )
        .await;
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.contains("No such file or directory"), "{stdout}");
    assert!(
        !stdout.contains("SQLite format"),
        "read the database: {stdout}"
    );
    let node_id = std::fs::read_to_string(&key_target).unwrap();
    assert!(
        !stdout.contains(node_id.trim()),
        "read the node id: {stdout}"
    );
    let root_listing: Vec<&str> = stdout.split("---\n").nth(1).unwrap().lines().collect();
    assert!(!root_listing.contains(&"root"), "{root_listing:?}");
    assert!(!root_listing.contains(&"home"), "{root_listing:?}");
    // Writing outside the sandbox fails: system directories are read-only.
    let out = app
        .shell(
            &id,
            "touch /usr/evil 2>&1; echo x > /etc/evil 2>&1; echo rc=$?",
        )
        .await;
    assert!(
        out["stdout"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{out}"
    );
    assert!(!std::path::Path::new("/usr/evil").exists());
}

#[actix_web::test]
async fn sandboxes_cannot_see_each_other() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let a = app.sandbox("alice").await;
    let b = app.sandbox("bob").await;
    app.shell(&a, "echo alice-secret > secret.txt").await;
    let a_dir = app.data_dir.join("sandboxes").join(&a);
    assert!(a_dir.join("secret.txt").exists());
    let out = app
        .shell(
            &b,
            &format!(
                "cat {}/secret.txt 2>&1; cat ../{a}/secret.txt 2>&1; ls /workspace/..",
                a_dir.display()
            ),
        )
        .await;
    let stdout = out["stdout"].as_str().unwrap();
    assert!(!stdout.contains("alice-secret"), "{stdout}");
    // `/workspace/..` is the sandbox's own root, which holds no other sandbox.
    assert!(!stdout.lines().any(|l| l.starts_with("sb-")), "{stdout}");
    let found = app
        .shell(
            &b,
            "find / -name secret.txt -not -path '/proc/*' 2>/dev/null; echo end",
        )
        .await;
    assert_eq!(found["stdout"], "end\n", "found the other sandbox's file");
}

#[actix_web::test]
async fn sandbox_has_no_network() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("offline").await;
    // The server listens on the host's loopback; the sandbox's loopback is its own.
    let code = format!(
        "import socket\n\
         for host, port in [('127.0.0.1', {port}), ('1.1.1.1', 80), ('10.0.0.1', 22)]:\n\
         \x20   s = socket.socket()\n\
         \x20   s.settimeout(2)\n\
         \x20   try:\n\
         \x20       s.connect((host, port))\n\
         \x20       print(host, 'CONNECTED')\n\
         \x20   except OSError as e:\n\
         \x20       print(host, 'refused', e.errno)\n\
         print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))\n",
        port = app.port
    );
    let (status, out) = app
        .call(
            "/execute_code",
            json!({"sandbox_id": id, "code": code, "language": "python"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let stdout = out["stdout"].as_str().unwrap();
    assert!(!stdout.contains("CONNECTED"), "{stdout}");
    assert_eq!(stdout.matches("refused").count(), 3, "{stdout}");
    assert!(stdout.contains("['lo']"), "only loopback: {stdout}");
}

#[actix_web::test]
async fn sandbox_user_is_unprivileged() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("who").await;
    let out = app
        .shell(
            &id,
            "id -u; grep CapEff /proc/self/status; unshare -U true 2>&1; echo rc=$?",
        )
        .await;
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("1000\n"), "{stdout}");
    assert!(stdout.contains("CapEff:\t0000000000000000"), "{stdout}");
    assert!(
        stdout.contains("rc=1"),
        "nested user namespaces must be refused: {stdout}"
    );
}
