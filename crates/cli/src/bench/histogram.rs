//! A lock-free latency histogram (microseconds, ~1.6 % resolution).

use super::*;

// ---------------------------------------------------------------------------------------------
// Lock-free latency histogram (microseconds, ~1.6 % resolution).

pub(super) const HIST_BUCKETS: usize = 128 + 57 * 64;

pub(super) struct Histogram {
    pub(super) buckets: Box<[AtomicU64]>,
    pub(super) count: AtomicU64,
    pub(super) max: AtomicU64,
}

impl Histogram {
    pub(super) fn new() -> Self {
        Histogram {
            buckets: (0..HIST_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    pub(super) fn index(v: u64) -> usize {
        if v < 128 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as usize; // 7..=63
        let m = (v >> (e - 6)) as usize; // 64..=127
        128 + (e - 7) * 64 + (m - 64)
    }

    /// Highest value that falls into bucket `i`.
    pub(super) fn high(i: usize) -> u64 {
        if i < 128 {
            return i as u64;
        }
        let e = (i - 128) / 64 + 7;
        let m = ((i - 128) % 64 + 64) as u64;
        ((m + 1) << (e - 6)) - 1
    }

    /// Records a batch (one count update, one max update).
    pub(super) fn record_all(&self, values: &[u32]) {
        let mut max = 0;
        for &v in values {
            self.buckets[Self::index(u64::from(v))].fetch_add(1, Relaxed);
            max = max.max(v);
        }
        self.count.fetch_add(values.len() as u64, Relaxed);
        self.max.fetch_max(u64::from(max), Relaxed);
    }

    pub(super) fn record(&self, v: u64) {
        self.buckets[Self::index(v)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    pub(super) fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The q-quantile in microseconds (upper bound of its bucket, at most the maximum).
    pub(super) fn quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.buckets.iter().map(|b| b.load(Relaxed)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                return Some(Self::high(i).min(self.max.load(Relaxed)));
            }
        }
        Some(self.max.load(Relaxed))
    }

    pub(super) fn summary(&self) -> Latency {
        Latency {
            p50_ms: self.quantile(0.50).map(us_to_ms),
            p90_ms: self.quantile(0.90).map(us_to_ms),
            p99_ms: self.quantile(0.99).map(us_to_ms),
            p999_ms: self.quantile(0.999).map(us_to_ms),
            max_ms: (self.count() > 0).then(|| us_to_ms(self.max.load(Relaxed))),
        }
    }
}

pub(super) fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Latency {
    pub(super) p50_ms: Option<f64>,
    pub(super) p90_ms: Option<f64>,
    pub(super) p99_ms: Option<f64>,
    /// The tail beyond p99 (where a latency goal is set at p99, what its worst 0.1 % look like).
    pub(super) p999_ms: Option<f64>,
    pub(super) max_ms: Option<f64>,
}
