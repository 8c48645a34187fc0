//! Copies SQLite's write-ahead log back into the database file beside the writer, not inside it.
//!
//! In WAL mode every commit appends pages to the `-wal` file, and a checkpoint copies them into
//! the database file (and syncs both) so that the log can start over. SQLite's default is an
//! automatic checkpoint run by the committing connection whenever the log passes 1,000 pages:
//! the store's one writer then stops writing while it copies and syncs. Measured with 50
//! concurrent callers (`cargo bench --bench submit -- enqueue 10000`, three interleaved rounds
//! on one 2-vCPU machine): single submissions ran at 2.0-2.2k/s with the writer's own
//! checkpoints (1.8-2.2k/s over six rounds), 2.4-3.1k/s with this task, and 3.8-4.3k/s with no
//! checkpoint at all; batched submissions at 12.5-14.6k/s with a p99 of 19-25 ms, against
//! 16.6-20.1k/s and 4.4-5.8 ms (BENCHMARKS.md, "SQLite's checkpoints leave the writer").
//!
//! So the writer checkpoints only as a backstop ([`WRITER_BACKSTOP_PAGES`], when this task falls
//! far behind), and this task runs a `PASSIVE` checkpoint on a connection of its own every
//! [`EVERY`] while the log changes. A passive checkpoint takes neither the writer's lock nor
//! waits for readers: it copies the frames no reader still needs and leaves the rest for the
//! next round, and the writer restarts the log once every frame is copied. (Its syncs share the
//! disk with the writer's appends; that is why the single-submission figure above stays below
//! the one with no checkpoint at all.) Durability is unchanged: a commit is as
//! durable as before when it returns (the log holds it); the checkpoint only moves it.

use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// How often the background checkpoint looks at the log. A round in which the log has not been
/// written since the last checkpoint costs one `stat` of the `-wal` file, so an idle server does
/// no database work for it. (Measured as above: every 1 s, single submissions' p99 rose to
/// 92-122 ms behind the larger checkpoints; every 20 ms was no better than 50.)
pub const EVERY: Duration = Duration::from_millis(50);

/// The log size (pages) at which the writer checkpoints by itself: ten times SQLite's default,
/// reached only when this task cannot keep up (or cannot connect).
pub const WRITER_BACKSTOP_PAGES: &str = "10000";

/// The running background checkpoint; stops when the last clone of its store is dropped.
#[derive(Debug)]
pub struct Checkpointer {
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database `options` open (a writable connection: a checkpoint
    /// writes the database file).
    pub fn start(options: SqliteConnectOptions) -> Checkpointer {
        let mut wal = options.get_filename().as_os_str().to_owned();
        wal.push("-wal");
        Checkpointer {
            task: tokio::spawn(run(options, wal.into())),
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// When the log file was last written (`None`: there is no log file, or it cannot be read).
fn written_at(wal: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(wal).and_then(|m| m.modified()).ok()
}

async fn run(options: SqliteConnectOptions, wal: std::path::PathBuf) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = None;
    // Errors are reported when they start, not every round: a database that stays unreachable
    // would otherwise log twenty lines a second.
    let mut failing = false;
    // The log's modification time when the last complete checkpoint started: it copied
    // everything written before, so the next one is needed only once the log changes again.
    let mut checkpointed = None;
    loop {
        tick.tick().await;
        let written = written_at(&wal);
        if written.is_none() || written == checkpointed {
            continue;
        }
        let c = match &mut conn {
            Some(c) => c,
            slot @ None => match options.connect().await {
                Ok(c) => slot.insert(c),
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "cannot open the WAL checkpoint connection; the writer checkpoints by itself meanwhile");
                    }
                    continue;
                }
            },
        };
        // One row: whether it was blocked, the log's frames, and how many of them are copied.
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *c)
            .await
        {
            Ok((_, frames, copied)) => {
                // Frames a reader still needed are left; the next round tries them again.
                if copied >= frames {
                    checkpointed = written;
                }
                if std::mem::replace(&mut failing, false) {
                    tracing::info!("WAL checkpoints run again");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; the writer checkpoints by itself meanwhile");
                }
                // A fresh connection next round, in case this one is broken.
                conn = None;
            }
        }
    }
}
