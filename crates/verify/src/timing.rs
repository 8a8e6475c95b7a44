//! Latency statistics of repeated runs.

use std::time::Instant;

use crate::VerifyError;

/// Latencies in milliseconds, summarized.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Stats {
    pub runs: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Runs per second at the mean latency.
    pub rps: f64,
}

impl Stats {
    pub fn from_ms(samples: &[f64]) -> Stats {
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len().max(1);
        // Nearest-rank percentile.
        let pct = |p: f64| s.get(((p * n as f64).ceil() as usize).clamp(1, n) - 1).copied().unwrap_or(f64::NAN);
        let mean = s.iter().sum::<f64>() / n as f64;
        Stats { runs: s.len(), mean_ms: mean, p50_ms: pct(0.5), p99_ms: pct(0.99), rps: 1e3 / mean }
    }
}

/// Times `f` once, in milliseconds.
pub fn time_ms(f: &mut dyn FnMut() -> Result<(), VerifyError>) -> Result<f64, VerifyError> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// Measures several workloads side by side: `warmup` untimed rounds, then
/// `runs` rounds, each round running every workload once in turn, so slow
/// drifts of a shared machine hit all of them alike. `tick` is called after
/// every timed round (progress).
pub fn interleaved(
    workloads: &mut [&mut dyn FnMut() -> Result<(), VerifyError>],
    warmup: usize,
    runs: usize,
    tick: &mut dyn FnMut(),
) -> Result<Vec<Stats>, VerifyError> {
    for _ in 0..warmup {
        for w in workloads.iter_mut() {
            w()?;
        }
    }
    let mut samples = vec![Vec::with_capacity(runs); workloads.len()];
    for _ in 0..runs {
        for (i, w) in workloads.iter_mut().enumerate() {
            samples[i].push(time_ms(*w)?);
        }
        tick();
    }
    Ok(samples.iter().map(|s| Stats::from_ms(s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Stats::from_ms(&(1..=100).map(|x| x as f64).collect::<Vec<_>>());
        assert_eq!((s.p50_ms, s.p99_ms, s.runs), (50.0, 99.0, 100));
        assert!((s.mean_ms - 50.5).abs() < 1e-12);
        let one = Stats::from_ms(&[3.0]);
        assert_eq!((one.p50_ms, one.p99_ms), (3.0, 3.0));
    }
}
