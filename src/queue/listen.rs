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

/// Relays signals until `shutdown`.
pub async fn run(queue: Queue, shutdown: CancellationToken) {
    let mut signals = queue.store().signals();
    loop {
        let signal = tokio::select! {
            _ = shutdown.cancelled() => return,
            signal = signals.recv() => signal,
        };
        match signal {
            Ok(signal) => relay(&queue, signal),
            // Fell behind: whatever was skipped, a re-read covers it.
            Err(RecvError::Lagged(_)) => relay(&queue, Signal::Resync),
            // Only a dropped store closes the stream; nothing is left to relay.
            Err(RecvError::Closed) => return,
        }
    }
}

fn relay(queue: &Queue, signal: Signal) {
    match signal {
        Signal::JobsReady => queue.wake(),
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
