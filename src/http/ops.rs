//! Operations routes: liveness, readiness, metrics.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// The process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers and the driver can serve.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.queue.store().ping().await;
    let driver = state.driver.check().await;
    let ready = database.is_ok() && driver.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {
            "database": database.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into()),
            "driver": driver.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into()),
        },
        "backend": state.queue.store().backend().as_str(),
        "driver": state.driver.name(),
        "warnings": state.warnings,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let text = state
        .metrics
        .render(state.queue.store().as_ref(), &state.config.data_dir)
        .await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}
