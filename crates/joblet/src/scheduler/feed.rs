//! The input side of a call: the lazy task iterator, cut into batches under the dispatch window.
//!
//! Workers pull their next batch from the feed themselves, so no thread sits between the input
//! and the workers, and a worker that finishes early takes more work at once.

use super::batching::BatchSizer;
use crate::context::CancelToken;
use crate::error::panic_message;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Consecutive tasks `first .. first + jobs.len()` of the input, run by one worker.
pub(crate) struct Batch<J> {
    pub(crate) first: usize,
    pub(crate) jobs: Vec<J>,
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

const UNKNOWN: usize = usize::MAX;

pub(crate) struct Feed<J> {
    state: Mutex<FeedState<J>>,
    /// Signalled when a window slot frees up or the call stops.
    room: Condvar,
    cancel: CancelToken,
    /// The number of input items, once the iterator has ended (`UNKNOWN` before).
    total: AtomicUsize,
}

struct FeedState<J> {
    /// `None` once detached by the caller (see [`Feed::detach_input`]).
    input: Option<Box<dyn Iterator<Item = J> + Send>>,
    /// Index of the next item the iterator will produce.
    next_index: usize,
    /// Items pulled from the iterator but not dispatched yet; they end at `next_index`.
    lookahead: VecDeque<J>,
    input_done: bool,
    /// Batches dispatched and not yet released by the consumer.
    in_flight: usize,
    /// `None`: no bound on `in_flight`.
    window: Option<usize>,
    sizer: BatchSizer,
    workers: usize,
}

impl<J: Send> Feed<J> {
    pub(crate) fn new(
        input: Box<dyn Iterator<Item = J> + Send>,
        window: Option<usize>,
        sizer: BatchSizer,
        workers: usize,
        cancel: CancelToken,
    ) -> Self {
        Feed {
            state: Mutex::new(FeedState {
                input: Some(input),
                next_index: 0,
                lookahead: VecDeque::new(),
                input_done: false,
                in_flight: 0,
                window,
                sizer,
                workers: workers.max(1),
            }),
            room: Condvar::new(),
            cancel,
            total: AtomicUsize::new(UNKNOWN),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState<J>> {
        // Nothing user-supplied runs under this lock without catch_unwind, so poisoning can
        // only come from a bug in the feed itself; the state is still consistent enough to stop.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut st = self.lock();
        if let Some((size, took)) = finished {
            st.sizer.record(size, took);
        }
        loop {
            if self.cancel.is_cancelled() {
                return Pull::Stopped;
            }
            if st.input_done && st.lookahead.is_empty() {
                return Pull::Done;
            }
            match st.window {
                Some(w) if st.in_flight >= w => {
                    st = self.room.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                _ => break,
            }
        }
        let pulled = st.take_batch();
        match pulled {
            Ok(batch) if batch.jobs.is_empty() => {
                self.total.store(st.next_index, Ordering::Release);
                Pull::Done
            }
            Ok(batch) => {
                st.in_flight += 1;
                if st.input_done {
                    self.total.store(st.next_index, Ordering::Release);
                }
                Pull::Batch(batch)
            }
            Err((index, message)) => Pull::InputPanicked { index, message },
        }
    }

    /// The consumer has taken the results of `batches` batches: let more be dispatched.
    pub(crate) fn release(&self, batches: usize) {
        if batches == 0 {
            return;
        }
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(batches);
        drop(st);
        self.room.notify_all();
    }

    /// Takes the input iterator away from the workers and drops it. After this returns, no
    /// worker touches the iterator again: it is only used under the lock, and is gone.
    pub(crate) fn detach_input(&self) {
        let mut st = self.lock();
        let input = st.input.take();
        st.input_done = true;
        drop(st);
        drop(input);
    }

    /// Stops the call: cancels running tasks cooperatively and wakes waiting workers.
    pub(crate) fn stop(&self) {
        // Taking the lock orders the flag before any waiter's check, so none sleeps through it.
        let st = self.lock();
        self.cancel.cancel();
        drop(st);
        self.room.notify_all();
    }
}

impl<J> FeedState<J> {
    /// Cuts the next batch. With automatic sizing and several workers it looks ahead one batch
    /// per worker, so that it sees the end of the input coming and shrinks the last batches
    /// (each takes a share of what is left), and no worker is left with a long tail alone.
    fn take_batch(&mut self) -> Result<Batch<J>, (usize, String)> {
        let size = self.sizer.size();
        let balance_tail = self.sizer.is_auto() && self.workers > 1;
        let target = if balance_tail {
            size.saturating_mul(self.workers)
        } else {
            size
        };
        if self.lookahead.len() < target && !self.input_done {
            self.pull_into_lookahead(target - self.lookahead.len())?;
        }
        let n = if balance_tail && self.input_done {
            size.min(self.lookahead.len().div_ceil(2 * self.workers))
        } else {
            size
        };
        let first = self.next_index - self.lookahead.len();
        let n = n.min(self.lookahead.len());
        Ok(Batch {
            first,
            jobs: self.lookahead.drain(..n).collect(),
        })
    }

    fn pull_into_lookahead(&mut self, want: usize) -> Result<(), (usize, String)> {
        let Some(input) = self.input.as_mut() else {
            self.input_done = true;
            return Ok(());
        };
        let lookahead = &mut self.lookahead;
        let done = &mut self.input_done;
        let before = lookahead.len();
        let r = catch_unwind(AssertUnwindSafe(|| {
            for _ in 0..want {
                match input.next() {
                    Some(j) => lookahead.push_back(j),
                    None => {
                        *done = true;
                        break;
                    }
                }
            }
        }));
        self.next_index += self.lookahead.len() - before;
        if let Err(payload) = r {
            self.input_done = true;
            return Err((self.next_index, panic_message(&*payload)));
        }
        Ok(())
    }
}
