//! Cross-node signals over PostgreSQL `LISTEN/NOTIFY`.
//!
//! One task per node listens on the store's channels: "jobs ready" wakes the dispatcher, "job
//! changed" wakes local waiters and, when the job runs here with a cancel requested, kills it.
//! SQLite has one node, so it needs none of this.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{JobEvent, Queue};
use crate::store::postgres::{CHANNEL_DONE, CHANNEL_JOBS};

/// Listens until `shutdown`; reconnects with a pause when the connection drops.
pub async fn run(queue: Queue, pool: sqlx::PgPool, shutdown: CancellationToken) {
    loop {
        if let Err(e) = listen_once(&queue, &pool, &shutdown).await {
            tracing::warn!(error = %e, "notification listener failed; reconnecting");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Anything may have happened while disconnected.
        queue.wake();
    }
}

async fn listen_once(
    queue: &Queue,
    pool: &sqlx::PgPool,
    shutdown: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([CHANNEL_JOBS, CHANNEL_DONE]).await?;
    loop {
        let notification = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            n = listener.recv() => n?,
        };
        if notification.channel() == CHANNEL_JOBS {
            queue.wake();
            continue;
        }
        let Ok(id) = Uuid::parse_str(notification.payload()) else {
            continue;
        };
        queue.events().publish(id, JobEvent::Changed);
        if queue.running().contains(id) {
            if let Ok(Some(job)) = queue.store().job(None, id).await {
                if job.cancel_requested {
                    queue.running().cancel(id);
                }
            }
        }
    }
}
