//! The scheduler: one engine for every backend. See `README.md` in this folder.

pub(crate) mod batching;
mod clock;
mod deliver;
pub(crate) mod feed;
mod thread_cache;

pub(crate) use clock::{monotonic_ns, ClockCells, Slot, TaskClock};
pub(crate) use deliver::collect_list;
pub use deliver::{Ordered, Unordered};

use crate::context::{CancelToken, EnterWorker};
use crate::error::{Error, Failure};
use crate::progress::{Event, Reporter};
use crate::task::Job;
use feed::{Batch, Feed, Pull};
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a batch ended on its worker.
pub(crate) enum BatchEnd<E> {
    /// Every task succeeded.
    Complete,
    /// The task after the last value failed.
    Failed(Failure<E>),
    /// Task `index` ran past the timeout.
    TimedOut { index: usize },
    /// The call was stopped before the batch finished; the rest was dropped.
    Stopped,
    /// The worker process died while running task `index`.
    Died {
        index: usize,
        exit: crate::WorkerExit,
    },
    /// Task `index` could not be shipped to or run by a worker process (encoding, decoding,
    /// an unregistered function).
    Broken { index: usize, message: String },
}

/// The results of one batch: the values of its first tasks, in order, and how it ended.
pub(crate) struct BatchReport<T, E> {
    pub(crate) first: usize,
    pub(crate) values: Vec<T>,
    pub(crate) end: BatchEnd<E>,
}

/// What workers tell the coordinator.
pub(crate) enum Msg<T, E> {
    Started {
        first: usize,
        len: usize,
    },
    Done(BatchReport<T, E>),
    InputFailed {
        index: usize,
        message: String,
    },
    /// Made by the coordinator itself: task `index`, on `slot`, is past its timeout.
    Overdue {
        index: usize,
        slot: usize,
    },
    /// Made by the coordinator itself: the call's interrupt check said stop.
    Interrupted,
}

/// Asked now and then while the caller waits; `true` stops the call
/// ([`crate::Parallel::interrupt_check`]).
pub(crate) type InterruptCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// How often a waiting caller runs its interrupt check.
const INTERRUPT_PERIOD: Duration = Duration::from_millis(50);

/// Runs batches of jobs somewhere: in this thread, or in a worker process (later backends).
/// Each runner belongs to one worker slot and runs one batch at a time.
pub(crate) trait Runner<J: Job>: Send {
    fn run_batch(&mut self, batch: Batch<J>, ctx: &RunContext) -> BatchReport<J::Output, J::Error>;
}

/// What a runner needs to know about the call while it runs a batch.
pub(crate) struct RunContext {
    pub(crate) cancel: CancelToken,
    pub(crate) timeout: Option<Duration>,
    pub(crate) clock: Arc<TaskClock>,
    pub(crate) slot: usize,
}

/// Runs a batch of jobs in the current thread: the runner of the sequential and thread
/// backends. A panic stops the batch and is reported as the failure of the task that raised it.
pub(crate) fn run_here<J: Job>(
    batch: Batch<J>,
    ctx: &RunContext,
) -> BatchReport<J::Output, J::Error> {
    let first = batch.first;
    let mut values = Vec::with_capacity(batch.jobs.len());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for job in batch.jobs {
            if ctx.cancel.is_cancelled() {
                return BatchEnd::Stopped;
            }
            let Some(timeout) = ctx.timeout else {
                match job.run() {
                    Ok(v) => values.push(v),
                    Err(e) => return BatchEnd::Failed(Failure::Error(e)),
                }
                continue;
            };
            ctx.clock.start(first + values.len());
            let result = job.run();
            // A task that overran its timeout fails the call even if nobody saw it in time
            // (the sequential backend has no one watching).
            if ctx.clock.elapsed() > timeout {
                return BatchEnd::TimedOut {
                    index: first + values.len(),
                };
            }
            match result {
                Ok(v) => values.push(v),
                Err(e) => return BatchEnd::Failed(Failure::Error(e)),
            }
        }
        BatchEnd::Complete
    }));
    ctx.clock.idle();
    let end = outcome.unwrap_or_else(|payload| {
        BatchEnd::Failed(Failure::Panic(crate::error::take_panic_message(payload)))
    });
    BatchReport { first, values, end }
}

/// What the call's workers share.
pub(crate) struct CallShared<J: Job> {
    pub(crate) feed: Feed<J>,
    pub(crate) cancel: CancelToken,
    pub(crate) timeout: Option<Duration>,
    pub(crate) slots: Vec<Slot>,
    /// Nesting depth of the caller; workers run at `depth + 1`.
    pub(crate) depth: usize,
    /// Whether anyone listens to dispatch events; if not, workers skip that message and the
    /// caller's thread is woken once per batch instead of twice.
    report_dispatch: bool,
}

impl<J: Job> CallShared<J> {
    /// `slots` holds one entry per worker slot (at least one: the sequential backend's).
    pub(crate) fn new(
        feed: Feed<J>,
        cancel: CancelToken,
        timeout: Option<Duration>,
        slots: Vec<Slot>,
        depth: usize,
        report_dispatch: bool,
    ) -> Self {
        let slots = if slots.is_empty() {
            vec![Slot::in_memory()]
        } else {
            slots
        };
        CallShared {
            feed,
            cancel,
            timeout,
            slots,
            depth,
            report_dispatch,
        }
    }

    fn context(&self, slot: usize) -> RunContext {
        RunContext {
            cancel: self.cancel.clone(),
            timeout: self.timeout,
            clock: self.slots[slot].clock.clone(),
            slot,
        }
    }
}

/// One step of a worker slot: take a batch, run it, report it through `emit`. Returns `false`
/// when there is nothing more to do (input exhausted, call stopped, or nobody listening).
/// `last` carries the size and duration of the slot's previous batch, for automatic sizing;
/// `current` holds the first index of the batch being run, if any.
pub(crate) fn step<J: Job>(
    shared: &CallShared<J>,
    ctx: &RunContext,
    runner: &mut dyn Runner<J>,
    last: &mut Option<(usize, Duration)>,
    current: &mut Option<usize>,
    emit: &mut dyn FnMut(Msg<J::Output, J::Error>) -> bool,
) -> bool {
    match shared.feed.next_batch(last.take()) {
        Pull::Batch(batch) => {
            let (first, len, pulled_in) = (batch.first, batch.jobs.len(), batch.pulled_in);
            *current = Some(first);
            if shared.report_dispatch && !emit(Msg::Started { first, len }) {
                return false;
            }
            let started = Instant::now();
            let slot = &shared.slots[ctx.slot];
            slot.set_busy(true);
            let report = runner.run_batch(batch, ctx);
            slot.set_busy(false);
            // Any failure ends the call: stop dispatch here and now, rather than when the caller
            // reads this report (it may read reports of later batches first and let more in).
            if !matches!(report.end, BatchEnd::Complete | BatchEnd::Stopped) {
                shared.feed.stop();
            }
            *last = Some((len, pulled_in + started.elapsed()));
            *current = None;
            emit(Msg::Done(report))
        }
        Pull::Done | Pull::Stopped => false,
        Pull::InputPanicked { index, message } => {
            emit(Msg::InputFailed { index, message });
            false
        }
    }
}

/// The loop of one worker thread.
fn work<J: Job>(
    shared: &CallShared<J>,
    slot: usize,
    runner: &mut dyn Runner<J>,
    tx: &Sender<Msg<J::Output, J::Error>>,
) {
    let _worker = EnterWorker::new(shared.depth, shared.cancel.clone());
    let ctx = shared.context(slot);
    let mut last = None;
    let mut current = None;
    let looped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while step(shared, &ctx, runner, &mut last, &mut current, &mut |m| {
            tx.send(m).is_ok()
        }) {}
    }));
    // Task panics are caught per batch; reaching here means the engine itself (or a runner)
    // panicked. The batch must not vanish: report it as failed, so the call ends with an
    // error instead of returning fewer results than tasks.
    if let Err(payload) = looped {
        let message = format!(
            "a joblet worker thread failed while running this batch: {}",
            crate::error::take_panic_message(payload)
        );
        let first = current.unwrap_or(0);
        let _ = tx.send(Msg::Done(BatchReport {
            first,
            values: Vec::new(),
            end: BatchEnd::Failed(Failure::Panic(message)),
        }));
    }
}

/// Runs one batch in the caller's thread, queueing its messages; `false` when none was left.
type InlineStep<T, E> = Box<dyn FnMut(&mut VecDeque<Msg<T, E>>) -> bool + Send>;

/// Where the coordinator gets its messages from.
enum Source<T, E> {
    /// Worker threads; the channel disconnects when the last one has exited.
    Workers {
        rx: Receiver<Msg<T, E>>,
        threads: Vec<thread_cache::Done>,
    },
    /// No workers: the coordinator runs one batch itself whenever it needs a result.
    Inline {
        step: InlineStep<T, E>,
        queue: VecDeque<Msg<T, E>>,
    },
}

/// The parts of a call the coordinator needs, without naming the job type.
pub(crate) trait Control: Send + Sync {
    fn release(&self, batches: usize);
    fn detach_input(&self);
    fn stop(&self);
    fn total(&self) -> Option<usize>;
    /// `Err((index, slot))` of a task running for longer than `timeout`, else `Ok(wait)`: how
    /// long until the next running task could become overdue.
    fn overdue(&self, timeout: Duration) -> Result<Duration, (usize, usize)>;
    /// Kills the workers (processes) that are running a batch now.
    fn kill_busy(&self);
    /// Kills the worker of one slot if it is running a batch.
    fn kill_slot(&self, slot: usize);
}

impl<J: Job> Control for CallShared<J> {
    fn release(&self, batches: usize) {
        self.feed.release(batches);
    }

    fn stop(&self) {
        self.feed.stop();
    }

    fn detach_input(&self) {
        self.feed.detach_input();
    }

    fn kill_busy(&self) {
        for slot in &self.slots {
            slot.kill_if_busy();
        }
    }

    fn kill_slot(&self, slot: usize) {
        if let Some(slot) = self.slots.get(slot) {
            slot.kill_if_busy();
        }
    }

    fn total(&self) -> Option<usize> {
        self.feed.total()
    }

    fn overdue(&self, timeout: Duration) -> Result<Duration, (usize, usize)> {
        let mut wait = timeout;
        for (i, slot) in self.slots.iter().enumerate() {
            let clock = &slot.clock;
            if let Some(index) = clock.running() {
                let ran = clock.elapsed();
                if ran > timeout {
                    return Err((index, i));
                }
                wait = wait.min(timeout - ran);
            }
        }
        Ok(wait)
    }
}

/// One running call, seen from the caller: receives batch reports, turns failures into the
/// call's error, stops everything on the first one, and reports progress.
pub(crate) struct Call<T, E> {
    control: Arc<dyn Control>,
    source: Source<T, E>,
    timeout: Option<Duration>,
    interrupt: Option<InterruptCheck>,
    /// When the interrupt check last ran: it runs every period even while messages keep
    /// arriving.
    last_check: Instant,
    reporter: Reporter,
    finished: bool,
}

/// Drops the call's input iterator, under the feed lock, when it goes out of scope.
pub(crate) struct InputGuard(Arc<dyn Control>);

impl Drop for InputGuard {
    fn drop(&mut self) {
        self.0.detach_input();
    }
}

/// Successful results of consecutive tasks, starting at `first`.
pub(crate) struct Values<T> {
    pub(crate) first: usize,
    pub(crate) values: Vec<T>,
}

impl<T: Send + 'static, E: Send + 'static> Call<T, E> {
    /// Starts `runners.len()` worker threads on `shared`.
    pub(crate) fn with_threads<J>(
        shared: Arc<CallShared<J>>,
        runners: Vec<Box<dyn Runner<J>>>,
        reporter: Reporter,
    ) -> Self
    where
        J: Job<Output = T, Error = E>,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(runners.len());
        for (slot, mut runner) in runners.into_iter().enumerate() {
            let shared = shared.clone();
            let tx = tx.clone();
            let spawned = thread_cache::run(&format!("joblet-worker-{slot}"), move || {
                work(&shared, slot, &mut *runner, &tx)
            });
            // A thread that cannot be started leaves its share to the others; with none at
            // all, the caller's thread does the work.
            if let Ok(handle) = spawned {
                threads.push(handle);
            }
        }
        drop(tx);
        if threads.is_empty() {
            return Self::inline(shared, Box::new(crate::backend::Here), reporter);
        }
        let timeout = shared.timeout;
        Call {
            control: shared,
            source: Source::Workers { rx, threads },
            timeout,
            interrupt: None,
            last_check: Instant::now(),
            reporter,
            finished: false,
        }
    }

    /// Runs the call in the caller's thread, one batch at a time, as results are needed. The
    /// caller consumes each batch before it asks for the next, so it never holds more than
    /// one window slot: any window works.
    pub(crate) fn inline<J>(
        shared: Arc<CallShared<J>>,
        mut runner: Box<dyn Runner<J>>,
        reporter: Reporter,
    ) -> Self
    where
        J: Job<Output = T, Error = E>,
    {
        let worker = shared.clone();
        let ctx = shared.context(0);
        let mut last = None;
        let mut current = None;
        let step = Box::new(move |queue: &mut VecDeque<Msg<T, E>>| {
            // No worker context: as in joblib, running in the caller's thread does not count as
            // a level of nesting, and the tasks keep the caller's own cancellation (if any).
            step(
                &worker,
                &ctx,
                &mut *runner,
                &mut last,
                &mut current,
                &mut |m| {
                    queue.push_back(m);
                    true
                },
            );
            !queue.is_empty()
        });
        let timeout = shared.timeout;
        Call {
            control: shared,
            source: Source::Inline {
                step,
                queue: VecDeque::new(),
            },
            timeout,
            interrupt: None,
            last_check: Instant::now(),
            reporter,
            finished: false,
        }
    }

    /// Runs `check` every [`INTERRUPT_PERIOD`] while the caller waits for workers.
    pub(crate) fn set_interrupt(&mut self, check: Option<InterruptCheck>) {
        self.interrupt = check;
    }

    pub(crate) fn release(&self, batches: usize) {
        self.control.release(batches);
    }

    /// The number of input items, once known.
    pub(crate) fn total(&self) -> Option<usize> {
        self.control.total()
    }

    /// A guard that takes the input iterator away from the workers when it is dropped.
    pub(crate) fn input_guard(&self) -> InputGuard {
        InputGuard(self.control.clone())
    }

    fn next_msg(&mut self) -> Option<Msg<T, E>> {
        match &mut self.source {
            Source::Inline { step, queue } => {
                if queue.is_empty() && !step(queue) {
                    return None;
                }
                queue.pop_front()
            }
            Source::Workers { rx, .. } => {
                if self.timeout.is_none() && self.interrupt.is_none() {
                    return rx.recv().ok();
                }
                loop {
                    if let Some(check) = &self.interrupt {
                        if self.last_check.elapsed() >= INTERRUPT_PERIOD {
                            self.last_check = Instant::now();
                            if check() {
                                return Some(Msg::Interrupted);
                            }
                        }
                    }
                    let mut wait = match self.timeout {
                        Some(timeout) => match self.control.overdue(timeout) {
                            // A millisecond of slack so that a wake-up lands after the deadline.
                            Ok(wait) => wait + Duration::from_millis(1),
                            Err((index, slot)) => return Some(Msg::Overdue { index, slot }),
                        },
                        None => INTERRUPT_PERIOD,
                    };
                    if self.interrupt.is_some() {
                        wait = wait.min(INTERRUPT_PERIOD);
                    }
                    match rx.recv_timeout(wait) {
                        Ok(msg) => return Some(msg),
                        Err(RecvTimeoutError::Disconnected) => return None,
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                }
            }
        }
    }

    /// The next batch of successful results, in completion order; `None` once every task has
    /// been reported; `Some(Err)` once, on the first failure, after which the call is stopped.
    pub(crate) fn next_values(&mut self) -> Option<Result<Values<T>, Error<E>>> {
        while !self.finished {
            let Some(msg) = self.next_msg() else {
                self.finish();
                return None;
            };
            match msg {
                Msg::Started { first, len } => {
                    if !self.reporter.is_silent() {
                        let total = self.control.total();
                        self.reporter
                            .report(Event::Dispatched { first, count: len }, total);
                    }
                }
                Msg::Interrupted => return Some(Err(self.fail(Error::Interrupted))),
                Msg::InputFailed { index, message } => {
                    return Some(Err(self.fail(Error::Input { index, message })));
                }
                Msg::Overdue { index, slot } => {
                    // Only the stuck worker is killed; the others finish their batch (their
                    // results are dropped) and go back to the pool.
                    self.control.kill_slot(slot);
                    let timeout = self.timeout.unwrap_or_default();
                    return Some(Err(self.fail_only(Error::TimedOut { index, timeout })));
                }
                Msg::Done(report) => {
                    let BatchReport { first, values, end } = report;
                    let failed_at = first + values.len();
                    match end {
                        BatchEnd::Complete => {
                            if !self.reporter.is_silent() {
                                let total = self.control.total();
                                self.reporter.report(
                                    Event::Completed {
                                        first,
                                        count: values.len(),
                                    },
                                    total,
                                );
                            }
                            return Some(Ok(Values { first, values }));
                        }
                        BatchEnd::Failed(failure) => {
                            return Some(Err(self.fail(Error::from_failure(failed_at, failure))));
                        }
                        BatchEnd::TimedOut { index } => {
                            let timeout = self.timeout.unwrap_or_default();
                            return Some(Err(self.fail(Error::TimedOut { index, timeout })));
                        }
                        // Only sent after a stop, which already ended the call.
                        BatchEnd::Stopped => {}
                        BatchEnd::Died { index, exit } => {
                            return Some(Err(self.fail(Error::WorkerDied { index, exit })));
                        }
                        BatchEnd::Broken { index, message } => {
                            return Some(Err(self.fail(Error::Transport { index, message })));
                        }
                    }
                }
            }
        }
        None
    }

    /// Ends the call with `error` and kills the busy worker processes, as loky does on a
    /// failure: the caller does not wait for them, and the pool starts fresh ones.
    fn fail(&mut self, error: Error<E>) -> Error<E> {
        self.control.kill_busy();
        self.fail_only(error)
    }

    /// Ends the call with `error`, leaving running batches to finish on their own.
    fn fail_only(&mut self, error: Error<E>) -> Error<E> {
        self.control.stop();
        if let Some(index) = error.index() {
            let total = self.control.total();
            self.reporter.report(Event::Failed { index }, total);
        }
        self.finished = true;
        self.reporter.report(Event::Finished, self.control.total());
        // Running tasks are left to finish on their own: the caller does not wait for them.
        if let Source::Workers { threads, .. } = &mut self.source {
            threads.clear();
        }
        error
    }

    fn finish(&mut self) {
        self.finished = true;
        if let Source::Workers { threads, .. } = &mut self.source {
            for t in threads.drain(..) {
                // The workers have all returned (the channel is disconnected); joining only
                // waits for their thread-local destructors.
                t.join();
            }
        }
        self.reporter.report(Event::Finished, self.control.total());
    }
}

impl<T, E> Drop for Call<T, E> {
    fn drop(&mut self) {
        if !self.finished {
            // The caller gave up on the results (a dropped iterator): stop dispatching, ask
            // running tasks to stop, and kill busy worker processes, as joblib does when a
            // generator is closed early.
            self.control.stop();
            self.control.kill_busy();
        }
    }
}
