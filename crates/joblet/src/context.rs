//! What a running task can ask about the call it belongs to: has the call been cancelled, and
//! how deeply is it nested inside other `Parallel` calls.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The cancellation flag of one call, shared by the caller and its workers.
#[derive(Clone, Default, Debug)]
pub(crate) struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub(crate) fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone, Default)]
struct TaskContext {
    depth: usize,
    cancel: Option<CancelToken>,
}

/// Nesting levels of the whole process: 1 in a worker process (its tasks are already inside a
/// parallel call of its parent), 0 elsewhere.
static PROCESS_DEPTH: AtomicUsize = AtomicUsize::new(0);

/// Marks this process as a worker process of a parallel call.
pub(crate) fn enter_worker_process() {
    PROCESS_DEPTH.store(1, Ordering::Release);
}

thread_local! {
    static CONTEXT: RefCell<TaskContext> = RefCell::new(TaskContext::default());
}

/// Marks the current thread as running tasks of a call, for as long as the guard lives.
pub(crate) struct EnterWorker {
    previous: TaskContext,
}

impl EnterWorker {
    /// `depth` is the nesting depth of the calling `Parallel` (0 at top level).
    pub(crate) fn new(depth: usize, cancel: CancelToken) -> Self {
        // `depth` counts the process's own level too; the thread-local part excludes it.
        let local = depth.saturating_sub(PROCESS_DEPTH.load(Ordering::Acquire));
        let next = TaskContext {
            depth: local + 1,
            cancel: Some(cancel),
        };
        let previous = CONTEXT.with(|c| c.replace(next));
        EnterWorker { previous }
    }
}

impl Drop for EnterWorker {
    fn drop(&mut self) {
        let previous = std::mem::take(&mut self.previous);
        CONTEXT.with(|c| *c.borrow_mut() = previous);
    }
}

/// How many parallel calls enclose the current code: 0 in ordinary code, 1 inside a task that
/// a worker of a top-level call runs, and so on. Calls made at depth 1 or more run
/// sequentially. A call that runs sequentially in the caller's thread (one worker, or the
/// sequential backend) does not add a level, as in joblib.
pub fn nesting_depth() -> usize {
    PROCESS_DEPTH.load(Ordering::Acquire) + CONTEXT.with(|c| c.borrow().depth)
}

/// Whether the call running the current task has been abandoned (another task failed, a
/// timeout fired, or the caller dropped the result iterator).
///
/// Threads cannot be killed, so a long task that wants to stop early should check this now and
/// then and return. Outside a task it is always `false`.
///
/// ```
/// use joblet::{is_cancelled, Parallel};
///
/// let r = Parallel::new().n_jobs(2).run((0..4).map(|i| move || {
///     // a long loop would break out here: `if is_cancelled() { return 0 }`
///     assert!(!is_cancelled());
///     i
/// }));
/// assert_eq!(r.unwrap(), vec![0, 1, 2, 3]);
/// ```
pub fn is_cancelled() -> bool {
    CONTEXT.with(|c| {
        c.borrow()
            .cancel
            .as_ref()
            .is_some_and(CancelToken::is_cancelled)
    })
}
