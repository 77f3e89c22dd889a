//! Summaries of measured samples, shared by every role's statistics and every benchmark
//! (the stager's staging latency, `ffs bench …`). Pure.

/// Nearest-rank percentile of **sorted** samples: the smallest sample such that at least
/// `p` percent of all samples are less than or equal to it. `p` is in percent (0–100,
/// clamped); an empty slice gives `T::default()` (0, `Duration::ZERO`).
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let p = if p.is_nan() {
        100.0
    } else {
        p.clamp(0.0, 100.0)
    };
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p99 and maximum of samples (sorted here), in the samples' unit.
pub fn p50_p99_max<T: Copy + Default + Ord>(samples: &mut [T]) -> (T, T, T) {
    samples.sort_unstable();
    (
        percentile(samples, 50.0),
        percentile(samples, 99.0),
        samples.last().copied().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&v, 250.0), 100, "clamped");
        assert_eq!(percentile::<u64>(&[], 50.0), 0);
        assert_eq!(percentile(&[7u64], 99.0), 7);
        // Three samples: the median is the second, p99 the third.
        let d = [1, 2, 3].map(Duration::from_micros);
        assert_eq!(percentile(&d, 50.0), Duration::from_micros(2));
        assert_eq!(percentile(&d, 99.0), Duration::from_micros(3));
    }

    #[test]
    fn summary_sorts_first() {
        let mut v = vec![5u64, 1, 9, 3];
        assert_eq!(p50_p99_max(&mut v), (3, 9, 9));
        assert_eq!(p50_p99_max::<u64>(&mut []), (0, 0, 0));
    }
}
