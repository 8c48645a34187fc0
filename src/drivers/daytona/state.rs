//! Daytona's view of a sandbox: the `Sandbox` JSON of `info -f json` and `list -f json` (the
//! fields the driver reads; the schema is Daytona's OpenAPI `Sandbox`), and how Daytona's
//! states map onto our `status`.

use serde::Deserialize;

/// The fields of Daytona's `Sandbox` (and `SandboxListItem`) the driver uses.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    pub id: String,
    pub state: Option<String>,
}

/// One page of `list -f json`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub items: Vec<Sandbox>,
    pub next_cursor: Option<String>,
}

/// Our status for a Daytona state (the table in the README, "Using a self-hosted Daytona"):
///
/// | Daytona `state` | our `status` |
/// |---|---|
/// | `started` | `running` |
/// | `creating`, `restoring`, `pending_build`, `building_snapshot`, `pulling_snapshot` | `creating` |
/// | `starting`, `resuming` | `starting` |
/// | `stopping`, `pausing` | `stopping` |
/// | `stopped`, `paused` | `stopped` |
/// | `archiving`, `archived` | `archived` |
/// | `resizing`, `snapshotting`, `forking` | `busy` |
/// | `destroying`, `destroyed` | `deleting` |
/// | `error`, `build_failed` | `error` |
/// | `unknown`, absent, anything new | `unknown` |
pub fn status_of(state: Option<&str>) -> &'static str {
    match state.unwrap_or("unknown") {
        "started" => "running",
        "creating" | "restoring" | "pending_build" | "building_snapshot" | "pulling_snapshot" => {
            "creating"
        }
        "starting" | "resuming" => "starting",
        "stopping" | "pausing" => "stopping",
        "stopped" | "paused" => "stopped",
        "archiving" | "archived" => "archived",
        "resizing" | "snapshotting" | "forking" => "busy",
        "destroying" | "destroyed" => "deleting",
        "error" | "build_failed" => "error",
        _ => "unknown",
    }
}

/// Every state of Daytona's `SandboxState` (for the test that the table covers them).
pub const DAYTONA_STATES: [&str; 22] = [
    "creating",
    "restoring",
    "destroyed",
    "destroying",
    "started",
    "stopped",
    "starting",
    "stopping",
    "error",
    "build_failed",
    "pending_build",
    "building_snapshot",
    "unknown",
    "pulling_snapshot",
    "archived",
    "archiving",
    "resizing",
    "snapshotting",
    "forking",
    "pausing",
    "paused",
    "resuming",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_daytona_state_has_a_status() {
        for state in DAYTONA_STATES {
            let status = status_of(Some(state));
            assert!(
                state == "unknown" || status != "unknown",
                "{state} is not mapped"
            );
        }
        assert_eq!(status_of(Some("started")), "running");
        assert_eq!(status_of(Some("stopped")), "stopped");
        assert_eq!(status_of(None), "unknown");
    }
}
