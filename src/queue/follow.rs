//! Following one job: its state changes and its output, live, after a replay of what was
//! already captured, until it ends.
//!
//! Both the jobs API's event stream and MCP progress notifications are built on [`follow`]. The
//! follower re-reads the store whenever an event hints at a change, on a lag, and once a second
//! (a job running on another node only sends `Changed` hints through PostgreSQL), so what it
//! reports is always what the store says (invariant 1).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::{JobEvent, Queue};
use crate::output::Stream;
use crate::store::{Job, JobState};

/// How often the follower re-reads the store when no event arrives.
const TICK: Duration = Duration::from_secs(1);

/// How many followers run on this node (the `job_followers` gauge): each one reads the store
/// on every hint and tick, so one left behind by a vanished client would cost until its job
/// ends.
#[derive(Debug, Default)]
pub struct Followers(AtomicUsize);

impl Followers {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts one running follower for as long as it lives.
struct Active(Arc<Followers>);

impl Active {
    fn new(followers: &Arc<Followers>) -> Active {
        followers.0.fetch_add(1, Ordering::Relaxed);
        Active(followers.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Something a follower reports, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Followed {
    /// The job as it is when following starts, and again each time its state changes.
    State(Job),
    /// A chunk of output; `seq` numbers chunks from 1 and strictly increases.
    Output {
        seq: i64,
        stream: Stream,
        data: Bytes,
    },
    /// The finished job, after all of its output. Nothing follows.
    End(Job),
}

/// Why following stopped early.
enum Stop {
    /// The receiver went away.
    Gone,
    /// The store failed or the job disappeared (pruned).
    Failed,
}

/// Follows `job` (as just read for `tenant`) and reports to the returned channel. `events` must
/// come from subscribing *before* `job` was read, so that nothing in between is missed. Output
/// with `seq <= after_seq` is skipped (a client resuming a stream). Following ends with
/// [`Followed::End`], or silently when the store fails or the receiver is dropped: at once,
/// even while the job is silent, so a client that went away costs nothing more.
pub fn follow(
    queue: Queue,
    tenant: String,
    job: Job,
    events: broadcast::Receiver<JobEvent>,
    after_seq: i64,
) -> mpsc::Receiver<Followed> {
    let (tx, rx) = mpsc::channel(64);
    let active = Active::new(queue.followers());
    let follower = Follower {
        queue,
        tenant,
        id: job.id,
        last_seq: after_seq,
        tx,
    };
    actix_rt::spawn(async move {
        let _ = follower.follow(job, events).await;
        drop(active);
    });
    rx
}

struct Follower {
    queue: Queue,
    tenant: String,
    id: Uuid,
    /// The last output sequence number reported.
    last_seq: i64,
    tx: mpsc::Sender<Followed>,
}

impl Follower {
    async fn send(&self, item: Followed) -> Result<(), Stop> {
        self.tx.send(item).await.map_err(|_| Stop::Gone)
    }

    async fn send_output(&mut self, seq: i64, stream: Stream, data: Bytes) -> Result<(), Stop> {
        if seq <= self.last_seq {
            return Ok(());
        }
        self.send(Followed::Output { seq, stream, data }).await?;
        self.last_seq = seq;
        Ok(())
    }

    /// Reports stored output after `last_seq`.
    async fn replay(&mut self) -> Result<(), Stop> {
        let chunks = self
            .queue
            .store()
            .output(self.id, self.last_seq)
            .await
            .map_err(|_| Stop::Failed)?;
        for chunk in chunks {
            self.send_output(chunk.seq, chunk.stream, Bytes::from(chunk.data))
                .await?;
        }
        Ok(())
    }

    async fn reload(&self) -> Result<Job, Stop> {
        self.queue
            .store()
            .job(Some(&self.tenant), self.id)
            .await
            .ok()
            .flatten()
            .ok_or(Stop::Failed)
    }

    async fn follow(
        mut self,
        job: Job,
        mut events: broadcast::Receiver<JobEvent>,
    ) -> Result<(), Stop> {
        let mut last_state: JobState = job.state;
        self.send(Followed::State(job.clone())).await?;
        self.replay().await?;
        if job.state.is_terminal() {
            return self.finish().await;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.tick().await;
        loop {
            let recheck = tokio::select! {
                event = events.recv() => match event {
                    Ok(JobEvent::Output { seq, stream, data }) => {
                        if seq > self.last_seq + 1 {
                            // A gap: chunks produced before the subscription; they reach the
                            // store within a flush interval.
                            self.replay().await?;
                        }
                        self.send_output(seq, stream, data).await?;
                        false
                    }
                    Ok(JobEvent::State(_) | JobEvent::Finished(_) | JobEvent::Changed) => true,
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => {
                        events = self.queue.events().subscribe(self.id);
                        true
                    }
                },
                _ = tick.tick() => true,
                // The receiver went away (its client disconnected): stop reading the store.
                () = self.tx.closed() => return Err(Stop::Gone),
            };
            if !recheck {
                continue;
            }
            let job = self.reload().await?;
            if job.state.is_terminal() {
                return self.finish().await;
            }
            self.replay().await?;
            if job.state != last_state {
                last_state = job.state;
                self.send(Followed::State(job)).await?;
            }
        }
    }

    /// Reports the rest of the output and the finished job.
    async fn finish(&mut self) -> Result<(), Stop> {
        self.replay().await?;
        let job = self.reload().await?;
        self.send(Followed::End(job)).await
    }
}
