//! Automatic batch sizing: grow or shrink the number of tasks per batch so that a batch lasts
//! about as long as the backend needs to amortize its per-batch cost.

use crate::config::BatchSize;
use std::time::Duration;

/// The most tasks in one batch. Past this, bigger batches save nothing (the per-batch cost is
/// already spread over 64 Ki tasks) but their buffers fall out of the CPU caches and raise the
/// memory that a lazily consumed call holds.
pub(crate) const MAX_BATCH: usize = 1 << 16;

/// The batch durations a backend aims for: long enough that its per-batch cost (a channel
/// message, a pipe round trip) vanishes, short enough that the last batches balance across
/// workers and progress stays fresh.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdealDuration {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

/// Picks the size of the next batch from the measured durations of earlier ones.
///
/// joblib's rule, in our own words: keep a smoothed duration of batches of the current size;
/// when it is below `min`, aim for the size that would last `2 * min` but never more than
/// double at once; when it is above `max`, jump straight down to that size. After a change,
/// forget the old durations, since they describe another size.
#[derive(Debug)]
pub(crate) struct BatchSizer {
    fixed: Option<usize>,
    size: usize,
    smoothed: Option<f64>,
    ideal: IdealDuration,
}

impl BatchSizer {
    pub(crate) fn new(mode: BatchSize, ideal: IdealDuration) -> Self {
        let fixed = match mode {
            BatchSize::Auto => None,
            BatchSize::Fixed(n) => Some(n.max(1)),
        };
        BatchSizer {
            fixed,
            size: fixed.unwrap_or(1),
            smoothed: None,
            ideal,
        }
    }

    pub(crate) fn is_auto(&self) -> bool {
        self.fixed.is_none()
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Feeds back that a batch of `size` tasks took `took`.
    pub(crate) fn record(&mut self, size: usize, took: Duration) {
        // Batches of another size were dispatched before the last change; their durations
        // say nothing about the current size.
        if self.fixed.is_some() || size != self.size {
            return;
        }
        let took = took.as_secs_f64();
        let smoothed = match self.smoothed {
            None => took,
            Some(old) => 0.8 * old + 0.2 * took,
        };
        self.smoothed = Some(smoothed);
        let (min, max) = (self.ideal.min.as_secs_f64(), self.ideal.max.as_secs_f64());
        let scaled = |target: f64| -> usize {
            let n = self.size as f64 * target / smoothed.max(1e-9);
            if n >= usize::MAX as f64 / 4.0 {
                usize::MAX / 4
            } else {
                n as usize
            }
        };
        let next = if smoothed < min {
            scaled(2.0 * min).min(self.size.saturating_mul(2))
        } else if smoothed > max && self.size >= 2 {
            scaled(2.0 * min)
        } else {
            self.size
        };
        let next = next.clamp(1, MAX_BATCH);
        if next != self.size {
            self.size = next;
            self.smoothed = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDEAL: IdealDuration = IdealDuration {
        min: Duration::from_millis(200),
        max: Duration::from_secs(2),
    };

    #[test]
    fn grows_at_most_twice_per_step() {
        let mut s = BatchSizer::new(BatchSize::Auto, IDEAL);
        assert_eq!(s.size(), 1);
        s.record(1, Duration::from_micros(1));
        assert_eq!(s.size(), 2);
        s.record(2, Duration::from_micros(2));
        assert_eq!(s.size(), 4);
        // a stale report about an older size changes nothing
        s.record(2, Duration::from_micros(2));
        assert_eq!(s.size(), 4);
    }

    #[test]
    fn settles_in_the_ideal_range_and_shrinks_fast() {
        let mut s = BatchSizer::new(BatchSize::Auto, IDEAL);
        // tasks of 10 ms: the size should settle where a batch lasts 0.2 s to 2 s
        for _ in 0..40 {
            let n = s.size();
            s.record(n, Duration::from_millis(10) * n as u32);
        }
        let settled = s.size();
        assert!((20..=200).contains(&settled), "{settled}");
        // tasks become 100x slower: one report is enough to come back down
        s.record(settled, Duration::from_secs(1) * settled as u32);
        assert!(s.size() <= 1, "{}", s.size());
    }

    #[test]
    fn fixed_size_never_changes() {
        let mut s = BatchSizer::new(BatchSize::Fixed(7), IDEAL);
        s.record(7, Duration::from_nanos(1));
        assert_eq!(s.size(), 7);
        assert!(!s.is_auto());
    }
}
