//! Disk usage of sandboxes, for their disk quotas. Plain directories on a shared file system
//! have no kernel quota (that needs project quotas, which the driver cannot assume), so usage is
//! measured by walking the directory: after each command (in the background), when a quota
//! check needs it, and periodically while a command runs (the watchdog in `mod.rs`). File
//! writes by the server adjust the figure by the exact change in allocated blocks. A file
//! write's quota check waits for a measurement in progress; a command's start does not (it
//! takes the last figure; the watchdog covers the rest), so a large sandbox's walk never
//! delays the next command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One sandbox's figure, and a lock held by whoever is measuring it.
#[derive(Debug, Default)]
struct Slot {
    value: Mutex<Option<u64>>,
    walk: Arc<tokio::sync::Mutex<()>>,
    /// A measurement was asked for since the last one started. Requests made while a walk runs
    /// coalesce into one more walk, so a fast series of commands never queues a walk each.
    pending: AtomicBool,
}

impl Slot {
    fn get(&self) -> Option<u64> {
        *self.value.lock().expect("usage lock")
    }

    fn set(&self, v: u64) {
        *self.value.lock().expect("usage lock") = Some(v);
    }
}

/// Bytes allocated to each sandbox's files, as last measured or adjusted.
#[derive(Debug, Default)]
pub struct UsageCache {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl UsageCache {
    fn slot(&self, id: &str) -> Arc<Slot> {
        self.slots
            .lock()
            .expect("usage lock")
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// The figure, waiting for a measurement in progress and making one if a change was
    /// reported since (exact enough for a quota check).
    pub async fn current(&self, id: &str, dir: &Path) -> u64 {
        let slot = self.slot(id);
        let _walk = slot.walk.lock().await;
        match slot.get() {
            Some(v) if !slot.pending.swap(false, Ordering::SeqCst) => v,
            _ => {
                let v = measure(dir.to_path_buf()).await.0;
                slot.set(v);
                v
            }
        }
    }

    /// The last figure without waiting for a measurement in progress (measuring only when there
    /// is none yet). Commands use it: their quota is also watched while they run.
    pub async fn latest(&self, id: &str, dir: &Path) -> u64 {
        match self.slot(id).get() {
            Some(v) => v,
            None => self.current(id, dir).await,
        }
    }

    /// Measures now and keeps the figure.
    pub async fn refresh(&self, id: &str, dir: &Path) -> u64 {
        let slot = self.slot(id);
        let _walk = slot.walk.lock().await;
        let v = measure(dir.to_path_buf()).await.0;
        slot.set(v);
        v
    }

    /// Measures in the background. The walk lock is taken before this returns when it is
    /// free, so a following [`UsageCache::current`] waits for the new figure. While a walk
    /// runs, further requests only mark the figure stale: the running walker measures once
    /// more when it is done (after a pause proportional to how long a walk takes, so that a
    /// large sandbox is not walked back to back).
    pub fn refresh_soon(&self, id: &str, dir: &Path) {
        let slot = self.slot(id);
        slot.pending.store(true, Ordering::SeqCst);
        let Ok(walk) = slot.walk.clone().try_lock_owned() else {
            return;
        };
        let dir = dir.to_path_buf();
        tokio::spawn(async move {
            let mut walk = Some(walk);
            while let Some(held) = walk.take() {
                let mut took = Duration::ZERO;
                while slot.pending.swap(false, Ordering::SeqCst) {
                    if !took.is_zero() {
                        tokio::time::sleep((took * 4).min(Duration::from_secs(2))).await;
                    }
                    let (v, t) = measure(dir.clone()).await;
                    slot.set(v);
                    took = t;
                }
                drop(held);
                // A request that came between the last check and the unlock found the lock
                // taken and left it to us: take it again unless someone else has.
                if slot.pending.load(Ordering::SeqCst) {
                    walk = slot.walk.clone().try_lock_owned().ok();
                }
            }
        });
    }

    /// The figure if known, without measuring.
    pub fn known(&self, id: &str) -> Option<u64> {
        self.slot(id).get()
    }

    /// Every figure known, by sandbox id.
    pub fn all_known(&self) -> Vec<(String, u64)> {
        self.slots
            .lock()
            .expect("usage lock")
            .iter()
            .filter_map(|(id, slot)| slot.get().map(|v| (id.clone(), v)))
            .collect()
    }

    /// Adds a change the server itself made.
    pub fn adjust(&self, id: &str, delta: i64) {
        let slot = self.slot(id);
        let mut value = slot.value.lock().expect("usage lock");
        if let Some(v) = value.as_mut() {
            *v = v.saturating_add_signed(delta);
        }
    }

    pub fn forget(&self, id: &str) {
        self.slots.lock().expect("usage lock").remove(id);
    }
}

/// Walks `dir` off the async threads; returns the bytes and how long the walk took.
pub async fn measure(dir: PathBuf) -> (u64, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let bytes = super::disk_usage(&dir);
        (bytes, started.elapsed())
    })
    .await
    .unwrap_or((0, Duration::ZERO))
}

/// Kills the command (through `stop`) once the sandbox uses more than `quota` bytes. Walks the
/// directory every quarter second, less often when a walk is slow (a walk never takes more than
/// a tenth of the time). A command can overshoot the quota by what it writes between two walks.
pub async fn watch_disk(
    dir: PathBuf,
    quota: u64,
    stop: tokio_util::sync::CancellationToken,
    over: Arc<std::sync::atomic::AtomicBool>,
) {
    const MIN_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);
    let mut pause = MIN_PAUSE;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let (bytes, took) = measure(dir.clone()).await;
        if bytes > quota {
            over.store(true, std::sync::atomic::Ordering::SeqCst);
            stop.cancel();
            return;
        }
        pause = (took * 10).max(MIN_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn measures_adjusts_and_refreshes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = UsageCache::default();
        assert_eq!(cache.known("a"), None);
        let empty = cache.current("a", dir.path()).await;
        std::fs::write(dir.path().join("f"), vec![1u8; 64 * 1024]).unwrap();
        // The cached figure stays until refreshed.
        assert_eq!(cache.current("a", dir.path()).await, empty);
        cache.refresh_soon("a", dir.path());
        let after = cache.current("a", dir.path()).await;
        assert!(after >= empty + 64 * 1024, "{after}");
        cache.adjust("a", -4096);
        assert_eq!(cache.known("a"), Some(after - 4096));
        assert!(cache.refresh("a", dir.path()).await >= 64 * 1024);
    }
}
