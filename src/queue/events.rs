//! In-process fan-out of job events to waiters and event streams.
//!
//! Events are hints, not the record: a subscriber that lags or misses an event re-reads the job
//! from the store, which is the source of truth (invariant 1).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::output::Stream;
use crate::store::{Job, JobState};

/// How many events a slow subscriber may fall behind before it sees `Lagged` and re-reads.
const CHANNEL_CAPACITY: usize = 256;

/// Something that happened to a job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    /// The job entered a non-terminal `state` on this node.
    State(JobState),
    /// The job finished on this node; this is the stored job, so waiters need not read it.
    Finished(Arc<Job>),
    /// The job changed somewhere (another node, a rescue); re-read it from the store.
    Changed,
    /// Output captured while the job runs; `seq` numbers chunks from 1.
    Output {
        seq: i64,
        stream: Stream,
        data: Bytes,
    },
}

/// Per-job broadcast channels, created on first subscription and dropped when the job ends or
/// nobody listens.
#[derive(Debug, Default)]
pub struct EventHub {
    channels: Mutex<HashMap<Uuid, broadcast::Sender<JobEvent>>>,
}

impl EventHub {
    pub fn new() -> EventHub {
        EventHub::default()
    }

    /// Subscribes to a job's future events. Subscribe before reading the job from the store, so
    /// that nothing between the read and the subscription is missed.
    pub fn subscribe(&self, id: Uuid) -> broadcast::Receiver<JobEvent> {
        let mut channels = self.channels.lock().expect("event hub lock poisoned");
        // Drop channels whose subscribers all went away (a waiter that found the job finished).
        channels.retain(|_, tx| tx.receiver_count() > 0);
        channels
            .entry(id)
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Delivers an event to the job's subscribers, if any. `Finished` closes the channel after
    /// delivery, which ends every stream of that job.
    pub fn publish(&self, id: Uuid, event: JobEvent) {
        let mut channels = self.channels.lock().expect("event hub lock poisoned");
        let terminal = matches!(event, JobEvent::Finished(_));
        if let Some(tx) = channels.get(&id) {
            if tx.send(event).is_err() || terminal {
                channels.remove(&id);
            }
        }
    }

    /// Delivers a non-terminal event to every job's subscribers (after lost signals: everyone
    /// re-reads).
    pub fn publish_all(&self, event: JobEvent) {
        debug_assert!(!matches!(event, JobEvent::Finished(_)));
        let mut channels = self.channels.lock().expect("event hub lock poisoned");
        channels.retain(|_, tx| tx.send(event.clone()).is_ok());
    }

    /// Whether anyone listens to the job (lets producers skip building events).
    pub fn has_subscribers(&self, id: Uuid) -> bool {
        let channels = self.channels.lock().expect("event hub lock poisoned");
        channels.get(&id).is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Number of jobs with live channels (for tests of cleanup).
    pub fn channel_count(&self) -> usize {
        self.channels.lock().expect("event hub lock poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finishing_closes_the_channel_after_delivery() {
        let hub = EventHub::new();
        let id = Uuid::now_v7();
        let mut rx = hub.subscribe(id);
        let mut job = crate::store::NewJob::new("t", "x", serde_json::json!({}));
        job.id = id;
        let finished = Arc::new(Job {
            id,
            seq: 1,
            tenant: job.tenant,
            workspace: None,
            tool: job.tool,
            arguments: job.arguments,
            state: JobState::Succeeded,
            priority: 0,
            attempts: 1,
            max_attempts: 1,
            retry_safe: false,
            timeout_s: 1,
            run_after: job.run_after,
            created_at: job.run_after,
            started_at: None,
            finished_at: None,
            lease_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            idempotency_key: None,
            result: None,
            error: None,
            exit_code: None,
            request_id: None,
            node: None,
        });
        hub.publish(id, JobEvent::State(JobState::Running));
        hub.publish(id, JobEvent::Finished(finished.clone()));
        assert_eq!(rx.recv().await.unwrap(), JobEvent::State(JobState::Running));
        assert_eq!(rx.recv().await.unwrap(), JobEvent::Finished(finished));
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        assert_eq!(hub.channel_count(), 0);
    }

    #[test]
    fn publishing_without_subscribers_keeps_nothing() {
        let hub = EventHub::new();
        hub.publish(Uuid::now_v7(), JobEvent::Changed);
        assert_eq!(hub.channel_count(), 0);
    }

    #[test]
    fn abandoned_channels_are_collected() {
        let hub = EventHub::new();
        drop(hub.subscribe(Uuid::now_v7()));
        let _live = hub.subscribe(Uuid::now_v7());
        assert_eq!(hub.channel_count(), 1);
    }
}
