//! `Parallel`: the configuration of a call and the ways to run one.

use crate::backend::processes;
use crate::backend::{Backend, Here};
use crate::config::{effective_n_jobs, BatchSize, PreDispatch};
use crate::context::{nesting_depth, CancelToken};
use crate::error::{take_panic_message, ConfigError, Error, Failure};
use crate::progress::{Callback, Progress, Reporter};
use crate::scheduler::batching::BatchSizer;
use crate::scheduler::feed::{Feed, Input};
use crate::scheduler::{collect_list, Call, CallShared, Ordered, Runner, Slot, Unordered};
use crate::task::Job;
use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs many independent tasks in parallel: joblib's `Parallel`, for Rust closures.
///
/// Configure it the joblib way, then hand it the tasks, a lazy iterator of closures:
///
/// | joblib | joblet |
/// |---|---|
/// | `n_jobs=4` | [`n_jobs(4)`](Self::n_jobs) (`-1`: every CPU; unset: 1, run in the caller) |
/// | `backend="threading"` | [`backend(Backend::Threads)`](Self::backend) |
/// | `return_as="list"` | [`run`](Self::run) / [`try_run`](Self::try_run) → `Vec` in input order |
/// | `return_as="generator"` | [`iter`](Self::iter) / [`try_iter`](Self::try_iter) → lazy, input order |
/// | `return_as="generator_unordered"` | [`iter_unordered`](Self::iter_unordered) → completion order, with indices |
/// | `batch_size`, `pre_dispatch`, `timeout`, `verbose` | the methods of the same names |
///
/// ```
/// use joblet::{delayed, Parallel};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let squares = Parallel::new().n_jobs(2).run((0..5).map(|x| delayed(square, (x,)))).unwrap();
/// assert_eq!(squares, vec![0, 1, 4, 9, 16]);
/// ```
///
/// Tasks must be `Send + 'static`: a call that fails returns at once, while its running tasks
/// finish on worker threads, so tasks cannot borrow from the caller's stack. Move owned data in
/// (or an `Arc` of it). The input iterator of [`run`](Self::run) and the other methods that
/// return a `Vec` may borrow (`data.iter().map(|x| ..)`, as long as the tasks it yields own
/// what they need); the lazy iterators need an owned input, since they outlive the call that
/// made them. A `Parallel` can be reused for many calls.
///
/// An input that produces items only as results come back (a request/response loop) needs
/// `batch_size(1)`: automatic batching may wait for more items to fill a batch.
#[derive(Clone, Default)]
pub struct Parallel {
    n_jobs: Option<i64>,
    backend: Backend,
    batch_size: BatchSize,
    pre_dispatch: PreDispatch,
    timeout: Option<Duration>,
    verbose: u32,
    progress: Option<Callback>,
    max_nbytes: Option<usize>,
    nested_levels: usize,
    verbose_sink: Option<crate::progress::VerboseSink>,
    interrupt: Option<crate::scheduler::InterruptCheck>,
    input_scope: Option<crate::scheduler::feed::InputScope>,
    inner_max_num_threads: Option<usize>,
    backend_name: Option<String>,
}

impl std::fmt::Debug for Parallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parallel")
            .field("n_jobs", &self.n_jobs)
            .field("backend", &self.backend)
            .field("batch_size", &self.batch_size)
            .field("pre_dispatch", &self.pre_dispatch)
            .field("timeout", &self.timeout)
            .field("verbose", &self.verbose)
            .field("progress", &self.progress.is_some())
            .field("max_nbytes", &self.max_nbytes)
            .field("nested_levels", &self.nested_levels)
            .field("input_scope", &self.input_scope.is_some())
            .field("inner_max_num_threads", &self.inner_max_num_threads)
            .field("backend_name", &self.backend_name)
            .finish()
    }
}

/// What a call will actually do, once the configuration is resolved.
struct Plan {
    backend: Backend,
    workers: usize,
    window: Option<usize>,
    batch_size: BatchSize,
}

impl Parallel {
    /// A `Parallel` with joblib's defaults: `n_jobs` unset (1: run in the caller),
    /// `batch_size="auto"`, `pre_dispatch="2*n_jobs"`, no timeout, silent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the `verbose` lines to `sink` instead of the process's stderr (stdout from level
    /// 50): it gets each line, newline included, and whether joblib's rule puts it on stdout.
    /// The Python front passes `sys.stderr.write`, so that redirected streams see them.
    pub fn verbose_to(mut self, sink: impl Fn(&str, bool) + Send + Sync + 'static) -> Self {
        self.verbose_sink = Some(std::sync::Arc::new(sink));
        self
    }

    /// Asks `check` every 50 ms while the caller waits for worker threads or processes; when
    /// it returns `true`, the call stops with [`Error::Interrupted`] (busy worker processes
    /// are killed, as on a failure). The Python front checks for Ctrl-C here.
    pub fn interrupt_check(mut self, check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.interrupt = Some(Arc::new(check));
        self
    }

    /// Runs each pull of input items (a batch's worth at a time, under the input's lock)
    /// inside `scope`, which must call the function it is given exactly once. The Python
    /// front takes the GIL here once per batch instead of once per item.
    pub fn input_scope(mut self, scope: impl Fn(&mut dyn FnMut()) + Send + Sync + 'static) -> Self {
        self.input_scope = Some(Arc::new(scope));
        self
    }

    /// The backend's name in the `verbose` lines ("Using backend NAME with ..."), instead of
    /// the engine's (`Threads`, `Processes`, `Sequential`): the Python front gives joblib's
    /// class names (`LokyBackend`, ...).
    pub fn backend_name(mut self, name: impl Into<String>) -> Self {
        self.backend_name = Some(name.into());
        self
    }

    /// Sets the thread-count variables of the native thread pools (OpenMP, OpenBLAS, MKL,
    /// ...; see [`Backend::Processes`]) of worker processes to `n`, whatever the caller's own
    /// values: joblib's `inner_max_num_threads`. Unset, workers get `cpu_count() / n_jobs`
    /// (at least 1) in each variable the caller did not set. Idle workers started with other
    /// values are replaced.
    pub fn inner_max_num_threads(mut self, n: usize) -> Self {
        self.inner_max_num_threads = Some(n.max(1));
        self
    }

    /// Lets calls nested up to `levels` deep (see [`crate::nesting_depth`]) keep their
    /// backend; deeper calls run sequentially. The default, 0, runs every nested call
    /// sequentially. joblib's rule, which the Python front follows, is threads at depth 1
    /// (`nested_levels(1)` with [`Backend::Threads`]) and sequential below.
    pub fn nested_levels(mut self, levels: usize) -> Self {
        self.nested_levels = levels;
        self
    }

    /// The number of workers: `n > 0` workers, `-1` every CPU, `-2` all but one, and so on
    /// (`cpu_count() + 1 + n`, at least 1). `0` makes every call fail with
    /// [`Error::Config`]. Unset, calls run sequentially in the caller's thread.
    pub fn n_jobs(mut self, n: i64) -> Self {
        self.n_jobs = Some(n);
        self
    }

    /// Where tasks run. With one worker, or inside a task of another call, every backend
    /// runs sequentially (see [`crate::nesting_depth`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Tasks per batch: [`BatchSize::Auto`] (the default) or a fixed count.
    pub fn batch_size(mut self, batch_size: impl Into<BatchSize>) -> Self {
        self.batch_size = batch_size.into();
        self
    }

    /// How many batches may be dispatched ahead of the results the caller has taken: a
    /// count, `"all"`, or an expression in `n_jobs` such as `"2*n_jobs"` (the default).
    pub fn pre_dispatch(mut self, pre_dispatch: impl Into<PreDispatch>) -> Self {
        self.pre_dispatch = pre_dispatch.into();
        self
    }

    /// Fails the call with [`Error::TimedOut`] when a task runs longer than `timeout`.
    ///
    /// Threads cannot be killed: the overdue task keeps its thread until it returns, but the
    /// caller gets the error at once and [`crate::is_cancelled`] turns true for the task. The
    /// sequential backend cannot interrupt the task at all; it reports the overrun when the
    /// task returns.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// joblib's progress messages: 0 is silent; from 1, lines such as
    /// `[Parallel(n_jobs=2)]: Done  40 out of 100 | elapsed:    1.2s remaining:    1.8s`,
    /// more of them as the level rises (every batch above 10); on stderr, on stdout from 50.
    pub fn verbose(mut self, level: u32) -> Self {
        self.verbose = level;
        self
    }

    /// Arguments and results bigger than this many bytes (per batch message) travel to and
    /// from worker processes through shared memory instead of the socket (joblib's
    /// `max_nbytes`; default 1 MiB). Only the process backend moves data between processes.
    pub fn max_nbytes(mut self, bytes: usize) -> Self {
        self.max_nbytes = Some(bytes);
        self
    }

    /// Calls `callback` in the caller's thread on every [`Progress`] event of every call:
    /// batches dispatched and completed, tasks failed, the call finished.
    pub fn on_progress(mut self, callback: impl FnMut(&Progress) + Send + 'static) -> Self {
        self.progress = Some(Arc::new(Mutex::new(callback)));
        self
    }

    /// Shows a progress bar on the terminal (the `progress-bar` feature, with indicatif).
    #[cfg(feature = "progress-bar")]
    pub fn progress_bar(self) -> Self {
        self.on_progress(crate::progress::bar())
    }

    /// `cpus` gives the CPU count, read at most once per call.
    fn plan(&self, cpus: &dyn Fn() -> usize) -> Result<Plan, ConfigError> {
        let n = effective_n_jobs(self.n_jobs, cpus)?;
        let batch_size = self.batch_size.validate()?;
        let window = self.pre_dispatch.resolve(n)?;
        // Nested calls run sequentially, as in joblib: a task of a parallel call already has
        // its share of the CPUs.
        let backend = if n == 1 || nesting_depth() > self.nested_levels {
            Backend::Sequential
        } else {
            self.backend
        };
        Ok(match backend {
            // The caller runs each batch when it needs it, so there is nothing to bound.
            Backend::Sequential => Plan {
                backend,
                workers: 1,
                window: None,
                batch_size,
            },
            Backend::Threads | Backend::Processes => Plan {
                backend,
                workers: n,
                window,
                batch_size,
            },
        })
    }

    fn start<J>(
        &self,
        jobs: Box<dyn Input<J>>,
    ) -> Result<Call<J::Output, J::Error>, Error<J::Error>>
    where
        J: Job,
    {
        if self.backend == Backend::Processes {
            check_process_call::<J>()?;
        }
        let cpu_count = std::cell::OnceCell::new();
        let cpus = || *cpu_count.get_or_init(crate::cpu_count);
        let mut plan = self.plan(&cpus)?;
        // The pool and the workers' thread limits follow the call's n_jobs; only the number
        // of workers this call uses follows its length (no more workers than tasks).
        let n_jobs = plan.workers;
        plan.workers = plan
            .workers
            .min(jobs.left_at_most().unwrap_or(usize::MAX).max(1));
        // One worker thread is the caller's thread with extra steps (and a nesting level):
        // joblib's "effective n_jobs 1 runs in the caller". Worker processes still isolate.
        if plan.workers == 1 && plan.backend == Backend::Threads {
            plan.backend = Backend::Sequential;
            plan.window = None;
        }
        let cancel = CancelToken::default();
        let sizer = BatchSizer::new(plan.batch_size, plan.backend.ideal_batch_duration());
        let feed = Feed::new(
            jobs,
            self.input_scope.clone(),
            plan.window,
            sizer,
            plan.workers,
            cancel.clone(),
        );
        let reporter = Reporter::new(
            self.progress.clone(),
            self.verbose,
            self.verbose_sink.clone(),
            plan.workers,
            &self
                .backend_name
                .clone()
                .unwrap_or_else(|| plan.backend.to_string()),
        );
        let (slots, runners): SlotsAndRunners<J> = match plan.backend {
            Backend::Sequential => (vec![Slot::in_memory()], Vec::new()),
            Backend::Threads => (0..plan.workers)
                .map(|_| (Slot::in_memory(), Box::new(Here) as _))
                .unzip(),
            Backend::Processes => {
                // Native thread pools in the workers share the CPUs: cpu_count / n_jobs each,
                // unless the caller set them or asked for `inner_max_num_threads`.
                let recipe = processes::spawn::Recipe::now(self.inner_max_num_threads);
                let runners = processes::runners(
                    plan.workers,
                    n_jobs,
                    &recipe,
                    || (cpus() / n_jobs).max(1),
                    self.max_nbytes
                        .unwrap_or(crate::protocol::DEFAULT_THRESHOLD),
                )
                .map_err(|e| Error::WorkerStart(e.0))?;
                runners
                    .into_iter()
                    .map(|r| (r.slot(), Box::new(r) as _))
                    .unzip()
            }
        };
        let shared = Arc::new(CallShared::new(
            feed,
            cancel,
            self.timeout,
            slots,
            nesting_depth(),
            !reporter.is_silent(),
        ));
        let mut call = match plan.backend {
            Backend::Sequential => Call::inline(shared, Box::new(Here), reporter),
            Backend::Threads | Backend::Processes => Call::with_threads(shared, runners, reporter),
        };
        call.set_interrupt(self.interrupt.clone());
        Ok(call)
    }

    /// Runs a call to the end and returns its values in input order. The input iterator may
    /// borrow from the caller: it never outlives this function.
    fn run_list<'a, J, I>(&self, jobs: I) -> Result<Vec<J::Output>, Error<J::Error>>
    where
        J: Job,
        I: Iterator<Item = J> + Send + 'a,
    {
        let capacity = jobs.size_hint().0;
        let jobs: Box<dyn Input<J> + 'a> = Box::new(jobs);
        // SAFETY: the box only claims 'static so that worker threads can hold the feed.
        // 1. Workers use the iterator only inside `Feed::next_batch`, under the feed's lock.
        // 2. `_detach` is dropped before this function returns or unwinds; its drop takes the
        //    iterator out of the feed under that lock and drops it, so after that no worker
        //    can reach it, and it is gone before anything it borrows ('a) can end.
        // 3. If `start` fails, it drops the box before returning.
        // 4. The guard lives on this stack frame, out of the caller's reach: it cannot be
        //    leaked with `mem::forget` (which is why the lazy iterators keep 'static).
        // The jobs it yields are 'static by the `Job` bound, so they may outlive the call.
        let jobs: Box<dyn Input<J> + 'static> = unsafe { std::mem::transmute(jobs) };
        let call = self.start(jobs)?;
        let _detach = call.input_guard();
        collect_list(call, capacity)
    }

    /// Runs every task and returns their values in input order (joblib's default,
    /// `return_as="list"`). The first task to panic fails the call with
    /// [`Error::Panicked`], naming its index; once the failure is seen no further batch is
    /// dispatched, and tasks of running batches see [`crate::is_cancelled`].
    pub fn run<I, F, T>(&self, tasks: I) -> Result<Vec<T>, Error>
    where
        I: IntoIterator<Item = F>,
        I::IntoIter: Send,
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.try_run(tasks.into_iter().map(infallible))
    }

    /// Runs jobs (closures that return `Result`, or [`remote_fn!`](crate::remote_fn) tasks)
    /// and returns their values in input order. The first
    /// failure (in time) stops the call: [`Error::Task`] carries its index and the task's own
    /// error; queued tasks are dropped, and the caller does not wait for running ones.
    ///
    /// ```
    /// use joblet::{Error, Parallel};
    ///
    /// let r = Parallel::new().n_jobs(2).try_run((0..10).map(|i| move || {
    ///     if i == 7 { Err(format!("bad item {i}")) } else { Ok(i) }
    /// }));
    /// match r {
    ///     Err(Error::Task { index, source }) => assert_eq!((index, source.as_str()), (7, "bad item 7")),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn try_run<I>(
        &self,
        tasks: I,
    ) -> Result<Vec<<I::Item as Job>::Output>, Error<<I::Item as Job>::Error>>
    where
        I: IntoIterator,
        I::IntoIter: Send,
        I::Item: Job,
    {
        self.run_list(tasks.into_iter())
    }

    /// Runs every task to the end, whatever fails, and returns each one's outcome in input
    /// order: the seed's "which items failed" pattern. The call itself still fails on a
    /// timeout, a panicking input iterator or a bad configuration.
    ///
    /// ```
    /// use joblet::{Failure, Parallel};
    ///
    /// let outcomes = Parallel::new().n_jobs(2).outcomes([4.0, 0.0, 2.0].map(|x: f64| move || {
    ///     if x == 0.0 { Err("division by zero") } else { Ok(1.0 / x) }
    /// })).unwrap();
    /// assert_eq!(outcomes, vec![Ok(0.25), Err(Failure::Error("division by zero")), Ok(0.5)]);
    /// ```
    pub fn outcomes<I, F, T, E>(&self, tasks: I) -> Result<Vec<Result<T, Failure<E>>>, Error<E>>
    where
        I: IntoIterator<Item = F>,
        I::IntoIter: Send,
        F: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let settled = tasks.into_iter().map(|task| {
            move || {
                Ok::<_, Infallible>(match catch_unwind(AssertUnwindSafe(task)) {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(Failure::Error(e)),
                    Err(payload) => Err(Failure::Panic(take_panic_message(payload))),
                })
            }
        });
        self.run_list(settled).map_err(Error::widen)
    }

    /// Applies `f` to every input in parallel; values in input order.
    ///
    /// ```
    /// let lens = joblet::Parallel::new().n_jobs(2).map(["a", "bb", "ccc"], str::len).unwrap();
    /// assert_eq!(lens, vec![1, 2, 3]);
    /// ```
    pub fn map<I, X, F, T>(&self, inputs: I, f: F) -> Result<Vec<T>, Error>
    where
        I: IntoIterator<Item = X>,
        I::IntoIter: Send,
        X: Send + 'static,
        F: Fn(X) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        self.try_map(inputs, move |x| Ok::<T, Infallible>(f(x)))
    }

    /// Applies a fallible `f` to every input in parallel; stops at the first error, like
    /// [`try_run`](Self::try_run).
    pub fn try_map<I, X, F, T, E>(&self, inputs: I, f: F) -> Result<Vec<T>, Error<E>>
    where
        I: IntoIterator<Item = X>,
        I::IntoIter: Send,
        X: Send + 'static,
        F: Fn(X) -> Result<T, E> + Send + Sync + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let f = Arc::new(f);
        self.try_run(inputs.into_iter().map(move |x| {
            let f = f.clone();
            move || f(x)
        }))
    }

    /// Starts the tasks and returns their values lazily, in input order (joblib's
    /// `return_as="generator"`). Work starts at once; the input is pulled only as results are
    /// taken, at most `pre_dispatch` batches ahead, so an endless input runs in bounded memory.
    ///
    /// ```
    /// use joblet::Parallel;
    ///
    /// let mut evens = Parallel::new().n_jobs(2).iter((0u64..).map(|i| move || 2 * i)).unwrap();
    /// assert_eq!(evens.nth(1_000).unwrap().unwrap(), 2_000);
    /// ```
    pub fn iter<I, F, T>(&self, tasks: I) -> Result<Ordered<T, Infallible>, Error>
    where
        I: IntoIterator<Item = F>,
        I::IntoIter: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.try_iter(tasks.into_iter().map(infallible))
    }

    /// [`iter`](Self::iter) for tasks that return `Result`.
    pub fn try_iter<I>(
        &self,
        tasks: I,
    ) -> Result<JobsOrdered<I::Item>, Error<<I::Item as Job>::Error>>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Job,
    {
        Ok(Ordered::new(self.start(Box::new(tasks.into_iter()))?))
    }

    /// Starts the tasks and returns `(input index, value)` pairs as tasks finish (joblib's
    /// `return_as="generator_unordered"`): a fast task is not held back by a slow one before it.
    pub fn iter_unordered<I, F, T>(&self, tasks: I) -> Result<Unordered<T, Infallible>, Error>
    where
        I: IntoIterator<Item = F>,
        I::IntoIter: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.try_iter_unordered(tasks.into_iter().map(infallible))
    }

    /// [`iter_unordered`](Self::iter_unordered) for tasks that return `Result`.
    pub fn try_iter_unordered<I>(
        &self,
        tasks: I,
    ) -> Result<JobsUnordered<I::Item>, Error<<I::Item as Job>::Error>>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Job,
    {
        Ok(Unordered::new(self.start(Box::new(tasks.into_iter()))?))
    }
}

/// The slots of a call and the runners that serve them.
type SlotsAndRunners<J> = (Vec<Slot>, Vec<Box<dyn Runner<J>>>);

/// The ordered iterator over the results of jobs `J`.
type JobsOrdered<J> = Ordered<<J as Job>::Output, <J as Job>::Error>;
/// The completion-order iterator over the results of jobs `J`.
type JobsUnordered<J> = Unordered<<J as Job>::Output, <J as Job>::Error>;

/// Refuses a process call that cannot work, before anything starts.
fn check_process_call<J: Job>() -> Result<(), ConfigError> {
    if !J::REMOTE {
        return Err(ConfigError::new(
            "backend",
            "Backend::Processes runs registered functions, and these tasks are closures, which \
             cannot cross a process boundary: define the function with joblet::remote_fn! and \
             pass its `task(..)` jobs",
        ));
    }
    if !processes::worker::hook_called() {
        return Err(ConfigError::new(
            "backend",
            "Backend::Processes starts workers by running this program again, and the program \
             has not called joblet::worker_hook(): call it first thing in main",
        ));
    }
    Ok(())
}

/// A plain task as a `Result` task that cannot fail.
fn infallible<F: FnOnce() -> T, T>(task: F) -> impl FnOnce() -> Result<T, Infallible> {
    move || Ok(task())
}

impl Error<Infallible> {
    /// The same error, typed for tasks with error type `E` (it holds no task error).
    pub(crate) fn widen<E>(self) -> Error<E> {
        match self {
            Error::Task { source, .. } => match source {},
            Error::Panicked { index, message } => Error::Panicked { index, message },
            Error::TimedOut { index, timeout } => Error::TimedOut { index, timeout },
            Error::Input { index, message } => Error::Input { index, message },
            Error::WorkerDied { index, exit } => Error::WorkerDied { index, exit },
            Error::Transport { index, message } => Error::Transport { index, message },
            Error::WorkerStart(message) => Error::WorkerStart(message),
            Error::Config(e) => Error::Config(e),
            Error::Interrupted => Error::Interrupted,
        }
    }
}
