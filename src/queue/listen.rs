//! Turns the store's wake-up stream into this node's in-process signals.
//!
//! One task per node: "jobs ready" wakes the dispatcher, "job changed" and "output stored" wake
//! local waiters and followers (which re-read the store), "cancel requested" kills the job if it
//! runs here, and "resync" (signals may have been lost) does all of that for everyone. The store
//! owns how signals travel (PostgreSQL `LISTEN/NOTIFY`, in process on SQLite); this module knows
//! no channel names and opens no connection.

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{JobEvent, Queue};
use crate::store::Signal;

/// Relays signals until `shutdown`; `node` is this node's id (its own completions' signals wake
/// nothing: its completer already told the dispatcher which workspaces it freed).
pub async fn run(queue: Queue, node: String, shutdown: CancellationToken) {
    let mut signals = queue.store().signals();
    loop {
        let signal = tokio::select! {
            _ = shutdown.cancelled() => return,
            signal = signals.recv() => signal,
        };
        match signal {
            Ok(signal) => relay(&queue, &node, signal),
            // Fell behind: whatever was skipped, a re-read covers it.
            Err(RecvError::Lagged(_)) => relay(&queue, &node, Signal::Resync),
            // Only a dropped store closes the stream; nothing is left to relay.
            Err(RecvError::Closed) => return,
        }
    }
}

fn relay(queue: &Queue, own: &str, signal: Signal) {
    match signal {
        Signal::JobsReady => queue.wake(),
        Signal::JobsFinished { node } if &*node == own => {}
        Signal::JobsFinished { .. } => queue.wake(),
        Signal::JobChanged(id) => queue.events().publish(id, JobEvent::Changed),
        Signal::Output(id) => {
            if queue.events().has_subscribers(id) {
                queue.events().publish(id, JobEvent::Changed);
            }
        }
        Signal::CancelRequested(id) => {
            queue.running().cancel(id);
        }
        Signal::Resync => {
            queue.wake();
            queue.events().publish_all(JobEvent::Changed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{self, DatabaseUrl};

    /// A node's own completions name it: they must not count as work from elsewhere (its
    /// dispatcher already knows which workspaces they freed), while another node's completions,
    /// enqueues and lost signals must (the next claim then looks at every workspace).
    #[tokio::test]
    async fn only_changes_from_elsewhere_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::new(format!("sqlite://{}", dir.path().join("q.db").display()));
        let queue = Queue::new(
            store::connect(&url, 1).await.unwrap(),
            Duration::from_secs(1),
        );
        let before = queue.changes();
        relay(&queue, "n1", Signal::JobsFinished { node: "n1".into() });
        assert_eq!(queue.changes(), before, "the node's own completions");
        relay(&queue, "n1", Signal::JobsFinished { node: "n2".into() });
        assert_eq!(queue.changes(), before + 1, "another node's completions");
        relay(&queue, "n1", Signal::JobsReady);
        relay(&queue, "n1", Signal::Resync);
        assert_eq!(queue.changes(), before + 3, "an enqueue and a resync");
    }
}
