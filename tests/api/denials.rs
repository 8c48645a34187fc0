//! What an unauthenticated caller can make the server store or remember: refused requests write
//! bounded audit rows, and neither methods nor paths create new metrics series.

use daytona_mcp::store::{self, AuditFilter, AuditRecord};
use serde_json::json;

use crate::helpers::{Db, TestApp, spawn_app, spawn_with, test_config};
use crate::on_both_databases;

on_both_databases!(denied_floods_write_bounded_audit_rows);

/// Every audit row of the database at `url`.
async fn audit_rows(url: &store::DatabaseUrl) -> Vec<AuditRecord> {
    let store = store::connect(url, 1).await.unwrap();
    store
        .list_audit(&AuditFilter {
            limit: 10_000,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
}

async fn denied_floods_write_bounded_audit_rows(db: Db) {
    let Some((config, dir)) = test_config(db).await else {
        return;
    };
    let url = config.database_url();
    let app = spawn_with(config, dir).await;
    let long = "a".repeat(30_000);
    const FLOOD: usize = 70;
    for i in 0..FLOOD {
        let response = app
            .client
            .post(app.url(&format!("/{long}{i}")))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
    }
    let rows = audit_rows(&url).await;
    let bytes = serde_json::to_string(&rows).unwrap().len();
    // At most ten rows per address per minute, each with a truncated path, not 70 rows of
    // 30 KB. (A flood that straddles two minutes writes up to ten in each, plus the count of
    // the first minute.)
    let bound = 2 * 10 + 1;
    assert!(rows.len() <= bound, "{} rows", rows.len());
    assert!(
        bytes <= bound * 1024,
        "{bytes} bytes in {} rows",
        rows.len()
    );
    assert!(rows.iter().all(|r| r.entry.action.len() <= 400));
    assert!(
        rows.iter()
            .all(|r| r.entry.outcome == "denied" || r.entry.outcome == "suppressed")
    );
    // What was not written one by one is counted: the server writes one row per address and
    // minute with the number it left out, at the latest when it stops.
    let _dir = app.stop();
    let rows = audit_rows(&url).await;
    let written = rows.iter().filter(|r| r.entry.outcome == "denied").count();
    let suppressed: u64 = rows
        .iter()
        .filter(|r| r.entry.outcome == "suppressed")
        .map(|r| {
            assert_eq!(r.entry.client_addr.as_deref(), Some("127.0.0.1"));
            r.entry.args_summary.as_ref().unwrap()["suppressed"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(written as u64 + suppressed, FLOOD as u64, "{rows:?}");
    assert!(rows.len() <= 2 * 10 + 2, "{} rows", rows.len());
}

/// The number of `http_requests_total` series the server exports.
async fn request_series(app: &TestApp) -> usize {
    app.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("daytona_mcp_http_requests_total{"))
        .count()
}

#[actix_web::test]
async fn unknown_methods_and_paths_create_no_metrics_series() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let send = |method: String, path: String, authed: bool| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = app.client.request(method, app.url(&path));
        if authed {
            request = app.authed(request);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // One of each kind first, so that the series they legitimately use exist.
    for authed in [true, false] {
        send("ZZWARMUP".into(), "/warm/up/path".into(), authed).await;
        send("ZZWARMUP".into(), "/warmup".into(), authed).await;
        send("ZZWARMUP".into(), "/mcp".into(), authed).await;
    }
    // The scrape itself is a series too.
    app.metrics().await;
    let before = request_series(&app).await;
    for i in 0..50 {
        let method = format!("ZZMETHOD{i}");
        let id = uuid::Uuid::new_v4().simple().to_string();
        for authed in [true, false] {
            send(method.clone(), format!("/{id}/{i}/x"), authed).await;
            send(method.clone(), format!("/{id}"), authed).await;
            send(method.clone(), "/mcp".into(), authed).await;
        }
    }
    let after = request_series(&app).await;
    assert_eq!(before, after, "{}", app.metrics().await);
    // Known methods keep their own label.
    assert!(app.metrics().await.contains("method=\"GET\""));
}

on_both_databases!(audit_rows_past_the_retention_are_pruned);

async fn audit_rows_past_the_retention_are_pruned(db: Db) {
    let Some((mut config, dir)) = test_config(db).await else {
        return;
    };
    config.audit.retention_days = 30;
    let url = config.database_url();
    // Rows written before this server starts: one past the retention, one within it.
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let store = store::connect(&url, 1).await.unwrap();
    store.migrate().await.unwrap();
    for (action, days) in [("old-row", 31), ("kept-row", 29)] {
        let mut entry = daytona_mcp::audit::Caller::internal("default")
            .entry(action, None, None, "accepted", None);
        entry.at = chrono::Utc::now() - chrono::Duration::days(days);
        store.append_audit(&entry).await.unwrap();
    }
    let app = spawn_with(config, dir).await;
    let mut actions = Vec::new();
    for _ in 0..200 {
        actions = audit_rows(&url)
            .await
            .into_iter()
            .map(|r| r.entry.action)
            .collect::<Vec<_>>();
        if !actions.iter().any(|a| a == "old-row") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!actions.iter().any(|a| a == "old-row"), "{actions:?}");
    assert!(actions.iter().any(|a| a == "kept-row"), "{actions:?}");
    drop(app);
}
