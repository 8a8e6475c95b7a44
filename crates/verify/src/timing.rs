//! Latency statistics of repeated runs.

use std::time::Instant;

use crate::VerifyError;

/// Latencies in milliseconds, summarized.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub runs: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Runs per second at the mean latency.
    pub rps: f64,
    /// The latencies, in the order they were measured (round by round).
    #[serde(skip)]
    pub samples_ms: Vec<f64>,
}

impl Stats {
    pub fn from_ms(samples: &[f64]) -> Stats {
        let s = sorted(samples.to_vec());
        let n = s.len().max(1);
        let mean = s.iter().sum::<f64>() / n as f64;
        let (p50, p95, p99) = (nearest_rank(&s, 0.5), nearest_rank(&s, 0.95), nearest_rank(&s, 0.99));
        Stats {
            runs: s.len(),
            mean_ms: mean,
            p50_ms: p50,
            p95_ms: p95,
            p99_ms: p99,
            rps: 1e3 / mean,
            samples_ms: samples.to_vec(),
        }
    }
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// The nearest-rank `p` percentile of sorted samples (NaN when empty).
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len().max(1);
    sorted.get(((p * n as f64).ceil() as usize).clamp(1, n) - 1).copied().unwrap_or(f64::NAN)
}

/// A 95% interval for the speedup `base.p50 / other.p50` of two workloads
/// timed side by side by [`interleaved`]: a bootstrap over the rounds
/// (2000 resamples, fixed seed, so the same samples give the same
/// interval), each resample keeping a round's two latencies together so the
/// drifts of a shared machine stay paired. `None` with fewer than 2 rounds
/// or unequal round counts.
pub fn speedup_interval(base: &Stats, other: &Stats) -> Option<(f64, f64)> {
    let (b, o) = (&base.samples_ms, &other.samples_ms);
    let n = b.len();
    if n < 2 || o.len() != n {
        return None;
    }
    Some(bootstrap_95(n, |idx| {
        let p50 = |x: &[f64]| nearest_rank(&sorted(idx.iter().map(|&i| x[i]).collect()), 0.5);
        p50(b) / p50(o)
    }))
}

/// A 95% bootstrap interval of `stat` over `n` rounds: 2000 resamples of
/// the round indices (with replacement, fixed seed, so the same samples
/// give the same interval), `stat` of each, their 2.5th and 97.5th
/// percentiles.
fn bootstrap_95(n: usize, mut stat: impl FnMut(&[usize]) -> f64) -> (f64, f64) {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let stats = sorted(
        (0..2000)
            .map(|_| {
                let idx: Vec<usize> = (0..n).map(|_| next()).collect();
                stat(&idx)
            })
            .collect(),
    );
    (nearest_rank(&stats, 0.025), nearest_rank(&stats, 0.975))
}

/// The speedup of `other` over `base` in each round they were timed side
/// by side by [`interleaved`]: base's latency over other's, one ratio per
/// round, so a drift of a shared machine that slows a whole round cancels.
/// Ratios of several calls of [`interleaved`] pool by concatenation. Empty
/// when the round counts differ.
pub fn round_ratios(base: &Stats, other: &Stats) -> Vec<f64> {
    if base.samples_ms.len() != other.samples_ms.len() {
        return vec![];
    }
    base.samples_ms.iter().zip(&other.samples_ms).map(|(b, o)| b / o).collect()
}

/// The median of per-round speedups ([`round_ratios`]) with a 95% interval
/// for it: a bootstrap over the rounds (2000 resamples, fixed seed). `None`
/// with fewer than 2 rounds.
pub fn ratio_median_interval(ratios: &[f64]) -> Option<(f64, (f64, f64))> {
    let n = ratios.len();
    if n < 2 {
        return None;
    }
    let median = nearest_rank(&sorted(ratios.to_vec()), 0.5);
    Some((median, bootstrap_95(n, |idx| nearest_rank(&sorted(idx.iter().map(|&i| ratios[i]).collect()), 0.5))))
}

/// Times `f` once, in milliseconds.
pub fn time_ms(f: &mut dyn FnMut() -> Result<(), VerifyError>) -> Result<f64, VerifyError> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// Measures several workloads side by side: `warmup` untimed rounds, then
/// `runs` rounds, each round running every workload once in turn, so slow
/// drifts of a shared machine hit all of them alike. Round `r` starts at
/// workload `r % n` (the order rotates), so no workload is always the one
/// run first, after the others have filled the caches and heated the
/// cores. The rounds are numbered from `first` (a caller timing in several
/// calls continues the rotation). `tick` is called after every timed round
/// (progress).
pub fn interleaved(
    workloads: &mut [&mut dyn FnMut() -> Result<(), VerifyError>],
    warmup: usize,
    runs: usize,
    first: usize,
    tick: &mut dyn FnMut(),
) -> Result<Vec<Stats>, VerifyError> {
    for _ in 0..warmup {
        for w in workloads.iter_mut() {
            w()?;
        }
    }
    let mut samples = vec![Vec::with_capacity(runs); workloads.len()];
    let n = workloads.len();
    for r in first..first + runs {
        for k in 0..n {
            let i = (r + k) % n;
            samples[i].push(time_ms(&mut *workloads[i])?);
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

    #[test]
    fn speedup_interval_brackets_the_p50_ratio_and_narrows_with_steady_timings() {
        // Twice as fast in every round: the interval is exactly 2.
        let base = Stats::from_ms(&[10.0, 12.0, 11.0, 10.5, 13.0, 10.2]);
        let half = Stats::from_ms(&base.samples_ms.iter().map(|x| x / 2.0).collect::<Vec<_>>());
        assert_eq!(speedup_interval(&base, &half), Some((2.0, 2.0)));
        // Noisy: the interval contains the measured p50 ratio and is wider
        // than for steady timings; the same samples give the same interval.
        let noisy = Stats::from_ms(&[5.0, 7.5, 5.2, 6.9, 5.1, 6.5]);
        let (lo, hi) = speedup_interval(&base, &noisy).unwrap();
        let r = base.p50_ms / noisy.p50_ms;
        assert!(lo <= r && r <= hi && hi - lo > 0.1, "{lo} {r} {hi}");
        assert_eq!(speedup_interval(&base, &noisy), Some((lo, hi)));
        // Not enough rounds, or unpaired ones.
        assert_eq!(speedup_interval(&Stats::from_ms(&[1.0]), &Stats::from_ms(&[1.0])), None);
        assert_eq!(speedup_interval(&base, &Stats::from_ms(&[1.0, 2.0])), None);
    }

    #[test]
    fn per_round_ratios_give_the_median_speedup_and_its_interval() {
        // A machine slowing down and speeding up round by round (x1 ..
        // x1.5): the other workload is 10% faster in every round, and every
        // ratio says 1.1.
        let drift = [1.0, 1.5, 1.1, 1.4, 1.2, 1.3, 1.05, 1.45];
        let base = Stats::from_ms(&drift.iter().map(|d| 10.0 * d).collect::<Vec<_>>());
        let other = Stats::from_ms(&drift.iter().map(|d| 10.0 / 1.1 * d).collect::<Vec<_>>());
        let ratios = round_ratios(&base, &other);
        assert_eq!(ratios.len(), 8);
        let (m, (lo, hi)) = ratio_median_interval(&ratios).unwrap();
        assert!((m - 1.1).abs() < 1e-9 && (lo - 1.1).abs() < 1e-9 && (hi - 1.1).abs() < 1e-9, "{m} {lo} {hi}");
        // Ratios that spread: the interval holds the median and spreads too;
        // the same ratios give the same interval.
        let spread = [0.9, 1.0, 1.1, 1.2, 1.3, 0.95, 1.05, 1.15, 1.25, 1.35];
        let (m, (lo, hi)) = ratio_median_interval(&spread).unwrap();
        assert!(m == 1.1 && lo < m && m < hi, "{lo} {m} {hi}");
        assert_eq!(ratio_median_interval(&spread), Some((m, (lo, hi))));
        // Rounds of two runs pool: more rounds that agree narrow it.
        let pooled: Vec<f64> = spread.iter().chain(&[1.1; 10]).copied().collect();
        let (_, (plo, phi)) = ratio_median_interval(&pooled).unwrap();
        assert!(plo >= lo && phi <= hi && phi - plo < hi - lo, "{plo} {phi} against {lo} {hi}");
        assert_eq!(ratio_median_interval(&[1.0]), None);
        assert!(round_ratios(&base, &Stats::from_ms(&[1.0])).is_empty());
    }

    #[test]
    fn the_order_rotates_round_by_round() {
        let order = std::cell::RefCell::new(vec![]);
        let mut w: Vec<Box<dyn FnMut() -> Result<(), VerifyError>>> = (0..3)
            .map(|i| {
                let order = &order;
                Box::new(move || {
                    order.borrow_mut().push(i);
                    Ok(())
                }) as Box<dyn FnMut() -> Result<(), VerifyError>>
            })
            .collect();
        let mut refs: Vec<&mut dyn FnMut() -> Result<(), VerifyError>> =
            w.iter_mut().map(|b| b.as_mut() as &mut dyn FnMut() -> Result<(), VerifyError>).collect();
        let mut ticks = 0;
        let stats = interleaved(&mut refs, 1, 4, 0, &mut || ticks += 1).unwrap();
        assert_eq!(*order.borrow(), [0, 1, 2, 0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2]);
        assert_eq!((ticks, stats.len()), (4, 3));
        assert!(stats.iter().all(|s| s.runs == 4));
        // Continued from round 4: round 4 starts where round 1 did.
        order.borrow_mut().clear();
        interleaved(&mut refs, 0, 2, 4, &mut || ()).unwrap();
        assert_eq!(*order.borrow(), [1, 2, 0, 2, 0, 1]);
    }
}
