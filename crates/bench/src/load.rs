//! The closed-loop load generator shared by the Ratchet and etcd benchmarks: `clients`
//! workers, each with one request outstanding at a time, for a duration (after a warm-up
//! whose operations are not counted) or until a total count is done. Every operation's
//! latency is recorded (microseconds) for exact percentiles.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a run lasts.
#[derive(Clone, Copy)]
pub enum Limit {
    /// Run for `warmup + measure`; count only what completes within `measure`.
    Time { warmup: Duration, measure: Duration },
    /// Run until `n` operations were started (the first is numbered 0); count them all.
    Count(u64),
}

#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    pub ops: u64,
    pub errors: u64,
    pub secs: f64,
    /// Sorted, microseconds.
    pub latencies_us: Vec<u32>,
    pub first_error: Option<String>,
}

impl LoadResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }

    /// The q-quantile latency (0 < q < 1), milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((self.latencies_us.len() as f64 * q).ceil() as usize).clamp(1, self.latencies_us.len());
        f64::from(self.latencies_us[rank - 1]) / 1000.0
    }

    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "ops": self.ops,
            "errors": self.errors,
            "secs": round(self.secs, 3),
            "ops_per_sec": round(self.ops_per_sec(), 1),
            "p50_ms": round(self.quantile_ms(0.50), 3),
            "p99_ms": round(self.quantile_ms(0.99), 3),
        })
    }
}

pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Runs `op(worker, sequence)` from `clients` workers. `sequence` is unique across workers
/// (0, 1, 2, ...), so it can name new keys.
pub async fn run<F, Fut>(clients: usize, limit: Limit, op: F) -> LoadResult
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (count_from, stop_at) = match limit {
        Limit::Time { warmup, measure } => (started + warmup, Some(started + warmup + measure)),
        Limit::Count(_) => (started, None),
    };
    let total = match limit {
        Limit::Count(n) => n,
        Limit::Time { .. } => u64::MAX,
    };
    let mut workers = Vec::new();
    for worker in 0..clients {
        let (op, next) = (op.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = LoadResult::default();
            loop {
                let sequence = next.fetch_add(1, Ordering::Relaxed);
                if sequence >= total || stop_at.is_some_and(|stop| Instant::now() >= stop) {
                    break;
                }
                let begun = Instant::now();
                let outcome = op(worker, sequence).await;
                let done = Instant::now();
                if begun < count_from || stop_at.is_some_and(|stop| done > stop) {
                    continue;
                }
                match outcome {
                    Ok(()) => {
                        mine.ops += 1;
                        mine.latencies_us.push((done - begun).as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    Err(error) => {
                        mine.errors += 1;
                        mine.first_error.get_or_insert_with(|| format!("{error:#}"));
                    }
                }
            }
            mine
        }));
    }
    let mut result = LoadResult::default();
    for worker in workers {
        let mine = worker.await.expect("a load worker panicked");
        result.ops += mine.ops;
        result.errors += mine.errors;
        result.latencies_us.extend(mine.latencies_us);
        if result.first_error.is_none() {
            result.first_error = mine.first_error;
        }
    }
    result.secs = match stop_at {
        Some(stop) => (stop - count_from).as_secs_f64(),
        None => started.elapsed().as_secs_f64(),
    };
    result.latencies_us.sort_unstable();
    result
}

/// A well-mixed 64-bit hash (splitmix64): random-looking choices with no RNG state.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
