//! The store's wake-up stream: hints that something changed in the database.
//!
//! Every node subscribes with [`super::Store::signals`]. On SQLite (one node per database) the
//! store sends the signals itself, in process, after each commit. On PostgreSQL the same signals
//! travel between nodes as `NOTIFY` in the writing transaction (so they leave only on commit) and
//! come back through one `LISTEN` connection of the store's own pool; `postgres.rs` owns the
//! channel names, nobody else knows them.
//!
//! Signals are hints, never the record: a consumer that receives [`Signal::Resync`] (the listener
//! reconnected, so notifications may have been lost) or lags behind the channel must re-read what
//! it waits for. While PostgreSQL cannot be reached the stream sends `Resync` on every reconnect
//! attempt, which is the poll backstop for the time notifications cannot arrive; consumers keep
//! their own slow polls besides (the dispatcher's `poll_interval`, a waiter's one-second re-read).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How many signals a slow subscriber may fall behind before it sees `Lagged` (and re-reads).
const CAPACITY: usize = 4096;

/// Something that happened in the database, on this node or another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Jobs may have become runnable (an enqueue, a cancel, a rescue).
    JobsReady,
    /// `node` wrote outcomes, which may have unblocked the next jobs of their workspaces. The
    /// node that wrote them knows which workspaces those are; every other node looks at all.
    JobsFinished { node: std::sync::Arc<str> },
    /// The job changed state (a completion, a retry, a cancel, a rescue, a node-gone failure).
    JobChanged(Uuid),
    /// The job's cancellation was requested while it runs; the node running it should kill it.
    CancelRequested(Uuid),
    /// New output of the job was stored (one signal per stored batch).
    Output(Uuid),
    /// Signals may have been lost (the listener reconnected or cannot reach the database):
    /// re-read everything waited for.
    Resync,
}

/// The in-process fan-out of signals: a broadcast channel shared by every subscriber.
#[derive(Debug, Clone)]
pub(crate) struct SignalHub {
    tx: broadcast::Sender<Signal>,
}

impl Default for SignalHub {
    fn default() -> SignalHub {
        SignalHub {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl SignalHub {
    pub(crate) fn send(&self, signal: Signal) {
        // No subscriber is not an error: nobody waits.
        let _ = self.tx.send(signal);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.tx.subscribe()
    }
}

/// A background task that feeds a [`SignalHub`], started on the first subscription (so that a
/// store opened only to migrate starts nothing) and stopped when the last clone of the store
/// that owns it is dropped.
#[derive(Debug, Default)]
pub(crate) struct Feeder {
    started: AtomicBool,
    stop: CancellationToken,
    /// The task, kept so that it is aborted with the store.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Feeder {
    /// Starts `feed` once, on the current tokio runtime. Outside a runtime nothing starts (and
    /// the next subscription inside one tries again).
    pub(crate) fn start_once<F, Fut>(&self, feed: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let task = runtime.spawn(feed(self.stop.clone()));
        *self.task.lock().expect("feeder lock poisoned") = Some(task);
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.lock().expect("feeder lock poisoned").take() {
            task.abort();
        }
    }
}

/// The pause before the listener's next reconnect attempt: doubling from 100 ms up to 5 s.
pub(crate) fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// A store's signal source: the hub and, on PostgreSQL, the listener feeding it.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    pub(crate) hub: SignalHub,
    pub(crate) feeder: Feeder,
}

pub(crate) type SharedSignals = Arc<Signals>;
