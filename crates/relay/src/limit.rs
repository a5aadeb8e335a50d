//! Keyed token buckets: each key (a relay key, a source address, a push token) may spend
//! `burst` requests at once and earns `per_minute` per minute back. The table is bounded: when
//! it is full, buckets that are full again (idle keys) are dropped; if none is, the bucket used
//! least recently is. A flood of distinct keys thus costs the flooder's own limits, never locks
//! everybody else out (callers' addresses are keyed per IPv6 /64, see `http.rs`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A rate: `per_minute` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per minute, sustained.
    pub per_minute: u32,
    /// Requests at once.
    pub burst: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// See the module documentation.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter tracking at most `max_keys` keys.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        KeyedLimiter { rate, max_keys: max_keys.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    fn per_sec(&self) -> f64 {
        f64::from(self.rate.per_minute) / 60.0
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let earned = now.saturating_duration_since(b.at).as_secs_f64() * self.per_sec();
        b.tokens = (b.tokens + earned).min(f64::from(self.rate.burst));
        b.at = now;
    }

    /// Spends one request of `key`; `Err(wait)` if it has none left (wait: until it has one).
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut m = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(key) && m.len() >= self.max_keys {
            let burst = f64::from(self.rate.burst);
            let snapshot: Vec<K> = m.keys().cloned().collect();
            for k in snapshot {
                if let Some(b) = m.get_mut(&k) {
                    self.refill(b, now);
                    if b.tokens >= burst {
                        m.remove(&k);
                    }
                }
            }
            if m.len() >= self.max_keys
                && let Some(oldest) = m.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        let b = m.entry(key.clone()).or_insert(Bucket { tokens: f64::from(self.rate.burst), at: now });
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if self.per_sec() <= 0.0 {
            Err(Duration::from_secs(60))
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec()))
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_sustained_rate() {
        let l = KeyedLimiter::new(Rate { per_minute: 60, burst: 3 }, 10);
        for _ in 0..3 {
            l.check(&"a").unwrap();
        }
        let wait = l.check(&"a").unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        l.check(&"b").expect("keys are independent");
        tokio::time::advance(Duration::from_secs(1)).await;
        l.check(&"a").expect("one earned per second");
        assert!(l.check(&"a").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_never_locks_new_callers_out() {
        let l = KeyedLimiter::new(Rate { per_minute: 60, burst: 1 }, 2);
        l.check(&1).unwrap();
        l.check(&2).unwrap();
        l.check(&3).expect("full of busy keys: the least recently used one makes room");
        assert_eq!(l.len(), 2, "the table never grows past its bound");
        assert!(l.check(&3).is_err(), "the new key's own limit holds");
        tokio::time::advance(Duration::from_secs(2)).await;
        l.check(&4).expect("idle keys were dropped");
        assert!(l.len() <= 2);
    }
}
