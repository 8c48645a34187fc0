//! Synchronous calls in flight, by request id, so that `notifications/cancelled` can cancel the
//! job behind a request.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::web;
use serde_json::Value;
use uuid::Uuid;

use super::Ctx;
use crate::http::AppState;

/// Requests waiting for a job: (scope, request id) → (tenant, job id). The scope is the session,
/// or for requests without one the caller's key and address, so that one client cannot cancel
/// another's request by guessing its id.
#[derive(Debug, Default)]
pub struct InFlight {
    map: Mutex<HashMap<(String, String), (String, Uuid)>>,
}

impl InFlight {
    /// Records that request `id` waits for `job`; the record goes when the guard is dropped.
    pub(crate) fn register(&self, ctx: &Ctx, id: &Value, job: Uuid) -> InFlightGuard {
        let key = (ctx.scope(), id.to_string());
        self.map
            .lock()
            .expect("in-flight lock poisoned")
            .insert(key.clone(), (ctx.caller.tenant.clone(), job));
        InFlightGuard {
            state: ctx.state.clone(),
            key,
        }
    }

    /// The job request `id` of `scope` waits for.
    pub(crate) fn job(&self, scope: &str, id: &Value) -> Option<(String, Uuid)> {
        self.map
            .lock()
            .expect("in-flight lock poisoned")
            .get(&(scope.to_string(), id.to_string()))
            .cloned()
    }
}

/// Removes a request's record when the request is answered (or abandoned).
pub(crate) struct InFlightGuard {
    state: web::Data<AppState>,
    key: (String, String),
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.state
            .mcp
            .in_flight
            .map
            .lock()
            .expect("in-flight lock poisoned")
            .remove(&self.key);
    }
}
