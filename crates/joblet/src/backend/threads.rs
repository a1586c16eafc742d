//! The thread backend: `n_jobs` threads started for the call, each pulling batches from the
//! feed and running them with [`super::Here`].
//!
//! The threads come from the scheduler's thread cache: parked between calls, so a call does
//! not pay for starting them. A call that fails fast returns while its threads finish their
//! current task and park on their own. Running tasks cannot be killed; they see
//! [`crate::is_cancelled`] turn true.

use crate::scheduler::batching::IdealDuration;
use std::time::Duration;

/// A hand-off between threads costs a few microseconds (a lock, a channel message, a wake-up
/// of the caller). Batches of 1-10 ms make that about 1%, and are short enough that the last
/// batches of a call still spread over the workers; joblib's 0.2-2 s suit process pools, whose
/// per-batch cost is a thousand times higher, and would leave one core idle for a long time at
/// the end of a call on a small machine.
pub(super) const IDEAL_BATCH: IdealDuration = IdealDuration {
    min: Duration::from_millis(1),
    max: Duration::from_millis(10),
};
