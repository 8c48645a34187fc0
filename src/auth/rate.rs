//! The per-key request rate (`auth.rate_limit_per_minute`): a token bucket per key id, holding
//! up to a minute's worth of requests and refilled continuously. Kept in memory, per node: with
//! several nodes a key may make that many requests on each.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets idle this long are full again and are forgotten.
const IDLE: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-key token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
    last_sweep: Mutex<Instant>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per key; 0 allows any number.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// The configured rate (0: unlimited).
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Takes one request from `key`'s bucket; `Err(seconds)` to wait when it is empty.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().expect("rate buckets lock");
        self.sweep(&mut buckets, now);
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            // Whole seconds until one token is back, at least 1 (Retry-After is in seconds).
            Err(((1.0 - bucket.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }

    /// Forgets idle buckets now and then, so that the map stays as large as the active keys.
    fn sweep(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let mut last = self.last_sweep.lock().expect("rate sweep lock");
        if now.saturating_duration_since(*last) < IDLE {
            return;
        }
        *last = now;
        buckets.retain(|_, b| now.saturating_duration_since(b.at) < IDLE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_rate_then_waits_and_recovers() {
        let limiter = RateLimiter::new(3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at("a", start), Ok(()));
        }
        // One token comes back every 20 s.
        assert_eq!(limiter.check_at("a", start), Err(20));
        // Another key has its own bucket.
        assert_eq!(limiter.check_at("b", start), Ok(()));
        assert_eq!(
            limiter.check_at("a", start + Duration::from_secs(20)),
            Ok(())
        );
        assert!(
            limiter
                .check_at("a", start + Duration::from_secs(21))
                .is_err()
        );
    }

    #[test]
    fn zero_is_unlimited() {
        let limiter = RateLimiter::new(0);
        for _ in 0..10_000 {
            assert_eq!(limiter.check("a"), Ok(()));
        }
    }
}
