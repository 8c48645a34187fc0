//! Operations routes: liveness, readiness, metrics.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// The process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// A check's answer: `ok`, or `failed` with the error in the log only (`/readyz` is open to
/// unauthenticated callers, and errors carry host paths and database details).
fn check<E: std::fmt::Display>(name: &str, result: &Result<(), E>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(e) => {
            tracing::warn!(check = name, error = %e, "readiness check failed");
            "failed"
        }
    }
}

/// The database answers and every driver can serve. `driver` is the default driver's name;
/// `drivers` has each driver's check and details (the daytona CLI's version, its API URL).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.queue.store().ping().await;
    let mut drivers_ok = true;
    let mut drivers = serde_json::Map::new();
    for driver in state.drivers.iter() {
        let result = driver.check().await;
        drivers_ok &= result.is_ok();
        drivers.insert(
            driver.name().to_string(),
            json!({
                "check": check(&format!("driver {}", driver.name()), &result),
                "details": driver.details(),
            }),
        );
    }
    state.metrics.observe_drivers(&state.drivers);
    let ready = database.is_ok() && drivers_ok;
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {
            "database": check("database", &database),
            "driver": if drivers_ok { "ok" } else { "failed" },
        },
        "backend": state.queue.store().backend().as_str(),
        "driver": state.drivers.default_name(),
        "drivers": drivers,
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
        .render(&state.queue, &state.config.data_dir, &state.drivers)
        .await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}
