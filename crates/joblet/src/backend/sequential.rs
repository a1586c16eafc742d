//! The sequential backend: the caller's thread runs each batch when it needs the results.

use crate::scheduler::batching::IdealDuration;
use std::time::Duration;

/// Batches only save the scheduler's bookkeeping here (no thread hand-off), so they can be
/// short; short batches also keep the lazy iterators lazy.
pub(super) const IDEAL_BATCH: IdealDuration = IdealDuration {
    min: Duration::from_micros(200),
    max: Duration::from_millis(2),
};
