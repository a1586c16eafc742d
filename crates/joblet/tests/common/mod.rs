//! Helpers shared by the integration tests: a time limit for test bodies, latches and
//! rendezvous with bounded waits (so that no test can hang), a concurrency gauge, and an input
//! iterator that counts the items pulled from it and reports when it is dropped.

#![allow(dead_code)]

use joblet::{BatchSize, Event, Parallel, Progress};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

/// The longest any task or test waits for a signal that a correct implementation gives at
/// once. Waits that end this way make the test fail, never hang.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Time limit of a whole test body, in seconds.
pub const LIMIT: u64 = 40;

/// A backend under test: how to make a `Parallel` with `n_jobs` workers, and whether two tasks
/// of a call can run at the same time (false for `Backend::Sequential`, whose tasks all run in
/// the caller's thread).
#[derive(Clone, Copy)]
pub struct Suite {
    /// `Parallel::new().n_jobs(n).backend(..)` for the backend under test.
    pub parallel: fn(i64) -> Parallel,
    /// Whether tasks run on workers, concurrently (at `n_jobs > 1`).
    pub concurrent: bool,
}

impl Suite {
    /// A `Parallel` of the backend under test with `n_jobs` workers.
    pub fn parallel(&self, n_jobs: i64) -> Parallel {
        (self.parallel)(n_jobs)
    }
}

/// `p` with `batch_size(n)`, or the default `"auto"` for `None`.
pub fn with_batch(p: Parallel, batch: Option<usize>) -> Parallel {
    match batch {
        Some(n) => p.batch_size(n),
        None => p.batch_size(BatchSize::Auto),
    }
}

/// Runs `f` on its own thread and returns its value; panics (failing the test) if it has not
/// finished after `secs` seconds, and re-raises its panic if it panicked.
pub fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name("test-body".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn the test body");
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("the body neither returned nor panicked"),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("the test body did not finish within {secs} s: something hangs")
        }
    }
}

/// Polls `cond` until it holds or `max` has passed; returns whether it held. For conditions
/// that other threads make true (no ordering is created by the polling).
pub fn wait_until(max: Duration, cond: impl FnMut() -> bool) -> bool {
    poll_until(max, Duration::from_micros(100), cond)
}

/// [`wait_until`], looking every `step`: a coarser step for conditions that cost a system
/// call to look at (a process gone from /proc, a file another process writes).
pub fn poll_until(max: Duration, step: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + max;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(step);
    }
}

/// Busy work for about `d` (keeps a CPU busy, unlike a sleep).
pub fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A one-shot gate: tasks wait on it (for a bounded time) until the test opens it.
#[derive(Default)]
pub struct Latch {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    /// A closed latch.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Opens the latch, for every waiter present and future.
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }

    /// Waits until the latch is open or `max` has passed; returns whether it was opened.
    pub fn wait(&self, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        let mut open = self.open.lock().unwrap();
        while !*open {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            open = self.cv.wait_timeout(open, deadline - now).unwrap().0;
        }
        true
    }
}

/// A reusable barrier for `n` parties whose wait is bounded: proves that `n` tasks run at the
/// same time (a wait that times out means they did not).
pub struct Rendezvous {
    n: usize,
    /// (parties arrived in the current generation, generation)
    state: Mutex<(usize, u64)>,
    cv: Condvar,
}

impl Rendezvous {
    /// A rendezvous of `n` parties.
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Rendezvous {
            n,
            state: Mutex::new((0, 0)),
            cv: Condvar::new(),
        })
    }

    /// Waits until `n` parties have arrived (this one included) or `max` has passed; returns
    /// whether the rendezvous happened.
    pub fn wait(&self, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        let mut st = self.state.lock().unwrap();
        let generation = st.1;
        st.0 += 1;
        if st.0 == self.n {
            *st = (0, generation + 1);
            self.cv.notify_all();
            return true;
        }
        while st.1 == generation {
            let now = Instant::now();
            if now >= deadline {
                st.0 -= 1;
                return false;
            }
            st = self.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
        true
    }
}

/// Counts how many tasks are inside it at once, and the most there ever were.
#[derive(Default)]
pub struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

/// One task inside a [`Gauge`]; leaving is dropping it.
pub struct Inside<'a>(&'a Gauge);

impl Gauge {
    /// A gauge at zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Enters the gauge until the guard is dropped.
    pub fn enter(&self) -> Inside<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        Inside(self)
    }

    /// The most tasks that were ever inside at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An input iterator that counts the items pulled from it and says when it is dropped.
pub struct Counted<I> {
    inner: I,
    pulled: Arc<AtomicUsize>,
    dropped: Sender<()>,
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next();
        if item.is_some() {
            self.pulled.fetch_add(1, Ordering::SeqCst);
        }
        item
    }
}

impl<I> Drop for Counted<I> {
    fn drop(&mut self) {
        let _ = self.dropped.send(());
    }
}

/// The test's side of a [`Counted`] input.
pub struct Probe {
    pulled: Arc<AtomicUsize>,
    dropped: Receiver<()>,
}

impl Probe {
    /// Items pulled from the input so far.
    pub fn pulled(&self) -> usize {
        self.pulled.load(Ordering::SeqCst)
    }

    /// Waits (at most `max`) until the input iterator has been dropped: after that its count
    /// is final. Returns whether it was dropped.
    pub fn wait_dropped(&self, max: Duration) -> bool {
        match self.dropped.recv_timeout(max) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        }
    }
}

/// Wraps `inner` so that the test can count the items pulled from it.
pub fn counted<I: Iterator>(inner: I) -> (Counted<I>, Probe) {
    let pulled = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    (
        Counted {
            inner,
            pulled: pulled.clone(),
            dropped: tx,
        },
        Probe {
            pulled,
            dropped: rx,
        },
    )
}

/// Progress events recorded by [`recording`], with the thread each came on.
pub type Log = Arc<Mutex<Vec<(Progress, ThreadId)>>>;

/// `p` with a progress callback that records every event and the thread it came on.
pub fn recording(p: Parallel) -> (Parallel, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let p = p.on_progress(move |e| l.lock().unwrap().push((*e, thread::current().id())));
    (p, log)
}

/// Takes the events recorded so far.
pub fn take(log: &Log) -> Vec<(Progress, ThreadId)> {
    std::mem::take(&mut *log.lock().unwrap())
}

/// Checks the events of one call of `n` tasks: all on the caller's thread, counters that
/// add up event by event, every completed batch dispatched before, one `Finished`, last;
/// with `failed_at`, one `Failed` for that task just before it, else every task completed.
pub fn check_progress(events: &[(Progress, ThreadId)], n: usize, failed_at: Option<usize>) {
    let caller = thread::current().id();
    assert!(!events.is_empty(), "no progress events");
    let (mut dispatched, mut completed, mut failed) = (0, 0, 0);
    let mut batches: Vec<(usize, usize)> = Vec::new();
    let mut done: Vec<(usize, usize)> = Vec::new();
    let mut elapsed = Duration::ZERO;
    for (i, (p, thread)) in events.iter().enumerate() {
        assert_eq!(*thread, caller, "event {i} ({p:?}) off the caller's thread");
        match p.event {
            Event::Dispatched { first, count } => {
                assert!(count > 0, "{p:?}");
                dispatched += count;
                batches.push((first, count));
            }
            Event::Completed { first, count } => {
                completed += count;
                assert!(
                    batches.contains(&(first, count)),
                    "{p:?} was never dispatched"
                );
                done.push((first, count));
            }
            Event::Failed { index } => {
                failed += 1;
                assert_eq!(Some(index), failed_at, "{p:?}");
                assert!(
                    batches.iter().any(|&(f, c)| (f..f + c).contains(&index)),
                    "the failed task {index} was never dispatched"
                );
                assert_eq!(i + 2, events.len(), "Failed is followed by Finished only");
            }
            Event::Finished => assert_eq!(i + 1, events.len(), "Finished is the last event"),
            other => panic!("an event this suite does not know: {other:?}"),
        }
        assert_eq!(
            (p.dispatched, p.completed, p.failed),
            (dispatched, completed, failed),
            "counters after event {i} ({p:?})"
        );
        assert!(p.completed + p.failed <= p.dispatched, "{p:?}");
        if let Some(total) = p.total {
            assert_eq!(total, n, "{p:?}");
        }
        assert!(p.elapsed >= elapsed, "elapsed went back at event {i}");
        elapsed = p.elapsed;
    }
    assert_eq!(events.last().unwrap().0.event, Event::Finished);
    batches.sort_unstable();
    let mut next = 0;
    for &(first, count) in &batches {
        if failed_at.is_none() {
            assert_eq!(
                first, next,
                "dispatched batches overlap or leave a gap: {batches:?}"
            );
        } else {
            // A failed call stops reading reports at once: a batch a worker took just before
            // (and had not announced yet) is never reported. Gaps are fine, overlaps are not.
            assert!(first >= next, "dispatched batches overlap: {batches:?}");
        }
        next = first + count;
    }
    match failed_at {
        None => {
            assert_eq!(
                next, n,
                "dispatched batches do not cover the input: {batches:?}"
            );
            done.sort_unstable();
            assert_eq!(done, batches, "a dispatched batch never completed");
            let last = events.last().unwrap().0;
            assert_eq!((last.completed, last.failed, last.total), (n, 0, Some(n)));
        }
        Some(_) => {
            assert_eq!(failed, 1);
            assert!(completed < n);
        }
    }
}
