//! The input side of a call: the lazy task iterator, cut into batches under the dispatch window.
//!
//! Workers pull their next batch from the feed themselves, so no thread sits between the input
//! and the workers, and a worker that finishes early takes more work at once.

use super::batching::BatchSizer;
use crate::context::CancelToken;
use crate::error::take_panic_message;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;
use std::time::Instant;

/// Consecutive tasks `first .. first + jobs.len()` of the input, run by one worker.
pub(crate) struct Batch<J> {
    pub(crate) first: usize,
    pub(crate) jobs: Vec<J>,
    /// How long pulling the jobs from the input took: part of the batch's cost, so that a
    /// slow input keeps batches small.
    pub(crate) pulled_in: Duration,
}

/// What a worker gets when it asks for work.
pub(crate) enum Pull<J> {
    Batch(Batch<J>),
    /// The input is exhausted: nothing more to do.
    Done,
    /// The call was stopped (error, timeout, or the caller went away).
    Stopped,
    /// The input iterator panicked while producing item `index`.
    InputPanicked {
        index: usize,
        message: String,
    },
}

/// The input iterator, seen through one virtual call per batch: `pull` is monomorphized for
/// the concrete iterator, so taking a batch of tiny tasks is a tight loop, not a virtual call
/// per item.
pub(crate) trait Input<J>: Send {
    /// Appends up to `n` items to `out`.
    fn pull(&mut self, out: &mut Vec<J>, n: usize);
    /// An upper bound on the items left, if the iterator knows one.
    fn left_at_most(&self) -> Option<usize>;
}

impl<J, I: Iterator<Item = J> + Send> Input<J> for I {
    fn pull(&mut self, out: &mut Vec<J>, n: usize) {
        out.extend(self.by_ref().take(n));
    }

    fn left_at_most(&self) -> Option<usize> {
        self.size_hint().1
    }
}

/// Runs each pull of a batch's items from the input (see [`crate::Parallel::input_scope`]).
pub(crate) type InputScope = std::sync::Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

const UNKNOWN: usize = usize::MAX;

/// Two locks, so that a worker blocked in the input iterator's `next` (a channel, a socket)
/// never keeps the caller from freeing window slots: `window` is only ever held briefly.
pub(crate) struct Feed<J> {
    input: Mutex<FeedState<J>>,
    window: Mutex<Window>,
    /// Signalled when a window slot frees up, the input ends, or the call stops.
    room: Condvar,
    cancel: CancelToken,
    /// The number of input items, once the iterator has ended (`UNKNOWN` before).
    total: AtomicUsize,
}

struct Window {
    /// Batches dispatched and not yet released by the consumer.
    in_flight: usize,
    /// `None`: no bound on `in_flight`.
    limit: Option<usize>,
    /// The input has ended: nothing more will be dispatched.
    input_done: bool,
}

struct FeedState<J> {
    /// `None` once detached by the caller (see [`Feed::detach_input`]).
    input: Option<Box<dyn Input<J>>>,
    scope: Option<InputScope>,
    /// Index of the next item the iterator will produce.
    next_index: usize,
    input_done: bool,
    /// The input's size hint said nothing is left after the last pull.
    total_hint: bool,
    sizer: BatchSizer,
    workers: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // User code under these locks (the input iterator's next and size_hint) runs inside
    // catch_unwind, so poisoning could only come from a bug in the feed itself; the state is
    // still fit to stop.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<J: Send> Feed<J> {
    pub(crate) fn new(
        input: Box<dyn Input<J>>,
        scope: Option<InputScope>,
        window: Option<usize>,
        sizer: BatchSizer,
        workers: usize,
        cancel: CancelToken,
    ) -> Self {
        Feed {
            input: Mutex::new(FeedState {
                input: Some(input),
                scope,
                next_index: 0,
                input_done: false,
                total_hint: false,
                sizer,
                workers: workers.max(1),
            }),
            window: Mutex::new(Window {
                in_flight: 0,
                limit: window,
                input_done: false,
            }),
            room: Condvar::new(),
            cancel,
            total: AtomicUsize::new(UNKNOWN),
        }
    }

    /// The number of input items, known once the input iterator has ended.
    pub(crate) fn total(&self) -> Option<usize> {
        match self.total.load(Ordering::Acquire) {
            UNKNOWN => None,
            n => Some(n),
        }
    }

    /// Takes the next batch, waiting while the window is full. `finished` reports the size and
    /// duration of the batch this worker ran last, for automatic batch sizing.
    pub(crate) fn next_batch(&self, finished: Option<(usize, Duration)>) -> Pull<J> {
        // First a window slot, then the input: a full window never blocks the input's lock.
        {
            let mut w = lock(&self.window);
            loop {
                if self.cancel.is_cancelled() {
                    return Pull::Stopped;
                }
                if w.input_done {
                    return Pull::Done;
                }
                if w.limit.is_none_or(|limit| w.in_flight < limit) {
                    w.in_flight += 1;
                    break;
                }
                w = self.room.wait(w).unwrap_or_else(|e| e.into_inner());
            }
        }
        let mut st = lock(&self.input);
        if let Some((size, took)) = finished {
            st.sizer.record(size, took);
        }
        let pulled = if self.cancel.is_cancelled() {
            Ok(Batch {
                first: st.next_index,
                jobs: Vec::new(),
                pulled_in: Duration::ZERO,
            })
        } else {
            st.take_batch()
        };
        if st.input_done || st.total_hint {
            self.total.store(st.next_index, Ordering::Release);
        }
        let input_done = st.input_done;
        drop(st);
        match pulled {
            Ok(batch) if !batch.jobs.is_empty() => {
                if input_done {
                    self.end_of_input(0);
                }
                Pull::Batch(batch)
            }
            Ok(_) => {
                self.end_of_input(1);
                if self.cancel.is_cancelled() {
                    Pull::Stopped
                } else {
                    Pull::Done
                }
            }
            Err((index, message)) => {
                self.end_of_input(1);
                Pull::InputPanicked { index, message }
            }
        }
    }

    /// Records that the input has ended, gives back `unused` slots, and wakes every waiter.
    fn end_of_input(&self, unused: usize) {
        let mut w = lock(&self.window);
        w.input_done = true;
        w.in_flight -= unused;
        drop(w);
        self.room.notify_all();
    }

    /// The consumer has taken the results of `batches` batches: let more be dispatched.
    pub(crate) fn release(&self, batches: usize) {
        if batches == 0 {
            return;
        }
        let mut w = lock(&self.window);
        w.in_flight = w.in_flight.saturating_sub(batches);
        drop(w);
        self.room.notify_all();
    }

    /// Takes the input iterator away from the workers and drops it. After this returns, no
    /// worker touches the iterator again: it is only used under the input lock, and is gone.
    /// (If a worker is blocked in the iterator's `next`, this waits for it to return.)
    pub(crate) fn detach_input(&self) {
        let mut st = lock(&self.input);
        let input = st.input.take();
        st.input_done = true;
        drop(st);
        drop(input);
    }

    /// Stops the call: cancels running tasks cooperatively and wakes waiting workers.
    pub(crate) fn stop(&self) {
        // Taking the lock orders the flag before any waiter's check, so none sleeps through it.
        let w = lock(&self.window);
        self.cancel.cancel();
        drop(w);
        self.room.notify_all();
    }
}

impl<J> FeedState<J> {
    /// Cuts the next batch. Near the end of an input whose length is known (from its size
    /// hint), each batch takes only a share of what is left, so that the last batches spread
    /// over every worker instead of leaving one with a long tail while the others idle.
    fn take_batch(&mut self) -> Result<Batch<J>, (usize, String)> {
        let first = self.next_index;
        // Once ended (exhausted, panicked or detached), the iterator is never called again: a
        // worker that got its window slot before the end must not resume a panicked iterator.
        let input = match self.input.as_mut() {
            Some(input) if !self.input_done => input,
            _ => {
                self.input_done = true;
                return Ok(Batch {
                    first,
                    jobs: Vec::new(),
                    pulled_in: Duration::ZERO,
                });
            }
        };
        let size = self.sizer.size();
        let auto = self.sizer.is_auto();
        let workers = self.workers;
        let scope = self.scope.as_deref();
        let started = Instant::now();
        let mut jobs = Vec::new();
        // Everything that runs user code (the iterator's next and size_hint) is caught here:
        // a panic must become the call's error, never unwind through the feed's lock.
        let pulled = catch_unwind(AssertUnwindSafe(|| {
            let size = match input.left_at_most() {
                Some(left) if auto => size.min(left.div_ceil(2 * workers)).max(1),
                _ => size,
            };
            jobs.reserve_exact(size);
            match scope {
                Some(scope) => {
                    let mut pulled = false;
                    scope(&mut || {
                        pulled = true;
                        input.pull(&mut jobs, size);
                    });
                    // Else the empty pull would read as the end of the input: results lost
                    // without a word.
                    assert!(pulled, "the call's input scope did not run the pull");
                }
                None => input.pull(&mut jobs, size),
            }
            (size, input.left_at_most() == Some(0))
        }));
        self.next_index += jobs.len();
        let (size, hint_says_empty) = match pulled {
            Ok(r) => r,
            Err(payload) => {
                self.input_done = true;
                return Err((self.next_index, take_panic_message(payload)));
            }
        };
        // Only a short pull ends the input: a size hint may be wrong (std allows it). A hint of
        // zero left publishes the total early, for progress lines.
        if jobs.len() < size {
            self.input_done = true;
        }
        self.total_hint = hint_says_empty;
        Ok(Batch {
            first,
            jobs,
            pulled_in: started.elapsed(),
        })
    }
}
