//! Disk usage of sandboxes, for their disk quotas. Plain directories on a shared file system
//! have no kernel quota (that needs project quotas, which the driver cannot assume), so usage is
//! measured by walking the directory: after each command (in the background), when a quota
//! check needs it, and periodically while a command runs (the watchdog in `mod.rs`). File
//! writes by the server adjust the figure by the exact change in allocated blocks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One sandbox's figure; the async lock makes readers wait for a measurement in progress.
type Slot = Arc<tokio::sync::Mutex<Option<u64>>>;

/// Bytes allocated to each sandbox's files, as last measured or adjusted.
#[derive(Debug, Default)]
pub struct UsageCache {
    slots: Mutex<HashMap<String, Slot>>,
}

impl UsageCache {
    fn slot(&self, id: &str) -> Slot {
        self.slots
            .lock()
            .expect("usage lock")
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// The known figure, measuring first if there is none.
    pub async fn current(&self, id: &str, dir: &Path) -> u64 {
        let slot = self.slot(id);
        let mut value = slot.lock().await;
        match *value {
            Some(v) => v,
            None => {
                let v = measure(dir.to_path_buf()).await.0;
                *value = Some(v);
                v
            }
        }
    }

    /// Measures now and keeps the figure.
    pub async fn refresh(&self, id: &str, dir: &Path) -> u64 {
        let slot = self.slot(id);
        let mut value = slot.lock().await;
        let v = measure(dir.to_path_buf()).await.0;
        *value = Some(v);
        v
    }

    /// Measures in the background; [`UsageCache::current`] waits for the result. The slot is
    /// locked before this returns, so no later reader can see the figure from before.
    pub fn refresh_soon(&self, id: &str, dir: &Path) {
        let slot = self.slot(id);
        let dir = dir.to_path_buf();
        match slot.clone().try_lock_owned() {
            Ok(mut value) => {
                tokio::spawn(async move {
                    *value = Some(measure(dir).await.0);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut value = slot.lock().await;
                    *value = Some(measure(dir).await.0);
                });
            }
        }
    }

    /// The figure if known, without measuring.
    pub fn known(&self, id: &str) -> Option<u64> {
        self.slot(id).try_lock().ok().and_then(|v| *v)
    }

    /// Adds a change the server itself made.
    pub async fn adjust(&self, id: &str, delta: i64) {
        let slot = self.slot(id);
        let mut value = slot.lock().await;
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
        cache.adjust("a", -4096).await;
        assert_eq!(cache.known("a"), Some(after - 4096));
        assert!(cache.refresh("a", dir.path()).await >= 64 * 1024);
    }
}
