//! Pure statistics of a load run: samples, nearest-rank percentiles, measurement windows and the
//! stability rule. No I/O and no clocks, so every rule here is unit-tested with explicit numbers.

use serde::Serialize;

/// One request as the client saw it. Times are seconds since the start of its step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub start: f64,
    pub end: f64,
    /// HTTP status (0 when no answer came).
    pub status: u16,
    /// Pages the answer carried (0 for a failed request).
    pub pages: u32,
    /// The server's own split, from the `x-*-time` headers (ms).
    pub queue_ms: Option<f64>,
    pub detect_ms: Option<f64>,
    pub recognize_ms: Option<f64>,
    pub total_ms: Option<f64>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn latency_ms(&self) -> f64 {
        (self.end - self.start) * 1000.0
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of ascending `sorted` values: the value at 1-based
/// rank ⌈p/100 · n⌉, so every percentile is a latency that really occurred. NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What one measurement window (or several merged) measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowStats {
    pub seconds: f64,
    pub requests: usize,
    pub errors: usize,
    pub pages: u64,
    /// Pages per second answered with 2xx.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// Means of the server's headers over the requests that carried them (ms).
    pub queue_ms: f64,
    pub detect_ms: f64,
    pub recognize_ms: f64,
    pub server_total_ms: f64,
}

/// Statistics of the samples that *ended* in `[from, to)`; throughput is over that span.
pub fn window(samples: &[Sample], from: f64, to: f64) -> WindowStats {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.end >= from && s.end < to)
        .collect();
    summarise(&inside, to - from)
}

/// Statistics of `samples` over `seconds` of wall time.
pub fn summarise(samples: &[&Sample], seconds: f64) -> WindowStats {
    let ok: Vec<&&Sample> = samples.iter().filter(|s| s.ok()).collect();
    let mut lat: Vec<f64> = ok.iter().map(|s| s.latency_ms()).collect();
    lat.sort_by(f64::total_cmp);
    let mean = |f: &dyn Fn(&Sample) -> Option<f64>| {
        let v: Vec<f64> = ok.iter().filter_map(|s| f(s)).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let pages: u64 = ok.iter().map(|s| s.pages as u64).sum();
    WindowStats {
        seconds,
        requests: samples.len(),
        errors: samples.len() - ok.len(),
        pages,
        throughput: if seconds > 0.0 {
            pages as f64 / seconds
        } else {
            0.0
        },
        p50_ms: percentile(&lat, 50.0),
        p90_ms: percentile(&lat, 90.0),
        p95_ms: percentile(&lat, 95.0),
        p99_ms: percentile(&lat, 99.0),
        mean_ms: mean(&|s| Some(s.latency_ms())),
        queue_ms: mean(&|s| s.queue_ms),
        detect_ms: mean(&|s| s.detect_ms),
        recognize_ms: mean(&|s| s.recognize_ms),
        server_total_ms: mean(&|s| s.total_ms),
    }
}

/// perf_analyzer's rule: the last three windows are stable when each one's throughput and p50
/// latency lie within `pct` percent of the three windows' mean. Fewer than three windows, or a
/// window without a successful request, are never stable.
pub fn stable(windows: &[WindowStats], pct: f64) -> bool {
    let Some(last) = windows.len().checked_sub(3).map(|i| &windows[i..]) else {
        return false;
    };
    let within = |f: fn(&WindowStats) -> f64| {
        let v: Vec<f64> = last.iter().map(f).collect();
        if v.iter().any(|x| !x.is_finite() || *x <= 0.0) {
            return false;
        }
        let m = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().all(|x| (x - m).abs() <= m * pct / 100.0)
    };
    within(|w| w.throughput) && within(|w| w.p50_ms)
}

/// The empirical CDF of ascending values, thinned to at most `points` points: `(value, fraction
/// of values ≤ value)`.
pub fn cdf(sorted: &[f64], points: usize) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(points.max(1)).max(1);
    let mut out: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (sorted[i], (i + 1) as f64 / n as f64))
        .collect();
    if out.last().map(|p| p.1) != Some(1.0) {
        out.push((sorted[n - 1], 1.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(start: f64, end: f64, status: u16) -> Sample {
        Sample {
            start,
            end,
            status,
            pages: if status == 200 { 1 } else { 0 },
            queue_ms: Some(10.0),
            ..Sample::default()
        }
    }

    #[test]
    fn nearest_rank_percentiles_are_observed_values() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.0);
        assert_eq!(percentile(&v, 99.0), 4.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 90.0), 9.0);
        assert_eq!(percentile(&ten, 99.0), 10.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn window_counts_what_ended_inside_and_only_ok_latencies() {
        let samples = [
            s(0.0, 0.5, 200),
            s(0.2, 1.5, 200),
            s(0.3, 1.9, 500),
            s(1.0, 2.0, 200), // ends at the boundary: next window
        ];
        let w = window(&samples, 1.0, 2.0);
        assert_eq!((w.requests, w.errors, w.pages), (2, 1, 1));
        assert_eq!(w.throughput, 1.0);
        assert!((w.p50_ms - 1300.0).abs() < 1e-6);
        assert_eq!(w.queue_ms, 10.0);
        let w = window(&samples, 0.0, 1.0);
        assert_eq!((w.requests, w.pages), (1, 1));
    }

    #[test]
    fn stability_needs_three_agreeing_windows() {
        let w = |tp: f64, p50: f64| WindowStats {
            throughput: tp,
            p50_ms: p50,
            ..WindowStats::default()
        };
        assert!(!stable(&[w(1.0, 100.0), w(1.0, 100.0)], 10.0));
        assert!(stable(
            &[w(1.0, 100.0), w(1.05, 98.0), w(0.97, 103.0)],
            10.0
        ));
        // The oldest window is out of the rule once three newer ones agree.
        assert!(stable(
            &[w(3.0, 10.0), w(1.0, 100.0), w(1.05, 98.0), w(0.97, 103.0)],
            10.0
        ));
        assert!(!stable(
            &[w(1.0, 100.0), w(1.3, 98.0), w(0.97, 103.0)],
            10.0
        ));
        assert!(!stable(
            &[w(1.0, 100.0), w(1.0, 140.0), w(1.0, 100.0)],
            10.0
        ));
        assert!(!stable(
            &[w(0.0, f64::NAN), w(0.0, f64::NAN), w(0.0, f64::NAN)],
            10.0
        ));
    }

    #[test]
    fn cdf_ends_at_one_and_is_monotonic() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        let c = cdf(&v, 50);
        assert!(c.len() <= 51);
        assert_eq!(c.last(), Some(&(1000.0, 1.0)));
        assert!(c.windows(2).all(|p| p[0].0 <= p[1].0 && p[0].1 < p[1].1));
        assert!(cdf(&[], 10).is_empty());
    }
}
